//! Room in a pool held by one admitted request.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::Shared;
use super::scheduler::TenantId;

/// Held from admission until the request completes. Dropping it gives the
/// room back and lets the next waiter in.
#[derive(Debug)]
pub struct QueuePermit {
    pub(super) shared: Arc<Shared>,
    pub(super) tenant: TenantId,
    pub(super) weight: f64,
    /// Normalised cost currently charged to the tenant for this request.
    pub(super) charged: f64,
    pub(super) waited: Duration,
}

impl QueuePermit {
    /// Replaces the estimated cost charged at admission by the real usage,
    /// so a tenant that over-reserves `max_tokens` is not slowed for it.
    /// Calling it again corrects relative to the last settlement.
    pub fn settle(&mut self, real_in: u64, real_out: u64) {
        let mut state = self.shared.lock();
        let real = state.sched.policy().token_cost(real_in, real_out) / self.weight;
        state
            .sched
            .correct(&self.tenant, real - self.charged, Instant::now());
        self.charged = real;
    }

    /// Time spent in the queue before admission.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    pub fn tenant(&self) -> &str {
        &self.tenant
    }
}

impl Drop for QueuePermit {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
        state.sched.release(&self.tenant);
        state.dispatch(Instant::now());
    }
}
