//! The pool's error replies, rewritten into OpenAI's error shape.
//!
//! The gateway's own errors are OpenAI's `{"error":{"message","type",
//! "param","code"}}` with a string `code`. vLLM answers its errors as
//! `{"error":{"message","type":"BadRequestError","param","code":400}}`
//! (a Python exception name and an integer code), older vLLMs as
//! `{"object":"error","message",...,"code":400}`, and FastAPI's own handlers
//! as `{"detail":"Not Found"}` or a list of validation errors. A client
//! written against OpenAI switches on `error.code` and `error.type`, so an
//! upstream error (status >= 400, JSON) is rewritten: vLLM's message and
//! `param` are kept, `type` and `code` come from this table.
//!
//! | upstream status | `type` | `code` |
//! |---|---|---|
//! | 400, 413, 422 whose message says the context length is exceeded | `invalid_request_error` | `context_length_exceeded` |
//! | other 400, 422, and 4xx not below | `invalid_request_error` | `invalid_request` |
//! | 401 | `authentication_error` | `upstream_authentication_failed` |
//! | 403 | `permission_error` | `permission_denied` |
//! | 404 naming the model (`param` or message) | `invalid_request_error` | `model_not_found` |
//! | other 404 | `invalid_request_error` | `not_found` |
//! | 413 | `invalid_request_error` | `request_too_large` |
//! | 429 | `rate_limit_error` | `rate_limit_exceeded` |
//! | 503 | `server_error` | `upstream_unavailable` |
//! | other 5xx | `server_error` | `upstream_error` |
//!
//! Left as they are: 2xx and 3xx, bodies that are not JSON (by content type
//! or content), bodies over [`MAX_ERROR_BODY`] (passed through untouched once
//! the bound is reached, never buffered further), bodies already in OpenAI's
//! shape (a string `code`), and every reply the gateway made itself (Envoy's
//! `response.code_details` is not `via_upstream`).

use filter_common::{ErrorKind, GatewayError};
use serde_json::Value;

/// Most error-body bytes held back to rewrite; vLLM's are a few hundred.
pub const MAX_ERROR_BODY: usize = 64 << 10;

/// Envoy's `response.code_details` of a response the upstream sent (any
/// other value is a reply made inside Envoy: a filter's or the router's).
pub const VIA_UPSTREAM: &[u8] = b"via_upstream";

/// What the response headers tell about a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHead<'a> {
    pub status: u16,
    pub content_type: &'a [u8],
    pub content_length: Option<u64>,
    /// `response.code_details` is [`VIA_UPSTREAM`].
    pub from_upstream: bool,
}

/// Whether to hold this response's headers and body for [`rewrite`].
pub fn wants_body(head: &ResponseHead<'_>) -> bool {
    head.from_upstream
        && (400..=599).contains(&head.status)
        && is_json(head.content_type)
        && head
            .content_length
            .is_none_or(|len| len <= MAX_ERROR_BODY as u64)
}

/// `application/json` or any `+json` type, parameters ignored.
fn is_json(content_type: &[u8]) -> bool {
    let essence = content_type
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    essence.eq_ignore_ascii_case(b"application/json")
        || (essence.len() > 5
            && essence
                .get(essence.len() - 5..)
                .is_some_and(|tail| tail.eq_ignore_ascii_case(b"+json")))
}

/// The body in OpenAI's shape, or `None` to leave it as it is.
pub fn rewrite(status: u16, body: &[u8]) -> Option<Vec<u8>> {
    if !(400..=599).contains(&status) || body.len() > MAX_ERROR_BODY {
        return None;
    }
    let value: Value = serde_json::from_slice(body).ok()?;
    let upstream = UpstreamError::read(&value)?;
    let (kind, code) = classify(status, &upstream.message, upstream.param.as_deref());
    let message = if upstream.message.is_empty() {
        format!("The model pool refused the request (HTTP {status}).")
    } else {
        upstream.message
    };
    let mut error = GatewayError::new(u32::from(status), kind, code, message);
    if let Some(param) = upstream.param {
        error = error.with_param(param);
    }
    Some(error.body())
}

