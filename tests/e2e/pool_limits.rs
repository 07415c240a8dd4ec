//! What the pools really are, against the real chain: the window a vLLM
//! replica was started with (`--max-model-len`), learned from its
//! `/v1/models` and enforced before admission; the pool's error replies in
//! OpenAI's shape; whether the pool reports cached prompt tokens.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use gateway_e2e::{
    Reply, eventually, full_chain, get, metric, post, ratelimit_metrics, settled_usage,
    spend_nanos, start_with, u, upstream_request, with_digests,
};
use serde_json::{Value, json};
use testbed::Testbed;

const MODEL: &str = "llama-3.1-8b-instruct";
/// The replicas' `--max-model-len`; the registry claims 131,072.
const POOL_WINDOW: u64 = 2048;

/// The registry: a window far above the pool's, a default `max_tokens`
/// above it too (it must be clamped, not refused). Key `sk-<tenant>`.
const REGISTRY: &str = r#"
[gateway]
cache_profile = "strict"
long_context_tokens = 100000
prefix_block_tokens = 16
default_max_tokens = 4096

[tiers.standard]
pools = ["latency", "throughput"]
max_context_tokens = 131072
max_output_tokens = 65536
fail_mode = "closed"
limits = { rpm = 100000, tpm = 100000000, daily_budget_usd = 1000.0 }

[models."llama-3.1-8b-instruct"]
groups = ["chat"]
max_context_tokens = 131072
price = { input_per_mtok = 0.2, output_per_mtok = 0.6, cached_input_per_mtok = 0.05 }

[pools.latency]
class = "latency"
max_in_flight_per_replica = 16
metrics_interval_ms = 200

[pools.throughput]
class = "throughput"
max_in_flight_per_replica = 16
metrics_interval_ms = 200

[[tenants]]
id = "pl-t"
tier = "standard"
models = ["group:chat"]
api_keys = [{ id = "k", sha256 = "{{digest:sk-pl-t}}" }]
"#;

const AUTH: (&str, &str) = ("authorization", "Bearer sk-pl-t");

/// One testbed at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn start() -> Testbed {
    start_mocks(&[])
}

/// The chain with every mock started with `--max-model-len 2048`, fast,
/// and `extra`, behind one Envoy worker.
///
/// Each worker's VM learns the pools' window on its own 2 s poll, so with
/// two workers the one that answered `/v1/models` may have learned it while
/// the other, which takes the next request, has not yet (.ci/run caught
/// that: the pool refused and saw the request the test says it must not).
fn start_mocks(extra: &[&str]) -> Testbed {
    let window = POOL_WINDOW.to_string();
    let mut args = vec!["--max-model-len", window.as_str()];
    args.extend_from_slice(gateway_e2e::FAST_MOCK);
    args.extend_from_slice(extra);
    let mut config = full_chain(with_digests(REGISTRY), &args);
    config.envoy_concurrency = 1;
    start_with(config)
}

fn chat(model: &str, max_tokens: Option<u32>) -> Value {
    let mut body =
        json!({ "model": model, "messages": [{ "role": "user", "content": "hello there" }] });
    if let Some(max) = max_tokens {
        body["max_tokens"] = json!(max);
    }
    body
}

fn ask(tb: &Testbed, request_id: &str, body: &Value) -> Reply {
    post(
        tb,
        "/v1/chat/completions",
        &[AUTH, ("x-request-id", request_id)],
        body,
    )
}

/// `max_model_len` of `MODEL` in the tenant's `/v1/models`.
fn advertised(tb: &Testbed) -> Option<u64> {
    let r = get(tb, "/v1/models", &[AUTH]);
    r.body["data"]
        .as_array()?
        .iter()
        .find(|m| m["id"] == MODEL)?["max_model_len"]
        .as_u64()
}

#[test]
fn the_pools_window_is_learned_and_enforced_before_admission() {
    let _serial = serial();
    let tb = start();
    let learned = eventually(Duration::from_secs(20), || {
        advertised(&tb) == Some(POOL_WINDOW)
    });
    assert!(learned, "/v1/models advertises {:?}", advertised(&tb));
    let exposition = ratelimit_metrics(&tb);
    for pool in ["latency", "throughput"] {
        assert_eq!(
            metric(
                &exposition,
                "ratelimit_pool_max_model_len",
                &[("pool", pool), ("model", MODEL)]
            ),
            Some(POOL_WINDOW as f64),
            "{exposition}"
        );
    }

    // max_tokens alone above the pool's window: refused by the gateway,
    // never seen by the pool, nothing reserved or charged.
    let r = ask(&tb, "pl-over", &chat(MODEL, Some(4096)));
    r.assert_error(400, "context_length_exceeded");
    assert_eq!(r.body["error"]["type"], "invalid_request_error");
    assert_eq!(r.body["error"]["param"], "max_tokens");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(&POOL_WINDOW.to_string())),
        "the message names the limit: {}",
        r.text
    );
    assert!(upstream_request(&tb, "pl-over").is_none());
    // (The service's own `GET /v1/models` reads are in the mocks' logs too.)
    let inference: Vec<Value> = tb
        .upstream_requests()
        .into_iter()
        .filter(|r| r["method"] != "GET")
        .collect();
    assert!(inference.is_empty(), "reached a pool: {inference:?}");
    let row = settled_usage(&tb, "pl-t");
    assert_eq!(spend_nanos(&row, "spend_today_usd"), 0, "{row}");
    assert_eq!(
        (u(&row, "tokens_in"), u(&row, "tokens_out")),
        (0, 0),
        "{row}"
    );

    // Within the window: served.
    let r = ask(&tb, "pl-fits", &chat(MODEL, Some(1000)));
    assert_eq!(r.status, 200, "{}", r.text);

    // No max_tokens: the registry's default (4096) is clamped to the window,
    // not refused.
    let r = ask(&tb, "pl-default", &chat(MODEL, None));
    assert_eq!(r.status, 200, "{}", r.text);
    let seen = upstream_request(&tb, "pl-default").expect("reached a pool");
    let injected = seen["body"]["max_tokens"]
        .as_u64()
        .expect("max_tokens injected");
    assert!(
        (1..POOL_WINDOW).contains(&injected),
        "injected max_tokens {injected}"
    );

    // Prompt and max_tokens each fit, together they do not: the gateway lets
    // it through (vLLM clamps the completion to the rest of its window).
    let _ = ask(&tb, "pl-sum", &chat(MODEL, Some(POOL_WINDOW as u32 - 2)));
    assert!(
        upstream_request(&tb, "pl-sum").is_some(),
        "not refused by the gateway"
    );
}

