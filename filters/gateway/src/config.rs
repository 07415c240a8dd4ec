//! The module's configuration: one registry, and a section per phase. A
//! phase runs when its section is present; authentication always runs.
//!
//! ```json
//! {
//!   "registry": { ... },
//!   "auth": { "realm": "llm-gateway" },
//!   "policy": { "cache_secret": "...", "limits_cluster": "ratelimit" },
//!   "admission": { "cluster": "ratelimit" }
//! }
//! ```
//!
//! `auth` alone is identity only (the tenant headers for the upstream);
//! `admission` needs `policy`, since it admits what the policy decided.

use std::sync::Arc;

use admission_filter::{AdmissionSettings, CompiledConfig};
use llm_policy::{Policy, PolicySettings};
use serde::Deserialize;
use tenant_auth::{AuthSettings, Authenticator};
use tenant_registry::{Registry, RegistryConfig, RegistryError};
use thiserror::Error;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// The tenant registry, compiled once for every phase.
    pub registry: RegistryConfig,
    #[serde(default)]
    pub auth: AuthSettings,
    /// The policy phase: model access, caps, cache keys, the pool.
    #[serde(default)]
    pub policy: Option<PolicySettings>,
    /// The admission phase: limits and the pools' fair queues.
    #[serde(default)]
    pub admission: Option<AdmissionSettings>,
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("llm-gateway configuration does not parse: {0}")]
    Json(#[from] serde_json::Error),
    #[error("llm-gateway configuration: registry: {0}")]
    Registry(#[from] RegistryError),
    #[error("llm-gateway configuration: auth: {0}")]
    Auth(#[from] tenant_auth::ConfigError),
    #[error("llm-gateway configuration: policy: {0}")]
    Policy(#[from] llm_policy::ConfigError),
    #[error("llm-gateway configuration: admission: {0}")]
    Admission(#[from] admission_filter::ConfigError),
    #[error("llm-gateway configuration: {field}: {reason}")]
    Invalid {
        field: &'static str,
        reason: &'static str,
    },
}

/// The compiled module: what every request of a worker shares.
#[derive(Debug)]
pub struct Gateway {
    pub registry: Arc<Registry>,
    pub authenticator: Authenticator,
    pub policy: Option<Policy>,
    pub admission: Option<CompiledConfig>,
}

impl Gateway {
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        Self::from_reader(bytes)
    }

    /// Parses the configuration as it streams from `reader`.
    pub fn from_reader(reader: impl std::io::Read) -> Result<Self, ConfigError> {
        Self::compile(serde_json::from_reader(reader)?)
    }

    pub fn compile(config: GatewayConfig) -> Result<Self, ConfigError> {
        if config.admission.is_some() && config.policy.is_none() {
            return Err(ConfigError::Invalid {
                field: "admission",
                reason: "needs the policy section: admission admits what the policy decided",
            });
        }
        let registry = Arc::new(Registry::new(config.registry)?);
        let authenticator = Authenticator::with_registry(Arc::clone(&registry), config.auth)?;
        let policy = config
            .policy
            .map(|settings| Policy::with_registry(Arc::clone(&registry), settings))
            .transpose()?;
        let admission = config
            .admission
            .map(|settings| CompiledConfig::compile(registry.config(), settings))
            .transpose()?;
        Ok(Self {
            registry,
            authenticator,
            policy,
            admission,
        })
    }

    /// Bytes of the request body kept for `tenant`'s audit trail: its
    /// `max_prompt_bytes` when it logs prompts, else none (the service
    /// names the same bound in its Admit answer).
    pub fn audit_prompt_bytes(&self, tenant: &str) -> usize {
        self.registry
            .tenant(tenant)
            .filter(|t| t.audit().log_prompts)
            .map_or(0, |t| {
                usize::try_from(t.audit().max_prompt_bytes).unwrap_or(0)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGISTRY: &str = r#"
[tiers.free]
pools = ["latency"]

[models."m"]
max_context_tokens = 4096

[pools.latency]
class = "latency"

[[tenants]]
id = "acme"
tier = "free"
models = ["m"]
audit = { log_prompts = true, max_prompt_bytes = 100 }
api_keys = [{ id = "k1", sha256 = "0000000000000000000000000000000000000000000000000000000000000001" }]

[[tenants]]
id = "quiet"
tier = "free"
models = ["m"]
"#;

    fn json(sections: &str) -> String {
        let registry = Registry::from_toml(REGISTRY).expect("registry");
        let registry = serde_json::to_string(registry.config()).expect("json");
        format!(r#"{{"registry":{registry}{sections}}}"#)
    }

    const POLICY: &str = r#","policy":{"cache_secret":"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}"#;
    const ADMISSION: &str = r#","admission":{"cluster":"ratelimit"}"#;

    #[test]
    fn phases_run_when_their_section_is_there() {
        let auth_only = Gateway::from_json(json("").as_bytes()).unwrap();
        assert!(auth_only.policy.is_none() && auth_only.admission.is_none());
        assert_eq!(auth_only.authenticator.realm(), "llm-gateway");
        let full = Gateway::from_json(json(&format!("{POLICY}{ADMISSION}")).as_bytes()).unwrap();
        assert!(full.policy.is_some() && full.admission.is_some());
    }

    #[test]
    fn the_phases_share_one_registry() {
        let full = Gateway::from_json(json(&format!("{POLICY}{ADMISSION}")).as_bytes()).unwrap();
        let policy = full.policy.as_ref().unwrap();
        assert!(Arc::ptr_eq(&full.registry, &policy.registry));
        // Gateway, authenticator, policy: one compiled registry, three handles.
        assert_eq!(Arc::strong_count(&full.registry), 3);
    }

    #[test]
    fn errors_name_the_section_and_field() {
        let err = |sections: &str| {
            Gateway::from_json(json(sections).as_bytes())
                .expect_err(sections)
                .to_string()
        };
        assert!(err(ADMISSION).contains("admission: needs the policy section"));
        assert!(err(r#","policy":{"cache_secret":"short"}"#).contains("policy: "));
        assert!(err(r#","policy":{"cache_secret":"short"}"#).contains("cache_secret"));
        assert!(err(&format!("{POLICY},\"admission\":{{\"cluster\":\"\"}}")).contains("cluster"));
        assert!(err(r#","auth":{"relm":"x"}"#).contains("relm"));
        assert!(err(r#","phases":[]"#).contains("phases"));
        assert!(err(&format!("{POLICY},\"admission\":{{\"phase\":\"open\"}}")).contains("phase"));
    }

    #[test]
    fn prompts_are_kept_only_for_tenants_that_log_them() {
        let gateway = Gateway::from_json(json(POLICY).as_bytes()).unwrap();
        assert_eq!(gateway.audit_prompt_bytes("acme"), 100);
        assert_eq!(gateway.audit_prompt_bytes("quiet"), 0);
        assert_eq!(gateway.audit_prompt_bytes("nobody"), 0);
    }
}
