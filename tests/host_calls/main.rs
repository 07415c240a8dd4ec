//! The gateway module (`llm_gateway.wasm`, as built for Envoy) under a mock
//! proxy-wasm host: the glue between its phases and the host, checked call
//! by call. Envoy reaches this glue too (the e2e suite), but only here can a
//! test hold the OPEN answer back while the body arrives, count the slices
//! of configuration the module reads, or hand it a byte no HTTP client
//! sends, and see exactly which host calls follow.

use std::path::PathBuf;

use admission_proto::v1::admit_stream_request::Kind;
use admission_proto::v1::{
    AdmitRequest, AdmitResponse, AdmitStreamRequest, AdmitStreamResponse, CompleteBatchRequest,
    Decision, Outcome, Phase,
};
use mock_host::{Action, GrpcStream, MockHost, Stream};
use prost::Message;
use tenant_registry::{Registry, api_key_digest_hex};

const KEY: &str = "sk-host-calls-acme";
const MODEL: &str = "m";

fn wasm() -> PathBuf {
    testbed::Paths::locate()
        .and_then(|p| p.wasm("llm_gateway"))
        .expect("the module is built (make wasm)")
}

/// The module's configuration over a registry of `extra` tenants besides
/// `acme` (one key each): every phase on.
fn config(extra: usize) -> Vec<u8> {
    config_with(extra, serde_json::json!({ "cluster": "ratelimit" }))
}

/// [`config`] with `admission` as the admission phase's settings.
fn config_with(extra: usize, admission: serde_json::Value) -> Vec<u8> {
    let mut toml = format!(
        r#"
[tiers.free]
pools = ["latency"]
max_output_tokens = 64

[models."{MODEL}"]
max_context_tokens = 4096

[pools.latency]
class = "latency"

[[tenants]]
id = "acme"
tier = "free"
models = ["{MODEL}"]
api_keys = [{{ id = "k1", sha256 = "{}" }}]
"#,
        api_key_digest_hex(KEY)
    );
    for i in 0..extra {
        toml.push_str(&format!(
            "\n[[tenants]]\nid = \"t{i}\"\ntier = \"free\"\nmodels = [\"{MODEL}\"]\n\
             api_keys = [{{ id = \"k\", sha256 = \"{}\" }}]\n",
            api_key_digest_hex(&format!("sk-t{i}"))
        ));
    }
    let registry = Registry::from_toml(&toml).expect("a valid registry");
    serde_json::to_vec(&serde_json::json!({
        "registry": registry.config(),
        "auth": {},
        "policy": { "cache_secret": "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" },
        "admission": admission,
    }))
    .expect("JSON")
}

fn configured() -> MockHost {
    configured_with(&config(0))
}

fn configured_with(config: &[u8]) -> MockHost {
    let mut host = MockHost::load(&wasm()).expect("the module loads");
    assert!(
        host.configure(config).expect("no trap"),
        "{:?}",
        host.state().logs
    );
    warm_up(&mut host);
    host
}

/// The worker's first admission finds no stream open and goes by a call of
/// its own (failed here, so it leaves no lease); the next tick opens the
/// stream that every later admission rides. What the warm-up left in the
/// host's records is cleared.
fn warm_up(host: &mut MockHost) {
    assert!(
        host.state().grpc_streams.is_empty(),
        "no stream before a request wants one"
    );
    let stream = begin(host, KEY.as_bytes());
    host.request_headers(stream, false).expect("no trap");
    let call = host
        .state()
        .grpc_calls
        .last()
        .cloned()
        .expect("the first admission is a call");
    assert_eq!(call.method, "Admit");
    host.fail_grpc(call.token, 14, "unavailable")
        .expect("no trap");
    host.end_stream(stream).expect("no trap");
    assert!(host.state().grpc_streams.is_empty(), "opened by the tick");
    host.tick().expect("no trap");
    admission_stream(host);
    let state = host.state_mut();
    state.grpc_calls.clear();
    state.local_replies.clear();
    state.resumed.clear();
    state.resumed_contexts.clear();
}

fn chat_headers(key: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let mut bearer = b"Bearer ".to_vec();
    bearer.extend_from_slice(key);
    vec![
        (":method", b"POST".to_vec()),
        (":path", b"/v1/chat/completions".to_vec()),
        (":authority", b"gateway".to_vec()),
        ("content-type", b"application/json".to_vec()),
        ("authorization", bearer),
        ("x-request-id", b"req-1".to_vec()),
    ]
}

fn begin(host: &mut MockHost, key: &[u8]) -> Stream {
    begin_with(host, chat_headers(key))
}

