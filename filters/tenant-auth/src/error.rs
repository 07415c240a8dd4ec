//! Why a request was refused, and the one place that maps each reason to an
//! HTTP status, an OpenAI error code and a `www-authenticate` challenge.

use filter_common::{ErrorKind, GatewayError, IntoGatewayError};
use thiserror::Error;

use crate::jwt::JwtError;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AuthError {
    #[error(
        "No credentials: send `Authorization: Bearer <key>`, `x-api-key`, or a client certificate."
    )]
    MissingCredentials,
    #[error("The Authorization header must be `Bearer <token>`.")]
    MalformedAuthorization,
    #[error("Incorrect API key provided.")]
    UnknownApiKey,
    #[error("This API key has been revoked.")]
    RevokedApiKey,
    #[error("This API key has expired.")]
    ExpiredApiKey,
    #[error("Invalid bearer token: {0}.")]
    InvalidToken(JwtError),
    #[error("The token's tenant is not registered.")]
    UnknownTenant,
    #[error("The client certificate's SPIFFE ID is not registered.")]
    UnknownSpiffeId,
    #[error("This tenant is disabled.")]
    TenantDisabled,
    #[error("The request presents credentials of more than one tenant; send one.")]
    ConflictingCredentials,
    #[error("The {0} header is not valid UTF-8.")]
    NonUtf8Header(&'static str),
}

impl AuthError {
    fn code(&self) -> &'static str {
        match self {
            AuthError::MissingCredentials => "missing_credentials",
            AuthError::MalformedAuthorization => "malformed_authorization",
            AuthError::UnknownApiKey => "invalid_api_key",
            AuthError::RevokedApiKey => "revoked_api_key",
            AuthError::ExpiredApiKey => "expired_api_key",
            AuthError::InvalidToken(JwtError::Expired) => "expired_token",
            AuthError::InvalidToken(_) => "invalid_token",
            AuthError::UnknownTenant => "unknown_tenant",
            AuthError::UnknownSpiffeId => "unknown_client_certificate",
            AuthError::TenantDisabled => "tenant_disabled",
            AuthError::ConflictingCredentials => "conflicting_credentials",
            AuthError::NonUtf8Header(_) => "invalid_header",
        }
    }

    /// RFC 6750 challenge; `None` for refusals that are not about credentials.
    fn challenge(&self, realm: &str) -> Option<String> {
        match self {
            AuthError::TenantDisabled | AuthError::NonUtf8Header(_) => None,
            AuthError::MissingCredentials => Some(format!("Bearer realm=\"{realm}\"")),
            AuthError::MalformedAuthorization | AuthError::ConflictingCredentials => Some(format!(
                "Bearer realm=\"{realm}\", error=\"invalid_request\""
            )),
            other => Some(format!(
                "Bearer realm=\"{realm}\", error=\"invalid_token\", error_description=\"{}\"",
                other.code()
            )),
        }
    }

    pub fn into_gateway_error_in(self, realm: &str) -> GatewayError {
        let (status, kind) = match self {
            AuthError::TenantDisabled => (403, ErrorKind::PermissionError),
            AuthError::NonUtf8Header(_) => (400, ErrorKind::InvalidRequestError),
            _ => (401, ErrorKind::AuthenticationError),
        };
        let challenge = self.challenge(realm);
        let param = match self {
            AuthError::NonUtf8Header(name) => Some(name),
            _ => None,
        };
        let mut error = GatewayError::new(status, kind, self.code(), self.to_string());
        if let Some(param) = param {
            error = error.with_param(param);
        }
        if let Some(challenge) = challenge {
            error = error.with_header("www-authenticate", challenge);
        }
        error
    }
}

impl IntoGatewayError for AuthError {
    fn into_gateway_error(self) -> GatewayError {
        self.into_gateway_error_in("llm-gateway")
    }
}
