//! `GET /v1/models` and `GET /v1/models/{id}`, answered by the gateway from
//! the tenant's allowlist, so a tenant sees exactly what it may call (its own
//! adapters included, other tenants' never).

use serde_json::{Value, json};
use tenant_registry::{Registry, Tenant};

use crate::error::PolicyError;

/// `owned_by` of shared models.
const OWNER: &str = "gateway";

fn model_object(registry: &Registry, name: &str) -> Value {
    let entry = registry.config().models.get(name);
    let base = entry.and_then(|m| m.base.as_deref());
    let max_model_len = entry.and_then(|m| {
        m.max_context_tokens
            .or_else(|| base.and_then(|b| registry.config().models.get(b)?.max_context_tokens))
    });
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
pub fn list(registry: &Registry, tenant: &Tenant) -> Vec<u8> {
    let data: Vec<Value> = registry
        .models_for(tenant)
        .into_iter()
        .map(|name| model_object(registry, name))
        .collect();
    json!({ "object": "list", "data": data })
        .to_string()
        .into_bytes()
}

/// One model, or 404 whether it is unknown or not allowed (no catalogue oracle).
pub fn retrieve(registry: &Registry, tenant: &Tenant, id: &str) -> Result<Vec<u8>, PolicyError> {
    if !registry.model_allowed(tenant, id) {
        return Err(PolicyError::ModelNotFound(id.to_owned()));
    }
    Ok(model_object(registry, id).to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::policy;

    fn ids(tenant: &str) -> Vec<String> {
        let p = policy();
        let body = list(&p.registry, p.registry.tenant(tenant).unwrap());
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
        let v: Value =
            serde_json::from_slice(&retrieve(&p.registry, acme, "acme-lora").unwrap()).unwrap();
        assert_eq!(v["owned_by"], "acme");
        assert_eq!(v["parent"], "chat-small");
        assert_eq!(v["root"], "chat-small");
        assert_eq!(v["max_model_len"], 4096);
        let hobby = p.registry.tenant("hobby").unwrap();
        for id in ["acme-lora", "unknown"] {
            assert_eq!(
                retrieve(&p.registry, hobby, id),
                Err(PolicyError::ModelNotFound(id.into()))
            );
        }
    }
}
