//! Admission through a real Envoy with the full filter chain and the real
//! ratelimit-service: every limit reached and refused the way OpenAI clients
//! expect, slots that never leak, usage and spend that reconcile to what the
//! pool reported, durability across SIGKILL, failure modes, and Envoy's own
//! ratelimit filter against the same service.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use gateway_e2e::{
    FilterSet, Reply, Tokens, chat, client, eventually, full_chain, metric, post,
    ratelimit_metrics, settled_usage, spend_nanos, start_with, u, usage, with_digests,
};
use serde_json::{Value, json};
use testbed::{Testbed, TestbedConfig};

const MODEL: &str = "llama-3.1-8b-instruct";
const PREMIUM: &str = "premium-70b";
/// These tests measure concurrency and timing on a small shared machine:
/// running them one at a time keeps each one's Envoy, mocks and service
/// from starving the others.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The admission registry with every `{{digest:KEY}}` filled in.
fn registry() -> String {
    with_digests(include_str!("fixtures/admission-registry.toml"))
}

/// Full chain, one replica per pool, each started with `mock_args`.
fn config(mock_args: &[&str]) -> TestbedConfig {
    full_chain(registry(), mock_args)
}

/// No model time to speak of: limits, not the mock, decide.
const FAST: &[&str] = gateway_e2e::FAST_MOCK;
/// 100 ms per output token: a request holds its slot for `max_tokens` tenths of a second.
const SLOW: &[&str] = &[
    "--decode-base-us",
    "100000",
    "--decode-us-per-seq",
    "0",
    "--max-num-seqs",
    "64",
];

fn auth(tenant: &str) -> String {
    format!("Bearer sk-{tenant}")
}

fn ask_model(tb: &Testbed, tenant: &str, model: &str, content: &str, max_tokens: u32) -> Reply {
    post(
        tb,
        "/v1/chat/completions",
        &[("authorization", &auth(tenant))],
        &chat(model, content, max_tokens),
    )
}

fn ask(tb: &Testbed, tenant: &str, max_tokens: u32) -> Reply {
    ask_model(tb, tenant, MODEL, "hello there", max_tokens)
}

fn num(reply: &Reply, name: &str) -> u64 {
    let v = reply
        .header(name)
        .unwrap_or_else(|| panic!("no {name} header: {:?}", reply.headers));
    v.parse()
        .unwrap_or_else(|_| panic!("{name}: {v:?} is not a number"))
}

/// `retry-after` in whole seconds, which must be present and positive.
fn retry_after(reply: &Reply) -> u64 {
    let s = num(reply, "retry-after");
    assert!(s >= 1, "retry-after {s}");
    s
}

/// The `x-ratelimit-reset-*` value parses as OpenAI's duration (`20ms`, `1.5s`, `6m0s`).
fn assert_reset_shape(reply: &Reply, name: &str) {
    let v = reply
        .header(name)
        .unwrap_or_else(|| panic!("no {name}: {:?}", reply.headers));
    let ok = v
        .strip_suffix("ms")
        .map(|n| n.parse::<u64>().is_ok())
        .or_else(|| {
            v.strip_suffix('s').map(|rest| match rest.split_once('m') {
                Some((m, s)) => m.parse::<u64>().is_ok() && s.parse::<u64>().is_ok(),
                None => rest.parse::<f64>().is_ok(),
            })
        })
        .unwrap_or(false);
    assert!(ok, "{name}: {v:?}");
}

/// This tenant's row of ratelimit-service's `GET /admin/usage`.
/// Upstream requests that carry this tenant.
fn upstream_of(tb: &Testbed, tenant: &str) -> Vec<Value> {
    tb.upstream_requests()
        .into_iter()
        .filter(|r| r["headers"]["x-tenant-id"] == tenant)
        .collect()
}

/// A streamed chat completion that asks for its usage chunk: the reply's
/// headers and every `data:` event.
fn stream(tb: &Testbed, tenant: &str, content: &str, max_tokens: u32) -> (Reply, Vec<Value>) {
    let mut body = chat(MODEL, content, max_tokens);
    body["stream"] = json!(true);
    body["stream_options"] = json!({ "include_usage": true });
    let reply = post(
        tb,
        "/v1/chat/completions",
        &[("authorization", &auth(tenant))],
        &body,
    );
    let mut events = Vec::new();
    for line in reply.text.lines() {
        if let Some(data) = line.strip_prefix("data: ") {
            if data.trim() == "[DONE]" {
                events.push(Value::String("[DONE]".into()));
            } else {
                events.push(
                    serde_json::from_str(data).unwrap_or_else(|e| panic!("event {data}: {e}")),
                );
            }
        }
    }
    (reply, events)
}

