use filter_common::IntoGatewayError;
use serde_json::json;

use super::*;
use crate::test_support::{SECRET, limits, policy};

const CHAT: &str = "/v1/chat/completions";
const SYSTEM: &str = "You are the support assistant of Northwind Broadband. Be brief.";

fn request<'a>(tenant: &'a str, path: &'a str, body: &'a [u8]) -> Request<'a> {
    Request {
        tenant_id: Some(tenant),
        tier: None,
        method: "POST",
        path,
        workload_header: None,
        body,
    }
}

fn chat_body(model: &str, user: &str, extra: serde_json::Value) -> Vec<u8> {
    let mut body = json!({
        "model": model,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}],
    });
    if let (Some(obj), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        obj.extend(extra.clone());
    }
    serde_json::to_vec(&body).unwrap()
}

fn decide_chat(tenant: &str, body: &[u8]) -> Result<Decision, PolicyError> {
    decide(
        &policy(),
        &PoolLimits::default(),
        &request(tenant, CHAT, body),
    )
}

fn status_code(r: Result<Decision, PolicyError>) -> (u32, &'static str) {
    let g = r.expect_err("must be refused").into_gateway_error();
    (g.status, g.code)
}

fn new_body(d: &Decision) -> serde_json::Value {
    serde_json::from_slice(d.body.as_deref().expect("body rewritten")).unwrap()
}

#[test]
fn strict_tenant_chat() {
    let body = chat_body(
        "chat-small",
        "hello",
        json!({"max_tokens": 100, "temperature": 0.2}),
    );
    let d = decide_chat("acme", &body).unwrap();
    assert_eq!(d.model, "chat-small");
    assert_eq!(d.pool, "latency");
    assert_eq!(d.workload, Workload::Interactive);
    assert_eq!(d.max_tokens, 100);
    assert_eq!(d.reserved_output_tokens, 100);
    assert!(!d.stream);
    assert!(
        d.prompt_tokens > 10 && d.prompt_tokens < 40,
        "{}",
        d.prompt_tokens
    );
    let salt = cache_key::tenant_salt(SECRET.as_bytes(), "acme").unwrap();
    let v = new_body(&d);
    assert_eq!(v["cache_salt"], salt.as_str());
    assert_eq!(v["temperature"], 0.2);
    assert_eq!(v["max_tokens"], 100);
    let headers = d.upstream_headers();
    assert_eq!(headers[0], ("x-llm-pool", "latency".to_owned()));
    assert_eq!(headers[4], ("x-llm-max-tokens", "100".to_owned()));
    assert_eq!(headers[5], ("x-llm-stream", "false".to_owned()));
    // The digest is of what the client sent, not of the rewritten body,
    // and it is a value for admission, never a header upstream.
    let sent = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&body));
    assert_eq!(d.request_sha256, sent);
    assert!(
        headers
            .iter()
            .all(|(name, _)| *name != "x-llm-request-sha256")
    );
    assert_ne!(
        d.request_sha256,
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
            d.body.as_deref().unwrap()
        ))
    );
}

#[test]
fn client_salt_is_always_overwritten_or_removed() {
    let other = cache_key::tenant_salt(SECRET.as_bytes(), "globex").unwrap();
    let body = chat_body(
        "chat-small",
        "hi",
        json!({"cache_salt": other, "max_tokens": 5}),
    );
    let strict = decide_chat("acme", &body).unwrap();
    assert_ne!(new_body(&strict)["cache_salt"], other.as_str());
    let trusted = decide_chat("shared", &body).unwrap();
    assert!(new_body(&trusted).get("cache_salt").is_none());
}

#[test]
fn trusted_tenant_without_changes_keeps_original_bytes() {
    let body = chat_body("chat-small", "hi", json!({"max_tokens": 5}));
    let d = decide_chat("shared", &body).unwrap();
    assert_eq!(d.body, None);
}

#[test]
fn strict_body_already_correct_is_not_rewritten() {
    let salt = cache_key::tenant_salt(SECRET.as_bytes(), "acme").unwrap();
    let body = chat_body(
        "chat-small",
        "hi",
        json!({"max_tokens": 5, "cache_salt": salt}),
    );
    assert_eq!(decide_chat("acme", &body).unwrap().body, None);
}

#[test]
fn missing_max_tokens_is_injected_and_clamped() {
    let d = decide_chat("hobby", &chat_body("chat-small", "hi", json!({}))).unwrap();
    // default 256, free tier allows 512.
    assert_eq!(d.max_tokens, 256);
    assert_eq!(new_body(&d)["max_tokens"], 256);
}

