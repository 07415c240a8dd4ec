//! llm-policy through a real Envoy: cache isolation in the strict and trusted
//! profiles, prefix affinity, pool routing, request validation, the model
//! list, streaming and the body rewrite, checked against what the mock vLLM
//! replicas actually received (`/debug/requests`: body, headers, replica,
//! cached prompt tokens).

use std::collections::BTreeSet;
use std::io::Read;
use std::time::{Duration, Instant};

use gateway_e2e::{
    FilterSet, Reply, chat, client, get, post, registry, start_with, upstream_request,
};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use test_keys::TestKeys;
use testbed::{PoolSpec, Testbed, TestbedConfig};

const MODEL: &str = "llama-3.1-8b-instruct";
const CHAT: &str = "/v1/chat/completions";
const COMPLETIONS: &str = "/v1/completions";
const POLICY: FilterSet = FilterSet {
    tenant_auth: true,
    llm_policy: true,
    admission: false,
};
/// Three KV blocks of the mock (16 tokens each, vLLM's default): a hit this
/// large cannot come from the chat template's first block alone.
const SEVERAL_BLOCKS: u64 = 3 * 16;

/// (tenant, what, path, body, extra headers, expected pool)
type Route<'a> = (
    &'a str,
    &'a str,
    &'a str,
    Value,
    &'a [(&'a str, &'a str)],
    &'a str,
);
/// (what, tenant, path, body, status, code, param or "" for none)
type Refusal<'a> = (&'a str, &'a str, &'a str, Vec<u8>, u16, &'a str, &'a str);

/// A testbed with tenant-auth + llm-policy and the given pools.
fn start(registry: String, latency: PoolSpec, throughput: PoolSpec) -> Testbed {
    let mut config = TestbedConfig::new(registry);
    config.filters = POLICY;
    config.ratelimit = false;
    config.pools = vec![latency, throughput];
    start_with(config)
}

fn one_replica_pools(registry: String) -> Testbed {
    let (latency, throughput) = (PoolSpec::new("latency", 1), PoolSpec::new("throughput", 1));
    start(registry, latency, throughput)
}

fn bearer(tenant: &str) -> String {
    format!("Bearer sk-{tenant}-live")
}

/// POSTs `body` as `tenant` with request id `rid` and `extra` headers.
fn send(
    tb: &Testbed,
    tenant: &str,
    rid: &str,
    path: &str,
    body: &Value,
    extra: &[(&str, &str)],
) -> Reply {
    let auth = bearer(tenant);
    let mut headers = vec![("authorization", auth.as_str()), ("x-request-id", rid)];
    headers.extend_from_slice(extra);
    post(tb, path, &headers, body)
}

/// Sends like [`send`], expects 200, and returns the request as the replica
/// received it.
fn forward(
    tb: &Testbed,
    tenant: &str,
    rid: &str,
    path: &str,
    body: &Value,
    extra: &[(&str, &str)],
) -> Value {
    let reply = send(tb, tenant, rid, path, body, extra);
    assert_eq!(reply.status, 200, "{rid}: {}", reply.text);
    seen(tb, rid)
}

/// How raw bytes go on the wire.
#[derive(Clone, Copy)]
enum Framing {
    ContentLength,
    Chunked,
}

/// POSTs raw bytes as `tenant` with request id `rid`.
fn send_raw(
    tb: &Testbed,
    tenant: &str,
    rid: &str,
    path: &str,
    body: Vec<u8>,
    framing: Framing,
) -> Reply {
    let req = client()
        .post(format!("{}{path}", tb.gateway_url()))
        .header("authorization", bearer(tenant))
        .header("x-request-id", rid)
        .header("content-type", "application/json");
    let req = match framing {
        Framing::ContentLength => req.body(body),
        Framing::Chunked => req.body(reqwest::blocking::Body::new(std::io::Cursor::new(body))),
    };
    Reply::from(req.send().expect("request to gateway"))
}

/// The request as a replica received it.
fn seen(tb: &Testbed, rid: &str) -> Value {
    upstream_request(tb, rid).unwrap_or_else(|| panic!("{rid} did not reach a replica"))
}

/// Prompt tokens the replica served from its prefix cache.
fn cached(record: &Value) -> u64 {
    record["cached_tokens"]
        .as_u64()
        .unwrap_or_else(|| panic!("no cached_tokens in {record}"))
}

fn replied_cached(reply: &Reply) -> &Value {
    &reply.body["usage"]["prompt_tokens_details"]["cached_tokens"]
}