/// What is kept of an upstream error.
#[derive(Debug, Default, PartialEq, Eq)]
struct UpstreamError {
    message: String,
    param: Option<String>,
}

/// Longest message built from a FastAPI validation list.
const MAX_DETAIL_MESSAGE: usize = 4 << 10;

impl UpstreamError {
    /// `None` for a body already in OpenAI's shape.
    fn read(value: &Value) -> Option<Self> {
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
        match value.get("error") {
            // Already OpenAI's: a string code is what the gateway would write.
            Some(error) if error.get("code").is_some_and(Value::is_string) => None,
            Some(error @ Value::Object(_)) => Some(Self {
                message: text(error.get("message")).unwrap_or_default(),
                param: text(error.get("param")),
            }),
            Some(Value::String(message)) => Some(Self {
                message: message.clone(),
                param: None,
            }),
            _ => Some(match value.get("detail") {
                Some(Value::String(detail)) => Self {
                    message: detail.clone(),
                    param: None,
                },
                Some(Value::Array(items)) => Self {
                    message: validation_message(items),
                    param: None,
                },
                // `{"object":"error","message",...}` and anything else.
                _ => Self {
                    message: text(value.get("message")).unwrap_or_default(),
                    param: text(value.get("param")),
                },
            }),
        }
    }
}

