//! What every generating endpoint shares once its request is validated: vLLM's length rules,
//! submission to the engine, and waiting for the last token. Chat and text completions also
//! share how they answer ([`generate`]); the Responses API answers in its own shapes.
//!
//! The length rules, in vLLM 0.32's order (`vllm/renderers/params.py` `TokenizeParams`,
//! `vllm/entrypoints/serve/utils/api_utils.py` `get_max_tokens`, `vllm/sampling_params.py`,
//! `vllm/v1/engine/input_processor.py`):
//!
//! 1. a requested output length above `max_model_len` is refused before anything is tokenized;
//! 2. a text prompt longer than `max_model_len × max_chars_per_token` characters is refused;
//! 3. a prompt of more than `max_model_len` tokens is refused (text is tokenized only up to
//!    `max_model_len + 1` tokens, hence "at least");
//! 4. the output length is the smallest of the rest of the context, the request's (or the
//!    model's default), so a prompt + `max_tokens` over the context is clamped, not refused;
//! 5. an output length below 1 is refused (a prompt that fills the whole context ends here);
//! 6. the engine refuses too many prompt logprobs, an empty prompt, unknown token ids.

use super::protocol::{Details, PromptTokensDetails, ResponseHeader, StreamUsage};
use super::{ApiError, AppState, sse, unix_seconds, validate, whole};
use crate::engine::{NewSequence, SequenceEvent, SequenceHandle};
use crate::prefix_cache::{CacheScope, block_hashes};
use crate::request_log::{RecordId, RequestLog};
use crate::tokenizer::{TokenId, VOCAB_SIZE};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;
use std::sync::Arc;

/// Which OpenAI completion endpoint a generation answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completion,
}

impl Endpoint {
    pub fn id_prefix(self) -> &'static str {
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

/// A prompt as the request gave it: text to tokenize, or token ids.
#[derive(Debug)]
pub enum Prompt {
    Text(String),
    Tokens(Vec<TokenId>),
    /// A chat without messages, which vLLM's chat template renderer refuses.
    EmptyChat,
}

/// Who asks: the Responses API adds one check of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Chat,
    Completion,
    Responses,
}

/// A validated, model-checked generation request.
#[derive(Debug)]
pub struct GenerationJob {
    pub api: Api,
    /// The served model name responses carry (and the prefix cache is keyed by).
    pub model: String,
    pub prompt: Prompt,
    pub cache_salt: Option<String>,
    /// As requested; `None` takes the default (the rest of the context).
    pub max_tokens: Option<i64>,
    /// The request field `max_tokens` came from, as vLLM names it in errors.
    pub max_tokens_param: &'static str,
    /// As requested; the engine-level limit is checked at submission, as vLLM's engine does.
    pub prompt_logprobs: Option<i64>,
    /// Sampling knobs the mock ignores but checks as `SamplingParams` does.
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
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
    /// The output length the engine will produce.
    pub max_tokens: u32,
    /// How many alternatives per prompt position to report, if any.
    pub prompt_logprobs: Option<u32>,
    pub handle: SequenceHandle,
    pub cache_report: CacheReport,
    /// Whether usage carries `prompt_tokens_details`.
    pub prompt_tokens_details: bool,
    pub block_size: usize,
    /// vLLM's `system_fingerprint`.
    pub fingerprint: Arc<str>,
}

impl Generation {
    /// `prompt_tokens_details` for a request whose cached prefix was `cached_tokens`, as
    /// `endpoint` writes them in a whole body (`stream_chunk` false) or in the final usage chunk
    /// of a stream. The full prompt blocks a chat wrote to the cache count as created.
    pub fn prompt_details(
        &self,
        cached_tokens: usize,
        endpoint: Endpoint,
        stream_chunk: bool,
    ) -> Option<PromptTokensDetails> {
        self.prompt_tokens_details.then(|| {
            let full_blocks = self.prompt.len() / self.block_size * self.block_size;
            let created = full_blocks.saturating_sub(cached_tokens);
            let (created_cache_tokens, multimodal_tokens) = match (endpoint, stream_chunk) {
                (Endpoint::Chat, false) => (Details::Set(created), Details::Null),
                (Endpoint::Chat, true) => (Details::Set(created), Details::Unset),
                (Endpoint::Completion, false) => (Details::Null, Details::Null),
                (Endpoint::Completion, true) => (Details::Unset, Details::Unset),
            };
            PromptTokensDetails {
                cached_tokens,
                created_cache_tokens,
                multimodal_tokens,
            }
        })
    }
}

