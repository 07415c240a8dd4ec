//! Request models of vLLM 0.32 as far as the mock reads them: each endpoint's `mode="before"`
//! validators, in the order pydantic runs them (the last defined runs first), then the field
//! checks. The validators raise `VLLMValidationError`, which is not a `ValueError`, so pydantic
//! lets it through and vLLM answers it as a 400 `BadRequestError` naming the parameter; field
//! errors come back together as FastAPI's validation error list.
//!
//! Sources: `vllm/entrypoints/openai/{chat_completion,completion,responses}/protocol.py`,
//! `vllm/entrypoints/pooling/{base,embed}/protocol.py`,
//! `vllm/entrypoints/generate/base/protocol.py` (`validate_cache_salt`, `StreamOptions`).

use super::body::{Fields, lax_int, list_type, string_type, truthy};
use super::error::{ApiError, Issue, Loc};
use super::protocol::{PromptInput, StreamUsage};
use crate::tokenizer::{ChatMessage, TokenId};
use serde_json::{Map, Value};

/// `VLLM_MAX_COMPLETION_PROMPTS`' default.
pub const MAX_COMPLETION_PROMPTS: usize = 1024;
/// `_MAX_CACHE_SALT_LENGTH`.
pub const MAX_CACHE_SALT_LENGTH: usize = 128;
/// A completion request's `max_tokens` when it names none (or `null`).
pub const COMPLETION_DEFAULT_MAX_TOKENS: i64 = 16;

/// What chat, completions and the Responses API share once validated.
#[derive(Debug)]
pub struct Common {
    pub model: Option<String>,
    pub stream: bool,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub cache_salt: Option<String>,
    /// The body's `request_id`, which names the response when no `X-Request-Id` is sent.
    pub request_id: Option<String>,
}

#[derive(Debug)]
pub struct ChatRequest {
    pub common: Common,
    pub messages: Vec<ChatMessage>,
    /// `max_completion_tokens` when set, else `max_tokens`.
    pub max_tokens: Option<i64>,
    /// Which of the two the limit came from, as vLLM names it in errors.
    pub max_tokens_param: &'static str,
    pub stream_usage: StreamUsage,
    pub prompt_logprobs: Option<i64>,
}

#[derive(Debug)]
pub struct CompletionRequest {
    pub common: Common,
    pub prompt: PromptInput,
    pub max_tokens: i64,
    pub stream_usage: StreamUsage,
    pub prompt_logprobs: Option<i64>,
}

#[derive(Debug)]
pub struct EmbeddingRequest {
    pub model: Option<String>,
    pub input: PromptInput,
    pub request_id: Option<String>,
    /// `float` (default) or `base64`: little-endian f32s, base64-encoded.
    pub encoding_format: Option<String>,
    /// Matryoshka truncation, which the mock's models (like the tiny
    /// model vLLM serves in the conformance suite) do not support.
    pub dimensions: Option<Value>,
}

/// `validate_cache_salt`: a non-empty string of at most 128 characters without `@`, `/`, `\`
/// or NUL.
pub fn cache_salt(body: &Map<String, Value>) -> Result<(), ApiError> {
    let Some(salt) = body.get("cache_salt").filter(|v| !v.is_null()) else {
        return Ok(());
    };
    let Some(salt) = salt.as_str().filter(|s| !s.is_empty()) else {
        return Err(ApiError::validation(
            "Parameter 'cache_salt' must be a non-empty string if provided.",
            Some("cache_salt"),
            None,
        ));
    };
    if salt.chars().count() > MAX_CACHE_SALT_LENGTH
        || salt.chars().any(|c| matches!(c, '@' | '/' | '\\' | '\0'))
    {
        return Err(ApiError::validation(
            "Parameter 'cache_salt' must be at most 128 characters and must not contain \
             '@', '/', '\\\\', or NUL.",
            Some("cache_salt"),
            None,
        ));
    }
    Ok(())
}

