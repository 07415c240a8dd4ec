//! How a pool's admission queue orders and bounds requests.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tenant_registry::Pool;

/// Order in which waiting requests get the pool's room.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueMode {
    /// Token-weighted virtual counters (VTC): the backlogged tenant that has
    /// received the least weighted service goes first.
    #[default]
    Fair,
    /// Global arrival order, ignoring tenants and bands: the baseline the
    /// benchmark compares fairness against.
    Fifo,
}

/// Service-wide scheduling policy, the same for every pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulingPolicy {
    pub mode: QueueMode,
    /// Cost of one prompt token.
    pub input_weight: f64,
    /// Cost of one generated token; decode occupies a GPU slot far longer
    /// than prefill per token, hence the default of twice the input weight.
    pub output_weight: f64,
    /// Strict priority bands above fairness. Off puts every tier in one band.
    pub priority_bands: bool,
}

impl Default for SchedulingPolicy {
    fn default() -> Self {
        Self {
            mode: QueueMode::Fair,
            input_weight: 1.0,
            output_weight: 2.0,
            priority_bands: true,
        }
    }
}

impl SchedulingPolicy {
    /// Weighted token cost of a request, before division by the tenant weight.
    pub fn token_cost(&self, input_tokens: u64, output_tokens: u64) -> f64 {
        self.input_weight * input_tokens as f64 + self.output_weight * output_tokens as f64
    }
}

/// Everything one pool's queue needs.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueConfig {
    pub policy: SchedulingPolicy,
    /// Requests admitted at once; the metrics scraper replaces it live.
    pub capacity: u32,
    /// Requests one tenant may have waiting; the next one is refused at once.
    pub max_depth_per_tenant: u32,
    /// Longest wait, whatever deadline the caller gives.
    pub max_wait: Duration,
    /// Slots above `capacity` only light tenants may take (fair mode only;
    /// FIFO has no notion of tenants).
    pub light_reserve: u32,
}

impl QueueConfig {
    /// The queue for a registry pool. A pool without listed replicas is
    /// treated as one replica, so it still has its configured in-flight cap.
    pub fn for_pool(pool: &Pool, policy: SchedulingPolicy) -> Self {
        let replicas = u32::try_from(pool.replicas.len().max(1)).unwrap_or(u32::MAX);
        Self {
            policy,
            capacity: pool.max_in_flight_per_replica.saturating_mul(replicas),
            max_depth_per_tenant: pool.max_queue_depth_per_tenant,
            max_wait: Duration::from_millis(pool.max_queue_wait_ms),
            light_reserve: pool
                .light_tenant_reserve_per_replica
                .saturating_mul(replicas),
        }
    }
}
