//! The in-memory store: one mutex over all counters, so a reservation across
//! several scopes and limits is checked and applied as one step. Each step
//! is a handful of hash lookups (well under a microsecond), far below what
//! would make the lock a bottleneck for one service.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use super::{
    AdmitOutcome, AdmitPlan, BucketHit, HitOutcome, Refusal, ScopeUsage, SettlePlan, SpendTotal,
    Store, StoreError,
};
use crate::clock::Periods;
use crate::lease::LeaseRecord;
use crate::limits::{Bucket, LimitKind, Nanos, Rate, ScopeViews};

#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Bucket and the rate it was last used with (to prune drained ones).
    buckets: HashMap<String, (Bucket, Rate)>,
    in_flight: HashMap<String, u64>,
    /// (scope, period) → spend.
    spend: HashMap<(String, String), Spend>,
    leases: HashMap<String, LeaseRecord>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Spend {
    settled: Nanos,
    reserved: Nanos,
}

fn rpm_key(scope: &str) -> String {
    format!("{scope}:rpm")
}

fn tpm_key(scope: &str) -> String {
    format!("{scope}:tpm")
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every mutation below is completed before anything can panic
        // (no arithmetic overflow paths, no I/O), so a poisoned lock still
        // guards consistent counters.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn bucket(&self, key: &str) -> Bucket {
        self.buckets.get(key).map(|(b, _)| *b).unwrap_or_default()
    }

    fn add(&mut self, key: String, rate: Rate, delta: f64, now_ms: i64) {
        let entry = self.buckets.entry(key).or_insert((Bucket::default(), rate));
        entry.0.add(rate, delta, now_ms);
        entry.1 = rate;
    }

    fn spend(&self, scope: &str, period: &str) -> Spend {
        self.spend
            .get(&(scope.to_owned(), period.to_owned()))
            .copied()
            .unwrap_or_default()
    }

    fn spend_mut(&mut self, scope: &str, period: &str) -> &mut Spend {
        self.spend
            .entry((scope.to_owned(), period.to_owned()))
            .or_default()
    }

    fn views(&self, plan: &AdmitPlan) -> Vec<ScopeViews> {
        plan.scopes
            .iter()
            .map(|s| ScopeViews {
                requests: s.limits.rpm.map(|l| {
                    self.bucket(&rpm_key(&s.key))
                        .view(Rate::per_minute(l), plan.now_ms)
                }),
                tokens: s.limits.tpm.map(|l| {
                    self.bucket(&tpm_key(&s.key))
                        .view(Rate::per_minute(l), plan.now_ms)
                }),
            })
            .collect()
    }

    /// The refusal, if any, in check order; see [`Refusal`].
    fn check(&self, plan: &AdmitPlan) -> Option<Refusal> {
        let lease = &plan.lease;
        let cost = lease.reserved_nanos;
        let mut first: Option<(LimitKind, usize)> = None;
        let mut wait_ms = 0u64;
        let mut fail = |kind, scope, wait: u64| {
            first.get_or_insert((kind, scope));
            wait_ms = wait_ms.max(wait);
        };
        for (i, s) in plan.scopes.iter().enumerate() {
            for (limit, period, kind) in [
                (s.limits.daily_nanos, &lease.day, LimitKind::DailyBudget),
                (
                    s.limits.monthly_nanos,
                    &lease.month,
                    LimitKind::MonthlyBudget,
                ),
            ] {
                if let Some(limit) = limit {
                    let sp = self.spend(&s.key, period);
                    if sp.settled.saturating_add(sp.reserved).saturating_add(cost) > limit {
                        fail(kind, i, 0);
                    }
                }
            }
        }
        for (i, s) in plan.scopes.iter().enumerate() {
            if let Some(l) = s.limits.rpm
                && let Err(w) =
                    self.bucket(&rpm_key(&s.key))
                        .check(Rate::per_minute(l), 1.0, plan.now_ms)
            {
                fail(LimitKind::Requests, i, w);
            }
        }
        for (i, s) in plan.scopes.iter().enumerate() {
            if let Some(l) = s.limits.tpm
                && let Err(w) = self.bucket(&tpm_key(&s.key)).check(
                    Rate::per_minute(l),
                    lease.reserved_tokens as f64,
                    plan.now_ms,
                )
            {
                fail(LimitKind::Tokens, i, w);
            }
        }
        for (i, s) in plan.scopes.iter().enumerate() {
            if let Some(l) = s.limits.concurrency
                && self.in_flight.get(&s.key).copied().unwrap_or(0) >= l
            {
                fail(LimitKind::Concurrency, i, 0);
            }
        }
        first.map(|(kind, scope)| Refusal {
            kind,
            scope,
            wait_ms,
        })
    }

    fn reserve(&mut self, plan: &AdmitPlan) {
        let lease = &plan.lease;
        for s in &plan.scopes {
            if let Some(l) = s.limits.rpm {
                self.add(rpm_key(&s.key), Rate::per_minute(l), 1.0, plan.now_ms);
            }
            if let Some(l) = s.limits.tpm {
                let tokens = lease.reserved_tokens as f64;
                self.add(tpm_key(&s.key), Rate::per_minute(l), tokens, plan.now_ms);
            }
            if lease.slot {
                *self.in_flight.entry(s.key.clone()).or_default() += 1;
            }
            for period in [&lease.day, &lease.month] {
                let sp = self.spend_mut(&s.key, period);
                sp.reserved = sp.reserved.saturating_add(lease.reserved_nanos);
            }
        }
        self.leases.insert(lease.id.clone(), lease.clone());
    }

    /// Drops drained buckets and spend of past periods: counters for
    /// descriptor values (per-IP limits) would otherwise grow without bound.
    fn prune(&mut self, now_ms: i64) {
        self.buckets
            .retain(|_, (b, rate)| b.level_at(*rate, now_ms) > 0.0);
        let p = Periods::at(now_ms);
        self.spend
            .retain(|(_, period), sp| *period == p.day || *period == p.month || sp.reserved > 0);
        self.in_flight.retain(|_, n| *n > 0);
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn admit(&self, plan: &AdmitPlan) -> Result<AdmitOutcome, StoreError> {
        let mut st = self.lock();
        if let Some(refusal) = st.check(plan) {
            return Ok(AdmitOutcome::Refused {
                refusal,
                views: st.views(plan),
            });
        }
        st.reserve(plan);
        Ok(AdmitOutcome::Admitted {
            views: st.views(plan),
        })
    }

    async fn lease(&self, lease_id: &str) -> Result<Option<LeaseRecord>, StoreError> {
        Ok(self.lock().leases.get(lease_id).cloned())
    }

    async fn settle(&self, plan: &SettlePlan) -> Result<bool, StoreError> {
        let mut st = self.lock();
        match st.leases.get(&plan.lease_id) {
            None => return Ok(false),
            Some(l) if plan.only_if_expired && l.expires_ms > plan.now_ms => return Ok(false),
            Some(_) => {}
        }
        st.leases.remove(&plan.lease_id);
        for s in &plan.scopes {
            if let Some(l) = s.rpm
                && s.requests_delta != 0.0
            {
                st.add(
                    rpm_key(&s.key),
                    Rate::per_minute(l),
                    s.requests_delta,
                    plan.now_ms,
                );
            }
            if let Some(l) = s.tpm
                && s.tokens_delta != 0.0
            {
                st.add(
                    tpm_key(&s.key),
                    Rate::per_minute(l),
                    s.tokens_delta,
                    plan.now_ms,
                );
            }
            if plan.slot
                && let Some(n) = st.in_flight.get_mut(&s.key)
            {
                *n = n.saturating_sub(1);
            }
            for period in [&plan.reserved_day, &plan.reserved_month] {
                let sp = st.spend_mut(&s.key, period);
                sp.reserved = sp.reserved.saturating_sub(plan.reserved_nanos);
            }
            for period in [&plan.charge_day, &plan.charge_month] {
                let sp = st.spend_mut(&s.key, period);
                sp.settled = sp.settled.saturating_add(plan.charge_nanos);
            }
        }
        Ok(true)
    }

    async fn renew(
        &self,
        lease_ids: &[String],
        expires_ms: i64,
    ) -> Result<Vec<String>, StoreError> {
        let mut st = self.lock();
        let mut unknown = Vec::new();
        for id in lease_ids {
            match st.leases.get_mut(id) {
                Some(l) => l.expires_ms = expires_ms,
                None => unknown.push(id.clone()),
            }
        }
        Ok(unknown)
    }

    async fn expired(&self, now_ms: i64, max: usize) -> Result<Vec<String>, StoreError> {
        let mut st = self.lock();
        st.prune(now_ms);
        Ok(st
            .leases
            .values()
            .filter(|l| l.expires_ms <= now_ms)
            .take(max)
            .map(|l| l.id.clone())
            .collect())
    }

    async fn hit(&self, hits: &[BucketHit], now_ms: i64) -> Result<HitOutcome, StoreError> {
        let mut st = self.lock();
        let fits: Vec<bool> = hits
            .iter()
            .map(|h| h.hits <= 0.0 || st.bucket(&h.key).check(h.rate, h.hits, now_ms).is_ok())
            .collect();
        let allowed = hits.iter().zip(&fits).all(|(h, &f)| f || !h.enforce);
        if allowed {
            for (h, &f) in hits.iter().zip(&fits) {
                if f {
                    st.add(h.key.clone(), h.rate, h.hits, now_ms);
                }
            }
        }
        let results = hits
            .iter()
            .zip(fits)
            .map(|(h, f)| (f, st.bucket(&h.key).view(h.rate, now_ms)))
            .collect();
        Ok(HitOutcome { allowed, results })
    }

    async fn usage(
        &self,
        scopes: &[String],
        day: &str,
        month: &str,
    ) -> Result<Vec<ScopeUsage>, StoreError> {
        let st = self.lock();
        Ok(scopes
            .iter()
            .map(|s| {
                let d = st.spend(s, day);
                let m = st.spend(s, month);
                ScopeUsage {
                    in_flight: st.in_flight.get(s).copied().unwrap_or(0),
                    spent_day: d.settled,
                    spent_month: m.settled,
                    reserved_day: d.reserved,
                    reserved_month: m.reserved,
                }
            })
            .collect())
    }

    async fn restore_spend(&self, totals: &[SpendTotal]) -> Result<(), StoreError> {
        let mut st = self.lock();
        for t in totals {
            let sp = st.spend_mut(&t.scope, &t.period);
            sp.settled = sp.settled.saturating_add(t.nanos);
        }
        Ok(())
    }

    fn spend_is_shared(&self) -> bool {
        false
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}
