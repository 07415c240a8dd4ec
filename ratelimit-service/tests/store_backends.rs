//! One test body per behaviour, run against every store backend.

mod common;

use std::sync::Arc;

use ratelimit_service::clock::Periods;
use ratelimit_service::lease::LeaseRecord;
use ratelimit_service::limits::{LimitKind, Rate, ScopeLimits};
use ratelimit_service::storage::{
    AdmitOutcome, AdmitPlan, BucketHit, MemoryStore, RedisStore, ScopePlan, ScopeSettle,
    SettlePlan, SpendTotal, Store,
};

use common::RedisServer;

/// A backend under test; keeps the Redis server alive for the test.
struct Backend {
    store: Arc<dyn Store>,
    _redis: Option<RedisServer>,
}

async fn memory() -> Backend {
    Backend {
        store: Arc::new(MemoryStore::new()),
        _redis: None,
    }
}

async fn redis() -> Backend {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url).await.unwrap();
    Backend {
        store: Arc::new(store),
        _redis: Some(server),
    }
}

macro_rules! for_each_backend {
    ($($test:ident),* $(,)?) => {
        mod memory_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    let b = super::memory().await;
                    super::$test(b.store.clone()).await;
                }
            )*
        }
        mod redis_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    let b = super::redis().await;
                    super::$test(b.store.clone()).await;
                }
            )*
        }
    };
}

for_each_backend!(
    reserves_all_or_nothing,
    concurrent_admits_never_exceed_a_limit,
    settle_moves_tokens_and_spend_once,
    budgets_count_reservations_and_settled_spend,
    renew_and_expiry,
    rls_hits_all_or_nothing,
    restored_spend_counts_against_budgets,
    a_lease_without_a_slot_rides_on_its_open_lease,
);

// 2025-03-15T12:00:00Z
const NOW: i64 = 1_742_040_000_000;

fn limits(rpm: Option<u64>, tpm: Option<u64>, conc: Option<u64>) -> ScopeLimits {
    ScopeLimits {
        rpm,
        tpm,
        concurrency: conc,
        ..ScopeLimits::default()
    }
}

fn plan(id: &str, scopes: &[(&str, ScopeLimits)], tokens: u64, nanos: u64, now: i64) -> AdmitPlan {
    let p = Periods::at(now);
    AdmitPlan {
        lease: LeaseRecord {
            id: id.into(),
            tenant: "t".into(),
            model: "m".into(),
            pool: "p".into(),
            holder: "h".into(),
            request_id: "r".into(),
            scopes: scopes.iter().map(|(k, _)| k.to_string()).collect(),
            est_prompt_tokens: tokens / 2,
            max_tokens: tokens - tokens / 2,
            reserved_tokens: tokens,
            reserved_nanos: nanos,
            day: p.day,
            month: p.month,
            admitted_ms: now,
            expires_ms: now + 10_000,
            slot: true,
        },
        scopes: scopes
            .iter()
            .map(|(k, l)| ScopePlan {
                key: k.to_string(),
                limits: l.clone(),
            })
            .collect(),
        now_ms: now,
    }
}

fn settle_plan(admit: &AdmitPlan, requests: f64, tokens: f64, charge: u64, now: i64) -> SettlePlan {
    let p = Periods::at(now);
    SettlePlan {
        lease_id: admit.lease.id.clone(),
        now_ms: now,
        only_if_expired: false,
        scopes: admit
            .scopes
            .iter()
            .map(|s| ScopeSettle {
                key: s.key.clone(),
                rpm: s.limits.rpm,
                tpm: s.limits.tpm,
                requests_delta: requests,
                tokens_delta: tokens,
            })
            .collect(),
        reserved_nanos: admit.lease.reserved_nanos,
        reserved_day: admit.lease.day.clone(),
        reserved_month: admit.lease.month.clone(),
        charge_nanos: charge,
        charge_day: p.day,
        charge_month: p.month,
        slot: admit.lease.slot,
    }
}

fn refused(o: &AdmitOutcome) -> Option<LimitKind> {
    match o {
        AdmitOutcome::Refused { refusal, .. } => Some(refusal.kind),
        AdmitOutcome::Admitted { .. } => None,
    }
}