/// Starts acme's chat request announcing a body of `length` bytes.
fn begin_announcing(host: &mut MockHost, length: usize) -> Stream {
    let mut headers = chat_headers(KEY.as_bytes());
    headers.push(("content-length", length.to_string().into_bytes()));
    begin_with(host, headers)
}

fn begin_with(host: &mut MockHost, headers: Vec<(&'static str, Vec<u8>)>) -> Stream {
    let borrowed: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, v.as_slice())).collect();
    host.begin_stream(&borrowed).expect("no trap")
}

/// Starts acme's chat request: its headers are held while the OPEN Admit,
/// its latest admission, is out. Returns the stream, the admission's id
/// and its request.
fn open(host: &mut MockHost) -> (Stream, u64, AdmitRequest) {
    let stream = begin(host, KEY.as_bytes());
    assert_eq!(
        host.request_headers(stream, false).expect("no trap"),
        Action::Pause
    );
    let (id, request) = admits(host).pop().expect("an admission");
    (stream, id, request)
}

/// The last reply the module sent itself, which must be a 5xx (the service
/// could not decide and the tier fails closed).
fn last_failure(host: &MockHost) -> mock_host::LocalReply {
    let reply = last_reply(host);
    assert!(
        reply.status >= 500,
        "{} {}",
        reply.status,
        reply.body_text()
    );
    reply
}

/// The last reply the module sent itself.
fn last_reply(host: &MockHost) -> mock_host::LocalReply {
    host.state()
        .local_replies
        .last()
        .expect("a local reply")
        .clone()
}

fn chat_body() -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "model": MODEL,
        "messages": [{ "role": "user", "content": "hello" }],
        "max_tokens": 8,
    }))
    .expect("JSON")
}

/// The worker's admission stream: the last one the module opened, which
/// the host has not ended.
fn admission_stream(host: &MockHost) -> &GrpcStream {
    let stream = host
        .state()
        .grpc_streams
        .iter()
        .rev()
        .find(|s| !s.ended)
        .expect("an open admission stream");
    assert_eq!(
        (stream.cluster.as_str(), stream.service.as_str()),
        ("ratelimit", "llmgateway.admission.v1.Admission")
    );
    assert_eq!(stream.method, "AdmitStream");
    stream
}

/// What the module sent on its admission streams, in order.
fn stream_messages(host: &MockHost) -> Vec<AdmitStreamRequest> {
    host.state()
        .grpc_streams
        .iter()
        .flat_map(|s| s.messages.iter())
        .map(|m| AdmitStreamRequest::decode(m.as_slice()).expect("an AdmitStreamRequest"))
        .collect()
}

/// Every admission the module asked on its streams, in order, by id.
fn admits(host: &MockHost) -> Vec<(u64, AdmitRequest)> {
    stream_messages(host)
        .into_iter()
        .filter_map(|m| match m.kind {
            Some(Kind::Admit(request)) => Some((m.id, request)),
            _ => None,
        })
        .collect()
}

/// The ids of the admissions the module cancelled, in order.
fn cancels(host: &MockHost) -> Vec<u64> {
    stream_messages(host)
        .into_iter()
        .filter(|m| matches!(m.kind, Some(Kind::Cancel(_))))
        .map(|m| m.id)
        .collect()
}

/// Admission `n`, with its id on the stream.
fn admit_request(host: &MockHost, n: usize) -> (u64, AdmitRequest) {
    admits(host).get(n).cloned().expect("that many admissions")
}

/// The service answers admission `id` on the stream.
fn answer(host: &mut MockHost, id: u64, response: AdmitResponse) {
    send_on_stream(
        host,
        AdmitStreamResponse {
            id,
            response: Some(response),
            ..AdmitStreamResponse::default()
        },
    );
}

/// The service cannot decide admission `id`: gRPC `status`.
fn fail(host: &mut MockHost, id: u64, status: u32) {
    send_on_stream(
        host,
        AdmitStreamResponse {
            id,
            status_code: status,
            status_message: "unavailable".into(),
            response: None,
        },
    );
}

fn send_on_stream(host: &mut MockHost, message: AdmitStreamResponse) {
    let token = admission_stream(host).token;
    host.grpc_stream_message(token, &message.encode_to_vec())
        .expect("no trap");
}

/// What the policy decided for [`chat_body`], as an Admit after the body
/// carries it: the model, the pool, the output reserve and a prompt count.
fn assert_carries_the_decision(admit: &AdmitRequest) {
    assert_eq!(
        (admit.model.as_str(), admit.pool.as_str()),
        (MODEL, "latency")
    );
    assert_eq!(admit.max_tokens, 8);
    assert!(admit.estimated_prompt_tokens > 0);
}

fn admitted(lease: &str) -> AdmitResponse {
    AdmitResponse {
        decision: Decision::Admitted as i32,
        lease_id: lease.into(),
        lease_ttl_ms: 30_000,
        ..Default::default()
    }
}

