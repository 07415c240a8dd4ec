//! Open-loop load: units leave on a fixed schedule whatever the server does.
//!
//! Each unit's latency runs from the time it was *meant* to be sent, not
//! from when it actually left. A stalled server thus charges every unit
//! scheduled during the stall, instead of silently slowing the sender down
//! and hiding the stall (coordinated omission).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

use super::{PhaseProgress, Record, Target};

#[derive(Debug, Clone, Copy)]
pub struct OpenLoop {
    /// Units per second.
    pub rate: f64,
    pub duration: Duration,
    /// Cap on units in flight (and so on connections). A unit that waits
    /// for a slot still counts its wait.
    pub max_in_flight: usize,
}

pub async fn run_open_loop<T, R>(target: Arc<T>, plan: OpenLoop, progress: &PhaseProgress) -> R
where
    T: Target,
    R: Record<Sample = T::Sample>,
{
    let total = (plan.rate * plan.duration.as_secs_f64()).round() as u64;
    let interval = Duration::from_secs_f64(1.0 / plan.rate.max(f64::MIN_POSITIVE));
    let slots = Arc::new(Semaphore::new(plan.max_in_flight.max(1)));
    let (results, mut received) = mpsc::unbounded_channel::<(Duration, T::Sample)>();
    let start = Instant::now();
    let ticker = progress.tick_from(start);
    for n in 0..total {
        let intended = start + interval.mul_f64(n as f64);
        tokio::time::sleep_until(intended).await;
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        let target = Arc::clone(&target);
        let results = results.clone();
        let progress = progress.clone();
        tokio::spawn(async move {
            let sample = target.send(n, intended).await;
            let latency = intended.elapsed();
            drop(slot);
            progress.completed_one();
            let _ = results.send((latency, sample));
        });
    }
    drop(results);
    let mut recorder = R::empty();
    while let Some((latency, sample)) = received.recv().await {
        recorder.record(latency, sample);
    }
    recorder.set_elapsed(start.elapsed());
    ticker.abort();
    recorder
}
