//! Response bodies of the OpenAI-compatible API, shaped like vLLM 0.32's pydantic models: serde
//! writes fields in declaration order, which is vLLM's, and the non-streaming bodies carry every
//! field (unset ones as `null`), as `model_dump()` does. Streaming chunks carry only the fields
//! vLLM sets (`model_dump_json(exclude_unset=True)`). Requests are read in [`super::requests`].

use super::prompt_logprobs::PromptLogprobs;
use crate::tokenizer::TokenId;
use serde::Serialize;

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

/// Text or token ids, alone or batched: the forms `prompt` and `input` accept.
#[derive(Debug)]
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

/// vLLM's `UsageInfo`, fields in its order. `prompt_tokens_details` and
/// `completion_tokens_details` are `null` in a whole body when unset; in chunks they appear only
/// when vLLM sets them.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub total_tokens: usize,
    pub completion_tokens: usize,
    #[serde(skip_serializing_if = "Details::is_unset")]
    pub prompt_tokens_details: Details<PromptTokensDetails>,
    #[serde(skip_serializing_if = "Details::is_unset")]
    pub completion_tokens_details: Details<()>,
}

/// A usage detail: left out (unset), `null`, or a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Details<T> {
    Unset,
    Null,
    Set(T),
}

impl<T> Details<T> {
    pub fn is_unset(&self) -> bool {
        matches!(self, Self::Unset)
    }
}

impl<T: Serialize> Serialize for Details<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Set(value) => value.serialize(serializer),
            Self::Unset | Self::Null => serializer.serialize_none(),
        }
    }
}

/// vLLM's `PromptTokenUsageInfo` (sent with `--enable-prompt-tokens-details`). Whole bodies
/// carry every field; the final usage chunk of a stream drops the `null` ones. Completions
/// never fill in `created_cache_tokens`.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct PromptTokensDetails {
    pub cached_tokens: usize,
    #[serde(skip_serializing_if = "Details::is_unset")]
    pub created_cache_tokens: Details<usize>,
    #[serde(skip_serializing_if = "Details::is_unset")]
    pub multimodal_tokens: Details<()>,
}

impl Usage {
    /// The usage of a whole body: both details present, `null` unless known.
    pub fn whole(
        prompt_tokens: usize,
        completion_tokens: usize,
        details: Option<PromptTokensDetails>,
    ) -> Self {
        Self {
            prompt_tokens_details: details.map_or(Details::Null, Details::Set),
            completion_tokens_details: Details::Null,
            ..Self::bare(prompt_tokens, completion_tokens)
        }
    }

    /// The final usage chunk of a stream (`exclude_none`): the prompt details when known.
    pub fn final_chunk(
        prompt_tokens: usize,
        completion_tokens: usize,
        details: Option<PromptTokensDetails>,
    ) -> Self {
        Self {
            prompt_tokens_details: details.map_or(Details::Unset, Details::Set),
            ..Self::bare(prompt_tokens, completion_tokens)
        }
    }

    /// The three counts alone: the running usage of a completion chunk.
    pub fn bare(prompt_tokens: usize, completion_tokens: usize) -> Self {
        Self {
            prompt_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            completion_tokens,
            prompt_tokens_details: Details::Unset,
            completion_tokens_details: Details::Unset,
        }
    }

