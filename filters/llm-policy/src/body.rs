//! Parses an OpenAI request body into what the policy needs: the model, the
//! output cap, streaming, the workload hint and the prompt, with precise
//! `invalid_request_error`s naming the parameter at fault.
//!
//! Only fields the policy reads are validated; everything else is vLLM's
//! business and passes through untouched.

use serde_json::value::RawValue;

use crate::endpoint::Endpoint;
use crate::error::PolicyError;
use crate::json::{Path, RawObject, starts_with, typed};

/// Largest `max_tokens` accepted at all; anything above is a client bug.
pub const MAX_TOKENS_CEILING: u64 = 1_000_000;
/// Largest `n` / `best_of` (vLLM's own bound is per-deployment; OpenAI's is 128).
pub const MAX_SEQUENCES: u64 = 128;

/// A parsed request body.
#[derive(Debug, Clone)]
pub struct ParsedRequest<'a> {
    pub endpoint: Endpoint,
    /// The body's top-level members, for the rewrite.
    pub object: RawObject<'a>,
    pub model: String,
    /// The client's output cap, if it sent one.
    pub max_tokens: Option<RequestedMax>,
    /// Sequences generated per prompt (`n`, or `best_of` when larger).
    pub sequences_per_prompt: u32,
    pub stream: bool,
    /// The client asked for batch treatment (`metadata.workload = "batch"`
    /// or `service_tier = "flex"`).
    pub batch_hint: bool,
    pub prompt: Prompt,
}

/// An output cap as sent, with the parameter it came from (for errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestedMax {
    pub value: u32,
    pub param: &'static str,
}

/// What the request feeds the model, as the estimate and prefix chain see it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prompt {
    /// Rendered through a chat template (per-message overhead applies).
    pub chat: bool,
    /// Independent sequences: one for chat and responses, one per prompt or
    /// input for batched completions and embeddings.
    pub sequences: Vec<Vec<Segment>>,
}

/// One message (chat) or one whole prompt (plain).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Segment {
    pub role: Option<String>,
    pub pieces: Vec<Piece>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Text(String),
    /// A pre-tokenised prompt: the count is exact.
    TokenIds(Vec<u32>),
    /// A non-text part (image, audio, file), kept as raw JSON for the prefix chain.
    Media(String),
}

/// Parses `text` as the body of a request to `endpoint`.
pub fn parse(endpoint: Endpoint, text: &str) -> Result<ParsedRequest<'_>, PolicyError> {
    let object = RawObject::parse_body(text)?;
    let model = match object.get("model") {
        None => return Err(missing("model")),
        Some(raw) => typed::<String>(raw, "model", "a string")?,
    };
    if model.is_empty() {
        return Err(invalid_value("model", "must not be empty"));
    }
    let prompt = match endpoint {
        Endpoint::ChatCompletions => chat_prompt(&object)?,
        Endpoint::Completions => plain_prompt(&object, "prompt")?,
        Endpoint::Embeddings => plain_prompt(&object, "input")?,
        Endpoint::Responses => responses_prompt(&object)?,
    };
    let max_tokens = match endpoint {
        Endpoint::ChatCompletions => larger(
            requested(&object, "max_tokens")?,
            requested(&object, "max_completion_tokens")?,
        ),
        Endpoint::Completions => requested(&object, "max_tokens")?,
        Endpoint::Responses => requested(&object, "max_output_tokens")?,
        Endpoint::Embeddings => None,
    };
    let sequences_per_prompt = match endpoint {
        Endpoint::ChatCompletions | Endpoint::Completions => {
            let n = object.integer("n", 1, MAX_SEQUENCES)?.unwrap_or(1);
            let best_of = object.integer("best_of", 1, MAX_SEQUENCES)?.unwrap_or(1);
            n.max(best_of)
        }
        Endpoint::Embeddings | Endpoint::Responses => 1,
    };
    let stream = endpoint.generates()
        && object
            .typed::<bool>("stream", "stream", "a boolean")?
            .unwrap_or(false);
    if endpoint == Endpoint::Responses && object.get("previous_response_id").is_some() {
        return Err(PolicyError::UnsupportedParameter {
            param: "previous_response_id".into(),
            reason: "stored responses are not scoped to a tenant; send the full input instead",
        });
    }
    let batch_hint = batch_hint(&object);
    Ok(ParsedRequest {
        endpoint,
        object,
        model,
        max_tokens,
        sequences_per_prompt,
        stream,
        batch_hint,
        prompt,
    })
}

