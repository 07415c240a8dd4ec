//! The test bodies. Each takes the gateway in front of one upstream and
//! asserts only what holds for vLLM 0.32 (and so must hold for the mock):
//! shapes, framing, usage, what is billed, what is refused.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use gateway_e2e::{Reply, client, eventually, metric, ratelimit_metrics, spend_nanos, u, usage};
use serde_json::{Value, json};

use crate::upstream::{EMBED_MODEL, Gateway, MAX_MODEL_LEN, MODEL, POOLS};

pub type Case = fn(Arc<Gateway>);

pub const ALL: &[(&str, Case)] = &[
    (
        "models_list_reports_the_pool_window",
        models_list_reports_the_pool_window,
    ),
    ("pool_metrics_are_scraped", pool_metrics_are_scraped),
    ("chat_json", chat_json),
    ("chat_stream_framing", chat_stream_framing),
    ("chat_stream_usage_is_billed", chat_stream_usage_is_billed),
    ("completions_json_and_stream", completions_json_and_stream),
    ("responses_json_and_stream", responses_json_and_stream),
    ("embeddings_float_and_base64", embeddings_float_and_base64),
    (
        "cached_tokens_are_reported_and_priced",
        cached_tokens_are_reported_and_priced,
    ),
    ("cache_salt_isolates_tenants", cache_salt_isolates_tenants),
    ("client_hang_up_is_settled", client_hang_up_is_settled),
    (
        "max_tokens_over_the_pool_window_is_refused_unbilled",
        max_tokens_over_the_pool_window_is_refused_unbilled,
    ),
    (
        "prompt_plus_max_tokens_over_the_window_is_clamped",
        prompt_plus_max_tokens_over_the_window_is_clamped,
    ),
    (
        "upstream_errors_reach_the_client_in_openai_shape",
        upstream_errors_reach_the_client_in_openai_shape,
    ),
    // Straight to the upstream, around the gateway: where the mock must
    // answer as vLLM does for the gateway's own tests to mean anything.
    (
        "upstream_version_and_fastapi_errors",
        upstream_version_and_fastapi_errors,
    ),
    ("upstream_error_body_shape", upstream_error_body_shape),
    ("upstream_cache_salt_rules", upstream_cache_salt_rules),
    (
        "upstream_ids_follow_x_request_id",
        upstream_ids_follow_x_request_id,
    ),
    (
        "upstream_default_max_tokens_is_the_rest_of_the_window",
        upstream_default_max_tokens_is_the_rest_of_the_window,
    ),
    ("upstream_metrics_exposition", upstream_metrics_exposition),
];

const KEY_A: &str = "sk-conformance-a";
const KEY_B: &str = "sk-conformance-b";
const TENANT_A: &str = "tenant-a";

// Prices of the registry's model, in nano-dollars per token.
const NANOS_IN: i64 = 200;
const NANOS_CACHED: i64 = 50;
const NANOS_OUT: i64 = 600;

// ---------------------------------------------------------------------------
// Helpers

/// Prompt text no earlier request started with, so no case reads another's
/// prefix cache: a counter and the process id lead, then `words` words.
fn fresh_prompt(words: usize) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    const VOCAB: [&str; 24] = [
        "the", "gateway", "routes", "each", "request", "to", "a", "pool", "of", "replicas", "and",
        "bills", "tokens", "that", "tenants", "spend", "while", "queues", "stay", "fair", "under",
        "load", "from", "many",
    ];
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut text = format!("Note {} of run {}:", n, std::process::id());
    for i in 0..words {
        // A fixed walk over the vocabulary: deterministic, not periodic.
        let pick = (i * 7 + i / 5 + n as usize) % VOCAB.len();
        text.push(' ');
        text.push_str(VOCAB[pick]);
    }
    text
}

fn chat_body(content: &str, max_tokens: u32) -> Value {
    json!({
        "model": MODEL,
        "messages": [{ "role": "user", "content": content }],
        "max_tokens": max_tokens,
        "temperature": 0,
    })
}

