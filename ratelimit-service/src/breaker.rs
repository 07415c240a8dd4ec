//! Per-tenant circuit breaker: a tenant whose requests keep failing (a
//! client retrying a 429 at once, timing out and retrying, or sending what
//! the pool refuses) is refused at Admit for a cool-down without touching
//! the store, the queue or the pool, and without touching other tenants.
//!
//! What counts, per tenant, in a sliding window of one-second buckets:
//! - failures: Admit refusals the tenant caused (its rate, token, concurrency
//!   and budget limits, its queue full, a request too large), and requests
//!   that ended cancelled by the client or refused by the pool (4xx);
//! - successes: requests that completed.
//!
//! Pool trouble (5xx, queue timeouts) counts as neither: it is not the
//! tenant's doing, and a pool outage must not open every tenant's breaker.
//! The breaker opens when, within the window, failures reach
//! `min_failures` and make up at least `failure_ratio` of the outcomes; it
//! closes after `cooldown`, with an empty window (the tenant needs
//! `min_failures` new failures to open it again).
//!
//! State is per replica: with N replicas each sees about 1/N of a tenant's
//! traffic, so `min_failures` is per replica too. Pure logic, time passed
//! in: the limiter is the thin shell that calls it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Longest window the ring holds.
pub const MAX_WINDOW_S: u64 = 300;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    pub window: Duration,
    /// 0 turns the breaker off.
    pub min_failures: u32,
    /// Share of failures among the window's outcomes, in (0, 1].
    pub failure_ratio: f64,
    pub cooldown: Duration,
}

impl BreakerConfig {
    pub fn enabled(&self) -> bool {
        self.min_failures > 0
    }
}

/// What happened to one of a tenant's requests, as far as the breaker cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Failure,
    Success,
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    second: u64,
    failures: u32,
    successes: u32,
}

#[derive(Debug, Default)]
struct TenantState {
    buckets: Vec<Bucket>,
    /// Open until this instant (ms on the caller's clock).
    open_until_ms: Option<u64>,
}

impl TenantState {
    fn totals(&self, now_s: u64, window_s: u64) -> (u64, u64) {
        self.buckets
            .iter()
            .filter(|b| b.second + window_s > now_s && b.second <= now_s)
            .fold((0, 0), |(f, s), b| {
                (f + u64::from(b.failures), s + u64::from(b.successes))
            })
    }
}

/// The breakers of every tenant this replica has seen fail or succeed.
#[derive(Debug)]
pub struct Breakers {
    config: BreakerConfig,
    tenants: Mutex<HashMap<String, TenantState>>,
}

/// A tenant whose breaker just opened, or is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Open {
    pub retry_after_ms: u64,
}

