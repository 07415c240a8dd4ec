//! ratelimit-service: the economic boundary between tenants.
//!
//! Admission (gRPC, `llmgateway.admission.v1`) reserves a request's RPM,
//! TPM, concurrency slot and upper-bound cost against the tenant's limits
//! and budgets, all or nothing, then holds it at the pool gate; Complete
//! settles real usage into the spend ledger. The same port serves Envoy's
//! standard `envoy.service.ratelimit.v3` for descriptor limits. Counters
//! live in memory or, for several replicas, in Redis.

pub mod admin;
pub mod audit;
pub mod breaker;
pub mod cached_tokens;
pub mod clock;
pub mod config;
pub mod grpc;
pub mod lease;
pub mod ledger;
pub mod limiter;
pub mod limits;
pub mod metrics;
pub mod pool;
pub mod reload;
pub mod rls;
pub mod server;
pub mod storage;
pub mod telemetry;

pub use config::Cli;
pub use server::{GateFactory, Service, StartError, fair_gate, unlimited_gate};