fn post(gw: &Gateway, key: &str, path: &str, body: &Value) -> Reply {
    let resp = client()
        .post(format!("{}{path}", gw.tb.gateway_url()))
        .bearer_auth(key)
        .json(body)
        .send()
        .expect("request to the gateway");
    Reply::from(resp)
}

/// The `data:` payloads of an SSE body, checking the framing on the way:
/// every event is `data: ...` lines ended by a blank line, and the stream
/// ends with `data: [DONE]` when `done` is expected.
fn sse_events(text: &str, done: bool) -> Vec<Value> {
    assert!(text.ends_with("\n\n"), "stream ends mid-event: {text:?}");
    let mut events = Vec::new();
    let mut saw_done = false;
    for block in text.split("\n\n").filter(|b| !b.is_empty()) {
        assert!(!saw_done, "an event after [DONE]: {block:?}");
        let mut data = String::new();
        for line in block.lines() {
            if let Some(rest) = line.strip_prefix("data: ") {
                data.push_str(rest);
            } else {
                // Responses events carry `event:` lines too.
                assert!(line.starts_with("event: "), "not an SSE field: {line:?}");
            }
        }
        if data == "[DONE]" {
            saw_done = true;
            continue;
        }
        events.push(serde_json::from_str(&data).unwrap_or_else(|e| panic!("{e}: {data:?}")));
    }
    assert_eq!(saw_done, done, "[DONE] at the end: {text:?}");
    events
}

fn assert_event_stream(reply: &Reply) {
    assert_eq!(reply.status, 200, "{}", reply.text);
    let content_type = reply.header("content-type").unwrap_or_default();
    assert_eq!(
        content_type, "text/event-stream; charset=utf-8",
        "SSE content type"
    );
}

/// Spend today of `tenant` once nothing of it is in flight or reserved.
fn settled_spend(gw: &Gateway, tenant: &str) -> i64 {
    let tb = &gw.tb;
    let settled = eventually(Duration::from_secs(20), || {
        let row = usage(tb, tenant);
        u(&row, "in_flight") == 0 && row["reserved_today_usd"].as_f64() == Some(0.0)
    });
    let row = usage(tb, tenant);
    assert!(settled, "{tenant} never settled: {row}");
    spend_nanos(&row, "spend_today_usd")
}

/// What the gateway must bill for a usage object, in either naming
/// (`prompt_tokens` / `input_tokens`).
fn price(usage: &Value) -> i64 {
    let prompt = usage["prompt_tokens"]
        .as_i64()
        .or(usage["input_tokens"].as_i64())
        .unwrap_or_else(|| panic!("prompt count in {usage}"));
    let completion = usage["completion_tokens"]
        .as_i64()
        .or(usage["output_tokens"].as_i64())
        .unwrap_or_else(|| panic!("completion count in {usage}"));
    let cached = cached_tokens(usage).unwrap_or(0);
    (prompt - cached) * NANOS_IN + cached * NANOS_CACHED + completion * NANOS_OUT
}

fn cached_tokens(usage: &Value) -> Option<i64> {
    usage["prompt_tokens_details"]["cached_tokens"]
        .as_i64()
        .or(usage["input_tokens_details"]["cached_tokens"].as_i64())
}

fn assert_usage_adds_up(usage: &Value) {
    let prompt = usage["prompt_tokens"].as_i64().expect("prompt_tokens");
    let completion = usage["completion_tokens"]
        .as_i64()
        .expect("completion_tokens");
    assert!(prompt > 0, "{usage}");
    assert_eq!(
        usage["total_tokens"].as_i64(),
        Some(prompt + completion),
        "{usage}"
    );
}

