//! Closed-loop load: a fixed number of connections, each sending its next
//! request as soon as the previous answer is in. Finds the throughput at
//! which the gateway saturates.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{Endpoint, PhaseProgress, PhaseRecorder};

#[derive(Debug, Clone, Copy)]
pub struct ClosedLoop {
    pub connections: usize,
    pub duration: Duration,
}

pub async fn run_closed_loop(
    endpoint: Arc<Endpoint>,
    plan: ClosedLoop,
    progress: &PhaseProgress,
) -> PhaseRecorder {
    let start = Instant::now();
    let deadline = start + plan.duration;
    let ticker = progress.tick_from(start);
    let workers: Vec<_> = (0..plan.connections.max(1))
        .map(|_| {
            let endpoint = Arc::clone(&endpoint);
            let progress = progress.clone();
            tokio::spawn(async move {
                let mut recorder = PhaseRecorder::new();
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    let outcome = endpoint.send().await;
                    recorder.record(sent.elapsed(), outcome);
                    progress.completed_one();
                }
                recorder
            })
        })
        .collect();
    let mut recorder = PhaseRecorder::new();
    for worker in workers {
        if let Ok(part) = worker.await {
            recorder.merge(&part);
        }
    }
    // Requests in flight at the deadline are counted, so the time counts until they end.
    recorder.set_elapsed(start.elapsed());
    ticker.abort();
    recorder
}
