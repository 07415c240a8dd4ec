//! Filter configuration: parsed and validated once when Envoy loads the
//! filter, into a compiled [`Policy`] shared by every request. A bad config
//! refuses to load instead of failing per request.
//!
//! ```json
//! {
//!   "registry": { "gateway": { ... }, "tiers": { ... }, "models": { ... },
//!                 "pools": { ... }, "tenants": [ ... ] },
//!   "cache_secret": "<64 hex characters, or a string of 32+ bytes>",
//!   "prefix_key_blocks": 4,
//!   "limits_cluster": "ratelimit"
//! }
//! ```
//!
//! `registry` is `tenant_registry::RegistryConfig` as JSON (the TOML file
//! operators edit, converted); every tenant must be able to reach a pool.
//! `limits_cluster` (optional) is the Envoy cluster of ratelimit-service,
//! asked every 2 s for the pools' real `max_model_len` ([`crate::pool_limits`]);
//! without it the registry's caps alone apply.

use std::sync::Arc;

use serde::Deserialize;
use tenant_registry::{CacheProfile, Registry, RegistryConfig, RegistryError, Tenant};
use thiserror::Error;

use crate::cache_key::{KeyDeriver, TenantCacheKeys};

/// Prefix-chain blocks behind the affinity key when the config names none.
pub const DEFAULT_PREFIX_KEY_BLOCKS: u32 = 4;
/// Characters per estimated token when cutting the prompt into blocks.
pub const BLOCK_CHARS_PER_TOKEN: usize = 4;

/// The policy alone with its own registry, in JSON: how tests, fuzzers and
/// tools build one (the gateway module shares one registry between its
/// phases and reads only [`PolicySettings`] from its `policy` section).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// The tenant registry (the same document ratelimit-service loads).
    pub registry: RegistryConfig,
    #[serde(flatten)]
    pub settings: PolicySettings,
}

/// The policy's own settings: the `policy` section of the gateway module's
/// configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySettings {
    /// Server-side secret behind every tenant's `cache_salt`: hex (decoded)
    /// or a plain string, at least 32 bytes either way.
    pub cache_secret: String,
    /// Blocks of the prefix chain the affinity key covers (1 to 64).
    #[serde(default = "default_prefix_key_blocks")]
    pub prefix_key_blocks: u32,
    /// Envoy cluster (gRPC) of ratelimit-service to learn the pools' limits
    /// from; none: the registry's caps only.
    #[serde(default)]
    pub limits_cluster: Option<String>,
}

fn default_prefix_key_blocks() -> u32 {
    DEFAULT_PREFIX_KEY_BLOCKS
}

/// Why a configuration does not load; every variant names the field.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ConfigError {
    #[error("llm-policy config does not parse: {0}")]
    Parse(String),
    #[error("llm-policy config: {field}: {reason}")]
    Invalid { field: String, reason: String },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

impl From<RegistryError> for ConfigError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::Invalid { field, reason } => {
                invalid(format!("registry.{field}"), reason)
            }
            RegistryError::Parse(reason) => invalid("registry", reason),
        }
    }
}

/// The compiled configuration.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Shared with the other phases of the gateway module: one compiled
    /// registry per VM.
    pub registry: Arc<Registry>,
    /// A tenant's salt and chain seed, derived when a request needs them.
    keys: KeyDeriver,
    pub prefix_key_blocks: usize,
    /// Bytes of prompt per prefix-chain block.
    pub block_bytes: usize,
    /// Where the pools' limits are asked for.
    pub limits_cluster: Option<String>,
}

impl Policy {
    /// Parses and validates the plugin configuration.
    pub fn from_json(text: &[u8]) -> Result<Self, ConfigError> {
        Self::from_reader(text)
    }

    /// Parses and compiles the configuration as it streams from `reader`.
    pub fn from_reader(reader: impl std::io::Read) -> Result<Self, ConfigError> {
        let config: FilterConfig =
            serde_json::from_reader(reader).map_err(|e| ConfigError::Parse(e.to_string()))?;
        Self::compile(config)
    }

    pub fn compile(config: FilterConfig) -> Result<Self, ConfigError> {
        Self::with_registry(Arc::new(Registry::new(config.registry)?), config.settings)
    }