/// A chat body with a system prompt and a user question.
fn chat_with(system: &str, user: &str, max_tokens: u32) -> Value {
    json!({
        "model": MODEL,
        "messages": [{ "role": "system", "content": system }, { "role": "user", "content": user }],
        "max_tokens": max_tokens,
    })
}

/// Deterministic English-like text of `words` words. Different seeds differ
/// from the first characters on, hence in the first prefix block.
fn prose(seed: u64, words: usize) -> String {
    const WORDS: [&str; 32] = [
        "the",
        "quick",
        "report",
        "shows",
        "that",
        "our",
        "latency",
        "budget",
        "was",
        "met",
        "across",
        "every",
        "region",
        "while",
        "costs",
        "fell",
        "slightly",
        "during",
        "quarter",
        "and",
        "teams",
        "shipped",
        "new",
        "features",
        "for",
        "customers",
        "who",
        "asked",
        "about",
        "pricing",
        "support",
        "billing",
    ];
    let step = |s: u64| {
        s.wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407)
    };
    let mut state = step(seed);
    let mut out = format!("Document {seed}.");
    for i in 0..words {
        state = step(state);
        out.push(' ');
        out.push_str(WORDS[usize::try_from(state >> 33).unwrap_or(0) % WORDS.len()]);
        if i % 12 == 11 {
            out.push('.');
        }
    }
    out
}

