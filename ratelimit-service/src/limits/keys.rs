//! The one place counter names are made. Both stores use these names as
//! they are (Redis behind its `llmgw:` prefix), so a counter is the same
//! counter on every backend and across upgrades.
//!
//! - `b:<scope>:<window>` a rate bucket {level, updated} (`rpm` and `tpm`
//!   for the minute, the names before limits became data);
//! - `b:rls/<domain>/<entries>` an Envoy RLS descriptor's bucket;
//! - `s:<scope>:<period>` spend in nano-dollars {spent, resv};
//!   `s:<scope>:<unit>:<period>` a calendar quota of requests or tokens;
//! - `c:<scope>` requests in flight;
//! - `l:<lease>` a lease record, `leases` the lease ids by expiry.

use tenant_registry::{Per, Unit};

/// Counter namespace of a tenant.
pub fn tenant_scope(tenant: &str) -> String {
    format!("t/{tenant}")
}

/// Counter namespace of one model of a tenant (`model_limits`, per-model spend).
pub fn model_scope(tenant: &str, model: &str) -> String {
    format!("m/{tenant}/{model}")
}

/// The rate bucket of a rolling window.
pub fn bucket(scope: &str, unit: Unit, per: Per) -> String {
    match (unit, per) {
        (Unit::Requests, Per::Minute) => format!("b:{scope}:rpm"),
        (Unit::Tokens, Per::Minute) => format!("b:{scope}:tpm"),
        _ => format!("b:{scope}:{}/{}", unit.name(), per.name()),
    }
}

/// The bucket of an Envoy RLS descriptor (its entries as JSON).
pub fn rls_bucket(domain: &str, entries_json: &str) -> String {
    format!("b:rls/{domain}/{entries_json}")
}

/// The calendar counter of one unit in one period (`d2025-01-31`, `m2025-01`).
pub fn counter(scope: &str, unit: Unit, period: &str) -> String {
    match unit {
        Unit::Usd => format!("s:{scope}:{period}"),
        _ => format!("s:{scope}:{}:{period}", unit.name()),
    }
}

/// The period a calendar counter counts (`d2025-01-31` of
/// `s:t/a:d2025-01-31`), to drop counters of past periods.
pub fn counter_period(key: &str) -> Option<&str> {
    key.strip_prefix("s:")?.rsplit(':').next()
}

/// Requests in flight in a scope.
pub fn slots(scope: &str) -> String {
    format!("c:{scope}")
}

pub fn lease(id: &str) -> String {
    format!("l:{id}")
}

/// Lease ids by expiry.
pub const LEASES: &str = "leases";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_kept_from_before_limits_were_data() {
        // Counters already in a Redis keep counting across the upgrade.
        assert_eq!(bucket("t/a", Unit::Requests, Per::Minute), "b:t/a:rpm");
        assert_eq!(bucket("t/a", Unit::Tokens, Per::Minute), "b:t/a:tpm");
        assert_eq!(
            counter("t/a", Unit::Usd, "d2025-01-31"),
            "s:t/a:d2025-01-31"
        );
        assert_eq!(slots("m/a/x"), "c:m/a/x");
        assert_eq!(counter_period("s:t/a:tokens:m2025-01"), Some("m2025-01"));
        // New windows never collide with them.
        assert_eq!(
            bucket("t/a", Unit::Requests, Per::Day),
            "b:t/a:requests/day"
        );
        assert_eq!(
            counter("t/a", Unit::Tokens, "m2025-01"),
            "s:t/a:tokens:m2025-01"
        );
    }
}
