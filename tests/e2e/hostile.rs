//! A hostile tenant against the real chain: Envoy with the built filters,
//! ratelimit-service and the mock pools, driven over raw sockets where a
//! well-behaved HTTP client would refuse to send what an attacker sends.
//!
//! Each test is one finding of the hostile-tenant review: bytes that once
//! panicked a VM, usage shapes that once billed $0, bodies that once
//! piled up before admission, fields that once reached the pool.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use gateway_e2e::{
    Reply, client, eventually, full_chain, metric, post, ratelimit_metrics, settled_usage,
    spend_nanos, start_with, u, with_digests,
};
use serde_json::{Value, json};
use test_support::sse;
use testbed::{Testbed, TestbedConfig};

const MODEL: &str = "llama-3.1-8b-instruct";
const EMBED: &str = "bge-m3";
/// Nano-dollars per token of `MODEL` (cached prompt tokens cost the same).
const NANOS_IN: u64 = 200;
const NANOS_OUT: u64 = 600;

/// One testbed at a time: these tests time bodies and streams.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn config(mock_args: &[&str]) -> TestbedConfig {
    full_chain(
        with_digests(include_str!("fixtures/hostile-registry.toml")),
        mock_args,
    )
}

/// No model time to speak of: limits, not the mock, decide.
const FAST: &[&str] = gateway_e2e::FAST_MOCK;

fn key(tenant: &str) -> String {
    format!("Bearer sk-{tenant}")
}

/// A small chat request of `tenant`.
fn ask(tb: &Testbed, tenant: &str) -> Reply {
    post(
        tb,
        "/v1/chat/completions",
        &[("authorization", &key(tenant))],
        &chat_body("hi", 2),
    )
}

fn chat_body(content: &str, max_tokens: u32) -> Value {
    json!({ "model": MODEL, "messages": [{ "role": "user", "content": content }], "max_tokens": max_tokens })
}

/// A raw HTTP/1.1 exchange on a fresh connection: status, head and body.
struct RawReply {
    status: u16,
    head: String,
    body: String,
}

impl RawReply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// Asserts OpenAI's error shape, with `code` when given.
    fn assert_openai(&self, status: u16, code: Option<&str>, what: &str) {
        assert_eq!(self.status, status, "{what}: {}\n{}", self.head, self.body);
        let v = self.json();
        let err = &v["error"];
        assert!(
            err["message"].as_str().is_some_and(|m| !m.is_empty()) && err["type"].is_string(),
            "{what}: not OpenAI-shaped: {}",
            self.body
        );
        if let Some(code) = code {
            assert_eq!(err["code"], code, "{what}: {}", self.body);
        }
        assert!(
            self.head
                .to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{what}: {}",
            self.head
        );
    }
}

/// Sends `request` as written and reads the reply (`connection: close`).
fn raw(addr: SocketAddr, request: &[u8]) -> RawReply {
    let mut conn = TcpStream::connect(addr).expect("connect to gateway");
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    // The server may answer and close before it has read everything.
    let _ = conn.write_all(request);
    read_reply(&mut conn)
}

fn read_reply(conn: &mut TcpStream) -> RawReply {
    let mut seen = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
        if let Some(reply) = parse_complete(&seen) {
            return reply;
        }
    }
    parse_complete(&seen).unwrap_or_else(|| RawReply {
        status: 0,
        head: String::from_utf8_lossy(&seen).into_owned(),
        body: String::new(),
    })
}

/// A whole response with a content-length body, once it is all in.
fn parse_complete(seen: &[u8]) -> Option<RawReply> {
    let text = String::from_utf8_lossy(seen);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let length = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())?
    })?;
    (body.len() >= length).then(|| RawReply {
        status,
        head: head.to_owned(),
        body: body[..length].to_owned(),
    })
}

/// A chat POST with `extra` header lines (raw bytes) and `body`.
fn chat_request(extra: &[&[u8]], body: &[u8]) -> Vec<u8> {
    let mut req = b"POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\ncontent-type: application/json\r\n".to_vec();
    for line in extra {
        req.extend_from_slice(line);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    req.extend_from_slice(body);
    req
}

fn envoy_stat(tb: &Testbed, needle: &str) -> u64 {
    testbed::envoy::counter(tb.envoy.admin, needle)
}

/// A hostile header case: what, the header lines, the expected status and code.
type HeaderCase<'a> = (&'a str, Vec<&'a [u8]>, u16, Option<&'a str>);

