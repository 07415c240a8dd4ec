//! What chat and text completions share once the prompt is tokenized: validation, submission
//! to the engine, and the non-streaming answer.

use super::protocol::{
    AssistantMessage, ChatChoice, ChatCompletion, CompletionChoice, ResponseHeader, TextCompletion,
    Usage,
};
use super::{ApiError, AppState, InvalidRequest, sse, unix_seconds};
use crate::engine::{NewSequence, SequenceEvent, SequenceHandle};
use crate::filler;
use crate::prefix_cache::{CacheScope, block_hashes};
use crate::request_log::{RecordId, RequestLog};
use crate::tokenizer::TokenId;
use axum::Json;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// Which OpenAI endpoint a generation answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completion,
}

impl Endpoint {
    fn id_prefix(self) -> &'static str {
        match self {
            Self::Chat => "chatcmpl",
            Self::Completion => "cmpl",
        }
    }

    fn object(self, streaming: bool) -> &'static str {
        match (self, streaming) {
            (Self::Chat, false) => "chat.completion",
            (Self::Chat, true) => "chat.completion.chunk",
            (Self::Completion, _) => "text_completion",
        }
    }
}

/// A tokenized, model-checked generation request.
#[derive(Debug)]
pub struct GenerationJob {
    pub endpoint: Endpoint,
    pub model: String,
    pub prompt: Vec<TokenId>,
    pub cache_salt: Option<String>,
    pub max_tokens: Option<u32>,
    pub stream: bool,
    pub include_usage: bool,
}

/// Reports the cached prefix of an admitted request to the request log.
#[derive(Debug, Clone)]
pub struct CacheReport {
    log: Arc<RequestLog>,
    record: Option<RecordId>,
}

impl CacheReport {
    pub fn report(&self, cached_tokens: usize) {
        if let Some(record) = self.record {
            self.log.set_cached_tokens(record, cached_tokens);
        }
    }
}

/// Everything a response needs besides the tokens.
#[derive(Debug)]
pub struct Generation {
    pub endpoint: Endpoint,
    pub header: ResponseHeader,
    pub prompt_tokens: usize,
    pub handle: SequenceHandle,
    pub cache_report: CacheReport,
}

pub async fn generate(
    state: &AppState,
    record: Option<RecordId>,
    job: GenerationJob,
) -> Result<Response, ApiError> {
    let max_tokens = job.max_tokens.unwrap_or(state.config.default_max_tokens);
    if max_tokens == 0 {
        return Err(InvalidRequest::MaxTokensZero.into());
    }
    if job.prompt.is_empty() {
        return Err(InvalidRequest::EmptyPrompt.into());
    }
    let requested = job.prompt.len() + max_tokens as usize;
    if requested > state.config.max_model_len {
        return Err(ApiError::ContextLengthExceeded {
            max_model_len: state.config.max_model_len,
            requested,
            prompt_tokens: job.prompt.len(),
            max_tokens: max_tokens as usize,
        });
    }
    let scope = CacheScope {
        model: &job.model,
        cache_salt: job.cache_salt.as_deref(),
    };
    let handle = state.engine.submit(NewSequence {
        prompt_len: job.prompt.len(),
        block_hashes: block_hashes(&job.prompt, state.config.block_size, scope),
        max_tokens,
    })?;
    let generation = Generation {
        endpoint: job.endpoint,
        header: ResponseHeader {
            id: state.next_id(job.endpoint.id_prefix()),
            object: job.endpoint.object(job.stream),
            created: unix_seconds(),
            model: job.model,
        },
        prompt_tokens: job.prompt.len(),
        handle,
        cache_report: CacheReport {
            log: Arc::clone(&state.requests),
            record,
        },
    };
    if job.stream {
        Ok(sse::response(generation, job.include_usage))
    } else {
        respond_whole(generation).await
    }
}

/// Waits for the last token. If the client goes away meanwhile, this future is dropped with
/// the sequence handle, which takes the sequence out of the engine.
async fn respond_whole(mut generation: Generation) -> Result<Response, ApiError> {
    let mut cached_tokens = 0;
    let mut generated = 0;
    loop {
        match generation.handle.next_event().await {
            Some(SequenceEvent::Scheduled {
                cached_tokens: cached,
            }) => {
                cached_tokens = cached;
                generation.cache_report.report(cached);
            }
            Some(SequenceEvent::Token { last, .. }) => {
                generated += 1;
                if last {
                    break;
                }
            }
            None => return Err(ApiError::EngineStopped),
        }
    }
    let usage = Usage::new(generation.prompt_tokens, generated as usize, cached_tokens);
    let text = filler::completion_text(generated);
    let header = &generation.header;
    let response = match generation.endpoint {
        Endpoint::Chat => Json(ChatCompletion {
            header,
            choices: [ChatChoice {
                index: 0,
                message: AssistantMessage {
                    role: "assistant",
                    content: text,
                },
                logprobs: None,
                finish_reason: "length",
                stop_reason: None,
            }],
            usage,
        })
        .into_response(),
        Endpoint::Completion => Json(TextCompletion {
            header,
            choices: [CompletionChoice {
                index: 0,
                text: &text,
                logprobs: None,
                finish_reason: Some("length"),
                stop_reason: None,
            }],
            usage,
        })
        .into_response(),
    };
    Ok(response)
}
