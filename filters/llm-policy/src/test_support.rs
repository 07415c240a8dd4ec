//! The registry every unit test runs against.

use admission_proto::v1::{PoolLimitsResponse, PoolModelLimit};

use crate::config::Policy;
use crate::pool_limits::PoolLimits;

pub const SECRET: &str = "test-cache-secret-that-is-long-enough-32b";

/// Tenants: `acme` (enterprise, both pools, owns `acme-lora`), `hobby` (free:
/// throughput only, small caps), `shared` (trusted cache profile, every pool),
/// `beta` (enterprise tier, but its own pool list excludes latency), `gone`
/// (disabled).
pub fn config_json() -> String {
    let registry = r#"{
        "gateway": {"cache_profile": "strict", "max_body_bytes": 16384, "long_context_tokens": 1000,
                    "prefix_block_tokens": 16, "default_max_tokens": 256},
        "tiers": {
            "enterprise": {"pools": ["latency", "throughput"], "max_context_tokens": 8192, "max_output_tokens": 2048},
            "free": {"pools":["throughput"], "max_context_tokens": 2048, "max_output_tokens": 512},
            "internal": {"cache_profile": "trusted"}
        },
        "models": {
            "chat-small": {"kind": "chat", "groups": ["chat"], "max_context_tokens": 4096},
            "chat-large": {"kind": "chat", "groups": ["chat"]},
            "embed": {"kind": "embedding", "groups": ["embeddings"], "max_context_tokens": 512},
            "acme-lora": {"base": "chat-small", "tenant": "acme"}
        },
        "pools": {"latency": {"class": "latency"}, "throughput": {"class": "throughput"}},
        "tenants": [
            {"id": "acme", "tier": "enterprise", "models": ["group:chat", "group:embeddings"]},
            {"id": "hobby", "tier": "free", "models": ["chat-*"]},
            {"id": "shared", "tier": "internal", "models": ["*"]},
            {"id": "beta", "tier": "enterprise", "models": ["chat-small"], "pools": ["throughput"]},
            {"id": "gone", "tier": "free", "disabled": true, "models": ["*"]}
        ]
    }"#;
    let compact: String = registry.split_whitespace().collect::<Vec<_>>().join("");
    format!(r#"{{"registry":{compact},"cache_secret":"{SECRET}","prefix_key_blocks":4}}"#)
}

pub fn policy() -> Policy {
    Policy::from_json(config_json().as_bytes()).expect("test config loads")
}

/// Pool limits as the service would answer them: (pool, model, max_model_len).
pub fn limits(entries: &[(&str, &str, u32)]) -> PoolLimits {
    PoolLimits::from_response(PoolLimitsResponse {
        limits: entries
            .iter()
            .map(|(pool, model, len)| PoolModelLimit {
                pool: (*pool).into(),
                model: (*model).into(),
                max_model_len: *len,
            })
            .collect(),
    })
}
