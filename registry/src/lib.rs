//! The tenant registry: one file that is the source of truth for the
//! filters (identity, model access, pools) and for ratelimit-service (limits,
//! prices, weights).
//!
//! [`Registry::from_toml`] / [`Registry::from_json`] parse and validate; the
//! result carries O(1) indexes from key digest and SPIFFE ID to tenant.

// A panic kills the wasm VM of an Envoy worker: code that runs there may not
// panic (the same block in every crate compiled into the filters; checked by
// filters/common/tests/lint_policy.rs).
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod config;
mod error;
mod index;
mod limits;
mod models;
mod names;
mod validate;

pub use config::*;
pub use error::RegistryError;
pub use limits::{Limits, Per, Unit, WindowLimit};
pub use models::ModelPattern;
pub use names::{ModelName, PoolName, TenantId, TierName};
pub use validate::valid_id;

use hashbrown::HashMap;
use index::TenantIndex;
use sha2::{Digest, Sha256};

/// A validated registry with lookup indexes.
#[derive(Debug, Clone)]
pub struct Registry {
    config: RegistryConfig,
    tenant_index: TenantIndex,
    key_index: HashMap<[u8; 32], KeyRef>,
    spiffe_index: HashMap<String, usize>,
    /// Some key has an expiry: known at load, asked on every request.
    expiring_keys: bool,
}

/// Where a key digest points: tenant and key position in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRef {
    pub tenant: usize,
    pub key: usize,
    /// Unix seconds after which the key is refused.
    pub expires_at: Option<i64>,
}

/// SHA-256 of an API key's plaintext, as stored in the registry.
pub fn api_key_digest(plaintext: &str) -> [u8; 32] {
    Sha256::digest(plaintext.as_bytes()).into()
}

/// Lower-case hex form of [`api_key_digest`].
pub fn api_key_digest_hex(plaintext: &str) -> String {
    hex::encode(api_key_digest(plaintext))
}

impl Registry {
    /// Parses and validates the operator-facing TOML form.
    pub fn from_toml(text: &str) -> Result<Self, RegistryError> {
        let config: RegistryConfig =
            toml::from_str(text).map_err(|e| RegistryError::Parse(e.to_string()))?;
        Self::new(config)
    }

    /// Parses and validates the JSON form shipped inside filter configuration.
    pub fn from_json(text: &str) -> Result<Self, RegistryError> {
        let config: RegistryConfig =
            serde_json::from_str(text).map_err(|e| RegistryError::Parse(e.to_string()))?;
        Self::new(config)
    }

    /// Validates `config` and builds the indexes.
    pub fn new(mut config: RegistryConfig) -> Result<Self, RegistryError> {
        validate::validate(&config)?;
        // Parsing grows the list by doubling: up to a third of it would be
        // spare room, kept for the life of every filter VM.
        config.tenants.shrink_to_fit();
        let keys = config.tenants.iter().map(|t| t.api_keys.len()).sum();
        let tenant_index = TenantIndex::new(&config.tenants);
        let mut key_index = HashMap::with_capacity(keys);
        let mut spiffe_index = HashMap::new();
        for (t, tenant) in config.tenants.iter().enumerate() {
            for (k, key) in tenant.api_keys.iter().enumerate() {
                // Named only when something is wrong: a registry of real
                // size has a hundred thousand keys.
                let field = || format!("tenants[{t}].api_keys[{k}]");
                let digest = validate::parse_digest(&key.sha256, field)?;
                let expires_at = key
                    .expires_at
                    .as_deref()
                    .map(|s| validate::parse_rfc3339(s, &format!("{}.expires_at", field())))
                    .transpose()?;
                let entry = KeyRef {
                    tenant: t,
                    key: k,
                    expires_at,
                };
                if key_index.insert(digest, entry).is_some() {
                    return Err(RegistryError::Invalid {
                        field: format!("{}.sha256", field()),
                        reason: "digest already belongs to another key".into(),
                    });
                }
            }
            for (s, id) in tenant.spiffe_ids.iter().enumerate() {
                if spiffe_index.insert(id.clone(), t).is_some() {
                    return Err(RegistryError::Invalid {
                        field: format!("tenants[{t}].spiffe_ids[{s}]"),
                        reason: format!("SPIFFE ID {id} is already mapped to another tenant"),
                    });
                }
            }
        }
        let expiring_keys = key_index.values().any(|key| key.expires_at.is_some());
        Ok(Self {
            config,
            tenant_index,
            key_index,
            spiffe_index,
            expiring_keys,
        })
    }

    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// API keys, of every tenant.
    pub fn key_count(&self) -> usize {
        self.key_index.len()
    }