/// Sends `body` and checks the tenant is billed exactly its usage.
fn billed_exactly(gw: &Gateway, path: &str, body: &Value) -> Reply {
    let before = settled_spend(gw, TENANT_A);
    let reply = post(gw, KEY_A, path, body);
    assert_eq!(reply.status, 200, "{}", reply.text);
    // Both naming schemes sit under `usage` (Responses: in the final event).
    let usage = if reply.body.is_null() {
        let events = sse_events(&reply.text, path != "/v1/responses");
        last_usage(&events).unwrap_or_else(|| panic!("no usage in {}", reply.text))
    } else {
        reply.body["usage"].clone()
    };
    let after = settled_spend(gw, TENANT_A);
    assert_eq!(after - before, price(&usage), "billed for {usage}");
    reply
}

/// The usage of the last event carrying one (chat/completions chunks, or the
/// Responses API's `response.completed`).
fn last_usage(events: &[Value]) -> Option<Value> {
    events.iter().rev().find_map(|e| {
        let usage = if e["usage"].is_object() {
            &e["usage"]
        } else {
            &e["response"]["usage"]
        };
        usage.is_object().then(|| usage.clone())
    })
}

// ---------------------------------------------------------------------------
// Cases

/// The gateway advertises the window the pool really has, not the
/// registry's 131,072, once it has read the pool's `/v1/models`.
fn models_list_reports_the_pool_window(gw: Arc<Gateway>) {
    // What the upstreams themselves say, in vLLM's model cards: the chat
    // model in the latency pool, the embedding model in the throughput pool.
    for (pool, model) in [("latency", MODEL), ("throughput", EMBED_MODEL)] {
        for url in gw.tb.replica_urls(pool) {
            let cards: Value = client()
                .get(format!("{url}/v1/models"))
                .send()
                .and_then(|r| r.json())
                .expect("upstream /v1/models");
            let card = cards["data"]
                .as_array()
                .and_then(|d| d.iter().find(|m| m["id"] == model))
                .unwrap_or_else(|| panic!("{model} in {cards}"));
            assert_eq!(card["max_model_len"], MAX_MODEL_LEN, "{card}");
            assert_eq!(card["object"], "model");
            assert_eq!(card["owned_by"], "vllm");
        }
    }
    let windows = || {
        let r = Reply::from(
            client()
                .get(format!("{}/v1/models", gw.tb.gateway_url()))
                .bearer_auth(KEY_A)
                .send()
                .expect("gateway /v1/models"),
        );
        [MODEL, EMBED_MODEL].map(|model| {
            r.body["data"]
                .as_array()
                .and_then(|d| d.iter().find(|m| m["id"] == model))
                .and_then(|m| m["max_model_len"].as_u64())
        })
    };
    let want = Some(u64::from(MAX_MODEL_LEN));
    let learned = eventually(Duration::from_secs(20), || windows() == [want, want]);
    assert!(learned, "gateway advertises {:?}", windows());
}

/// ratelimit-service reads the gauges it needs from the upstream's
/// exposition: the pools get capacity only from a good scrape.
fn pool_metrics_are_scraped(gw: Arc<Gateway>) {
    for url in gw.tb.replica_urls("latency") {
        let resp = client()
            .get(format!("{url}/metrics"))
            .send()
            .expect("upstream /metrics");
        let text = resp.text().expect("exposition");
        for (family, kind) in [
            ("vllm:num_requests_running", "gauge"),
            ("vllm:num_requests_waiting", "gauge"),
            ("vllm:kv_cache_usage_perc", "gauge"),
            // prometheus_client names counters with `_total` in `# TYPE`.
            ("vllm:prompt_tokens_total", "counter"),
            ("vllm:generation_tokens_total", "counter"),
            ("vllm:request_success_total", "counter"),
            ("vllm:time_to_first_token_seconds", "histogram"),
        ] {
            let type_line = format!("# TYPE {family} {kind}");
            assert!(
                text.lines().any(|l| l == type_line),
                "{type_line:?} missing from {url}/metrics"
            );
        }
    }
    let tb = &gw.tb;
    for pool in POOLS {
        let capacity = || {
            metric(
                &ratelimit_metrics(tb),
                "ratelimit_pool_capacity",
                &[("pool", pool)],
            )
        };
        let ready = eventually(Duration::from_secs(20), || capacity() == Some(8.0));
        assert!(ready, "{pool} capacity {:?}", capacity());
    }
}

