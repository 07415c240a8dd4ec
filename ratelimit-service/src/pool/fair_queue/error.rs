use std::time::Duration;

use thiserror::Error;

/// Why a request left the queue without room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum QueueError {
    /// The tenant already has its maximum number of requests waiting.
    #[error("tenant queue is full ({queued} waiting)")]
    QueueFull { queued: u32 },
    /// The request reached its deadline (or the pool's max wait) in the queue.
    #[error("no room in the pool after waiting {waited:?}")]
    Timeout { waited: Duration },
}