/// Token counts of a generation that ran to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    pub generated: u32,
    pub cached_tokens: usize,
}

/// Rules 1–3: the requested output length and the prompt against `max_model_len`, then the
/// prompt's tokens. Shared with embeddings (whose output length is 0).
pub fn tokenize_checked(
    state: &AppState,
    prompt: Prompt,
    max_tokens: i64,
    max_tokens_param: &str,
) -> Result<Vec<TokenId>, ApiError> {
    let max_model_len = state.config.max_model_len;
    if max_tokens > max_model_len as i64 {
        return Err(ApiError::validation(
            format!(
                "{max_tokens_param}={max_tokens} cannot be greater than \
                 max_model_len={max_model_len}. Please request fewer output tokens."
            ),
            Some(max_tokens_param),
            Some(&Value::from(max_tokens)),
        ));
    }
    let (tokens, counted) = match prompt {
        Prompt::Text(text) => {
            let max_chars = max_model_len * state.tokenizer.max_chars_per_token();
            let chars = text.chars().count();
            if chars > max_chars {
                return Err(ApiError::validation(
                    format!(
                        "This model's maximum context length is {max_model_len} tokens. \
                         However, your prompt contains {chars} characters (more than \
                         {max_chars} characters, which is the upper bound for {max_model_len} \
                         input tokens). Please reduce the length of the input prompt."
                    ),
                    Some("input_text"),
                    Some(&Value::from(chars)),
                ));
            }
            let tokens = state.tokenizer.encode(&text);
            // The tokenizer stops at max_model_len + 1 tokens.
            let counted = tokens.len().min(max_model_len + 1);
            (tokens, counted)
        }
        Prompt::Tokens(tokens) => {
            let counted = tokens.len();
            (tokens, counted)
        }
        Prompt::EmptyChat => {
            return Err(ApiError::validation(
                "Cannot apply chat template to an empty conversation. Provide at least one \
                 message.",
                None,
                None,
            ));
        }
    };
    if counted > max_model_len {
        let qualifier = if counted == max_model_len + 1 {
            "at least "
        } else {
            ""
        };
        return Err(ApiError::validation(
            format!(
                "This model's maximum context length is {max_model_len} tokens. However, your \
                 prompt contains {qualifier}{counted} input tokens, which exceeds this limit \
                 even without any output tokens. Please reduce the length of the input prompt."
            ),
            Some("input_tokens"),
            Some(&Value::from(counted)),
        ));
    }
    Ok(tokens)
}

/// Rule 6, the engine's input checks shared by every model: no empty prompt, no token id
/// outside the vocabulary.
pub fn check_engine_input(prompt: &[TokenId]) -> Result<(), ApiError> {
    if prompt.is_empty() {
        return Err(ApiError::validation(
            "The decoder prompt cannot be empty",
            None,
            None,
        ));
    }
    if let Some(&max) = prompt.iter().max()
        && max as usize >= VOCAB_SIZE
    {
        return Err(ApiError::validation(
            format!("Token id {max} is out of vocabulary"),
            None,
            None,
        ));
    }
    Ok(())
}

