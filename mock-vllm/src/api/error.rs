//! The one place where failures become HTTP statuses and OpenAI-shaped error bodies, using the
//! types and integer codes vLLM's server sends.

use crate::engine::SubmitError;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("The model `{0}` does not exist.")]
    ModelNotFound(String),
    #[error(
        "This model's maximum context length is {max_model_len} tokens. However, you requested \
         {requested} tokens ({prompt_tokens} in the messages, {max_tokens} in the completion). \
         Please reduce the length of the messages or completion."
    )]
    ContextLengthExceeded {
        max_model_len: usize,
        requested: usize,
        prompt_tokens: usize,
        max_tokens: usize,
    },
    #[error("invalid request body: {0}")]
    InvalidJson(#[from] serde_json::Error),
    #[error("could not read the request body")]
    UnreadableBody,
    #[error("{0}")]
    InvalidRequest(#[from] InvalidRequest),
    /// A check vLLM runs in its pydantic request models; FastAPI's validation handler answers
    /// it with the error list in the message and the type `Bad Request`. (vLLM also prints the
    /// rejected input, which the mock leaves out.)
    #[error(
        "1 validation error:\n  {{'type': 'value_error', 'loc': ('body',), \
         'msg': 'Value error, {0}'}}"
    )]
    BodyValidation(Rejected),
    /// A check vLLM runs once the request reaches its engine (`VLLMValidationError`).
    #[error("{0}")]
    EngineValidation(Rejected),
    /// `previous_response_id` names a stored response; vLLM stores none unless told to.
    #[error("Response with id '{0}' not found.")]
    ResponseNotFound(String),
    #[error(
        "This vLLM engine does not support `store=True` and therefore does not support the \
         background mode. To enable these features, set the environment variable \
         `VLLM_ENABLE_RESPONSES_API_STORE=1` when launching the vLLM server."
    )]
    BackgroundUnsupported,
    #[error(transparent)]
    Submit(#[from] SubmitError),
    #[error("metrics are disabled on this replica (POST /debug/metrics?enabled=true)")]
    MetricsDisabled,
    #[error("the engine stopped before the request finished")]
    EngineStopped,
    #[error("no route for {0}")]
    RouteNotFound(String),
}

/// Request fields that parse but make no sense.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidRequest {
    #[error("max_tokens must be at least 1")]
    MaxTokensZero,
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("the input is empty")]
    EmptyInput,
    #[error("the mock serves one prompt per request: send a string or one array of token ids")]
    BatchedPrompt,
}

/// A value vLLM refuses, worded like its `VLLMValidationError`: the message, then the parameter
/// and, when vLLM names it, the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub message: String,
    pub param: &'static str,
    pub value: Option<String>,
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (parameter={}", self.message, self.param)?;
        if let Some(value) = &self.value {
            write!(f, ", value={value}")?;
        }
        f.write_str(")")
    }
}

impl InvalidRequest {
    fn param(&self) -> &'static str {
        match self {
            Self::MaxTokensZero => "max_tokens",
            Self::EmptyPrompt | Self::BatchedPrompt => "prompt",
            Self::EmptyInput => "input",
        }
    }
}

#[derive(Debug, Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Debug, Serialize)]
struct ErrorDetail<'a> {
    message: String,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: u16,
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::ModelNotFound(_) | Self::RouteNotFound(_) => StatusCode::NOT_FOUND,
            Self::ContextLengthExceeded { .. }
            | Self::InvalidJson(_)
            | Self::UnreadableBody
            | Self::InvalidRequest(_)
            | Self::BodyValidation(_)
            | Self::EngineValidation(_)
            | Self::BackgroundUnsupported => StatusCode::BAD_REQUEST,
            Self::ResponseNotFound(_) => StatusCode::NOT_FOUND,
            Self::Submit(SubmitError::ExceedsKvCapacity { .. }) => StatusCode::BAD_REQUEST,
            Self::Submit(SubmitError::Stopped) | Self::MetricsDisabled | Self::EngineStopped => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            // HTTPStatus.BAD_REQUEST.phrase, from vLLM's RequestValidationError handler.
            Self::BodyValidation(_) => "Bad Request",
            // The Responses API names its own errors the way OpenAI does.
            Self::ResponseNotFound(_) | Self::BackgroundUnsupported => "invalid_request_error",
            _ => match self.status() {
                StatusCode::NOT_FOUND => "NotFoundError",
                StatusCode::BAD_REQUEST => "BadRequestError",
                _ => "ServiceUnavailableError",
            },
        }
    }

    fn param(&self) -> Option<&'static str> {
        match self {
            Self::ModelNotFound(_) => Some("model"),
            Self::InvalidRequest(invalid) => Some(invalid.param()),
            Self::BodyValidation(rejected) | Self::EngineValidation(rejected) => {
                Some(rejected.param)
            }
            Self::ResponseNotFound(_) => Some("response_id"),
            Self::BackgroundUnsupported => Some("background"),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = ErrorBody {
            error: ErrorDetail {
                message: self.to_string(),
                kind: self.kind(),
                param: self.param(),
                code: status.as_u16(),
            },
        };
        (status, Json(body)).into_response()
    }
}