#[test]
fn each_limit_refuses_with_openai_status_code_and_headers() {
    let _serial = serial();
    let tb = start_with(config(FAST));

    // RPM 3: three admitted, each telling the client what is left.
    for left in [2, 1, 0] {
        let ok = ask(&tb, "rpm-t", 4);
        assert_eq!(ok.status, 200, "{}", ok.text);
        assert_eq!(num(&ok, "x-ratelimit-limit-requests"), 3);
        assert_eq!(
            num(&ok, "x-ratelimit-remaining-requests"),
            left,
            "{:?}",
            ok.headers
        );
        assert_reset_shape(&ok, "x-ratelimit-reset-requests");
    }
    let refused = ask(&tb, "rpm-t", 4);
    refused.assert_error(429, "rate_limit_exceeded");
    assert_eq!(refused.body["error"]["type"], "rate_limit_error");
    // One request comes back every 20 s at 3 per minute.
    let wait = retry_after(&refused);
    assert!(wait <= 21, "retry-after {wait}");
    assert_eq!(num(&refused, "x-ratelimit-limit-requests"), 3);
    assert_eq!(num(&refused, "x-ratelimit-remaining-requests"), 0);
    assert_reset_shape(&refused, "x-ratelimit-reset-requests");
    assert_eq!(
        upstream_of(&tb, "rpm-t").len(),
        3,
        "a refused request reached a pool"
    );

    // TPM 300: the reservation is prompt estimate + max_tokens, settled to
    // the real usage; 100 output tokens each, so the third cannot fit.
    let mut admitted = 0;
    let refused = loop {
        let reply = ask(&tb, "tpm-t", 100);
        if reply.status != 200 {
            break reply;
        }
        admitted += 1;
        assert_eq!(num(&reply, "x-ratelimit-limit-tokens"), 300);
        assert!(
            num(&reply, "x-ratelimit-remaining-tokens") < 300,
            "{:?}",
            reply.headers
        );
        assert!(
            reply.header("x-ratelimit-limit-requests").is_none(),
            "tpm-t has no RPM limit"
        );
        assert!(
            admitted <= 3,
            "TPM 300 admitted {admitted} requests of 100+ tokens"
        );
    };
    assert_eq!(admitted, 2, "two requests of 100+ tokens fit in 300");
    refused.assert_error(429, "rate_limit_exceeded");
    retry_after(&refused);
    assert_eq!(num(&refused, "x-ratelimit-limit-tokens"), 300);
    let remaining = num(&refused, "x-ratelimit-remaining-tokens");
    assert!(remaining < 100, "refused while {remaining} tokens remain");
    assert_reset_shape(&refused, "x-ratelimit-reset-tokens");
    // More than the whole TPM in one request: no wait makes it fit.
    let too_large = ask(&tb, "tpm-t", 400);
    too_large.assert_error(429, "request_too_large");
    assert!(
        too_large.header("retry-after").is_none(),
        "{:?}",
        too_large.headers
    );

    // Daily budget $0.05 at $0.001 / prompt token and $0.002 / output token.
    // Admit reserves the upper bound (prompt estimate + max_tokens at their
    // prices) against what is already spent: a request is admitted exactly
    // when that fits. The real prompt (chat template included) is longer
    // than the estimate, so the settled spend may end above the budget by
    // the last request's estimation error, never by a whole extra request.
    let mut admitted = 0;
    let mut upper = 0;
    let refused = loop {
        let before = spend_nanos(&settled_usage(&tb, "budget-t"), "spend_today_usd");
        let reply = ask_model(&tb, "budget-t", PREMIUM, "hi", 5);
        if reply.status != 200 {
            break (reply, before);
        }
        admitted += 1;
        let seen = upstream_of(&tb, "budget-t");
        let estimate: i64 =
            seen.last().expect("upstream request")["headers"]["x-llm-prompt-tokens"]
                .as_str()
                .and_then(|v| v.parse().ok())
                .expect("x-llm-prompt-tokens upstream");
        upper = estimate * 1_000_000 + 5 * 2_000_000;
        assert!(
            before + upper <= 50_000_000,
            "admitted with {before} n$ spent and {upper} n$ reserved"
        );
        assert!(
            reply.header("x-ratelimit-limit-requests").is_some(),
            "{:?}",
            reply.headers
        );
        assert!(admitted <= 10, "budget never ran out");
    };
    let (refused, before) = refused;
    assert!(
        admitted >= 1,
        "the first request fits the budget: {}",
        refused.text
    );
    refused.assert_error(429, "insufficient_quota");
    assert_eq!(refused.body["error"]["type"], "insufficient_quota");
    // Until the end of the UTC day.
    let wait = retry_after(&refused);
    assert!(wait <= 86_400, "retry-after {wait}");
    assert!(
        refused.header("x-ratelimit-limit-requests").is_some(),
        "{:?}",
        refused.headers
    );
    let row = settled_usage(&tb, "budget-t");
    assert_eq!(
        spend_nanos(&row, "spend_today_usd"),
        before,
        "a refused request was charged: {row}"
    );
    // Refused only because the same reservation no longer fits.
    assert!(
        before + upper > 50_000_000,
        "refused with {before} n$ spent, {upper} n$ asked: {row}"
    );
    assert_eq!(upstream_of(&tb, "budget-t").len(), admitted);
    assert!(u(&row, "rejected") >= 1, "{row}");
}

