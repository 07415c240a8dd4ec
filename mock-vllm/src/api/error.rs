//! The one place where failures become HTTP statuses and bodies, shaped as vLLM 0.32 sends them
//! (`vllm/entrypoints/serve/exception_handling/`):
//!
//! - a `VLLMValidationError` (or a plain `ValueError`) → 400 `{"error": {"message", "type":
//!   "BadRequestError", "param", "code": 400}}`, the message ending in `(parameter=…, value=…)`;
//! - an unknown model → 404 `NotFoundError`;
//! - FastAPI's `RequestValidationError` (bad JSON, wrong field types, wrong content type) → 400
//!   with type `Bad Request` and pydantic's error list in the message;
//! - Starlette's own routing answers (unknown path, wrong method) → `{"detail": …}`.
//!
//! Every vLLM-handled message goes through vLLM's `sanitize_message`.

use super::python::{repr_str, sanitize_message, str_of};
use crate::engine::SubmitError;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A `VLLMValidationError` (or a `ValueError`): 400 `BadRequestError`.
    #[error("{message}")]
    BadRequest {
        message: String,
        param: Option<String>,
    },
    /// vLLM's `NotFoundError` answers (unknown model).
    #[error("{message}")]
    NotFound {
        message: String,
        param: Option<String>,
    },
    /// An error response built with an explicit type, as the Responses API does
    /// (`invalid_request_error`).
    #[error("{message}")]
    Typed {
        message: String,
        kind: &'static str,
        status: StatusCode,
        param: Option<&'static str>,
    },
    /// FastAPI's `RequestValidationError` as vLLM's handler words it.
    #[error("{}", validation_message(.0))]
    RequestValidation(Vec<Issue>),
    /// A `fastapi.HTTPException`: vLLM's handler types it with the status phrase.
    #[error("{detail}")]
    Http { status: StatusCode, detail: String },
    /// Starlette's answer to a path no route matches.
    #[error("Not Found")]
    RouteNotFound,
    /// Starlette's answer to a known path asked with another method.
    #[error("Method Not Allowed")]
    MethodNotAllowed { allow: &'static str },
    #[error(transparent)]
    Submit(#[from] SubmitError),
    #[error("metrics are disabled on this replica (POST /debug/metrics?enabled=true)")]
    MetricsDisabled,
    #[error("the engine stopped before the request finished")]
    EngineStopped,
}

impl ApiError {
    /// vLLM's `VLLMValidationError(message, parameter=…, value=…)`, whose text appends the
    /// parameter and value.
    pub fn validation(
        message: impl Into<String>,
        param: Option<&str>,
        value: Option<&Value>,
    ) -> Self {
        let mut message = message.into();
        let mut extras = Vec::new();
        if let Some(param) = param {
            extras.push(format!("parameter={param}"));
        }
        if let Some(value) = value.filter(|v| !v.is_null()) {
            extras.push(format!("value={}", python_str(value)));
        }
        if !extras.is_empty() {
            message = format!("{message} ({})", extras.join(", "));
        }
        Self::BadRequest {
            message,
            param: param.map(str::to_string),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. }
            | Self::RequestValidation(_)
            | Self::Submit(SubmitError::ExceedsKvCapacity { .. }) => StatusCode::BAD_REQUEST,
            Self::NotFound { .. } | Self::RouteNotFound => StatusCode::NOT_FOUND,
            Self::Typed { status, .. } | Self::Http { status, .. } => *status,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::Submit(SubmitError::Stopped) | Self::MetricsDisabled | Self::EngineStopped => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "NotFoundError",
            Self::Typed { kind, .. } => kind,
            // HTTPStatus(code).phrase, as vLLM's validation and HTTPException handlers write it.
            Self::RequestValidation(_) => "Bad Request",
            Self::Http { status, .. } => status.canonical_reason().unwrap_or("Bad Request"),
            Self::Submit(SubmitError::Stopped) | Self::MetricsDisabled | Self::EngineStopped => {
                "ServiceUnavailableError"
            }
            _ => "BadRequestError",
        }
    }

    fn param(&self) -> Option<String> {
        match self {
            Self::BadRequest { param, .. } | Self::NotFound { param, .. } => param.clone(),
            Self::Typed { param, .. } => param.map(str::to_string),
            Self::RequestValidation(issues) => issues.first().and_then(Issue::param),
            _ => None,
        }
    }
}

