//! `GET /v1/models` and `GET /v1/models/{id}`, answered by the gateway from
//! the tenant's allowlist, so a tenant sees exactly what it may call (its own
//! adapters included, other tenants' never).
//!
//! `max_model_len` is the window the tenant can count on: the smallest of
//! the model's cap, its tier's cap, and the real `max_model_len` of every
//! pool it may be routed to that is known to serve the model.

use serde_json::{Value, json};
use tenant_registry::{Registry, Tenant};

use crate::error::PolicyError;
use crate::pool_limits::PoolLimits;

/// `owned_by` of shared models.
const OWNER: &str = "gateway";

fn model_object(registry: &Registry, limits: &PoolLimits, tenant: &Tenant, name: &str) -> Value {
    let entry = registry.config().models.get(name);
    let base = entry.and_then(|m| m.base.as_deref());
    let model_cap = entry.and_then(|m| {
        m.max_context_tokens
            .or_else(|| base.and_then(|b| registry.config().models.get(b)?.max_context_tokens))
    });
    let tier_cap = registry.tier_of(tenant).and_then(|t| t.max_context_tokens);
    let pool_cap = limits.smallest_for(registry, tenant, name);
    let max_model_len = [model_cap, tier_cap, pool_cap].into_iter().flatten().min();
    let owner = entry.and_then(|m| m.tenant.as_deref()).unwrap_or(OWNER);
    // vLLM's model card: `root` is the base weights, `parent` set for adapters.
    json!({
        "id": name,
        "object": "model",
        "created": 0,
        "owned_by": owner,
        "root": base.unwrap_or(name),
        "parent": base,
        "max_model_len": max_model_len,
    })
}

/// The OpenAI list of every model and adapter `tenant` may call.
pub fn list(registry: &Registry, limits: &PoolLimits, tenant: &Tenant) -> Vec<u8> {
    let data: Vec<Value> = registry
        .models_for(tenant)
        .into_iter()
        .map(|name| model_object(registry, limits, tenant, name))
        .collect();
    json!({ "object": "list", "data": data })
        .to_string()
        .into_bytes()
}

/// One model, or 404 whether it is unknown or not allowed (no catalogue oracle).
pub fn retrieve(
    registry: &Registry,
    limits: &PoolLimits,
    tenant: &Tenant,
    id: &str,
) -> Result<Vec<u8>, PolicyError> {
    if !registry.model_allowed(tenant, id) {
        return Err(PolicyError::ModelNotFound(id.to_owned()));
    }
    Ok(model_object(registry, limits, tenant, id)
        .to_string()
        .into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{limits, policy};

    fn ids(tenant: &str) -> Vec<String> {
        let p = policy();
        let body = list(
            &p.registry,
            &PoolLimits::default(),
            p.registry.tenant(tenant).unwrap(),
        );
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["object"], "list");
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                assert_eq!(m["object"], "model");
                m["id"].as_str().unwrap().to_owned()
            })
            .collect()
    }

    #[test]
    fn lists_only_allowed_models() {
        assert_eq!(
            ids("acme"),
            ["acme-lora", "chat-large", "chat-small", "embed"]
        );
        assert_eq!(ids("hobby"), ["chat-large", "chat-small"]);
        assert_eq!(ids("shared"), ["chat-large", "chat-small", "embed"]);
    }

    #[test]
    fn adapter_card() {
        let p = policy();
        let acme = p.registry.tenant("acme").unwrap();
        let none = PoolLimits::default();
        let v: Value =
            serde_json::from_slice(&retrieve(&p.registry, &none, acme, "acme-lora").unwrap())
                .unwrap();
        assert_eq!(v["owned_by"], "acme");
        assert_eq!(v["parent"], "chat-small");
        assert_eq!(v["root"], "chat-small");
        assert_eq!(v["max_model_len"], 4096);
        let hobby = p.registry.tenant("hobby").unwrap();
        for id in ["acme-lora", "unknown"] {
            assert_eq!(
                retrieve(&p.registry, &none, hobby, id),
                Err(PolicyError::ModelNotFound(id.into()))
            );
        }
    }

    fn window(tenant: &str, model: &str, known: &PoolLimits) -> Value {
        let p = policy();
        let t = p.registry.tenant(tenant).unwrap();
        let v: Value =
            serde_json::from_slice(&retrieve(&p.registry, known, t, model).unwrap()).unwrap();
        v["max_model_len"].clone()
    }

    #[test]
    fn max_model_len_is_the_effective_window() {
        let none = PoolLimits::default();
        // Registry only: the model's cap, the tier's, the smaller.
        assert_eq!(window("acme", "chat-small", &none), 4096);
        assert_eq!(window("acme", "chat-large", &none), 8192);
        assert_eq!(window("shared", "chat-large", &none), Value::Null);
        // The pools' real windows, the smallest the tenant can be routed to.
        let known = limits(&[
            ("latency", "chat-small", 2048),
            ("throughput", "chat-small", 3000),
            ("latency", "chat-large", 100_000),
        ]);
        assert_eq!(window("acme", "chat-small", &known), 2048);
        assert_eq!(window("acme", "acme-lora", &known), 2048, "the base's");
        // beta never reaches latency.
        assert_eq!(window("beta", "chat-small", &known), 3000);
        // A pool larger than the registry's caps changes nothing.
        assert_eq!(window("acme", "chat-large", &known), 8192);
        assert_eq!(window("shared", "chat-large", &known), 100_000);
    }
}
