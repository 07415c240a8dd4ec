//! OpenAI-shaped errors: `{"error":{"message","type","param","code"}}`.
//!
//! Every filter error enum implements [`IntoGatewayError`], which is the one
//! place its variants are mapped to an HTTP status and an OpenAI code.

use serde::Serialize;

/// OpenAI's `error.type` values used by the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    InvalidRequestError,
    AuthenticationError,
    PermissionError,
    NotFoundError,
    RateLimitError,
    InsufficientQuota,
    ServerError,
}

/// A reply the gateway sends instead of forwarding the request.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayError {
    pub status: u32,
    pub kind: ErrorKind,
    pub code: &'static str,
    pub message: String,
    pub param: Option<String>,
    /// Extra response headers (`www-authenticate`, `retry-after`, ...).
    pub headers: Vec<(String, String)>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: ErrorKind,
    param: Option<&'a str>,
    code: &'a str,
}

impl GatewayError {
    pub fn new(
        status: u32,
        kind: ErrorKind,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            kind,
            code,
            message: message.into(),
            param: None,
            headers: Vec::new(),
        }
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The JSON body.
    pub fn body(&self) -> Vec<u8> {
        let envelope = Envelope {
            error: Body {
                message: &self.message,
                kind: self.kind,
                param: self.param.as_deref(),
                code: self.code,
            },
        };
        // Serialising plain strings and enums cannot fail; fall back to a
        // fixed body rather than panic inside Envoy if it somehow does.
        serde_json::to_vec(&envelope).unwrap_or_else(|_| {
            br#"{"error":{"message":"internal error","type":"server_error","param":null,"code":"internal_error"}}"#.to_vec()
        })
    }

    /// Headers of the reply, content type included.
    pub fn response_headers(&self) -> Vec<(&str, &str)> {
        let mut headers = vec![("content-type", "application/json")];
        headers.extend(self.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        headers
    }
}

/// The reply when the host itself failed a call the filter needed: the
/// request is refused rather than passed on half-checked.
pub fn host_failure() -> GatewayError {
    GatewayError::new(
        500,
        ErrorKind::ServerError,
        "gateway_error",
        "The gateway could not process this request.",
    )
}

/// A request header the gateway reads holds bytes that are not UTF-8.
pub fn non_utf8_header(name: &str) -> GatewayError {
    GatewayError::new(
        400,
        ErrorKind::InvalidRequestError,
        "invalid_header",
        format!("The {name} header is not valid UTF-8."),
    )
    .with_param(name)
}

/// Maps a filter's error enum to the reply the client sees.
pub trait IntoGatewayError {
    fn into_gateway_error(self) -> GatewayError;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_openai_shape() {
        let e = GatewayError::new(
            400,
            ErrorKind::InvalidRequestError,
            "context_length_exceeded",
            "too long",
        )
        .with_param("messages");
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], "context_length_exceeded");
        assert_eq!(v["error"]["param"], "messages");
        assert_eq!(v["error"]["message"], "too long");
    }

    #[test]
    fn null_param_is_present() {
        let e = GatewayError::new(401, ErrorKind::AuthenticationError, "invalid_api_key", "no");
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert!(v["error"].as_object().unwrap().contains_key("param"));
        assert!(v["error"]["param"].is_null());
    }
}
