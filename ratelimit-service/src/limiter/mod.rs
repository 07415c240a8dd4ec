//! The admission core, independent of gRPC: Admit reserves the tenant's
//! limits and then passes the pool gate; Complete settles; Renew extends;
//! the sweeper frees what nobody completes.

mod admit;
mod settle;
mod types;
mod usage;

use std::sync::Arc;
use std::time::Duration;

use crate::audit::AuditTrail;
use crate::breaker::{BreakerConfig, Breakers};
use crate::cached_tokens::{CachedTokensWatch, JUDGE_AFTER};
use crate::lease::HeldPermits;
use crate::ledger::Ledger;
use crate::limits::Throttles;
use crate::metrics::Metrics;
use crate::pool::gate::PoolGate;
use crate::reload::SharedRegistry;
use crate::storage::Store;

pub use types::*;

struct Inner {
    registry: SharedRegistry,
    throttles: Arc<Throttles>,
    store: Arc<dyn Store>,
    ledger: Ledger,
    gate: Arc<dyn PoolGate>,
    permits: HeldPermits,
    metrics: Arc<Metrics>,
    lease_ttl: Duration,
    cached_tokens: CachedTokensWatch,
    breakers: Breakers,
    audit: AuditTrail,
}

/// Where every settled request is written down: the bill and the trail.
pub struct Records {
    pub ledger: Ledger,
    pub audit: AuditTrail,
}

/// The limiter's own settings (the rest it is handed is shared state).
#[derive(Debug, Clone, Copy)]
pub struct LimiterSettings {
    /// How long a lease lives without Renew or Complete.
    pub lease_ttl: Duration,
    pub breaker: BreakerConfig,
}

/// Cheap to clone; one per service.
#[derive(Clone)]
pub struct Limiter {
    inner: Arc<Inner>,
}

impl Limiter {
    pub fn new(
        registry: SharedRegistry,
        throttles: Arc<Throttles>,
        store: Arc<dyn Store>,
        records: Records,
        gate: Arc<dyn PoolGate>,
        metrics: Arc<Metrics>,
        settings: LimiterSettings,
    ) -> Self {
        let Records { ledger, audit } = records;
        Self {
            inner: Arc::new(Inner {
                registry,
                throttles,
                store,
                ledger,
                gate,
                permits: HeldPermits::default(),
                cached_tokens: CachedTokensWatch::new(
                    metrics.pool_cached_tokens_reported.clone(),
                    JUDGE_AFTER,
                ),
                metrics,
                lease_ttl: settings.lease_ttl,
                breakers: Breakers::new(settings.breaker),
                audit,
            }),
        }
    }

    /// The audit trail this limiter writes to.
    pub fn audit(&self) -> &AuditTrail {
        &self.inner.audit
    }

    pub fn registry(&self) -> &SharedRegistry {
        &self.inner.registry
    }

    pub fn throttles(&self) -> &Throttles {
        &self.inner.throttles
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    pub fn lease_ttl(&self) -> Duration {
        self.inner.lease_ttl
    }

    /// Whether each pool's usage reports carry cached prompt tokens.
    pub fn cached_tokens(&self) -> &CachedTokensWatch {
        &self.inner.cached_tokens
    }

    /// The per-tenant circuit breakers of this replica.
    pub fn breakers(&self) -> &Breakers {
        &self.inner.breakers
    }

    /// Leases whose pool permit this replica holds.
    pub fn held_permits(&self) -> usize {
        self.inner.permits.len()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