async fn reserves_all_or_nothing(store: Arc<dyn Store>) {
    let tenant = ("t/x", limits(Some(10), Some(100), None));
    let model = ("m/x/m", limits(Some(2), None, None));
    let scopes = [tenant.clone(), model.clone()];
    for i in 0..2 {
        let o = store
            .admit(&plan(&format!("l{i}"), &scopes, 10, 0, NOW))
            .await
            .unwrap();
        assert_eq!(refused(&o), None);
    }
    // The model scope refuses; the tenant scope must not be charged for it.
    let o = store.admit(&plan("l2", &scopes, 10, 0, NOW)).await.unwrap();
    let AdmitOutcome::Refused { refusal, views } = &o else {
        panic!("third request on a 2 rpm model passed")
    };
    assert_eq!(refusal.kind, LimitKind::Requests);
    assert_eq!(refusal.scope, 1);
    assert_eq!(refusal.wait_ms, 30_000);
    assert_eq!(views[0].requests.unwrap().remaining, 8);
    assert_eq!(views[0].tokens.unwrap().remaining, 80);
    assert_eq!(views[1].requests.unwrap().remaining, 0);
    // Tenant scope alone still has exactly its 8 requests left.
    let only_tenant = [tenant];
    let mut ok = 0;
    for i in 0..12 {
        let o = store
            .admit(&plan(&format!("t{i}"), &only_tenant, 1, 0, NOW))
            .await
            .unwrap();
        if refused(&o).is_none() {
            ok += 1;
        }
    }
    assert_eq!(ok, 8);
    // TPM: 100 tokens/min with 20 + 8 used: 72 remain, 73 does not fit.
    let tpm_only = [("t/y", limits(None, Some(100), None))];
    store
        .admit(&plan("y0", &tpm_only, 28, 0, NOW))
        .await
        .unwrap();
    let o = store
        .admit(&plan("y1", &tpm_only, 73, 0, NOW))
        .await
        .unwrap();
    assert_eq!(refused(&o), Some(LimitKind::Tokens));
    let o = store
        .admit(&plan("y2", &tpm_only, 72, 0, NOW))
        .await
        .unwrap();
    assert_eq!(refused(&o), None);
}