#[test]
fn a_storm_of_hostile_requests_leaves_every_worker_serving() {
    let _serial = serial();
    let tb = start_with(config(FAST));
    let gw = tb.envoy.gateway;
    let body = chat_body("hello", 2).to_string();
    let auth = format!("authorization: {}", key("acct-t")).into_bytes();

    // Non-UTF-8 bytes in every header position. Headers the gateway reads
    // are refused; the rest are the upstream's business and pass.
    let header_cases: Vec<HeaderCase> = vec![
        ("note", vec![&auth, b"x-note: caf\xe9"], 200, None),
        (
            "api key",
            vec![b"x-api-key: sk-\xe9"],
            400,
            Some("invalid_header"),
        ),
        (
            "authorization",
            vec![b"authorization: Bearer sk-\xe9\xff"],
            400,
            Some("invalid_header"),
        ),
        ("request id", vec![&auth, b"x-request-id: r\xe9"], 200, None),
        ("tenant id", vec![&auth, b"x-tenant-id: \xe9"], 200, None),
        ("tier", vec![&auth, b"x-tenant-tier: \xff"], 200, None),
        (
            "workload",
            vec![&auth, b"x-workload: b\xe9"],
            400,
            Some("invalid_header"),
        ),
        (
            "user agent",
            vec![&auth, b"user-agent: \xff\xfe"],
            200,
            None,
        ),
        (
            "underscore spoof",
            vec![&auth, b"x_tenant_id: other-t"],
            200,
            None,
        ),
    ];
    for (i, (what, lines, status, code)) in header_cases.iter().enumerate() {
        let id = format!("x-request-id: hostile-{i}").into_bytes();
        let mut with_id: Vec<&[u8]> = lines.clone();
        if *what != "request id" {
            with_id.push(&id);
        }
        let reply = raw(gw, &chat_request(&with_id, body.as_bytes()));
        if *status == 200 {
            assert_eq!(reply.status, 200, "{what}: {}", reply.body);
        } else {
            reply.assert_openai(*status, *code, what);
        }
    }

    // Bytes the HTTP/1 codec refuses before a stream exists (a header name
    // or request line that is not HTTP): Envoy writes its own 400 and closes;
    // no filter and no local-reply mapping runs that early (docs/security.md).
    let codec_cases: Vec<(&str, Vec<u8>)> = vec![
        ("header name", chat_request(&[&auth, b"x-caf\xe9: 1"], body.as_bytes())),
        (
            "path",
            b"POST /v1/chat/completions\xe9 HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\ncontent-length: 0\r\n\r\n".to_vec(),
        ),
        (
            "request line",
            b"\xff\xfe / HTTP/1.1\r\nhost: gateway\r\n\r\n".to_vec(),
        ),
    ];
    for (what, request) in &codec_cases {
        let reply = raw(gw, request);
        assert_eq!(reply.status, 400, "{what}: {} {}", reply.head, reply.body);
    }

    // Too many and too large headers: 431 as OpenAI JSON (was plain text).
    let many: Vec<Vec<u8>> = (0..200)
        .map(|i| format!("x-h{i}: v").into_bytes())
        .collect();
    let mut lines: Vec<&[u8]> = many.iter().map(Vec::as_slice).collect();
    lines.push(&auth);
    raw(gw, &chat_request(&lines, body.as_bytes())).assert_openai(
        431,
        Some("request_headers_too_large"),
        "200 headers",
    );
    let huge = format!("x-big: {}", "a".repeat(70_000)).into_bytes();
    raw(gw, &chat_request(&[&auth, &huge], body.as_bytes())).assert_openai(
        431,
        Some("request_headers_too_large"),
        "70 kB header",
    );

    // An oversized chunked body: 413 as OpenAI JSON (was plain text).
    let mut chunked = b"POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\ntransfer-encoding: chunked\r\ncontent-type: application/json\r\n".to_vec();
    chunked.extend_from_slice(&auth);
    chunked.extend_from_slice(b"\r\n\r\n");
    let piece = vec![b'a'; 16 * 1024];
    for _ in 0..16 {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(&piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    raw(gw, &chunked).assert_openai(413, Some("request_too_large"), "chunked 256 kB");

    // Forbidden and unknown fields, hostile media URLs: 400 naming the field.
    let forbidden = [
        ("kv_transfer_params", json!({"remote_host": "10.0.0.9"})),
        ("prompt_embeds", json!("AAAA")),
        ("chat_template", json!("{{ raise_exception('x') }}")),
        ("logits_processors", json!(["os.system"])),
        ("vllm_xargs", json!({"a": 1})),
    ];
    for (field, value) in forbidden {
        let mut b = chat_body("hi", 2);
        b[field] = value;
        let r = post(
            &tb,
            "/v1/chat/completions",
            &[
                ("authorization", &key("acct-t")),
                ("x-request-id", "hostile-f"),
            ],
            &b,
        );
        r.assert_error(400, "forbidden_parameter");
        assert_eq!(r.body["error"]["param"], field, "{}", r.text);
    }
    let mut b = chat_body("hi", 2);
    b["frobnicate"] = json!(true);
    let r = post(
        &tb,
        "/v1/chat/completions",
        &[
            ("authorization", &key("acct-t")),
            ("x-request-id", "hostile-u"),
        ],
        &b,
    );
    r.assert_error(400, "unknown_parameter");
    let media = json!({ "model": MODEL, "max_tokens": 2, "messages": [{ "role": "user", "content": [
        { "type": "text", "text": "what is this" },
        { "type": "image_url", "image_url": { "url": "http://169.254.169.254/latest/meta-data/" } }
    ] }] });
    post(
        &tb,
        "/v1/chat/completions",
        &[
            ("authorization", &key("acct-t")),
            ("x-request-id", "hostile-m"),
        ],
        &media,
    )
    .assert_error(400, "media_url_not_allowed");

    // Two credentials naming two tenants.
    post(
        &tb,
        "/v1/chat/completions",
        &[
            ("authorization", &key("acct-t")),
            ("x-api-key", "sk-other-t"),
            ("x-request-id", "hostile-c"),
        ],
        &chat_body("hi", 2),
    )
    .assert_error(401, "conflicting_credentials");

    // OpenAI's request caps: at most 2,048 embedding inputs.
    let inputs: Vec<String> = (0..2049).map(|i| format!("t{i}")).collect();
    let r = post(
        &tb,
        "/v1/embeddings",
        &[
            ("authorization", &key("acct-t")),
            ("x-request-id", "hostile-e"),
        ],
        &json!({ "model": EMBED, "input": inputs }),
    );
    r.assert_error(400, "invalid_value");
    assert_eq!(r.body["error"]["param"], "input");

    // Nothing refused reached a pool; what passed arrived without the
    // hostile bytes it was allowed to carry in the gateway's own names.
    let upstream = tb.upstream_requests();
    let passed: Vec<&Value> = upstream
        .iter()
        .filter(|r| {
            r["headers"]["x-request-id"]
                .as_str()
                .is_some_and(|id| id.starts_with("hostile-"))
        })
        .collect();
    let allowed: Vec<String> = header_cases
        .iter()
        .enumerate()
        .filter(|(_, c)| c.2 == 200 && c.0 != "request id")
        .map(|(i, _)| format!("hostile-{i}"))
        .collect();
    for r in &passed {
        let id = r["headers"]["x-request-id"].as_str().unwrap_or_default();
        assert!(allowed.iter().any(|a| a == id), "{id} reached a pool: {r}");
        assert_eq!(r["headers"]["x-tenant-id"], "acct-t", "{r}");
        assert_eq!(r["headers"]["x-tenant-tier"], "metered", "{r}");
        assert!(r["headers"].get("x_tenant_id").is_none(), "{r}");
    }
    assert_eq!(passed.len(), allowed.len(), "{passed:?}");

    // Afterwards every worker still serves: many fresh connections (Envoy
    // spreads them over its workers), each a normal request...
    for i in 0..24 {
        let reply = raw(
            gw,
            &chat_request(
                &[&auth, format!("x-request-id: after-{i}").as_bytes()],
                body.as_bytes(),
            ),
        );
        assert_eq!(
            reply.status, 200,
            "request {i} after the storm: {}",
            reply.body
        );
        // ...and the client gets its request id back to correlate.
        assert!(
            reply
                .head
                .to_ascii_lowercase()
                .contains(&format!("x-request-id: after-{i}")),
            "{}",
            reply.head
        );
    }
    // ...and the module's VM never failed (a failure would have been
    // reloaded, and counted in this series, which exists from the start).
    let reloads = client()
        .get(format!(
            "http://{}/stats?filter=^wasm\\.llm-gateway\\.vm_reload$",
            tb.envoy.admin
        ))
        .send()
        .and_then(|r| r.text())
        .expect("Envoy's stats");
    assert_eq!(
        reloads.trim(),
        "wasm.llm-gateway.vm_reload: 0",
        "the module's VM failed during the storm"
    );
}

#[test]
fn a_failed_vm_is_replaced_and_counted() {
    let _serial = serial();
    let mut config = config(FAST);
    config.probe_filters = vec!["crash_probe".into()];
    config.envoy_concurrency = 1;
    let tb = start_with(config);
    let ok = |id: &str| {
        post(
            &tb,
            "/v1/chat/completions",
            &[("authorization", &key("acct-t")), ("x-request-id", id)],
            &chat_body("hi", 2),
        )
    };
    assert_eq!(ok("before").status, 200);
    // The probe traps its VM. With FAIL_CLOSED every later request on the
    // (only) worker would answer 503; FAIL_RELOAD brings a fresh VM.
    let trapped = client()
        .post(format!("{}/v1/chat/completions", tb.gateway_url()))
        .header("authorization", key("acct-t"))
        .header("x-crash-probe", "now")
        .json(&chat_body("hi", 2))
        .send()
        .map(|r| r.status().as_u16());
    assert_ne!(trapped.ok(), Some(200));
    let mut n = 0;
    let recovered = eventually(Duration::from_secs(15), || {
        n += 1;
        ok(&format!("after-{n}")).status == 200
    });
    assert!(recovered, "the worker never served again after the trap");
    assert!(
        envoy_stat(&tb, "wasm.crash-probe.vm_reload") >= 1,
        "the reload was not counted"
    );
}

/// Tokens and nano-dollars of a usage object as the client saw it: chat /
/// completions / embeddings (`prompt_tokens`) or Responses (`input_tokens`).
fn seen(usage: &Value) -> (u64, u64) {
    let prompt = usage["prompt_tokens"]
        .as_u64()
        .or_else(|| usage["input_tokens"].as_u64())
        .unwrap_or_else(|| panic!("no prompt count in {usage}"));
    let completion = usage["completion_tokens"]
        .as_u64()
        .or_else(|| usage["output_tokens"].as_u64())
        .unwrap_or(0);
    (prompt, completion)
}

#[test]
fn every_endpoint_and_ending_is_billed_what_the_pool_reported() {
    let _serial = serial();
    let tb = start_with(config(&[
        "--prefill-us-per-token",
        "0",
        "--decode-base-us",
        "20000",
        "--decode-us-per-seq",
        "0",
    ]));
    let auth = key("acct-t");
    let h = [("authorization", auth.as_str())];
    let mut expected = (0u64, 0u64);
    let mut add = |(p, c): (u64, u64)| {
        expected.0 += p;
        expected.1 += c;
    };

    // JSON bodies, every endpoint.
    let chat = post(
        &tb,
        "/v1/chat/completions",
        &h,
        &chat_body("count to three", 3),
    );
    assert_eq!(chat.status, 200, "{}", chat.text);
    add(seen(&chat.body["usage"]));
    let completion = post(
        &tb,
        "/v1/completions",
        &h,
        &json!({ "model": MODEL, "prompt": "Once upon a time", "max_tokens": 4 }),
    );
    assert_eq!(completion.status, 200, "{}", completion.text);
    add(seen(&completion.body["usage"]));
    let embedding = post(
        &tb,
        "/v1/embeddings",
        &h,
        &json!({ "model": EMBED, "input": ["alpha beta", "gamma"] }),
    );
    assert_eq!(embedding.status, 200, "{}", embedding.text);
    let embed_tokens = seen(&embedding.body["usage"]);
    // Finding 2: the Responses API (input_tokens / output_tokens) was billed $0.
    let responses = post(
        &tb,
        "/v1/responses",
        &h,
        &json!({ "model": MODEL, "input": "say something", "max_output_tokens": 5 }),
    );
    assert_eq!(responses.status, 200, "{}", responses.text);
    assert!(responses.body["usage"]["input_tokens"].as_u64() > Some(0));
    add(seen(&responses.body["usage"]));
    // Finding 3: a prompt token that decodes to `usage` in prompt_logprobs,
    // serialised after the real usage, was read as the usage (0 tokens).
    let mut forged = chat_body("usage usage \"usage\":{} usage", 2);
    forged["prompt_logprobs"] = json!(1);
    let forged = post(&tb, "/v1/chat/completions", &h, &forged);
    assert_eq!(forged.status, 200, "{}", forged.text);
    assert!(forged.text.contains("\"decoded_token\""), "{}", forged.text);
    add(seen(&forged.body["usage"]));

    // Streams: chat and completions (the client asks for the final usage
    // chunk, and sees only that one) and Responses events.
    let usage_asked = json!({ "include_usage": true });
    for (path, body) in [
        ("/v1/chat/completions", {
            let mut b = chat_body("stream a story", 6);
            b["stream"] = json!(true);
            b["stream_options"] = usage_asked.clone();
            b
        }),
        (
            "/v1/completions",
            json!({ "model": MODEL, "prompt": "A story:", "max_tokens": 5, "stream": true,
                    "stream_options": usage_asked }),
        ),
    ] {
        let r = post(&tb, path, &h, &body);
        assert_eq!(r.status, 200, "{}", r.text);
        let with_usage: Vec<Value> = sse::events(&r.text)
            .into_iter()
            .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
            .filter(|v| v["usage"].is_object())
            .collect();
        assert_eq!(with_usage.len(), 1, "one usage chunk: {}", r.text);
        add(seen(&with_usage[0]["usage"]));
    }
    let r = post(
        &tb,
        "/v1/responses",
        &h,
        &json!({ "model": MODEL, "input": "stream please", "max_output_tokens": 4, "stream": true }),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let completed = sse::events(&r.text)
        .into_iter()
        .find(|e| e.event.as_deref() == Some("response.completed"))
        .map(|e| serde_json::from_str::<Value>(&e.data).expect("event JSON"))
        .unwrap_or_else(|| panic!("no response.completed in {}", r.text));
    add(seen(&completed["response"]["usage"]));

    let row = settled_usage(&tb, "acct-t");
    assert_eq!(u(&row, "tokens_in"), expected.0 + embed_tokens.0, "{row}");
    assert_eq!(u(&row, "tokens_out"), expected.1, "{row}");
    let nanos = expected.0 * NANOS_IN + expected.1 * NANOS_OUT + embed_tokens.0 * 20;
    // Each request's cost is rounded up to a whole nano-dollar.
    let spent = spend_nanos(&row, "spend_today_usd");
    let requests = u(&row, "requests") as i64;
    assert!(
        (nanos as i64..=nanos as i64 + requests).contains(&spent),
        "spent {spent}, pool reported {nanos}: {row}"
    );

    // A client that hangs up mid-stream is billed what was generated (the
    // running usage of the last chunk the gateway saw), not the reservation.
    let before = settled_usage(&tb, "acct-t");
    let mut stream = chat_body("a long story please", 400);
    stream["stream"] = json!(true);
    let body = stream.to_string();
    let mut conn = TcpStream::connect(tb.envoy.gateway).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    conn.write_all(&chat_request(
        &[format!("authorization: {auth}").as_bytes()],
        body.as_bytes(),
    ))
    .expect("send");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while String::from_utf8_lossy(&got).matches("data: ").count() < 5 {
        let n = conn.read(&mut buf).expect("read");
        assert!(n > 0, "stream ended: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    drop(conn);
    let after = settled_usage(&tb, "acct-t");
    let out = u(&after, "tokens_out") - u(&before, "tokens_out");
    assert!(
        (3..200).contains(&out),
        "hang-up after ~5 chunks billed {out} output tokens (reservation: 400)"
    );
    assert!(u(&after, "tokens_in") > u(&before, "tokens_in"));

    // An upstream 4xx (nothing generated) refunds the output reservation:
    // vLLM refuses prompt_logprobs above 20.
    let before = settled_usage(&tb, "acct-t");
    let mut refused = chat_body("hi", 500);
    refused["prompt_logprobs"] = json!(50);
    let r = post(&tb, "/v1/chat/completions", &h, &refused);
    assert_eq!(r.status, 400, "{}", r.text);
    let after = settled_usage(&tb, "acct-t");
    assert_eq!(u(&after, "requests"), u(&before, "requests") + 1);
    assert_eq!(u(&after, "tokens_out"), u(&before, "tokens_out"), "{after}");
    assert!(u(&after, "tokens_in") > u(&before, "tokens_in"), "{after}");
}

#[test]
fn unknown_usage_is_charged_to_the_fair_queue_too() {
    let _serial = serial();
    // Prefill of 100 ms per token: a client can leave before any byte.
    let tb = start_with(config(&[
        "--prefill-us-per-token",
        "100000",
        "--decode-base-us",
        "1000",
    ]));
    let mut stream = chat_body("a question that takes a while to read", 300);
    stream["stream"] = json!(true);
    let body = stream.to_string();
    let mut conn = TcpStream::connect(tb.envoy.gateway).expect("connect");
    conn.write_all(&chat_request(
        &[format!("authorization: {}", key("acct-t")).as_bytes()],
        body.as_bytes(),
    ))
    .expect("send");
    // POSTs only: ratelimit-service's own `GET /v1/models` reads are logged too.
    let on_pool = eventually(Duration::from_secs(10), || {
        tb.upstream_requests().iter().any(|r| r["method"] == "POST")
    });
    assert!(on_pool, "the request never reached a pool");
    drop(conn);
    let row = settled_usage(&tb, "acct-t");
    // Unknown usage: every ledger keeps the reservation (300 out)...
    assert_eq!(u(&row, "tokens_out"), 300, "{row}");
    // ...the fair queue's counter included (finding 5: it was charged 0, so
    // a tenant that always hangs up early stayed "light"). The gauge is
    // sampled every 2 s: read it after two samples past the settlement.
    std::thread::sleep(Duration::from_millis(4500));
    let metrics = ratelimit_metrics(&tb);
    let service = ["latency", "throughput"]
        .iter()
        .filter_map(|pool| {
            metric(
                &metrics,
                "ratelimit_queue_service_weighted_tokens",
                &[("pool", pool), ("tenant", "acct-t")],
            )
        })
        .sum::<f64>();
    assert!(
        service >= 600.0,
        "weighted service {service} for a 300-token reservation:\n{metrics}"
    );
}

#[test]
fn an_adversarial_prompt_cannot_pass_the_context_cap() {
    let _serial = serial();
    let tb = start_with(config(FAST));
    // Finding 4: runs of Unicode spaces were estimated ~100x under. The
    // free tier's cap is 4,000 tokens; each of these is thousands.
    for (what, text) in [
        ("ideographic space", "\u{3000}".repeat(5000)),
        ("em space", "\u{2003}".repeat(5000)),
        ("ogham space", "\u{1680}".repeat(5000)),
        ("mixed", "\u{3000}\u{2003}\u{1680}\u{00a0}".repeat(1500)),
    ] {
        let r = post(
            &tb,
            "/v1/chat/completions",
            &[
                ("authorization", &key("free-t")),
                ("x-request-id", "adversarial"),
            ],
            &chat_body(&text, 16),
        );
        r.assert_error(400, "context_length_exceeded");
        assert!(r.text.contains("4000"), "{what}: {}", r.text);
    }
    assert!(
        tb.upstream_requests()
            .iter()
            .all(|r| r["headers"]["x-request-id"] != "adversarial")
    );
}

#[test]
fn slow_and_piled_up_bodies_are_bounded() {
    let _serial = serial();
    let mut config = config(FAST);
    config.request_timeout = Duration::from_secs(2);
    config.envoy_concurrency = 1;
    let tb = start_with(config);
    let gw = tb.envoy.gateway;
    let head = |tenant: &str, length: usize| {
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\nauthorization: {}\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\r\n",
            key(tenant)
        )
    };

    // A body trickled slower than the request timeout: 408, OpenAI JSON.
    let started = Instant::now();
    let mut slow = TcpStream::connect(gw).expect("connect");
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    slow.write_all(head("slow-t", 1000).as_bytes())
        .and_then(|_| slow.write_all(b"{\"model\":"))
        .expect("send");
    let reply = read_reply(&mut slow);
    reply.assert_openai(408, Some("request_timeout"), "trickled body");
    assert!(started.elapsed() < Duration::from_secs(8));

    // Bodies held while being read count against the tenant: two large
    // half-sent bodies fill slow-t's 128 KiB; a third is refused at once,
    // while another tenant is served.
    let half = vec![b' '; 50_000];
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = TcpStream::connect(gw).expect("connect");
        c.write_all(head("slow-t", 60_000).as_bytes())
            .and_then(|_| c.write_all(&half))
            .expect("send");
        held.push(c);
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut third = TcpStream::connect(gw).expect("connect");
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    third
        .write_all(head("slow-t", 60_000).as_bytes())
        .and_then(|_| third.write_all(&half))
        .expect("send");
    let refused = read_reply(&mut third);
    refused.assert_openai(429, Some("too_many_pending_bodies"), "third body");
    let other = ask(&tb, "other-t");
    assert_eq!(other.status, 200, "{}", other.text);
    drop(held);
    // Once they are gone the tenant's budget is free again.
    let served = eventually(Duration::from_secs(5), || ask(&tb, "slow-t").status == 200);
    assert!(served);
}

#[test]
fn a_pool_that_is_down_answers_in_openai_shape() {
    let _serial = serial();
    let mut tb = start_with(config(FAST));
    for process in tb.replicas.iter_mut().filter_map(|r| r.process.as_mut()) {
        process.kill_hard();
    }
    let r: Reply = ask(&tb, "acct-t");
    r.assert_error(503, "upstream_unavailable");
}

#[test]
fn a_tenant_over_its_limits_is_refused_before_its_body_is_read() {
    let _serial = serial();
    let tb = start_with(config(FAST));
    let gw = tb.envoy.gateway;
    // Headers announcing a large body, and not one byte of it.
    let headers_only = |tenant: &str| headers_only(gw, tenant, 60_000);
    // The first request holds gate-t's only slot while its body is awaited.
    let holder = headers_only("gate-t");
    std::thread::sleep(Duration::from_millis(300));
    // A second one is refused on its headers: the gateway never waits for,
    // buffers or parses its body (finding 6).
    let started = Instant::now();
    let mut second = headers_only("gate-t");
    let refused = read_reply(&mut second);
    refused.assert_openai(429, Some("rate_limit_exceeded"), "over concurrency");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(refused.head.to_ascii_lowercase().contains("retry-after"));
    // Another tenant is not affected.
    let other = ask(&tb, "other-t");
    assert_eq!(other.status, 200, "{}", other.text);
    // The slot comes back when the held request goes away.
    drop(holder);
    let served = eventually(Duration::from_secs(5), || ask(&tb, "gate-t").status == 200);
    assert!(served, "the slot was never freed");
    // A tenant whose minute is used up is refused on the headers too.
    assert_eq!(ask(&tb, "rpm1-t").status, 200);
    let mut over_rpm = headers_only("rpm1-t");
    let refused = read_reply(&mut over_rpm);
    refused.assert_openai(429, Some("rate_limit_exceeded"), "over RPM");
    assert!(
        refused
            .head
            .to_ascii_lowercase()
            .contains("x-ratelimit-remaining-requests: 0"),
        "{}",
        refused.head
    );
}

/// A connection that sent `tenant`'s chat request headers announcing a
/// body of `length` bytes, and not one byte of it.
fn headers_only(gw: SocketAddr, tenant: &str, length: usize) -> TcpStream {
    let mut c = TcpStream::connect(gw).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    c.write_all(
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\nauthorization: {}\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\r\n",
            key(tenant)
        )
        .as_bytes(),
    )
    .expect("send");
    c
}

/// A chat request of `tenant` with its small body in the same write as its
/// headers, as a client sends one.
fn whole_request(tenant: &str) -> Vec<u8> {
    let body = chat_body("hi", 2).to_string();
    let mut request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\nauthorization: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        key(tenant),
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body.as_bytes());
    request
}

/// ratelimit-service's Admit calls so far, by phase: open, reserve, full.
fn admit_calls(tb: &Testbed) -> [f64; 3] {
    let text = ratelimit_metrics(tb);
    ["open", "reserve", "full"].map(|phase| {
        metric(&text, "ratelimit_admit_calls_total", &[("phase", phase)]).unwrap_or(0.0)
    })
}

#[test]
fn a_small_body_with_its_headers_is_admitted_in_one_call() {
    let _serial = serial();
    let tb = start_with(config(FAST));
    let before = admit_calls(&tb);
    for _ in 0..3 {
        let reply = raw(tb.envoy.gateway, &whole_request("acct-t"));
        assert_eq!(reply.status, 200, "{}\n{}", reply.head, reply.body);
        // One call still answers with every limit it counted.
        let head = reply.head.to_ascii_lowercase();
        assert!(head.contains("x-ratelimit-remaining-requests"), "{head}");
    }
    let after = admit_calls(&tb);
    assert_eq!(
        [
            after[0] - before[0],
            after[1] - before[1],
            after[2] - before[2]
        ],
        [0.0, 0.0, 3.0],
        "Admit calls by phase (open, reserve, full)"
    );
    // A worker's first admission goes by call and its next tick opens the
    // worker's admission stream; from then on each rides the stream.
    let stream_messages = || {
        metric(
            &ratelimit_metrics(&tb),
            "ratelimit_admit_stream_messages_total",
            &[],
        )
        .unwrap_or(0.0)
    };
    let before = stream_messages();
    for _ in 0..8 {
        let reply = raw(tb.envoy.gateway, &whole_request("acct-t"));
        assert_eq!(reply.status, 200, "{}\n{}", reply.head, reply.body);
    }
    // At most one per worker (2) may still have been its first admission.
    let messages = stream_messages() - before;
    assert!(
        messages >= 6.0,
        "{messages} of 8 admissions by stream message"
    );
    // One stream per worker that admitted (2 workers), none for Envoy's
    // main thread.
    let streams =
        metric(&ratelimit_metrics(&tb), "ratelimit_admission_streams", &[]).unwrap_or(0.0);
    assert!((1.0..=2.0).contains(&streams), "{streams} streams");
    // A tenant over its limits is still refused: by the one call.
    assert_eq!(raw(tb.envoy.gateway, &whole_request("rpm1-t")).status, 200);
    raw(tb.envoy.gateway, &whole_request("rpm1-t")).assert_openai(
        429,
        Some("rate_limit_exceeded"),
        "over RPM, in one call",
    );
}

#[test]
fn with_the_admission_stream_off_each_admission_is_a_call() {
    let _serial = serial();
    let mut config = config(FAST);
    config.admit_stream = false;
    let tb = start_with(config);
    for _ in 0..4 {
        let reply = raw(tb.envoy.gateway, &whole_request("acct-t"));
        assert_eq!(reply.status, 200, "{}\n{}", reply.head, reply.body);
    }
    let text = ratelimit_metrics(&tb);
    assert_eq!(admit_calls(&tb), [0.0, 0.0, 4.0]);
    assert_eq!(
        metric(&text, "ratelimit_admit_stream_messages_total", &[]),
        Some(0.0)
    );
    assert_eq!(metric(&text, "ratelimit_admission_streams", &[]), Some(0.0));
}

#[test]
fn waiting_for_small_bodies_without_an_admission_is_bounded_per_tenant() {
    let _serial = serial();
    let mut config = config(FAST);
    // One worker: the bound is per worker.
    config.envoy_concurrency = 1;
    let tb = start_with(config);
    let gw = tb.envoy.gateway;
    // Headers announcing a small body, and not one byte of it.
    let headers_only = |tenant: &str| headers_only(gw, tenant, 100);
    // gate-t may run one request at a time. Sixteen (the default cap) wait
    // for their bodies without an admission...
    let mut held: Vec<TcpStream> = (0..16).map(|_| headers_only("gate-t")).collect();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(admit_calls(&tb), [0.0, 0.0, 0.0], "none admitted yet");
    // ...the next is admitted on its headers and takes gate-t's one slot...
    held.push(headers_only("gate-t"));
    assert!(
        eventually(Duration::from_secs(3), || admit_calls(&tb)[0] == 1.0),
        "the 17th was not admitted on its headers"
    );
    // ...so the one after is refused on its headers, at once.
    let started = Instant::now();
    let mut refused = headers_only("gate-t");
    read_reply(&mut refused).assert_openai(429, Some("rate_limit_exceeded"), "over concurrency");
    assert!(started.elapsed() < Duration::from_secs(3));
    // Another tenant is not affected.
    assert_eq!(raw(gw, &whole_request("other-t")).status, 200);
    // Gone, they free both the slot and the places.
    drop(held);
    assert!(
        eventually(Duration::from_secs(5), || raw(gw, &whole_request("gate-t"))
            .status
            == 200),
        "gate-t never served again"
    );
}
