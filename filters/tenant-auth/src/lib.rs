//! `tenant-auth`: the gateway module's first phase. It strips client-sent
//! gateway headers, then names the tenant of every request from an API key,
//! a JWT, or the mTLS peer's SPIFFE ID.
//!
//! Everything except `stream` (wasm only) is host-agnostic and tested
//! natively; `stream` adapts the host to [`Authenticator`] for the module.

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
mod authenticator;
mod config;
mod credentials;
mod error;
mod jwt;
mod request_id;

#[cfg(target_arch = "wasm32")]
pub mod stream;

pub use authenticator::{AuthMethod, Authenticator, Identity};
pub use config::{AuthConfig, AuthSettings, ConfigError};
pub use credentials::Credential;
pub use error::AuthError;
pub use request_id::{is_valid_request_id, new_request_id};
