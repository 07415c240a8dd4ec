//! One test body per behaviour, run against every store backend.

use std::sync::Arc;

use ratelimit_service::clock::Periods;
use ratelimit_service::lease::LeaseRecord;
use ratelimit_service::limits::plan::{Deltas, holds, moves};
use ratelimit_service::limits::{
    BucketView, Limit, LimitKind, Per, Rate, ScopeKind, ScopeLimits, ScopePlan, Unit,
};
use ratelimit_service::storage::{
    BucketHit, MemoryStore, RedisStore, ReserveOutcome, ReservePlan, SettlePlan, SpendTotal, Store,
};

use test_support::redis::RedisServer;

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
    a_rolling_window_of_any_length_refills_at_its_rate,
    calendar_quotas_count_reservations_settle_to_usage_and_reset,
    concurrent_admits_never_pass_a_calendar_quota,
);

// 2025-03-15T12:00:00Z
const NOW: i64 = 1_742_040_000_000;

fn limits(rpm: Option<u64>, tpm: Option<u64>, conc: Option<u64>) -> ScopeLimits {
    let mut windows = Vec::new();
    let mut window = |unit, per, max: Option<u64>| {
        if let Some(max) = max {
            windows.push(Limit { unit, per, max });
        }
    };
    window(Unit::Requests, Per::Minute, rpm);
    window(Unit::Tokens, Per::Minute, tpm);
    ScopeLimits {
        windows,
        concurrency: conc,
    }
}

fn windows(windows: &[(Unit, Per, u64)]) -> ScopeLimits {
    ScopeLimits {
        windows: windows
            .iter()
            .map(|&(unit, per, max)| Limit { unit, per, max })
            .collect(),
        concurrency: None,
    }
}

/// Scope keys name their kind the way limits/keys.rs makes them.
fn scope_plans(scopes: &[(&str, ScopeLimits)]) -> Vec<ScopePlan> {
    scopes
        .iter()
        .map(|(k, l)| ScopePlan {
            key: k.to_string(),
            kind: if k.starts_with("m/") {
                ScopeKind::Model
            } else {
                ScopeKind::Tenant
            },
            limits: l.clone(),
        })
        .collect()
}

fn lease(
    id: &str,
    scopes: &[(&str, ScopeLimits)],
    tokens: u64,
    nanos: u64,
    now: i64,
) -> LeaseRecord {
    let p = Periods::at(now);
    LeaseRecord {
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
        quotas: Vec::new(),
    }
}

/// A plan the service would make (limits::plan::holds), with the scopes it
/// was made from: settlement reads their limits as they stand now.
struct Planned {
    plan: ReservePlan,
    scopes: Vec<ScopePlan>,
}

impl std::ops::Deref for Planned {
    type Target = ReservePlan;

    fn deref(&self) -> &ReservePlan {
        &self.plan
    }
}

fn plan(id: &str, scopes: &[(&str, ScopeLimits)], tokens: u64, nanos: u64, now: i64) -> Planned {
    plan_of(lease(id, scopes, tokens, nanos, now), scopes, now)
}

fn plan_of(mut lease: LeaseRecord, scopes: &[(&str, ScopeLimits)], now: i64) -> Planned {
    let scopes = scope_plans(scopes);
    let holds = holds(&scopes, &mut lease, &Periods::at(now));
    Planned {
        plan: ReservePlan {
            lease,
            holds,
            now_ms: now,
        },
        scopes,
    }
}

/// Settles with these bucket deltas, charging `charge` nano-dollars and, in
/// calendar quotas, the request unless refunded and the reserved tokens
/// plus `tokens`.
fn settle_plan(admit: &Planned, requests: i64, tokens: i64, charge: u64, now: i64) -> SettlePlan {
    let lease = &admit.lease;
    let deltas = Deltas {
        requests,
        tokens,
        usd: i64::try_from(charge).unwrap() - i64::try_from(lease.reserved_nanos).unwrap(),
        charged_requests: u64::from(lease.slot && requests >= 0),
        charged_tokens: lease.reserved_tokens.saturating_add_signed(tokens),
        charged_nanos: charge,
    };
    SettlePlan {
        lease_id: lease.id.clone(),
        now_ms: now,
        only_if_expired: false,
        moves: moves(lease, Some(&admit.scopes), &deltas, now),
    }
}