fn missing(param: impl std::fmt::Display) -> PolicyError {
    PolicyError::MissingParameter {
        param: param.to_string(),
    }
}

fn invalid_value(param: &str, reason: &str) -> PolicyError {
    PolicyError::InvalidValue {
        param: param.to_owned(),
        reason: reason.to_owned(),
    }
}

fn requested(
    object: &RawObject<'_>,
    param: &'static str,
) -> Result<Option<RequestedMax>, PolicyError> {
    Ok(object
        .integer(param, 1, MAX_TOKENS_CEILING)?
        .map(|value| RequestedMax { value, param }))
}

/// Of `max_tokens` and `max_completion_tokens`, the larger: vLLM prefers one
/// and OpenAI the other, so only the larger is a safe upper bound.
fn larger(a: Option<RequestedMax>, b: Option<RequestedMax>) -> Option<RequestedMax> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.value > a.value { b } else { a }),
        (a, b) => a.or(b),
    }
}

fn batch_hint(object: &RawObject<'_>) -> bool {
    let flex = object
        .get("service_tier")
        .is_some_and(|raw| raw.get() == "\"flex\"");
    let workload = object
        .get("metadata")
        .filter(|raw| starts_with(raw, '{'))
        .and_then(|raw| RawObject::parse_member(raw, "metadata").ok())
        .and_then(|m| m.get("workload").map(|w| w.get() == "\"batch\""))
        .unwrap_or(false);
    flex || workload
}

fn chat_prompt(object: &RawObject<'_>) -> Result<Prompt, PolicyError> {
    let raw = object.get("messages").ok_or_else(|| missing("messages"))?;
    let messages: Vec<&RawValue> = typed(raw, "messages", "an array")?;
    if messages.is_empty() {
        return Err(invalid_value(
            "messages",
            "must contain at least one message",
        ));
    }
    let mut segments = Vec::with_capacity(messages.len() + 1);
    // Tool definitions are rendered into the prompt by the chat template.
    for key in ["tools", "functions"] {
        if let Some(tools) = object.get(key) {
            segments.push(Segment {
                role: Some(key.to_owned()),
                pieces: vec![Piece::Text(tools.get().to_owned())],
            });
        }
    }
    for (i, raw) in messages.into_iter().enumerate() {
        segments.push(message(raw, Path::Index(&Path::Member("messages"), i))?);
    }
    Ok(Prompt {
        chat: true,
        sequences: vec![segments],
    })
}

/// One chat message (or a Responses API input item with a role).
fn message(raw: &RawValue, param: Path<'_>) -> Result<Segment, PolicyError> {
    let m = RawObject::parse_member(raw, param)?;
    let role_param = Path::Field(&param, "role");
    let role: String = m
        .typed("role", role_param, "a string")?
        .ok_or_else(|| missing(role_param))?;
    let mut pieces = Vec::new();
    if let Some(name) = m.typed::<String>("name", Path::Field(&param, "name"), "a string")? {
        pieces.push(Piece::Text(name));
    }
    if let Some(content) = m.get("content") {
        pieces.extend(content_pieces(content, Path::Field(&param, "content"))?);
    }
    for key in ["tool_calls", "function_call"] {
        if let Some(calls) = m.get(key) {
            pieces.push(Piece::Text(calls.get().to_owned()));
        }
    }
    Ok(Segment {
        role: Some(role),
        pieces,
    })
}

