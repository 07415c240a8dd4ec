//! The benchmarks: what each compares, on which testbeds, with which request.
//! Shared here: the bench registry, the fast mock pools, the chat request and
//! the check that the filters a scenario needs are built.

pub mod admission;
pub mod admission_rpc;
pub mod auth;
pub mod builds;
pub mod host_costs;
pub mod module;
pub mod policy;
pub mod registry_scale;

use std::path::PathBuf;

use serde_json::json;
use tenant_registry::api_key_digest_hex;
use testbed::{FilterSet, Paths, PoolSpec, TestbedConfig, TestbedError};

use crate::error::BenchError;
use crate::harness::{Comparison, LoadPlan};
use crate::load::RequestRecipe;
use crate::report::{Host, Report, now_utc, reproduce_command};
use crate::text::english_like;

/// The bench tenant's key; local and throwaway, only its digest reaches the registry.
pub const BENCH_API_KEY: &str = "sk-bench-local-0123456789abcdef";
pub const MODEL: &str = "llama-3.1-8b-instruct";
/// One output token: the upstream should cost as little as possible.
const MAX_TOKENS: u32 = 1;

/// What every scenario needs from the command line.
#[derive(Debug, Clone)]
pub struct Settings {
    pub plan: LoadPlan,
    pub envoy_concurrency: u32,
    /// Mock replicas per pool.
    pub replicas: usize,
    /// Keep testbed logs under this directory, one subdirectory per side.
    pub logs_dir: Option<PathBuf>,
}

impl Settings {
    /// A testbed with `filters` on the bench registry and fast mock pools;
    /// `side` names its log directory when logs are kept.
    pub fn testbed(&self, side: &str, filters: FilterSet) -> TestbedConfig {
        let mut config = TestbedConfig::new(registry());
        config.run_dir = self.logs_dir.as_ref().map(|dir| dir.join(side));
        config.filters = filters;
        config.ratelimit = filters.admission;
        config.envoy_concurrency = self.envoy_concurrency;
        config.pools = ["latency", "throughput"]
            .into_iter()
            .map(|name| PoolSpec {
                mock_args: fast_mock_args(),
                ..PoolSpec::new(name, self.replicas)
            })
            .collect();
        config
    }

    pub fn report(
        &self,
        benchmark: &str,
        title: &str,
        question: &str,
        comparisons: Vec<Comparison>,
    ) -> Report {
        let root = Paths::locate().map(|p| p.root).unwrap_or_default();
        Report {
            benchmark: benchmark.to_owned(),
            title: title.to_owned(),
            question: question.to_owned(),
            command: reproduce_command(),
            generated_at: now_utc(),
            host: Host::current(&root, self.envoy_concurrency),
            comparisons,
        }
    }
}

