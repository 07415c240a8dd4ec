//! llm-policy: the gateway module's second phase. After tenant-auth has named the
//! tenant, it decides what the request may do and where it goes:
//!
//! - [`endpoint`]: which OpenAI endpoint (unknown API paths are refused);
//! - [`body`] (over [`json`]): the request body, strictly parsed;
//! - [`buffer_budget`]: bounds the body bytes a worker and a tenant hold;
//! - [`fields`]: which members each endpoint may carry, and their cost;
//! - [`tokens`]: the prompt-token estimate, no tokenizer needed;
//! - [`limits`]: model allowlist, context and output caps;
//! - [`cache_key`]: the tenant's `cache_salt` and the prefix-affinity key;
//! - [`routing`]: the pool, from workload class and allowed pools;
//! - [`rewrite`]: the new body, only when something changed;
//! - [`models_list`]: `GET /v1/models` for the tenant;
//! - [`pool_limits`]: the pools' real `max_model_len`, from ratelimit-service;
//! - [`upstream_error`]: the pool's error replies in OpenAI's shape;
//! - [`usage_chunk`]: drops the forced usage chunk from a client's stream;
//! - [`decision`]: all of the above as one function;
//! - [`error`]: refusals and their OpenAI replies; [`config`]: the plugin config;
//! - `stream` (wasm only): the phase's host side, run by the gateway module.
//!
//! Everything but `stream` (the proxy-wasm glue, wasm32 only) is plain data
//! in, plain data out, and unit-tested natively.

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

pub mod body;
pub mod buffer_budget;
pub mod cache_key;
pub mod config;
pub mod decision;
pub mod endpoint;
pub mod error;
pub mod fields;
pub mod json;
pub mod limits;
pub mod models_list;
pub mod pool_limits;
pub mod rewrite;
pub mod routing;
pub mod tokens;
pub mod upstream_error;
pub mod usage_chunk;

#[cfg(target_arch = "wasm32")]
pub mod stream;
#[cfg(test)]
mod test_support;

pub use config::{ConfigError, FilterConfig, Policy, PolicySettings};
pub use decision::{
    Admitted, Decision, Request, admit, check_body_size, decide, decide_body, local_reply,
};
pub use error::PolicyError;
pub use pool_limits::PoolLimits;
