//! Request and response bodies of the OpenAI-compatible API, shaped like vLLM's.
//! Unknown request fields are ignored, as vLLM does (with a warning).

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
    pub cache_salt: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: PromptInput,
    pub max_tokens: Option<u32>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub cache_salt: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct EmbeddingRequest {
    pub model: String,
    pub input: PromptInput,
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    pub include_usage: Option<bool>,
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

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
    pub prompt_tokens_details: PromptTokensDetails,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct PromptTokensDetails {
    pub cached_tokens: usize,
}

impl Usage {
    pub fn new(prompt_tokens: usize, completion_tokens: usize, cached_tokens: usize) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            prompt_tokens_details: PromptTokensDetails { cached_tokens },
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

#[derive(Debug, Serialize)]
pub struct ChatCompletion<'a> {
    #[serde(flatten)]
    pub header: &'a ResponseHeader,
    pub choices: [ChatChoice; 1],
    pub usage: Usage,
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

#[derive(Debug, Serialize)]
pub struct TextCompletion<'a> {
    #[serde(flatten)]
    pub header: &'a ResponseHeader,
    pub choices: [CompletionChoice<'a>; 1],
    pub usage: Usage,
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