fn chat_json(gw: Arc<Gateway>) {
    let reply = billed_exactly(
        &gw,
        "/v1/chat/completions",
        &chat_body(&fresh_prompt(20), 8),
    );
    let body = &reply.body;
    assert_eq!(body["object"], "chat.completion", "{body}");
    assert!(
        body["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("chatcmpl-")),
        "{body}"
    );
    assert_eq!(body["model"], MODEL);
    let choice = &body["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert!(choice["message"]["content"].is_string(), "{body}");
    assert!(
        matches!(choice["finish_reason"].as_str(), Some("stop" | "length")),
        "{body}"
    );
    assert_usage_adds_up(&body["usage"]);
    assert!(body["usage"]["completion_tokens"].as_i64() <= Some(8));
    assert_eq!(reply.header("content-type"), Some("application/json"));
}

/// A stream the client did not ask usage for: the gateway forces vLLM's
/// usage chunks (to bill) and strips them again.
fn chat_stream_framing(gw: Arc<Gateway>) {
    let before = settled_spend(&gw, TENANT_A);
    let mut body = chat_body(&fresh_prompt(20), 8);
    body["stream"] = json!(true);
    let reply = post(&gw, KEY_A, "/v1/chat/completions", &body);
    assert_event_stream(&reply);
    let events = sse_events(&reply.text, true);
    assert!(!events.is_empty());
    let id = events[0]["id"].as_str().expect("chunk id").to_owned();
    assert!(id.starts_with("chatcmpl-"), "{id}");
    for event in &events {
        assert_eq!(event["object"], "chat.completion.chunk", "{event}");
        assert_eq!(event["id"], id.as_str(), "one id per stream");
        assert!(event.get("usage").is_none_or(Value::is_null), "{event}");
    }
    assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
    let finish = events
        .iter()
        .filter_map(|e| e["choices"][0]["finish_reason"].as_str())
        .collect::<Vec<_>>();
    assert_eq!(finish.len(), 1, "one finish_reason: {finish:?}");
    assert!(matches!(finish[0], "stop" | "length"));
    assert!(
        settled_spend(&gw, TENANT_A) > before,
        "the stream was billed"
    );
}

fn chat_stream_usage_is_billed(gw: Arc<Gateway>) {
    let mut body = chat_body(&fresh_prompt(30), 12);
    body["stream"] = json!(true);
    body["stream_options"] = json!({ "include_usage": true });
    let reply = billed_exactly(&gw, "/v1/chat/completions", &body);
    let events = sse_events(&reply.text, true);
    let last = events.last().expect("events");
    // Asked for: one usage chunk, last, with no choices.
    assert_eq!(last["choices"], json!([]), "{last}");
    assert_usage_adds_up(&last["usage"]);
    let with_usage = events.iter().filter(|e| e["usage"].is_object()).count();
    assert_eq!(with_usage, 1, "only the final chunk carries usage");
}

fn completions_json_and_stream(gw: Arc<Gateway>) {
    let body =
        json!({ "model": MODEL, "prompt": fresh_prompt(20), "max_tokens": 8, "temperature": 0 });
    let reply = billed_exactly(&gw, "/v1/completions", &body);
    assert_eq!(reply.body["object"], "text_completion", "{}", reply.text);
    assert!(
        reply.body["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("cmpl-")),
        "{}",
        reply.text
    );
    assert!(reply.body["choices"][0]["text"].is_string());
    assert_usage_adds_up(&reply.body["usage"]);

    let mut body = body;
    body["prompt"] = json!(fresh_prompt(20));
    body["stream"] = json!(true);
    body["stream_options"] = json!({ "include_usage": true });
    let reply = billed_exactly(&gw, "/v1/completions", &body);
    assert_event_stream(&reply);
    for event in sse_events(&reply.text, true) {
        assert_eq!(event["object"], "text_completion", "{event}");
    }
}

fn responses_json_and_stream(gw: Arc<Gateway>) {
    let body = json!({ "model": MODEL, "input": fresh_prompt(20), "max_output_tokens": 8, "temperature": 0 });
    let reply = billed_exactly(&gw, "/v1/responses", &body);
    let r = &reply.body;
    assert_eq!(r["object"], "response", "{r}");
    assert!(
        r["id"].as_str().is_some_and(|id| id.starts_with("resp_")),
        "{r}"
    );
    assert!(
        matches!(r["status"].as_str(), Some("completed" | "incomplete")),
        "{r}"
    );
    assert!(r["usage"]["input_tokens"].as_i64() > Some(0), "{r}");
    assert!(r["output"].is_array(), "{r}");

    let mut body = body;
    body["input"] = json!(fresh_prompt(20));
    body["stream"] = json!(true);
    let reply = billed_exactly(&gw, "/v1/responses", &body);
    assert_event_stream(&reply);
    let events = sse_events(&reply.text, false);
    assert_eq!(events[0]["type"], "response.created", "{}", reply.text);
    assert_eq!(
        events.last().map(|e| e["type"].clone()),
        Some(json!("response.completed"))
    );
}

/// `/v1/embeddings` through the gateway to the throughput pool: vLLM's
/// shape, as floats and as base64, billed its prompt tokens at the model's
/// price (0.02 $/M = 20 nano-dollars a token).
fn embeddings_float_and_base64(gw: Arc<Gateway>) {
    for format in ["float", "base64"] {
        let before = settled_spend(&gw, TENANT_A);
        let body =
            json!({ "model": EMBED_MODEL, "input": fresh_prompt(12), "encoding_format": format });
        let reply = post(&gw, KEY_A, "/v1/embeddings", &body);
        assert_eq!(reply.status, 200, "{}", reply.text);
        let r = &reply.body;
        assert_eq!(r["object"], "list", "{r}");
        assert!(
            r["id"].as_str().is_some_and(|id| id.starts_with("embd-")),
            "{r}"
        );
        assert_eq!(r["model"], EMBED_MODEL);
        let item = &r["data"][0];
        assert_eq!(item["object"], "embedding");
        assert_eq!(item["index"], 0);
        match format {
            "float" => assert!(
                item["embedding"]
                    .as_array()
                    .is_some_and(|v| !v.is_empty() && v.iter().all(Value::is_f64)),
                "{item}"
            ),
            _ => assert!(item["embedding"].is_string(), "{item}"),
        }
        let usage = &r["usage"];
        let prompt = usage["prompt_tokens"].as_i64().expect("prompt_tokens");
        assert!(prompt > 0);
        assert_eq!(usage["total_tokens"].as_i64(), Some(prompt), "{usage}");
        assert_eq!(usage["completion_tokens"].as_i64(), Some(0), "{usage}");
        let after = settled_spend(&gw, TENANT_A);
        assert_eq!(after - before, prompt * 20, "billed for {usage}");
    }
}

/// The same long prompt twice from one tenant: the second is served from
/// the prefix cache, says so in `cached_tokens`, and is billed at the
/// cached price.
fn cached_tokens_are_reported_and_priced(gw: Arc<Gateway>) {
    let prompt = fresh_prompt(400);
    let first = billed_exactly(&gw, "/v1/chat/completions", &chat_body(&prompt, 4));
    let details = &first.body["usage"]["prompt_tokens_details"];
    assert!(
        details["cached_tokens"].is_i64(),
        "prompt_tokens_details reported: {}",
        first.text
    );
    let second = billed_exactly(&gw, "/v1/chat/completions", &chat_body(&prompt, 4));
    let cached = cached_tokens(&second.body["usage"]).unwrap_or(0);
    assert!(cached > 0, "second ask hits the cache: {}", second.text);
    let tb = &gw.tb;
    for pool in POOLS {
        let reported = metric(
            &ratelimit_metrics(tb),
            "ratelimit_pool_cached_tokens_reported",
            &[("pool", pool)],
        );
        assert_ne!(reported, Some(0.0), "{pool} reports cached tokens");
    }
}

/// The gateway's per-tenant `cache_salt`: another tenant's identical prompt
/// never reads the first tenant's cache; its own repeat does.
fn cache_salt_isolates_tenants(gw: Arc<Gateway>) {
    let prompt = fresh_prompt(400);
    let ask = |key: &str| {
        let r = post(&gw, key, "/v1/chat/completions", &chat_body(&prompt, 4));
        assert_eq!(r.status, 200, "{}", r.text);
        cached_tokens(&r.body["usage"]).expect("cached_tokens reported")
    };
    ask(KEY_A);
    ask(KEY_A);
    assert_eq!(ask(KEY_B), 0, "tenant B read tenant A's cache");
    assert!(ask(KEY_B) > 0, "tenant B's own repeat is cached");
}

/// A client that hangs up mid-stream: the lease is settled (nothing left in
/// flight or reserved) and what was generated is billed.
fn client_hang_up_is_settled(gw: Arc<Gateway>) {
    let before = settled_spend(&gw, TENANT_A);
    let mut body = chat_body(&fresh_prompt(20), 1500);
    body["stream"] = json!(true);
    body["ignore_eos"] = json!(true);
    let mut resp = client()
        .post(format!("{}/v1/chat/completions", gw.tb.gateway_url()))
        .bearer_auth(KEY_A)
        .json(&body)
        .send()
        .expect("stream");
    assert_eq!(resp.status().as_u16(), 200);
    let mut first = [0u8; 256];
    let n = resp.read(&mut first).expect("first bytes");
    assert!(first[..n].starts_with(b"data: "), "{:?}", &first[..n]);
    drop(resp);
    let after = settled_spend(&gw, TENANT_A);
    assert!(after > before, "the hung-up stream was billed");
}

/// `max_tokens` the pool cannot serve is refused by the gateway before
/// admission: 400 `context_length_exceeded`, nothing billed.
fn max_tokens_over_the_pool_window_is_refused_unbilled(gw: Arc<Gateway>) {
    // The window is learned from the pool's `/v1/models` within a few ticks.
    let body = chat_body(&fresh_prompt(10), MAX_MODEL_LEN * 2);
    let mut last = None;
    let refused = eventually(Duration::from_secs(20), || {
        let before = settled_spend(&gw, TENANT_A);
        let r = post(&gw, KEY_A, "/v1/chat/completions", &body);
        let unbilled = settled_spend(&gw, TENANT_A) == before;
        let ok = r.status == 400 && r.error_code() == Some("context_length_exceeded") && unbilled;
        last = Some(r);
        ok
    });
    let last = last.expect("one attempt");
    assert!(refused, "{} {}", last.status, last.text);
    last.assert_error(400, "context_length_exceeded");
    assert_eq!(last.body["error"]["type"], "invalid_request_error");
}

/// A prompt and `max_tokens` that each fit but not together: vLLM clamps the
/// output to the rest of the window and stops with `length`.
fn prompt_plus_max_tokens_over_the_window_is_clamped(gw: Arc<Gateway>) {
    // A long prompt (about 1,100 tokens for the mock's tokenizer, 1,750 for
    // the tiny model's) keeps the clamped output short on a CPU.
    let mut body = chat_body(&fresh_prompt(1000), 1500);
    body["ignore_eos"] = json!(true);
    let reply = billed_exactly(&gw, "/v1/chat/completions", &body);
    let usage = &reply.body["usage"];
    assert_eq!(
        reply.body["choices"][0]["finish_reason"], "length",
        "{}",
        reply.text
    );
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(u64::from(MAX_MODEL_LEN)),
        "generated up to the window: {usage}"
    );
}

/// A request the gateway lets through and the upstream refuses: the client
/// sees OpenAI's error shape (string `code`, OpenAI `type`) with the
/// upstream's message, and pays no output.
fn upstream_errors_reach_the_client_in_openai_shape(gw: Arc<Gateway>) {
    let mut body = chat_body(&fresh_prompt(10), 8);
    body["temperature"] = json!(-1.0);
    let reply = post(&gw, KEY_A, "/v1/chat/completions", &body);
    assert_eq!(reply.status, 400, "{}", reply.text);
    let error = &reply.body["error"];
    assert_eq!(error["type"], "invalid_request_error", "{}", reply.text);
    assert!(error["code"].is_string(), "string code: {}", reply.text);
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("temperature")),
        "the upstream's message: {}",
        reply.text
    );
}