/// `validate_stream_options`: options need a stream (Python truthiness on the raw body, so
/// `{}` passes).
fn stream_options(body: &Map<String, Value>) -> Result<(), ApiError> {
    if truthy(body.get("stream_options")) && !truthy(body.get("stream")) {
        return Err(ApiError::validation(
            "Stream options can only be defined when `stream=True`.",
            Some("stream_options"),
            None,
        ));
    }
    Ok(())
}

/// A number as Python compares it (`bool` is an `int`).
fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

/// The integer-type part of `check_logprobs`: these run on the raw body, so a non-number is
/// refused here rather than by pydantic.
fn numeric_fields(body: &Map<String, Value>, names: &[&str]) -> Result<(), ApiError> {
    for name in names {
        if let Some(value) = body.get(*name).filter(|v| !v.is_null())
            && number(value).is_none()
        {
            return Err(ApiError::validation(
                format!("`{name}` must be an integer."),
                Some(name),
                Some(value),
            ));
        }
    }
    Ok(())
}

fn prompt_logprobs_rules(body: &Map<String, Value>) -> Result<(), ApiError> {
    let Some(raw) = body.get("prompt_logprobs").filter(|v| !v.is_null()) else {
        return Ok(());
    };
    let n = number(raw).unwrap_or(0.0);
    if truthy(body.get("stream")) && (n > 0.0 || n == -1.0) {
        return Err(ApiError::validation(
            "`prompt_logprobs` are not available when `stream=True`.",
            Some("prompt_logprobs"),
            None,
        ));
    }
    positive_or_minus_one("prompt_logprobs", raw, n)
}

/// vLLM's rule for the logprob counts: a positive value, or -1 for all.
fn positive_or_minus_one(name: &str, raw: &Value, n: f64) -> Result<(), ApiError> {
    if n < 0.0 && n != -1.0 {
        return Err(ApiError::validation(
            format!("`{name}` must be a positive value or -1."),
            Some(name),
            Some(raw),
        ));
    }
    Ok(())
}

/// Chat's `check_logprobs`.
fn chat_logprobs(body: &Map<String, Value>) -> Result<(), ApiError> {
    numeric_fields(body, &["prompt_logprobs", "top_logprobs"])?;
    prompt_logprobs_rules(body)?;
    if let Some(raw) = body.get("top_logprobs").filter(|v| !v.is_null()) {
        let n = number(raw).unwrap_or(0.0);
        positive_or_minus_one("top_logprobs", raw, n)?;
        if (n == -1.0 || n > 0.0) && !truthy(body.get("logprobs")) {
            return Err(ApiError::validation(
                "when using `top_logprobs`, `logprobs` must be set to true.",
                Some("top_logprobs"),
                None,
            ));
        }
    }
    Ok(())
}

/// Completions' `check_logprobs`.
fn completion_logprobs(body: &Map<String, Value>) -> Result<(), ApiError> {
    numeric_fields(body, &["prompt_logprobs", "logprobs"])?;
    prompt_logprobs_rules(body)?;
    if let Some(raw) = body.get("logprobs").filter(|v| !v.is_null()) {
        positive_or_minus_one("logprobs", raw, number(raw).unwrap_or(0.0))?;
    }
    Ok(())
}

/// The `StreamOptions` model: two optional booleans, both `False` by default. How a stream
/// reports usage follows vLLM's `should_include_usage`.
fn stream_usage(fields: &mut Fields<'_>, stream: bool) -> StreamUsage {
    let Some(options) = fields.model("stream_options", "StreamOptions") else {
        return StreamUsage::Off;
    };
    let include = fields
        .nested_bool("stream_options", options, "include_usage")
        .unwrap_or(false);
    let continuous = fields
        .nested_bool("stream_options", options, "continuous_usage_stats")
        .unwrap_or(false);
    match (stream, include, continuous) {
        (false, _, _) | (true, false, _) => StreamUsage::Off,
        (true, true, false) => StreamUsage::Final,
        (true, true, true) => StreamUsage::Continuous,
    }
}

