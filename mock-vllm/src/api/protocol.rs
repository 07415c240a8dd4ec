//! Request and response bodies of the OpenAI-compatible API, shaped like vLLM's.
//! Unknown request fields are ignored, as vLLM does (with a warning).

use super::prompt_logprobs::PromptLogprobs;
use crate::tokenizer::{ChatMessage, TokenId};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    pub max_tokens: Option<u32>,
    /// The newer name OpenAI gives `max_tokens` for chat; wins when both are set.
    pub max_completion_tokens: Option<u32>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    /// Signed: vLLM accepts -1 (the whole vocabulary) and refuses other negatives itself.
    pub prompt_logprobs: Option<i64>,
    pub cache_salt: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: PromptInput,
    pub max_tokens: Option<u32>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub prompt_logprobs: Option<i64>,
    pub cache_salt: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct EmbeddingRequest {
    pub model: String,
    pub input: PromptInput,
}

/// The outer `Option` says whether the field was sent at all, the inner one whether it was
/// `null`: vLLM's defaults apply to absent fields only.
#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    /// vLLM's pydantic default is `true`: naming any stream option turns the usage chunk on;
    /// an explicit `null` turns it off.
    #[serde(default, deserialize_with = "present")]
    pub include_usage: Option<Option<bool>>,
    /// Usage on every chunk, with the running completion count.
    #[serde(default, deserialize_with = "present")]
    pub continuous_usage_stats: Option<Option<bool>>,
    /// Keys the mock has no use for; vLLM keeps them too (`extra="allow"`).
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// Marks a field as sent, even as `null`.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

impl StreamOptions {
    /// vLLM's validator tests the options' truthiness, and an empty object is falsy.
    pub fn is_empty(&self) -> bool {
        self.include_usage.is_none()
            && self.continuous_usage_stats.is_none()
            && self.other.is_empty()
    }
}

/// How a stream reports usage, resolved like vLLM's `should_include_usage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamUsage {
    /// No usage anywhere in the stream.
    Off,
    /// One usage-only chunk (empty `choices`) after the last token.
    Final,
    /// Running usage on every chunk, and the final usage chunk as well.
    Continuous,
}

impl StreamUsage {
    pub fn of(options: Option<&StreamOptions>) -> Self {
        let Some(options) = options else {
            return Self::Off;
        };
        let include = options.include_usage.unwrap_or(Some(true)).unwrap_or(false);
        let continuous = options.continuous_usage_stats.flatten().unwrap_or(false);
        match (include, continuous) {
            (false, _) => Self::Off,
            (true, false) => Self::Final,
            (true, true) => Self::Continuous,
        }
    }
}

/// Text or token ids, alone or batched: the forms `prompt` and `input` accept.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PromptInput {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<TokenId>),
    TokenBatches(Vec<Vec<TokenId>>),
}

/// One item of a prompt input, before tokenization.
#[derive(Debug)]
pub enum PromptItem {
    Text(String),
    Tokens(Vec<TokenId>),
}

impl PromptInput {
    pub fn into_items(self) -> Vec<PromptItem> {
        match self {
            Self::Text(text) => vec![PromptItem::Text(text)],
            Self::Texts(texts) => texts.into_iter().map(PromptItem::Text).collect(),
            Self::Tokens(tokens) => vec![PromptItem::Tokens(tokens)],
            Self::TokenBatches(batches) => batches.into_iter().map(PromptItem::Tokens).collect(),
        }
    }
}

/// vLLM's `UsageInfo`, fields in its order.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub total_tokens: usize,
    pub completion_tokens: usize,
    /// Absent from the running usage of `continuous_usage_stats` chunks, as in vLLM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct PromptTokensDetails {
    pub cached_tokens: usize,
}

impl Usage {
    pub fn new(prompt_tokens: usize, completion_tokens: usize, cached_tokens: usize) -> Self {
        Self {
            prompt_tokens_details: Some(PromptTokensDetails { cached_tokens }),
            ..Self::running(prompt_tokens, completion_tokens)
        }
    }

