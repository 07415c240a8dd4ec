//! Reading a JSON request body the way vLLM's FastAPI app does, and checking field types the
//! way pydantic (lax mode) does, so that refusals carry the same wording, locations and order.
//!
//! Order of checks, as in FastAPI + vLLM: the JSON is decoded first (when the content type is
//! JSON or absent), then vLLM's `validate_json_request` dependency insists on
//! `application/json`, then the request model runs its `mode="before"` validators (each
//! endpoint's own, in [`super::validate`]), then pydantic checks the fields and reports every
//! failing one at once.

use super::error::{ApiError, Input, Issue, Loc};
use super::python::json_error;
use axum::http::{HeaderMap, StatusCode, header};
use bytes::Bytes;
use serde_json::{Map, Value};

/// Decodes the body and applies vLLM's content-type check. Returns the JSON value (any kind:
/// a non-object is refused later, by the field checks).
pub fn read_json(headers: &HeaderMap, body: &Bytes) -> Result<Value, ApiError> {
    let content_type = headers.get(header::CONTENT_TYPE).map(|v| {
        v.as_bytes()
            .iter()
            .map(|&b| char::from(b))
            .collect::<String>()
    });
    let mut decoded = None;
    if !body.is_empty() && content_type.as_deref().is_none_or(is_json_content_type) {
        decoded = Some(decode(body)?);
    }
    // vLLM's `validate_json_request`: the media type before any `;`, not trimmed.
    let lowered = content_type.unwrap_or_default().to_lowercase();
    let media_type = lowered.split(';').next().unwrap_or_default();
    if media_type != "application/json" {
        return Err(ApiError::RequestValidation(vec![Issue::Raw(
            "Unsupported Media Type: Only 'application/json' is allowed".into(),
        )]));
    }
    match decoded {
        None | Some(Value::Null) => Err(ApiError::RequestValidation(vec![Issue::Field(
            super::error::FieldIssue {
                kind: "missing",
                loc: Vec::new(),
                msg: "Field required".into(),
                input: Input::Value(Value::Null),
                ctx_error: None,
            },
        )])),
        Some(value) => Ok(value),
    }
}

/// FastAPI decodes the body as JSON when the content type is `application/json` or
/// `application/*+json` (parsed like Python's `email.message`).
fn is_json_content_type(content_type: &str) -> bool {
    let full = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_lowercase();
    match full.split_once('/') {
        Some(("application", subtype)) if !subtype.contains('/') => {
            subtype == "json" || subtype.ends_with("+json")
        }
        _ => false,
    }
}

fn decode(body: &Bytes) -> Result<Value, ApiError> {
    let bytes = body.strip_prefix(b"\xef\xbb\xbf").unwrap_or(body);
    // Starlette decodes as UTF-8 before parsing; a body that is not gets FastAPI's generic 400.
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Err(ApiError::Http {
            status: StatusCode::BAD_REQUEST,
            detail: "There was an error parsing the body".into(),
        });
    };
    serde_json::from_str(text).map_err(|serde_error| {
        let (msg, pos) = match json_error(text) {
            Some(error) => (error.msg.to_string(), error.pos),
            // Python reads what serde does not (NaN, lone surrogates): word it as serde does.
            None => (serde_error.to_string(), 0),
        };
        ApiError::RequestValidation(vec![Issue::Field(super::error::FieldIssue {
            kind: "json_invalid",
            loc: vec![Loc::Index(pos)],
            msg: "JSON decode error".into(),
            input: Input::Summary("<dict of 0 items>".into()),
            ctx_error: Some(msg),
        })])
    })
}

/// The body as the object a request model needs, or pydantic's refusal of anything else.
pub fn object(body: &Value) -> Result<&Map<String, Value>, ApiError> {
    body.as_object().ok_or_else(|| {
        ApiError::RequestValidation(vec![Issue::field(
            "model_attributes_type",
            Vec::new(),
            "Input should be a valid dictionary or object to extract fields from",
            body,
        )])
    })
}

/// Pydantic's field checks over one request object: each accessor converts like lax mode and
/// records an error for a value it cannot take; [`Fields::finish`] reports them all.
#[derive(Debug)]
pub struct Fields<'a> {
    body: &'a Map<String, Value>,
    issues: Vec<Issue>,
}

impl<'a> Fields<'a> {
    pub fn new(body: &'a Map<String, Value>) -> Self {
        Self {
            body,
            issues: Vec::new(),
        }
    }

