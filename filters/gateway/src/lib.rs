//! `llm-gateway`: the whole gateway chain as one proxy-wasm module. The
//! phases authentication → policy → admission run over one typed request
//! context inside one VM per worker, with one compiled registry:
//!
//! - [`config`]: the module's configuration, which phases run, compiled
//!   once (one [`tenant_registry::Registry`] shared by the phases);
//! - [`flow`]: the order of a request's asynchronous steps (the OPEN
//!   admission, the body's decision, the RESERVE admission), as a pure state
//!   machine;
//! - `filter` (wasm only): the proxy-wasm glue over the phases' host sides
//!   (`tenant_auth::stream`, `llm_policy::stream`, `admission_filter::worker`).
//!
//! Nothing passes between the phases as headers: the identity and the
//! decision are values in the request's context. Headers are written for
//! the router (`x-llm-pool`, `x-prefix-key`) and the upstream only.

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
pub mod config;
pub mod context;
pub mod flow;

#[cfg(target_arch = "wasm32")]
mod filter;

/// The VM's allocator. wasm32-wasip1's default (wasi-libc's malloc) took
/// about 2,000 wasm instructions per allocation, the Rust port of dlmalloc
/// about 500, and a request makes hundreds: with dlmalloc a request's
/// instructions in the VM fell by a third, and with Talc (faster and
/// smaller than dlmalloc on wasm) by another 8 % (374k to 343k, counted
/// under the mock host, `tests/host_calls`).
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();

pub use config::{ConfigError, Gateway, GatewayConfig};
pub use context::RequestContext;
pub use flow::{Flow, Next};