    /// The counts so far, carried by every chunk of a `continuous_usage_stats` stream.
    pub fn running(prompt_tokens: usize, completion_tokens: usize) -> Self {
        Self {
            prompt_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            completion_tokens,
            prompt_tokens_details: None,
        }
    }
}

/// Fields every completion object and chunk starts with.
#[derive(Debug, Clone, Serialize)]
pub struct ResponseHeader {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
}

/// vLLM's `ChatCompletionResponse`: serde writes fields in declaration order, which is vLLM's
/// (`usage` before `prompt_logprobs`). Unset optional fields are `null`, as vLLM sends them.
#[derive(Debug, Serialize)]
pub struct ChatCompletion<'a> {
    #[serde(flatten)]
    pub header: &'a ResponseHeader,
    pub choices: [ChatChoice; 1],
    pub service_tier: Option<()>,
    pub system_fingerprint: Option<()>,
    pub usage: Usage,
    pub prompt_logprobs: Option<PromptLogprobs>,
    pub prompt_token_ids: Option<()>,
    pub kv_transfer_params: Option<()>,
}

#[derive(Debug, Serialize)]
pub struct ChatChoice {
    pub index: u32,
    pub message: AssistantMessage,
    pub logprobs: Option<()>,
    pub finish_reason: &'static str,
    pub stop_reason: Option<()>,
}

#[derive(Debug, Serialize)]
pub struct AssistantMessage {
    pub role: &'static str,
    pub content: String,
}

/// vLLM's `CompletionResponse`; unlike chat, its `prompt_logprobs` live in the choice.
#[derive(Debug, Serialize)]
pub struct TextCompletion<'a> {
    #[serde(flatten)]
    pub header: &'a ResponseHeader,
    pub choices: [TextChoice<'a>; 1],
    pub service_tier: Option<()>,
    pub system_fingerprint: Option<()>,
    pub usage: Usage,
    pub kv_transfer_params: Option<()>,
}

/// vLLM's `CompletionResponseChoice` (the streaming chunk has a shorter one).
#[derive(Debug, Serialize)]
pub struct TextChoice<'a> {
    pub index: u32,
    pub text: &'a str,
    pub logprobs: Option<()>,
    pub finish_reason: &'static str,
    pub stop_reason: Option<()>,
    pub token_ids: Option<()>,
    pub prompt_logprobs: Option<PromptLogprobs>,
    pub prompt_token_ids: Option<()>,
}

#[derive(Debug, Serialize)]
pub struct CompletionChoice<'a> {
    pub index: u32,
    pub text: &'a str,
    pub logprobs: Option<()>,
    pub finish_reason: Option<&'static str>,
    pub stop_reason: Option<()>,
}

#[derive(Debug, Serialize)]
pub struct ChatChunk<'a> {
    #[serde(flatten)]
    pub header: &'a ResponseHeader,
    pub choices: Vec<ChatChunkChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

#[derive(Debug, Serialize)]
pub struct ChatChunkChoice<'a> {
    pub index: u32,
    pub delta: Delta<'a>,
    pub logprobs: Option<()>,
    pub finish_reason: Option<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    pub content: &'a str,
}

#[derive(Debug, Serialize)]
pub struct CompletionChunk<'a> {
    #[serde(flatten)]
    pub header: &'a ResponseHeader,
    pub choices: Vec<CompletionChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

#[derive(Debug, Serialize)]
pub struct EmbeddingList<'a> {
    #[serde(flatten)]
    pub header: &'a ResponseHeader,
    pub data: Vec<Embedding>,
    pub usage: Usage,
}

#[derive(Debug, Serialize)]
pub struct Embedding {
    pub index: usize,
    pub object: &'static str,
    pub embedding: Vec<f32>,
}

#[derive(Debug, Serialize)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelCard>,
}

#[derive(Debug, Serialize)]
pub struct ModelCard {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
    pub root: String,
    pub parent: Option<()>,
    pub max_model_len: usize,
}