#[test]
fn the_configuration_is_read_in_slices_never_whole() {
    let mut host = MockHost::load(&wasm()).expect("the module loads");
    let config = config(1_000);
    assert!(
        config.len() > 4 * 64 * 1024,
        "a configuration of several slices"
    );
    assert!(host.configure(&config).expect("no trap"));
    let reads = &host.state().configuration_reads;
    assert!(reads.len() >= config.len() / (64 * 1024), "{reads:?}");
    let mut next = 0;
    for &(start, max) in reads {
        assert_eq!(start, next, "read in order, without gaps: {reads:?}");
        assert!(max <= 64 * 1024, "a slice of at most 64 KiB: {reads:?}");
        next = (start + max).min(config.len());
    }
    assert_eq!(next, config.len(), "read to the end");
    let line = host.state().logs_with("configured:");
    assert_eq!(line.len(), 1, "{:?}", host.state().logs);
    assert!(line[0].contains("1001 tenants, 1001 API keys"), "{line:?}");
    assert!(line[0].contains("VM memory"), "{line:?}");
}

/// The request id the upstream sees is one value: a sane id sent once is
/// left as it is (not written again), and one sent twice is written back
/// as the first sane one alone.
#[test]
fn the_request_id_leaves_as_one_value() {
    let ids = |host: &MockHost| -> Vec<Vec<u8>> {
        host.state()
            .request_headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(b"x-request-id"))
            .map(|(_, v)| v.clone())
            .collect()
    };
    let writes = |host: &MockHost| {
        host.state()
            .host_calls
            .get("proxy_replace_header_map_value")
            .copied()
            .unwrap_or(0)
    };
    let mut kept = configured();
    let stream = begin(&mut kept, KEY.as_bytes());
    kept.request_headers(stream, true).expect("no trap");
    assert_eq!(ids(&kept), vec![b"req-1".to_vec()]);
    let mut generated = configured();
    let mut headers = chat_headers(KEY.as_bytes());
    headers.retain(|(name, _)| *name != "x-request-id");
    let stream = begin_with(&mut generated, headers);
    generated.request_headers(stream, true).expect("no trap");
    assert_eq!(ids(&generated).len(), 1, "an id is generated");
    assert_eq!(
        writes(&generated),
        writes(&kept) + 1,
        "only a generated id is written"
    );

    let mut host = configured();
    let mut headers = chat_headers(KEY.as_bytes());
    headers.push(("x-request-id", b"req-2".to_vec()));
    let stream = begin_with(&mut host, headers);
    host.request_headers(stream, true).expect("no trap");
    assert_eq!(ids(&host), vec![b"req-1".to_vec()]);
}

