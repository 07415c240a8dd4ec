//! `llm_policy::decide_body` on any request body, for each endpoint: any
//! decision or refusal is fine, a panic is not. And when the body is JSON
//! serde_json accepts and the policy rewrites it, the rewrite is such JSON
//! too (the rewriter splices raw member text).
//!
//! Byte 0 picks the call: bits 0-1 the endpoint (chat, completions,
//! embeddings, responses), bits 2-3 the tenant (acme, hobby, shared, beta),
//! bits 4-5 the `x-workload` header (none, `batch`, `interactive`,
//! ` Batch `). So `@` is chat for acme, `A` completions, `B` embeddings,
//! `C` responses. The rest is the body.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use llm_policy::endpoint::Endpoint;
use llm_policy::{Policy, PoolLimits};

const ENDPOINTS: [Endpoint; 4] = [
    Endpoint::ChatCompletions,
    Endpoint::Completions,
    Endpoint::Embeddings,
    Endpoint::Responses,
];
const TENANTS: [&str; 4] = ["acme", "hobby", "shared", "beta"];
const WORKLOADS: [Option<&str>; 4] = [None, Some("batch"), Some("interactive"), Some(" Batch ")];

/// The registry of llm-policy's unit tests (src/test_support.rs), plus media
/// hosts and chat templates for one tier, so those branches are reachable.
fn policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| {
        let config = serde_json::json!({
            "registry": {
                "gateway": {
                    "cache_profile": "strict", "max_body_bytes": 16384,
                    "long_context_tokens": 1000, "prefix_block_tokens": 16,
                    "default_max_tokens": 256,
                    "media_url_hosts": ["images.example.com"]
                },
                "tiers": {
                    "enterprise": {"pools": ["latency", "throughput"], "max_context_tokens": 8192, "max_output_tokens": 2048, "vllm_priority": 1},
                    "free": {"pools": ["throughput"], "max_context_tokens": 2048, "max_output_tokens": 512},
                    "internal": {"cache_profile": "trusted", "allow_chat_templates": true}
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
                    {"id": "beta", "tier": "enterprise", "models": ["chat-small"], "pools": ["throughput"]}
                ]
            },
            "cache_secret": "test-cache-secret-that-is-long-enough-32b",
            "prefix_key_blocks": 4
        });
        Policy::from_json(config.to_string().as_bytes()).expect("fuzz policy config loads")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&select, body)) = data.split_first() else {
        return;
    };
    let policy = policy();
    let endpoint = ENDPOINTS[usize::from(select & 3)];
    let tenant_id = TENANTS[usize::from((select >> 2) & 3)];
    let workload = WORKLOADS[usize::from((select >> 4) & 3)];
    let tenant = policy
        .registry
        .tenant(tenant_id)
        .expect("tenant is configured");
    let Ok(decision) = llm_policy::decide_body(
        policy,
        &PoolLimits::default(),
        tenant,
        endpoint,
        workload,
        body,
    ) else {
        return;
    };
    if let Some(rewritten) = &decision.body
        && serde_json::from_slice::<serde_json::Value>(body).is_ok()
        && let Err(e) = serde_json::from_slice::<serde_json::Value>(rewritten)
    {
        panic!(
            "rewritten body is not JSON ({e}): {}",
            String::from_utf8_lossy(rewritten)
        );
    }
});