#[test]
fn streaming_forces_usage_and_sequences_multiply_the_reservation() {
    let body = chat_body(
        "chat-small",
        "hi",
        json!({"stream": true, "n": 3, "max_tokens": 10, "stream_options": {"include_usage": false}}),
    );
    let d = decide_chat("acme", &body).unwrap();
    assert!(d.stream);
    assert_eq!(d.reserved_output_tokens, 30);
    assert_eq!(new_body(&d)["stream_options"]["include_usage"], true);
    assert_eq!(
        new_body(&d)["stream_options"]["continuous_usage_stats"],
        true
    );
    assert_eq!(d.upstream_headers()[5].1, "true");
    // The client said no: the forced usage is removed on the way back.
    assert!(d.forced_usage.final_chunk && d.forced_usage.running);
}

#[test]
fn a_client_that_asked_for_usage_keeps_its_chunk() {
    let body = chat_body(
        "chat-small",
        "hi",
        json!({"stream": true, "stream_options": {"include_usage": true}}),
    );
    let d = decide_chat("acme", &body).unwrap();
    // Its final chunk stays; the running usage it did not ask for goes.
    assert!(!d.forced_usage.final_chunk && d.forced_usage.running);
    assert_eq!(
        new_body(&d)["stream_options"]["continuous_usage_stats"],
        true
    );
    let quiet = decide_chat(
        "acme",
        &chat_body("chat-small", "hi", json!({"stream": false})),
    )
    .unwrap();
    assert!(!quiet.forced_usage.any());
}

#[test]
fn prefix_keys_isolate_tenants_and_group_shared_prefixes() {
    let a1 = decide_chat(
        "acme",
        &chat_body("chat-small", "first question", json!({})),
    )
    .unwrap();
    let a2 = decide_chat("acme", &chat_body("chat-small", "another one", json!({}))).unwrap();
    let b = decide_chat(
        "beta",
        &chat_body("chat-small", "first question", json!({})),
    )
    .unwrap();
    assert_eq!(
        a1.prefix_key, a2.prefix_key,
        "same tenant, same system prompt"
    );
    assert_ne!(a1.prefix_key, b.prefix_key, "different tenants");
    assert_eq!(a1.prefix_key.len(), 64);
    let s1 = decide_chat("shared", &chat_body("chat-small", "x", json!({}))).unwrap();
    let s2 = decide_chat("shared", &chat_body("chat-small", "y", json!({}))).unwrap();
    assert_eq!(s1.prefix_key, s2.prefix_key);
    assert_ne!(s1.prefix_key, a1.prefix_key);
}

#[test]
fn routing_by_workload() {
    let p = policy();
    let long = "word ".repeat(1100);
    let d = decide_chat("acme", &chat_body("chat-large", &long, json!({}))).unwrap();
    assert_eq!(
        (d.pool.as_str(), d.workload),
        ("throughput", Workload::LongContext)
    );
    let batch = chat_body(
        "chat-small",
        "hi",
        json!({"metadata": {"workload": "batch"}}),
    );
    assert_eq!(decide_chat("acme", &batch).unwrap().pool, "throughput");
    let body = chat_body("chat-small", "hi", json!({}));
    let mut r = request("acme", CHAT, &body);
    r.workload_header = Some("batch");
    assert_eq!(
        decide(&p, &PoolLimits::default(), &r).unwrap().pool,
        "throughput"
    );
    let e = json!({"model": "embed", "input": ["a", "b"]}).to_string();
    let d = decide(
        &p,
        &PoolLimits::default(),
        &request("acme", "/v1/embeddings", e.as_bytes()),
    )
    .unwrap();
    assert_eq!(
        (d.pool.as_str(), d.max_tokens, d.reserved_output_tokens),
        ("throughput", 0, 0)
    );
    // Excluded from latency by its own pool list, whatever it asks for.
    let mut r = request("beta", CHAT, &body);
    r.workload_header = Some("interactive");
    assert_eq!(
        decide(&p, &PoolLimits::default(), &r).unwrap().pool,
        "throughput"
    );
}

#[test]
fn completions_batch_reserves_per_prompt() {
    let body = json!({"model": "chat-small", "prompt": ["a", "b", "c"], "max_tokens": 7, "n": 2})
        .to_string();
    let d = decide(
        &policy(),
        &PoolLimits::default(),
        &request("acme", "/v1/completions", body.as_bytes()),
    )
    .unwrap();
    assert_eq!(d.reserved_output_tokens, 42);
}

#[test]
fn adapters_only_for_their_owner() {
    let body = chat_body("acme-lora", "hi", json!({}));
    assert_eq!(decide_chat("acme", &body).unwrap().model, "acme-lora");
    assert_eq!(
        status_code(decide_chat("hobby", &body)),
        (403, "model_not_allowed")
    );
    assert_eq!(
        status_code(decide_chat(
            "hobby",
            &chat_body("no-such-model", "hi", json!({}))
        )),
        (403, "model_not_allowed")
    );
}