/// One entry of a FastAPI/pydantic validation error list.
#[derive(Debug, Clone, PartialEq)]
pub enum Issue {
    /// A pydantic error dict.
    Field(FieldIssue),
    /// A bare string entry (vLLM's content-type check raises one).
    Raw(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct FieldIssue {
    pub kind: &'static str,
    /// Location below `body`; union branch markers are already left out, as vLLM's
    /// `clean_loc_for_param` drops them.
    pub loc: Vec<Loc>,
    pub msg: String,
    pub input: Input,
    /// `ctx.error`, for JSON decoding errors.
    pub ctx_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loc {
    Key(String),
    Index(usize),
}

/// What pydantic saw, as vLLM summarises it in the message.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Value(Value),
    /// The text vLLM prints verbatim (e.g. `<dict of 0 items>` for a JSON decode error).
    Summary(String),
}

/// vLLM bounds what it echoes of a rejected value, and how many errors it lists.
const MAX_REPORTED_ERRORS: usize = 10;
const MAX_ERROR_INPUT_CHARS: usize = 200;
const MAX_ERROR_CHARS: usize = 1000;

impl Issue {
    pub fn field(kind: &'static str, loc: Vec<Loc>, msg: impl Into<String>, input: &Value) -> Self {
        Self::Field(FieldIssue {
            kind,
            loc,
            msg: msg.into(),
            input: Input::Value(input.clone()),
            ctx_error: None,
        })
    }

    /// `body.a.0`, as vLLM names the parameter of a validation error.
    fn param(&self) -> Option<String> {
        match self {
            Self::Field(issue) => Some(loc_path(&issue.loc)),
            Self::Raw(_) => None,
        }
    }

    fn render(&self) -> String {
        match self {
            Self::Raw(text) => text.clone(),
            Self::Field(issue) => {
                let input = match &issue.input {
                    Input::Summary(text) => text.clone(),
                    Input::Value(value) => summarize(value),
                };
                let mut text = format!(
                    "{{'type': {}, 'loc': {}, 'msg': {}, 'input': {}",
                    repr_str(issue.kind),
                    repr_str(&loc_path(&issue.loc)),
                    repr_str(&issue.msg),
                    repr_str(&input),
                );
                if let Some(error) = &issue.ctx_error {
                    text.push_str(&format!(", 'ctx': {{'error': {}}}", repr_str(error)));
                }
                text.push('}');
                if text.chars().count() > MAX_ERROR_CHARS {
                    text =
                        text.chars().take(MAX_ERROR_CHARS).collect::<String>() + "...[truncated]";
                }
                text
            }
        }
    }
}

fn loc_path(loc: &[Loc]) -> String {
    let mut path = String::from("body");
    for part in loc {
        path.push('.');
        match part {
            Loc::Key(key) => path.push_str(key),
            Loc::Index(index) => path.push_str(&index.to_string()),
        }
    }
    path
}

/// vLLM's `_summarize_error_input`.
fn summarize(value: &Value) -> String {
    let text = str_of(value);
    match value {
        Value::Array(_) | Value::Object(_) => text,
        _ if text.chars().count() > MAX_ERROR_INPUT_CHARS => {
            text.chars().take(MAX_ERROR_INPUT_CHARS).collect::<String>() + "...[truncated]"
        }
        _ => text,
    }
}

fn validation_message(issues: &[Issue]) -> String {
    if issues.is_empty() {
        return "Validation error".into();
    }
    let label = if issues.len() == 1 { "error" } else { "errors" };
    let mut message = format!("{} validation {label}:\n", issues.len());
    for issue in issues.iter().take(MAX_REPORTED_ERRORS) {
        message.push_str("  ");
        message.push_str(&issue.render());
        message.push('\n');
    }
    if issues.len() > MAX_REPORTED_ERRORS {
        message.push_str(&format!(
            "  ...and {} more {label}\n",
            issues.len() - MAX_REPORTED_ERRORS
        ));
    }
    message.trim_end().to_string()
}

/// Python's `str()` of a value as f-strings print it (`value=…` in vLLM's messages).
pub fn python_str(value: &Value) -> String {
    match value {
        Value::Array(_) | Value::Object(_) => python_repr(value),
        _ => str_of(value),
    }
}

fn python_repr(value: &Value) -> String {
    match value {
        Value::String(s) => repr_str(s),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(python_repr).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(map) => {
            let items: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", repr_str(k), python_repr(v)))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        other => str_of(other),
    }
}

#[derive(Debug, Serialize)]
struct ErrorBody {
    error: ErrorDetail,
}

/// vLLM's `ErrorInfo`, fields in its order.
#[derive(Debug, Serialize)]
struct ErrorDetail {
    message: String,
    #[serde(rename = "type")]
    kind: &'static str,
    param: Option<String>,
    code: u16,
}

#[derive(Debug, Serialize)]
struct Detail {
    detail: &'static str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match self {
            Self::RouteNotFound => (
                status,
                Json(Detail {
                    detail: "Not Found",
                }),
            )
                .into_response(),
            Self::MethodNotAllowed { allow } => (
                status,
                [(header::ALLOW, HeaderValue::from_static(allow))],
                Json(Detail {
                    detail: "Method Not Allowed",
                }),
            )
                .into_response(),
            _ => {
                let body = ErrorBody {
                    error: ErrorDetail {
                        message: sanitize_message(&self.to_string()),
                        kind: self.kind(),
                        param: self.param(),
                        code: status.as_u16(),
                    },
                };
                (status, Json(body)).into_response()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn validation_errors_append_parameter_and_value() {
        let error = ApiError::validation("bad", Some("max_tokens"), Some(&json!(-1)));
        assert_eq!(error.to_string(), "bad (parameter=max_tokens, value=-1)");
        let error = ApiError::validation("bad", None, None);
        assert_eq!(error.to_string(), "bad");
        assert_eq!(
            python_str(&json!(["a", 1, {"b": null}])),
            "['a', 1, {'b': None}]"
        );
    }

    #[test]
    fn validation_lists_read_like_fastapis() {
        let issues = vec![
            Issue::field(
                "string_type",
                vec![Loc::Key("model".into())],
                "Input should be a valid string",
                &json!(3),
            ),
            Issue::field(
                "list_type",
                vec![Loc::Key("messages".into())],
                "Input should be a valid list",
                &json!({"a": 1}),
            ),
        ];
        let error = ApiError::RequestValidation(issues);
        assert_eq!(
            error.to_string(),
            "2 validation errors:\n  {'type': 'string_type', 'loc': 'body.model', 'msg': \
             'Input should be a valid string', 'input': '3'}\n  {'type': 'list_type', 'loc': \
             'body.messages', 'msg': 'Input should be a valid list', 'input': '<dict of 1 items>'}"
        );
        assert_eq!(error.param().as_deref(), Some("body.model"));
        assert_eq!(error.kind(), "Bad Request");
    }
}