fn common(fields: &mut Fields<'_>) -> (Option<String>, bool) {
    (
        fields.string("model"),
        fields.boolean("stream").unwrap_or(false),
    )
}

pub fn chat(body: &Value) -> Result<ChatRequest, ApiError> {
    if let Some(map) = body.as_object() {
        // Definition order reversed: check_logprobs, validate_stream_options, …,
        // check_cache_salt_support.
        chat_logprobs(map)?;
        stream_options(map)?;
        cache_salt(map)?;
    }
    let map = super::body::object(body)?;
    let mut fields = Fields::new(map);
    // Field order of `ChatCompletionRequest`.
    let messages = fields
        .required("messages")
        .and_then(|value| chat_messages(&mut fields, value));
    let (model, stream) = common(&mut fields);
    let max_tokens = fields.int("max_tokens");
    let max_completion_tokens = fields.int("max_completion_tokens");
    let stream_usage = stream_usage(&mut fields, stream);
    let temperature = fields.float("temperature");
    let top_p = fields.float("top_p");
    let prompt_logprobs = fields.int("prompt_logprobs");
    let request_id = fields.string("request_id");
    let cache_salt = fields.string("cache_salt");
    fields.finish()?;
    let (max_tokens, max_tokens_param) = match max_completion_tokens {
        Some(n) => (Some(n), "max_completion_tokens"),
        None => (max_tokens, "max_tokens"),
    };
    Ok(ChatRequest {
        common: Common {
            model,
            stream,
            temperature,
            top_p,
            cache_salt,
            request_id,
        },
        messages: messages.unwrap_or_default(),
        max_tokens,
        max_tokens_param,
        stream_usage,
        prompt_logprobs,
    })
}

fn chat_messages(fields: &mut Fields<'_>, value: &Value) -> Option<Vec<ChatMessage>> {
    let Value::Array(items) = value else {
        fields.push(list_type(vec![Loc::Key("messages".into())], value));
        return None;
    };
    let mut messages = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        match serde_json::from_value::<ChatMessage>(item.clone()) {
            Ok(message) => messages.push(message),
            Err(_) => fields.push(Issue::field(
                "dict_type",
                vec![Loc::Key("messages".into()), Loc::Index(index)],
                "Input should be a valid dictionary",
                item,
            )),
        }
    }
    Some(messages)
}

pub fn completion(body: &Value) -> Result<CompletionRequest, ApiError> {
    if let Some(map) = body.as_object() {
        // Definition order reversed: validate_prompt_list_length,
        // validate_prompt_and_prompt_embeds, validate_stream_options, check_logprobs, …,
        // normalize_null_max_tokens, check_cache_salt_support.
        prompt_list_length(map)?;
        prompt_present(map)?;
        stream_options(map)?;
        completion_logprobs(map)?;
        cache_salt(map)?;
    }
    let map = super::body::object(body)?;
    let mut fields = Fields::new(map);
    // Field order of `CompletionRequest`.
    let model = fields.string("model");
    let prompt = fields
        .raw("prompt")
        .and_then(|value| prompt_union(&mut fields, "prompt", value, true));
    let max_tokens = fields
        .int("max_tokens")
        .unwrap_or(COMPLETION_DEFAULT_MAX_TOKENS);
    let stream = fields.boolean("stream").unwrap_or(false);
    let stream_usage = stream_usage(&mut fields, stream);
    let temperature = fields.float("temperature");
    let top_p = fields.float("top_p");
    let prompt_logprobs = fields.int("prompt_logprobs");
    let request_id = fields.string("request_id");
    let cache_salt = fields.string("cache_salt");
    fields.finish()?;
    Ok(CompletionRequest {
        common: Common {
            model,
            stream,
            temperature,
            top_p,
            cache_salt,
            request_id,
        },
        prompt: prompt.unwrap_or(PromptInput::Text(String::new())),
        max_tokens,
        stream_usage,
        prompt_logprobs,
    })
}