    /// The raw value, `None` when absent or `null`.
    pub fn raw(&self, key: &str) -> Option<&'a Value> {
        self.body.get(key).filter(|v| !v.is_null())
    }

    pub fn push(&mut self, issue: Issue) {
        self.issues.push(issue);
    }

    /// A required field: `missing` when absent (its input is the whole body).
    pub fn required(&mut self, key: &str) -> Option<&'a Value> {
        match self.body.get(key) {
            Some(value) => Some(value),
            None => {
                self.issues.push(Issue::field(
                    "missing",
                    vec![Loc::Key(key.into())],
                    "Field required",
                    &Value::Object(self.body.clone()),
                ));
                None
            }
        }
    }

    pub fn int(&mut self, key: &str) -> Option<i64> {
        let value = self.raw(key)?;
        match lax_int(value) {
            Ok(n) => Some(n),
            Err((kind, msg)) => {
                self.issues
                    .push(Issue::field(kind, vec![Loc::Key(key.into())], msg, value));
                None
            }
        }
    }

    pub fn float(&mut self, key: &str) -> Option<f64> {
        let value = self.raw(key)?;
        let parsed = match value {
            Value::Number(n) => n
                .as_f64()
                .ok_or(("float_type", "Input should be a valid number")),
            Value::Bool(b) => Ok(f64::from(u8::from(*b))),
            Value::String(s) => s.trim().parse::<f64>().map_err(|_| {
                (
                    "float_parsing",
                    "Input should be a valid number, unable to parse string as a number",
                )
            }),
            _ => Err(("float_type", "Input should be a valid number")),
        };
        match parsed {
            Ok(x) => Some(x),
            Err((kind, msg)) => {
                self.issues
                    .push(Issue::field(kind, vec![Loc::Key(key.into())], msg, value));
                None
            }
        }
    }

    pub fn string(&mut self, key: &str) -> Option<String> {
        let value = self.raw(key)?;
        match value {
            Value::String(s) => Some(s.clone()),
            _ => {
                self.issues
                    .push(string_type(vec![Loc::Key(key.into())], value));
                None
            }
        }
    }

    pub fn boolean(&mut self, key: &str) -> Option<bool> {
        let value = self.raw(key)?;
        match lax_bool(value) {
            Ok(b) => Some(b),
            Err((kind, msg)) => {
                self.issues
                    .push(Issue::field(kind, vec![Loc::Key(key.into())], msg, value));
                None
            }
        }
    }

    /// A nested model (`StreamOptions`), whose own fields are checked by the caller.
    pub fn model(&mut self, key: &str, class: &str) -> Option<&'a Map<String, Value>> {
        let value = self.raw(key)?;
        match value {
            Value::Object(map) => Some(map),
            _ => {
                self.issues.push(Issue::field(
                    "model_type",
                    vec![Loc::Key(key.into())],
                    format!("Input should be a valid dictionary or instance of {class}"),
                    value,
                ));
                None
            }
        }
    }

    /// A boolean field of a nested object at `outer.key`.
    pub fn nested_bool(
        &mut self,
        outer: &str,
        map: &Map<String, Value>,
        key: &str,
    ) -> Option<bool> {
        let value = map.get(key).filter(|v| !v.is_null())?;
        match lax_bool(value) {
            Ok(b) => Some(b),
            Err((kind, msg)) => {
                self.issues.push(Issue::field(
                    kind,
                    vec![Loc::Key(outer.into()), Loc::Key(key.into())],
                    msg,
                    value,
                ));
                None
            }
        }
    }

    pub fn finish(self) -> Result<(), ApiError> {
        if self.issues.is_empty() {
            Ok(())
        } else {
            Err(ApiError::RequestValidation(self.issues))
        }
    }
}

pub fn string_type(loc: Vec<Loc>, value: &Value) -> Issue {
    Issue::field("string_type", loc, "Input should be a valid string", value)
}

pub fn list_type(loc: Vec<Loc>, value: &Value) -> Issue {
    Issue::field("list_type", loc, "Input should be a valid list", value)
}

