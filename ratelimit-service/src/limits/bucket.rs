//! Rate buckets for RPM, TPM and Envoy RLS descriptors.
//!
//! Algorithm: GCRA (the generic cell rate algorithm), kept in its
//! leaky-bucket form: the state is the amount used (`level`, in requests or
//! tokens) and when it was last updated; the level drains continuously at
//! `limit / period`. A cost `n` fits when `level + n <= limit`.
//!
//! Why GCRA and not a window counter: a fixed window lets a client spend the
//! whole limit just before the boundary and again just after (2x in a
//! moment); a sliding-window counter approximates its way out of that.
//! GCRA has no boundary at all: after a full burst, room comes back at the
//! sustained rate only, so any interval of length `d` admits at most
//! `limit + limit * d / period`. It needs one number pair per bucket (cheap
//! in memory and in one Redis hash), and refunds and extra charges are a
//! signed change of `level`. The level form (rather than a theoretical
//! arrival time) keeps "how much is used" when a reload or a throttle
//! changes the limit.
//!
//! The same arithmetic runs in Lua for the Redis store
//! (`storage/redis/*.lua`); both use IEEE doubles in the same order, so the
//! two stores agree to the bit.

/// A bucket's state: `level` units used as of `updated_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Bucket {
    pub level: f64,
    pub updated_ms: i64,
}

/// A rate limit: `limit` units per `period_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub limit: u64,
    pub period_ms: u64,
}

/// What a client may be told about a bucket (OpenAI's x-ratelimit-* triple).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketView {
    pub limit: u64,
    /// Whole units that fit now; never below 0.
    pub remaining: u64,
    /// Until the bucket is empty again.
    pub reset_ms: u64,
}

impl Rate {
    pub fn per_minute(limit: u64) -> Self {
        Self {
            limit,
            period_ms: 60_000,
        }
    }

    /// Units drained in `elapsed_ms`.
    fn drained(&self, elapsed_ms: f64) -> f64 {
        elapsed_ms * self.limit as f64 / self.period_ms.max(1) as f64
    }

    /// Milliseconds needed to drain `units` (limit > 0).
    fn time_for(&self, units: f64) -> u64 {
        (units * self.period_ms as f64 / self.limit as f64).ceil() as u64
    }
}

impl Bucket {
    /// Level after draining until `now_ms` (clock going backwards drains nothing).
    pub fn level_at(&self, rate: Rate, now_ms: i64) -> f64 {
        let elapsed = (now_ms - self.updated_ms).max(0) as f64;
        (self.level - rate.drained(elapsed)).max(0.0)
    }

    /// Whether `cost` fits now; `Err(wait_ms)` says when it would.
    pub fn check(&self, rate: Rate, cost: f64, now_ms: i64) -> Result<(), u64> {
        let level = self.level_at(rate, now_ms);
        let over = level + cost - rate.limit as f64;
        if over <= 0.0 {
            Ok(())
        } else if rate.limit == 0 {
            Err(rate.period_ms)
        } else {
            Err(rate.time_for(over))
        }
    }

    /// Adds `delta` (negative for a refund) after draining; never below 0.
    /// An extra charge may push the level above the limit: the tenant is
    /// then in debt and waits it off.
    pub fn add(&mut self, rate: Rate, delta: f64, now_ms: i64) {
        let level = self.level_at(rate, now_ms);
        self.level = (level + delta).max(0.0);
        self.updated_ms = self.updated_ms.max(now_ms);
    }

    pub fn view(&self, rate: Rate, now_ms: i64) -> BucketView {
        let level = self.level_at(rate, now_ms);
        let remaining = (rate.limit as f64 - level).floor().max(0.0) as u64;
        let reset_ms = if rate.limit == 0 || level <= 0.0 {
            0
        } else {
            rate.time_for(level)
        };
        BucketView {
            limit: rate.limit,
            remaining,
            reset_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Bucket, Rate};

    fn take(b: &mut Bucket, rate: Rate, cost: f64, now: i64) -> bool {
        if b.check(rate, cost, now).is_ok() {
            b.add(rate, cost, now);
            true
        } else {
            false
        }
    }

    #[test]
    fn full_burst_then_sustained_rate() {
        let rate = Rate::per_minute(60);
        let mut b = Bucket::default();
        let admitted = (0..100).filter(|_| take(&mut b, rate, 1.0, 0)).count();
        assert_eq!(admitted, 60);
        assert_eq!(b.check(rate, 1.0, 0), Err(1000));
        assert!(!take(&mut b, rate, 1.0, 999));
        assert!(take(&mut b, rate, 1.0, 1000));
    }

    #[test]
    fn window_boundary_burst_cannot_pass_twice_the_limit() {
        // A fixed one-minute window would admit 100 at 59.9 s and 100 more at
        // 60.1 s. GCRA admits the first burst and then only what drained.
        let rate = Rate::per_minute(100);
        let mut b = Bucket::default();
        let first = (0..100).filter(|_| take(&mut b, rate, 1.0, 59_900)).count();
        let second = (0..100).filter(|_| take(&mut b, rate, 1.0, 60_100)).count();
        assert_eq!(first, 100);
        // 200 ms of refill at 100/min is 0.33 of a request.
        assert_eq!(second, 0);
        // Over any interval the total stays under limit + refill.
        let mut total = 0;
        let mut b = Bucket::default();
        for t in (0..120_000).step_by(50) {
            total += (0..10).filter(|_| take(&mut b, rate, 1.0, t)).count();
        }
        assert!(total <= 100 + 200, "{total} admitted in two minutes");
        assert!(total >= 299, "sustained rate must still be served: {total}");
    }

    #[test]
    fn refunds_and_debt() {
        let rate = Rate::per_minute(1000);
        let mut b = Bucket::default();
        assert!(take(&mut b, rate, 800.0, 0));
        b.add(rate, -600.0, 0);
        assert_eq!(b.view(rate, 0).remaining, 800);
        // Real usage above the reservation: the level goes past the limit.
        b.add(rate, 1_000.0, 0);
        let v = b.view(rate, 0);
        assert_eq!(v.remaining, 0, "remaining never wraps below zero");
        assert_eq!(v.reset_ms, 72_000);
        assert!(!take(&mut b, rate, 1.0, 12_000));
        assert!(take(&mut b, rate, 1.0, 12_060));
        // A refund never takes the level below empty.
        b.add(rate, -1e9, 12_060);
        assert_eq!(b.view(rate, 12_060).remaining, 1000);
    }

    #[test]
    fn zero_limit_refuses_everything() {
        let rate = Rate::per_minute(0);
        let b = Bucket::default();
        assert_eq!(b.check(rate, 1.0, 0), Err(60_000));
        assert_eq!(b.view(rate, 0).remaining, 0);
    }
}
