//! Usage summaries for the admin API and the store-backed gauges.

use super::{Limiter, LimiterError, TenantUsage, all_reasons};
use crate::clock::{Periods, now_ms};
use crate::limits::{Per, Unit, cost, tenant_scope};
use crate::metrics::{Metrics, PeriodLabel, RejectLabel};

impl Limiter {
    /// Per-tenant usage (spend from the store, request and token counts
    /// from this replica's metrics).
    pub async fn usage(&self) -> Result<Vec<TenantUsage>, LimiterError> {
        let inner = &*self.inner;
        let registry = inner.registry.current();
        let periods = Periods::at(now_ms());
        let tenants: Vec<_> = registry.tenants().iter().map(|t| t.id.clone()).collect();
        let scopes: Vec<_> = tenants.iter().map(|t| tenant_scope(t)).collect();
        let usage = inner
            .store
            .usage(&scopes, &periods.day, &periods.month)
            .await?;
        let m = &inner.metrics;
        Ok(tenants
            .iter()
            .zip(usage)
            .map(|(tenant, u)| {
                let limits = registry
                    .tenant(tenant)
                    .map(|t| registry.effective_limits(t))
                    .unwrap_or_default();
                let rejected = all_reasons()
                    .map(|r| {
                        m.rejected
                            .get_or_create(&RejectLabel {
                                tenant: tenant.to_string(),
                                reason: r.label().to_owned(),
                            })
                            .get()
                    })
                    .sum();
                TenantUsage {
                    tenant: tenant.to_string(),
                    requests: m.admitted.get_or_create(&Metrics::tenant(tenant)).get(),
                    rejected,
                    tokens_in: m.token_total(tenant, "in"),
                    tokens_out: m.token_total(tenant, "out"),
                    in_flight: u.in_flight,
                    spend_today_usd: cost::nanos_to_usd(u.spent_day),
                    spend_month_usd: cost::nanos_to_usd(u.spent_month),
                    reserved_today_usd: cost::nanos_to_usd(u.reserved_day),
                    daily_budget_usd: limits.limit(Unit::Usd, Per::CalendarDay),
                    monthly_budget_usd: limits.limit(Unit::Usd, Per::CalendarMonth),
                    throttle: inner.throttles.fraction(tenant),
                }
            })
            .collect())
    }

    /// Refreshes the gauges computed from the store (budget ratio, leases
    /// active) just before a scrape.
    pub async fn refresh_gauges(&self) -> Result<(), LimiterError> {
        let m = &self.inner.metrics;
        let now = u64::try_from(crate::clock::now_ms()).unwrap_or(0);
        self.inner.breakers.prune(now);
        let open = self.inner.breakers.open_tenants(now);
        for u in self.usage().await? {
            // Every tenant's breaker series exists (trips at 0, open 0/1),
            // so alerts and dashboards see it before the first trip.
            let label = Metrics::tenant(&u.tenant);
            let _created = m.circuit_trips.get_or_create(&label);
            m.circuit_open
                .get_or_create(&label)
                .set(i64::from(open.contains(&u.tenant)));
            m.leases_active
                .get_or_create(&Metrics::tenant(&u.tenant))
                .set(i64::try_from(u.in_flight).unwrap_or(i64::MAX));
            for (period, spent, budget) in [
                ("day", u.spend_today_usd, u.daily_budget_usd),
                ("month", u.spend_month_usd, u.monthly_budget_usd),
            ] {
                if let Some(b) = budget.filter(|b| *b > 0.0) {
                    m.budget_used_ratio
                        .get_or_create(&PeriodLabel {
                            tenant: u.tenant.clone(),
                            period: period.to_owned(),
                        })
                        .set(spent / b);
                }
            }
        }
        Ok(())
    }
}
