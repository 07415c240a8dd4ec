//! What every generating endpoint shares once its prompt is tokenized: validation, submission
//! to the engine, and waiting for the last token. Chat and text completions also share how
//! they answer ([`generate`]); the Responses API answers in its own shapes.

use super::protocol::{ResponseHeader, StreamUsage};
use super::{ApiError, AppState, InvalidRequest, sse, unix_seconds, validate, whole};
use crate::engine::{NewSequence, SequenceEvent, SequenceHandle};
use crate::prefix_cache::{CacheScope, block_hashes};
use crate::request_log::{RecordId, RequestLog};
use crate::tokenizer::TokenId;
use axum::response::Response;
use std::sync::Arc;

/// Which OpenAI completion endpoint a generation answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completion,
}

impl Endpoint {
    fn id_prefix(self) -> &'static str {
        match self {
            Self::Chat => "chatcmpl-",
            Self::Completion => "cmpl-",
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
    pub model: String,
    pub prompt: Vec<TokenId>,
    pub cache_salt: Option<String>,
    pub max_tokens: Option<u32>,
    /// As requested; the engine-level limit is checked at submission, as vLLM's engine does.
    pub prompt_logprobs: Option<i64>,
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

/// A sequence in the engine and what answering it needs besides the tokens.
#[derive(Debug)]
pub struct Generation {
    pub model: String,
    pub prompt: Vec<TokenId>,
    /// The output length the engine will produce (the request's, or the default).
    pub max_tokens: u32,
    /// How many alternatives per prompt position to report, if any.
    pub prompt_logprobs: Option<u32>,
    pub handle: SequenceHandle,
    pub cache_report: CacheReport,
}

/// Token counts of a generation that ran to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    pub generated: u32,
    pub cached_tokens: usize,
}

/// Checks the request against the model's limits and queues it in the engine.
pub fn submit(
    state: &AppState,
    record: Option<RecordId>,
    job: GenerationJob,
) -> Result<Generation, ApiError> {
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
    let prompt_logprobs = validate::prompt_logprobs_limit(job.prompt_logprobs)?;
    let scope = CacheScope {
        model: &job.model,
        cache_salt: job.cache_salt.as_deref(),
    };
    let handle = state.engine.submit(NewSequence {
        prompt_len: job.prompt.len(),
        block_hashes: block_hashes(&job.prompt, state.config.block_size, scope),
        max_tokens,
        read_prefix_cache: prompt_logprobs.is_none(),
    })?;
    Ok(Generation {
        model: job.model,
        prompt: job.prompt,
        max_tokens,
        prompt_logprobs,
        handle,
        cache_report: CacheReport {
            log: Arc::clone(&state.requests),
            record,
        },
    })
}

/// Waits for the last token. If the client goes away meanwhile, the future holding the
/// generation is dropped with its sequence handle, which takes the sequence out of the engine.
pub async fn run_to_end(generation: &mut Generation) -> Result<Finished, ApiError> {
    let mut finished = Finished {
        generated: 0,
        cached_tokens: 0,
    };
    loop {
        match generation.handle.next_event().await {
            Some(SequenceEvent::Scheduled { cached_tokens }) => {
                finished.cached_tokens = cached_tokens;
                generation.cache_report.report(cached_tokens);
            }
            Some(SequenceEvent::Token { last, .. }) => {
                finished.generated += 1;
                if last {
                    return Ok(finished);
                }
            }
            None => return Err(ApiError::EngineStopped),
        }
    }
}

/// Chat and text completions: submit, then answer as one body, or as a stream when `stream`
/// says how that stream reports usage.
pub async fn generate(
    state: &AppState,
    record: Option<RecordId>,
    endpoint: Endpoint,
    stream: Option<StreamUsage>,
    job: GenerationJob,
) -> Result<Response, ApiError> {
    let generation = submit(state, record, job)?;
    let header = ResponseHeader {
        id: state.next_id(endpoint.id_prefix()),
        object: endpoint.object(stream.is_some()),
        created: unix_seconds(),
        model: generation.model.clone(),
    };
    match stream {
        Some(usage) => Ok(sse::response(generation, header, endpoint, usage)),
        None => whole::respond(generation, header, endpoint, &state.tokenizer).await,
    }
}
