//! The Admission API over a real gRPC connection to an in-process service.

mod common;

use std::time::Duration;

use admission_proto::v1::admit_stream_request::Kind;
use admission_proto::v1::{
    AdmitCancel, AdmitRequest, AdmitStreamRequest, CompleteBatchRequest, CompleteRequest, Outcome,
    Phase, RejectReason, RenewRequest,
};
use common::*;
use test_support::poll::eventually_async as eventually;
use tokio_stream::wrappers::ReceiverStream;

fn reason(r: &admission_proto::v1::AdmitResponse) -> RejectReason {
    RejectReason::try_from(r.reason).unwrap()
}

async fn spend_today(h: &Harness, tenant: &str) -> f64 {
    let usage = h.service.limiter().usage().await.unwrap();
    usage
        .iter()
        .find(|u| u.tenant == tenant)
        .unwrap()
        .spend_today_usd
}

async fn in_flight(h: &Harness, tenant: &str) -> u64 {
    let usage = h.service.limiter().usage().await.unwrap();
    usage.iter().find(|u| u.tenant == tenant).unwrap().in_flight
}

#[tokio::test]
async fn admit_complete_renew_round_trip() {
    let gate = TestGate::new(GateMode::Admit);
    let h = start(&[], gate.factory()).await;
    let mut c = h.client().await;

    let r = admit(&mut c, "a", "m", 100, 100).await;
    assert!(admitted(&r), "{r:?}");
    assert_eq!(r.lease_id.len(), 32);
    assert_eq!(r.lease_ttl_ms, 10_000);
    let info = r.rate_limit.unwrap();
    assert_eq!(info.limit_requests, Some(5));
    assert_eq!(info.remaining_requests, Some(4));
    assert_eq!(info.limit_tokens, Some(1000));
    assert_eq!(info.remaining_tokens, Some(800));
    assert_eq!(info.reset_tokens_ms, Some(12_000));
    assert_eq!(gate.live.load(std::sync::atomic::Ordering::SeqCst), 1);

    let renew = c
        .renew(RenewRequest {
            lease_ids: vec![r.lease_id.clone(), "bogus".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(renew.unknown_lease_ids, vec!["bogus".to_string()]);

    // 50 prompt tokens at $0.001 + 20 output at $0.002 = $0.09.
    complete(&mut c, &r.lease_id, 50, 20, 0).await;
    assert!((spend_today(&h, "a").await - 0.09).abs() < 1e-9);
    assert_eq!(gate.live.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!(gate.settled.load(std::sync::atomic::Ordering::SeqCst), 1);
    // Idempotent.
    complete(&mut c, &r.lease_id, 50, 20, 0).await;
    assert!((spend_today(&h, "a").await - 0.09).abs() < 1e-9);
    let renew = c
        .renew(RenewRequest {
            lease_ids: vec![r.lease_id.clone()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(renew.unknown_lease_ids, vec![r.lease_id.clone()]);

    // TPM settled to the real 70 tokens: 930 left.
    let r = admit(&mut c, "a", "m", 0, 1).await;
    assert_eq!(r.rate_limit.unwrap().remaining_tokens, Some(929));
}

#[tokio::test]
async fn rejections_carry_reason_retry_and_headers() {
    let h = start(&[], unlimited()).await;
    let mut c = h.client().await;
    for _ in 0..5 {
        let r = admit(&mut c, "a", "other", 1, 1).await;
        assert!(admitted(&r));
        complete(&mut c, &r.lease_id, 1, 1, 0).await;
    }
    let r = admit(&mut c, "a", "other", 1, 1).await;
    assert_eq!(reason(&r), RejectReason::RequestsPerMinute);
    assert!(
        r.retry_after_ms > 11_000 && r.retry_after_ms <= 12_000,
        "{}",
        r.retry_after_ms
    );
    let info = r.rate_limit.unwrap();
    assert_eq!(info.remaining_requests, Some(0));
    assert!(info.reset_requests_ms.unwrap() > 59_000);

    let r = admit(&mut c, "a", "m", 900, 200).await;
    assert_eq!(reason(&r), RejectReason::RequestTooLarge);
    assert_eq!(r.retry_after_ms, 0);

    let r = admit(&mut c, "nobody", "m", 1, 1).await;
    assert_eq!(reason(&r), RejectReason::UnknownTenant);
    let r = admit(&mut c, "off", "m", 1, 1).await;
    assert_eq!(reason(&r), RejectReason::UnknownTenant);
}

#[tokio::test]
async fn concurrency_slots_and_model_limits() {
    let h = start(&[], unlimited()).await;
    let mut c = h.client().await;
    let first = admit(&mut c, "a", "other", 1, 1).await;
    let second = admit(&mut c, "a", "other", 1, 1).await;
    assert!(admitted(&first) && admitted(&second));
    let third = admit(&mut c, "a", "other", 1, 1).await;
    assert_eq!(reason(&third), RejectReason::Concurrency);
    assert!(third.retry_after_ms >= 1_000);
    complete(&mut c, &first.lease_id, 1, 1, 0).await;
    assert!(admitted(&admit(&mut c, "a", "other", 1, 1).await));

    // Tenant b: 1000 rpm overall, but 3 rpm on model m.
    for _ in 0..3 {
        assert!(admitted(&admit(&mut c, "b", "m", 1, 1).await));
    }
    let r = admit(&mut c, "b", "m", 1, 1).await;
    assert_eq!(reason(&r), RejectReason::RequestsPerMinute);
    assert!(r.message.contains("model"), "{}", r.message);
    assert_eq!(r.rate_limit.unwrap().limit_requests, Some(3));
    assert!(admitted(&admit(&mut c, "b", "other", 1, 1).await));
}

#[tokio::test]
async fn budgets_use_upper_bound_reservations_and_real_cost() {
    let h = start(&[], unlimited()).await;
    let mut c = h.client().await;
    // Each: 100 prompt ($0.1) + 100 output ($0.2) = $0.3 upper bound.
    for _ in 0..3 {
        let r = admit(&mut c, "a", "m", 100, 100).await;
        assert!(admitted(&r));
        complete(&mut c, &r.lease_id, 100, 100, 0).await;
    }
    assert!((spend_today(&h, "a").await - 0.9).abs() < 1e-9);
    let r = admit(&mut c, "a", "m", 100, 100).await;
    assert_eq!(reason(&r), RejectReason::BudgetExhausted);
    assert!(r.retry_after_ms > 0 && r.retry_after_ms <= 86_400_000);
    // A cheaper request still fits the remaining $0.1.
    let r = admit(&mut c, "a", "m", 10, 10).await;
    assert!(admitted(&r), "{r:?}");
    // Cached prompt tokens at the cached price: 10 cached at $0.0001 = $0.001.
    complete(&mut c, &r.lease_id, 10, 0, 10).await;
    assert!((spend_today(&h, "a").await - 0.901).abs() < 1e-9);
}

#[tokio::test]
async fn unknown_usage_charges_the_reservation() {
    let h = start(&[], unlimited()).await;
    let mut c = h.client().await;
    let r = admit(&mut c, "a", "m", 100, 100).await;
    c.complete(CompleteRequest {
        lease_id: r.lease_id.clone(),
        outcome: 3,
        usage_known: false,
        ..CompleteRequest::default()
    })
    .await
    .unwrap();
    assert!((spend_today(&h, "a").await - 0.3).abs() < 1e-9);
    assert_eq!(in_flight(&h, "a").await, 0);
}

#[tokio::test]
async fn expired_leases_are_swept_and_renewed_ones_kept() {
    let gate = TestGate::new(GateMode::Admit);
    let h = start(&["--lease-ttl-ms", "300"], gate.factory()).await;
    let mut c = h.client().await;
    let kept = admit(&mut c, "a", "m", 100, 100).await;
    let lost = admit(&mut c, "a", "m", 100, 100).await;
    assert!(admitted(&kept) && admitted(&lost));
    assert_eq!(
        reason(&admit(&mut c, "a", "m", 1, 1).await),
        RejectReason::Concurrency
    );
    // Renew one of them for a second; the other holder "vanished".
    for _ in 0..10 {
        let r = c
            .renew(RenewRequest {
                lease_ids: vec![kept.lease_id.clone()],
            })
            .await
            .unwrap()
            .into_inner();
        assert!(r.unknown_lease_ids.is_empty(), "renewed lease expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(in_flight(&h, "a").await, 1);
    assert_eq!(gate.live.load(std::sync::atomic::Ordering::SeqCst), 1);
    // The lost lease was charged its reservation.
    assert!((spend_today(&h, "a").await - 0.3).abs() < 1e-9);
    complete(&mut c, &kept.lease_id, 1, 1, 0).await;
    assert_eq!(gate.live.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn lease_expiry_is_prompt() {
    let h = start(&["--lease-ttl-ms", "500"], unlimited()).await;
    let mut c = h.client().await;
    let r = admit(&mut c, "a", "other", 1, 1).await;
    assert!(admitted(&r));
    let started = std::time::Instant::now();
    assert!(
        eventually(Duration::from_secs(3), || async {
            in_flight(&h, "a").await == 0
        })
        .await
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(450),
        "freed before its TTL: {took:?}"
    );
    assert!(took < Duration::from_millis(1500), "freed late: {took:?}");
}

#[tokio::test]
async fn gate_refusal_refunds_the_reservation() {
    let h = start(&[], TestGate::new(GateMode::Full).factory()).await;
    let mut c = h.client().await;
    // More attempts than the RPM: each is refunded, so none hits RPM.
    for _ in 0..8 {
        let r = admit(&mut c, "a", "other", 1, 1).await;
        assert_eq!(reason(&r), RejectReason::QueueFull);
        assert_eq!(r.retry_after_ms, 1_500);
    }
    assert_eq!(in_flight(&h, "a").await, 0);
}

#[tokio::test]
async fn queue_timeout_answers_before_the_callers_deadline() {
    let gate = TestGate::new(GateMode::Block);
    let h = start(&[], gate.factory()).await;
    let mut c = h.client().await;
    let mut req = tonic::Request::new(admit_req("a", "other", 1, 1));
    req.set_timeout(Duration::from_millis(400));
    let started = std::time::Instant::now();
    let r = c.admit(req).await.unwrap().into_inner();
    assert_eq!(reason(&r), RejectReason::QueueTimeout);
    assert!(started.elapsed() < Duration::from_millis(400));
    assert_eq!(in_flight(&h, "a").await, 0);
}

#[tokio::test]
async fn cancelled_admit_is_refunded() {
    let gate = TestGate::new(GateMode::Block);
    let h = start(&[], gate.factory()).await;
    let mut c = h.client().await;
    for _ in 0..2 {
        // The client gives up while the call waits in the queue (pool wait is 2 s).
        let call = c.admit(admit_req("a", "other", 1, 1));
        assert!(
            tokio::time::timeout(Duration::from_millis(200), call)
                .await
                .is_err()
        );
    }
    // RPM was refunded too (rpm 5).
    assert_all_refunded(&h, &mut c, &gate, "a", 4).await;
}

/// Nothing of `tenant` waits in the queue or is in flight any more, and
/// its next call sees only its own reservation: `remaining` requests left.
async fn assert_all_refunded(
    h: &Harness,
    c: &mut admission_proto::v1::admission_client::AdmissionClient<tonic::transport::Channel>,
    gate: &TestGate,
    tenant: &str,
    remaining: u64,
) {
    let waiting = gate.waiting.clone();
    assert!(
        eventually(Duration::from_secs(2), || {
            let waiting = waiting.clone();
            async move { waiting.load(std::sync::atomic::Ordering::SeqCst) == 0 }
        })
        .await,
        "the server kept waiting for a caller that is gone"
    );
    assert!(
        eventually(Duration::from_secs(2), || async {
            in_flight(h, tenant).await == 0
        })
        .await
    );
    let mut req = tonic::Request::new(admit_req(tenant, "other", 1, 1));
    req.set_timeout(Duration::from_millis(200));
    let r = c.admit(req).await.unwrap().into_inner();
    assert_eq!(reason(&r), RejectReason::QueueTimeout);
    assert_eq!(r.rate_limit.unwrap().remaining_requests, Some(remaining));
}

#[tokio::test]
async fn a_batch_of_reports_settles_each_like_complete() {
    let gate = TestGate::new(GateMode::Admit);
    let h = start(&[], gate.factory()).await;
    let mut c = h.client().await;
    let mut leases = Vec::new();
    // Tenant a may hold two requests at once.
    for _ in 0..2 {
        let r = admit(&mut c, "a", "m", 10, 100).await;
        assert!(admitted(&r), "{r:?}");
        leases.push(r.lease_id);
    }
    assert_eq!(in_flight(&h, "a").await, 2);
    let report = |lease: &str, prompt: u32, out: u32| CompleteRequest {
        lease_id: lease.to_owned(),
        outcome: Outcome::Completed as i32,
        usage_known: true,
        prompt_tokens: prompt,
        completion_tokens: out,
        ..Default::default()
    };
    c.complete_batch(CompleteBatchRequest {
        reports: vec![
            report(&leases[0], 50, 20),
            // An unknown lease is a no-op, as for Complete.
            report("no-such-lease", 1_000, 1_000),
        ],
    })
    .await
    .unwrap();
    // One settled at $0.09; the other lease is still held.
    assert!((spend_today(&h, "a").await - 0.09).abs() < 1e-9);
    assert_eq!(in_flight(&h, "a").await, 1);
    assert_eq!(gate.settled.load(std::sync::atomic::Ordering::SeqCst), 1);
    // In the ledger before the call returned.
    let ledger = || ledger_text(&h.data_dir());
    assert!(ledger().contains(leases[0].as_str()), "{}", ledger());
    assert!(!ledger().contains(leases[1].as_str()));
    // The settled lease again changes nothing; the held one settles.
    c.complete_batch(CompleteBatchRequest {
        reports: vec![report(&leases[0], 50, 20), report(&leases[1], 50, 20)],
    })
    .await
    .unwrap();
    assert!((spend_today(&h, "a").await - 0.18).abs() < 1e-9);
    assert_eq!(in_flight(&h, "a").await, 0);
    assert!(ledger().contains(leases[1].as_str()));
}

/// Two-phase admission: OPEN on the headers counts the request and takes the
/// slot, RESERVE after the body takes tokens and the pool, RELEASED frees the
/// slot. Tenant `a` has 2 slots and 5 requests a minute.
#[tokio::test]
async fn open_then_reserve_counts_each_request_once() {
    let gate = TestGate::new(GateMode::Admit);
    let h = start(&[], gate.factory()).await;
    let mut c = h.client().await;
    let phase = |tenant: &str, phase: Phase, prompt: u32, max: u32| AdmitRequest {
        phase: phase as i32,
        ..admit_req(tenant, "m", prompt, max)
    };

    // Two requests open their slots on the headers; the third is refused
    // there, before any body could be read.
    let open1 = c
        .admit(phase("a", Phase::Open, 0, 0))
        .await
        .unwrap()
        .into_inner();
    let open2 = c
        .admit(phase("a", Phase::Open, 0, 0))
        .await
        .unwrap()
        .into_inner();
    assert!(admitted(&open1) && admitted(&open2));
    assert_eq!(open2.rate_limit.unwrap().remaining_requests, Some(3));
    let third = c
        .admit(phase("a", Phase::Open, 0, 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reason(&third), RejectReason::Concurrency);
    // OPEN reaches no pool.
    assert_eq!(gate.live.load(std::sync::atomic::Ordering::SeqCst), 0);

    // The first request's RESERVE: admitted although both slots are held
    // (it rides on its OPEN lease), and it counts no second request.
    let reserve = c
        .admit(phase("a", Phase::Reserve, 50, 20))
        .await
        .unwrap()
        .into_inner();
    assert!(admitted(&reserve), "{reserve:?}");
    assert_eq!(gate.live.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(in_flight(&h, "a").await, 2);
    complete(&mut c, &reserve.lease_id, 50, 20, 0).await;
    assert!((spend_today(&h, "a").await - 0.09).abs() < 1e-9);
    assert_eq!(in_flight(&h, "a").await, 2);

    // The requests end: their OPEN leases are released, nothing charged.
    for open in [&open1, &open2] {
        c.complete(CompleteRequest {
            lease_id: open.lease_id.clone(),
            outcome: Outcome::Released as i32,
            ..CompleteRequest::default()
        })
        .await
        .unwrap();
    }
    assert_eq!(in_flight(&h, "a").await, 0);
    assert!((spend_today(&h, "a").await - 0.09).abs() < 1e-9);
    // Two requests counted (one each), not four: 3 of 5 left.
    let next = c
        .admit(phase("a", Phase::Open, 0, 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next.rate_limit.unwrap().remaining_requests, Some(2));
    let usage = h.service.limiter().usage().await.unwrap();
    assert_eq!(usage.iter().find(|u| u.tenant == "a").unwrap().requests, 1);
}

/// Reports say whether their usage carried cached tokens; a pool whose
/// reports stop carrying them is flagged once it is clear (a run of them),
/// and a pool's limits are listed once learned (none without scrapers).
#[tokio::test]
async fn cached_token_reports_are_judged_per_pool_and_pool_limits_answer() {
    let h = start(&[], unlimited()).await;
    let mut c = h.client().await;
    let watch = h.service.limiter().cached_tokens();
    let report = |lease: String, carried: Option<bool>| CompleteRequest {
        lease_id: lease,
        outcome: Outcome::Completed as i32,
        usage_known: true,
        prompt_tokens: 5,
        completion_tokens: 2,
        cached_tokens_reported: carried,
        audit: None,
        traceparent: String::new(),
        ..CompleteRequest::default()
    };
    // A filter that does not say, then one that says they were carried.
    let r = admit(&mut c, "a", "m", 5, 2).await;
    c.complete(report(r.lease_id, None)).await.unwrap();
    assert_eq!(watch.verdict("p"), None);
    let r = admit(&mut c, "a", "m", 5, 2).await;
    c.complete(report(r.lease_id, Some(true))).await.unwrap();
    assert_eq!(
        watch.verdict("p"),
        Some(ratelimit_service::cached_tokens::Verdict::Reported)
    );
    let metrics = h.service.limiter().metrics().encode();
    assert!(
        metrics.contains("ratelimit_pool_cached_tokens_reported{pool=\"p\"} 1"),
        "{metrics}"
    );
    let limits = c
        .pool_limits(admission_proto::v1::PoolLimitsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(limits.limits.is_empty(), "{limits:?}");
}

/// "Requests per day" and "tokens per hour" are registry entries, nothing
/// more: the service enforces them, names them and reports their room.
#[tokio::test]
async fn windows_declared_in_the_registry_are_enforced_and_named() {
    let registry = REGISTRY.replace(
        "[[tenants]]\nid = \"a\"",
        "[[tenants]]\nid = \"w\"\ntier = \"big\"\nmodels = [\"m\"]\nlimits = { windows = [\
         { requests = 2, per = \"calendar_day\" }, { tokens = 500, per = \"hour\" }] }\n\n\
         [[tenants]]\nid = \"a\"",
    );
    let h = start_with(&registry, &[], unlimited()).await;
    let mut c = h.client().await;
    let first = admit(&mut c, "w", "m", 100, 100).await;
    assert!(admitted(&first), "{first:?}");
    let info = first.rate_limit.unwrap();
    // The tightest of each unit: 1 request left today, 300 tokens this hour.
    assert_eq!(info.limit_requests, Some(2));
    assert_eq!(info.remaining_requests, Some(1));
    assert_eq!(info.limit_tokens, Some(500));
    assert_eq!(info.remaining_tokens, Some(300));
    complete(&mut c, &first.lease_id, 10, 10, 0).await;
    assert!(admitted(&admit(&mut c, "w", "m", 10, 10).await));
    let third = admit(&mut c, "w", "m", 10, 10).await;
    assert_eq!(reason(&third), RejectReason::RequestsPerWindow);
    assert_eq!(
        third.message,
        "requests per calendar day limit reached (tenant limit)"
    );
    // Back when the UTC day ends.
    assert!(
        third.retry_after_ms > 0 && third.retry_after_ms <= 86_400_000,
        "{}",
        third.retry_after_ms
    );
    // A request larger than the whole window can never pass: no retry.
    let huge = admit(&mut c, "w", "m", 400, 200).await;
    assert_eq!(reason(&huge), RejectReason::RequestTooLarge);
    assert!(huge.message.contains("per hour"), "{}", huge.message);
}

/// An admission message on a stream.
fn on_stream(id: u64, request: AdmitRequest, timeout_ms: u32) -> AdmitStreamRequest {
    AdmitStreamRequest {
        id,
        kind: Some(Kind::Admit(request)),
        timeout_ms,
    }
}

fn cancel(id: u64) -> AdmitStreamRequest {
    AdmitStreamRequest {
        id,
        kind: Some(Kind::Cancel(AdmitCancel {})),
        timeout_ms: 0,
    }
}

/// An admission stream: where to ask, and where the answers come.
async fn open_stream(
    c: &mut admission_proto::v1::admission_client::AdmissionClient<tonic::transport::Channel>,
) -> (
    tokio::sync::mpsc::Sender<AdmitStreamRequest>,
    tonic::Streaming<admission_proto::v1::AdmitStreamResponse>,
) {
    let (ask, asked) = tokio::sync::mpsc::channel(8);
    let answers = c
        .admit_stream(ReceiverStream::new(asked))
        .await
        .unwrap()
        .into_inner();
    (ask, answers)
}

#[tokio::test]
async fn admissions_on_a_stream_are_answered_by_id_in_any_order() {
    let gate = TestGate::new(GateMode::Admit);
    let h = start(&[], gate.factory()).await;
    let mut c = h.client().await;
    let (ask, mut answers) = open_stream(&mut c).await;
    ask.send(on_stream(41, admit_req("a", "m", 100, 100), 5_000))
        .await
        .unwrap();
    ask.send(on_stream(42, admit_req("a", "m", 10, 10), 0))
        .await
        .unwrap();
    // Neither admit nor cancel: refused by status, the stream goes on.
    ask.send(AdmitStreamRequest {
        id: 43,
        kind: None,
        timeout_ms: 0,
    })
    .await
    .unwrap();
    let mut by_id = std::collections::HashMap::new();
    for _ in 0..3 {
        let answer = answers.message().await.unwrap().expect("an answer");
        by_id.insert(answer.id, answer);
    }
    let leases: Vec<String> = [41, 42]
        .iter()
        .map(|id| {
            let answer = &by_id[id];
            assert_eq!(answer.status_code, 0, "{answer:?}");
            let response = answer.response.clone().expect("a decision");
            assert!(admitted(&response), "{response:?}");
            response.lease_id
        })
        .collect();
    assert_ne!(leases[0], leases[1]);
    assert_eq!(by_id[&43].status_code, tonic::Code::InvalidArgument as u32);
    assert!(by_id[&43].response.is_none());
    assert_eq!(gate.live.load(std::sync::atomic::Ordering::SeqCst), 2);
    // The leases settle like a call's: one by a report on the stream
    // (unanswered), one by Complete.
    ask.send(AdmitStreamRequest {
        id: 0,
        kind: Some(Kind::Reports(CompleteBatchRequest {
            reports: vec![CompleteRequest {
                lease_id: leases[0].clone(),
                outcome: Outcome::Completed as i32,
                usage_known: true,
                prompt_tokens: 10,
                completion_tokens: 10,
                ..CompleteRequest::default()
            }],
        })),
        timeout_ms: 0,
    })
    .await
    .unwrap();
    complete(&mut c, &leases[1], 10, 10, 0).await;
    let settled = gate.settled.clone();
    assert!(
        eventually(Duration::from_secs(2), || {
            let settled = settled.clone();
            async move { settled.load(std::sync::atomic::Ordering::SeqCst) == 2 }
        })
        .await,
        "the report on the stream was not settled"
    );
    assert!(
        eventually(Duration::from_secs(2), || async {
            in_flight(&h, "a").await == 0
        })
        .await
    );
    // 2 x (10 prompt at $0.001 + 10 output at $0.002) = $0.06.
    assert!((spend_today(&h, "a").await - 0.06).abs() < 1e-9);
}

#[tokio::test]
async fn a_cancel_or_the_streams_end_leaves_the_queue_and_refunds() {
    let gate = TestGate::new(GateMode::Block);
    let h = start(&[], gate.factory()).await;
    let mut c = h.client().await;
    let (ask, mut answers) = open_stream(&mut c).await;
    // Tenant `b`: 100 concurrent; the pool's queue holds each up to 2 s.
    let started = std::time::Instant::now();
    ask.send(on_stream(1, admit_req("b", "other", 1, 1), 400))
        .await
        .unwrap();
    for id in [2, 3] {
        ask.send(on_stream(id, admit_req("b", "other", 1, 1), 60_000))
            .await
            .unwrap();
    }
    let waiting = gate.waiting.clone();
    let queued = |n: usize| {
        let waiting = waiting.clone();
        move || {
            let waiting = waiting.clone();
            async move { waiting.load(std::sync::atomic::Ordering::SeqCst) == n }
        }
    };
    assert!(eventually(Duration::from_secs(2), queued(3)).await);
    ask.send(cancel(2)).await.unwrap();
    assert!(
        eventually(Duration::from_secs(2), queued(2)).await,
        "the cancelled admission is still queued"
    );
    // The first one's own deadline: answered before it, by id.
    let answer = answers.message().await.unwrap().expect("an answer");
    assert_eq!(answer.id, 1);
    assert!(started.elapsed() < Duration::from_millis(400));
    assert_eq!(
        reason(answer.response.as_ref().expect("a decision")),
        RejectReason::QueueTimeout
    );
    assert!(
        eventually(Duration::from_secs(2), || async {
            in_flight(&h, "b").await == 1
        })
        .await
    );
    // The caller goes away: the stream's last admission leaves too, and
    // RPM was refunded for all three (rpm 1000; a queue timeout refunds too).
    drop(answers);
    drop(ask);
    assert_all_refunded(&h, &mut c, &gate, "b", 999).await;
}