    /// The running usage of a chat chunk, which also names `completion_tokens_details`.
    pub fn running_chat(prompt_tokens: usize, completion_tokens: usize) -> Self {
        Self {
            completion_tokens_details: Details::Null,
            ..Self::bare(prompt_tokens, completion_tokens)
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

/// vLLM's `ChatCompletionResponse` (`usage` before `prompt_logprobs`).
#[derive(Debug, Serialize)]
pub struct ChatCompletion<'a> {
    #[serde(flatten)]
    pub header: &'a ResponseHeader,
    pub choices: [ChatChoice; 1],
    pub service_tier: Option<()>,
    pub system_fingerprint: &'a str,
    pub usage: Usage,
    pub prompt_logprobs: Option<PromptLogprobs>,
    pub prompt_token_ids: Option<()>,
    pub prompt_text: Option<()>,
    pub kv_transfer_params: Option<()>,
    pub ec_transfer_params: Option<()>,
    pub metrics: Option<()>,
}

#[derive(Debug, Serialize)]
pub struct ChatChoice {
    pub index: u32,
    pub message: AssistantMessage,
    pub logprobs: Option<()>,
    pub finish_reason: &'static str,
    pub stop_reason: Option<()>,
    pub token_ids: Option<()>,
    pub routed_experts: Option<()>,
}

/// vLLM's `ChatMessage`; an empty `tool_calls` is left out.
#[derive(Debug, Serialize)]
pub struct AssistantMessage {
    pub role: &'static str,
    pub content: String,
    pub refusal: Option<()>,
    pub annotations: Option<()>,
    pub audio: Option<()>,
    pub function_call: Option<()>,
    pub reasoning: Option<()>,
}

impl AssistantMessage {
    pub fn new(content: String) -> Self {
        Self {
            role: "assistant",
            content,
            refusal: None,
            annotations: None,
            audio: None,
            function_call: None,
            reasoning: None,
        }
    }
}

/// vLLM's `CompletionResponse`; unlike chat, its `prompt_logprobs` live in the choice.
#[derive(Debug, Serialize)]
pub struct TextCompletion<'a> {
    #[serde(flatten)]
    pub header: &'a ResponseHeader,
    pub choices: [TextChoice<'a>; 1],
    pub service_tier: Option<()>,
    pub system_fingerprint: &'a str,
    pub usage: Usage,
    pub kv_transfer_params: Option<()>,
    pub ec_transfer_params: Option<()>,
    pub metrics: Option<()>,
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
    pub routed_experts: Option<()>,
}

/// vLLM's `CompletionResponseStreamChoice`: every field is set, so every field is sent.
#[derive(Debug, Serialize)]
pub struct CompletionChoice<'a> {
    pub index: u32,
    pub text: &'a str,
    pub logprobs: Option<()>,
    pub finish_reason: Option<&'static str>,
    pub stop_reason: Option<()>,
    pub prompt_token_ids: Option<()>,
    pub token_ids: Option<()>,
}

/// vLLM's `ChatCompletionStreamResponse`. The first chunk (the role) also sets
/// `prompt_token_ids` and `prompt_text`, so they go out as `null` there only.
#[derive(Debug, Serialize)]
pub struct ChatChunk<'a> {
    #[serde(flatten)]
    pub header: &'a ResponseHeader,
    pub choices: Vec<ChatChunkChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// On the stream's last message only: the usage chunk, else the finishing chunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<&'a str>,
    #[serde(flatten)]
    pub first: Option<FirstChunkFields>,
}

#[derive(Debug, Serialize)]
pub struct FirstChunkFields {
    pub prompt_token_ids: Option<()>,
    pub prompt_text: Option<()>,
}

/// vLLM's `ChatCompletionResponseStreamChoice` with the fields each chunk sets: the role chunk
/// has no `token_ids`, only the last chunk has `stop_reason`.
#[derive(Debug, Serialize)]
pub struct ChatChunkChoice<'a> {
    pub index: u32,
    pub delta: Delta<'a>,
    pub logprobs: Option<()>,
    pub finish_reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<Option<()>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_ids: Option<Option<()>>,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<&'a str>,
}

/// vLLM's `EmbeddingResponse`.
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
    pub embedding: EmbeddingVector,
}

/// An embedding as `encoding_format` asked: floats, or the base64 of their
/// little-endian f32 bytes.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum EmbeddingVector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Debug, Serialize)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelCard>,
}

/// vLLM's `ModelCard`: one per served name, all with the engine's `max_model_len`.
#[derive(Debug, Serialize)]
pub struct ModelCard {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
    pub root: String,
    pub parent: Option<()>,
    pub max_model_len: usize,
    pub permission: [ModelPermission; 1],
}

/// vLLM's `ModelPermission`, with its defaults.
#[derive(Debug, Serialize)]
pub struct ModelPermission {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub allow_create_engine: bool,
    pub allow_sampling: bool,
    pub allow_logprobs: bool,
    pub allow_search_indices: bool,
    pub allow_view: bool,
    pub allow_fine_tuning: bool,
    pub organization: &'static str,
    pub group: Option<()>,
    pub is_blocking: bool,
}

/// `{"version": …}` of `GET /version`.
#[derive(Debug, Serialize)]
pub struct Version {
    pub version: &'static str,
}