#[test]
fn refusals() {
    let p = policy();
    let ok = chat_body("chat-small", "hi", json!({}));
    let mut r = request("acme", CHAT, &ok);
    r.tenant_id = None;
    assert_eq!(
        status_code(decide(&p, &PoolLimits::default(), &r)),
        (401, "missing_tenant")
    );
    assert_eq!(
        status_code(decide_chat("nobody", &ok)),
        (401, "invalid_tenant")
    );
    assert_eq!(
        status_code(decide_chat("gone", &ok)),
        (403, "tenant_disabled")
    );
    assert_eq!(
        status_code(decide(
            &p,
            &PoolLimits::default(),
            &request("acme", "/v1/fine_tuning/jobs", &ok)
        )),
        (404, "unknown_url")
    );
    let big = chat_body("chat-small", &"x".repeat(17000), json!({}));
    assert_eq!(
        status_code(decide_chat("acme", &big)),
        (413, "request_too_large")
    );
    assert_eq!(
        status_code(decide_chat("acme", b"{\"model\":\"\xff\"}")),
        (400, "invalid_json")
    );
    assert_eq!(status_code(decide_chat("acme", b"")), (400, "invalid_json"));
    let dup =
        br#"{"model":"chat-small","model":"acme-lora","messages":[{"role":"user","content":"x"}]}"#;
    assert_eq!(
        status_code(decide_chat("hobby", dup)),
        (400, "duplicate_key")
    );
    let over_tier = chat_body("chat-small", "hi", json!({"max_tokens": 600}));
    assert_eq!(
        status_code(decide_chat("hobby", &over_tier)),
        (400, "invalid_value")
    );
    let over_ctx = chat_body(
        "chat-small",
        &"word ".repeat(1900),
        json!({"max_tokens": 200}),
    );
    assert_eq!(
        status_code(decide_chat("hobby", &over_ctx)),
        (400, "context_length_exceeded")
    );
    assert_eq!(
        status_code(decide_chat("acme", &chat_body("embed", "hi", json!({})))),
        (400, "model_not_supported")
    );
}

#[test]
fn models_are_answered_locally() {
    let p = policy();
    let a = admit(&p, Some("hobby"), Some("free"), "GET", "/v1/models").unwrap();
    let body = local_reply(&p, &PoolLimits::default(), &a)
        .unwrap()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    let a = admit(&p, Some("acme"), None, "POST", CHAT).unwrap();
    assert!(local_reply(&p, &PoolLimits::default(), &a).is_none());
    assert_eq!(
        status_code(decide(
            &p,
            &PoolLimits::default(),
            &Request {
                method: "GET",
                ..request("acme", "/v1/models", b"")
            }
        )),
        (405, "method_not_allowed")
    );
}

#[test]
fn size_check_for_announced_length() {
    let p = policy();
    assert!(check_body_size(&p, 16384).is_ok());
    assert_eq!(
        check_body_size(&p, 16385),
        Err(PolicyError::BodyTooLarge {
            size: 16385,
            limit: 16384
        })
    );
}

#[test]
fn the_routed_pools_window_is_enforced() {
    let p = policy();
    // chat-small claims 4096 in the registry; latency really serves 1500,
    // throughput (where hobby and beta go) 1024.
    let known = limits(&[
        ("latency", "chat-small", 1500),
        ("throughput", "chat-small", 1024),
    ]);
    let ask = |tenant: &str, extra: serde_json::Value| {
        let body = chat_body("chat-small", "hi", extra);
        decide(&p, &known, &request(tenant, CHAT, &body))
    };
    let g = ask("acme", json!({"max_tokens": 2000}))
        .unwrap_err()
        .into_gateway_error();
    assert_eq!((g.status, g.code), (400, "context_length_exceeded"));
    assert!(g.message.contains("1500"), "{}", g.message);
    // Under the registry's window: unknown limits change nothing.
    assert!(
        decide(
            &p,
            &PoolLimits::default(),
            &request(
                "acme",
                CHAT,
                &chat_body("chat-small", "hi", json!({"max_tokens": 2000}))
            )
        )
        .is_ok()
    );
    assert_eq!(
        ask("acme", json!({"max_tokens": 1400})).unwrap().max_tokens,
        1400
    );
    // The pool is the one routed to: beta goes to throughput (1024).
    assert_eq!(
        status_code(ask("beta", json!({"max_tokens": 1400}))),
        (400, "context_length_exceeded")
    );
    // The injected default (256) fits; it is clamped when the window is small.
    let d = ask("beta", json!({})).unwrap();
    assert_eq!((d.max_tokens, d.pool.as_str()), (256, "throughput"));
    let tight = limits(&[("throughput", "chat-small", 120)]);
    let body = chat_body("chat-small", "hi", json!({}));
    let d = decide(&p, &tight, &request("beta", CHAT, &body)).unwrap();
    assert!(d.max_tokens < 120 && d.max_tokens > 0, "{}", d.max_tokens);
    let injected: serde_json::Value = serde_json::from_slice(d.body.as_deref().unwrap()).unwrap();
    assert_eq!(injected["max_tokens"], d.max_tokens);
}
