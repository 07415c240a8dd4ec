//! Pieces every gateway filter shares.
//!
//! - [`error`]: the OpenAI error shape and the single responder built on it.
//! - [`headers`]: header names the gateway owns, and the sanitising rule.
//! - [`host`] (wasm only): the thin layer over proxy-wasm host calls.

pub mod error;
pub mod headers;
#[cfg(target_arch = "wasm32")]
pub mod host;

pub use error::{ErrorKind, GatewayError, IntoGatewayError};