#[test]
fn a_configuration_that_is_missing_or_bad_is_refused_naming_why() {
    let mut host = MockHost::load(&wasm()).expect("the module loads");
    assert!(!host.configure(b"").expect("no trap"));
    assert!(
        !host
            .configure(br#"{"registry": {}, "nope": 1}"#)
            .expect("no trap")
    );
    assert!(
        !host.state().logs_with("unknown field `nope`").is_empty(),
        "{:?}",
        host.state().logs
    );
    // Cut off mid-stream: refused, not half-loaded.
    let whole = config(10);
    assert!(!host.configure(&whole[..whole.len() / 2]).expect("no trap"));
}

#[test]
fn a_non_utf8_key_is_refused_and_the_vm_lives_on() {
    let mut host = configured();
    let stream = begin(&mut host, b"sk-\xff\xfe-not-text");
    assert_eq!(
        host.request_headers(stream, false).expect("no trap"),
        Action::Pause
    );
    let reply = last_reply(&host);
    // Refused as a malformed header, in the OpenAI shape, naming it.
    assert_eq!(reply.status, 400, "{}", reply.body_text());
    let body: serde_json::Value = serde_json::from_slice(&reply.body).expect("JSON");
    assert_eq!(body["error"]["code"], "invalid_header", "{body}");
    assert_eq!(body["error"]["param"], "authorization", "{body}");
    assert!(
        admits(&host).is_empty(),
        "no Admit for an unauthenticated request"
    );
    host.end_stream(stream).expect("no trap");
    // The same VM serves the next request.
    let (_, _, admit) = open(&mut host);
    assert_eq!(admit.tenant, "acme");
    assert_eq!(admit.phase, Phase::Open as i32);
}

#[test]
fn nothing_goes_upstream_until_both_admissions_answer() {
    let mut host = configured();
    let (stream, open_token, admit) = open(&mut host);
    assert_eq!(admit.phase, Phase::Open as i32);
    assert_eq!(admit.request_id, "req-1");
    // The whole body arrives while OPEN is out: held, no second call yet.
    let body = chat_body();
    assert_eq!(
        host.request_body(stream, &body, true).expect("no trap"),
        Action::Pause
    );
    assert_eq!(admits(&host).len(), 1, "RESERVE waits for OPEN");
    assert!(host.state().resumed.is_empty());
    answer(&mut host, open_token, admitted("lease-open"));
    // OPEN admitted: RESERVE goes out with what the policy decided.
    let (reserve_token, reserve) = admit_request(&host, 1);
    assert_eq!(reserve.phase, Phase::Reserve as i32);
    assert_carries_the_decision(&reserve);
    assert!(host.state().resumed.is_empty(), "still held");
    answer(&mut host, reserve_token, admitted("lease-reserve"));
    assert_eq!(host.state().resumed, vec![0], "the request resumed once");
    assert!(host.state().local_replies.is_empty());
    let state = host.state();
    assert_eq!(
        state.request_header("x-llm-pool"),
        Some(b"latency".as_slice())
    );
    assert!(state.request_header("x-prefix-key").is_some());
    assert_eq!(
        state.request_header("x-tenant-id"),
        Some(b"acme".as_slice())
    );
    // The body the upstream gets carries the tenant's cache salt.
    let sent: serde_json::Value = serde_json::from_slice(&state.request_body).expect("JSON body");
    assert_eq!(
        sent["cache_salt"].as_str().map(str::len),
        Some(64),
        "{sent}"
    );
}

#[test]
fn a_body_refusal_waits_for_the_open_answer_and_releases_its_lease() {
    let mut host = configured();
    let (stream, open_token, _) = open(&mut host);
    // A body the policy refuses, while OPEN is out: the refusal is held.
    assert_eq!(
        host.request_body(stream, b"{not json", true)
            .expect("no trap"),
        Action::Pause
    );
    assert!(
        host.state().local_replies.is_empty(),
        "sent before OPEN answered"
    );
    answer(&mut host, open_token, admitted("lease-open"));
    let reply = last_reply(&host);
    assert_eq!(reply.status, 400, "{}", reply.body_text());
    assert!(host.state().resumed.is_empty(), "never let through");
    assert_eq!(admits(&host).len(), 1, "no RESERVE for a refused body");
    host.end_stream(stream).expect("no trap");
    // The OPEN lease is reported released with the next flush.
    let released = reported(&mut host);
    assert!(
        released
            .iter()
            .any(|r| r.lease_id == "lease-open" && r.outcome == Outcome::Released as i32),
        "{released:?}"
    );
}

#[test]
fn a_failed_open_call_fails_closed_in_the_openai_shape() {
    let mut host = configured();
    let (_, open_token, _) = open(&mut host);
    fail(&mut host, open_token, 14);
    let reply = last_failure(&host);
    let body: serde_json::Value = serde_json::from_slice(&reply.body).expect("JSON");
    assert!(body["error"]["message"].is_string(), "{body}");
    assert!(host.state().resumed.is_empty());
}

/// The leases the flushes reported, in order: by message on the admission
/// stream, or by `CompleteBatch` call while none is open.
fn reported(host: &mut MockHost) -> Vec<admission_proto::v1::CompleteRequest> {
    for _ in 0..5 {
        host.advance(std::time::Duration::from_millis(50));
        host.tick().expect("no trap");
    }
    let by_call = host
        .state()
        .grpc_calls
        .iter()
        .filter(|c| c.method == "CompleteBatch")
        .flat_map(|c| {
            CompleteBatchRequest::decode(c.message.as_slice())
                .expect("a CompleteBatchRequest")
                .reports
        });
    let by_message = stream_messages(host)
        .into_iter()
        .filter_map(|m| match m.kind {
            Some(Kind::Reports(batch)) => Some(batch.reports),
            _ => None,
        })
        .flatten();
    by_call.chain(by_message).collect()
}

/// The module's last gRPC call, which must be an Admit, answered admitted
/// with `lease`: its request.
fn admit_last_call(host: &mut MockHost, lease: &str) -> AdmitRequest {
    let call = host
        .state()
        .grpc_calls
        .last()
        .cloned()
        .expect("an Admit call");
    assert_eq!(call.method, "Admit");
    host.answer_grpc(call.token, &admitted(lease).encode_to_vec())
        .expect("no trap");
    AdmitRequest::decode(call.message.as_slice()).expect("an AdmitRequest")
}

/// The flushes reported exactly one lease: `lease`, ending as `outcome`.
fn assert_reported_once(host: &mut MockHost, lease: &str, outcome: Outcome) {
    let reports = reported(host);
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0].lease_id, lease);
    assert_eq!(reports[0].outcome, outcome as i32);
}