/// FastAPI's `[{"loc":["body","x"],"msg":"...","type":"..."}]` as one line:
/// `body.x: msg; ...`, bounded.
fn validation_message(items: &[Value]) -> String {
    let mut out = String::new();
    for item in items {
        let Some(msg) = item.get("msg").and_then(Value::as_str) else {
            continue;
        };
        let loc: Vec<String> = item
            .get("loc")
            .and_then(Value::as_array)
            .map(|parts| {
                parts
                    .iter()
                    .map(|p| match p {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let entry = if loc.is_empty() {
            msg.to_owned()
        } else {
            format!("{}: {msg}", loc.join("."))
        };
        if out.len() + entry.len() + 2 > MAX_DETAIL_MESSAGE {
            break;
        }
        if !out.is_empty() {
            out.push_str("; ");
        }
        out.push_str(&entry);
    }
    out
}

/// Phrases of vLLM's context-length refusals, across versions ("This
/// model's maximum context length is ...", "... longer than the maximum
/// model length ...", "... exceeds max_model_len").
const CONTEXT_LENGTH_PHRASES: [&[u8]; 3] =
    [b"context length", b"maximum model length", b"max_model_len"];

fn says_context_length(message: &str) -> bool {
    let hay = message.as_bytes();
    CONTEXT_LENGTH_PHRASES.iter().any(|needle| {
        hay.windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
    })
}

/// The table in the module documentation.
fn classify(status: u16, message: &str, param: Option<&str>) -> (ErrorKind, &'static str) {
    use ErrorKind::{
        AuthenticationError, InvalidRequestError, PermissionError, RateLimitError, ServerError,
    };
    match status {
        400 | 413 | 422 if says_context_length(message) => {
            (InvalidRequestError, "context_length_exceeded")
        }
        401 => (AuthenticationError, "upstream_authentication_failed"),
        403 => (PermissionError, "permission_denied"),
        404 if param == Some("model") || message.to_ascii_lowercase().contains("model") => {
            (InvalidRequestError, "model_not_found")
        }
        404 => (InvalidRequestError, "not_found"),
        413 => (InvalidRequestError, "request_too_large"),
        429 => (RateLimitError, "rate_limit_exceeded"),
        503 => (ServerError, "upstream_unavailable"),
        500..=599 => (ServerError, "upstream_error"),
        _ => (InvalidRequestError, "invalid_request"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn openai(status: u16, body: &str) -> Value {
        let out = rewrite(status, body.as_bytes()).expect("rewritten");
        serde_json::from_slice(&out).unwrap()
    }

    fn fields(v: &Value) -> (&str, &str, Value, &str) {
        let e = &v["error"];
        (
            e["type"].as_str().unwrap(),
            e["code"].as_str().unwrap(),
            e["param"].clone(),
            e["message"].as_str().unwrap(),
        )
    }

    #[test]
    fn vllm_context_length_error() {
        let body = r#"{"error":{"message":"This model's maximum context length is 2048 tokens. However, you requested 4106 tokens (10 in the messages, 4096 in the completion). Please reduce the length of the messages or completion.","type":"BadRequestError","param":null,"code":400}}"#;
        let v = openai(400, body);
        let (kind, code, param, message) = fields(&v);
        assert_eq!(
            (kind, code),
            ("invalid_request_error", "context_length_exceeded")
        );
        assert!(param.is_null());
        assert!(message.starts_with("This model's maximum context length is 2048"));
        let e = v["error"].as_object().unwrap();
        assert_eq!(e.len(), 4, "exactly OpenAI's members: {v}");
        // Other wordings of the same refusal.
        for message in [
            "The decoder prompt (length 3000) is longer than the maximum model length of 2048.",
            "'max_tokens' is too large: 4096. This model's maximum context length is 2048 tokens and your request has 10 input tokens (4096 > 2048 - 10).",
            "Input length exceeds MAX_MODEL_LEN",
        ] {
            let body = serde_json::json!({"error":{"message":message,"type":"BadRequestError","param":"max_tokens","code":400}});
            let v = openai(400, &body.to_string());
            assert_eq!(fields(&v).1, "context_length_exceeded", "{message}");
            assert_eq!(v["error"]["param"], "max_tokens");
        }
    }

    #[test]
    fn vllm_validation_error_keeps_message_and_param() {
        let body = r#"{"error":{"message":"Requested prompt logprobs of 50, which is greater than max allowed: 20 (parameter=prompt_logprobs, value=50)","type":"BadRequestError","param":"prompt_logprobs","code":400}}"#;
        let v = openai(400, body);
        let (kind, code, param, message) = fields(&v);
        assert_eq!((kind, code), ("invalid_request_error", "invalid_request"));
        assert_eq!(param, "prompt_logprobs");
        assert!(message.contains("greater than max allowed: 20"));
    }

    #[test]
    fn older_vllm_and_fastapi_shapes() {
        let old = r#"{"object":"error","message":"The model `x` does not exist.","type":"NotFoundError","param":null,"code":404}"#;
        let v = openai(404, old);
        let (kind, code, _, _) = fields(&v);
        assert_eq!((kind, code), ("invalid_request_error", "model_not_found"));
        let v = openai(404, r#"{"detail":"Not Found"}"#);
        assert_eq!(fields(&v).1, "not_found");
        assert_eq!(fields(&v).3, "Not Found");
        let v = openai(
            422,
            r#"{"detail":[{"type":"missing","loc":["body","messages"],"msg":"Field required","input":{}},{"loc":["body",0],"msg":"bad"}]}"#,
        );
        assert_eq!(fields(&v).1, "invalid_request");
        assert_eq!(fields(&v).3, "body.messages: Field required; body.0: bad");
        // A string error, and JSON of no known shape: a message of our own.
        assert_eq!(
            fields(&openai(500, r#"{"error":"engine dead"}"#)).3,
            "engine dead"
        );
        let v = openai(502, "[1,2]");
        let (kind, code, _, message) = fields(&v);
        assert_eq!((kind, code), ("server_error", "upstream_error"));
        assert_eq!(message, "The model pool refused the request (HTTP 502).");
    }

    #[test]
    fn status_table() {
        let code = |status| {
            let v = openai(
                status,
                r#"{"error":{"message":"m","type":"X","param":null,"code":1}}"#,
            );
            (fields(&v).0.to_owned(), fields(&v).1.to_owned())
        };
        for (status, kind, c) in [
            (400, "invalid_request_error", "invalid_request"),
            (422, "invalid_request_error", "invalid_request"),
            (
                401,
                "authentication_error",
                "upstream_authentication_failed",
            ),
            (403, "permission_error", "permission_denied"),
            (404, "invalid_request_error", "not_found"),
            (405, "invalid_request_error", "invalid_request"),
            (413, "invalid_request_error", "request_too_large"),
            (429, "rate_limit_error", "rate_limit_exceeded"),
            (500, "server_error", "upstream_error"),
            (503, "server_error", "upstream_unavailable"),
            (599, "server_error", "upstream_error"),
        ] {
            assert_eq!(code(status), (kind.to_owned(), c.to_owned()), "{status}");
        }
    }

    #[test]
    fn left_alone() {
        let vllm = br#"{"error":{"message":"m","type":"BadRequestError","param":null,"code":400}}"#;
        // Success and redirects.
        for status in [200, 201, 204, 302, 399, 600, 0] {
            assert_eq!(rewrite(status, vllm), None, "{status}");
        }
        // The gateway's own shape (a string code).
        let ours = GatewayError::new(400, ErrorKind::InvalidRequestError, "invalid_value", "x")
            .with_param("max_tokens")
            .body();
        assert_eq!(rewrite(400, &ours), None);
        // Not JSON, not UTF-8, truncated, empty, too deep, too big.
        let deep = "[".repeat(10_000);
        let mut huge = br#"{"error":{"message":""#.to_vec();
        huge.extend(std::iter::repeat_n(b'a', MAX_ERROR_BODY));
        huge.extend(br#"","code":400}}"#);
        for body in [
            &b"Internal Server Error"[..],
            b"<html>oops</html>",
            b"\xff\xfe\x00{\"error\":1}",
            br#"{"error":{"message":"#,
            b"",
            deep.as_bytes(),
            &huge,
        ] {
            assert_eq!(
                rewrite(500, body),
                None,
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        // Invalid UTF-8 inside a JSON string is not JSON either.
        assert_eq!(
            rewrite(400, b"{\"error\":{\"message\":\"\xc3\x28\"}}"),
            None
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let alphabet = br#"{}[]":,\ error message detail param code 0123 null true"#;
        for _ in 0..5_000 {
            let mut bytes = Vec::new();
            for _ in 0..(seed % 200) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                bytes.push(alphabet[(seed % alphabet.len() as u64) as usize]);
            }
            if let Some(out) = rewrite(400 + (seed % 200) as u16, &bytes) {
                let v: Value = serde_json::from_slice(&out).unwrap();
                assert!(v["error"]["code"].is_string());
            }
        }
    }

    #[test]
    fn which_responses_are_held() {
        let head = |status, content_type: &'static str, len, from_upstream| ResponseHead {
            status,
            content_type: content_type.as_bytes(),
            content_length: len,
            from_upstream,
        };
        assert!(wants_body(&head(400, "application/json", Some(120), true)));
        assert!(wants_body(&head(
            503,
            "Application/JSON; charset=utf-8",
            None,
            true
        )));
        assert!(wants_body(&head(
            422,
            "application/problem+json",
            None,
            true
        )));
        // A local reply, success, not JSON, too long to hold.
        assert!(!wants_body(&head(400, "application/json", None, false)));
        assert!(!wants_body(&head(200, "application/json", None, true)));
        assert!(!wants_body(&head(500, "text/plain", None, true)));
        assert!(!wants_body(&head(500, "", None, true)));
        assert!(!wants_body(&head(500, "json", None, true)));
        assert!(!wants_body(&head(
            400,
            "application/json",
            Some(MAX_ERROR_BODY as u64 + 1),
            true
        )));
    }
}
