//! Pool admission: the last step of Admit, after the tenant's limits are
//! reserved. A reserved request waits at its pool's gate until the pool has
//! room ([`gate`]); the per-pool fair queue decides who goes next
//! ([`fair_queue`]: a pure scheduler and a thin async shell, wired in as a
//! gate by [`fair_gate`]); what the pool's replicas report sets that room
//! ([`metrics`]: vLLM's `/metrics`, [`models`]: `/v1/models`).

pub mod fair_gate;
pub mod fair_queue;
pub mod gate;
pub mod metrics;
pub mod models;

pub use fair_queue::Ticket;
pub use gate::{GateError, PoolGate, PoolPermit, UnlimitedGate};
