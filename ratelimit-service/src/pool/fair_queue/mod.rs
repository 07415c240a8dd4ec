//! Per-pool admission queue: one tenant's burst cannot move another tenant's
//! latency.
//!
//! A request waits in [`FairQueue::acquire`] until the pool has room, then
//! holds a [`QueuePermit`] until it completes. Room is a capacity (requests in
//! flight at once) that the metrics scraper adjusts live. Who gets the next
//! free slot is decided by the `scheduler` core; this module only adds the
//! lock, the per-waiter wake-up channel and cancel-safety.

mod config;
mod error;
mod permit;
mod scheduler;
mod stats;
mod ticket;

#[cfg(test)]
mod scheduler_tests;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

pub use config::{QueueConfig, QueueMode, SchedulingPolicy};
pub use error::QueueError;
pub use permit::QueuePermit;
pub use stats::{QueueStats, TenantStats, WAIT_BUCKETS_MS, WaitHistogram, jains_index};
pub use ticket::Ticket;

use scheduler::{Admission, Queued, Scheduler, Withdrawal};

/// The admission queue of one pool. Cloning shares the queue.
#[derive(Debug, Clone)]
pub struct FairQueue {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
}

impl Shared {
    /// The state is only changed by code that cannot panic halfway, so a
    /// poisoned lock still guards consistent data.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Debug)]
struct State {
    sched: Scheduler,
    capacity: u32,
    saturated: bool,
    /// Permits alive, plus grants not yet picked up by their waiter.
    in_flight: u32,
    max_depth: u32,
    max_wait: Duration,
    light_reserve: u32,
    /// Wake-up channel of every waiting request, by sequence number.
    grants: HashMap<u64, oneshot::Sender<Admission>>,
}

impl State {
    /// Hands out free room to waiters until room or waiters run out.
    fn dispatch(&mut self, now: Instant) {
        // No capacity means no replica has room (or metrics are stale): the
        // reserve is headroom on a working pool, never a way around that.
        while !self.saturated && self.capacity > 0 {
            let admission = if self.in_flight < self.capacity {
                self.sched.admit_next(now)
            } else if self.in_flight < self.capacity.saturating_add(self.light_reserve) {
                self.sched.admit_next_light(now)
            } else {
                None
            };
            let Some(admission) = admission else {
                return;
            };
            self.in_flight += 1;
            let tenant = admission.tenant.clone();
            let cost = admission.cost;
            let delivered = self
                .grants
                .remove(&admission.seq)
                .is_some_and(|tx| tx.send(admission).is_ok());
            if !delivered {
                // Cannot happen while waiters withdraw under this lock before
                // dropping their receiver; if it did, the room must not leak.
                self.in_flight -= 1;
                self.sched.refund(&tenant, cost, now);
            }
        }
    }
}

impl FairQueue {
    pub fn new(config: QueueConfig) -> Self {
        let state = State {
            sched: Scheduler::new(config.policy),
            capacity: config.capacity,
            saturated: false,
            in_flight: 0,
            max_depth: config.max_depth_per_tenant,
            max_wait: config.max_wait,
            light_reserve: config.light_reserve,
            grants: HashMap::new(),
        };
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
            }),
        }
    }

    /// Waits until the pool gives this request room, at most until
    /// `deadline` or the pool's max wait, whichever comes first.
    ///
    /// Cancel-safe: dropping the future takes the request out of the queue
    /// at once, and gives the room back if it had just been granted.
    pub async fn acquire(
        &self,
        ticket: Ticket,
        deadline: Instant,
    ) -> Result<QueuePermit, QueueError> {
        let now = Instant::now();
        let (tx, rx) = oneshot::channel();
        let (queued, deadline) = {
            let mut state = self.shared.lock();
            let deadline = now
                .checked_add(state.max_wait)
                .map_or(deadline, |longest| deadline.min(longest));
            let max_depth = state.max_depth;
            let queued = state.sched.enqueue(&ticket, max_depth, now)?;
            state.grants.insert(queued.seq, tx);
            state.dispatch(now);
            (queued, deadline)
        };
        let mut waiter = Waiter {
            shared: self.shared.clone(),
            queued: Some(queued),
            rx,
        };
        match tokio::time::timeout_at(deadline, &mut waiter.rx).await {
            Ok(Ok(admission)) => Ok(waiter.into_permit(admission)),
            // The sender is only dropped after a send, so a closed channel
            // is treated like the deadline: settle the outcome under the lock.
            Ok(Err(_)) | Err(_) => waiter.give_up(),
        }
    }

    /// Requests the pool may run at once (replicas with room × per-replica cap).
    pub fn set_capacity(&self, capacity: u32) {
        let mut state = self.shared.lock();
        state.capacity = capacity;
        state.dispatch(Instant::now());
    }

    /// Capacity and light-tenant reserve together, as the scraper finds the
    /// replicas: the reserve shrinks with the ready replicas too, so it never
    /// piles onto the ones that are left.
    pub fn set_room(&self, capacity: u32, light_reserve: u32) {
        let mut state = self.shared.lock();
        state.capacity = capacity;
        state.light_reserve = light_reserve;
        state.dispatch(Instant::now());
    }

    pub fn capacity(&self) -> u32 {
        self.shared.lock().capacity
    }

    /// While saturated nothing is admitted, whatever the capacity.
    pub fn set_saturated(&self, saturated: bool) {
        let mut state = self.shared.lock();
        state.saturated = saturated;
        state.dispatch(Instant::now());
    }

    /// Applies a reloaded config, keeping counters and waiting requests.
    pub fn reconfigure(&self, config: QueueConfig) {
        let mut state = self.shared.lock();
        state.sched.set_policy(config.policy);
        state.capacity = config.capacity;
        state.max_depth = config.max_depth_per_tenant;
        state.max_wait = config.max_wait;
        state.light_reserve = config.light_reserve;
        state.dispatch(Instant::now());
    }

    pub fn snapshot(&self) -> QueueStats {
        let state = self.shared.lock();
        QueueStats {
            mode: state.sched.policy().mode,
            capacity: state.capacity,
            light_reserve: state.light_reserve,
            in_flight: state.in_flight,
            saturated: state.saturated || state.capacity == 0,
            queued: state.sched.queued(),
            tenants: state.sched.tenant_stats(),
        }
    }
}

