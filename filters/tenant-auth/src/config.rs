//! Filter configuration: the tenant registry (JSON form), compiled once in
//! `on_configure` so a bad registry refuses to load instead of failing per
//! request.

use std::sync::Arc;

use serde::Deserialize;
use tenant_registry::{Registry, RegistryConfig, RegistryError};
use thiserror::Error;

use crate::jwt::{JwtKeyError, JwtVerifier};

/// Authentication alone with its own registry, in JSON: how tests, fuzzers
/// and tenantctl build an [`crate::Authenticator`] (the gateway module
/// shares one registry between its phases).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub registry: RegistryConfig,
    #[serde(flatten)]
    pub settings: AuthSettings,
}

/// Authentication's own settings: the `auth` section of the gateway
/// module's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// Realm named in `www-authenticate`.
    #[serde(default = "default_realm")]
    pub realm: String,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            realm: default_realm(),
        }
    }
}

fn default_realm() -> String {
    "llm-gateway".to_owned()
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("tenant-auth configuration is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("tenant registry: {0}")]
    Registry(#[from] RegistryError),
    #[error("{0}")]
    JwtKey(#[from] JwtKeyError),
}

impl AuthConfig {
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        Self::from_reader(bytes)
    }

    /// Parses the configuration as it streams from `reader`.
    pub fn from_reader(reader: impl std::io::Read) -> Result<Self, ConfigError> {
        Ok(serde_json::from_reader(reader)?)
    }
}

/// The JWT verifier of a compiled registry (its issuers' keys).
pub(crate) fn jwt_verifier(registry: &Registry) -> Result<JwtVerifier, ConfigError> {
    Ok(JwtVerifier::new(&registry.config().jwt_issuers)?)
}

/// Compiles the registry of an [`AuthConfig`].
pub(crate) fn compile_registry(config: RegistryConfig) -> Result<Arc<Registry>, ConfigError> {
    Ok(Arc::new(Registry::new(config)?))
}
