//! A mock of vLLM's OpenAI-compatible server that queues like the real one.
//!
//! The gateway's fairness, backpressure and cache-isolation tests need a backend whose latency
//! comes from real queueing, not an echo server. This mock keeps vLLM's essentials:
//!
//! - [`engine`]: continuous batching (FCFS waiting queue, running batch bounded by
//!   `max_num_seqs` and KV blocks, prefill and per-step decode time);
//! - [`prefix_cache`] and [`kv_cache`]: an automatic prefix cache keyed like vLLM's, with the
//!   request's `cache_salt` in the first block so different salts never share a block;
//! - [`tokenizer`]: a real BPE (cl100k_base), so usage numbers are realistic;
//! - [`metrics`]: vLLM's Prometheus metric names and labels, in prometheus_client's text format;
//! - [`api`]: chat, completions and the Responses API (all with SSE streaming), embeddings,
//!   models, health, version, plus `/debug/*` routes for tests (see [`request_log`]). Requests
//!   are validated, refused and answered as vLLM 0.32 does: the same checks in the same order,
//!   the same error bodies, ids, defaults (`max_tokens`) and context-length rules.
//!
//! Start one in-process with [`start`]; the `mock-vllm` binary is a thin CLI over it.

pub mod api;
pub mod cli;
pub mod config;
pub mod engine;
mod filler;
pub mod kv_cache;
pub mod metrics;
pub mod prefix_cache;
pub mod request_log;
mod server;
pub mod tokenizer;

pub use config::MockConfig;
pub use server::{MockServer, StartError, start, start_on};