async fn concurrent_admits_never_exceed_a_limit(store: Arc<dyn Store>) {
    // 64 tasks race for 10 slots (and 25 requests per minute): exactly 10 win.
    let scopes = [("t/race", limits(Some(25), Some(10_000), Some(10)))];
    let mut tasks = Vec::new();
    for i in 0..64 {
        let store = store.clone();
        let p = plan(&format!("race{i}"), &scopes, 100, 0, NOW);
        tasks.push(tokio::spawn(async move { store.admit(&p).await.unwrap() }));
    }
    let mut admitted = 0;
    for t in tasks {
        if refused(&t.await.unwrap()).is_none() {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 10);
    let usage = store.usage(&["t/race".into()], "d", "m").await.unwrap();
    assert_eq!(usage[0].in_flight, 10);

    // Tokens: 1000 TPM, 50 tasks asking 30 each: at most 33 fit.
    let scopes = [("t/tokens", limits(None, Some(1000), None))];
    let mut tasks = Vec::new();
    for i in 0..50 {
        let store = store.clone();
        let p = plan(&format!("tok{i}"), &scopes, 30, 0, NOW);
        tasks.push(tokio::spawn(async move { store.admit(&p).await.unwrap() }));
    }
    let mut admitted = 0;
    for t in tasks {
        if refused(&t.await.unwrap()).is_none() {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 33);
}

async fn settle_moves_tokens_and_spend_once(store: Arc<dyn Store>) {
    let scopes = [("t/s", limits(Some(100), Some(1000), Some(1)))];
    let a = plan("s1", &scopes, 600, 5_000, NOW);
    assert_eq!(refused(&store.admit(&a).await.unwrap()), None);
    // The slot is held.
    let o = store.admit(&plan("s2", &scopes, 1, 0, NOW)).await.unwrap();
    assert_eq!(refused(&o), Some(LimitKind::Concurrency));
    // Real usage 200 of 600 reserved tokens: 400 come back; $ moves.
    assert!(
        store
            .settle(&settle_plan(&a, 0.0, -400.0, 1_234, NOW))
            .await
            .unwrap()
    );
    // Idempotent: a second settle does nothing.
    assert!(
        !store
            .settle(&settle_plan(&a, 0.0, -400.0, 1_234, NOW))
            .await
            .unwrap()
    );
    let p = Periods::at(NOW);
    let u = store
        .usage(&["t/s".into()], &p.day, &p.month)
        .await
        .unwrap()[0];
    assert_eq!(u.in_flight, 0);
    assert_eq!(u.spent_day, 1_234);
    assert_eq!(u.spent_month, 1_234);
    assert_eq!(u.reserved_day, 0);
    assert!(store.lease("s1").await.unwrap().is_none());
    // 1000 - 200 used = 800 tokens free: 800 fits, 801 would not.
    let o = store
        .admit(&plan("s3", &scopes, 801, 0, NOW))
        .await
        .unwrap();
    assert_eq!(refused(&o), Some(LimitKind::Tokens));
    let b = plan("s4", &scopes, 800, 0, NOW);
    assert_eq!(refused(&store.admit(&b).await.unwrap()), None);
    // A refund gives the request and all its tokens back.
    assert!(
        store
            .settle(&settle_plan(&b, -1.0, -800.0, 0, NOW))
            .await
            .unwrap()
    );
    let c = plan("s5", &scopes, 800, 0, NOW);
    let AdmitOutcome::Admitted { views } = store.admit(&c).await.unwrap() else {
        panic!("refunded tokens were not returned")
    };
    assert_eq!(views[0].tokens.unwrap().remaining, 0);
    assert_eq!(views[0].requests.unwrap().remaining, 98);
    // An extra charge beyond the reservation puts the bucket in debt.
    assert!(
        store
            .settle(&settle_plan(&c, 0.0, 500.0, 0, NOW))
            .await
            .unwrap()
    );
    let AdmitOutcome::Refused { refusal, views } =
        store.admit(&plan("s6", &scopes, 1, 0, NOW)).await.unwrap()
    else {
        panic!("bucket in debt admitted")
    };
    assert_eq!(refusal.kind, LimitKind::Tokens);
    assert_eq!(views[0].tokens.unwrap().remaining, 0, "no wrap below zero");
    assert_eq!(views[0].tokens.unwrap().reset_ms, 90_000);
}

async fn budgets_count_reservations_and_settled_spend(store: Arc<dyn Store>) {
    let budget = ScopeLimits {
        daily_nanos: Some(1_000),
        monthly_nanos: Some(1_500),
        ..ScopeLimits::default()
    };
    let scopes = [("t/b", budget)];
    let a = plan("b1", &scopes, 1, 600, NOW);
    assert_eq!(refused(&store.admit(&a).await.unwrap()), None);
    // 600 reserved + 500 > 1000.
    let o = store
        .admit(&plan("b2", &scopes, 1, 500, NOW))
        .await
        .unwrap();
    assert_eq!(refused(&o), Some(LimitKind::DailyBudget));
    // Settled lower than reserved: room comes back.
    assert!(
        store
            .settle(&settle_plan(&a, 0.0, 0.0, 100, NOW))
            .await
            .unwrap()
    );
    assert_eq!(
        refused(
            &store
                .admit(&plan("b3", &scopes, 1, 900, NOW))
                .await
                .unwrap()
        ),
        None
    );
    // Next day: the daily budget is fresh, the month has 100 + 900 used.
    let tomorrow = NOW + 86_400_000;
    let o = store
        .admit(&plan("b4", &scopes, 1, 600, tomorrow))
        .await
        .unwrap();
    assert_eq!(refused(&o), Some(LimitKind::MonthlyBudget));
    assert_eq!(
        refused(
            &store
                .admit(&plan("b5", &scopes, 1, 500, tomorrow))
                .await
                .unwrap()
        ),
        None
    );
}

async fn renew_and_expiry(store: Arc<dyn Store>) {
    let scopes = [("t/r", limits(None, None, Some(5)))];
    for id in ["r1", "r2", "r3"] {
        store.admit(&plan(id, &scopes, 1, 0, NOW)).await.unwrap();
    }
    let unknown = store
        .renew(&["r1".into(), "nope".into()], NOW + 60_000)
        .await
        .unwrap();
    assert_eq!(unknown, vec!["nope".to_string()]);
    assert_eq!(
        store.lease("r1").await.unwrap().unwrap().expires_ms,
        NOW + 60_000
    );
    let mut expired = store.expired(NOW + 10_000, 10).await.unwrap();
    expired.sort();
    assert_eq!(expired, vec!["r2".to_string(), "r3".to_string()]);
    assert!(store.expired(NOW + 9_999, 10).await.unwrap().is_empty());
    // An expiry settle does nothing to a lease renewed in the meantime.
    let r1 = plan("r1", &scopes, 1, 0, NOW);
    let mut s = settle_plan(&r1, 0.0, 0.0, 0, NOW + 10_000);
    s.only_if_expired = true;
    assert!(!store.settle(&s).await.unwrap());
    let r2 = plan("r2", &scopes, 1, 0, NOW);
    let mut s = settle_plan(&r2, 0.0, 0.0, 0, NOW + 10_000);
    s.only_if_expired = true;
    assert!(store.settle(&s).await.unwrap());
    let u = store.usage(&["t/r".into()], "d", "m").await.unwrap()[0];
    assert_eq!(u.in_flight, 2);
}

async fn rls_hits_all_or_nothing(store: Arc<dyn Store>) {
    let per_sec = Rate {
        limit: 3,
        period_ms: 1000,
    };
    let wide = Rate {
        limit: 100,
        period_ms: 60_000,
    };
    let hit = |key: &str, rate, hits, enforce| BucketHit {
        key: key.into(),
        rate,
        hits,
        enforce,
    };
    let o = store
        .hit(
            &[
                hit("rls/a", per_sec, 2.0, true),
                hit("rls/w", wide, 2.0, true),
            ],
            NOW,
        )
        .await
        .unwrap();
    assert!(o.allowed);
    assert_eq!(o.results[0].1.remaining, 1);
    // 2 more do not fit the per-second bucket: nothing is applied anywhere.
    let o = store
        .hit(
            &[
                hit("rls/a", per_sec, 2.0, true),
                hit("rls/w", wide, 2.0, true),
            ],
            NOW,
        )
        .await
        .unwrap();
    assert!(!o.allowed);
    assert!(!o.results[0].0);
    assert!(o.results[1].0);
    assert_eq!(o.results[1].1.remaining, 98);
    // Shadow mode reports but lets through.
    let o = store
        .hit(&[hit("rls/a", per_sec, 2.0, false)], NOW)
        .await
        .unwrap();
    assert!(o.allowed);
    assert!(!o.results[0].0);
    // After a second the bucket has drained.
    let o = store
        .hit(&[hit("rls/a", per_sec, 3.0, true)], NOW + 1_000)
        .await
        .unwrap();
    assert!(o.allowed);
    assert_eq!(o.results[0].1.remaining, 0);
    assert_eq!(o.results[0].1.reset_ms, 1_000);
}

async fn restored_spend_counts_against_budgets(store: Arc<dyn Store>) {
    let p = Periods::at(NOW);
    store
        .restore_spend(&[SpendTotal {
            scope: "t/z".into(),
            period: p.day.clone(),
            nanos: 900,
        }])
        .await
        .unwrap();
    let budget = ScopeLimits {
        daily_nanos: Some(1_000),
        ..ScopeLimits::default()
    };
    let o = store
        .admit(&plan("z1", &[("t/z", budget)], 1, 200, NOW))
        .await
        .unwrap();
    if store.spend_is_shared() {
        // Redis keeps totals itself; ledger replay is not added again.
        assert_eq!(refused(&o), None);
    } else {
        assert_eq!(refused(&o), Some(LimitKind::DailyBudget));
    }
}

/// Two-phase admission: the OPEN lease takes the request and the slot, the
/// RESERVE lease (no slot, no RPM or concurrency in its plan) only tokens.
async fn a_lease_without_a_slot_rides_on_its_open_lease(store: Arc<dyn Store>) {
    let key = "t/phases";
    let open = plan(
        "open",
        &[(key, limits(Some(100), Some(1000), Some(1)))],
        0,
        0,
        NOW,
    );
    assert!(refused(&store.admit(&open).await.unwrap()).is_none());
    // The slot is taken: another OPEN is refused for concurrency...
    let other = plan(
        "other",
        &[(key, limits(Some(100), Some(1000), Some(1)))],
        0,
        0,
        NOW,
    );
    assert_eq!(
        refused(&store.admit(&other).await.unwrap()),
        Some(LimitKind::Concurrency)
    );
    // ...while the request's own RESERVE lease is admitted and takes none.
    let mut reserve = plan(
        "reserve",
        &[(key, limits(None, Some(1000), None))],
        300,
        5,
        NOW,
    );
    reserve.lease.slot = false;
    assert!(refused(&store.admit(&reserve).await.unwrap()).is_none());
    let usage = store.usage(&[key.into()], "d", "m").await.unwrap();
    assert_eq!(usage[0].in_flight, 1);
    // Ending the RESERVE lease leaves the slot held; ending the OPEN frees it.
    assert!(
        store
            .settle(&settle_plan(&reserve, 0.0, -300.0, 5, NOW))
            .await
            .unwrap()
    );
    let usage = store.usage(&[key.into()], "d", "m").await.unwrap();
    assert_eq!(usage[0].in_flight, 1);
    assert!(
        store
            .settle(&settle_plan(&open, 0.0, 0.0, 0, NOW))
            .await
            .unwrap()
    );
    let usage = store.usage(&[key.into()], "d", "m").await.unwrap();
    assert_eq!(usage[0].in_flight, 0);
    assert!(refused(&store.admit(&other).await.unwrap()).is_none());
}