/// A request waiting for room; its `Drop` is the cancellation path.
struct Waiter {
    shared: Arc<Shared>,
    /// `None` once the outcome is settled, which disarms `Drop`.
    queued: Option<Queued>,
    rx: oneshot::Receiver<Admission>,
}

impl Waiter {
    fn into_permit(mut self, admission: Admission) -> QueuePermit {
        self.queued = None;
        QueuePermit {
            shared: self.shared.clone(),
            tenant: admission.tenant,
            weight: admission.weight,
            charged: admission.cost,
            waited: admission.waited,
        }
    }

    /// The deadline passed: leave the queue, unless room was granted in the
    /// meantime, in which case the request goes ahead.
    fn give_up(mut self) -> Result<QueuePermit, QueueError> {
        let Some(queued) = self.queued.take() else {
            return Err(QueueError::Timeout {
                waited: Duration::ZERO,
            });
        };
        let waited = Instant::now().saturating_duration_since(queued.enqueued_at);
        let granted = {
            let mut state = self.shared.lock();
            if state.sched.withdraw(&queued, Withdrawal::TimedOut) {
                state.grants.remove(&queued.seq);
                None
            } else {
                self.rx.try_recv().ok()
            }
        };
        match granted {
            Some(admission) => Ok(self.into_permit(admission)),
            None => Err(QueueError::Timeout { waited }),
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let Some(queued) = self.queued.take() else {
            return;
        };
        // `rx` is dropped only after this body, so under the lock the request
        // is either still queued or its grant is waiting in `rx`.
        let mut state = self.shared.lock();
        if state.sched.withdraw(&queued, Withdrawal::Cancelled) {
            state.grants.remove(&queued.seq);
        } else if let Ok(admission) = self.rx.try_recv() {
            state.in_flight = state.in_flight.saturating_sub(1);
            let now = Instant::now();
            state.sched.refund(&admission.tenant, admission.cost, now);
            state.dispatch(now);
        }
    }
}
