//! Point-in-time view of a queue, for the admin metrics and the benchmark.

use std::time::Duration;

use super::QueueMode;

/// Upper bounds (milliseconds) of the queue-wait histogram buckets.
pub const WAIT_BUCKETS_MS: [u64; 14] = [
    1, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000,
];

/// Queue waits of admitted requests, in fixed buckets so memory stays flat.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WaitHistogram {
    /// `counts[i]` waits were `<= WAIT_BUCKETS_MS[i]` and above the previous
    /// bound; the last element counts waits above every bound.
    pub counts: [u64; WAIT_BUCKETS_MS.len() + 1],
    pub count: u64,
    pub sum: Duration,
    pub max: Duration,
}

impl WaitHistogram {
    pub fn record(&mut self, wait: Duration) {
        let ms = wait.as_millis();
        let bucket = WAIT_BUCKETS_MS
            .iter()
            .position(|&bound| ms <= u128::from(bound))
            .unwrap_or(WAIT_BUCKETS_MS.len());
        self.counts[bucket] += 1;
        self.count += 1;
        self.sum += wait;
        self.max = self.max.max(wait);
    }

    /// Bucket upper bound below which at least `q` (0..=1) of the waits fall;
    /// `None` when nothing was recorded. Waits above the last bound report
    /// the largest wait seen.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.count == 0 {
            return None;
        }
        let target = (q.clamp(0.0, 1.0) * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= target {
                return Some(
                    WAIT_BUCKETS_MS
                        .get(i)
                        .map_or(self.max, |&ms| Duration::from_millis(ms)),
                );
            }
        }
        Some(self.max)
    }
}

/// One tenant's standing in a pool's queue.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantStats {
    pub tenant: String,
    pub weight: f64,
    pub priority: u32,
    /// VTC virtual counter: service charged plus lifts on return from idle.
    pub virtual_counter: f64,
    /// Weighted token service received (w_in·in + w_out·out, divided by the
    /// tenant weight), estimates corrected by settled usage.
    pub service: f64,
    pub queued: u32,
    pub in_flight: u32,
    pub admitted: u64,
    pub rejected_full: u64,
    pub timed_out: u64,
    pub cancelled: u64,
    pub waits: WaitHistogram,
}

impl TenantStats {
    /// Has requests waiting or running.
    pub fn is_active(&self) -> bool {
        self.queued > 0 || self.in_flight > 0
    }
}

/// Snapshot of one pool's queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueStats {
    pub mode: QueueMode,
    pub capacity: u32,
    /// Slots above `capacity` for light tenants.
    pub light_reserve: u32,
    pub in_flight: u32,
    /// Nothing is admitted: marked saturated, or no capacity at all.
    pub saturated: bool,
    pub queued: u32,
    /// Sorted by tenant id.
    pub tenants: Vec<TenantStats>,
}

impl QueueStats {
    pub fn tenant(&self, tenant: &str) -> Option<&TenantStats> {
        self.tenants.iter().find(|t| t.tenant == tenant)
    }

    /// Jain's index over the cumulative normalised service of the tenants
    /// that are active now. For a window, take two snapshots and pass the
    /// per-tenant differences to [`jains_index`].
    pub fn jains_index(&self) -> f64 {
        let service: Vec<f64> = self
            .tenants
            .iter()
            .filter(|t| t.is_active())
            .map(|t| t.service)
            .collect();
        jains_index(&service)
    }
}

/// Jain's fairness index (Σx)² / (n·Σx²): 1 when every share is equal, 1/n
/// when one party gets everything. An empty or all-zero set counts as fair.
pub fn jains_index(shares: &[f64]) -> f64 {
    let sum: f64 = shares.iter().sum();
    let sum_sq: f64 = shares.iter().map(|x| x * x).sum();
    if shares.is_empty() || sum_sq <= 0.0 {
        return 1.0;
    }
    sum * sum / (shares.len() as f64 * sum_sq)
}
