//! CPU time per request, by process: where a chain's cost goes.
//!
//! Throughput on a shared machine says that a side is slower, not which
//! process pays: Envoy and its VMs, ratelimit-service, the mock pools and
//! the load generator all run on the same cores. Each saturation phase
//! samples every process's user + system time before and after, so the
//! report can say how many microseconds of CPU a request cost in each.

use std::time::Duration;

use serde::Serialize;
use testbed::Testbed;
use testbed::process::own_cpu_time;

/// The load generator's row: this process.
const LOAD_GENERATOR: &str = "load generator";

/// CPU times of a testbed's processes and of this one at one instant.
#[derive(Debug)]
pub struct CpuSample(Vec<(&'static str, Duration)>);

impl CpuSample {
    pub fn take(testbed: &Testbed) -> Self {
        let mut parts = testbed.cpu_times();
        parts.push((LOAD_GENERATOR, own_cpu_time().unwrap_or_default()));
        Self(parts)
    }

    /// CPU each process used between `earlier` and this sample.
    fn since(&self, earlier: &Self) -> impl Iterator<Item = (&'static str, Duration)> {
        self.0.iter().map(|&(part, now)| {
            let before = earlier
                .0
                .iter()
                .find(|(p, _)| *p == part)
                .map_or(Duration::ZERO, |(_, d)| *d);
            (part, now.saturating_sub(before))
        })
    }
}

/// CPU used across a phase's rounds, per process.
#[derive(Debug, Default)]
pub struct CpuTally(Vec<(&'static str, Duration)>);

impl CpuTally {
    pub fn add(&mut self, before: &CpuSample, after: &CpuSample) {
        for (part, used) in after.since(before) {
            match self.0.iter_mut().find(|(p, _)| *p == part) {
                Some((_, total)) => *total += used,
                None => self.0.push((part, used)),
            }
        }
    }

    /// Per process, and per request over the `requests` the phase served.
    pub fn per_request(&self, requests: u64) -> Vec<CpuShare> {
        let per = |d: Duration| {
            if requests == 0 {
                0.0
            } else {
                d.as_secs_f64() * 1e6 / requests as f64
            }
        };
        self.0
            .iter()
            .map(|&(part, used)| CpuShare {
                process: part.to_owned(),
                seconds: used.as_secs_f64(),
                per_request_us: per(used),
            })
            .collect()
    }
}

/// One process's CPU over a phase.
#[derive(Debug, Clone, Serialize)]
pub struct CpuShare {
    pub process: String,
    /// User + system seconds over all rounds of the phase.
    pub seconds: f64,
    /// Microseconds of CPU per successful request.
    pub per_request_us: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(parts: &[(&'static str, u64)]) -> CpuSample {
        CpuSample(
            parts
                .iter()
                .map(|&(p, ms)| (p, Duration::from_millis(ms)))
                .collect(),
        )
    }

    #[test]
    fn rounds_add_up_per_process_and_divide_by_requests() {
        let mut tally = CpuTally::default();
        tally.add(
            &sample(&[("envoy", 100), ("mock vLLM", 50)]),
            &sample(&[("envoy", 400), ("mock vLLM", 150)]),
        );
        tally.add(
            &sample(&[("envoy", 1000), ("mock vLLM", 150)]),
            &sample(&[("envoy", 1100), ("mock vLLM", 250)]),
        );
        let shares = tally.per_request(1000);
        let envoy = &shares[0];
        assert_eq!(envoy.process, "envoy");
        assert!((envoy.seconds - 0.4).abs() < 1e-9);
        assert!((envoy.per_request_us - 400.0).abs() < 1e-6);
        assert!((shares[1].per_request_us - 200.0).abs() < 1e-6);
        assert!(tally.per_request(0).iter().all(|s| s.per_request_us == 0.0));
    }

    #[test]
    fn a_process_that_restarted_counts_nothing_negative() {
        let mut tally = CpuTally::default();
        tally.add(
            &sample(&[("ratelimit-service", 900)]),
            &sample(&[("ratelimit-service", 10)]),
        );
        assert_eq!(tally.per_request(1)[0].seconds, 0.0);
    }
}