/// How many `CompleteBatch` calls the module made.
fn report_calls(host: &MockHost) -> usize {
    host.state()
        .grpc_calls
        .iter()
        .filter(|c| c.method == "CompleteBatch")
        .count()
}

#[test]
fn a_client_that_hangs_up_after_admission_is_reported_not_forgotten() {
    let mut host = configured();
    let (stream, open_token, _) = open(&mut host);
    host.request_body(stream, &chat_body(), true)
        .expect("no trap");
    answer(&mut host, open_token, admitted("lease-open"));
    let (reserve_token, _) = admit_request(&host, 1);
    answer(&mut host, reserve_token, admitted("lease-reserve"));
    assert_eq!(host.state().resumed, vec![0]);
    // The client goes away before any response: both leases are reported,
    // on the admission stream, not by a call.
    host.end_stream(stream).expect("no trap");
    let reports = reported(&mut host);
    assert_eq!(report_calls(&host), 0);
    let outcome = |lease: &str| {
        reports
            .iter()
            .find(|r| r.lease_id == lease)
            .map(|r| Outcome::try_from(r.outcome).expect("a known outcome"))
    };
    assert_eq!(
        outcome("lease-open"),
        Some(Outcome::Released),
        "{reports:?}"
    );
    assert_eq!(
        outcome("lease-reserve"),
        Some(Outcome::ClientCancelled),
        "{reports:?}"
    );
}

#[test]
fn a_small_body_that_comes_with_its_headers_is_admitted_in_one_call() {
    let mut host = configured();
    let body = chat_body();
    let stream = begin_announcing(&mut host, body.len());
    assert_eq!(
        host.request_headers(stream, false).expect("no trap"),
        Action::Pause
    );
    assert!(
        admits(&host).is_empty(),
        "no admission before the small body"
    );
    // As Envoy hands it on: the whole body without its end, then the end.
    assert_eq!(
        host.request_body(stream, &body, false).expect("no trap"),
        Action::Pause
    );
    assert!(admits(&host).is_empty(), "the body is all here");
    assert_eq!(
        host.request_body(stream, &[], true).expect("no trap"),
        Action::Pause
    );
    // One FULL call: the request count, the slot, the tokens, the queue.
    assert_eq!(admits(&host).len(), 1);
    let (token, full) = admit_request(&host, 0);
    assert_eq!(full.phase, Phase::Full as i32);
    assert_eq!(full.tenant, "acme");
    assert_carries_the_decision(&full);
    assert!(host.state().resumed.is_empty(), "held until admitted");
    answer(&mut host, token, admitted("lease-full"));
    assert_eq!(host.state().resumed, vec![0], "the request resumed once");
    assert_eq!(
        host.state().request_header("x-llm-pool"),
        Some(b"latency".as_slice())
    );
    // The one lease is billed, not just released.
    host.end_stream(stream).expect("no trap");
    assert_reported_once(&mut host, "lease-full", Outcome::ClientCancelled);
}

#[test]
fn a_small_body_that_trickles_in_is_admitted_on_what_came() {
    let mut host = configured();
    let body = chat_body();
    let stream = begin_announcing(&mut host, body.len());
    host.request_headers(stream, false).expect("no trap");
    assert!(admits(&host).is_empty());
    let (head, rest) = body.split_at(10);
    // Part of the body, not the end of it: OPEN goes out now.
    assert_eq!(
        host.request_body(stream, head, false).expect("no trap"),
        Action::Pause
    );
    let (open_token, open) = admit_request(&host, 0);
    assert_eq!(open.phase, Phase::Open as i32);
    host.request_body(stream, rest, true).expect("no trap");
    assert_eq!(admits(&host).len(), 1, "RESERVE waits for OPEN");
    answer(&mut host, open_token, admitted("lease-open"));
    let (reserve_token, reserve) = admit_request(&host, 1);
    assert_eq!(reserve.phase, Phase::Reserve as i32);
    answer(&mut host, reserve_token, admitted("lease-reserve"));
    assert_eq!(host.state().resumed, vec![0]);
}

#[test]
fn past_its_waiters_a_tenant_is_admitted_on_the_headers() {
    let mut host = configured_with(&config_with(
        0,
        serde_json::json!({ "cluster": "ratelimit", "one_call_max_waiting_per_tenant": 1 }),
    ));
    let length = chat_body().len();
    // The first request waits for its body with no admission...
    let first = begin_announcing(&mut host, length);
    host.request_headers(first, false).expect("no trap");
    assert!(admits(&host).is_empty());
    // ...the second may not: it is admitted on its headers, where acme's
    // concurrency limit holds.
    let second = begin_announcing(&mut host, length);
    host.request_headers(second, false).expect("no trap");
    let (_, open) = admit_request(&host, 0);
    assert_eq!(open.phase, Phase::Open as i32);
    // Once the first has gone its place is free again.
    host.end_stream(first).expect("no trap");
    let third = begin_announcing(&mut host, length);
    host.request_headers(third, false).expect("no trap");
    assert_eq!(admits(&host).len(), 1, "the third waits");
}

