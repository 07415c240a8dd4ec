//! The pool gate: a gate holds a reserved request until the pool has room
//! (the fair queue, through `fair_gate`); [`UnlimitedGate`] admits at once.
//!
//! The permit lives inside the lease, so Complete, lease expiry and a
//! cancelled Admit all give the pool's room back by dropping it.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use thiserror::Error;

use super::fair_queue::Ticket;

/// Why a gate refused to admit. Admit refunds the tenant's reservation and
/// answers QUEUE_FULL / QUEUE_TIMEOUT.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GateError {
    /// The tenant's queue in the pool is at its depth limit.
    #[error("queue for pool {pool:?} is full")]
    QueueFull { pool: String, retry_after: Duration },
    /// The call waited until its deadline without the pool having room.
    #[error("waited {waited:?} for pool {pool:?} without room")]
    QueueTimeout { pool: String, waited: Duration },
}

/// What a gate implementation keeps per admitted request. Dropping it gives
/// the pool's room back; `settle` corrects the estimate with real usage
/// (for virtual-counter fairness) just before it is dropped.
pub trait PermitGuard: Send + Sync {
    fn settle(&mut self, real_in: u64, real_out: u64);
}

/// Room in a pool held by one request (a boxed drop guard).
#[derive(Default)]
pub struct PoolPermit {
    guard: Option<Box<dyn PermitGuard>>,
}

impl PoolPermit {
    pub fn new(guard: impl PermitGuard + 'static) -> Self {
        Self {
            guard: Some(Box::new(guard)),
        }
    }

    /// A permit that holds nothing (unlimited pools).
    pub fn none() -> Self {
        Self { guard: None }
    }

    /// Reports real usage; the room is freed when the permit is dropped.
    pub fn settle(&mut self, real_in: u64, real_out: u64) {
        if let Some(guard) = self.guard.as_mut() {
            guard.settle(real_in, real_out);
        }
    }
}

impl std::fmt::Debug for PoolPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolPermit")
            .field("holds_room", &self.guard.is_some())
            .finish()
    }
}

/// Waits for room in a pool. Implementations must be cancel-safe: when the
/// returned future is dropped (the Admit RPC was cancelled) the request
/// leaves the queue and holds no room.
#[async_trait]
pub trait PoolGate: Send + Sync {
    /// Waits in `pool` with `ticket` (who asks, with what weight, band and
    /// reserved tokens) until `deadline` at the latest.
    async fn acquire(
        &self,
        pool: &str,
        ticket: Ticket,
        deadline: Instant,
    ) -> Result<PoolPermit, GateError>;
}

/// A gate with no queue: every pool always has room.
pub struct UnlimitedGate;

#[async_trait]
impl PoolGate for UnlimitedGate {
    async fn acquire(
        &self,
        _pool: &str,
        _ticket: Ticket,
        _deadline: Instant,
    ) -> Result<PoolPermit, GateError> {
        Ok(PoolPermit::none())
    }
}
