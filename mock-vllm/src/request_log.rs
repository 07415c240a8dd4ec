//! Bounded log of the requests a replica received, for gateway end-to-end tests to inspect
//! what actually reached the backend (headers the gateway added or stripped, the forwarded
//! `cache_salt`, how much of the prompt was served from cache).

use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// How many records are kept; older ones are dropped first.
pub const CAPACITY: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordId(u64);

#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    #[serde(skip)]
    id: u64,
    pub method: String,
    pub path: String,
    /// Header values of a repeated name are joined with ", ".
    pub headers: BTreeMap<String, String>,
    /// The body parsed as JSON, or as a string when it is not JSON.
    pub body: serde_json::Value,
    pub replica: String,
    /// Set once the engine admits the request; `null` before that or for other endpoints.
    pub cached_tokens: Option<usize>,
    pub received_at_ms: u64,
}

/// What the capture layer knows about a request when it arrives.
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    pub method: String,
    pub path: String,
    pub headers: BTreeMap<String, String>,
    pub body: serde_json::Value,
    pub received_at_ms: u64,
}

#[derive(Debug)]
pub struct RequestLog {
    replica: String,
    ring: Mutex<Ring>,
}

#[derive(Debug, Default)]
struct Ring {
    next_id: u64,
    records: VecDeque<RequestRecord>,
}

impl RequestLog {
    pub fn new(replica: impl Into<String>) -> Self {
        Self {
            replica: replica.into(),
            ring: Mutex::new(Ring::default()),
        }
    }

    pub fn record(&self, request: ReceivedRequest) -> RecordId {
        let mut ring = self.lock();
        let id = ring.next_id;
        ring.next_id += 1;
        if ring.records.len() == CAPACITY {
            ring.records.pop_front();
        }
        ring.records.push_back(RequestRecord {
            id,
            method: request.method,
            path: request.path,
            headers: request.headers,
            body: request.body,
            replica: self.replica.clone(),
            cached_tokens: None,
            received_at_ms: request.received_at_ms,
        });
        RecordId(id)
    }

    /// No-op when the record was already pushed out of the ring or cleared.
    pub fn set_cached_tokens(&self, id: RecordId, cached_tokens: usize) {
        let mut ring = self.lock();
        if let Some(record) = ring.records.iter_mut().rev().find(|r| r.id == id.0) {
            record.cached_tokens = Some(cached_tokens);
        }
    }

    /// Oldest first, newest last.
    pub fn snapshot(&self) -> Vec<RequestRecord> {
        self.lock().records.iter().cloned().collect()
    }

    pub fn clear(&self) {
        self.lock().records.clear();
    }

    /// The ring holds plain data that is valid after any panic, so poisoning is ignored.
    fn lock(&self) -> MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(path: &str) -> ReceivedRequest {
        ReceivedRequest {
            method: "POST".into(),
            path: path.into(),
            headers: BTreeMap::new(),
            body: serde_json::Value::Null,
            received_at_ms: 0,
        }
    }

    #[test]
    fn keeps_the_newest_records_in_order() {
        let log = RequestLog::new("r");
        for i in 0..CAPACITY + 3 {
            log.record(received(&format!("/{i}")));
        }
        let records = log.snapshot();
        assert_eq!(records.len(), CAPACITY);
        assert_eq!(records[0].path, "/3");
        assert_eq!(records[CAPACITY - 1].path, format!("/{}", CAPACITY + 2));
    }

    #[test]
    fn cached_tokens_are_filled_in_later() {
        let log = RequestLog::new("r");
        let first = log.record(received("/a"));
        log.record(received("/b"));
        log.set_cached_tokens(first, 32);
        let records = log.snapshot();
        assert_eq!(records[0].cached_tokens, Some(32));
        assert_eq!(records[1].cached_tokens, None);
        log.clear();
        log.set_cached_tokens(first, 1);
        assert!(log.snapshot().is_empty());
    }
}