    /// Compiles the settings over an already compiled registry.
    pub fn with_registry(
        registry: Arc<Registry>,
        config: PolicySettings,
    ) -> Result<Self, ConfigError> {
        let secret = decode_secret(&config.cache_secret)?;
        if !(1..=64).contains(&config.prefix_key_blocks) {
            return Err(invalid("prefix_key_blocks", "must be between 1 and 64"));
        }
        if config.limits_cluster.as_deref().is_some_and(str::is_empty) {
            return Err(invalid(
                "limits_cluster",
                "must name the ratelimit-service cluster (or be left out)",
            ));
        }
        for (i, tenant) in registry.tenants().iter().enumerate() {
            if !registry.has_pool(tenant) {
                return Err(invalid(
                    format!("registry.tenants[{i}].pools"),
                    "the tenant may use no pool (configure [pools] or the tier's pools)",
                ));
            }
        }
        let keys = KeyDeriver::new(&secret)
            .ok_or_else(|| invalid("cache_secret", "not usable as an HMAC key"))?;
        let block_tokens =
            usize::try_from(registry.config().gateway.prefix_block_tokens).unwrap_or(usize::MAX);
        Ok(Self {
            registry,
            keys,
            prefix_key_blocks: usize::try_from(config.prefix_key_blocks).unwrap_or(1),
            block_bytes: block_tokens.saturating_mul(BLOCK_CHARS_PER_TOKEN),
            limits_cluster: config.limits_cluster,
        })
    }

    /// The cache keys of `tenant`'s requests, under its cache profile.
    pub fn tenant_keys(&self, tenant: &Tenant) -> TenantCacheKeys {
        let strict = self.registry.cache_profile(tenant) == CacheProfile::Strict;
        self.keys.keys(strict, &tenant.id)
    }
}

/// All-hex strings of even length are decoded; anything else is taken as is.
fn decode_secret(text: &str) -> Result<Vec<u8>, ConfigError> {
    let is_hex = !text.is_empty()
        && text.len().is_multiple_of(2)
        && text.bytes().all(|b| b.is_ascii_hexdigit());
    let bytes = if is_hex {
        hex::decode(text).map_err(|e| invalid("cache_secret", e.to_string()))?
    } else {
        text.as_bytes().to_vec()
    };
    if bytes.len() < 32 {
        let form = if is_hex {
            "hex that decodes to"
        } else {
            "a plain string of"
        };
        return Err(invalid(
            "cache_secret",
            format!("is {form} {} bytes; at least 32 are required", bytes.len()),
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{SECRET, config_json};

    fn load(json: &str) -> Result<Policy, ConfigError> {
        Policy::from_json(json.as_bytes())
    }

    fn err(json: &str) -> String {
        load(json).expect_err("must be refused").to_string()
    }

    #[test]
    fn loads_sample() {
        let p = load(&config_json()).unwrap();
        assert_eq!(p.prefix_key_blocks, 4);
        assert_eq!(p.block_bytes, 16 * 4);
        let keys = |id: &str| p.tenant_keys(p.registry.tenant(id).unwrap());
        assert!(keys("acme").salt.is_some());
        assert!(keys("shared").salt.is_none());
        assert_eq!(p.limits_cluster, None);
        let with = config_json().replacen('{', r#"{"limits_cluster":"ratelimit","#, 1);
        assert_eq!(
            load(&with).unwrap().limits_cluster.as_deref(),
            Some("ratelimit")
        );
    }

    #[test]
    fn errors_name_the_field() {
        let base = config_json();
        assert!(
            err(&base.replacen("\"cache_secret\"", "\"cache_secrets\"", 1))
                .contains("cache_secret")
        );
        assert!(err(&base.replace(SECRET, "too-short")).contains("cache_secret"));
        assert!(err(&base.replace(SECRET, &"ab".repeat(16))).contains("decodes to 16 bytes"));
        assert!(
            err(&base.replace("\"prefix_key_blocks\":4", "\"prefix_key_blocks\":0"))
                .contains("prefix_key_blocks")
        );
        assert!(
            err(&base.replace("\"tier\":\"free\"", "\"tier\":\"gold\""))
                .contains("registry.tenants[1].tier")
        );
        assert!(err(&base.replace("\"registry\":{", "\"registry\":{\"typo\":1,")).contains("typo"));
        assert!(err(&base.replacen('{', r#"{"limits_cluster":"","#, 1)).contains("limits_cluster"));
        let no_pool = base.replace(
            r#""chat-small"],"pools":["throughput"]"#,
            r#""chat-small"],"pools":[]"#,
        );
        assert!(err(&no_pool).contains("registry.tenants[3].pools"));
    }

    #[test]
    fn hex_and_plain_secrets() {
        assert_eq!(decode_secret(&"00ff".repeat(16)).unwrap().len(), 32);
        assert_eq!(decode_secret(&"x".repeat(32)).unwrap().len(), 32);
        assert!(decode_secret(&"x".repeat(31)).is_err());
    }
}
