//! What the pools really serve: per pool and model the `max_model_len` the
//! replicas were started with, as ratelimit-service learned it from their
//! `/v1/models` (its `PoolLimits` RPC, polled by the filter's root context
//! when `limits_cluster` is configured).
//!
//! The registry's `max_context_tokens` is what operators wrote; a pool
//! started with a smaller `--max-model-len` refuses longer requests with a
//! 400 that the gateway bills (the prompt estimate). Knowing the real limit
//! the gateway refuses them itself, before admission, and `/v1/models`
//! tells tenants the window they really get. A pool or model not (yet)
//! known has no limit here: the registry's caps alone apply, as without
//! the service.

use std::collections::BTreeMap;
use std::time::Duration;

use admission_proto::v1::PoolLimitsResponse;
use tenant_registry::{Registry, Tenant};

/// How often the root context asks for the pools' limits.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(2);
/// The tick until the first answer: a new configuration (every registry
/// reload) starts with no limits, so the first ask should not wait 2 s.
pub const FIRST_REFRESH: Duration = Duration::from_millis(200);
/// Timeout of one `PoolLimits` call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(1);
/// Largest answer decoded: one entry per pool and model is a few dozen
/// bytes, so this is thousands of models.
pub const MAX_ANSWER_BYTES: usize = 1 << 20;

/// pool -> model -> max_model_len.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolLimits {
    pools: BTreeMap<String, BTreeMap<String, u32>>,
}

impl PoolLimits {
    /// The service's answer; zero lengths (no limit learned) are left out.
    pub fn from_response(response: PoolLimitsResponse) -> Self {
        let mut pools: BTreeMap<String, BTreeMap<String, u32>> = BTreeMap::new();
        for limit in response.limits.into_iter().filter(|l| l.max_model_len > 0) {
            pools
                .entry(limit.pool)
                .or_default()
                .insert(limit.model, limit.max_model_len);
        }
        Self { pools }
    }

    pub fn is_empty(&self) -> bool {
        self.pools.is_empty()
    }

    /// `pool`'s limit for `model`. A LoRA adapter's card carries no length
    /// in vLLM (it runs in its base's window), so an adapter the pool does
    /// not list is looked up under its base model.
    pub fn max_model_len(&self, registry: &Registry, pool: &str, model: &str) -> Option<u32> {
        let lens = self.pools.get(pool)?;
        lens.get(model).copied().or_else(|| {
            let base = registry.config().models.get(model)?.base.as_deref()?;
            lens.get(base).copied()
        })
    }

    /// The smallest limit for `model` among the pools `tenant` may be routed
    /// to: the window it can count on whichever pool serves it.
    pub fn smallest_for(&self, registry: &Registry, tenant: &Tenant, model: &str) -> Option<u32> {
        registry
            .allowed_pools(tenant)
            .iter()
            .filter_map(|pool| self.max_model_len(registry, pool, model))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{limits, policy};

    #[test]
    fn lookups_by_pool_model_and_adapter_base() {
        let p = policy();
        let l = limits(&[
            ("latency", "chat-small", 2048),
            ("throughput", "chat-small", 1024),
            ("throughput", "chat-large", 0),
        ]);
        assert_eq!(
            l.max_model_len(&p.registry, "latency", "chat-small"),
            Some(2048)
        );
        // acme-lora is served on chat-small and not listed itself.
        assert_eq!(
            l.max_model_len(&p.registry, "latency", "acme-lora"),
            Some(2048)
        );
        // Unknown pool, unknown model, a zero (nothing learned).
        assert_eq!(l.max_model_len(&p.registry, "gpu", "chat-small"), None);
        assert_eq!(l.max_model_len(&p.registry, "latency", "chat-large"), None);
        assert_eq!(
            l.max_model_len(&p.registry, "throughput", "chat-large"),
            None
        );
        assert!(PoolLimits::default().is_empty());
    }

    #[test]
    fn smallest_among_the_tenants_pools() {
        let p = policy();
        let l = limits(&[
            ("latency", "chat-small", 2048),
            ("throughput", "chat-small", 4096),
        ]);
        let tenant = |id| p.registry.tenant(id).unwrap();
        // acme may use both pools; beta only throughput.
        assert_eq!(
            l.smallest_for(&p.registry, tenant("acme"), "chat-small"),
            Some(2048)
        );
        assert_eq!(
            l.smallest_for(&p.registry, tenant("beta"), "chat-small"),
            Some(4096)
        );
        assert_eq!(
            l.smallest_for(&p.registry, tenant("acme"), "chat-large"),
            None
        );
    }
}