/// The tenant's `cache_salt`, computed independently of the filter:
/// hex(HMAC-SHA256(secret, tenant id)), the secret hex-decoded when it is all
/// hex digits of even length and taken as bytes otherwise.
fn tenant_salt(secret: &str, tenant: &str) -> String {
    let is_hex = !secret.is_empty()
        && secret.len().is_multiple_of(2)
        && secret.bytes().all(|b| b.is_ascii_hexdigit());
    let key: Vec<u8> = if is_hex {
        (0..secret.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&secret[i..i + 2], 16).expect("hex"))
            .collect()
    } else {
        secret.as_bytes().to_vec()
    };
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).expect("hmac key");
    mac.update(tenant.as_bytes());
    let digest = mac.finalize().into_bytes();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn strict_profile_isolates_tenant_caches() {
    let keys = TestKeys::generate();
    // One replica per pool: both tenants reach the same KV cache, so only the
    // salt can keep them apart (affinity cannot separate them by accident).
    let tb = one_replica_pools(registry(&keys));
    let secret = tb.config.cache_secret.clone();
    let (acme_salt, globex_salt) = (tenant_salt(&secret, "acme"), tenant_salt(&secret, "globex"));
    assert_ne!(acme_salt, globex_salt);

    let document = chat_with(&prose(1, 300), "Summarise the document.", 4);
    let acme_reply = send(&tb, "acme", "strict-acme-1", CHAT, &document, &[]);
    assert_eq!(acme_reply.status, 200, "{}", acme_reply.text);
    let first = seen(&tb, "strict-acme-1");
    assert_eq!(first["pool"], "latency");
    assert_eq!(
        first["body"]["cache_salt"],
        acme_salt.as_str(),
        "salt = HMAC(secret, id)"
    );
    assert_eq!(cached(&first), 0);
    let prompt_tokens = acme_reply.body["usage"]["prompt_tokens"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        prompt_tokens >= 10 * 16,
        "the prompt must span several blocks: {prompt_tokens}"
    );

    // Another tenant, the identical prompt, the same replica: nothing cached.
    let globex_reply = send(&tb, "globex", "strict-globex-1", CHAT, &document, &[]);
    assert_eq!(globex_reply.status, 200, "{}", globex_reply.text);
    let second = seen(&tb, "strict-globex-1");
    assert_eq!(
        second["replica"], first["replica"],
        "both tenants must reach one replica"
    );
    assert_eq!(second["body"]["cache_salt"], globex_salt.as_str());
    assert_eq!(cached(&second), 0, "globex was served acme's cached blocks");
    assert_eq!(*replied_cached(&globex_reply), 0);
    assert_ne!(
        second["headers"]["x-prefix-key"],
        first["headers"]["x-prefix-key"]
    );

    // The same tenant repeating it hits: the cache works, the tenants are apart.
    let acme_again = send(&tb, "acme", "strict-acme-2", CHAT, &document, &[]);
    assert_eq!(acme_again.status, 200, "{}", acme_again.text);
    let third = seen(&tb, "strict-acme-2");
    assert_eq!(third["replica"], first["replica"]);
    assert_eq!(
        third["headers"]["x-prefix-key"],
        first["headers"]["x-prefix-key"]
    );
    let hit = cached(&third);
    assert!(
        hit >= SEVERAL_BLOCKS,
        "acme's repeat should hit its own cache: {third}"
    );
    assert_eq!(*replied_cached(&acme_again), hit);

    // acme's salt, sent by globex, buys nothing: the filter overwrites it. A
    // plain completion, so the first block is the document itself and not a
    // chat template globex has cached under its own salt already.
    let probe = json!({ "model": MODEL, "prompt": prose(2, 300), "max_tokens": 4 });
    let victim = forward(&tb, "acme", "spoof-acme", COMPLETIONS, &probe, &[]);
    let mut spoofed = probe.clone();
    spoofed["cache_salt"] = json!(acme_salt);
    let spoof_reply = send(&tb, "globex", "spoof-globex", COMPLETIONS, &spoofed, &[]);
    assert_eq!(spoof_reply.status, 200, "{}", spoof_reply.text);
    let spoof = seen(&tb, "spoof-globex");
    assert_eq!(spoof["replica"], victim["replica"]);
    assert_eq!(
        spoof["body"]["cache_salt"],
        globex_salt.as_str(),
        "the client's salt went through"
    );
    assert_eq!(cached(&spoof), 0, "a copied salt bought a cache hit");
    assert_eq!(*replied_cached(&spoof_reply), 0);
    // The spoofed request ran, and was cached, under globex's own salt.
    let repeat = forward(&tb, "globex", "spoof-globex-2", COMPLETIONS, &probe, &[]);
    assert!(cached(&repeat) >= SEVERAL_BLOCKS, "{repeat}");
    // Control: the same body sent straight to the replica, past the gateway,
    // does hit acme's blocks; so a salt let through would have been caught.
    let replica = tb
        .replicas
        .iter()
        .find(|r| victim["replica"] == r.name.as_str())
        .expect("the victim's replica");
    let direct = client()
        .post(format!("http://{}{COMPLETIONS}", replica.addr))
        .json(&spoofed)
        .send()
        .and_then(|r| r.json::<Value>())
        .expect("direct request");
    let direct_hit = direct["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64();
    assert!(direct_hit.is_some_and(|t| t >= SEVERAL_BLOCKS), "{direct}");
}

#[test]
fn trusted_profile_shares_cache() {
    let keys = TestKeys::generate();
    // acme and globex opt into the trusted profile per tenant; initech keeps
    // the gateway's strict default.
    let mut trusted = registry(&keys);
    for (tenant, tier) in [("acme", "enterprise"), ("globex", "standard")] {
        let entry = format!("id = \"{tenant}\"\ntier = \"{tier}\"\n");
        assert!(trusted.contains(&entry), "fixture changed: {entry}");
        trusted = trusted.replacen(&entry, &format!("{entry}cache_profile = \"trusted\"\n"), 1);
    }
    let tb = one_replica_pools(trusted);

    let document = chat_with(&prose(3, 300), "Summarise the document.", 4);
    let first = forward(&tb, "acme", "trusted-acme-1", CHAT, &document, &[]);
    assert!(
        first["body"].get("cache_salt").is_none(),
        "trusted requests carry no salt: {first}"
    );
    assert_eq!(cached(&first), 0);

    let globex_reply = send(&tb, "globex", "trusted-globex-1", CHAT, &document, &[]);
    assert_eq!(globex_reply.status, 200, "{}", globex_reply.text);
    let second = seen(&tb, "trusted-globex-1");
    assert_eq!(second["replica"], first["replica"]);
    assert_eq!(
        second["headers"]["x-prefix-key"],
        first["headers"]["x-prefix-key"]
    );
    let shared = cached(&second);
    assert!(
        shared >= SEVERAL_BLOCKS,
        "trusted tenants should share the cache: {second}"
    );
    assert_eq!(*replied_cached(&globex_reply), shared);

    // A trusted tenant cannot wall itself off into a private namespace (one
    // it could probe from): its cache_salt is removed, and others hit it.
    let translate = chat_with(&prose(4, 300), "Translate the document.", 4);
    let mut walled = translate.clone();
    walled["cache_salt"] = json!("globex-private-namespace");
    let wall = forward(&tb, "globex", "trusted-walled", CHAT, &walled, &[]);
    assert!(
        wall["body"].get("cache_salt").is_none(),
        "the client's salt went through: {wall}"
    );
    let joined = forward(&tb, "acme", "trusted-acme-2", CHAT, &translate, &[]);
    assert!(cached(&joined) >= SEVERAL_BLOCKS, "{joined}");

    // initech is still strict: salted with its own HMAC.
    let strict = forward(&tb, "initech", "trusted-initech", CHAT, &document, &[]);
    let initech_salt = tenant_salt(&tb.config.cache_secret, "initech");
    assert_eq!(strict["body"]["cache_salt"], initech_salt.as_str());
    assert_eq!(cached(&strict), 0);
}

#[test]
fn prefix_affinity_and_pool_routing() {
    let keys = TestKeys::generate();
    let (latency, throughput) = (PoolSpec::new("latency", 3), PoolSpec::new("throughput", 1));
    let tb = start(registry(&keys), latency, throughput);

    // One tenant, one long system prompt, ten different questions: one
    // replica, one key, and every request after the first hits the cache.
    let system = prose(10, 200);
    let question = |i: usize| format!("Question {i}: what changed in region {i} this quarter?");
    let (mut replicas, mut prefix_keys) = (BTreeSet::new(), BTreeSet::new());
    for i in 0..10 {
        let rid = format!("affinity-acme-{i}");
        let record = forward(
            &tb,
            "acme",
            &rid,
            CHAT,
            &chat_with(&system, &question(i), 4),
            &[],
        );
        assert_eq!(record["pool"], "latency");
        replicas.insert(record["replica"].to_string());
        prefix_keys.insert(record["headers"]["x-prefix-key"].to_string());
        if i > 0 {
            assert!(
                cached(&record) >= SEVERAL_BLOCKS,
                "{rid} missed the shared prefix: {record}"
            );
        }
    }
    assert_eq!(
        replicas.len(),
        1,
        "one prefix, several replicas: {replicas:?}"
    );
    assert_eq!(prefix_keys.len(), 1, "{prefix_keys:?}");
    let acme_key = prefix_keys.first().cloned().unwrap_or_default();
    assert_eq!(
        acme_key.trim_matches('"').len(),
        64,
        "hex SHA-256 key: {acme_key}"
    );

    // Another tenant with the same prefix gets another key.
    let globex = forward(
        &tb,
        "globex",
        "affinity-globex",
        CHAT,
        &chat_with(&system, &question(0), 4),
        &[],
    );
    assert_ne!(globex["headers"]["x-prefix-key"].to_string(), acme_key);

    // Affinity is per prefix, not per tenant: distinct prefixes spread.
    let mut spread = BTreeSet::new();
    for i in 0..12 {
        let body = chat_with(&prose(100 + i, 80), "hi", 2);
        let record = forward(&tb, "acme", &format!("spread-{i}"), CHAT, &body, &[]);
        spread.insert(record["replica"].to_string());
    }
    assert!(
        spread.len() >= 2,
        "12 distinct prefixes all landed on {spread:?}"
    );

    // Pool choice: workload class within the tenant's allowed pools.
    let long_prompt = prose(7, 5000);
    let chat_and = |extra: Value| {
        let mut body = chat(MODEL, "hello there", 4);
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        body
    };
    let plain = chat_and(json!({}));
    let streaming = chat_and(json!({ "stream": true }));
    let completion = json!({ "model": MODEL, "prompt": "Once upon a time", "max_tokens": 4 });
    let embedding = json!({ "model": "bge-m3", "input": "hello world" });
    let priority =
        chat_and(json!({ "service_tier": "priority", "metadata": { "workload": "interactive" } }));
    #[rustfmt::skip]
    let cases: Vec<Route> = vec![
        ("acme", "interactive chat", CHAT, plain.clone(), &[], "latency"),
        ("acme", "streaming chat", CHAT, streaming.clone(), &[], "latency"),
        ("acme", "client pool header", CHAT, plain.clone(), &[("x-llm-pool", "throughput")], "latency"),
        ("acme", "completions", COMPLETIONS, completion, &[], "latency"),
        ("acme", "x-workload: batch", CHAT, plain.clone(), &[("x-workload", "batch")], "throughput"),
        ("acme", "metadata.workload", CHAT, chat_and(json!({ "metadata": { "workload": "batch" } })), &[], "throughput"),
        ("acme", "service_tier flex", CHAT, chat_and(json!({ "service_tier": "flex" })), &[], "throughput"),
        ("acme", "embeddings", "/v1/embeddings", embedding, &[], "throughput"),
        ("acme", "long context", CHAT, chat(MODEL, &long_prompt, 16), &[], "throughput"),
        ("globex", "interactive chat", CHAT, plain.clone(), &[], "latency"),
        ("initech", "interactive chat", CHAT, plain.clone(), &[], "throughput"),
        ("initech", "streaming chat", CHAT, streaming, &[], "throughput"),
        ("initech", "x-llm-pool: latency", CHAT, plain.clone(), &[("x-llm-pool", "latency")], "throughput"),
        ("initech", "x-workload: interactive", CHAT, plain, &[("x-workload", "interactive")], "throughput"),
        ("initech", "body asks for priority", CHAT, priority, &[], "throughput"),
    ];
    for (i, (tenant, what, path, body, headers, pool)) in cases.iter().enumerate() {
        let record = forward(&tb, tenant, &format!("route-{i}"), path, body, headers);
        assert_eq!(record["pool"], *pool, "{tenant} {what}");
        assert_eq!(record["headers"]["x-llm-pool"], *pool, "{tenant} {what}");
    }

    // The long prompt acme may send is beyond initech's tier window.
    let too_long = send(
        &tb,
        "initech",
        "route-initech-long",
        CHAT,
        &chat(MODEL, &long_prompt, 16),
        &[],
    );
    too_long.assert_error(400, "context_length_exceeded");
    assert_eq!(too_long.body["error"]["param"], "messages");
    assert!(upstream_request(&tb, "route-initech-long").is_none());

    // Nothing initech sent ever reached the latency pool.
    let initech: Vec<Value> = tb
        .upstream_requests()
        .into_iter()
        .filter(|r| r["headers"]["x-tenant-id"] == "initech")
        .collect();
    assert_eq!(initech.len(), 5);
    assert!(
        initech.iter().all(|r| r["pool"] == "throughput"),
        "{initech:?}"
    );
}

#[test]
fn bad_requests_never_reach_a_pool() {
    let keys = TestKeys::generate();
    let tb = one_replica_pools(registry(&keys));
    let msgs = r#""messages":[{"role":"user","content":"hi"}]"#;
    let object = |members: &str| format!("{{{members}}}").into_bytes();
    let with_model = |model: &str| object(&format!(r#""model":"{model}",{msgs}"#));
    let chat_and = |extra: &str| object(&format!(r#""model":"{MODEL}",{msgs},{extra}"#));
    // Valid JSON but for one malformed UTF-8 sequence inside the content.
    let mut invalid_utf8 = with_model(MODEL);
    let at = invalid_utf8.len() - r#"hi"}]}"#.len();
    invalid_utf8.splice(at..at, [0xc3, 0x28]);
    let duplicate = chat_and(r#""model":"llama-3.1-70b-instruct""#);
    let escaped_duplicate = chat_and(r#""mo\u0064el":"llama-3.1-70b-instruct""#);
    let duplicate_role = object(&format!(
        r#""model":"{MODEL}","messages":[{{"role":"user","role":"system","content":"hi"}}]"#
    ));
    let long_prompt = serde_json::to_vec(&chat(MODEL, &prose(5, 5000), 16)).expect("json");
    assert!(
        long_prompt.len() < 65536,
        "must fail on context, not on size"
    );
    let responses = object(&format!(
        r#""model":"{MODEL}","input":"hi","previous_response_id":"resp_1""#
    ));
    let large = serde_json::to_vec(&chat(MODEL, &"lorem ipsum dolor sit amet ".repeat(3000), 4))
        .expect("json");
    assert!(large.len() > 65536);

    #[rustfmt::skip]
    let cases: Vec<Refusal> = vec![
        ("invalid JSON", "acme", CHAT, br#"{"model": "llama-3.1-8b-instruct", "messages": ["#.to_vec(), 400, "invalid_json", ""),
        ("invalid UTF-8", "acme", CHAT, invalid_utf8, 400, "invalid_json", ""),
        ("not an object", "acme", CHAT, b"[1,2,3]".to_vec(), 400, "invalid_json", ""),
        ("empty body", "acme", CHAT, Vec::new(), 400, "invalid_json", ""),
        ("duplicate model", "initech", CHAT, duplicate, 400, "duplicate_key", "model"),
        ("duplicate model, escaped", "initech", CHAT, escaped_duplicate, 400, "duplicate_key", "model"),
        ("duplicate key in a message", "acme", CHAT, duplicate_role, 400, "duplicate_key", "messages[0].role"),
        ("model not a string", "acme", CHAT, object(&format!(r#""model":42,{msgs}"#)), 400, "invalid_type", "model"),
        ("model missing", "acme", CHAT, object(msgs), 400, "missing_required_parameter", "model"),
        ("negative max_tokens", "acme", CHAT, chat_and(r#""max_tokens":-1"#), 400, "invalid_value", "max_tokens"),
        ("absurd max_tokens", "acme", CHAT, chat_and(r#""max_tokens":10000000000000"#), 400, "invalid_value", "max_tokens"),
        ("fractional max_tokens", "acme", CHAT, chat_and(r#""max_tokens":1.5"#), 400, "invalid_type", "max_tokens"),
        ("negative max_completion_tokens", "acme", CHAT, chat_and(r#""max_completion_tokens":-3"#), 400, "invalid_value", "max_completion_tokens"),
        ("n = 0", "acme", CHAT, chat_and(r#""n":0"#), 400, "invalid_value", "n"),
        ("n = 129", "acme", CHAT, chat_and(r#""n":129"#), 400, "invalid_value", "n"),
        ("best_of = 1000", "acme", COMPLETIONS, object(&format!(r#""model":"{MODEL}","prompt":"x","best_of":1000"#)), 400, "invalid_value", "best_of"),
        ("stream not a boolean", "acme", CHAT, chat_and(r#""stream":"yes""#), 400, "invalid_type", "stream"),
        ("no messages", "acme", CHAT, object(&format!(r#""model":"{MODEL}","messages":[]"#)), 400, "invalid_value", "messages"),
        ("model outside the allowlist", "initech", CHAT, with_model("llama-3.1-70b-instruct"), 403, "model_not_allowed", "model"),
        ("unknown model", "acme", CHAT, with_model("gpt-4o"), 403, "model_not_allowed", "model"),
        ("another tenant's adapter", "globex", CHAT, with_model("acme-lora"), 403, "model_not_allowed", "model"),
        ("embedding model on chat", "acme", CHAT, with_model("bge-m3"), 400, "model_not_supported", "model"),
        ("chat model on embeddings", "acme", "/v1/embeddings", object(&format!(r#""model":"{MODEL}","input":"hi""#)), 400, "model_not_supported", "model"),
        ("context too long for the tier", "initech", CHAT, long_prompt, 400, "context_length_exceeded", "messages"),
        ("max_tokens above the free cap", "initech", CHAT, chat_and(r#""max_tokens":257"#), 400, "invalid_value", "max_tokens"),
        ("max_tokens above the standard cap", "globex", CHAT, chat_and(r#""max_tokens":1025"#), 400, "invalid_value", "max_tokens"),
        ("stored responses", "acme", "/v1/responses", responses, 400, "unsupported_parameter", "previous_response_id"),
        ("unknown path", "acme", "/v1/audio/speech", with_model(MODEL), 404, "unknown_url", ""),
        ("body above max_body_bytes", "acme", CHAT, large.clone(), 413, "request_too_large", ""),
    ];
    for (i, (what, tenant, path, body, status, code, param)) in cases.into_iter().enumerate() {
        let reply = send_raw(
            &tb,
            tenant,
            &format!("bad-{i}"),
            path,
            body,
            Framing::ContentLength,
        );
        assert_eq!(
            (reply.status, reply.error_code()),
            (status, Some(code)),
            "{what}: {}",
            reply.text
        );
        reply.assert_error(status, code);
        if !param.is_empty() {
            assert_eq!(
                reply.body["error"]["param"], param,
                "{what}: {}",
                reply.text
            );
        }
    }
    // Without a content-length the size is only known while the body streams in.
    send_raw(&tb, "acme", "bad-chunked", CHAT, large, Framing::Chunked)
        .assert_error(413, "request_too_large");
    get(&tb, CHAT, &[("authorization", &bearer("acme"))]).assert_error(405, "method_not_allowed");

    // /v1/models is answered by the gateway from each tenant's allowlist.
    let ids = |tenant: &str| -> Vec<String> {
        let reply = get(&tb, "/v1/models", &[("authorization", &bearer(tenant))]);
        assert_eq!(reply.status, 200, "{tenant}: {}", reply.text);
        assert_eq!(reply.body["object"], "list");
        let data = reply.body["data"].as_array().cloned().unwrap_or_default();
        let mut ids: Vec<String> = data
            .iter()
            .filter_map(|m| m["id"].as_str().map(str::to_owned))
            .collect();
        ids.sort();
        ids
    };
    let shared = ["bge-m3", "llama-3.1-70b-instruct", "llama-3.1-8b-instruct"];
    let mut acme_models = vec!["acme-lora"];
    acme_models.extend(shared);
    assert_eq!(ids("acme"), acme_models);
    assert_eq!(ids("globex"), shared);
    assert_eq!(ids("initech"), [MODEL]);
    let card = get(
        &tb,
        "/v1/models/acme-lora",
        &[("authorization", &bearer("acme"))],
    );
    assert_eq!(card.status, 200, "{}", card.text);
    assert_eq!(
        (&card.body["owned_by"], &card.body["parent"]),
        (&json!("acme"), &json!(MODEL))
    );
    let hidden = get(
        &tb,
        "/v1/models/acme-lora",
        &[("authorization", &bearer("globex"))],
    );
    hidden.assert_error(404, "model_not_found");

    let upstream = tb.upstream_requests();
    assert!(
        upstream.is_empty(),
        "refused requests reached a pool: {upstream:?}"
    );
    // The same testbed does forward a valid request: the empty log is not a dead pool.
    forward(&tb, "acme", "bad-control", CHAT, &chat(MODEL, "hi", 2), &[]);
    assert_eq!(tb.upstream_requests().len(), 1);
}

/// A streamed reply: each SSE `data:` payload with when it arrived.
struct Stream {
    status: u16,
    events: Vec<(Duration, String)>,
    total: Duration,
}

/// POSTs a streaming request and reads the response as it arrives.
fn stream(tb: &Testbed, tenant: &str, rid: &str, path: &str, body: &Value) -> Stream {
    let started = Instant::now();
    let mut resp = client()
        .post(format!("{}{path}", tb.gateway_url()))
        .header("authorization", bearer(tenant))
        .header("x-request-id", rid)
        .json(body)
        .send()
        .expect("streaming request");
    let status = resp.status().as_u16();
    let (mut buf, mut pending, mut events) = ([0u8; 4096], Vec::<u8>::new(), Vec::new());
    loop {
        let n = resp.read(&mut buf).expect("read the stream");
        if n == 0 {
            break;
        }
        let at = started.elapsed();
        pending.extend_from_slice(&buf[..n]);
        while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = pending.drain(..end + 2).collect();
            let text = String::from_utf8(event).expect("utf-8 event");
            let data = text.lines().filter_map(|line| line.strip_prefix("data: "));
            events.extend(data.map(|d| (at, d.to_owned())));
        }
    }
    let rest = String::from_utf8_lossy(&pending);
    assert!(rest.trim().is_empty(), "stream ended mid-event: {rest:?}");
    let total = started.elapsed();
    Stream {
        status,
        events,
        total,
    }
}

#[test]
fn streaming_and_body_rewrite() {
    let keys = TestKeys::generate();
    // Every decode step of the latency pool takes ~50 ms, so a 16-token
    // stream lasts most of a second: chunk-by-chunk delivery is visible.
    let mut latency = PoolSpec::new("latency", 1);
    latency.mock_args = vec!["--decode-base-us".into(), "50000".into()];
    let tb = start(registry(&keys), latency, PoolSpec::new("throughput", 1));
    let salt = tenant_salt(&tb.config.cache_secret, "acme");

    let sent = json!({
        "model": MODEL,
        "messages": [{ "role": "user", "content": "Count slowly." }],
        "max_tokens": 16,
        "stream": true,
    });
    let streamed = stream(&tb, "acme", "stream-1", CHAT, &sent);
    assert_eq!(streamed.status, 200);
    let (first_at, last_at) = match (streamed.events.first(), streamed.events.last()) {
        (Some((first, _)), Some((last, done))) => {
            assert_eq!(done, "[DONE]");
            (*first, *last)
        }
        _ => panic!("no events"),
    };
    let total = streamed.total;
    assert!(
        first_at < total / 2,
        "first chunk at {first_at:?} of {total:?}: buffered"
    );
    // Decode steps take at least 50 ms each: the tokens cannot arrive together.
    assert!(
        last_at - first_at >= Duration::from_millis(300),
        "{first_at:?}..{last_at:?}"
    );
    let arrivals: BTreeSet<Duration> = streamed.events.iter().map(|(at, _)| *at).collect();
    assert!(
        arrivals.len() >= 8,
        "events arrived in only {} reads",
        arrivals.len()
    );

    let chunks: Vec<Value> = streamed.events[..streamed.events.len() - 1]
        .iter()
        .map(|(_, data)| serde_json::from_str(data).expect("JSON chunk"))
        .collect();
    let has_text = |c: &&Value| {
        c["choices"][0]["delta"]["content"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    };
    assert_eq!(chunks.iter().filter(has_text).count(), 16);
    // The client did not ask for usage. The gateway forced it (continuous, so
    // a hang-up still settles exact tokens) and removed all of it again: the
    // final usage-only chunk, whose empty `choices` breaks clients reading
    // `choices[0]`, and the running `usage` on every other chunk.
    let empty_choices = |c: &&Value| c["choices"].as_array().is_none_or(|a| a.is_empty());
    assert_eq!(chunks.iter().filter(empty_choices).count(), 0, "{chunks:?}");
    assert!(
        chunks.iter().all(|c| c.get("usage").is_none()),
        "usage reached a client that asked none: {chunks:?}"
    );

    let upstream = seen(&tb, "stream-1");
    let mut expected = sent.clone();
    expected["cache_salt"] = json!(salt);
    expected["stream_options"] = json!({ "include_usage": true, "continuous_usage_stats": true });
    assert_eq!(upstream["body"], expected);
    assert_eq!(upstream["headers"]["x-llm-stream"], "true");

    // include_usage: false is turned on; the other stream options stay.
    let mut opted_out = sent.clone();
    opted_out["stream_options"] =
        json!({ "include_usage": false, "continuous_usage_stats": false });
    opted_out["max_tokens"] = json!(2);
    let streamed = stream(&tb, "acme", "stream-2", CHAT, &opted_out);
    assert_eq!(streamed.status, 200);
    let options = &seen(&tb, "stream-2")["body"]["stream_options"];
    assert_eq!(
        *options,
        json!({ "include_usage": true, "continuous_usage_stats": true })
    );
    assert!(
        !streamed
            .events
            .iter()
            .any(|(_, d)| d.contains("\"choices\":[]")),
        "the forced usage chunk reached a client that opted out"
    );
    // A client that asked for usage keeps its usage chunk.
    let mut opted_in = sent.clone();
    opted_in["stream_options"] = json!({ "include_usage": true });
    opted_in["max_tokens"] = json!(2);
    let streamed = stream(&tb, "acme", "stream-2b", CHAT, &opted_in);
    assert_eq!(streamed.status, 200);
    assert!(
        streamed
            .events
            .iter()
            .any(|(_, d)| d.contains("\"choices\":[]") && d.contains("\"usage\":{")),
        "no usage chunk for a client that asked"
    );

    // Completions stream with usage too.
    let completion =
        json!({ "model": MODEL, "prompt": "Once upon a time", "max_tokens": 2, "stream": true });
    assert_eq!(
        stream(&tb, "acme", "stream-3", COMPLETIONS, &completion).status,
        200
    );
    let options = &seen(&tb, "stream-3")["body"]["stream_options"];
    assert_eq!(
        *options,
        json!({ "include_usage": true, "continuous_usage_stats": true })
    );

    // Non-streaming: every member arrives as sent except the salt, and the
    // content-length Envoy forwards matches the rewritten body.
    let raw = concat!(
        r#"{"model":"llama-3.1-8b-instruct","messages":[{"role":"system","content":"Be brief."},"#,
        r#"{"role":"user","content":"caf\u00e9 \u2615 tab\there","name":"ann"}],"#,
        r#""temperature":0.25,"top_p":0.9,"seed":7,"stop":["\n\n","END"],"user":"u-42","#,
        r#""logit_bias":{"50256":-100},"metadata":{"team":"search"},"max_tokens":2,"#,
        r#""cache_salt":"my-own-salt","top_k":5,"stop_token_ids":[1,2]}"#
    );
    let reply = send_raw(
        &tb,
        "acme",
        "rewrite-1",
        CHAT,
        raw.as_bytes().to_vec(),
        Framing::ContentLength,
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
    let upstream = seen(&tb, "rewrite-1");
    let mut expected: Value = serde_json::from_str(raw).expect("valid body");
    expected["cache_salt"] = json!(salt);
    assert_eq!(upstream["body"], expected);
    let headers = &upstream["headers"];
    // Only the salt's value changed length: the other members kept their bytes.
    let rewritten_len = raw.len() - "my-own-salt".len() + salt.len();
    assert_eq!(headers["content-length"], rewritten_len.to_string());
    assert!(headers.get("transfer-encoding").is_none(), "{headers}");
    assert_eq!(headers["x-llm-model"], MODEL);
    assert_eq!(headers["x-llm-stream"], "false");
    assert_eq!(headers["x-llm-max-tokens"], "2");

    // Without max_tokens the gateway writes its default (64, under every cap).
    let no_max = json!({ "model": MODEL, "messages": [{ "role": "user", "content": "hi" }] });
    let upstream = forward(&tb, "acme", "rewrite-2", CHAT, &no_max, &[]);
    let mut expected = no_max.clone();
    expected["cache_salt"] = json!(salt);
    expected["max_tokens"] = json!(64);
    assert_eq!(upstream["body"], expected);
    let sent_len = serde_json::to_string(&no_max).expect("json").len();
    let added = format!(r#","cache_salt":"{salt}","max_tokens":64"#).len();
    assert_eq!(
        upstream["headers"]["content-length"],
        (sent_len + added).to_string()
    );
}
