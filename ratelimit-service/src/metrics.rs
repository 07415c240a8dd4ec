//! The service's one metrics registry (Prometheus text on the admin port).
//! Other modules register their families into it at start
//! ([`Metrics::registry_mut`]) before it is shared.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabel {
    pub tenant: String,
}

/// Latency by tier as well as by tenant: a dashboard compares tiers' TTFT
/// without knowing which tenant is in which tier.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantTierLabel {
    pub tenant: String,
    pub tier: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabel {
    pub tenant: String,
    pub reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabel {
    pub tenant: String,
    /// `in` (prompt) or `out` (completion).
    pub direction: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeriodLabel {
    pub tenant: String,
    /// `day` or `month`.
    pub period: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RlsLabel {
    pub domain: String,
    pub rule: String,
    /// ok, over_limit, near_limit, shadow_over_limit.
    pub result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    /// `open`, `reserve` or `full`.
    pub phase: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabel {
    pub pool: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolModelLabel {
    pub pool: String,
    /// The model as the pool's replicas name it.
    pub model: String,
}

type HistogramFamily = Family<TenantLabel, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 1 ms .. ~65 s
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

pub struct Metrics {
    registry: Registry,
    pub admitted: Family<TenantLabel, Counter>,
    pub admit_calls: Family<PhaseLabel, Counter>,
    pub admission_streams: Gauge,
    pub admit_stream_messages: Counter,
    pub rejected: Family<RejectLabel, Counter>,
    pub tokens: Family<TokenLabel, Counter>,
    pub spend_usd: Family<TenantLabel, Counter<f64, AtomicU64>>,
    pub budget_used_ratio: Family<PeriodLabel, Gauge<f64, AtomicU64>>,
    pub leases_active: Family<TenantLabel, Gauge>,
    pub leases_expired: Family<TenantLabel, Counter>,
    pub circuit_trips: Family<TenantLabel, Counter>,
    pub circuit_open: Family<TenantLabel, Gauge>,
    pub queue_wait_seconds: HistogramFamily,
    pub ttft_seconds: Family<TenantTierLabel, Histogram, fn() -> Histogram>,
    pub rls_hits: Family<RlsLabel, Counter>,
    pub reloads: Family<ResultLabel, Counter>,
    pub store_errors: Counter,
    pub ledger_errors: Counter,
    pub ledger_pending: Gauge,
    pub audit_records: Family<TenantLabel, Counter>,
    pub audit_errors: Counter,
    pub audit_redactions: Family<KindLabel, Counter>,
    /// Written by [`crate::pool::models::PoolModels`].
    pub pool_max_model_len: Family<PoolModelLabel, Gauge>,
    /// Written by [`crate::cached_tokens::CachedTokensWatch`].
    pub pool_cached_tokens_reported: Family<PoolLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ratelimit");
        let m = Self {
            admitted: Family::default(),
            admit_calls: Family::default(),
            admission_streams: Gauge::default(),
            admit_stream_messages: Counter::default(),
            rejected: Family::default(),
            tokens: Family::default(),
            spend_usd: Family::default(),
            budget_used_ratio: Family::default(),
            leases_active: Family::default(),
            leases_expired: Family::default(),
            circuit_trips: Family::default(),
            circuit_open: Family::default(),
            queue_wait_seconds: Family::new_with_constructor(latency_histogram),
            ttft_seconds: Family::new_with_constructor(latency_histogram),
            rls_hits: Family::default(),
            reloads: Family::default(),
            store_errors: Counter::default(),
            ledger_errors: Counter::default(),
            ledger_pending: Gauge::default(),
            audit_records: Family::default(),
            audit_errors: Counter::default(),
            audit_redactions: Family::default(),
            pool_max_model_len: Family::default(),
            pool_cached_tokens_reported: Family::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register("admitted", "Requests admitted", m.admitted.clone());
        r.register(
            "admit_calls",
            "Admit calls by admission phase: open and reserve (two calls per request), or full (one)",
            m.admit_calls.clone(),
        );
        r.register(
            "admission_streams",
            "AdmitStream streams open: one per Envoy worker that admits by message",
            m.admission_streams.clone(),
        );
        r.register(
            "admit_stream_messages",
            "Admissions asked as messages on an AdmitStream (the rest of admit_calls came as unary Admit calls)",
            m.admit_stream_messages.clone(),
        );
        r.register(
            "rejected",
            "Requests rejected, by reason",
            m.rejected.clone(),
        );
        r.register(
            "tokens",
            "Settled tokens (in = prompt, out = completion)",
            m.tokens.clone(),
        );
        r.register("spend_usd", "Settled spend in USD", m.spend_usd.clone());
        r.register(
            "budget_used_ratio",
            "Settled spend over budget in the current UTC day / month",
            m.budget_used_ratio.clone(),
        );
        r.register(
            "leases_active",
            "Concurrency slots held",
            m.leases_active.clone(),
        );
        r.register(
            "leases_expired",
            "Leases freed by the sweeper (holder vanished)",
            m.leases_expired.clone(),
        );
        r.register(
            "circuit_trips",
            "Times a tenant's circuit breaker opened (its requests kept failing)",
            m.circuit_trips.clone(),
        );
        r.register(
            "circuit_open",
            "1 while a tenant's circuit breaker is open (Admit refuses it at once)",
            m.circuit_open.clone(),
        );
        r.register(
            "queue_wait_seconds",
            "Time Admit waited at the pool gate",
            m.queue_wait_seconds.clone(),
        );
        r.register(
            "ttft_seconds",
            "Time to first token reported by Complete",
            m.ttft_seconds.clone(),
        );
        r.register(
            "rls_hits",
            "Envoy RLS descriptor results",
            m.rls_hits.clone(),
        );
        r.register("reloads", "Registry reloads by result", m.reloads.clone());
        r.register(
            "store_errors",
            "Failed counter-store calls",
            m.store_errors.clone(),
        );
        r.register(
            "ledger_errors",
            "Failed spend-ledger writes",
            m.ledger_errors.clone(),
        );
        r.register(
            "ledger_pending",
            "Charges applied to the counters but not yet synced to the spend ledger",
            m.ledger_pending.clone(),
        );
        r.register(
            "audit_records",
            "Audit-trail records written, per tenant",
            m.audit_records.clone(),
        );
        r.register(
            "audit_errors",
            "Audit-trail records not written or not synced",
            m.audit_errors.clone(),
        );
        r.register(
            "audit_redactions",
            "Matches redacted from logged prompts, per kind",
            m.audit_redactions.clone(),
        );
        r.register(
            "pool_max_model_len",
            "Smallest max_model_len of the pool's replicas serving the model (their /v1/models)",
            m.pool_max_model_len.clone(),
        );
        r.register(
            "pool_cached_tokens_reported",
            "1 when the pool's recent usage reports carry cached prompt tokens, 0 when they stopped (vLLM without --enable-prompt-tokens-details)",
            m.pool_cached_tokens_reported.clone(),
        );
        Self { registry, ..m }
    }

    /// For other modules to add their families at start.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn tenant(tenant: &str) -> TenantLabel {
        TenantLabel {
            tenant: tenant.to_owned(),
        }
    }

    pub fn reject(&self, tenant: &str, reason: &str) {
        self.rejected
            .get_or_create(&RejectLabel {
                tenant: tenant.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn tokens(&self, tenant: &str, prompt: u64, completion: u64) {
        for (direction, n) in [("in", prompt), ("out", completion)] {
            self.tokens
                .get_or_create(&TokenLabel {
                    tenant: tenant.to_owned(),
                    direction: direction.to_owned(),
                })
                .inc_by(n);
        }
    }

    pub fn token_total(&self, tenant: &str, direction: &str) -> u64 {
        self.tokens
            .get_or_create(&TokenLabel {
                tenant: tenant.to_owned(),
                direction: direction.to_owned(),
            })
            .get()
    }
}