/// Pydantic's lax `int`: integers, booleans, integral floats and numeric strings.
pub fn lax_int(value: &Value) -> Result<i64, (&'static str, &'static str)> {
    const INT_TYPE: (&str, &str) = ("int_type", "Input should be a valid integer");
    const PARSING: (&str, &str) = (
        "int_parsing",
        "Input should be a valid integer, unable to parse string as an integer",
    );
    const SIZE: (&str, &str) = (
        "int_parsing_size",
        "Unable to parse input string as an integer, exceeded maximum size",
    );
    const FRACTION: (&str, &str) = (
        "int_from_float",
        "Input should be a valid integer, got a number with a fractional part",
    );
    let from_float = |x: f64| {
        if x.fract() != 0.0 || !x.is_finite() {
            Err(FRACTION)
        } else if x.abs() >= 9.2e18 {
            Err(SIZE)
        } else {
            Ok(x as i64)
        }
    };
    match value {
        Value::Bool(b) => Ok(i64::from(*b)),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Ok(i),
            (None, Some(x)) => from_float(x),
            _ => Err(SIZE),
        },
        Value::String(s) => {
            let s = s.trim();
            if let Ok(i) = s.parse::<i64>() {
                Ok(i)
            } else if let Ok(x) = s.parse::<f64>()
                && s.chars()
                    .all(|c| c.is_ascii_digit() || "+-.eE_".contains(c))
            {
                from_float(x).map_err(|_| PARSING)
            } else {
                Err(PARSING)
            }
        }
        _ => Err(INT_TYPE),
    }
}

/// Pydantic's lax `bool`.
fn lax_bool(value: &Value) -> Result<bool, (&'static str, &'static str)> {
    const PARSING: (&str, &str) = (
        "bool_parsing",
        "Input should be a valid boolean, unable to interpret input",
    );
    const TYPE: (&str, &str) = ("bool_type", "Input should be a valid boolean");
    match value {
        Value::Bool(b) => Ok(*b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(0), _) => Ok(false),
            (Some(1), _) => Ok(true),
            (Some(_), _) => Err(PARSING),
            (None, Some(0.0)) => Ok(false),
            (None, Some(1.0)) => Ok(true),
            _ => Err(TYPE),
        },
        Value::String(s) => match s.to_lowercase().as_str() {
            "0" | "off" | "f" | "false" | "n" | "no" => Ok(false),
            "1" | "on" | "t" | "true" | "y" | "yes" => Ok(true),
            _ => Err(PARSING),
        },
        _ => Err(TYPE),
    }
}

/// Python truthiness of a JSON value, for vLLM's `mode="before"` checks on the raw body.
pub fn truthy(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|x| x != 0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(items)) => !items.is_empty(),
        Some(Value::Object(map)) => !map.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use serde_json::json;

    fn headers(content_type: Option<&'static str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(ct) = content_type {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        }
        headers
    }

    fn message(result: Result<Value, ApiError>) -> String {
        result.expect_err("refused").to_string()
    }

    #[test]
    fn decoding_comes_before_the_content_type_check() {
        let bad = Bytes::from_static(b"{not json");
        let json_error = "1 validation error:\n  {'type': 'json_invalid', 'loc': 'body.1', \
                          'msg': 'JSON decode error', 'input': '<dict of 0 items>', 'ctx': \
                          {'error': 'Expecting property name enclosed in double quotes'}}";
        assert_eq!(
            message(read_json(&headers(Some("application/json")), &bad)),
            json_error
        );
        // No content type at all: FastAPI still decodes.
        assert_eq!(message(read_json(&headers(None), &bad)), json_error);
        let unsupported =
            "1 validation error:\n  Unsupported Media Type: Only 'application/json' is allowed";
        assert_eq!(
            message(read_json(&headers(Some("text/plain")), &bad)),
            unsupported
        );
        let good = Bytes::from_static(b"{}");
        assert_eq!(message(read_json(&headers(None), &good)), unsupported);
        assert_eq!(
            message(read_json(&headers(Some("application/json")), &Bytes::new())),
            "1 validation error:\n  {'type': 'missing', 'loc': 'body', 'msg': 'Field required', \
             'input': 'None'}"
        );
        assert!(read_json(&headers(Some("application/json; charset=utf-8")), &good).is_ok());
    }

    #[test]
    fn lax_conversions_match_pydantic() {
        assert_eq!(lax_int(&json!("5")), Ok(5));
        assert_eq!(lax_int(&json!(5.0)), Ok(5));
        assert_eq!(lax_int(&json!(true)), Ok(1));
        assert_eq!(lax_int(&json!(5.5)).map_err(|e| e.0), Err("int_from_float"));
        assert_eq!(lax_int(&json!("abc")).map_err(|e| e.0), Err("int_parsing"));
        assert_eq!(lax_int(&json!([1])).map_err(|e| e.0), Err("int_type"));
        assert_eq!(lax_bool(&json!("yes")), Ok(true));
        assert_eq!(lax_bool(&json!(2)).map_err(|e| e.0), Err("bool_parsing"));
        assert_eq!(lax_bool(&json!(0.5)).map_err(|e| e.0), Err("bool_type"));
    }
}