/// The temperature and top_p checks of `SamplingParams` (vLLM's defaults, 1.0, pass).
fn sampling_checks(temperature: Option<f64>, top_p: Option<f64>) -> Result<(), ApiError> {
    let refuse = |message: String, param: &str, value: f64| {
        let value = serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number);
        Err(ApiError::validation(message, Some(param), Some(&value)))
    };
    let py = super::python::repr_float;
    if let Some(t) = temperature {
        if !t.is_finite() {
            return refuse(
                format!("temperature must be a finite number, got {}.", py(t)),
                "temperature",
                t,
            );
        }
        if t < 0.0 {
            return refuse(
                format!("temperature must be non-negative, got {}.", py(t)),
                "temperature",
                t,
            );
        }
        if t > 2.0 {
            return refuse(
                format!("temperature must be in [0, 2], got {}.", py(t)),
                "temperature",
                t,
            );
        }
    }
    if let Some(p) = top_p
        && !(p > 0.0 && p <= 1.0)
    {
        return refuse(
            format!("top_p must be in (0, 1], got {}.", py(p)),
            "top_p",
            p,
        );
    }
    Ok(())
}

/// Checks the request against the model's limits and queues it in the engine.
pub fn submit(
    state: &AppState,
    record: Option<RecordId>,
    job: GenerationJob,
) -> Result<Generation, ApiError> {
    let max_model_len = state.config.max_model_len;
    let prompt = tokenize_checked(
        state,
        job.prompt,
        job.max_tokens.unwrap_or(0),
        job.max_tokens_param,
    )?;
    if job.api == Api::Responses && prompt.len() >= max_model_len {
        return Err(ApiError::Typed {
            message: format!(
                "The engine prompt length {} exceeds the max_model_len {max_model_len}. \
                 Please reduce prompt.",
                prompt.len()
            ),
            kind: "invalid_request_error",
            status: StatusCode::BAD_REQUEST,
            param: Some("input"),
        });
    }
    // Rule 4: `get_max_tokens`.
    let room = (max_model_len - prompt.len()) as i64;
    let fallback = job
        .max_tokens
        .or(state.config.default_max_tokens.map(i64::from));
    let max_tokens = fallback.map_or(room, |n| n.min(room));
    // Rule 5: `SamplingParams._verify_args`, in its order.
    sampling_checks(job.temperature, job.top_p)?;
    if max_tokens < 1 {
        return Err(ApiError::validation(
            format!("max_tokens must be at least 1, got {max_tokens}."),
            Some("max_tokens"),
            Some(&Value::from(max_tokens)),
        ));
    }
    let max_tokens = u32::try_from(max_tokens).unwrap_or(u32::MAX);
    // Rule 6.
    let prompt_logprobs = validate::prompt_logprobs_limit(job.prompt_logprobs)?;
    check_engine_input(&prompt)?;
    let scope = CacheScope {
        model: &job.model,
        cache_salt: job.cache_salt.as_deref(),
    };
    let handle = state.engine.submit(NewSequence {
        prompt_len: prompt.len(),
        block_hashes: block_hashes(&prompt, state.config.block_size, scope),
        max_tokens,
        read_prefix_cache: prompt_logprobs.is_none(),
    })?;
    Ok(Generation {
        model: job.model,
        prompt,
        max_tokens,
        prompt_logprobs,
        handle,
        cache_report: CacheReport {
            log: Arc::clone(&state.requests),
            record,
        },
        prompt_tokens_details: state.config.enable_prompt_tokens_details,
        block_size: state.config.block_size,
        fingerprint: Arc::clone(&state.fingerprint),
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
/// says how that stream reports usage. `id` is the response id (`chatcmpl-…`, `cmpl-…`).
pub async fn generate(
    state: &AppState,
    record: Option<RecordId>,
    endpoint: Endpoint,
    stream: Option<StreamUsage>,
    id: String,
    job: GenerationJob,
) -> Result<Response, ApiError> {
    let generation = submit(state, record, job)?;
    let header = ResponseHeader {
        id,
        object: endpoint.object(stream.is_some()),
        created: unix_seconds(),
        model: generation.model.clone(),
    };
    match stream {
        Some(usage) => Ok(sse::response(generation, header, endpoint, usage)),
        None => whole::respond(generation, header, endpoint, &state.tokenizer).await,
    }
}
