//! `admission`: the gateway module's last phase before the router. It asks
//! ratelimit-service to admit each inference request (limits reserved,
//! fair-queue slot in the pool), holds the request while the service queues it, puts OpenAI's
//! `x-ratelimit-*` headers on the response, and reports the real usage when
//! the response ends, or the cancellation when the client goes away.
//!
//! Everything but `worker` (the phase's host side, wasm only) is
//! host-agnostic and tested natively.

// A panic kills the wasm VM of an Envoy worker: code that runs there may not
// panic (the same block in every crate compiled into the filters; checked by
// filters/common/tests/lint_policy.rs).
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]
mod admit_channel;
mod audit;
mod config;
mod one_call;
mod outcome;
mod rate_headers;
mod report_buffer;
mod request;
mod usage;

#[cfg(target_arch = "wasm32")]
pub mod worker;

pub use admit_channel::AdmitChannel;
pub use audit::{AuditCapture, digest_bytes};
pub use config::{AdmissionConfig, AdmissionSettings, CompiledConfig, ConfigError, FilterPhase};
pub use one_call::{BodyWaiters, body_fits_one_call};
pub use outcome::{Admission, unavailable};
pub use rate_headers::{format_reset, rate_limit_headers};
pub use report_buffer::{MAX_BYTES_PER_CALL, MAX_REPORTS_PER_CALL, ReportBuffer};
pub use request::{RequestFacts, admit_request, open_request};
pub use usage::{Usage, UsageTracker};
