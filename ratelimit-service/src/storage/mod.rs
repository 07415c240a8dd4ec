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
use crate::limits::{BucketView, LimitKind, Nanos, Rate, ScopeLimits, ScopeViews};

pub use memory::MemoryStore;
pub use redis::RedisStore;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("store returned malformed data: {0}")]
    Decode(#[from] serde_json::Error),
}

/// One scope's limits for an Admit.
#[derive(Debug, Clone, PartialEq)]
pub struct ScopePlan {
    pub key: String,
    pub limits: ScopeLimits,
}

/// Everything one Admit reserves, all or nothing: 1 request and
/// `lease.reserved_tokens` in every scope's buckets, `lease.reserved_nanos`
/// against every scope's budgets (day and month), and one concurrency slot
/// per scope, recorded as `lease`. A lease without `slot` (a RESERVE lease)
/// takes no slot; its plan carries no RPM or concurrency limit to check.
#[derive(Debug, Clone, PartialEq)]
pub struct AdmitPlan {
    pub lease: LeaseRecord,
    pub scopes: Vec<ScopePlan>,
    pub now_ms: i64,
}

/// The first limit that refused, by check order (budgets, requests, tokens,
/// concurrency), and the longest bucket wait among all refusing buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub kind: LimitKind,
    pub scope: usize,
    pub wait_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdmitOutcome {
    /// Reserved; views after the reservation, one per scope.
    Admitted { views: Vec<ScopeViews> },
    /// Nothing changed; views as they stand.
    Refused {
        refusal: Refusal,
        views: Vec<ScopeViews>,
    },
}

/// Per-scope counter moves when a lease ends.
#[derive(Debug, Clone, PartialEq)]
pub struct ScopeSettle {
    pub key: String,
    /// Current limits, needed to drain the buckets before adjusting them;
    /// `None` skips the bucket (the scope is no longer limited).
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    /// -1 when the request is refunded, else 0.
    pub requests_delta: f64,
    /// Real tokens minus reserved tokens (negative is a refund).
    pub tokens_delta: f64,
}

/// Ends a lease: frees its slots, moves its budget reservation out of the
/// reservation's periods and `charge_nanos` into the periods of `now`.
/// Applied only if the lease still exists, which makes Complete idempotent.
#[derive(Debug, Clone, PartialEq)]
pub struct SettlePlan {
    pub lease_id: String,
    pub now_ms: i64,
    /// Sweeper: only if the lease is still past its expiry (not renewed
    /// meanwhile, possibly through another replica).
    pub only_if_expired: bool,
    pub scopes: Vec<ScopeSettle>,
    pub reserved_nanos: Nanos,
    pub reserved_day: String,
    pub reserved_month: String,
    pub charge_nanos: Nanos,
    pub charge_day: String,
    pub charge_month: String,
    /// The lease holds a concurrency slot to free (see `LeaseRecord::slot`).
    pub slot: bool,
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
    async fn admit(&self, plan: &AdmitPlan) -> Result<AdmitOutcome, StoreError>;

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
