//! Filter configuration: the tenant registry (JSON form), compiled once in
//! `on_configure` so a bad registry refuses to load instead of failing per
//! request.

use serde::Deserialize;
use tenant_registry::{Registry, RegistryConfig, RegistryError};
use thiserror::Error;

use crate::jwt::{JwtKeyError, JwtVerifier};

/// What Envoy passes as the plugin configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub registry: RegistryConfig,
    /// Realm named in `www-authenticate`.
    #[serde(default = "default_realm")]
    pub realm: String,
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
        Ok(serde_json::from_slice(bytes)?)
    }

    pub(crate) fn compile(self) -> Result<(Registry, JwtVerifier, String), ConfigError> {
        let jwt = JwtVerifier::new(&self.registry.jwt_issuers)?;
        let registry = Registry::new(self.registry)?;
        Ok((registry, jwt, self.realm))
    }
}
