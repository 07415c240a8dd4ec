//! Where counters, leases and budget totals live. Every operation that
//! checks and changes counters is one atomic step in the backend (a mutex in
//! memory, a Lua script in Redis): concurrent requests can never jointly
//! pass a limit, because no request reads a counter that another is about
//! to change.

pub mod memory;
pub mod redis;

use async_trait::async_trait;
use thiserror::Error;

use crate::lease::LeaseRecord;
use crate::limits::plan::Limited;
use crate::limits::{BucketView, Nanos, Rate};

pub use memory::MemoryStore;
pub use redis::RedisStore;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("store returned malformed data: {0}")]
    Decode(#[from] serde_json::Error),
}

/// How a counter measures: what "fits" means for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meter {
    /// A GCRA bucket of a rolling window (limits/bucket.rs): a cost fits
    /// while level + cost <= limit.
    Bucket { period_ms: u64 },
    /// A calendar counter {spent, resv}: a cost fits while
    /// spent + resv + cost <= limit. Its period resets in `resets_in_ms`.
    Counter { resets_in_ms: u64 },
    /// Requests in flight: one more fits while the count is below the limit.
    Slots,
}

/// One counter an Admit changes, and the limit it must stay within.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// The counter's name (limits/keys.rs).
    pub key: String,
    pub meter: Meter,
    /// `None`: counted (spend, in-flight) but never refuses.
    pub limit: Option<u64>,
    /// Added to a bucket's level or a counter's reservation (1 for slots).
    pub cost: u64,
    /// What the limit is, for the refusal and the rate-limit headers; the
    /// stores only hand it back.
    pub what: Option<Limited>,
}

impl Hold {
    /// Whether the answer reports this hold's room (the rate-limit headers
    /// of requests and tokens); the others cost no view.
    pub fn reported(&self) -> bool {
        self.what.and_then(|w| w.reported_unit()).is_some()
    }
}

/// Everything one Admit reserves, all or nothing: every hold is checked
/// (in order: the first failing one is the refusal) and, only if all pass,
/// applied, and `lease` recorded. The stores know no limit kinds: the plan
/// (limits/plan.rs) says which counters a request touches and how.
#[derive(Debug, Clone, PartialEq)]
pub struct ReservePlan {
    pub lease: LeaseRecord,
    pub holds: Vec<Hold>,
    pub now_ms: i64,
}

/// The first hold that refused, and the longest wait among all refusing
/// holds (a bucket's refill, a calendar period's end; 0 for slots).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub hold: usize,
    pub what: Option<Limited>,
    pub wait_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReserveOutcome {
    /// Reserved; per hold, its view after the reservation (limited holds
    /// that are [`Hold::reported`]; `None` for the rest).
    Admitted { views: Vec<Option<BucketView>> },
    /// Nothing changed; views as they stand.
    Refused {
        refusal: Refusal,
        views: Vec<Option<BucketView>>,
    },
}

/// Which side of a calendar counter a settlement moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterField {
    Spent,
    Reserved,
}

/// One counter change when a lease ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Move {
    /// Adds `delta` (negative: a refund) to a bucket, drained at `rate`.
    Bucket { key: String, rate: Rate, delta: i64 },
    /// Adds `delta` to one side of a calendar counter (never below 0).
    Counter {
        key: String,
        field: CounterField,
        delta: i64,
    },
    /// Frees one slot (never below 0).
    Slot { key: String },
}

/// Ends a lease: applies every move, only if the lease still exists, which
/// makes Complete idempotent.
#[derive(Debug, Clone, PartialEq)]
pub struct SettlePlan {
    pub lease_id: String,
    pub now_ms: i64,
    /// Sweeper: only if the lease is still past its expiry (not renewed
    /// meanwhile, possibly through another replica).
    pub only_if_expired: bool,
    pub moves: Vec<Move>,
}

/// What a scope has in flight and has spent in the current periods.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScopeUsage {
    pub in_flight: u64,
    pub spent_day: Nanos,
    pub spent_month: Nanos,
    pub reserved_day: Nanos,
    pub reserved_month: Nanos,
}

/// Settled spend of one scope in one period (ledger replay).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpendTotal {
    pub scope: String,
    pub period: String,
    pub nanos: Nanos,
}

/// One bucket hit of an Envoy RLS request.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketHit {
    pub key: String,
    pub rate: Rate,
    /// Units to add; negative gives them back.
    pub hits: f64,
    /// Shadow-mode rules are evaluated but never refuse.
    pub enforce: bool,
}

/// Result of [`Store::hit`]: `allowed` when every enforced hit fits (then
/// all fitting hits were applied, else none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HitOutcome {
    pub allowed: bool,
    /// Per hit: whether it fits, and the bucket after the call.
    pub results: Vec<(bool, BucketView)>,
}

#[async_trait]
pub trait Store: Send + Sync {
    /// Checks every limit of the plan and, only if all pass, reserves.
    async fn reserve(&self, plan: &ReservePlan) -> Result<ReserveOutcome, StoreError>;

    /// The lease record, with its current expiry.
    async fn lease(&self, lease_id: &str) -> Result<Option<LeaseRecord>, StoreError>;

    /// Applies the plan if the lease exists (see [`SettlePlan`]); `false` when
    /// it did nothing.
    async fn settle(&self, plan: &SettlePlan) -> Result<bool, StoreError>;

    /// Sets the expiry of known leases; returns the unknown ids.
    async fn renew(&self, lease_ids: &[String], expires_ms: i64)
    -> Result<Vec<String>, StoreError>;

    /// Up to `max` leases whose expiry is at or before `now_ms`.
    async fn expired(&self, now_ms: i64, max: usize) -> Result<Vec<String>, StoreError>;

    /// Envoy RLS: all enforced hits fit, or nothing is applied.
    async fn hit(&self, hits: &[BucketHit], now_ms: i64) -> Result<HitOutcome, StoreError>;

    async fn usage(
        &self,
        scopes: &[String],
        day: &str,
        month: &str,
    ) -> Result<Vec<ScopeUsage>, StoreError>;

    /// Adds replayed ledger totals to the settled spend counters.
    async fn restore_spend(&self, totals: &[SpendTotal]) -> Result<(), StoreError>;

    /// Whether spend totals outlive this process (Redis): then the local
    /// ledger is an audit log and is not replayed into the store.
    fn spend_is_shared(&self) -> bool;

    fn name(&self) -> &'static str;
}
