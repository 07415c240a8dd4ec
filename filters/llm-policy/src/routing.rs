//! Pool choice: the workload class picks the preferred pool class, the
//! tenant's allowed pools bound the choice.
//!
//! - embeddings, long context (longest sequence above
//!   `gateway.long_context_tokens`) and batch go to a throughput pool;
//! - everything else (interactive chat and completions, streaming or not)
//!   goes to a latency pool.
//!
//! Batch is a client hint: the `x-workload: batch` header, `metadata.workload
//! = "batch"` in the body, or OpenAI's `service_tier = "flex"`. (Not an
//! `x-llm-*` header: tenant-auth strips those as gateway-owned.) Hints can
//! only move a request toward throughput; the pool always comes from the
//! tenant's allowed list, so a tenant whose policy excludes the latency pool
//! never reaches it whatever it sends. When no allowed pool has the preferred
//! class, the first allowed pool serves (a latency-only tenant's batch job
//! still runs).

use tenant_registry::{PoolClass, PoolName, Registry, Tenant};

use crate::endpoint::Endpoint;
use crate::error::PolicyError;

/// Client header that asks for batch treatment.
pub const WORKLOAD_HEADER: &str = "x-workload";

/// Why a request goes where it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    Interactive,
    Batch,
    Embeddings,
    LongContext,
}

impl Workload {
    pub fn pool_class(self) -> PoolClass {
        match self {
            Workload::Interactive => PoolClass::Latency,
            Workload::Batch | Workload::Embeddings | Workload::LongContext => PoolClass::Throughput,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Workload::Interactive => "interactive",
            Workload::Batch => "batch",
            Workload::Embeddings => "embeddings",
            Workload::LongContext => "long_context",
        }
    }
}

/// Inputs of the workload class.
#[derive(Debug, Clone, Copy)]
pub struct WorkloadSignals<'a> {
    pub endpoint: Endpoint,
    /// Longest sequence of the prompt estimate.
    pub longest_prompt: u32,
    /// `gateway.long_context_tokens`.
    pub long_context_tokens: u32,
    /// The body asked for batch (`metadata.workload`, `service_tier`).
    pub body_batch_hint: bool,
    /// Value of [`WORKLOAD_HEADER`].
    pub header: Option<&'a str>,
}

pub fn workload(s: &WorkloadSignals<'_>) -> Workload {
    if s.endpoint == Endpoint::Embeddings {
        Workload::Embeddings
    } else if s.longest_prompt > s.long_context_tokens {
        Workload::LongContext
    } else if s.body_batch_hint
        || s.header
            .is_some_and(|h| h.trim().eq_ignore_ascii_case("batch"))
    {
        Workload::Batch
    } else {
        Workload::Interactive
    }
}

/// The pool for `workload` among the tenant's allowed pools, in their order.
pub fn choose_pool(
    registry: &Registry,
    tenant: &Tenant,
    workload: Workload,
) -> Result<PoolName, PolicyError> {
    let pools = &registry.config().pools;
    let allowed: Vec<PoolName> = registry
        .allowed_pools(tenant)
        .into_iter()
        .filter(|name| pools.contains_key(name.as_str()))
        .collect();
    let preferred = workload.pool_class();
    allowed
        .iter()
        .find(|name| {
            pools
                .get(name.as_str())
                .is_some_and(|p| p.class == preferred)
        })
        .or_else(|| allowed.first())
        .cloned()
        .ok_or(PolicyError::NoPool)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::policy;

    fn signals(endpoint: Endpoint, longest: u32, body: bool, header: Option<&str>) -> Workload {
        workload(&WorkloadSignals {
            endpoint,
            longest_prompt: longest,
            long_context_tokens: 1000,
            body_batch_hint: body,
            header,
        })
    }

    #[test]
    fn workload_classes() {
        let chat = Endpoint::ChatCompletions;
        assert_eq!(signals(chat, 10, false, None), Workload::Interactive);
        assert_eq!(signals(chat, 1001, false, None), Workload::LongContext);
        assert_eq!(signals(chat, 1000, false, None), Workload::Interactive);
        assert_eq!(signals(chat, 10, true, None), Workload::Batch);
        assert_eq!(signals(chat, 10, false, Some(" Batch ")), Workload::Batch);
        assert_eq!(
            signals(chat, 10, false, Some("interactive")),
            Workload::Interactive
        );
        assert_eq!(
            signals(Endpoint::Embeddings, 10, false, None),
            Workload::Embeddings
        );
    }

    fn pool(tenant: &str, w: Workload) -> PoolName {
        let p = policy();
        let t = p.registry.tenant(tenant).unwrap().clone();
        choose_pool(&p.registry, &t, w).unwrap()
    }

    #[test]
    fn pools_follow_class_within_allowed() {
        assert_eq!(pool("acme", Workload::Interactive), "latency");
        assert_eq!(pool("acme", Workload::Batch), "throughput");
        assert_eq!(pool("acme", Workload::LongContext), "throughput");
        assert_eq!(pool("acme", Workload::Embeddings), "throughput");
        // Free tier and a tenant override exclude latency: never reached.
        for tenant in ["hobby", "beta"] {
            for w in [Workload::Interactive, Workload::Batch] {
                assert_eq!(pool(tenant, w), "throughput", "{tenant} {w:?}");
            }
        }
        // A tier without a pool list may use every pool.
        assert_eq!(pool("shared", Workload::Interactive), "latency");
    }
}