#[test]
fn fifty_parallel_requests_get_exactly_five_slots() {
    let _serial = serial();
    let tb = start_with(config(SLOW));
    let url = format!("{}/v1/chat/completions", tb.gateway_url());

    // 40 tokens at 100 ms: each admitted request holds its slot ~4 s, far
    // longer than it takes to fire 50 requests.
    let barrier = Arc::new(Barrier::new(50));
    let handles: Vec<_> = (0..50)
        .map(|i| {
            let (barrier, url) = (Arc::clone(&barrier), url.clone());
            thread::spawn(move || {
                let http = client();
                let body = chat(MODEL, &format!("parallel request {i}"), 40);
                barrier.wait();
                Reply::from(
                    http.post(&url)
                        .header("authorization", auth("conc-t"))
                        .json(&body)
                        .send()
                        .expect("send"),
                )
            })
        })
        .collect();
    let replies: Vec<Reply> = handles
        .into_iter()
        .map(|h| h.join().expect("client thread"))
        .collect();
    let ok = replies.iter().filter(|r| r.status == 200).count();
    assert_eq!(
        ok,
        5,
        "admitted; statuses: {:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for r in replies.iter().filter(|r| r.status != 200) {
        r.assert_error(429, "rate_limit_exceeded");
        retry_after(r);
        // Concurrency has no OpenAI header of its own; the RPM triple rides along.
        assert_eq!(
            num(r, "x-ratelimit-limit-requests"),
            100_000,
            "{:?}",
            r.headers
        );
    }
    for r in replies.iter().filter(|r| r.status == 200) {
        assert_eq!(
            num(r, "x-ratelimit-limit-requests"),
            100_000,
            "{:?}",
            r.headers
        );
    }
    assert_eq!(
        upstream_of(&tb, "conc-t").len(),
        5,
        "only admitted requests reach the pool"
    );
    assert!(eventually(Duration::from_secs(5), || u(
        &usage(&tb, "conc-t"),
        "in_flight"
    ) == 0));

    // Churn: 15 clients retry until served, 0.5 s each. While they run, the
    // replica's own gauges and the service's lease count are sampled: never
    // more than 5 of this tenant's requests at the pool at once.
    tb.reset_upstreams();
    let metrics_url = format!("{}/metrics", tb.replica_urls("latency")[0]);
    let done = Arc::new(AtomicBool::new(false));
    let max_upstream = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (done, max_upstream, metrics_url) = (
            Arc::clone(&done),
            Arc::clone(&max_upstream),
            metrics_url.clone(),
        );
        thread::spawn(move || {
            let http = client();
            while !done.load(Ordering::Relaxed) {
                if let Ok(text) = http.get(&metrics_url).send().and_then(|r| r.text()) {
                    let at_pool = gauge(&text, "vllm:num_requests_running")
                        + gauge(&text, "vllm:num_requests_waiting");
                    max_upstream.fetch_max(at_pool, Ordering::Relaxed);
                }
                thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let started = Instant::now();
    let clients: Vec<_> = (0..15)
        .map(|i| {
            let url = url.clone();
            thread::spawn(move || {
                let http = client();
                let body = chat(MODEL, &format!("churn request {i}"), 5);
                let mut refusals = 0;
                while started.elapsed() < Duration::from_secs(90) {
                    let reply = Reply::from(
                        http.post(&url)
                            .header("authorization", auth("conc-t"))
                            .json(&body)
                            .send()
                            .expect("send"),
                    );
                    match reply.status {
                        200 => return refusals,
                        429 => refusals += 1,
                        other => panic!("churn: {other} {}", reply.text),
                    }
                    thread::sleep(Duration::from_millis(150 + 20 * i));
                }
                panic!("churn client {i} never admitted");
            })
        })
        .collect();
    let mut max_in_flight = 0;
    while clients.iter().any(|c| !c.is_finished()) {
        max_in_flight = max_in_flight.max(u(&usage(&tb, "conc-t"), "in_flight"));
        thread::sleep(Duration::from_millis(25));
    }
    let refusals: u32 = clients
        .into_iter()
        .map(|c| c.join().expect("churn client"))
        .sum();
    done.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    let at_pool = max_upstream.load(Ordering::Relaxed);
    assert!(at_pool <= 5, "the replica held {at_pool} requests at once");
    assert!(
        at_pool >= 2,
        "sampling saw no overlap at all ({at_pool}): the check proved nothing"
    );
    assert!(
        max_in_flight <= 5,
        "the service counted {max_in_flight} in flight"
    );
    assert!(refusals > 0, "15 clients on 5 slots were never refused");
    assert_eq!(
        upstream_of(&tb, "conc-t").len(),
        15,
        "one upstream request per served client"
    );
}

/// Sum of a Prometheus gauge over its label sets.
fn gauge(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[test]
fn a_burst_cannot_pass_twice_the_rpm() {
    let _serial = serial();
    let tb = start_with(config(FAST));
    // 30 requests (3x the RPM of 10) in two bursts 1.5 s apart. A fixed
    // window split between them would pass up to 20; GCRA passes the
    // limit plus what drains meanwhile (10 / 60 s).
    let started = Instant::now();
    let mut replies = Vec::new();
    for burst in 0..2 {
        if burst == 1 {
            thread::sleep(Duration::from_millis(1500));
        }
        for _ in 0..15 {
            replies.push(ask(&tb, "burst-t", 2));
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let ok = replies.iter().filter(|r| r.status == 200).count();
    let refill = (10.0 * elapsed / 60.0).ceil() as usize;
    assert!(ok >= 10, "the first 10 fit an empty bucket, got {ok}");
    assert!(ok <= 10 + refill, "{ok} passed in {elapsed:.1} s at 10 rpm");
    for r in replies.iter().filter(|r| r.status != 200) {
        r.assert_error(429, "rate_limit_exceeded");
        assert_eq!(num(r, "x-ratelimit-remaining-requests"), 0);
        retry_after(r);
    }
    assert_eq!(upstream_of(&tb, "burst-t").len(), ok);
}

#[test]
fn usage_reconciles_and_survives_sigkill() {
    let _serial = serial();
    let mut tb = start_with(config(FAST));

    let mut reported = Tokens::default();
    let mut nanos = 0;
    // Non-streaming: usage in the JSON body.
    for (content, max_tokens) in [
        ("count to three", 3),
        ("a longer question about many things at once", 17),
        ("x", 1),
    ] {
        let reply = ask_model(&tb, "usage-t", MODEL, content, max_tokens);
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert!(
            reply.header("x-ratelimit-remaining-tokens").is_some(),
            "{:?}",
            reply.headers
        );
        let t = Tokens::of(&reply.body["usage"]);
        assert_eq!(t.completion, u64::from(max_tokens));
        reported.add(t);
        nanos += t.nanos();
    }
    // Streaming, asking for usage: the last event before [DONE] carries it
    // (a client that does not ask never sees that chunk; hostile.rs).
    for (content, max_tokens) in [
        ("stream me a story", 9),
        ("and another one, a bit longer this time", 21),
    ] {
        let (reply, events) = stream(&tb, "usage-t", content, max_tokens);
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert!(
            reply
                .header("content-type")
                .is_some_and(|c| c.starts_with("text/event-stream"))
        );
        assert!(
            reply.header("x-ratelimit-limit-requests").is_some(),
            "{:?}",
            reply.headers
        );
        assert_eq!(
            events.last(),
            Some(&Value::String("[DONE]".into())),
            "stream ends with [DONE]"
        );
        let last = &events[events.len() - 2];
        assert!(
            last["usage"].is_object(),
            "usage chunk before [DONE]: {last}"
        );
        let t = Tokens::of(&last["usage"]);
        assert_eq!(t.completion, u64::from(max_tokens));
        reported.add(t);
        nanos += t.nanos();
    }

    // Complete is sent as the response ends; give it a moment to land.
    let settled = eventually(Duration::from_secs(10), || {
        let row = usage(&tb, "usage-t");
        u(&row, "tokens_in") == reported.prompt && u(&row, "tokens_out") == reported.completion
    });
    let row = usage(&tb, "usage-t");
    assert!(settled, "pool reported {reported:?}; service counted {row}");
    assert_eq!(u(&row, "requests"), 5);
    assert_eq!(u(&row, "in_flight"), 0);
    assert_eq!(spend_nanos(&row, "spend_today_usd"), nanos as i64, "{row}");
    assert_eq!(spend_nanos(&row, "spend_month_usd"), nanos as i64, "{row}");

    // Spend the budget tenant dry too, then crash the service.
    while ask_model(&tb, "budget-t", PREMIUM, "hi", 5).status == 200 {}
    let budget_before = settled_usage(&tb, "budget-t");
    // The counters change before the group commit reaches the disk; a charge
    // is durable (and acknowledged to the filter) once the ledger synced it.
    assert!(
        eventually(Duration::from_secs(10), || {
            metric(&ratelimit_metrics(&tb), "ratelimit_ledger_pending", &[]) == Some(0.0)
        }),
        "spend ledger never caught up"
    );
    tb.stop_ratelimit(true);
    tb.restart_ratelimit().expect("ratelimit-service restarts");
    let after = usage(&tb, "usage-t");
    for field in ["spend_today_usd", "spend_month_usd"] {
        assert_eq!(
            spend_nanos(&after, field),
            nanos as i64,
            "{field} after SIGKILL: {after}"
        );
    }
    let budget_after = usage(&tb, "budget-t");
    assert_eq!(
        spend_nanos(&budget_after, "spend_today_usd"),
        spend_nanos(&budget_before, "spend_today_usd"),
        "budget spend before {budget_before}, after {budget_after}"
    );
    // The replayed budget is still spent.
    let mut refused = None;
    assert!(
        eventually(Duration::from_secs(10), || {
            let r = ask_model(&tb, "budget-t", PREMIUM, "hi", 5);
            let done = r.status == 429;
            refused = Some(r);
            done
        }),
        "budget not enforced after restart: {:?}",
        refused.map(|r| r.text)
    );
    refused
        .expect("reply")
        .assert_error(429, "insufficient_quota");
    // And new spend adds on top of the replayed total.
    let reply = ask(&tb, "usage-t", 4);
    assert_eq!(reply.status, 200, "{}", reply.text);
    let extra = Tokens::of(&reply.body["usage"]).nanos();
    assert!(
        eventually(Duration::from_secs(10), || spend_nanos(
            &usage(&tb, "usage-t"),
            "spend_today_usd"
        ) == (nanos + extra) as i64),
        "spend after restart: {}",
        usage(&tb, "usage-t")
    );
}

/// Sends a streaming request over a raw connection and returns it once the
/// first SSE event has arrived, so the test decides when the client vanishes.
fn open_stream(tb: &Testbed, tenant: &str, max_tokens: u32) -> TcpStream {
    let mut body = chat(MODEL, "tell me a long story", max_tokens);
    body["stream"] = json!(true);
    let body = body.to_string();
    let mut conn = TcpStream::connect(tb.envoy.gateway).expect("connect to gateway");
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\nauthorization: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        auth(tenant),
        body.len()
    );
    conn.write_all(head.as_bytes())
        .and_then(|_| conn.write_all(body.as_bytes()))
        .expect("send");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("data: ") {
        let n = conn.read(&mut buf).expect("read stream");
        assert!(
            n > 0,
            "stream closed early: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&seen);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    conn
}

#[test]
fn a_client_that_hangs_up_mid_stream_frees_its_slot() {
    let _serial = serial();
    let tb = start_with(config(SLOW));
    for round in 0..2 {
        // 100 tokens at 100 ms: the stream would run ~10 s.
        let conn = open_stream(&tb, "hang-t", 100);
        assert_eq!(u(&usage(&tb, "hang-t"), "in_flight"), 1);
        ask(&tb, "hang-t", 1).assert_error(429, "rate_limit_exceeded");
        let gone = Instant::now();
        conn.shutdown(std::net::Shutdown::Both).expect("hang up");
        drop(conn);
        // Well before the 10 s lease TTL: the filter reports the hang-up itself.
        let mut last = None;
        let admitted = eventually(Duration::from_secs(4), || {
            let r = ask(&tb, "hang-t", 1);
            let ok = r.status == 200;
            last = Some(r);
            ok
        });
        assert!(
            admitted,
            "round {round}: slot still held {:?} after the client left: {:?}",
            gone.elapsed(),
            last.map(|r| r.text)
        );
        assert!(
            eventually(Duration::from_secs(4), || u(
                &usage(&tb, "hang-t"),
                "in_flight"
            ) == 0),
            "round {round}: {}",
            usage(&tb, "hang-t")
        );
    }
}

/// `tenantctl usage` against the testbed's ratelimit-service.
fn tenantctl_usage(tb: &Testbed, args: &[&str]) -> String {
    let out = std::process::Command::new(tb.binary("tenantctl").expect("tenantctl built"))
        .arg("usage")
        .args([
            "--admin-url",
            &tb.ratelimit_admin_url().expect("ratelimit-service"),
        ])
        .args(["--token-env", "BILLING_TEST_ADMIN_TOKEN"])
        .args(args)
        .env("BILLING_TEST_ADMIN_TOKEN", &tb.config.admin_token)
        .output()
        .expect("run tenantctl");
    assert!(
        out.status.success(),
        "tenantctl usage {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 export")
}

/// Every record in the spend ledger's day files, oldest file first.
fn ledger_records(tb: &Testbed) -> Vec<Value> {
    let dir = tb.ratelimit_data_dir();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("ledger dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("spend-ledger-") && n.ends_with(".jsonl"))
        .collect();
    names.sort();
    names
        .iter()
        .flat_map(|n| {
            std::fs::read_to_string(dir.join(n))
                .expect("ledger file")
                .lines()
                .map(|l| serde_json::from_str(l).expect("ledger line"))
                .collect::<Vec<Value>>()
        })
        .collect()
}

/// A billing job's view of a mixed run: answers, streams, a client that
/// hangs up mid-stream and a 429. The export (resumed with its cursor file)
/// holds every charge once, and the invoice is the ledger to the cent.
#[test]
fn a_billing_job_exports_and_invoices_a_mixed_run_exactly() {
    let _serial = serial();
    // 20 ms a token: a 100-token stream lasts long enough to hang up on.
    let tb = start_with(config(&[
        "--decode-base-us",
        "20000",
        "--decode-us-per-seq",
        "0",
        "--max-num-seqs",
        "64",
    ]));
    let mut reported = Tokens::default();
    for max_tokens in [3, 7, 1] {
        let reply = ask_model(&tb, "bill-t", MODEL, "what is on my bill", max_tokens);
        assert_eq!(reply.status, 200, "{}", reply.text);
        reported.add(Tokens::of(&reply.body["usage"]));
    }
    for max_tokens in [5, 2] {
        let (reply, events) = stream(&tb, "bill-t", "stream the bill", max_tokens);
        assert_eq!(reply.status, 200, "{}", reply.text);
        reported.add(Tokens::of(&events[events.len() - 2]["usage"]));
    }
    let conn = open_stream(&tb, "bill-t", 100);
    conn.shutdown(std::net::Shutdown::Both).expect("hang up");
    drop(conn);
    let settled = |tb: &Testbed| {
        settled_usage(tb, "bill-t");
        assert!(
            eventually(Duration::from_secs(10), || {
                metric(&ratelimit_metrics(tb), "ratelimit_ledger_pending", &[]) == Some(0.0)
            }),
            "spend ledger never caught up"
        );
    };
    settled(&tb);

    // In the testbed's own directory, removed with it.
    let cursor_file = tb.ratelimit_data_dir().with_file_name("bill-t.cursor");
    let cursor_arg = cursor_file.to_str().expect("utf-8 path");
    let export = |tb: &Testbed| -> Vec<Value> {
        tenantctl_usage(
            tb,
            &[
                "export",
                "--tenant",
                "bill-t",
                "--cursor-file",
                cursor_arg,
                "--page-size",
                "2",
            ],
        )
        .lines()
        .map(|l| serde_json::from_str(l).expect("export line"))
        .collect()
    };
    let first = export(&tb);
    assert_eq!(first.len(), 6, "{first:?}");
    let cancelled: Vec<&Value> = first
        .iter()
        .filter(|r| r["outcome"] == "client_cancelled")
        .collect();
    assert_eq!(cancelled.len(), 1, "the hang-up is billed: {first:?}");
    // Whatever the client saw of its usage, the ledger has exactly that.
    let answered: u64 = first
        .iter()
        .filter(|r| r["outcome"] == "completed")
        .map(|r| u(r, "usd_nanos"))
        .sum();
    assert_eq!(answered, reported.nanos());

    // Nothing new: the resumed export is empty; then three more charges and a 429.
    assert!(export(&tb).is_empty());
    // The bucket refills as the test runs: count what was admitted.
    let mut extra = 0;
    let refused = loop {
        let reply = ask(&tb, "bill-t", 2);
        if reply.status != 200 {
            break reply;
        }
        extra += 1;
        assert!(extra <= 9, "rpm = 9 never refused");
    };
    refused.assert_error(429, "rate_limit_exceeded");
    assert!(extra >= 3, "6 of 9 used, yet only {extra} more admitted");
    settled(&tb);
    let second = export(&tb);
    assert_eq!(second.len(), extra, "{second:?}");

    // Both runs together are the ledger: every record once.
    let ledger = ledger_records(&tb);
    let mut exported: Vec<&str> = first
        .iter()
        .chain(&second)
        .map(|r| r["lease"].as_str().expect("lease"))
        .collect();
    let mut in_ledger: Vec<&str> = ledger
        .iter()
        .filter(|r| r["tenant"] == "bill-t")
        .map(|r| r["lease"].as_str().expect("lease"))
        .collect();
    exported.sort_unstable();
    in_ledger.sort_unstable();
    assert_eq!(exported, in_ledger);

    // The invoice, as CSV: the TOTAL row is the ledger's sum, to the cent.
    let month = &first[0]["time"].as_str().expect("time")[..7];
    let csv = tenantctl_usage(
        &tb,
        &[
            "invoice", "--tenant", "bill-t", "--month", month, "--format", "csv",
        ],
    );
    let rows: Vec<Vec<&str>> = csv.lines().map(|l| l.split(',').collect()).collect();
    let col = |name: &str| {
        rows[0]
            .iter()
            .position(|c| *c == name)
            .unwrap_or_else(|| panic!("{name} in {csv}"))
    };
    let total = rows.last().expect("rows");
    assert_eq!(total[col("model")], "TOTAL", "{csv}");
    let ledger_nanos: u64 = ledger
        .iter()
        .filter(|r| r["tenant"] == "bill-t")
        .map(|r| u(r, "usd_nanos"))
        .sum();
    let invoiced: u64 = total[col("usd_nanos")].parse().expect("usd_nanos");
    assert_eq!(invoiced, ledger_nanos, "{csv}");
    let cents: u64 = total[col("usd_cents")].parse().expect("usd_cents");
    assert_eq!(cents, (ledger_nanos + 5_000_000) / 10_000_000);
    assert_eq!(total[col("requests")], (6 + extra).to_string());
    // And the service's own month counter agrees.
    assert_eq!(
        spend_nanos(&usage(&tb, "bill-t"), "spend_month_usd"),
        ledger_nanos as i64
    );
}

/// A client that retries its 429s at once trips its tenant's circuit
/// breaker: refused at the door for the cool-down (429 circuit_open with
/// retry-after), counted and exported, while another tenant is served; after
/// the cool-down the tenant gets its ordinary answers again.
#[test]
fn a_tenant_in_a_retry_loop_trips_its_breaker_and_no_one_else_notices() {
    let _serial = serial();
    let mut cfg = config(FAST);
    cfg.ratelimit_args.extend(
        [
            "--breaker-min-failures",
            "5",
            "--breaker-failure-ratio",
            "0.8",
            "--breaker-window-s",
            "10",
            "--breaker-cooldown-s",
            "3",
        ]
        .map(String::from),
    );
    let tb = start_with(cfg);
    for _ in 0..2 {
        let reply = ask(&tb, "loop-t", 1);
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    // Their reports are settled first (a worker flushes them on its tick):
    // on a loaded box they could otherwise land amid the loop's failures
    // and count against the ratio the assertions below rely on.
    settled_usage(&tb, "loop-t");
    // rpm = 2 is spent: the retry loop starts.
    let codes: Vec<String> = (0..8)
        .map(|_| {
            let r = ask(&tb, "loop-t", 1);
            assert_eq!(r.status, 429, "{}", r.text);
            r.error_code().unwrap_or_default().to_owned()
        })
        .collect();
    assert_eq!(&codes[..5], ["rate_limit_exceeded"; 5], "{codes:?}");
    assert!(codes[5..].iter().all(|c| c == "circuit_open"), "{codes:?}");
    let open = ask(&tb, "loop-t", 1);
    open.assert_error(429, "circuit_open");
    let wait = retry_after(&open);
    assert!(wait <= 3, "retry-after {wait} beyond the 3 s cool-down");

    // Nobody else notices.
    let other = ask(&tb, "open-t", 1);
    assert_eq!(other.status, 200, "{}", other.text);
    let text = ratelimit_metrics(&tb);
    assert_eq!(
        metric(&text, "ratelimit_circuit_open", &[("tenant", "loop-t")]),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "ratelimit_circuit_open", &[("tenant", "open-t")]),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &text,
            "ratelimit_circuit_trips_total",
            &[("tenant", "loop-t")]
        ),
        Some(1.0)
    );
    assert!(
        metric(
            &text,
            "ratelimit_rejected_total",
            &[("tenant", "loop-t"), ("reason", "circuit_open")]
        )
        .is_some_and(|n| n >= 4.0),
        "{text}"
    );

    // After the cool-down: closed, and the ordinary limit answers again.
    thread::sleep(Duration::from_millis(wait * 1000 + 300));
    ask(&tb, "loop-t", 1).assert_error(429, "rate_limit_exceeded");
    assert_eq!(
        metric(
            &ratelimit_metrics(&tb),
            "ratelimit_circuit_open",
            &[("tenant", "loop-t")]
        ),
        Some(0.0)
    );
}

#[test]
fn unreachable_service_follows_each_tiers_fail_mode() {
    let _serial = serial();
    let mut tb = start_with(config(FAST));
    for tenant in ["open-t", "closed-t"] {
        let ok = ask(&tb, tenant, 2);
        assert_eq!(ok.status, 200, "{tenant}: {}", ok.text);
    }
    assert!(
        tb.upstream_requests()
            .iter()
            .all(|r| r["headers"].get("x-gateway-admission").is_none())
    );

    tb.stop_ratelimit(true);
    tb.reset_upstreams();
    let rid = "fail-open-1";
    let open = post(
        &tb,
        "/v1/chat/completions",
        &[("authorization", &auth("open-t")), ("x-request-id", rid)],
        &chat(MODEL, "hello", 2),
    );
    assert_eq!(open.status, 200, "fail open: {}", open.text);
    let seen = gateway_e2e::upstream_request(&tb, rid).expect("fail-open request reached a pool");
    assert_eq!(seen["headers"]["x-gateway-admission"], "bypassed", "{seen}");
    let closed = ask(&tb, "closed-t", 2);
    closed.assert_error(503, "admission_unavailable");
    retry_after(&closed);
    assert!(
        upstream_of(&tb, "closed-t").is_empty(),
        "fail-closed request reached a pool"
    );
    // A fail-closed tier cannot talk its way past: a client-sent marker changes nothing.
    let forged = post(
        &tb,
        "/v1/chat/completions",
        &[
            ("authorization", &auth("closed-t")),
            ("x-gateway-admission", "bypassed"),
        ],
        &chat(MODEL, "hello", 2),
    );
    forged.assert_error(503, "admission_unavailable");
    // Each outcome is counted in Envoy's stats (one open, two closed above).
    let admin = tb.envoy.admin;
    assert!(testbed::envoy::counter(admin, "llm_gateway.admission.fail_open") >= 1);
    assert!(testbed::envoy::counter(admin, "llm_gateway.admission.fail_closed") >= 2);

    tb.restart_ratelimit().expect("ratelimit-service restarts");
    tb.reset_upstreams();
    for tenant in ["open-t", "closed-t"] {
        let mut last = None;
        let back = eventually(Duration::from_secs(15), || {
            let r = ask(&tb, tenant, 2);
            let ok = r.status == 200;
            last = Some(r);
            ok
        });
        assert!(
            back,
            "{tenant} after restart: {:?}",
            last.map(|r| (r.status, r.text))
        );
    }
    for r in tb.upstream_requests() {
        assert!(
            r["headers"].get("x-gateway-admission").is_none(),
            "metered again: {r}"
        );
    }
    assert!(
        u(&usage(&tb, "open-t"), "requests") >= 1,
        "open-t is metered again"
    );

    // The bypass marker is the gateway's: a client cannot plant it on metered traffic.
    tb.reset_upstreams();
    let forged = post(
        &tb,
        "/v1/chat/completions",
        &[
            ("authorization", &auth("open-t")),
            ("x-gateway-admission", "bypassed"),
        ],
        &chat(MODEL, "hello", 2),
    );
    assert_eq!(forged.status, 200, "{}", forged.text);
    for r in tb.upstream_requests() {
        assert!(
            r["headers"].get("x-gateway-admission").is_none(),
            "client-planted marker reached the pool: {r}"
        );
    }
}

#[test]
fn envoy_native_ratelimit_limits_by_tenant_descriptor() {
    let _serial = serial();
    let rls = std::env::temp_dir().join(format!("e2e-admission-rls-{}.toml", std::process::id()));
    std::fs::write(
        &rls,
        r#"
domain = "llm-gateway"

[[descriptors]]
key = "tenant"
value = "native-a"
rate_limit = { unit = "minute", requests_per_unit = 3 }
"#,
    )
    .expect("write rls config");
    let mut config = config(FAST);
    // Only tenant-auth (which sets x-tenant-id) and Envoy's own filter.
    config.filters = FilterSet::AUTH_ONLY;
    config.ratelimit = true;
    config.native_ratelimit_domain = Some("llm-gateway".into());
    config.ratelimit_args = vec!["--rls-config".into(), rls.display().to_string()];
    let tb = start_with(config);
    let _ = std::fs::remove_file(&rls);

    for left in [2, 1, 0] {
        let ok = ask(&tb, "native-a", 2);
        assert_eq!(ok.status, 200, "{}", ok.text);
        let limit = ok
            .header("x-ratelimit-limit")
            .unwrap_or_else(|| panic!("{:?}", ok.headers));
        assert!(limit.starts_with('3'), "x-ratelimit-limit {limit}");
        assert_eq!(num(&ok, "x-ratelimit-remaining"), left, "{:?}", ok.headers);
    }
    let limited = ask(&tb, "native-a", 2);
    assert_eq!(limited.status, 429, "{}", limited.text);
    // Envoy's own answer, mapped to OpenAI's error shape by the local
    // reply config (clients parse one error shape, whoever refused).
    assert_eq!(
        limited.header("x-envoy-ratelimited"),
        Some("true"),
        "{:?}",
        limited.headers
    );
    limited.assert_error(429, "rate_limit_exceeded");
    assert_eq!(num(&limited, "x-ratelimit-remaining"), 0);
    assert!(
        limited.header("x-ratelimit-reset").is_some(),
        "{:?}",
        limited.headers
    );
    assert_eq!(upstream_of(&tb, "native-a").len(), 3);

    // Another tenant has its own descriptor and no rule: untouched.
    for _ in 0..6 {
        let ok = ask(&tb, "native-b", 2);
        assert_eq!(ok.status, 200, "{}", ok.text);
    }
    assert_eq!(upstream_of(&tb, "native-b").len(), 6);

    // The decisions were the service's: it counted them per descriptor.
    let metrics = client()
        .get(format!(
            "{}/metrics",
            tb.ratelimit_admin_url().expect("admin")
        ))
        .bearer_auth(&tb.config.admin_token)
        .send()
        .and_then(|r| r.text())
        .expect("service metrics");
    let over_limit = metrics.lines().any(|l| {
        l.starts_with("ratelimit_rls_hits_total") && l.contains("over_limit") && !l.ends_with(" 0")
    });
    assert!(over_limit, "no over_limit RLS hit counted:\n{metrics}");

    // Each x-ratelimit-* header once: a client cannot tell which of two
    // differing values to believe.
    for name in [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    ] {
        let values: Vec<_> = limited.headers.get_all(name).iter().collect();
        assert_eq!(
            values.len(),
            1,
            "{name} sent {} times: {values:?}",
            values.len()
        );
    }
}

#[test]
fn a_registry_reload_mid_request_loses_no_report() {
    let _serial = serial();
    let mut tb = start_with(config(SLOW));
    // 10 tokens at 100 ms: the stream runs ~1 s, across the reload.
    let url = format!("{}/v1/chat/completions", tb.gateway_url());
    let streaming = thread::spawn(move || {
        let mut body = chat(MODEL, "a story across a reload", 10);
        body["stream"] = json!(true);
        client()
            .post(url)
            .header("authorization", auth("usage-t"))
            .json(&body)
            .send()
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.text())
            .expect("stream")
    });
    assert!(
        eventually(Duration::from_secs(5), || u(
            &usage(&tb, "usage-t"),
            "in_flight"
        ) == 1),
        "the stream never started"
    );
    // The filters get a new configuration (a new root context per worker)
    // while the request runs on the old one: a tier and a tenant of it are
    // added (admission reads tiers, so its configuration changes too).
    let changed = format!(
        "{}\n[tiers.late]\npools = [\"latency\"]\nfail_mode = \"closed\"\n\
         [[tenants]]\nid = \"late-t\"\ntier = \"late\"\nmodels = [\"group:chat\"]\n",
        registry()
    );
    tb.update_registry(&changed).expect("reload");
    let text = streaming.join().expect("stream thread");
    assert!(text.contains("[DONE]"), "{text}");
    // The old configuration's report reaches the service: settled with the
    // real usage well before the 10 s lease TTL would have charged the
    // reservation instead.
    let settled = eventually(Duration::from_secs(4), || {
        let row = usage(&tb, "usage-t");
        u(&row, "in_flight") == 0 && u(&row, "tokens_out") == 10
    });
    assert!(
        settled,
        "report lost in the reload: {}",
        usage(&tb, "usage-t")
    );
}

/// A limit over any window is one registry entry: "requests per calendar
/// day" arrives by a registry reload, without a restart or a line of code,
/// and is refused the OpenAI way with the window named.
#[test]
fn a_requests_per_day_limit_is_one_registry_entry() {
    let _serial = serial();
    let mut tb = start_with(config(FAST));
    let changed = with_digests(&format!(
        "{}\n[[tenants]]\nid = \"daily-t\"\ntier = \"metered\"\nmodels = [\"group:chat\"]\n\
         limits = {{ rpm = 100, windows = [{{ requests = 2, per = \"calendar_day\" }}] }}\n\
         api_keys = [{{ id = \"k\", sha256 = \"{{{{digest:sk-daily-t}}}}\" }}]\n",
        include_str!("fixtures/admission-registry.toml")
    ));
    tb.update_registry(&changed).expect("reload");
    let first = eventually_ok(&tb, "daily-t");
    // The tightest requests limit is the day's, not the minute's.
    assert_eq!(num(&first, "x-ratelimit-limit-requests"), 2);
    assert_eq!(num(&first, "x-ratelimit-remaining-requests"), 1);
    let second = ask(&tb, "daily-t", 4);
    assert_eq!(second.status, 200, "{}", second.text);
    let refused = ask(&tb, "daily-t", 4);
    refused.assert_error(429, "rate_limit_exceeded");
    assert_eq!(refused.body["error"]["type"], "rate_limit_error");
    let message = refused.body["error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("requests per calendar day"),
        "the refusal names its window: {message}"
    );
    // Back when the UTC day ends, not in a minute.
    let wait = retry_after(&refused);
    assert!((1..=86_400).contains(&wait), "retry-after {wait}");
    assert_eq!(num(&refused, "x-ratelimit-remaining-requests"), 0);
    assert_eq!(
        upstream_of(&tb, "daily-t").len(),
        2,
        "a refused request reached a pool"
    );
    let metrics = ratelimit_metrics(&tb);
    assert_eq!(
        metric(
            &metrics,
            "ratelimit_rejected_total",
            &[
                ("tenant", "daily-t"),
                ("reason", "requests_per_calendar_day")
            ]
        ),
        Some(1.0),
        "{metrics}"
    );
}

/// The first answer after a reload: the filters pick the new tenant up
/// within a moment.
fn eventually_ok(tb: &Testbed, tenant: &str) -> Reply {
    let mut last = None;
    let ok = eventually(Duration::from_secs(5), || {
        let r = ask(tb, tenant, 4);
        let done = r.status == 200;
        last = Some(r);
        done
    });
    let last = last.expect("asked at least once");
    assert!(
        ok,
        "{tenant} never admitted after the reload: {}",
        last.text
    );
    last
}
