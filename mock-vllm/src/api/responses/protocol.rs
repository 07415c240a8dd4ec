//! Request and response bodies of the Responses API, shaped like vLLM's `ResponsesRequest` and
//! `ResponsesResponse` (which reuse OpenAI's item types). Serde writes struct fields in
//! declaration order, which follows vLLM's models; unset optional fields are `null`, as vLLM
//! sends them.

use crate::tokenizer::{ChatMessage, ContentPart, MessageContent};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Deserialize)]
pub struct ResponsesRequest {
    pub model: Option<String>,
    pub input: ResponseInput,
    pub instructions: Option<String>,
    pub max_output_tokens: Option<i64>,
    pub stream: Option<bool>,
    pub cache_salt: Option<String>,
    pub previous_response_id: Option<String>,
    pub background: Option<bool>,
    pub store: Option<bool>,
    pub request_id: Option<String>,
    // Echoed into the response object, like vLLM's `ResponsesResponse.from_request`.
    pub metadata: Option<Value>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub tool_choice: Option<Value>,
    pub tools: Option<Vec<Value>>,
    pub parallel_tool_calls: Option<bool>,
    pub service_tier: Option<String>,
    pub text: Option<Value>,
    pub reasoning: Option<Value>,
    pub truncation: Option<String>,
    pub user: Option<String>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
}

/// `input`: a plain user message, or a list of items.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ResponseInput {
    Text(String),
    Items(Vec<InputItem>),
}

/// One input item. Messages have a role; other items (function calls and their outputs,
/// reasoning) have none and carry no text the mock's chat template would render.
#[derive(Debug, Deserialize)]
pub struct InputItem {
    pub role: Option<String>,
    pub content: Option<ItemContent>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ItemContent {
    Text(String),
    Parts(Vec<ItemPart>),
}

/// `input_text` (or `output_text` in earlier assistant turns) carries text; images and files
/// add nothing to the mock's prompt, as in chat.
#[derive(Debug, Deserialize)]
pub struct ItemPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

impl ResponsesRequest {
    /// The chat the request amounts to, as vLLM builds it: the instructions as a system
    /// message, then the input. Tokenized with the chat template, it costs what the same chat
    /// costs on `/v1/chat/completions`.
    pub fn chat_messages(&self) -> Vec<ChatMessage> {
        let mut messages = Vec::new();
        if let Some(instructions) = &self.instructions {
            messages.push(message(
                "system",
                MessageContent::Text(instructions.clone()),
            ));
        }
        match &self.input {
            ResponseInput::Text(text) => {
                messages.push(message("user", MessageContent::Text(text.clone())));
            }
            ResponseInput::Items(items) => {
                for item in items {
                    let Some(role) = &item.role else { continue };
                    let content = match &item.content {
                        Some(ItemContent::Text(text)) => MessageContent::Text(text.clone()),
                        Some(ItemContent::Parts(parts)) => {
                            MessageContent::Parts(parts.iter().map(chat_part).collect())
                        }
                        None => MessageContent::Text(String::new()),
                    };
                    messages.push(message(role, content));
                }
            }
        }
        messages
    }
}

fn message(role: &str, content: MessageContent) -> ChatMessage {
    ChatMessage {
        role: role.to_string(),
        content: Some(content),
    }
}

fn chat_part(part: &ItemPart) -> ContentPart {
    let kind = match part.kind.as_str() {
        "input_text" | "output_text" => "text",
        other => other,
    };
    ContentPart {
        kind: kind.to_string(),
        text: part.text.clone(),
    }
}

/// vLLM's `ResponsesResponse`.
#[derive(Debug, Clone, Serialize)]
pub struct ResponseObject<'a> {
    pub id: &'a str,
    pub created_at: u64,
    pub incomplete_details: Option<IncompleteDetails>,
    pub instructions: Option<&'a str>,
    pub metadata: Option<&'a Value>,
    pub model: &'a str,
    pub object: &'static str,
    pub output: Vec<OutputMessage<'a>>,
    pub parallel_tool_calls: bool,
    pub temperature: f64,
    pub tool_choice: &'a Value,
    pub tools: &'a [Value],
    pub top_p: f64,
    pub background: bool,
    pub max_output_tokens: u32,
    pub max_tool_calls: Option<()>,
    pub previous_response_id: Option<()>,
    pub prompt: Option<()>,
    pub reasoning: Option<&'a Value>,
    pub service_tier: &'a str,
    pub status: &'static str,
    pub text: Option<&'a Value>,
    pub top_logprobs: Option<()>,
    pub truncation: &'a str,
    pub usage: Option<ResponseUsage>,
    pub user: Option<&'a str>,
    pub presence_penalty: f64,
    pub frequency_penalty: f64,
    pub kv_transfer_params: Option<()>,
    pub ec_transfer_params: Option<()>,
    pub input_messages: Option<()>,
    pub output_messages: Option<()>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct IncompleteDetails {
    pub reason: &'static str,
}

/// OpenAI's `ResponseOutputMessage`.
#[derive(Debug, Clone, Serialize)]
pub struct OutputMessage<'a> {
    pub id: &'a str,
    pub content: Vec<OutputText<'a>>,
    pub role: &'static str,
    pub status: &'static str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub phase: Option<()>,
}

