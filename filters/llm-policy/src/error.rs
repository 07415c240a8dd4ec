//! Why a request is refused, and the one place that maps each reason to an
//! HTTP status and an OpenAI error code.

use filter_common::{ErrorKind, GatewayError, IntoGatewayError};
use thiserror::Error;

/// A request the policy refuses to forward.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PolicyError {
    /// No trusted identity: tenant-auth did not run or did not set the header.
    #[error("no authenticated tenant on the request")]
    MissingTenant,
    /// The identity names a tenant this filter's registry does not know
    /// (registries out of step between filters).
    #[error("tenant {0:?} is not in the registry")]
    UnknownTenant(String),
    #[error("tenant {0:?} is disabled")]
    TenantDisabled(String),
    #[error("invalid URL ({method} {path})")]
    UnknownUrl { method: String, path: String },
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    #[error("request body is {size} bytes; the limit is {limit} bytes")]
    BodyTooLarge { size: u64, limit: u64 },
    #[error("request body is not valid UTF-8")]
    InvalidUtf8,
    #[error("request body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("request body must be a JSON object")]
    NotAnObject,
    /// A key given twice: parsers disagree on which one wins, so the gateway
    /// and vLLM could read different values.
    #[error("duplicate key {key:?} in the request body")]
    DuplicateKey { key: String },
    #[error("missing required parameter: '{param}'")]
    MissingParameter { param: String },
    #[error("invalid type for '{param}': expected {expected}")]
    InvalidType {
        param: String,
        expected: &'static str,
    },
    #[error("invalid value for '{param}': {reason}")]
    InvalidValue { param: String, reason: String },
    #[error("'{param}' is not supported by this gateway: {reason}")]
    UnsupportedParameter { param: String, reason: &'static str },
    /// Unknown, not allowed, and another tenant's adapter all look the same,
    /// so the reply reveals nothing about the catalogue.
    #[error("the model `{0}` does not exist or you do not have access to it")]
    ModelNotAllowed(String),
    /// `GET /v1/models/{id}` for a model the tenant cannot see.
    #[error("the model `{0}` does not exist or you do not have access to it")]
    ModelNotFound(String),
    #[error("model `{model}` does not serve {endpoint}")]
    WrongEndpointForModel {
        model: String,
        endpoint: &'static str,
    },
    #[error(
        "this model's maximum context length is {limit} tokens; the request needs about {requested} \
         ({prompt} estimated in the {param}, {completion} for the completion)"
    )]
    ContextLengthExceeded {
        param: &'static str,
        limit: u32,
        requested: u64,
        prompt: u32,
        completion: u32,
    },
    /// `max_tokens` alone above the pool's `max_model_len`: vLLM refuses it
    /// whatever the prompt.
    #[error(
        "'{param}' is {requested}; this model's maximum context length is {limit} tokens, \
         prompt and completion together"
    )]
    OutputAboveModelLength {
        param: &'static str,
        requested: u32,
        limit: u32,
    },
    #[error("'{param}' is {requested}; the most your tier allows is {limit}")]
    OutputTokensAboveTier {
        param: &'static str,
        requested: u32,
        limit: u32,
    },
    /// Configuration allows the tenant no pool at all.
    #[error("Unrecognized request argument supplied: {param}")]
    UnknownParameter { param: String },
    #[error("'{param}' may not be set by clients: {reason}")]
    ForbiddenParameter { param: String, reason: &'static str },
    #[error(
        "'{param}' names host {host:?}, which the pool may not fetch from; send the media inline as a data: URL"
    )]
    MediaUrlNotAllowed { param: String, host: String },
    #[error("'{param}' has {count} inputs; the most one request may carry is {limit}")]
    TooManyInputs {
        param: &'static str,
        count: usize,
        limit: u32,
    },
    #[error("the gateway is reading too many request bodies; retry shortly")]
    WorkerBufferFull,
    #[error("too many of this tenant's request bodies are in flight; retry shortly")]
    TenantBufferFull,
    #[error("no pool is available for this request")]
    NoPool,
    /// The filter has no valid configuration (Envoy should not have loaded it).
    #[error("the gateway policy is not configured")]
    NotConfigured,
    /// A host call failed where going on would skip a check (fail closed).
    #[error("gateway internal error: {0}")]
    HostFailure(&'static str),
}