fn prompt_list_length(body: &Map<String, Value>) -> Result<(), ApiError> {
    // `is_list_of(prompt, int)` looks at the first item only.
    if let Some(Value::Array(items)) = body.get("prompt")
        && items.len() > MAX_COMPLETION_PROMPTS
        && !items.first().is_some_and(|v| v.is_i64() || v.is_u64())
    {
        return Err(ApiError::validation(
            format!(
                "prompt list length {} exceeds the maximum allowed count of \
                 {MAX_COMPLETION_PROMPTS}. To increase this limit, set the \
                 VLLM_MAX_COMPLETION_PROMPTS environment variable.",
                items.len()
            ),
            Some("prompt"),
            None,
        ));
    }
    Ok(())
}

fn prompt_present(body: &Map<String, Value>) -> Result<(), ApiError> {
    let prompt_empty = match body.get("prompt") {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(_) => false,
    };
    let embeds_empty = match body.get("prompt_embeds") {
        None | Some(Value::Null) => true,
        Some(Value::Array(items)) => items.is_empty(),
        Some(_) => false,
    };
    if prompt_empty && embeds_empty {
        return Err(ApiError::validation(
            "Either prompt or prompt_embeds must be provided and non-empty.",
            Some("prompt"),
            None,
        ));
    }
    Ok(())
}

/// The union `list[int] | list[list[int]] | str | list[str]` of `prompt` and `input`; `ge0`
/// adds completions' `Field(ge=0)` on token ids. When no branch takes the value, pydantic
/// reports every branch's errors, in branch order.
pub fn prompt_union(
    fields: &mut Fields<'_>,
    key: &str,
    value: &Value,
    ge0: bool,
) -> Option<PromptInput> {
    let at = |rest: &[Loc]| {
        let mut loc = vec![Loc::Key(key.into())];
        loc.extend_from_slice(rest);
        loc
    };
    let token = |item: &Value, loc: Vec<Loc>| -> Result<TokenId, Issue> {
        let id = lax_int(item).map_err(|(kind, msg)| Issue::field(kind, loc.clone(), msg, item))?;
        if ge0 && id < 0 {
            return Err(Issue::field(
                "greater_than_equal",
                loc,
                "Input should be greater than or equal to 0",
                item,
            ));
        }
        // Ids past u32 cannot be in any vocabulary; the engine refuses them as such.
        Ok(TokenId::try_from(id).unwrap_or(TokenId::MAX))
    };
    if let Value::String(text) = value {
        return Some(PromptInput::Text(text.clone()));
    }
    let Value::Array(items) = value else {
        for branch in 0..4 {
            fields.push(if branch == 2 {
                string_type(at(&[]), value)
            } else {
                list_type(at(&[]), value)
            });
        }
        return None;
    };
    // Smart mode takes an exact match first: all strings, all integers, all lists.
    if !items.is_empty() && items.iter().all(Value::is_string) {
        let texts = items.iter().filter_map(|v| v.as_str().map(str::to_string));
        return Some(PromptInput::Texts(texts.collect()));
    }
    let mut issues = Vec::new();
    let ids: Vec<Result<TokenId, Issue>> = items
        .iter()
        .enumerate()
        .map(|(i, item)| token(item, at(&[Loc::Index(i)])))
        .collect();
    if ids.iter().all(Result::is_ok) {
        return Some(PromptInput::Tokens(ids.into_iter().flatten().collect()));
    }
    issues.extend(ids.into_iter().filter_map(Result::err));
    let mut batches = Vec::new();
    let mut batch_issues = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item {
            Value::Array(inner) => {
                let mut batch = Vec::with_capacity(inner.len());
                for (j, id) in inner.iter().enumerate() {
                    match token(id, at(&[Loc::Index(i), Loc::Index(j)])) {
                        Ok(id) => batch.push(id),
                        Err(issue) => batch_issues.push(issue),
                    }
                }
                batches.push(batch);
            }
            other => batch_issues.push(list_type(at(&[Loc::Index(i)]), other)),
        }
    }
    if batch_issues.is_empty() {
        return Some(PromptInput::TokenBatches(batches));
    }
    issues.extend(batch_issues);
    issues.push(string_type(at(&[]), value));
    for (i, item) in items.iter().enumerate() {
        if !item.is_string() {
            issues.push(string_type(at(&[Loc::Index(i)]), item));
        }
    }
    for issue in issues {
        fields.push(issue);
    }
    None
}