#[test]
fn a_large_or_unannounced_body_is_admitted_on_the_headers() {
    for length in [Some(16 * 1024 + 1), None] {
        let mut host = configured();
        let stream = match length {
            Some(length) => begin_announcing(&mut host, length),
            None => begin(&mut host, KEY.as_bytes()),
        };
        host.request_headers(stream, false).expect("no trap");
        let (_, open) = admit_request(&host, 0);
        assert_eq!(open.phase, Phase::Open as i32, "{length:?}");
    }
}

#[test]
fn admissions_ride_the_stream_the_root_opened_answered_by_id() {
    let mut host = configured();
    // Opened by the root's tick after the first request found none.
    assert_eq!(host.state().grpc_streams.len(), 1);
    let token = admission_stream(&host).token;
    let (first, first_id, _) = open(&mut host);
    let (second, second_id, _) = open(&mut host);
    assert_ne!(first_id, second_id);
    assert!(
        host.state().grpc_calls.is_empty(),
        "no unary call: {:?}",
        host.state().grpc_calls
    );
    // Answered in the other order: each answer reaches its own request,
    // which the module made the effective context before acting.
    answer(&mut host, second_id, admitted("lease-second"));
    assert_eq!(
        host.state().resumed_contexts,
        Vec::<i32>::new(),
        "OPEN only"
    );
    let refused = AdmitResponse {
        decision: Decision::Rejected as i32,
        reason: admission_proto::v1::RejectReason::Concurrency as i32,
        message: "too many at once".into(),
        ..AdmitResponse::default()
    };
    answer(&mut host, first_id, refused);
    let reply = last_reply(&host);
    assert_eq!(reply.status, 429, "{}", reply.body_text());
    assert_eq!(reply.context, first.context(), "the refusal is the first's");
    // The second goes on to RESERVE on the same stream once its body is in.
    host.request_body(second, &chat_body(), true)
        .expect("no trap");
    let (reserve_id, reserve) = admit_request(&host, 2);
    assert_eq!(reserve.phase, Phase::Reserve as i32);
    answer(&mut host, reserve_id, admitted("lease-reserve"));
    assert_eq!(host.state().resumed_contexts, vec![second.context()]);
    assert_eq!(admission_stream(&host).token, token, "one stream for all");
}

#[test]
fn the_streams_end_fails_each_waiting_request_and_a_tick_opens_another_a_second_later() {
    let mut host = configured();
    let token = admission_stream(&host).token;
    let (first, _, _) = open(&mut host);
    let (second, _, _) = open(&mut host);
    host.end_grpc_stream(token, 14).expect("no trap");
    // Each request fails as its call would have: closed, in the OpenAI shape.
    let replies = &host.state().local_replies;
    assert_eq!(
        replies.iter().map(|r| r.context).collect::<Vec<_>>(),
        vec![first.context(), second.context()],
        "{replies:?}"
    );
    assert!(replies.iter().all(|r| r.status >= 500), "{replies:?}");
    // Until the next tick, a request is admitted by a call of its own.
    let third = begin(&mut host, KEY.as_bytes());
    host.request_headers(third, false).expect("no trap");
    let calls = &host.state().grpc_calls;
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].method, "Admit");
    // Not at once: a service that is down is not asked every tick.
    host.tick().expect("no trap");
    assert_eq!(host.state().grpc_streams.len(), 1, "reopened at once");
    host.advance(std::time::Duration::from_millis(1_000));
    host.tick().expect("no trap");
    let reopened = admission_stream(&host).token;
    assert_ne!(reopened, token);
    let (_, id, _) = open(&mut host);
    assert_eq!(
        admits(&host).last().map(|(id, _)| *id),
        Some(id),
        "the next request rides the new stream"
    );
}

#[test]
fn without_a_stream_each_request_is_admitted_by_a_call() {
    let mut host = MockHost::load(&wasm()).expect("the module loads");
    host.state_mut().refuse_grpc_streams = true;
    assert!(host.configure(&config(0)).expect("no trap"));
    let stream = begin(&mut host, KEY.as_bytes());
    assert_eq!(
        host.request_headers(stream, false).expect("no trap"),
        Action::Pause
    );
    let first = admit_last_call(&mut host, "lease-open");
    assert_eq!(first.phase, Phase::Open as i32);
    host.request_body(stream, &chat_body(), true)
        .expect("no trap");
    let reserve = admit_last_call(&mut host, "lease-reserve");
    assert_eq!(reserve.phase, Phase::Reserve as i32);
    assert_eq!(host.state().resumed, vec![0]);
    // The service is back: the tick opens the stream, and it is used.
    host.state_mut().refuse_grpc_streams = false;
    host.tick().expect("no trap");
    let (_, _, admit) = open(&mut host);
    assert_eq!(admit.phase, Phase::Open as i32);
}