/// Message content: a string, or an array of typed parts.
fn content_pieces(raw: &RawValue, param: Path<'_>) -> Result<Vec<Piece>, PolicyError> {
    if starts_with(raw, '"') {
        return Ok(vec![Piece::Text(typed(
            raw,
            param,
            "a string or an array",
        )?)]);
    }
    let parts: Vec<&RawValue> = typed(raw, param, "a string or an array of content parts")?;
    let mut pieces = Vec::with_capacity(parts.len());
    for (i, part) in parts.into_iter().enumerate() {
        let part_param = Path::Index(&param, i);
        let p = RawObject::parse_member(part, part_param)?;
        let type_param = Path::Field(&part_param, "type");
        let kind: String = p
            .typed("type", type_param, "a string")?
            .ok_or_else(|| missing(type_param))?;
        match kind.as_str() {
            // Chat uses `text`; the Responses API `input_text` / `output_text`.
            "text" | "input_text" | "output_text" => {
                let text_param = Path::Field(&part_param, "text");
                let text: String = p
                    .typed("text", text_param, "a string")?
                    .ok_or_else(|| missing(text_param))?;
                pieces.push(Piece::Text(text));
            }
            _ => pieces.push(Piece::Media(part.get().to_owned())),
        }
    }
    Ok(pieces)
}

/// A completions `prompt` or embeddings `input`: a string, an array of
/// strings, an array of token ids, or an array of token-id arrays.
fn plain_prompt(object: &RawObject<'_>, param: &str) -> Result<Prompt, PolicyError> {
    let raw = object.get(param).ok_or_else(|| missing(param))?;
    const EXPECTED: &str = "a string, an array of strings, or an array of token ids";
    let sequences: Vec<Piece> = if starts_with(raw, '"') {
        vec![Piece::Text(typed(raw, param, EXPECTED)?)]
    } else {
        let items: Vec<&RawValue> = typed(raw, param, EXPECTED)?;
        if items.is_empty() {
            return Err(invalid_value(param, "must not be empty"));
        }
        if items
            .first()
            .is_some_and(|first| !starts_with(first, '"') && !starts_with(first, '['))
        {
            // A flat array of token ids is one prompt.
            vec![Piece::TokenIds(typed(raw, param, EXPECTED)?)]
        } else {
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| {
                    let item_param = Path::Index(&Path::Member(param), i);
                    if starts_with(item, '"') {
                        typed(item, item_param, "a string").map(Piece::Text)
                    } else {
                        typed(item, item_param, "an array of token ids").map(Piece::TokenIds)
                    }
                })
                .collect::<Result<_, _>>()?
        }
    };
    Ok(Prompt {
        chat: false,
        sequences: sequences
            .into_iter()
            .map(|piece| {
                vec![Segment {
                    role: None,
                    pieces: vec![piece],
                }]
            })
            .collect(),
    })
}

/// Responses API: `instructions` plus `input` (a string or a list of items).
fn responses_prompt(object: &RawObject<'_>) -> Result<Prompt, PolicyError> {
    let mut segments = Vec::new();
    if let Some(instructions) =
        object.typed::<String>("instructions", "instructions", "a string")?
    {
        segments.push(Segment {
            role: Some("system".into()),
            pieces: vec![Piece::Text(instructions)],
        });
    }
    if let Some(tools) = object.get("tools") {
        segments.push(Segment {
            role: Some("tools".into()),
            pieces: vec![Piece::Text(tools.get().to_owned())],
        });
    }
    let raw = object.get("input").ok_or_else(|| missing("input"))?;
    if starts_with(raw, '"') {
        segments.push(Segment {
            role: Some("user".into()),
            pieces: vec![Piece::Text(typed(raw, "input", "a string or an array")?)],
        });
    } else {
        let items: Vec<&RawValue> = typed(raw, "input", "a string or an array of input items")?;
        for (i, item) in items.into_iter().enumerate() {
            let param = Path::Index(&Path::Member("input"), i);
            let has_role = RawObject::parse_member(item, param)?.contains("role");
            segments.push(if has_role {
                message(item, param)?
            } else {
                // Tool calls and their outputs: counted by their JSON text.
                Segment {
                    role: None,
                    pieces: vec![Piece::Text(item.get().to_owned())],
                }
            });
        }
    }
    Ok(Prompt {
        chat: true,
        sequences: vec![segments],
    })
}

#[cfg(test)]
#[path = "body_tests.rs"]
mod tests;