impl IntoGatewayError for PolicyError {
    fn into_gateway_error(self) -> GatewayError {
        use ErrorKind::{AuthenticationError, InvalidRequestError, PermissionError, ServerError};
        let message = self.to_string();
        let (status, kind, code, param): (u32, ErrorKind, &'static str, Option<String>) = match self
        {
            Self::MissingTenant => (401, AuthenticationError, "missing_tenant", None),
            Self::UnknownTenant(_) => (401, AuthenticationError, "invalid_tenant", None),
            Self::TenantDisabled(_) => (403, PermissionError, "tenant_disabled", None),
            Self::UnknownUrl { .. } => (404, InvalidRequestError, "unknown_url", None),
            Self::MethodNotAllowed { .. } => (405, InvalidRequestError, "method_not_allowed", None),
            Self::BodyTooLarge { .. } => (413, InvalidRequestError, "request_too_large", None),
            Self::InvalidUtf8 | Self::InvalidJson(_) | Self::NotAnObject => {
                (400, InvalidRequestError, "invalid_json", None)
            }
            Self::DuplicateKey { key } => (400, InvalidRequestError, "duplicate_key", Some(key)),
            Self::MissingParameter { param } => (
                400,
                InvalidRequestError,
                "missing_required_parameter",
                Some(param),
            ),
            Self::InvalidType { param, .. } => {
                (400, InvalidRequestError, "invalid_type", Some(param))
            }
            Self::InvalidValue { param, .. } => {
                (400, InvalidRequestError, "invalid_value", Some(param))
            }
            Self::UnsupportedParameter { param, .. } => (
                400,
                InvalidRequestError,
                "unsupported_parameter",
                Some(param),
            ),
            Self::ModelNotAllowed(_) => (
                403,
                PermissionError,
                "model_not_allowed",
                Some("model".into()),
            ),
            Self::ModelNotFound(_) => (
                404,
                InvalidRequestError,
                "model_not_found",
                Some("model".into()),
            ),
            Self::WrongEndpointForModel { .. } => (
                400,
                InvalidRequestError,
                "model_not_supported",
                Some("model".into()),
            ),
            Self::ContextLengthExceeded { param, .. }
            | Self::OutputAboveModelLength { param, .. } => (
                400,
                InvalidRequestError,
                "context_length_exceeded",
                Some(param.into()),
            ),
            Self::OutputTokensAboveTier { param, .. } => (
                400,
                InvalidRequestError,
                "invalid_value",
                Some(param.into()),
            ),
            Self::UnknownParameter { param } => {
                (400, InvalidRequestError, "unknown_parameter", Some(param))
            }
            Self::ForbiddenParameter { param, .. } => {
                (400, InvalidRequestError, "forbidden_parameter", Some(param))
            }
            Self::MediaUrlNotAllowed { param, .. } => (
                400,
                InvalidRequestError,
                "media_url_not_allowed",
                Some(param),
            ),
            Self::TooManyInputs { param, .. } => (
                400,
                InvalidRequestError,
                "invalid_value",
                Some(param.into()),
            ),
            Self::WorkerBufferFull => (503, ServerError, "server_busy", None),
            Self::TenantBufferFull => (
                429,
                ErrorKind::RateLimitError,
                "too_many_pending_bodies",
                None,
            ),
            Self::NoPool => (503, ServerError, "no_pool_available", None),
            Self::NotConfigured => (503, ServerError, "policy_unavailable", None),
            Self::HostFailure(_) => (500, ServerError, "internal_error", None),
        };
        let mut error = GatewayError::new(status, kind, code, message);
        if matches!(status, 429 | 503) {
            error = error.with_header("retry-after", "1");
        }
        match param {
            Some(p) => error.with_param(p),
            None => error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(e: PolicyError) -> (u32, ErrorKind, &'static str, Option<String>) {
        let g = e.into_gateway_error();
        (g.status, g.kind, g.code, g.param)
    }

    #[test]
    fn statuses_and_codes() {
        assert_eq!(
            reply(PolicyError::BodyTooLarge { size: 10, limit: 5 }),
            (
                413,
                ErrorKind::InvalidRequestError,
                "request_too_large",
                None
            )
        );
        assert_eq!(
            reply(PolicyError::ModelNotAllowed("m".into())),
            (
                403,
                ErrorKind::PermissionError,
                "model_not_allowed",
                Some("model".into())
            )
        );
        assert_eq!(reply(PolicyError::MissingTenant).0, 401);
        assert_eq!(reply(PolicyError::ModelNotFound("m".into())).0, 404);
        assert_eq!(
            reply(PolicyError::NoPool),
            (503, ErrorKind::ServerError, "no_pool_available", None)
        );
    }

    #[test]
    fn unknown_and_forbidden_models_read_the_same() {
        let a = PolicyError::ModelNotAllowed("x".into()).into_gateway_error();
        assert!(
            a.message
                .contains("does not exist or you do not have access")
        );
    }
}