// ---------------------------------------------------------------------------
// Straight to the upstream

fn replica(gw: &Gateway) -> String {
    gw.replica_urls().into_iter().next().expect("a replica")
}

fn upstream_post(gw: &Gateway, path: &str, headers: &[(&str, &str)], body: &Value) -> Reply {
    let mut req = client().post(format!("{}{path}", replica(gw))).json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    Reply::from(req.send().expect("request to the upstream"))
}

fn upstream_version_and_fastapi_errors(gw: Arc<Gateway>) {
    let url = replica(&gw);
    let get = |path: &str| Reply::from(client().get(format!("{url}{path}")).send().expect("GET"));
    let version = get("/version");
    assert_eq!(version.status, 200);
    assert_eq!(version.body, json!({ "version": "0.32.0" }));
    let health = get("/health");
    assert_eq!((health.status, health.text.as_str()), (200, ""));
    // FastAPI's shape, not OpenAI's, for paths and methods it does not route.
    let missing = get("/v1/nope");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.body, json!({ "detail": "Not Found" }));
    let wrong = upstream_post(&gw, "/v1/models", &[], &json!({}));
    assert_eq!(wrong.status, 405);
    assert_eq!(wrong.body, json!({ "detail": "Method Not Allowed" }));
    assert_eq!(wrong.header("allow"), Some("GET"));
}

