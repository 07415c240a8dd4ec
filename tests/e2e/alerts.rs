//! The shipped Prometheus alert rules (`deploy/prometheus/alerts.yaml`) and
//! Grafana dashboard (`deploy/grafana/llm-gateway.json`) against what the
//! running services really export: an alert or a panel on a metric name
//! nobody exports stays silent or empty, and neither promtool nor Grafana
//! can tell.

use std::collections::BTreeSet;
use std::time::Duration;

use gateway_e2e::{chat, client, eventually, post, ratelimit_metrics};
use promql_parser::parser::Expr;
use promql_parser::util::{ExprVisitor, walk_expr};
use serde_json::Value;

const RULES: &str = include_str!("../../deploy/prometheus/alerts.yaml");
const DASHBOARD: &str = include_str!("../../deploy/grafana/llm-gateway.json");

/// Every PromQL query of the dashboard with the panel it belongs to.
fn dashboard_queries() -> Vec<(String, String)> {
    let dashboard: Value = serde_json::from_str(DASHBOARD).expect("dashboard is JSON");
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().expect("panel title").to_owned();
        let targets = panel["targets"].as_array().expect("panel targets");
        assert!(!targets.is_empty(), "panel {title:?} has no query");
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "panel {title:?} must use the dashboard's datasource variable"
        );
        for target in targets {
            let expr = target["expr"].as_str().expect("target expr").to_owned();
            queries.push((title.clone(), expr));
        }
    }
    queries
}

/// Grafana's own variables replaced the way Grafana does before sending.
fn as_sent(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("$tenant", ".*")
        .replace("$pool", ".*")
}

struct MetricNames(BTreeSet<String>);

impl ExprVisitor for MetricNames {
    type Error = ();
    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, ()> {
        let selector = match expr {
            Expr::VectorSelector(vs) => vs,
            Expr::MatrixSelector(ms) => &ms.vs,
            _ => return Ok(true),
        };
        if let Some(name) = &selector.name {
            self.0.insert(name.clone());
        }
        Ok(true)
    }
}

/// Metric names the dashboard's queries and variables use, each query parsed
/// as Prometheus would (a query that does not parse is a panel that errors).
fn dashboard_metrics() -> BTreeSet<String> {
    let mut names = MetricNames(BTreeSet::new());
    for (title, expr) in dashboard_queries() {
        let parsed = promql_parser::parser::parse(&as_sent(&expr))
            .unwrap_or_else(|e| panic!("panel {title:?}: {expr}: {e}"));
        walk_expr(&mut names, &parsed).expect("walk");
    }
    let dashboard: Value = serde_json::from_str(DASHBOARD).expect("dashboard is JSON");
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
    {
        if let Some(query) = variable["definition"].as_str() {
            let metric = query
                .strip_prefix("label_values(")
                .and_then(|rest| rest.split(',').next())
                .unwrap_or_else(|| panic!("variable query {query:?}"));
            names.0.insert(metric.trim().to_owned());
        }
    }
    names.0
}

#[test]
fn every_dashboard_query_parses_and_names_this_projects_metrics() {
    let queries = dashboard_queries();
    assert!(queries.len() >= 15, "{} queries", queries.len());
    let names = dashboard_metrics();
    for name in &names {
        assert!(
            ["ratelimit_", "llm_gateway_"]
                .iter()
                .any(|p| name.starts_with(p)),
            "{name}: not a metric of this project"
        );
    }
    // A panel whose query does not parse must fail here, not in Grafana.
    assert!(promql_parser::parser::parse(&as_sent("sum by (tenant) (rate(x[5m])")).is_err());
}

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
fn every_metric_an_alert_or_the_dashboard_uses_is_exported() {
    let mut names = referenced_metrics();
    assert!(
        names.len() >= 8,
        "the scan found too few metric names to mean anything: {names:?}"
    );
    names.extend(dashboard_metrics());
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
    // The pool telemetry (per pool and per tenant) appears with the first
    // 2 s tick after the request; the TTFT sample when the request's
    // Complete is settled, which on a loaded box can come after that tick.
    let telemetry = [
        "ratelimit_queue_jains_index",
        "ratelimit_budget_used_ratio",
        "ratelimit_queue_depth",
        "ratelimit_queue_in_flight",
        "ratelimit_queue_service_weighted_tokens",
    ];
    // The dashboard's "TTFT by tier" groups by this label.
    let ttft_with_tier = |text: &str| {
        text.lines().any(|l| {
            l.starts_with("ratelimit_ttft_seconds_count{")
                && l.contains("tier=\"")
                && !l.contains("tier=\"\"")
        })
    };
    let settled = eventually(Duration::from_secs(10), || {
        let text = ratelimit_metrics(&tb);
        telemetry.iter().all(|family| declared(&text, family)) && ttft_with_tier(&text)
    });
    let service = ratelimit_metrics(&tb);
    assert!(
        settled,
        "pool telemetry or a TTFT sample with a tier never appeared: {}",
        service
            .lines()
            .filter(|l| l.contains("ttft") || telemetry.iter().any(|f| l.contains(f)))
            .collect::<Vec<_>>()
            .join("\n")
    );
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
        "alerts or dashboard use metrics nobody exports: {missing:?}\nEnvoy's gateway stats: {:?}",
        envoy
            .lines()
            .filter(|l| l.contains("llm_gateway"))
            .collect::<Vec<_>>()
    );
}
