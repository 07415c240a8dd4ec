//! What a load phase drives and what it keeps: the two seams that let one
//! open loop and one closed loop serve every benchmark, an HTTP request
//! through the gateway as well as a gRPC call pair to ratelimit-service.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// One unit of load (a request, or a call pair): sent, awaited, described.
pub trait Target: Send + Sync + 'static {
    /// How one unit ended, as its recorder counts it.
    type Sample: Send + 'static;

    /// Sends unit number `n` of the phase, meant to leave at `intended`
    /// (open loop) or now (closed loop); latencies a target measures itself
    /// run from `intended`.
    fn send(&self, n: u64, intended: Instant) -> impl Future<Output = Self::Sample> + Send;
}

/// What one phase (or several merged rounds of it) measured.
pub trait Record: Send + 'static {
    type Sample;

    fn empty() -> Self;

    /// One unit, `latency` from its intended start to its end.
    fn record(&mut self, latency: Duration, sample: Self::Sample);

    /// Adds another phase's units and time, e.g. the next round.
    fn merge(&mut self, other: &Self);

    /// Wall-clock time the phase ran, the denominator of its throughput.
    fn set_elapsed(&mut self, elapsed: Duration);
}
