//! What the project's tests share, in one place: waiting for a condition,
//! reading a Prometheus exposition, splitting an SSE body, a throwaway
//! redis-server, a free port. Test code: it panics with a clear message
//! where a test cannot go on.

pub mod poll;
pub mod redis;
pub mod sse;

use std::net::TcpListener;

/// The value of the first sample `name` whose labels include every pair
/// (the careful parser ratelimit-service scrapes vLLM with).
pub use prom_text::value as metric;

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
}
