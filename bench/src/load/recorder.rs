//! Latency histogram and outcome counts of one measured phase.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::{Outcome, Record};

/// Longest latency the histogram tracks exactly; longer ones are clamped to it.
const MAX_TRACKED_US: u64 = 120_000_000;

/// Collects what a phase (or several merged rounds of it) measured.
#[derive(Debug, Clone)]
pub struct PhaseRecorder {
    /// Latency of successful requests, in microseconds.
    latency_us: Histogram<u64>,
    /// Failed requests by outcome label.
    errors: BTreeMap<String, u64>,
    ok: u64,
    elapsed: Duration,
}

impl Default for PhaseRecorder {
    fn default() -> Self {
        Self::new()
    }
}

impl PhaseRecorder {
    pub fn new() -> Self {
        let latency_us = Histogram::new_with_bounds(1, MAX_TRACKED_US, 3)
            .unwrap_or_else(|_| unreachable!("constant histogram bounds are valid"));
        Self {
            latency_us,
            errors: BTreeMap::new(),
            ok: 0,
            elapsed: Duration::ZERO,
        }
    }

    /// Only successes enter the histogram: a fast 401 must not pass for a
    /// fast gateway. Failures are counted by outcome instead.
    pub fn record(&mut self, latency: Duration, outcome: Outcome) {
        if outcome.is_success() {
            self.ok += 1;
            let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
            self.latency_us
                .saturating_record(us.clamp(1, MAX_TRACKED_US));
        } else {
            *self.errors.entry(outcome.label()).or_default() += 1;
        }
    }

    /// Wall-clock time the phase ran, the denominator of its throughput.
    pub fn set_elapsed(&mut self, elapsed: Duration) {
        self.elapsed = elapsed;
    }

    /// Adds another phase's requests and time, e.g. the next round of the same load.
    pub fn merge(&mut self, other: &PhaseRecorder) {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.latency_us.add(&other.latency_us);
        for (label, count) in &other.errors {
            *self.errors.entry(label.clone()).or_default() += count;
        }
        self.ok += other.ok;
        self.elapsed += other.elapsed;
    }

    pub fn summary(&self) -> PhaseSummary {
        let seconds = self.elapsed.as_secs_f64();
        PhaseSummary {
            requests: self.ok + self.errors.values().sum::<u64>(),
            ok: self.ok,
            errors: self.errors.clone(),
            elapsed_s: seconds,
            throughput_rps: if seconds > 0.0 {
                self.ok as f64 / seconds
            } else {
                0.0
            },
            latency_ms: LatencySummary::of(&self.latency_us),
        }
    }
}

/// What the reports print for one phase.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseSummary {
    pub requests: u64,
    pub ok: u64,
    /// Non-2xx statuses and transport failures, by label (`429`, `timeout`).
    pub errors: BTreeMap<String, u64>,
    pub elapsed_s: f64,
    /// Successful responses per second.
    pub throughput_rps: f64,
    pub latency_ms: LatencySummary,
}

impl PhaseSummary {
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct LatencySummary {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl LatencySummary {
    fn of(histogram: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        if histogram.is_empty() {
            return Self {
                p50: f64::NAN,
                p90: f64::NAN,
                p99: f64::NAN,
                max: f64::NAN,
                mean: f64::NAN,
            };
        }
        Self {
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            max: ms(histogram.max()),
            mean: histogram.mean() / 1000.0,
        }
    }
}

impl Record for PhaseRecorder {
    type Sample = Outcome;

    fn empty() -> Self {
        Self::new()
    }

    fn record(&mut self, latency: Duration, outcome: Outcome) {
        PhaseRecorder::record(self, latency, outcome);
    }

    fn merge(&mut self, other: &Self) {
        PhaseRecorder::merge(self, other);
    }

    fn set_elapsed(&mut self, elapsed: Duration) {
        PhaseRecorder::set_elapsed(self, elapsed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_successes_and_errors_are_counted_apart() {
        let mut recorder = PhaseRecorder::new();
        for ms in 1..=100 {
            recorder.record(Duration::from_millis(ms), Outcome::Status(200));
        }
        recorder.record(Duration::from_secs(9), Outcome::Status(401));
        recorder.record(Duration::from_secs(9), Outcome::Timeout);
        recorder.set_elapsed(Duration::from_secs(2));
        let summary = recorder.summary();
        assert_eq!(summary.requests, 102);
        assert_eq!(summary.ok, 100);
        assert_eq!(summary.error_count(), 2);
        assert_eq!(summary.errors.get("401"), Some(&1));
        assert_eq!(summary.errors.get("timeout"), Some(&1));
        assert!(
            (summary.latency_ms.p50 - 50.0).abs() < 0.1,
            "{:?}",
            summary.latency_ms
        );
        assert!(
            (summary.latency_ms.p99 - 99.0).abs() < 0.1,
            "{:?}",
            summary.latency_ms
        );
        assert!(
            (summary.latency_ms.max - 100.0).abs() < 0.1,
            "{:?}",
            summary.latency_ms
        );
        assert!((summary.throughput_rps - 50.0).abs() < 1e-9);
    }

    #[test]
    fn merging_rounds_adds_requests_and_time() {
        let mut first = PhaseRecorder::new();
        first.record(Duration::from_millis(10), Outcome::Status(200));
        first.set_elapsed(Duration::from_secs(1));
        let mut second = PhaseRecorder::new();
        second.record(Duration::from_millis(30), Outcome::Status(200));
        second.record(Duration::from_millis(30), Outcome::Status(503));
        second.set_elapsed(Duration::from_secs(1));
        first.merge(&second);
        let summary = first.summary();
        assert_eq!(summary.ok, 2);
        assert_eq!(summary.errors.get("503"), Some(&1));
        assert!((summary.throughput_rps - 1.0).abs() < 1e-9);
        assert!((summary.latency_ms.max - 30.0).abs() < 0.1);
    }
}