#[test]
fn with_the_stream_switched_off_every_admission_is_a_call() {
    let mut host = MockHost::load(&wasm()).expect("the module loads");
    let config = config_with(
        0,
        serde_json::json!({ "cluster": "ratelimit", "admit_stream": false }),
    );
    assert!(host.configure(&config).expect("no trap"));
    for n in 0..3 {
        let stream = begin(&mut host, KEY.as_bytes());
        host.request_headers(stream, false).expect("no trap");
        admit_last_call(&mut host, "lease");
        host.end_stream(stream).expect("no trap");
        host.tick().expect("no trap");
        assert!(
            host.state().grpc_streams.is_empty(),
            "request {n}: no stream opened"
        );
    }
}

#[test]
fn a_root_replaced_stays_until_its_last_reports_are_in_and_its_stream_ended() {
    let mut host = configured();
    let token = admission_stream(&host).token;
    let (stream, id, _) = open(&mut host);
    answer(&mut host, id, admitted("lease-open"));
    host.end_stream(stream).expect("no trap");
    // Envoy is done with this root before any tick flushed the report.
    assert!(!host.finish_root().expect("no trap"), "asks to stay");
    let closed = host
        .state()
        .grpc_streams
        .iter()
        .find(|s| s.token == token)
        .is_some_and(|s| s.closed_by_module);
    assert!(closed, "its side of the admission stream is closed");
    let call = host
        .state()
        .grpc_calls
        .last()
        .cloned()
        .expect("the last reports");
    assert_eq!(
        call.method, "CompleteBatch",
        "by a call, whose answer it awaits"
    );
    let reports = CompleteBatchRequest::decode(call.message.as_slice())
        .expect("a CompleteBatchRequest")
        .reports;
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].lease_id, "lease-open");
    host.answer_grpc(call.token, &[]).expect("no trap");
    let done = |host: &MockHost| {
        host.state()
            .host_calls
            .get("proxy_done")
            .copied()
            .unwrap_or(0)
    };
    assert_eq!(done(&host), 0, "the service has not ended the stream yet");
    // The service read everything sent on the stream and ends it.
    host.end_grpc_stream(token, 0).expect("no trap");
    assert_eq!(done(&host), 1, "now the root may go");
}

#[test]
fn a_request_that_leaves_cancels_its_admission_and_a_late_answer_frees_the_lease() {
    let mut host = configured();
    let (stream, id, _) = open(&mut host);
    host.end_stream(stream).expect("no trap");
    assert_eq!(cancels(&host), vec![id], "the service is told");
    // The answer crossed the cancel: nobody waits for it, its lease is
    // released with the next flush rather than held until it expires.
    answer(&mut host, id, admitted("lease-late"));
    assert!(host.state().local_replies.is_empty());
    assert!(host.state().resumed.is_empty());
    assert_reported_once(&mut host, "lease-late", Outcome::Released);
}

#[test]
fn an_admission_past_its_deadline_fails_on_the_tick_and_is_cancelled() {
    let mut host = configured();
    let (stream, id, _) = open(&mut host);
    host.advance(std::time::Duration::from_millis(1_900));
    host.tick().expect("no trap");
    assert!(
        host.state().local_replies.is_empty(),
        "not yet: OPEN waits 2 s"
    );
    host.advance(std::time::Duration::from_millis(200));
    host.tick().expect("no trap");
    let reply = last_failure(&host);
    assert_eq!(reply.context, stream.context());
    assert_eq!(cancels(&host), vec![id]);
    // A late answer changes nothing for the request.
    answer(&mut host, id, admitted("lease-late"));
    assert!(host.state().resumed.is_empty());
}

/// Each crossing between Envoy and the VM (a host call, or a call into the
/// module, allocations for what the host hands over included) costs Envoy
/// more than most of what the module does inside. A small chat request
/// admitted in one call, from its headers to its end, makes exactly this
/// many: a change that adds crossings (or saves some) shows here, not only
/// in a benchmark.
///
/// 67 since admission rides the worker's stream: handing the answer to the
/// request takes three more (the root's callback and its context
/// switches), where a unary call cost Envoy a whole HTTP/2 stream. 53 since
/// every request header a phase reads is looked up in the one read of the
/// whole map (`HeaderSnapshot`) and a credential header is removed only
/// when it was sent: 7 reads (each a host call and an allocation) and a
/// removal fewer. 51 since the credential and the request's digest reach
/// admission as values only, no longer also as headers to the pool. 50
/// since the mTLS peer is asked for only where it can change the answer
/// (no tenant here is registered by SPIFFE id). 46 since the response's
/// headers are read in one call for both phases (were three reads). 44
/// since the clock is read for authentication only where an API key
/// expires, and the admission's bypass mark is removed only by a RESERVE,
/// after an OPEN that could have set it. 43 since a sane request id sent
/// once is not written back.
const CROSSINGS_PER_REQUEST: u64 = 43;