fn upstream_error_body_shape(gw: Arc<Gateway>) {
    let r = upstream_post(
        &gw,
        "/v1/chat/completions",
        &[],
        &chat_body("hello", MAX_MODEL_LEN * 2),
    );
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(
        r.body,
        json!({ "error": {
            "message": format!(
                "max_tokens={} cannot be greater than max_model_len={MAX_MODEL_LEN}. \
                 Please request fewer output tokens. (parameter=max_tokens, value={})",
                MAX_MODEL_LEN * 2,
                MAX_MODEL_LEN * 2
            ),
            "type": "BadRequestError",
            "param": "max_tokens",
            "code": 400,
        }})
    );
    let mut body = chat_body("hello", 4);
    body["stream_options"] = json!({ "include_usage": true });
    let r = upstream_post(&gw, "/v1/chat/completions", &[], &body);
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["error"]["type"], "BadRequestError");
    assert_eq!(r.body["error"]["param"], "stream_options");
    let r = upstream_post(&gw, "/v1/chat/completions", &[], &json!({ "model": MODEL }));
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(
        r.body["error"]["type"], "Bad Request",
        "pydantic's: {}",
        r.text
    );
    assert_eq!(r.body["error"]["param"], "body.messages");
    let mut body = chat_body("hello", 4);
    body["model"] = json!("no-such-model");
    let r = upstream_post(&gw, "/v1/chat/completions", &[], &body);
    assert_eq!(r.status, 404, "{}", r.text);
    assert_eq!(r.body["error"]["type"], "NotFoundError");
    assert_eq!(r.body["error"]["code"], 404);
}

