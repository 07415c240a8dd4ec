//! From a request's credential to a tenant identity.

use tenant_registry::{Registry, TenantId, TierName, api_key_digest};

use std::sync::Arc;

use crate::config::{self, AuthConfig, AuthSettings, ConfigError};
use crate::credentials::{self, Credential, CredentialProblem};
use crate::error::AuthError;
use crate::jwt::JwtVerifier;

/// How the caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    ApiKey,
    Jwt,
    Mtls,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ApiKey => "api_key",
            AuthMethod::Jwt => "jwt",
            AuthMethod::Mtls => "mtls",
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub tenant_id: TenantId,
    pub tier: TierName,
    pub method: AuthMethod,
    /// Key id (API key) or subject handle, for logs; never the secret.
    pub credential_id: String,
}

impl Identity {
    /// `<method>:<id>` for the audit trail, as a header value: visible ASCII
    /// only (anything else becomes `_`) and at most 256 bytes, whatever a
    /// registry entry holds.
    pub fn credential(&self) -> String {
        format!("{}:{}", self.method.as_str(), self.credential_id)
            .chars()
            .take(256)
            .map(|c| if c.is_ascii_graphic() { c } else { '_' })
            .collect()
    }
}

/// The compiled filter configuration.
#[derive(Debug)]
pub struct Authenticator {
    /// Shared with the other phases of the gateway module: one compiled
    /// registry per VM.
    registry: Arc<Registry>,
    jwt: JwtVerifier,
    realm: String,
}

impl Authenticator {
    pub fn new(config: AuthConfig) -> Result<Self, ConfigError> {
        Self::with_registry(config::compile_registry(config.registry)?, config.settings)
    }

    /// Authenticates against an already compiled registry.
    pub fn with_registry(
        registry: Arc<Registry>,
        settings: AuthSettings,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            jwt: config::jwt_verifier(&registry)?,
            registry,
            realm: settings.realm,
        })
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        Self::from_reader(bytes)
    }

    /// Parses and compiles the configuration as it streams from `reader`.
    pub fn from_reader(reader: impl std::io::Read) -> Result<Self, ConfigError> {
        Self::new(AuthConfig::from_reader(reader)?)
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// Whether the mTLS peer can change what [`Self::authenticate`] answers
    /// for these headers: when some tenant is registered by SPIFFE id (a
    /// registered peer must agree with the headers), or when the headers
    /// carry no credential (the peer is then the only one). Otherwise an
    /// unregistered peer is ignored, and the host need not be asked for it.
    pub fn needs_peer(&self, authorization: Option<&str>, x_api_key: Option<&str>) -> bool {
        self.registry.has_spiffe_ids() || !credentials::in_headers(authorization, x_api_key)
    }

    /// Whether the time can change the answer: only an API key with an
    /// expiry is judged by it (a JWT's claims are checked by its verifier).
    /// Where none has one, the host need not be asked for the clock.
    pub fn needs_clock(&self) -> bool {
        self.registry.has_expiring_keys()
    }

    /// Authenticates a request from its `authorization` and `x-api-key`
    /// headers and the verified mTLS peer's URI SAN. `now` is Unix seconds
    /// (any value where [`Self::needs_clock`] says it cannot matter).
    ///
    /// Every credential presented must verify, and all must name the same
    /// tenant. A registered mTLS peer counts as one; an unregistered peer
    /// with a header credential is judged by the header credential alone.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        x_api_key: Option<&str>,
        peer_uri_san: Option<&str>,
        now: i64,
    ) -> Result<Identity, AuthError> {
        let presented = credentials::presented(authorization, x_api_key, peer_uri_san).map_err(
            |p| match p {
                CredentialProblem::Missing => AuthError::MissingCredentials,
                CredentialProblem::MalformedAuthorization => AuthError::MalformedAuthorization,
            },
        )?;
        let mut identity: Option<Identity> = None;
        for credential in presented.explicit {
            let next = self.verify(credential, now)?;
            identity = Some(agree(identity, next)?);
        }
        if let Some(peer) = presented.peer {
            let registered = self.registry.tenant_by_spiffe(peer).is_some();
            if identity.is_none() || registered {
                let next = self.verify(Credential::Spiffe(peer), now)?;
                identity = Some(agree(identity, next)?);
            }
        }
        identity.ok_or(AuthError::MissingCredentials)
    }

    fn verify(&self, credential: Credential<'_>, now: i64) -> Result<Identity, AuthError> {
        let (tenant, method, credential_id) = match credential {
            Credential::ApiKey(key) => {
                let (tenant, key, key_ref) = self
                    .registry
                    .key_by_digest(&api_key_digest(key))
                    .ok_or(AuthError::UnknownApiKey)?;
                if key.revoked {
                    return Err(AuthError::RevokedApiKey);
                }
                if key_ref.expires_at.is_some_and(|t| now >= t) {
                    return Err(AuthError::ExpiredApiKey);
                }
                (tenant, AuthMethod::ApiKey, key.id.clone())
            }
            Credential::Jwt(token) => {
                let (issuer, tenant_id) =
                    self.jwt.verify(token).map_err(AuthError::InvalidToken)?;
                let tenant = self
                    .registry
                    .tenant(&tenant_id)
                    .ok_or(AuthError::UnknownTenant)?;
                (tenant, AuthMethod::Jwt, issuer.issuer.clone())
            }
            Credential::Spiffe(id) => {
                let tenant = self
                    .registry
                    .tenant_by_spiffe(id)
                    .ok_or(AuthError::UnknownSpiffeId)?;
                (tenant, AuthMethod::Mtls, id.to_owned())
            }
        };
        if tenant.disabled {
            return Err(AuthError::TenantDisabled);
        }
        Ok(Identity {
            tenant_id: tenant.id.clone(),
            tier: tenant.tier.clone(),
            method,
            credential_id,
        })
    }
}

/// The identity two credentials agree on; the first one's method and id.
fn agree(so_far: Option<Identity>, next: Identity) -> Result<Identity, AuthError> {
    match so_far {
        None => Ok(next),
        Some(first) if first.tenant_id == next.tenant_id => Ok(first),
        Some(_) => Err(AuthError::ConflictingCredentials),
    }
}

#[cfg(test)]
mod tests;
