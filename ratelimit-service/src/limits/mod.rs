//! Tenant limits as the store enforces them: what is limited in which scope
//! (tenant, or tenant + model), what a request costs, and why one was refused.

pub mod bucket;
pub mod cost;
pub mod plan;
pub mod throttle;

use serde::{Deserialize, Serialize};
use tenant_registry::Limits;

pub use bucket::{Bucket, BucketView, Rate};
pub use cost::Nanos;
pub use plan::{AdmitInput, Charge, PlanError, Settlement, plan_admission, plan_settlement};
pub use throttle::Throttles;

/// Counter namespace of a tenant.
pub fn tenant_scope(tenant: &str) -> String {
    format!("t/{tenant}")
}

/// Counter namespace of one model of a tenant (`model_limits`, per-model spend).
pub fn model_scope(tenant: &str, model: &str) -> String {
    format!("m/{tenant}/{model}")
}

/// The limits of one scope, compiled from the registry; `None` is unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeLimits {
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub concurrency: Option<u64>,
    pub daily_nanos: Option<Nanos>,
    pub monthly_nanos: Option<Nanos>,
}

impl ScopeLimits {
    /// Registry limits with a live throttle applied: `fraction` (0..=1)
    /// scales RPM, TPM and concurrency; budgets are money and stay as set.
    pub fn compile(limits: &Limits, fraction: f64) -> Self {
        Self {
            rpm: limits.rpm.map(|v| scale(v, fraction)),
            tpm: limits.tpm.map(|v| scale(v, fraction)),
            concurrency: limits
                .max_concurrency
                .map(|v| scale(u64::from(v), fraction)),
            daily_nanos: limits.daily_budget_usd.map(cost::usd_to_nanos),
            monthly_nanos: limits.monthly_budget_usd.map(cost::usd_to_nanos),
        }
    }
}

/// A throttled limit keeps at least 1 unless the fraction is 0: a tenant
/// throttled to 10% of a concurrency of 4 still gets one slot.
fn scale(limit: u64, fraction: f64) -> u64 {
    if fraction >= 1.0 {
        return limit;
    }
    if fraction <= 0.0 || limit == 0 {
        return 0;
    }
    ((limit as f64 * fraction).floor() as u64).max(1)
}

/// Which limit refused a request, in the order the store checks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    DailyBudget,
    MonthlyBudget,
    Requests,
    Tokens,
    Concurrency,
}

/// OpenAI-style rate-limit state of one scope.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScopeViews {
    pub requests: Option<BucketView>,
    pub tokens: Option<BucketView>,
}

/// The views to report: per dimension, the scope with the least room.
pub fn tightest(views: &[ScopeViews]) -> ScopeViews {
    let pick = |get: fn(&ScopeViews) -> Option<BucketView>| {
        views
            .iter()
            .filter_map(get)
            .min_by_key(|v| (v.remaining, std::cmp::Reverse(v.reset_ms)))
    };
    ScopeViews {
        requests: pick(|v| v.requests),
        tokens: pick(|v| v.tokens),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_scales_rates_not_budgets() {
        let limits = Limits {
            rpm: Some(100),
            tpm: Some(1000),
            max_concurrency: Some(4),
            daily_budget_usd: Some(2.5),
            ..Limits::default()
        };
        let s = ScopeLimits::compile(&limits, 0.1);
        assert_eq!(s.rpm, Some(10));
        assert_eq!(s.tpm, Some(100));
        assert_eq!(s.concurrency, Some(1));
        assert_eq!(s.daily_nanos, Some(2_500_000_000));
        assert_eq!(s.monthly_nanos, None);
        assert_eq!(ScopeLimits::compile(&limits, 0.0).rpm, Some(0));
        assert_eq!(ScopeLimits::compile(&limits, 1.0).rpm, Some(100));
    }

    #[test]
    fn tightest_scope_wins_per_dimension() {
        let v = |limit, remaining| BucketView {
            limit,
            remaining,
            reset_ms: 0,
        };
        let views = [
            ScopeViews {
                requests: Some(v(100, 50)),
                tokens: Some(v(1000, 10)),
            },
            ScopeViews {
                requests: Some(v(10, 3)),
                tokens: None,
            },
        ];
        let t = tightest(&views);
        assert_eq!(t.requests, Some(v(10, 3)));
        assert_eq!(t.tokens, Some(v(1000, 10)));
    }
}
