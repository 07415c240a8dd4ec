//! The shared pool every fairness scenario runs against, its registry and
//! the two testbeds (fair queue and FIFO) that differ only in
//! `--queue-mode`.

use serde::Serialize;
use tenant_registry::api_key_digest_hex;
use testbed::{FilterSet, PoolSpec, TestbedConfig};

use super::plan::{MAX_TOKENS, Scenario};
use crate::scenario::{MODEL, Settings};

pub const POOL: &str = "latency";
/// Fair-queuing cost of a generated token relative to a prompt token,
/// passed to ratelimit-service and used to compute service the same way.
pub const OUTPUT_TOKEN_WEIGHT: f64 = 2.0;
/// Longest wait in the admission queue before a 503.
pub const MAX_QUEUE_WAIT_MS: u64 = 20_000;
/// Requests one tenant may have waiting before a 429.
pub const MAX_QUEUE_DEPTH: u32 = 64;
/// Tenant that only sends the probe request.
pub const PROBE_TENANT: &str = "probe";

/// Admission order of ratelimit-service's pool queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueMode {
    Fair,
    Fifo,
}

impl QueueMode {
    pub fn as_str(self) -> &'static str {
        match self {
            QueueMode::Fair => "fair",
            QueueMode::Fifo => "fifo",
        }
    }
}

/// Size and speed of the mock pool.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PoolShape {
    pub replicas: usize,
    /// `max_in_flight_per_replica`: requests admitted at once per replica.
    pub slots_per_replica: u32,
    /// One mock decode step, whatever the batch size.
    pub step_ms: u64,
    /// Mock prefill cost per prompt token.
    pub prefill_us_per_token: u64,
}

impl PoolShape {
    pub fn slots(&self) -> u32 {
        self.slots_per_replica
            .saturating_mul(u32::try_from(self.replicas).unwrap_or(u32::MAX))
    }

    /// Seconds a chat request holds its slot: one step per output token.
    pub fn chat_service_s(&self) -> f64 {
        f64::from(MAX_TOKENS) * self.step_ms as f64 / 1000.0
    }

    /// Chat requests per second the pool completes when every slot is busy.
    pub fn capacity_rps(&self) -> f64 {
        f64::from(self.slots()) / self.chat_service_s()
    }

    /// Every step costs the same whatever the batch, and the batch is larger
    /// than the gateway's slots: the gateway's cap alone decides how many
    /// requests run, and a request's run time does not depend on where the
    /// prefix-affinity hash sends it.
    fn mock_args(&self) -> Vec<String> {
        let per_replica = self.slots_per_replica.saturating_mul(4).max(16);
        [
            "--decode-base-us".to_owned(),
            (self.step_ms * 1000).to_string(),
            "--decode-us-per-seq".to_owned(),
            "0".to_owned(),
            "--prefill-us-per-token".to_owned(),
            self.prefill_us_per_token.to_string(),
            "--max-num-seqs".to_owned(),
            per_replica.to_string(),
            "--num-gpu-blocks".to_owned(),
            "65536".to_owned(),
        ]
        .to_vec()
    }
}

/// API key of `tenant`; local and throwaway, only its digest is registered.
pub fn api_key(tenant: &str) -> String {
    format!("sk-fair-{tenant}")
}

/// One tier, one pool, every tenant of every scenario with its weight, and
/// limits no run reaches: only the pool queue refuses.
pub fn registry(scenarios: &[Scenario], pool: &PoolShape) -> String {
    let mut text = format!(
        r#"
[gateway]
cache_profile = "strict"
max_body_bytes = 1048576
long_context_tokens = 100000
prefix_block_tokens = 16
default_max_tokens = {MAX_TOKENS}

[tiers.shared]
priority = 1
pools = ["{POOL}"]
max_context_tokens = 131072
max_output_tokens = 1024
fail_mode = "closed"
limits = {{ rpm = 1000000000, tpm = 1000000000000, max_concurrency = 1000000, daily_budget_usd = 1000000000.0, monthly_budget_usd = 1000000000.0 }}

[models."{MODEL}"]
groups = ["chat"]
max_context_tokens = 131072
price = {{ input_per_mtok = 0.2, output_per_mtok = 0.6 }}

[pools.{POOL}]
class = "latency"
max_in_flight_per_replica = {slots}
max_queue_wait_ms = {MAX_QUEUE_WAIT_MS}
max_queue_depth_per_tenant = {MAX_QUEUE_DEPTH}
metrics_interval_ms = 200
"#,
        slots = pool.slots_per_replica,
    );
    let tenants = scenarios
        .iter()
        .flat_map(|s| s.tenants.iter().map(|t| (t.tenant.as_str(), t.weight)))
        .chain([(PROBE_TENANT, 1.0)]);
    for (tenant, weight) in tenants {
        text.push_str(&format!(
            r#"
[[tenants]]
id = "{tenant}"
tier = "shared"
weight = {weight:?}
models = ["*"]
api_keys = [{{ id = "bench", sha256 = "{digest}" }}]
"#,
            digest = api_key_digest_hex(&api_key(tenant)),
        ));
    }
    text
}

/// The full chain on `pool`, its queue in `mode`.
pub fn testbed(
    settings: &Settings,
    registry: &str,
    pool: &PoolShape,
    mode: QueueMode,
) -> TestbedConfig {
    let mut config = TestbedConfig::new(registry);
    config.run_dir = settings
        .logs_dir
        .as_ref()
        .map(|dir| dir.join(format!("fairness-{}", mode.as_str())));
    config.filters = FilterSet::ALL;
    config.ratelimit = true;
    config.ratelimit_args = vec![
        "--queue-mode".to_owned(),
        mode.as_str().to_owned(),
        "--output-token-weight".to_owned(),
        OUTPUT_TOKEN_WEIGHT.to_string(),
    ];
    config.envoy_concurrency = settings.envoy_concurrency;
    config.pools = vec![PoolSpec {
        mock_args: pool.mock_args(),
        ..PoolSpec::new(POOL, pool.replicas)
    }];
    config
}
