//! End-to-end tests: each starts a real Envoy with the built `.wasm` filters,
//! mock vLLM pools and (where needed) ratelimit-service on free loopback
//! ports, and drives them over HTTP. Build first: `make build`.

mod admission;
mod alerts;
mod audit;
mod auth;
mod deployment;
mod fairness;
mod hostile;
mod policy;
mod pool_limits;
mod traces;
