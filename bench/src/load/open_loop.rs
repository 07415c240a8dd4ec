//! Open-loop load: requests leave on a fixed schedule whatever the server does.
//!
//! Each request's latency runs from the time it was *meant* to be sent, not
//! from when it actually left. A stalled server thus charges every request
//! scheduled during the stall, instead of silently slowing the sender down
//! and hiding the stall (coordinated omission).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

use super::{Endpoint, Outcome, PhaseProgress, PhaseRecorder};

#[derive(Debug, Clone, Copy)]
pub struct OpenLoop {
    /// Requests per second.
    pub rate: f64,
    pub duration: Duration,
    /// Cap on requests in flight (and so on connections). A request that
    /// waits for a slot still counts its wait.
    pub max_in_flight: usize,
}

pub async fn run_open_loop(
    endpoint: Arc<Endpoint>,
    plan: OpenLoop,
    progress: &PhaseProgress,
) -> PhaseRecorder {
    let total = (plan.rate * plan.duration.as_secs_f64()).round() as u64;
    let interval = Duration::from_secs_f64(1.0 / plan.rate.max(f64::MIN_POSITIVE));
    let slots = Arc::new(Semaphore::new(plan.max_in_flight.max(1)));
    let (results, mut received) = mpsc::unbounded_channel::<(Duration, Outcome)>();
    let start = Instant::now();
    let ticker = progress.tick_from(start);
    for i in 0..total {
        let intended = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(intended).await;
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        let endpoint = Arc::clone(&endpoint);
        let results = results.clone();
        let progress = progress.clone();
        tokio::spawn(async move {
            let outcome = endpoint.send().await;
            let latency = intended.elapsed();
            drop(slot);
            progress.completed_one();
            let _ = results.send((latency, outcome));
        });
    }
    drop(results);
    let mut recorder = PhaseRecorder::new();
    while let Some((latency, outcome)) = received.recv().await {
        recorder.record(latency, outcome);
    }
    recorder.set_elapsed(start.elapsed());
    ticker.abort();
    recorder
}
