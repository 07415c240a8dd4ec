//! Open-loop load of one scenario: every tenant sends on its own Poisson
//! schedule, whatever the gateway answers, and every request's TTFT runs
//! from the time it was *meant* to leave (no coordinated omission).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::client::TenantClient;
use super::plan::{Phase, Scenario};
use super::pool::api_key;
use crate::error::BenchError;
use crate::load::{Outcome, PhaseProgress};

/// Requests one tenant may have open at once; an arrival beyond it waits,
/// and its wait counts in its TTFT.
const MAX_OPEN_PER_TENANT: usize = 512;

/// One request, times in seconds from the scenario start.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestRecord {
    /// Index of the tenant in the scenario.
    pub tenant: usize,
    pub intended_s: f64,
    pub first_byte_s: Option<f64>,
    pub done_s: f64,
    pub outcome: Outcome,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

impl RequestRecord {
    pub fn is_success(&self) -> bool {
        self.outcome.is_success()
    }
}

/// A small seeded generator (SplitMix64): runs are repeatable without a
/// dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// Exponential gap of a Poisson process at `rate` per second.
    pub fn gap(&mut self, rate: f64) -> f64 {
        -self.unit().ln() / rate
    }
}

/// Arrival times (seconds) of a Poisson process following `phases`.
pub fn arrivals(phases: &[Phase], rng: &mut Rng) -> Vec<f64> {
    let mut times = Vec::new();
    for phase in phases.iter().filter(|p| p.rate > 0.0 && p.to_s > p.from_s) {
        let mut t = phase.from_s + rng.gap(phase.rate);
        while t < phase.to_s {
            times.push(t);
            t += rng.gap(phase.rate);
        }
    }
    times
}

/// Runs `scenario` against `gateway` from `epoch` on and returns every
/// request it sent, once the last one has been answered.
pub async fn run(
    gateway: &str,
    scenario: &Scenario,
    seed: u64,
    timeout: Duration,
    epoch: Instant,
    label: &str,
) -> Result<Vec<RequestRecord>, BenchError> {
    let mut plans = Vec::with_capacity(scenario.tenants.len());
    for (index, load) in scenario.tenants.iter().enumerate() {
        let client = TenantClient::new(
            gateway,
            &load.tenant,
            &api_key(&load.tenant),
            load.shape,
            timeout,
        )?;
        let mut rng = Rng::new(seed ^ (index as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
        plans.push((index, Arc::new(client), arrivals(&load.phases, &mut rng)));
    }
    let progress = PhaseProgress::new(label, Duration::from_secs_f64(scenario.seconds));
    let (results, mut received) = mpsc::unbounded_channel::<RequestRecord>();
    let ticker = progress.tick_from(epoch);
    let mut senders = JoinSet::new();
    for (index, client, times) in plans {
        let results = results.clone();
        let progress = progress.clone();
        senders.spawn(async move {
            let open = Arc::new(Semaphore::new(MAX_OPEN_PER_TENANT));
            for (seq, at) in times.into_iter().enumerate() {
                tokio::time::sleep_until(epoch + Duration::from_secs_f64(at)).await;
                let Ok(slot) = Arc::clone(&open).acquire_owned().await else {
                    break;
                };
                let body = client.body(seq as u64);
                let client = Arc::clone(&client);
                let results = results.clone();
                let progress = progress.clone();
                tokio::spawn(async move {
                    let streamed = client.send(body, epoch).await;
                    drop(slot);
                    progress.completed_one();
                    let _ = results.send(RequestRecord {
                        tenant: index,
                        intended_s: at,
                        first_byte_s: streamed.first_byte.map(|d| d.as_secs_f64()),
                        done_s: streamed.done.as_secs_f64(),
                        outcome: streamed.outcome,
                        prompt_tokens: streamed.prompt_tokens,
                        completion_tokens: streamed.completion_tokens,
                    });
                });
            }
        });
    }
    drop(results);
    while senders.join_next().await.is_some() {}
    // The channel closes when the last request task has reported.
    let mut records = Vec::new();
    while let Some(record) = received.recv().await {
        records.push(record);
    }
    ticker.abort();
    progress.finish();
    records.sort_by(|a, b| a.intended_s.total_cmp(&b.intended_s));
    Ok(records)
}
