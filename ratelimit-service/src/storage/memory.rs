//! The in-memory store: one mutex over all counters, so a reservation across
//! several scopes and limits is checked and applied as one step. Each step
//! is a handful of hash lookups (well under a microsecond), far below what
//! would make the lock a bottleneck for one service.
//!
//! It knows no limit kinds: it walks the plan's holds and moves
//! (storage/mod.rs), exactly as the Lua scripts of the Redis store do.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use super::{
    BucketHit, CounterField, HitOutcome, Hold, Meter, Move, Refusal, ReserveOutcome, ReservePlan,
    ScopeUsage, SettlePlan, SpendTotal, Store, StoreError,
};
use crate::clock::Periods;
use crate::lease::LeaseRecord;
use crate::limits::{Bucket, BucketView, Rate, Unit, keys};

#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Bucket and the rate it was last used with (to prune drained ones).
    buckets: HashMap<String, (Bucket, Rate)>,
    slots: HashMap<String, u64>,
    counters: HashMap<String, Counter>,
    leases: HashMap<String, LeaseRecord>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counter {
    spent: u64,
    reserved: u64,
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

/// `value + delta`, never below 0.
fn shift(value: u64, delta: i64) -> u64 {
    if delta >= 0 {
        value.saturating_add(delta.unsigned_abs())
    } else {
        value.saturating_sub(delta.unsigned_abs())
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

    fn counter(&self, key: &str) -> Counter {
        self.counters.get(key).copied().unwrap_or_default()
    }

    fn slots(&self, key: &str) -> u64 {
        self.slots.get(key).copied().unwrap_or(0)
    }

    /// Whether the hold's cost fits: `Err(wait_ms)` when it does not.
    fn fits(&self, h: &Hold, limit: u64, now_ms: i64) -> Result<(), u64> {
        match h.meter {
            Meter::Bucket { period_ms } => {
                self.bucket(&h.key)
                    .check(Rate { limit, period_ms }, h.cost as f64, now_ms)
            }
            Meter::Counter { resets_in_ms } => {
                let c = self.counter(&h.key);
                let used = c.spent.saturating_add(c.reserved).saturating_add(h.cost);
                if used > limit {
                    Err(resets_in_ms)
                } else {
                    Ok(())
                }
            }
            Meter::Slots => {
                if self.slots(&h.key) >= limit {
                    Err(0)
                } else {
                    Ok(())
                }
            }
        }
    }

    fn view(&self, h: &Hold, now_ms: i64) -> Option<BucketView> {
        let limit = h.limit.filter(|_| h.reported())?;
        match h.meter {
            Meter::Bucket { period_ms } => {
                Some(self.bucket(&h.key).view(Rate { limit, period_ms }, now_ms))
            }
            Meter::Counter { resets_in_ms } => {
                let c = self.counter(&h.key);
                Some(BucketView {
                    limit,
                    remaining: limit.saturating_sub(c.spent.saturating_add(c.reserved)),
                    reset_ms: resets_in_ms,
                })
            }
            Meter::Slots => None,
        }
    }

    fn views(&self, plan: &ReservePlan) -> Vec<Option<BucketView>> {
        plan.holds
            .iter()
            .map(|h| self.view(h, plan.now_ms))
            .collect()
    }

    /// The refusal, if any; see [`Refusal`].
    fn check(&self, plan: &ReservePlan) -> Option<Refusal> {
        let mut refusal: Option<Refusal> = None;
        for (i, h) in plan.holds.iter().enumerate() {
            let Some(limit) = h.limit else { continue };
            if let Err(wait) = self.fits(h, limit, plan.now_ms) {
                let r = refusal.get_or_insert(Refusal {
                    hold: i,
                    what: h.what,
                    wait_ms: 0,
                });
                r.wait_ms = r.wait_ms.max(wait);
            }
        }
        refusal
    }

    fn reserve(&mut self, plan: &ReservePlan) {
        for h in &plan.holds {
            match h.meter {
                Meter::Bucket { period_ms } => {
                    // A bucket exists only where there is a limit.
                    if let Some(limit) = h.limit {
                        let rate = Rate { limit, period_ms };
                        self.add(h.key.clone(), rate, h.cost as f64, plan.now_ms);
                    }
                }
                Meter::Counter { .. } => {
                    let c = self.counters.entry(h.key.clone()).or_default();
                    c.reserved = c.reserved.saturating_add(h.cost);
                }
                Meter::Slots => {
                    *self.slots.entry(h.key.clone()).or_default() += h.cost;
                }
            }
        }
        self.leases
            .insert(plan.lease.id.clone(), plan.lease.clone());
    }

    fn apply(&mut self, m: &Move, now_ms: i64) {
        match m {
            Move::Bucket { key, rate, delta } => {
                if *delta != 0 {
                    self.add(key.clone(), *rate, *delta as f64, now_ms);
                }
            }
            Move::Counter { key, field, delta } => {
                let c = self.counters.entry(key.clone()).or_default();
                let side = match field {
                    CounterField::Spent => &mut c.spent,
                    CounterField::Reserved => &mut c.reserved,
                };
                *side = shift(*side, *delta);
            }
            Move::Slot { key } => {
                if let Some(n) = self.slots.get_mut(key) {
                    *n = n.saturating_sub(1);
                }
            }
        }
    }

    /// Drops drained buckets and counters of past periods: counters for
    /// descriptor values (per-IP limits) would otherwise grow without bound.
    fn prune(&mut self, now_ms: i64) {
        self.buckets
            .retain(|_, (b, rate)| b.level_at(*rate, now_ms) > 0.0);
        let p = Periods::at(now_ms);
        self.counters.retain(|key, c| {
            let period = keys::counter_period(key);
            period == Some(p.day.as_str()) || period == Some(p.month.as_str()) || c.reserved > 0
        });
        self.slots.retain(|_, n| *n > 0);
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn reserve(&self, plan: &ReservePlan) -> Result<ReserveOutcome, StoreError> {
        let mut st = self.lock();
        if let Some(refusal) = st.check(plan) {
            return Ok(ReserveOutcome::Refused {
                refusal,
                views: st.views(plan),
            });
        }
        st.reserve(plan);
        Ok(ReserveOutcome::Admitted {
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
        for m in &plan.moves {
            st.apply(m, plan.now_ms);
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
                let d = st.counter(&keys::counter(s, Unit::Usd, day));
                let m = st.counter(&keys::counter(s, Unit::Usd, month));
                ScopeUsage {
                    in_flight: st.slots(&keys::slots(s)),
                    spent_day: d.spent,
                    spent_month: m.spent,
                    reserved_day: d.reserved,
                    reserved_month: m.reserved,
                }
            })
            .collect())
    }

    async fn restore_spend(&self, totals: &[SpendTotal]) -> Result<(), StoreError> {
        let mut st = self.lock();
        for t in totals {
            let c = st
                .counters
                .entry(keys::counter(&t.scope, Unit::Usd, &t.period))
                .or_default();
            c.spent = c.spent.saturating_add(t.nanos);
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