#[test]
fn upstream_errors_reach_the_client_in_openai_shape() {
    let _serial = serial();
    let tb = start();

    // The policy lets prompt_logprobs through; vLLM refuses more than 20.
    let mut body = chat(MODEL, Some(8));
    body["prompt_logprobs"] = json!(50);
    let r = ask(&tb, "pl-logprobs", &body);
    r.assert_error(400, "invalid_request");
    let error = &r.body["error"];
    assert_eq!(error["type"], "invalid_request_error", "{}", r.text);
    assert_eq!(error["param"], "prompt_logprobs", "{}", r.text);
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("greater than max allowed")),
        "vLLM's message kept: {}",
        r.text
    );
    assert_eq!(
        error.as_object().map(|o| o.len()),
        Some(4),
        "OpenAI's members only: {}",
        r.text
    );
    assert!(upstream_request(&tb, "pl-logprobs").is_some());
    assert_eq!(
        r.header("content-length"),
        Some(r.text.len().to_string().as_str()),
        "content-length follows the new body"
    );

    // The gateway's own refusals are left as they are.
    let mut body = chat(MODEL, Some(8));
    body["no_such_field"] = json!(1);
    ask(&tb, "pl-own", &body).assert_error(400, "unknown_parameter");

    // And a success is untouched.
    let r = ask(&tb, "pl-ok", &chat(MODEL, Some(4)));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["object"], "chat.completion");
}

#[test]
fn pools_that_report_cached_tokens_say_so() {
    let _serial = serial();
    let tb = start();
    let gauge = || {
        metric(
            &ratelimit_metrics(&tb),
            "ratelimit_pool_cached_tokens_reported",
            &[("pool", "latency")],
        )
    };
    assert_eq!(gauge(), None, "no verdict before any report");
    // The testbed's mocks, like vLLM with --enable-prompt-tokens-details,
    // report them (a stream in its final usage chunk).
    let r = ask(&tb, "pl-cached", &chat(MODEL, Some(4)));
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.body["usage"]["prompt_tokens_details"]["cached_tokens"].is_u64(),
        "{}",
        r.text
    );
    let mut stream = chat(MODEL, Some(4));
    stream["stream"] = json!(true);
    let r = ask(&tb, "pl-cached-stream", &stream);
    assert_eq!(r.status, 200, "{}", r.text);
    settled_usage(&tb, "pl-t");
    let reported = eventually(Duration::from_secs(10), || gauge() == Some(1.0));
    assert!(
        reported,
        "ratelimit_pool_cached_tokens_reported: {:?}",
        gauge()
    );
}

#[test]
fn a_pool_without_cached_token_details_is_flagged() {
    let _serial = serial();
    // A default vLLM: no prompt_tokens_details in any usage.
    let tb = start_mocks(&["--no-enable-prompt-tokens-details"]);
    let gauge = || {
        metric(
            &ratelimit_metrics(&tb),
            "ratelimit_pool_cached_tokens_reported",
            &[("pool", "latency")],
        )
    };
    let r = ask(&tb, "pl-plain-0", &chat(MODEL, Some(2)));
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.body["usage"]["prompt_tokens_details"].is_null(),
        "{}",
        r.text
    );
    settled_usage(&tb, "pl-t");
    // Older vLLMs omit the details of a request that hit no cache even with
    // the flag: one report says nothing yet.
    assert_eq!(gauge(), None);
    // A run of them does (ratelimit_service::cached_tokens::JUDGE_AFTER).
    for i in 1..100 {
        let r = ask(&tb, &format!("pl-plain-{i}"), &chat(MODEL, Some(2)));
        assert_eq!(r.status, 200, "{}", r.text);
    }
    settled_usage(&tb, "pl-t");
    let flagged = eventually(Duration::from_secs(10), || gauge() == Some(0.0));
    assert!(
        flagged,
        "ratelimit_pool_cached_tokens_reported: {:?}",
        gauge()
    );
}