fn upstream_cache_salt_rules(gw: Arc<Gateway>) {
    let ask = |salt: Value| {
        let mut body = chat_body("hello", 1);
        body["cache_salt"] = salt;
        upstream_post(&gw, "/v1/chat/completions", &[], &body)
    };
    for bad in [
        json!(""),
        json!(123),
        json!("a/b"),
        json!("a@b"),
        json!("x".repeat(129)),
    ] {
        let r = ask(bad.clone());
        assert_eq!(r.status, 400, "cache_salt {bad}: {}", r.text);
        assert_eq!(r.body["error"]["param"], "cache_salt", "{}", r.text);
        assert_eq!(r.body["error"]["type"], "BadRequestError");
    }
    for good in [json!("x".repeat(128)), json!("tenant-42"), Value::Null] {
        let r = ask(good.clone());
        assert_eq!(r.status, 200, "cache_salt {good}: {}", r.text);
    }
}

fn upstream_ids_follow_x_request_id(gw: Arc<Gateway>) {
    let r = upstream_post(
        &gw,
        "/v1/chat/completions",
        &[("x-request-id", "conformance-42")],
        &chat_body("hello", 2),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["id"], "chatcmpl-conformance-42");
    // Not echoed unless the server runs with --enable-request-id-headers.
    assert_eq!(r.header("x-request-id"), None);
    let r = upstream_post(
        &gw,
        "/v1/completions",
        &[("x-request-id", "conformance-43")],
        &json!({ "model": MODEL, "prompt": "hello", "max_tokens": 2 }),
    );
    assert_eq!(r.body["id"], "cmpl-conformance-43", "{}", r.text);
}