fn refused(o: &ReserveOutcome) -> Option<LimitKind> {
    match o {
        ReserveOutcome::Refused { refusal, .. } => refusal.what.map(|w| w.kind),
        ReserveOutcome::Admitted { .. } => None,
    }
}

const REQUESTS: LimitKind = LimitKind::Window {
    unit: Unit::Requests,
    per: Per::Minute,
};
const TOKENS: LimitKind = LimitKind::Window {
    unit: Unit::Tokens,
    per: Per::Minute,
};
const DAILY_BUDGET: LimitKind = LimitKind::Window {
    unit: Unit::Usd,
    per: Per::CalendarDay,
};
const MONTHLY_BUDGET: LimitKind = LimitKind::Window {
    unit: Unit::Usd,
    per: Per::CalendarMonth,
};

/// The view of one scope's limit of `unit` per minute.
fn view(plan: &ReservePlan, views: &[Option<BucketView>], scope: &str, unit: Unit) -> BucketView {
    let key = ratelimit_service::limits::keys::bucket(scope, unit, Per::Minute);
    plan.holds
        .iter()
        .zip(views)
        .find(|(h, _)| h.key == key)
        .and_then(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no view of {key}"))
}

async fn reserves_all_or_nothing(store: Arc<dyn Store>) {
    let tenant = ("t/x", limits(Some(10), Some(100), None));
    let model = ("m/x/m", limits(Some(2), None, None));
    let scopes = [tenant.clone(), model.clone()];
    for i in 0..2 {
        let o = store
            .reserve(&plan(&format!("l{i}"), &scopes, 10, 0, NOW))
            .await
            .unwrap();
        assert_eq!(refused(&o), None);
    }
    // The model scope refuses; the tenant scope must not be charged for it.
    let third = plan("l2", &scopes, 10, 0, NOW);
    let o = store.reserve(&third).await.unwrap();
    let ReserveOutcome::Refused { refusal, views } = &o else {
        panic!("third request on a 2 rpm model passed")
    };
    assert_eq!(refusal.what.map(|w| w.kind), Some(REQUESTS));
    assert_eq!(refusal.what.map(|w| w.scope), Some(ScopeKind::Model));
    assert_eq!(refusal.wait_ms, 30_000);
    assert_eq!(view(&third, views, "t/x", Unit::Requests).remaining, 8);
    assert_eq!(view(&third, views, "t/x", Unit::Tokens).remaining, 80);
    assert_eq!(view(&third, views, "m/x/m", Unit::Requests).remaining, 0);
    // Tenant scope alone still has exactly its 8 requests left.
    let only_tenant = [tenant];
    let mut ok = 0;
    for i in 0..12 {
        let o = store
            .reserve(&plan(&format!("t{i}"), &only_tenant, 1, 0, NOW))
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
        .reserve(&plan("y0", &tpm_only, 28, 0, NOW))
        .await
        .unwrap();
    let o = store
        .reserve(&plan("y1", &tpm_only, 73, 0, NOW))
        .await
        .unwrap();
    assert_eq!(refused(&o), Some(TOKENS));
    let o = store
        .reserve(&plan("y2", &tpm_only, 72, 0, NOW))
        .await
        .unwrap();
    assert_eq!(refused(&o), None);
}

/// `tasks` reservations of `tokens` each at once; how many were admitted.
async fn race(
    store: &Arc<dyn Store>,
    scopes: &[(&str, ScopeLimits)],
    tasks: usize,
    prefix: &str,
    tokens: u64,
) -> usize {
    let handles: Vec<_> = (0..tasks)
        .map(|i| {
            let store = store.clone();
            let p = plan(&format!("{prefix}{i}"), scopes, tokens, 0, NOW);
            tokio::spawn(async move { store.reserve(&p).await.unwrap() })
        })
        .collect();
    let mut admitted = 0;
    for h in handles {
        if refused(&h.await.unwrap()).is_none() {
            admitted += 1;
        }
    }
    admitted
}

async fn concurrent_admits_never_exceed_a_limit(store: Arc<dyn Store>) {
    // 64 tasks race for 10 slots (and 25 requests per minute): exactly 10 win.
    let scopes = [("t/race", limits(Some(25), Some(10_000), Some(10)))];
    let admitted = race(&store, &scopes, 64, "race", 100).await;
    assert_eq!(admitted, 10);
    let usage = store.usage(&["t/race".into()], "d", "m").await.unwrap();
    assert_eq!(usage[0].in_flight, 10);

    // Tokens: 1000 TPM, 50 tasks asking 30 each: at most 33 fit.
    let scopes = [("t/tokens", limits(None, Some(1000), None))];
    let admitted = race(&store, &scopes, 50, "tok", 30).await;
    assert_eq!(admitted, 33);
}

async fn settle_moves_tokens_and_spend_once(store: Arc<dyn Store>) {
    let scopes = [("t/s", limits(Some(100), Some(1000), Some(1)))];
    let a = plan("s1", &scopes, 600, 5_000, NOW);
    assert_eq!(refused(&store.reserve(&a).await.unwrap()), None);
    // The slot is held.
    let o = store
        .reserve(&plan("s2", &scopes, 1, 0, NOW))
        .await
        .unwrap();
    assert_eq!(refused(&o), Some(LimitKind::Concurrency));
    // Real usage 200 of 600 reserved tokens: 400 come back; $ moves.
    assert!(
        store
            .settle(&settle_plan(&a, 0, -400, 1_234, NOW))
            .await
            .unwrap()
    );
    // Idempotent: a second settle does nothing.
    assert!(
        !store
            .settle(&settle_plan(&a, 0, -400, 1_234, NOW))
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
        .reserve(&plan("s3", &scopes, 801, 0, NOW))
        .await
        .unwrap();
    assert_eq!(refused(&o), Some(TOKENS));
    let b = plan("s4", &scopes, 800, 0, NOW);
    assert_eq!(refused(&store.reserve(&b).await.unwrap()), None);
    // A refund gives the request and all its tokens back.
    assert!(
        store
            .settle(&settle_plan(&b, -1, -800, 0, NOW))
            .await
            .unwrap()
    );
    let c = plan("s5", &scopes, 800, 0, NOW);
    let ReserveOutcome::Admitted { views } = store.reserve(&c).await.unwrap() else {
        panic!("refunded tokens were not returned")
    };
    assert_eq!(view(&c, &views, "t/s", Unit::Tokens).remaining, 0);
    assert_eq!(view(&c, &views, "t/s", Unit::Requests).remaining, 98);
    // An extra charge beyond the reservation puts the bucket in debt.
    assert!(
        store
            .settle(&settle_plan(&c, 0, 500, 0, NOW))
            .await
            .unwrap()
    );
    let s6 = plan("s6", &scopes, 1, 0, NOW);
    let ReserveOutcome::Refused { refusal, views } = store.reserve(&s6).await.unwrap() else {
        panic!("bucket in debt admitted")
    };
    assert_eq!(refusal.what.map(|w| w.kind), Some(TOKENS));
    let tokens = view(&s6, &views, "t/s", Unit::Tokens);
    assert_eq!(tokens.remaining, 0, "no wrap below zero");
    assert_eq!(tokens.reset_ms, 90_000);
}

async fn budgets_count_reservations_and_settled_spend(store: Arc<dyn Store>) {
    let budget = windows(&[
        (Unit::Usd, Per::CalendarDay, 1_000),
        (Unit::Usd, Per::CalendarMonth, 1_500),
    ]);
    let scopes = [("t/b", budget)];
    let a = plan("b1", &scopes, 1, 600, NOW);
    assert_eq!(refused(&store.reserve(&a).await.unwrap()), None);
    // 600 reserved + 500 > 1000.
    let o = store
        .reserve(&plan("b2", &scopes, 1, 500, NOW))
        .await
        .unwrap();
    assert_eq!(refused(&o), Some(DAILY_BUDGET));
    // Settled lower than reserved: room comes back.
    assert!(
        store
            .settle(&settle_plan(&a, 0, 0, 100, NOW))
            .await
            .unwrap()
    );
    assert_eq!(
        refused(
            &store
                .reserve(&plan("b3", &scopes, 1, 900, NOW))
                .await
                .unwrap()
        ),
        None
    );
    // Next day: the daily budget is fresh, the month has 100 + 900 used.
    let tomorrow = NOW + 86_400_000;
    let o = store
        .reserve(&plan("b4", &scopes, 1, 600, tomorrow))
        .await
        .unwrap();
    assert_eq!(refused(&o), Some(MONTHLY_BUDGET));
    assert_eq!(
        refused(
            &store
                .reserve(&plan("b5", &scopes, 1, 500, tomorrow))
                .await
                .unwrap()
        ),
        None
    );
}

async fn renew_and_expiry(store: Arc<dyn Store>) {
    let scopes = [("t/r", limits(None, None, Some(5)))];
    for id in ["r1", "r2", "r3"] {
        store.reserve(&plan(id, &scopes, 1, 0, NOW)).await.unwrap();
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
    let mut s = settle_plan(&r1, 0, 0, 0, NOW + 10_000);
    s.only_if_expired = true;
    assert!(!store.settle(&s).await.unwrap());
    let r2 = plan("r2", &scopes, 1, 0, NOW);
    let mut s = settle_plan(&r2, 0, 0, 0, NOW + 10_000);
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
    let budget = windows(&[(Unit::Usd, Per::CalendarDay, 1_000)]);
    let o = store
        .reserve(&plan("z1", &[("t/z", budget)], 1, 200, NOW))
        .await
        .unwrap();
    if store.spend_is_shared() {
        // Redis keeps totals itself; ledger replay is not added again.
        assert_eq!(refused(&o), None);
    } else {
        assert_eq!(refused(&o), Some(DAILY_BUDGET));
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
    assert!(refused(&store.reserve(&open).await.unwrap()).is_none());
    // The slot is taken: another OPEN is refused for concurrency...
    let other = plan(
        "other",
        &[(key, limits(Some(100), Some(1000), Some(1)))],
        0,
        0,
        NOW,
    );
    assert_eq!(
        refused(&store.reserve(&other).await.unwrap()),
        Some(LimitKind::Concurrency)
    );
    // ...while the request's own RESERVE lease is admitted and takes none.
    let reserve_scopes = [(key, limits(None, Some(1000), None))];
    let mut lease = lease("reserve", &reserve_scopes, 300, 5, NOW);
    lease.slot = false;
    let reserve = plan_of(lease, &reserve_scopes, NOW);
    assert!(refused(&store.reserve(&reserve).await.unwrap()).is_none());
    let usage = store.usage(&[key.into()], "d", "m").await.unwrap();
    assert_eq!(usage[0].in_flight, 1);
    // Ending the RESERVE lease leaves the slot held; ending the OPEN frees it.
    assert!(
        store
            .settle(&settle_plan(&reserve, 0, -300, 5, NOW))
            .await
            .unwrap()
    );
    let usage = store.usage(&[key.into()], "d", "m").await.unwrap();
    assert_eq!(usage[0].in_flight, 1);
    assert!(
        store
            .settle(&settle_plan(&open, 0, 0, 0, NOW))
            .await
            .unwrap()
    );
    let usage = store.usage(&[key.into()], "d", "m").await.unwrap();
    assert_eq!(usage[0].in_flight, 0);
    assert!(refused(&store.reserve(&other).await.unwrap()).is_none());
}

/// Requests per hour: the same bucket arithmetic as the minute, over an hour.
async fn a_rolling_window_of_any_length_refills_at_its_rate(store: Arc<dyn Store>) {
    let scopes = [("t/hourly", windows(&[(Unit::Requests, Per::Hour, 3)]))];
    for i in 0..3 {
        let o = store
            .reserve(&plan(&format!("h{i}"), &scopes, 1, 0, NOW))
            .await
            .unwrap();
        assert_eq!(refused(&o), None);
    }
    let fourth = plan("h3", &scopes, 1, 0, NOW);
    let ReserveOutcome::Refused { refusal, .. } = store.reserve(&fourth).await.unwrap() else {
        panic!("a fourth request in the hour passed a limit of 3 per hour")
    };
    let per_hour = LimitKind::Window {
        unit: Unit::Requests,
        per: Per::Hour,
    };
    assert_eq!(refusal.what.map(|w| w.kind), Some(per_hour));
    // One request comes back every 20 minutes.
    assert_eq!(refusal.wait_ms, 1_200_000);
    let almost = plan("h4", &scopes, 1, 0, NOW + 1_199_000);
    assert_eq!(
        refused(&store.reserve(&almost).await.unwrap()),
        Some(per_hour)
    );
    let later = plan("h5", &scopes, 1, 0, NOW + 1_200_000);
    assert_eq!(refused(&store.reserve(&later).await.unwrap()), None);
}

/// Tokens per calendar month and requests per calendar day: reservations
/// count at once, settlement charges real usage, a new period starts empty.
async fn calendar_quotas_count_reservations_settle_to_usage_and_reset(store: Arc<dyn Store>) {
    let scopes = [(
        "t/quota",
        windows(&[
            (Unit::Tokens, Per::CalendarMonth, 1_000),
            (Unit::Requests, Per::CalendarDay, 3),
        ]),
    )];
    let a = plan("q1", &scopes, 600, 0, NOW);
    assert_eq!(refused(&store.reserve(&a).await.unwrap()), None);
    assert_eq!(a.lease.quotas.len(), 2, "the lease lists its quotas");
    // 600 reserved + 500 > 1000 for the month.
    let b = plan("q2", &scopes, 500, 0, NOW);
    let ReserveOutcome::Refused { refusal, views } = store.reserve(&b).await.unwrap() else {
        panic!("a monthly token quota was passed by its reservations")
    };
    let monthly_tokens = LimitKind::Window {
        unit: Unit::Tokens,
        per: Per::CalendarMonth,
    };
    assert_eq!(refusal.what.map(|w| w.kind), Some(monthly_tokens));
    let p = Periods::at(NOW);
    assert_eq!(
        refusal.wait_ms, p.month_ends_in_ms,
        "retry when the month ends"
    );
    let quota_view = b
        .holds
        .iter()
        .zip(&views)
        .find(|(h, _)| h.what.map(|w| w.kind) == Some(monthly_tokens))
        .and_then(|(_, v)| *v)
        .unwrap();
    assert_eq!((quota_view.limit, quota_view.remaining), (1_000, 400));
    // The request used 100 tokens: 500 of the reservation come back.
    assert!(
        store
            .settle(&settle_plan(&a, 0, -500, 0, NOW))
            .await
            .unwrap()
    );
    let c = plan("q3", &scopes, 900, 0, NOW);
    assert_eq!(refused(&store.reserve(&c).await.unwrap()), None);
    // Two requests counted today; a refunded one gives its request back.
    assert!(
        store
            .settle(&settle_plan(&c, -1, -900, 0, NOW))
            .await
            .unwrap()
    );
    for id in ["q4", "q5"] {
        assert_eq!(
            refused(&store.reserve(&plan(id, &scopes, 1, 0, NOW)).await.unwrap()),
            None
        );
    }
    let daily_requests = LimitKind::Window {
        unit: Unit::Requests,
        per: Per::CalendarDay,
    };
    assert_eq!(
        refused(
            &store
                .reserve(&plan("q6", &scopes, 1, 0, NOW))
                .await
                .unwrap()
        ),
        Some(daily_requests)
    );
    // Tomorrow the day's requests start again; the month's tokens do not.
    let tomorrow = NOW + 86_400_000;
    assert_eq!(
        refused(
            &store
                .reserve(&plan("q7", &scopes, 1, 0, tomorrow))
                .await
                .unwrap()
        ),
        None
    );
    assert_eq!(
        refused(
            &store
                .reserve(&plan("q8", &scopes, 900, 0, tomorrow))
                .await
                .unwrap()
        ),
        Some(monthly_tokens)
    );
    // Next month the tokens start again.
    let next_month = NOW + i64::try_from(p.month_ends_in_ms).unwrap();
    assert_eq!(
        refused(
            &store
                .reserve(&plan("q9", &scopes, 900, 0, next_month))
                .await
                .unwrap()
        ),
        None
    );
}

async fn concurrent_admits_never_pass_a_calendar_quota(store: Arc<dyn Store>) {
    // 48 tasks race for 7 requests of the day: exactly 7 win.
    let scopes = [("t/daily", windows(&[(Unit::Requests, Per::CalendarDay, 7)]))];
    let admitted = race(&store, &scopes, 48, "d", 10).await;
    assert_eq!(admitted, 7);
}
