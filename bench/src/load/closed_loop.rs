//! Closed-loop load: a fixed number of callers, each sending its next unit
//! as soon as the previous one is done. Finds the throughput at which the
//! system under test saturates.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::{PhaseProgress, Record, Target};

#[derive(Debug, Clone, Copy)]
pub struct ClosedLoop {
    pub connections: usize,
    pub duration: Duration,
}

pub async fn run_closed_loop<T, R>(target: Arc<T>, plan: ClosedLoop, progress: &PhaseProgress) -> R
where
    T: Target,
    R: Record<Sample = T::Sample>,
{
    let start = Instant::now();
    let deadline = start + plan.duration;
    let ticker = progress.tick_from(start);
    let sent = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..plan.connections.max(1))
        .map(|_| {
            let target = Arc::clone(&target);
            let progress = progress.clone();
            let sent = Arc::clone(&sent);
            tokio::spawn(async move {
                let mut recorder = R::empty();
                while Instant::now() < deadline {
                    let n = sent.fetch_add(1, Ordering::Relaxed);
                    let started = Instant::now();
                    let sample = target.send(n, started).await;
                    recorder.record(started.elapsed(), sample);
                    progress.completed_one();
                }
                recorder
            })
        })
        .collect();
    let mut recorder = R::empty();
    for worker in workers {
        if let Ok(part) = worker.await {
            recorder.merge(&part);
        }
    }
    // Units in flight at the deadline are counted, so the time counts until they end.
    recorder.set_elapsed(start.elapsed());
    ticker.abort();
    recorder
}