pub fn embedding(body: &Value) -> Result<EmbeddingRequest, ApiError> {
    if let Some(map) = body.as_object() {
        cache_salt(map)?;
    }
    let map = super::body::object(body)?;
    let mut fields = Fields::new(map);
    let model = fields.string("model");
    let request_id = fields.string("request_id");
    fields.string("cache_salt");
    let encoding_format = fields.string("encoding_format");
    let input = fields
        .required("input")
        .and_then(|value| prompt_union(&mut fields, "input", value, false));
    fields.finish()?;
    Ok(EmbeddingRequest {
        model,
        input: input.unwrap_or(PromptInput::Texts(Vec::new())),
        request_id,
        encoding_format,
        dimensions: map.get("dimensions").filter(|v| !v.is_null()).cloned(),
    })
}

/// The Responses API's `mode="before"` checks (`validate_prompt`, `validate_background`,
/// `check_cache_salt_support`), then its scalar fields. Returns the body with those fields in
/// their converted form, for the typed model to read.
pub fn responses(body: &Value) -> Result<Value, ApiError> {
    if let Some(map) = body.as_object() {
        if map.get("prompt").is_some_and(|v| !v.is_null()) {
            return Err(ApiError::validation(
                "prompt template is not supported",
                Some("prompt"),
                None,
            ));
        }
        if truthy(map.get("background"))
            && !map.get("store").is_none_or(|store| truthy(Some(store)))
        {
            return Err(ApiError::validation(
                "background can only be used when `store` is true",
                Some("background"),
                None,
            ));
        }
        cache_salt(map)?;
    }
    let map = super::body::object(body)?;
    let mut fields = Fields::new(map);
    let mut normalized = map.clone();
    // Field order of `ResponsesRequest`.
    let background = fields.boolean("background");
    let input = fields.required("input");
    if let Some(input) = input
        && !input.is_string()
        && !input.is_array()
    {
        fields.push(string_type(vec![Loc::Key("input".into())], input));
        fields.push(list_type(vec![Loc::Key("input".into())], input));
    }
    let instructions = fields.string("instructions");
    let max_output_tokens = fields.int("max_output_tokens");
    let model = fields.string("model");
    let previous_response_id = fields.string("previous_response_id");
    let store = fields.boolean("store");
    let stream = fields.boolean("stream");
    let temperature = fields.float("temperature");
    let top_p = fields.float("top_p");
    let user = fields.string("user");
    let request_id = fields.string("request_id");
    let cache_salt = fields.string("cache_salt");
    fields.finish()?;
    let mut set = |key: &str, value: Option<Value>| {
        if let Some(value) = value {
            normalized.insert(key.to_string(), value);
        }
    };
    set("background", background.map(Value::from));
    set("instructions", instructions.map(Value::from));
    set("max_output_tokens", max_output_tokens.map(Value::from));
    set("model", model.map(Value::from));
    set(
        "previous_response_id",
        previous_response_id.map(Value::from),
    );
    set("store", store.map(Value::from));
    set("stream", stream.map(Value::from));
    set("temperature", temperature.map(Value::from));
    set("top_p", top_p.map(Value::from));
    set("user", user.map(Value::from));
    set("request_id", request_id.map(Value::from));
    set("cache_salt", cache_salt.map(Value::from));
    Ok(Value::Object(normalized))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(result: Result<impl std::fmt::Debug, ApiError>) -> String {
        result.expect_err("refused").to_string()
    }

    #[test]
    fn cache_salt_rules_are_vllms() {
        let base = |salt: Value| json!({"messages": [], "cache_salt": salt});
        assert!(chat(&base(json!("tenant-a_1.x"))).is_ok());
        assert!(chat(&base(json!(null))).is_ok());
        assert!(
            chat(&base(json!("é".repeat(128)))).is_ok(),
            "characters, not bytes"
        );
        let shape = "Parameter 'cache_salt' must be a non-empty string if provided. \
                     (parameter=cache_salt)";
        for bad in [json!(""), json!(5), json!(["a"])] {
            assert_eq!(message(chat(&base(bad))), shape);
        }
        let content = "Parameter 'cache_salt' must be at most 128 characters and must not \
                       contain '@', '/', '\\\\', or NUL. (parameter=cache_salt)";
        for bad in ["a/b", "a@b", "a\\b", "a\0b", &"x".repeat(129)] {
            assert_eq!(message(chat(&base(json!(bad)))), content, "{bad}");
        }
    }

    #[test]
    fn validators_run_in_pydantics_order() {
        // check_logprobs runs before validate_stream_options, which runs before the salt.
        let body = json!({"messages": [], "stream_options": {"include_usage": true},
                          "cache_salt": "", "prompt_logprobs": "x"});
        assert_eq!(
            message(chat(&body)),
            "`prompt_logprobs` must be an integer. (parameter=prompt_logprobs, value=x)"
        );
        let body = json!({"messages": [], "stream_options": {"include_usage": true},
                          "cache_salt": ""});
        assert_eq!(
            message(chat(&body)),
            "Stream options can only be defined when `stream=True`. (parameter=stream_options)"
        );
        // Field errors only after every before-validator passed, all at once.
        let body = json!({"model": 3, "max_tokens": "many"});
        assert_eq!(
            message(chat(&body)),
            "3 validation errors:\n  {'type': 'missing', 'loc': 'body.messages', 'msg': \
             'Field required', 'input': '<dict of 2 items>'}\n  {'type': 'string_type', 'loc': \
             'body.model', 'msg': 'Input should be a valid string', 'input': '3'}\n  {'type': \
             'int_parsing', 'loc': 'body.max_tokens', 'msg': 'Input should be a valid integer, \
             unable to parse string as an integer', 'input': 'many'}"
        );
    }

    #[test]
    fn completion_prompts_follow_the_union() {
        let prompt = |p: Value| completion(&json!({"prompt": p})).map(|r| r.prompt);
        assert!(matches!(prompt(json!("hi")), Ok(PromptInput::Text(_))));
        assert!(matches!(prompt(json!([1, 2])), Ok(PromptInput::Tokens(t)) if t == [1, 2]));
        assert!(matches!(
            prompt(json!([[1], [2]])),
            Ok(PromptInput::TokenBatches(_))
        ));
        assert!(matches!(
            prompt(json!(["a", "b"])),
            Ok(PromptInput::Texts(_))
        ));
        assert_eq!(
            message(prompt(json!(""))),
            "Either prompt or prompt_embeds must be provided and non-empty. (parameter=prompt)"
        );
        assert_eq!(
            message(prompt(json!([1, "a"]))),
            "5 validation errors:\n  {'type': 'int_parsing', 'loc': 'body.prompt.1', 'msg': \
             'Input should be a valid integer, unable to parse string as an integer', 'input': \
             'a'}\n  {'type': 'list_type', 'loc': 'body.prompt.0', 'msg': 'Input should be a \
             valid list', 'input': '1'}\n  {'type': 'list_type', 'loc': 'body.prompt.1', 'msg': \
             'Input should be a valid list', 'input': 'a'}\n  {'type': 'string_type', 'loc': \
             'body.prompt', 'msg': 'Input should be a valid string', 'input': '<list of 2 \
             items>'}\n  {'type': 'string_type', 'loc': 'body.prompt.0', 'msg': 'Input should \
             be a valid string', 'input': '1'}"
        );
        assert_eq!(
            completion(&json!({"prompt": "x", "max_tokens": null}))
                .expect("valid")
                .max_tokens,
            16
        );
    }
}