/// No `max_tokens`: chat generates to the end of the window (the gateway
/// therefore always writes one), completions 16.
fn upstream_default_max_tokens_is_the_rest_of_the_window(gw: Arc<Gateway>) {
    // A long prompt leaves a short rest of the window to generate.
    let mut body = chat_body(&fresh_prompt(1000), 0);
    body.as_object_mut().map(|o| o.remove("max_tokens"));
    body["ignore_eos"] = json!(true);
    let r = upstream_post(&gw, "/v1/chat/completions", &[], &body);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body["usage"]["total_tokens"].as_u64(),
        Some(u64::from(MAX_MODEL_LEN)),
        "{}",
        r.body["usage"]
    );
    assert_eq!(r.body["choices"][0]["finish_reason"], "length");
    let r = upstream_post(
        &gw,
        "/v1/completions",
        &[],
        &json!({ "model": MODEL, "prompt": fresh_prompt(10), "ignore_eos": true }),
    );
    assert_eq!(r.body["usage"]["completion_tokens"], 16, "{}", r.text);
}

fn upstream_metrics_exposition(gw: Arc<Gateway>) {
    let resp = client()
        .get(format!("{}/metrics", replica(&gw)))
        .send()
        .expect("/metrics");
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "text/plain; version=1.0.0; charset=utf-8");
    let text = resp.text().expect("exposition");
    assert!(
        text.lines()
            .any(|l| l == "# TYPE vllm:num_requests_waiting_by_reason gauge"),
        "waiting by reason"
    );
    for reason in ["capacity", "deferred"] {
        let label = format!("reason=\"{reason}\"");
        assert!(
            text.lines().any(
                |l| l.starts_with("vllm:num_requests_waiting_by_reason{") && l.contains(&label)
            ),
            "{label}"
        );
    }
    for reason in ["stop", "length", "abort"] {
        let label = format!("finished_reason=\"{reason}\"");
        assert!(
            text.lines()
                .any(|l| l.starts_with("vllm:request_success_total{") && l.contains(&label)),
            "request_success_total {label}"
        );
    }
}