#[test]
fn a_request_crosses_between_host_and_module_a_known_number_of_times() {
    let mut host = configured();
    let body = chat_body();
    let response = br#"{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10}}"#;
    // The second request is measured: the first also pays the VM's
    // one-time work (lazily built tables).
    for n in 0..2 {
        let (crossings, instructions) = (host.state().crossings, host.instructions());
        let calls_before = host.state().host_calls.clone();
        let stream = begin_announcing(&mut host, body.len());
        host.request_headers(stream, false).expect("no trap");
        host.request_body(stream, &body, false).expect("no trap");
        host.request_body(stream, &[], true).expect("no trap");
        let (token, _) = admit_request(&host, n);
        answer(&mut host, token, admitted("lease-full"));
        host.response_headers(
            stream,
            &[(":status", b"200"), ("content-type", b"application/json")],
            false,
        )
        .expect("no trap");
        host.response_body(stream, response, true).expect("no trap");
        host.end_stream(stream).expect("no trap");
        let now = host.state().crossings;
        let (into_host, into_module) = (
            now.into_host - crossings.into_host,
            now.into_module - crossings.into_module,
        );
        // Printed for whoever makes the module cheaper (--nocapture).
        let by_function: Vec<String> = host
            .state()
            .host_calls
            .iter()
            .map(|(name, count)| (name, count - calls_before.get(name).unwrap_or(&0)))
            .filter(|(_, count)| *count > 0)
            .map(|(name, count)| format!("{name} {count}"))
            .collect();
        eprintln!(
            "request {n}: {into_host} host calls, {into_module} calls into the module, \
             {} wasm instructions; host calls: {}",
            host.instructions() - instructions,
            by_function.join(", ")
        );
        assert_eq!(
            into_host + into_module,
            CROSSINGS_PER_REQUEST,
            "{into_host} host calls + {into_module} calls into the module"
        );
    }
}

/// The crash probe's work, which `gateway-bench host-costs` prices in
/// Envoy: each extra header read is exactly two crossings (the host call
/// and the allocation of its answer), and a spin round a steady number of
/// instructions. Envoy's CPU added per request, divided by these, is the
/// price of a crossing and of an instruction (bench/README.md).
#[test]
fn the_probe_spends_a_known_amount_of_work_per_unit() {
    let probe = testbed::Paths::locate()
        .and_then(|p| p.wasm("crash_probe"))
        .expect("the probe is built (make wasm)");
    let measure = |config: &str| -> (u64, u64) {
        let mut host = MockHost::load(&probe).expect("the probe loads");
        assert!(
            host.configure(config.as_bytes()).expect("no trap"),
            "{config}"
        );
        let mut spent = (0, 0);
        // The second request is measured, as for the module.
        for _ in 0..2 {
            let (crossings, instructions) = (host.state().crossings, host.instructions());
            let stream = begin(&mut host, KEY.as_bytes());
            assert_eq!(
                host.request_headers(stream, true).expect("no trap"),
                Action::Continue
            );
            host.end_stream(stream).expect("no trap");
            let now = host.state().crossings;
            spent = (
                now.into_host + now.into_module - crossings.into_host - crossings.into_module,
                host.instructions() - instructions,
            );
        }
        spent
    };
    let plain = measure("{}");
    let reads = measure(r#"{"header_reads":50}"#);
    let spin = measure(r#"{"spin_rounds":20000}"#);
    assert_eq!(reads.0 - plain.0, 100, "two crossings per read");
    assert_eq!(spin.0, plain.0, "spinning crosses nothing");
    let per_round = (spin.1 - plain.1) as f64 / 20_000.0;
    eprintln!(
        "probe: {} crossings, {} instructions per request; {per_round:.2} instructions per spin round",
        plain.0, plain.1
    );
    assert!(
        (5.0..=30.0).contains(&per_round),
        "{per_round} instructions per round"
    );
    let mut refused = MockHost::load(&probe).expect("the probe loads");
    assert!(
        !refused
            .configure(br#"{"spin_rounds":10000001}"#)
            .expect("no trap"),
        "work past the cap is refused"
    );
}