/// OpenAI's `ResponseOutputText`. The mock annotates nothing and reports no logprobs: vLLM sends
/// `[]` where a stream part opens and `null` once it is done.
#[derive(Debug, Clone, Serialize)]
pub struct OutputText<'a> {
    pub annotations: [(); 0],
    pub text: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub logprobs: Option<[(); 0]>,
}

impl<'a> OutputText<'a> {
    pub fn new(text: &'a str, logprobs: Option<[(); 0]>) -> Self {
        Self {
            annotations: [],
            text,
            kind: "output_text",
            logprobs,
        }
    }
}

/// vLLM's `ResponseUsage`. The per-turn lists only fill in for multi-turn tool use, which the
/// mock does not do.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ResponseUsage {
    pub input_tokens: usize,
    pub input_tokens_details: InputTokensDetails,
    pub output_tokens: usize,
    pub output_tokens_details: OutputTokensDetails,
    pub total_tokens: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct InputTokensDetails {
    pub cached_tokens: usize,
    /// Prompt tokens this request wrote to the prefix cache.
    pub cache_write_tokens: usize,
    pub input_tokens_per_turn: Vec<usize>,
    pub cached_tokens_per_turn: Vec<usize>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct OutputTokensDetails {
    pub reasoning_tokens: usize,
    pub tool_output_tokens: usize,
    pub output_tokens_per_turn: Vec<usize>,
    pub tool_output_tokens_per_turn: Vec<usize>,
}

impl ResponseUsage {
    pub fn new(
        input_tokens: usize,
        output_tokens: usize,
        cached_tokens: usize,
        cache_write_tokens: usize,
    ) -> Self {
        Self {
            input_tokens,
            input_tokens_details: InputTokensDetails {
                cached_tokens,
                cache_write_tokens,
                input_tokens_per_turn: Vec::new(),
                cached_tokens_per_turn: Vec::new(),
            },
            output_tokens,
            output_tokens_details: OutputTokensDetails {
                reasoning_tokens: 0,
                tool_output_tokens: 0,
                output_tokens_per_turn: Vec::new(),
                tool_output_tokens_per_turn: Vec::new(),
            },
            total_tokens: input_tokens + output_tokens,
        }
    }
}

/// An event of a Responses stream; its `type` is also the SSE `event:` name.
pub trait StreamEvent: Serialize {
    fn kind(&self) -> &'static str;
}

/// `response.created`, `response.in_progress` and `response.completed`.
#[derive(Debug, Serialize)]
pub struct ResponseEvent<'a> {
    pub response: ResponseObject<'a>,
    pub sequence_number: u64,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

/// `response.output_item.added` and `response.output_item.done`.
#[derive(Debug, Serialize)]
pub struct OutputItemEvent<'a> {
    pub item: OutputMessage<'a>,
    pub output_index: u32,
    pub sequence_number: u64,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

/// `response.content_part.added` and `response.content_part.done`.
#[derive(Debug, Serialize)]
pub struct ContentPartEvent<'a> {
    pub content_index: u32,
    pub item_id: &'a str,
    pub output_index: u32,
    pub part: OutputText<'a>,
    pub sequence_number: u64,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

/// `response.output_text.delta`: one per generated token.
#[derive(Debug, Serialize)]
pub struct TextDeltaEvent<'a> {
    pub content_index: u32,
    pub delta: &'a str,
    pub item_id: &'a str,
    pub logprobs: [(); 0],
    pub output_index: u32,
    pub sequence_number: u64,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

/// `response.output_text.done`.
#[derive(Debug, Serialize)]
pub struct TextDoneEvent<'a> {
    pub content_index: u32,
    pub item_id: &'a str,
    pub logprobs: [(); 0],
    pub output_index: u32,
    pub sequence_number: u64,
    pub text: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

macro_rules! stream_events {
    ($($event:ident),*) => {$(
        impl StreamEvent for $event<'_> {
            fn kind(&self) -> &'static str {
                self.kind
            }
        }
    )*};
}

stream_events!(
    ResponseEvent,
    OutputItemEvent,
    ContentPartEvent,
    TextDeltaEvent,
    TextDoneEvent
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::render_chat;

    fn request(json: Value) -> ResponsesRequest {
        serde_json::from_value(json).expect("valid request")
    }

    #[test]
    fn instructions_and_input_render_like_the_equivalent_chat() {
        let chat: Vec<ChatMessage> = serde_json::from_value(serde_json::json!([
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "more"},
        ]))
        .expect("messages");
        let as_text = request(serde_json::json!({
            "model": "m",
            "instructions": "be brief",
            "input": [
                {"role": "user", "content": "hi"},
                {"type": "message", "role": "assistant",
                 "content": [{"type": "output_text", "text": "hello"}]},
                {"type": "function_call_output", "call_id": "c", "output": "ignored"},
                {"role": "user", "content": [{"type": "input_text", "text": "more"}]},
            ],
        }));
        assert_eq!(render_chat(&as_text.chat_messages()), render_chat(&chat));
        let plain = request(serde_json::json!({"model": "m", "input": "hi"}));
        assert_eq!(
            render_chat(&plain.chat_messages()),
            render_chat(&chat[1..2])
        );
    }
}
