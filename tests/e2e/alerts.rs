//! The shipped Prometheus alert rules (`deploy/prometheus/alerts.yaml`)
//! against what the running services really export: an alert on a metric
//! name nobody exports never fires, and promtool cannot tell.

use std::collections::BTreeSet;
use std::time::Duration;

use gateway_e2e::{chat, client, eventually, post, ratelimit_metrics};

const RULES: &str = include_str!("../../deploy/prometheus/alerts.yaml");

/// Metric names the rules use, found by the prefixes this project's metrics
/// carry (prose in the annotations has none of them).
fn referenced_metrics() -> BTreeSet<String> {
    RULES
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| {
            ["ratelimit_", "llm_gateway_", "envoy_"]
                .iter()
                .any(|p| w.starts_with(p))
        })
        .map(str::to_owned)
        .collect()
}

/// The family a sample name belongs to (`# TYPE` names the family).
fn family(sample: &str) -> &str {
    ["_total", "_bucket", "_count", "_sum"]
        .iter()
        .find_map(|suffix| sample.strip_suffix(suffix))
        .unwrap_or(sample)
}

fn declared(exposition: &str, family: &str) -> bool {
    exposition.lines().any(|l| {
        l.strip_prefix("# TYPE ")
            .and_then(|rest| rest.split_whitespace().next())
            == Some(family)
    })
}

#[test]
fn every_metric_an_alert_uses_is_exported() {
    let names = referenced_metrics();
    assert!(
        names.len() >= 8,
        "the scan found too few metric names to mean anything: {names:?}"
    );
    let tb = crate::fairness::start("fair", 2, 30_000);
    // Families with labels appear once something happened to them: one
    // request through the chain (queue wait, tokens, budget ratio) and one
    // registry reload.
    let reply = post(
        &tb,
        "/v1/chat/completions",
        &[(
            "authorization",
            &format!("Bearer {}", crate::fairness::LIGHT_KEY),
        )],
        &chat("llama-3.1-8b-instruct", "hello", 4),
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
    let admin = tb.ratelimit_admin_url().expect("ratelimit-service runs");
    let reload = client()
        .post(format!("{admin}/admin/reload"))
        .bearer_auth(&tb.config.admin_token)
        .send()
        .expect("reload");
    assert!(reload.status().is_success(), "{reload:?}");
    // The pool telemetry appears with the first 2 s tick.
    assert!(
        eventually(Duration::from_secs(10), || {
            let text = ratelimit_metrics(&tb);
            declared(&text, "ratelimit_queue_jains_index")
                && declared(&text, "ratelimit_budget_used_ratio")
        }),
        "pool telemetry never appeared"
    );
    let service = ratelimit_metrics(&tb);
    let envoy = client()
        .get(format!("http://{}/stats/prometheus", tb.envoy.admin))
        .send()
        .and_then(|r| r.text())
        .expect("Envoy /stats/prometheus");
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !declared(&service, family(n)) && !declared(&envoy, family(n)))
        .collect();
    assert!(
        missing.is_empty(),
        "alerts use metrics nobody exports: {missing:?}\nEnvoy's gateway stats: {:?}",
        envoy
            .lines()
            .filter(|l| l.contains("llm_gateway"))
            .collect::<Vec<_>>()
    );
}
