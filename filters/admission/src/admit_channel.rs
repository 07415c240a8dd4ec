//! Which of a worker's requests wait for an answer on its `AdmitStream`.
//!
//! A unary Admit call costs Envoy a new HTTP/2 stream through its router
//! and the service a pass through its per-call stack; on the worker's one
//! long-lived stream an admission is a message, answered by id in whatever
//! order the service decides. This is the bookkeeping, host-agnostic: the
//! stream's token, the ids in flight and whose they are, their deadlines.
//! The root context owns the stream (a stream context's calls end with it)
//! and hands each answer to the request it names.
//!
//! The stream is a fast path, never a dependency: while it is not open
//! (not yet: the root opens it on the tick after a request found none; or
//! ended and not yet reopened) or holds [`MAX_WAITING`] admissions, a
//! request is admitted by a unary call.

use std::time::{Duration, SystemTime};

use hashbrown::HashMap;

/// Admissions one stream may carry at once (the service's own bound);
/// beyond it requests use unary calls rather than grow this map.
pub const MAX_WAITING: usize = 65_536;

/// An admission in flight on the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Waiting {
    /// The request's context.
    context: u32,
    /// When the request stops waiting, whatever the service says.
    deadline: SystemTime,
}

#[derive(Debug, Default)]
pub struct AdmitChannel {
    /// The open stream's token.
    stream: Option<u32>,
    next_id: u64,
    waiting: HashMap<u64, Waiting>,
    /// No admission waits past this (a lower bound: answers do not move
    /// it): the tick scans nothing before it, however many are queued.
    earliest: Option<SystemTime>,
}

impl AdmitChannel {
    /// The stream `token` is open: admissions may ride it.
    pub fn opened(&mut self, token: u32) {
        self.stream = Some(token);
    }

    /// The open stream's token.
    pub fn stream(&self) -> Option<u32> {
        self.stream
    }

    /// A new admission of the request `context`, waiting at most `timeout`
    /// from `now`: its id on the stream and the stream's token, or `None`
    /// when it must go by call (no stream, or too many in flight).
    pub fn ask(&mut self, context: u32, now: SystemTime, timeout: Duration) -> Option<(u64, u32)> {
        let stream = self.stream?;
        if self.waiting.len() >= MAX_WAITING {
            return None;
        }
        self.next_id = self.next_id.wrapping_add(1);
        let id = self.next_id;
        let deadline = now.checked_add(timeout).unwrap_or(now);
        self.waiting.insert(id, Waiting { context, deadline });
        self.earliest = Some(self.earliest.map_or(deadline, |e| e.min(deadline)));
        Some((id, stream))
    }

    /// The answer to `id` arrived: whose it is, or `None` when nobody waits
    /// for it any more (the request left, or timed out).
    pub fn answered(&mut self, id: u64) -> Option<u32> {
        self.waiting.remove(&id).map(|w| w.context)
    }

    /// The request stopped waiting for `id` (it left, or its message could
    /// not be sent): whether it was waiting.
    pub fn forget(&mut self, id: u64) -> bool {
        self.waiting.remove(&id).is_some()
    }

    /// The stream `token` ended: every admission on it is unanswered, as
    /// `(id, context)`. `None` for an older stream, whose end changes
    /// nothing.
    pub fn ended(&mut self, token: u32) -> Option<Vec<(u64, u32)>> {
        if self.stream != Some(token) {
            return None;
        }
        self.stream = None;
        self.earliest = None;
        let mut lost: Vec<(u64, u32)> = self
            .waiting
            .drain()
            .map(|(id, w)| (id, w.context))
            .collect();
        lost.sort_unstable();
        Some(lost)
    }

    /// Admissions past their deadline at `now`, no longer waited for, as
    /// `(id, context)` in the order they were asked.
    pub fn expired(&mut self, now: SystemTime) -> Vec<(u64, u32)> {
        if self.earliest.is_none_or(|earliest| now < earliest) {
            return Vec::new();
        }
        let mut late: Vec<(u64, u32)> = self
            .waiting
            .iter()
            .filter(|(_, w)| w.deadline <= now)
            .map(|(id, w)| (*id, w.context))
            .collect();
        late.sort_unstable();
        for (id, _) in &late {
            self.waiting.remove(id);
        }
        self.earliest = self.waiting.values().map(|w| w.deadline).min();
        late
    }

    /// Admissions in flight.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn no_stream_means_a_call() {
        let mut channel = AdmitChannel::default();
        assert_eq!(channel.ask(7, at(0), SECOND), None);
        channel.opened(3);
        assert_eq!(channel.ask(7, at(0), SECOND), Some((1, 3)));
    }

    #[test]
    fn answers_find_their_request_once_in_any_order() {
        let mut channel = AdmitChannel::default();
        channel.opened(3);
        let (a, _) = channel.ask(10, at(0), SECOND).unwrap();
        let (b, _) = channel.ask(11, at(0), SECOND).unwrap();
        assert_ne!(a, b);
        assert_eq!(channel.answered(b), Some(11));
        assert_eq!(channel.answered(a), Some(10));
        assert_eq!(channel.answered(a), None, "answered twice");
        assert!(channel.is_empty());
    }

    #[test]
    fn a_request_that_left_gets_no_answer() {
        let mut channel = AdmitChannel::default();
        channel.opened(3);
        let (id, _) = channel.ask(10, at(0), SECOND).unwrap();
        assert!(channel.forget(id));
        assert!(!channel.forget(id));
        assert_eq!(channel.answered(id), None);
    }

    #[test]
    fn the_streams_end_loses_every_admission_on_it_and_only_its_own() {
        let mut channel = AdmitChannel::default();
        channel.opened(3);
        channel.ask(10, at(0), SECOND).unwrap();
        channel.ask(11, at(0), SECOND).unwrap();
        assert_eq!(channel.ended(99), None, "not this stream");
        assert_eq!(channel.ended(3), Some(vec![(1, 10), (2, 11)]));
        assert_eq!(channel.stream(), None);
        assert_eq!(channel.ask(12, at(0), SECOND), None, "until reopened");
        channel.opened(5);
        assert_eq!(channel.ask(12, at(0), SECOND), Some((3, 5)));
    }

    #[test]
    fn deadlines_expire_admissions_in_order() {
        let mut channel = AdmitChannel::default();
        channel.opened(3);
        channel.ask(10, at(0), 2 * SECOND).unwrap();
        channel.ask(11, at(0), SECOND).unwrap();
        channel.ask(12, at(0), 5 * SECOND).unwrap();
        assert_eq!(channel.expired(at(0)), Vec::new());
        assert_eq!(channel.expired(at(2)), vec![(1, 10), (2, 11)]);
        assert_eq!(channel.len(), 1);
        assert_eq!(channel.expired(at(4)), Vec::new(), "the last waits 5 s");
        assert_eq!(channel.expired(at(5)), vec![(3, 12)]);
        assert_eq!(channel.expired(at(9)), Vec::new());
    }

    #[test]
    fn a_full_stream_sends_the_rest_by_call() {
        let mut channel = AdmitChannel::default();
        channel.opened(3);
        for context in 0..MAX_WAITING as u32 {
            assert!(channel.ask(context, at(0), SECOND).is_some());
        }
        assert_eq!(channel.ask(0, at(0), SECOND), None);
        channel.answered(1);
        assert!(channel.ask(0, at(0), SECOND).is_some());
    }
}
