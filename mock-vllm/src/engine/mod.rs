//! The engine: a background task stepping the [`Scheduler`] in (tokio) real time, and the
//! handles through which requests submit sequences and receive their tokens.

mod scheduler;

pub use scheduler::{NewSequence, Scheduler, SequenceEvent, SequenceId, SubmitError};

use crate::config::MockConfig;
use crate::metrics::{EngineStats, SchedulerGauges};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::Notify;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Cheap to clone; every clone drives the same scheduler.
#[derive(Debug, Clone)]
pub struct Engine {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    scheduler: Mutex<Scheduler>,
    /// Wakes the idle loop when work arrives; a wake-up sent while the loop is busy is kept.
    work_arrived: Notify,
}

impl Shared {
    /// The scheduler's state stays consistent between calls, so a panic elsewhere while the
    /// lock was held is no reason to stop serving.
    fn lock(&self) -> MutexGuard<'_, Scheduler> {
        self.scheduler
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Engine {
    pub fn new(config: Arc<MockConfig>) -> Self {
        Self {
            shared: Arc::new(Shared {
                scheduler: Mutex::new(Scheduler::new(config)),
                work_arrived: Notify::new(),
            }),
        }
    }

    /// Starts the stepping loop; aborting the returned task stops the engine, which closes
    /// every sequence's event channel.
    pub fn spawn(&self) -> JoinHandle<()> {
        let shared = Arc::clone(&self.shared);
        tokio::spawn(async move {
            loop {
                let step = shared.lock().begin_step();
                match step {
                    None => shared.work_arrived.notified().await,
                    Some(duration) => {
                        let until = Instant::now() + duration;
                        tokio::time::sleep_until(until).await;
                        shared.lock().finish_step(Instant::now());
                    }
                }
            }
        })
    }

    /// Queues a sequence. Dropping the returned handle removes the sequence from the engine
    /// at once, wherever it is, which is how a client disconnect frees its slot.
    pub fn submit(&self, request: NewSequence) -> Result<SequenceHandle, SubmitError> {
        let (events_tx, events) = unbounded_channel();
        let id = self
            .shared
            .lock()
            .enqueue(request, Instant::now(), events_tx)?;
        self.shared.work_arrived.notify_one();
        Ok(SequenceHandle {
            events,
            _abort: AbortOnDrop {
                id,
                shared: Arc::clone(&self.shared),
            },
        })
    }

    /// Ends every sequence (their streams close) and refuses new ones; call after aborting
    /// the task from [`Self::spawn`].
    pub fn stop(&self) {
        self.shared.lock().stop();
    }

    pub fn gauges(&self) -> SchedulerGauges {
        self.shared.lock().gauges()
    }

    pub fn stats(&self) -> EngineStats {
        self.shared.lock().stats().clone()
    }

    pub fn update_stats(&self, update: impl FnOnce(&mut EngineStats)) {
        update(self.shared.lock().stats_mut());
    }

    pub fn cached_blocks(&self) -> usize {
        self.shared.lock().cached_blocks()
    }

    pub fn reset_prefix_cache(&self) {
        self.shared.lock().reset_prefix_cache();
    }
}

/// A submitted sequence as seen by its request.
#[derive(Debug)]
pub struct SequenceHandle {
    events: UnboundedReceiver<SequenceEvent>,
    _abort: AbortOnDrop,
}

impl SequenceHandle {
    /// The next event, or `None` once the sequence finished or the engine stopped.
    pub async fn next_event(&mut self) -> Option<SequenceEvent> {
        self.events.recv().await
    }
}

#[derive(Debug)]
struct AbortOnDrop {
    id: SequenceId,
    shared: Arc<Shared>,
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        // A sequence that finished is already gone; cancelling it again is a no-op. Freed
        // room is used at the next step boundary, which the busy loop reaches on its own.
        self.shared.lock().cancel(self.id);
    }
}