impl Breakers {
    pub fn new(config: BreakerConfig) -> Self {
        let window_s = config.window.as_secs().clamp(1, MAX_WINDOW_S);
        Self {
            config: BreakerConfig {
                window: Duration::from_secs(window_s),
                ..config
            },
            tenants: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, TenantState>> {
        // The map stays consistent if a holder panicked: each update is a
        // few integer writes.
        self.tenants.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `tenant`'s breaker is open at `now_ms`; closes it (with an
    /// empty window) once the cool-down is over.
    pub fn check(&self, tenant: &str, now_ms: u64) -> Option<Open> {
        if !self.config.enabled() {
            return None;
        }
        let mut tenants = self.lock();
        let state = tenants.get_mut(tenant)?;
        match state.open_until_ms {
            Some(until) if until > now_ms => Some(Open {
                retry_after_ms: until - now_ms,
            }),
            Some(_) => {
                state.open_until_ms = None;
                state.buckets.clear();
                None
            }
            None => None,
        }
    }

    /// Counts one outcome; returns `Some` when this failure opened the breaker.
    pub fn record(&self, tenant: &str, signal: Signal, now_ms: u64) -> Option<Open> {
        if !self.config.enabled() {
            return None;
        }
        let window_s = self.config.window.as_secs();
        let now_s = now_ms / 1000;
        let mut tenants = self.lock();
        if signal == Signal::Success && !tenants.contains_key(tenant) {
            // A tenant that never failed needs no state: the common case
            // stays allocation-free.
            return None;
        }
        let state = tenants.entry(tenant.to_owned()).or_default();
        if state.open_until_ms.is_some_and(|u| u > now_ms) {
            // Outcomes of requests admitted before it opened change nothing.
            return None;
        }
        let slot = usize::try_from(now_s % window_s).unwrap_or(0);
        if state.buckets.len() != window_s as usize {
            state.buckets = vec![Bucket::default(); window_s as usize];
        }
        let bucket = &mut state.buckets[slot];
        if bucket.second != now_s {
            *bucket = Bucket {
                second: now_s,
                ..Bucket::default()
            };
        }
        match signal {
            Signal::Failure => bucket.failures = bucket.failures.saturating_add(1),
            Signal::Success => bucket.successes = bucket.successes.saturating_add(1),
        }
        if signal == Signal::Success {
            return None;
        }
        let (failures, successes) = state.totals(now_s, window_s);
        let ratio = failures as f64 / (failures + successes) as f64;
        if failures >= u64::from(self.config.min_failures) && ratio >= self.config.failure_ratio {
            let cooldown = u64::try_from(self.config.cooldown.as_millis()).unwrap_or(u64::MAX);
            state.open_until_ms = Some(now_ms.saturating_add(cooldown));
            return Some(Open {
                retry_after_ms: cooldown,
            });
        }
        None
    }

    /// Tenants whose breaker is open at `now_ms` (for the gauge).
    pub fn open_tenants(&self, now_ms: u64) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, s)| s.open_until_ms.is_some_and(|u| u > now_ms))
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// Drops tenants with nothing in the window and a closed breaker, so
    /// the map holds only tenants failing lately.
    pub fn prune(&self, now_ms: u64) {
        let window_s = self.config.window.as_secs();
        let now_s = now_ms / 1000;
        self.lock().retain(|_, s| {
            s.open_until_ms.is_some_and(|u| u > now_ms) || s.totals(now_s, window_s) != (0, 0)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breakers(min_failures: u32) -> Breakers {
        Breakers::new(BreakerConfig {
            window: Duration::from_secs(10),
            min_failures,
            failure_ratio: 0.8,
            cooldown: Duration::from_secs(30),
        })
    }

    const T0: u64 = 1_000_000;

    #[test]
    fn opens_on_a_failure_storm_for_the_cooldown_then_closes_clean() {
        let b = breakers(5);
        for i in 0..4 {
            assert_eq!(b.record("loop", Signal::Failure, T0 + i * 100), None);
        }
        assert_eq!(b.check("loop", T0 + 450), None);
        let opened = b.record("loop", Signal::Failure, T0 + 500);
        assert_eq!(
            opened,
            Some(Open {
                retry_after_ms: 30_000
            })
        );
        assert_eq!(
            b.check("loop", T0 + 10_500),
            Some(Open {
                retry_after_ms: 20_000
            })
        );
        // Another tenant is untouched.
        assert_eq!(b.check("calm", T0 + 10_500), None);
        assert_eq!(b.open_tenants(T0 + 10_500), ["loop"]);
        // Closed after the cool-down, with an empty window: one more failure
        // does not reopen it.
        assert_eq!(b.check("loop", T0 + 30_500), None);
        assert_eq!(b.record("loop", Signal::Failure, T0 + 30_600), None);
        assert!(b.open_tenants(T0 + 30_600).is_empty());
    }

    #[test]
    fn a_busy_tenant_with_some_failures_stays_closed() {
        let b = breakers(5);
        // 10 failures among 40 outcomes within the window: 25 % < 80 %.
        for i in 0..40 {
            let signal = if i % 4 == 0 {
                Signal::Failure
            } else {
                Signal::Success
            };
            assert_eq!(b.record("busy", signal, T0 + i * 50), None);
        }
    }

    #[test]
    fn failures_older_than_the_window_are_forgotten() {
        let b = breakers(5);
        for i in 0..4 {
            b.record("slow", Signal::Failure, T0 + i * 1000);
        }
        // 4 in the window [T0, T0+10s); the 5th comes 11 s after the first:
        // only 4 within any 10 s.
        assert_eq!(b.record("slow", Signal::Failure, T0 + 11_000), None);
        b.prune(T0 + 60_000);
        assert!(b.lock().is_empty(), "idle tenants are dropped");
    }

    #[test]
    fn off_by_default_and_cheap_for_tenants_that_never_fail() {
        let off = breakers(0);
        for i in 0..100 {
            assert_eq!(off.record("x", Signal::Failure, T0 + i), None);
        }
        assert_eq!(off.check("x", T0 + 100), None);
        let on = breakers(5);
        on.record("fine", Signal::Success, T0);
        assert!(on.lock().is_empty());
    }
}