/// Near-zero model timings and a batch big enough never to queue, so the
/// gateway, not the mock GPU, is what saturates. KV room for ~70 requests of
/// 64 KiB in flight.
fn fast_mock_args() -> Vec<String> {
    [
        "--prefill-us-per-token",
        "0",
        "--decode-base-us",
        "0",
        "--decode-us-per-seq",
        "0",
        "--max-num-seqs",
        "256",
        "--num-gpu-blocks",
        "65536",
        "--max-model-len",
        "131072",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// One tenant with limits far above anything a bench run reaches: admission
/// does all its bookkeeping but never says no.
pub fn registry() -> String {
    format!(
        r#"
[gateway]
cache_profile = "strict"
max_body_bytes = 1048576
long_context_tokens = 100000
prefix_block_tokens = 64
default_max_tokens = 16

[tiers.bench]
priority = 1
pools = ["latency", "throughput"]
max_context_tokens = 131072
max_output_tokens = 1024
fail_mode = "closed"
limits = {{ rpm = 1000000000, tpm = 1000000000000, max_concurrency = 1000000, daily_budget_usd = 1000000000.0, monthly_budget_usd = 1000000000.0 }}

[models."{MODEL}"]
groups = ["chat"]
max_context_tokens = 131072
price = {{ input_per_mtok = 0.2, output_per_mtok = 0.6 }}

[pools.latency]
class = "latency"
max_in_flight_per_replica = 100000
max_queue_depth_per_tenant = 100000

[pools.throughput]
class = "throughput"
max_in_flight_per_replica = 100000
max_queue_depth_per_tenant = 100000

[[tenants]]
id = "bench"
tier = "bench"
models = ["*"]
api_keys = [{{ id = "bench", sha256 = "{digest}" }}]
"#,
        digest = api_key_digest_hex(BENCH_API_KEY)
    )
}

/// A chat completion of the bench tenant with `content` as the user message.
pub fn chat_recipe(label: &str, content: &str) -> RequestRecipe {
    let body = json!({
        "model": MODEL,
        "messages": [{ "role": "user", "content": content }],
        "max_tokens": MAX_TOKENS,
    });
    RequestRecipe::post_json(label, "/v1/chat/completions", &body)
        .with_header("authorization", format!("Bearer {BENCH_API_KEY}"))
}

/// A chat completion whose JSON body is `body_bytes` long (give or take a
/// word), the user message filled with English-like text.
pub fn chat_recipe_of_size(label: &str, body_bytes: usize) -> RequestRecipe {
    let envelope = chat_recipe(label, "").body_bytes;
    chat_recipe(label, &english_like(body_bytes.saturating_sub(envelope)))
}

/// Fails early, with the build command, when the chain needs something not built.
pub fn require_built(filters: FilterSet) -> Result<(), BenchError> {
    if filters.tenant_auth || filters.llm_policy || filters.admission {
        require_wasm("llm_gateway")?;
    }
    let paths = Paths::locate().map_err(BenchError::Locate)?;
    let mut binaries = vec!["mock-vllm"];
    if filters.admission {
        binaries.push("ratelimit-service");
    }
    for binary in binaries {
        if let Err(TestbedError::MissingArtifact(path)) = paths.binary(binary) {
            return Err(BenchError::BinaryNotBuilt { binary, path });
        }
    }
    Ok(())
}

/// The wasm module `name` (the gateway's, or a test filter) must be built.
pub fn require_wasm(name: &str) -> Result<(), BenchError> {
    let paths = Paths::locate().map_err(BenchError::Locate)?;
    match paths.wasm(name) {
        Err(TestbedError::MissingArtifact(path)) => Err(BenchError::ModuleNotBuilt { path }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bench_registry_loads_and_knows_the_bench_key() {
        let registry = tenant_registry::Registry::from_toml(&registry()).expect("bench registry");
        let digest = tenant_registry::api_key_digest(BENCH_API_KEY);
        let (tenant, _, _) = registry.key_by_digest(&digest).expect("bench key");
        assert_eq!(tenant.id, "bench");
        assert!(registry.model_allowed(tenant, MODEL));
    }

    #[test]
    fn sized_recipes_hit_their_size() {
        for size in [1024, 65536] {
            let recipe = chat_recipe_of_size("chat", size);
            assert!(recipe.body_bytes <= size, "{size}: {}", recipe.body_bytes);
            assert!(
                recipe.body_bytes + 20 > size,
                "{size}: {}",
                recipe.body_bytes
            );
            let body: serde_json::Value = serde_json::from_slice(&recipe.body).expect("JSON body");
            assert_eq!(body["max_tokens"], 1);
        }
    }

    #[test]
    fn recipes_carry_the_bench_key() {
        let recipe = chat_recipe("chat", "hi");
        let auth = recipe
            .headers
            .iter()
            .find(|(name, _)| name == "authorization");
        assert_eq!(
            auth.map(|(_, v)| v.as_str()),
            Some("Bearer sk-bench-local-0123456789abcdef")
        );
    }
}
