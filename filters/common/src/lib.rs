//! Pieces every gateway filter shares.
//!
//! - [`error`]: the OpenAI error shape and the single responder built on it.
//! - [`headers`]: header names the gateway owns, and the sanitising rule.
//! - [`wire`]: the proxy-wasm ABI's serialised forms, decoded without trust.
//! - [`host`] (wasm only): the fallible host layer every filter calls.

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
pub mod error;
pub mod headers;
#[cfg(target_arch = "wasm32")]
pub mod host;
pub mod wire;

pub use error::{ErrorKind, GatewayError, IntoGatewayError, host_failure, non_utf8_header};