    pub fn tenants(&self) -> &[Tenant] {
        &self.config.tenants
    }

    pub fn tenant(&self, id: &str) -> Option<&Tenant> {
        self.tenant_index.find(&self.config.tenants, id)
    }

    /// The tier of a tenant (validation guarantees it exists).
    pub fn tier_of(&self, tenant: &Tenant) -> Option<&Tier> {
        self.config.tiers.get(&tenant.tier)
    }

    /// Looks up an API key by the digest of its plaintext.
    pub fn key_by_digest(&self, digest: &[u8; 32]) -> Option<(&Tenant, &ApiKey, KeyRef)> {
        let r = *self.key_index.get(digest)?;
        let tenant = self.config.tenants.get(r.tenant)?;
        Some((tenant, tenant.api_keys.get(r.key)?, r))
    }

    /// Whether any API key has an expiry (only then does a key's
    /// verification depend on the time).
    pub fn has_expiring_keys(&self) -> bool {
        self.expiring_keys
    }

    /// Whether any tenant is registered by a SPIFFE id (mTLS).
    pub fn has_spiffe_ids(&self) -> bool {
        !self.spiffe_index.is_empty()
    }

    pub fn tenant_by_spiffe(&self, spiffe_id: &str) -> Option<&Tenant> {
        self.spiffe_index
            .get(spiffe_id)
            .and_then(|&i| self.config.tenants.get(i))
    }

    /// The tenant's limits: its own overrides over its tier's.
    pub fn effective_limits(&self, tenant: &Tenant) -> Limits {
        match self.tier_of(tenant) {
            Some(tier) => tenant.limits().over(&tier.limits),
            None => tenant.limits().clone(),
        }
    }

    /// Fair-share weight: tenant override, else the tier's.
    pub fn weight(&self, tenant: &Tenant) -> f64 {
        tenant
            .weight
            .or_else(|| self.tier_of(tenant).map(|t| t.weight))
            .unwrap_or(1.0)
    }

    /// Cache profile: tenant override, else tier, else the gateway default.
    pub fn cache_profile(&self, tenant: &Tenant) -> CacheProfile {
        tenant
            .cache_profile
            .or_else(|| self.tier_of(tenant).and_then(|t| t.cache_profile))
            .unwrap_or(self.config.gateway.cache_profile)
    }

    /// Pools the tenant may be routed to (tenant override, else tier; empty
    /// tier list means every configured pool).
    pub fn allowed_pools(&self, tenant: &Tenant) -> Vec<PoolName> {
        if let Some(pools) = &tenant.pools {
            return pools.clone();
        }
        match self.tier_of(tenant) {
            Some(tier) if !tier.pools.is_empty() => tier.pools.clone(),
            _ => self.config.pools.keys().cloned().collect(),
        }
    }

    /// Whether [`Self::allowed_pools`] names at least one pool, without
    /// building the list.
    pub fn has_pool(&self, tenant: &Tenant) -> bool {
        match (&tenant.pools, self.tier_of(tenant)) {
            (Some(pools), _) => !pools.is_empty(),
            (None, Some(tier)) if !tier.pools.is_empty() => true,
            _ => !self.config.pools.is_empty(),
        }
    }

    /// Whether `tenant` may call `model` (an adapter only by its owner).
    pub fn model_allowed(&self, tenant: &Tenant, model: &str) -> bool {
        let Some(entry) = self.config.models.get(model) else {
            return false;
        };
        if entry.is_adapter() {
            return entry.tenant.as_deref() == Some(tenant.id.as_str());
        }
        tenant
            .models
            .iter()
            .any(|p| ModelPattern::parse(p).matches(model, entry))
    }

    /// Every model and adapter `tenant` may call, sorted by name.
    pub fn models_for(&self, tenant: &Tenant) -> Vec<&str> {
        self.config
            .models
            .keys()
            .filter(|name| self.model_allowed(tenant, name))
            .map(ModelName::as_str)
            .collect()
    }
}

#[cfg(test)]
mod tests;
