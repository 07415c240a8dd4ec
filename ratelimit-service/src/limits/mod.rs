//! Tenant limits as the store enforces them: what is limited in which scope
//! (tenant, or tenant + model), what a request costs, and why one was refused.

pub mod bucket;
pub mod cost;
pub mod keys;
pub mod plan;
pub mod throttle;

use serde::{Deserialize, Serialize};
use tenant_registry::Limits;
pub use tenant_registry::{Per, Unit};

pub use bucket::{Bucket, BucketView, Rate};
pub use cost::Nanos;
pub use keys::{model_scope, tenant_scope};
pub use plan::{
    AdmitInput, Charge, PlanError, ScopeKind, ScopePlan, Settlement, plan_admission,
    plan_settlement,
};
pub use throttle::Throttles;

/// One limit of a scope: at most `max` of `unit` per `per` (USD in
/// nano-dollars).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit {
    pub unit: Unit,
    pub per: Per,
    pub max: u64,
}

/// The limits of one scope, compiled from the registry; an absent window is
/// unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeLimits {
    pub windows: Vec<Limit>,
    pub concurrency: Option<u64>,
}

impl ScopeLimits {
    /// Registry limits with a live throttle applied: `fraction` (0..=1)
    /// scales request and token limits and concurrency; money stays as set.
    pub fn compile(limits: &Limits, fraction: f64) -> Self {
        let windows = limits
            .windows()
            .map(|(unit, per, amount)| Limit {
                unit,
                per,
                max: match unit {
                    Unit::Usd => cost::usd_to_nanos(amount),
                    Unit::Requests | Unit::Tokens => scale(amount as u64, fraction),
                },
            })
            .collect();
        Self {
            windows,
            concurrency: limits
                .max_concurrency
                .map(|v| scale(u64::from(v), fraction)),
        }
    }

    /// The limit of one unit over one window.
    pub fn get(&self, unit: Unit, per: Per) -> Option<u64> {
        self.windows
            .iter()
            .find(|l| l.unit == unit && l.per == per)
            .map(|l| l.max)
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

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKind {
    Window { unit: Unit, per: Per },
    Concurrency,
}

/// OpenAI-style rate-limit state of one scope.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScopeViews {
    pub requests: Option<BucketView>,
    pub tokens: Option<BucketView>,
}

/// The views to report: per unit, the limit with the least room (then the
/// longest reset), whatever its scope and window.
pub fn tightest(views: impl IntoIterator<Item = (Unit, BucketView)>) -> ScopeViews {
    let mut out = ScopeViews::default();
    for (unit, view) in views {
        let slot = match unit {
            Unit::Requests => &mut out.requests,
            Unit::Tokens => &mut out.tokens,
            Unit::Usd => continue,
        };
        let key = |v: &BucketView| (v.remaining, std::cmp::Reverse(v.reset_ms));
        if slot.is_none_or(|cur| key(&view) < key(&cur)) {
            *slot = Some(view);
        }
    }
    out
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
        assert_eq!(s.get(Unit::Requests, Per::Minute), Some(10));
        assert_eq!(s.get(Unit::Tokens, Per::Minute), Some(100));
        assert_eq!(s.concurrency, Some(1));
        assert_eq!(s.get(Unit::Usd, Per::CalendarDay), Some(2_500_000_000));
        assert_eq!(s.get(Unit::Usd, Per::CalendarMonth), None);
        let rpm = |f| ScopeLimits::compile(&limits, f).get(Unit::Requests, Per::Minute);
        assert_eq!(rpm(0.0), Some(0));
        assert_eq!(rpm(1.0), Some(100));
    }

    #[test]
    fn tightest_limit_wins_per_unit() {
        let v = |limit, remaining, reset_ms| BucketView {
            limit,
            remaining,
            reset_ms,
        };
        let t = tightest([
            (Unit::Requests, v(100, 50, 0)),
            (Unit::Tokens, v(1000, 10, 0)),
            (Unit::Requests, v(10, 3, 0)),
            (Unit::Usd, v(1, 0, 0)),
            // Same room, longer reset: the one to report.
            (Unit::Tokens, v(5000, 10, 9000)),
        ]);
        assert_eq!(t.requests, Some(v(10, 3, 0)));
        assert_eq!(t.tokens, Some(v(5000, 10, 9000)));
    }
}
