//! `POST /v1/completions`.

use super::generate::{Endpoint, GenerationJob, generate};
use super::protocol::{CompletionRequest, PromptItem, StreamUsage};
use super::{ApiError, AppState, InvalidRequest, ModelKind, validate};
use crate::request_log::RecordId;
use axum::Extension;
use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;

pub async fn create(
    State(state): State<AppState>,
    record: Option<Extension<RecordId>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: CompletionRequest = serde_json::from_slice(&body)?;
    let stream = request.stream.unwrap_or(false);
    validate::stream_options(stream, request.stream_options.as_ref())?;
    validate::prompt_logprobs(stream, request.prompt_logprobs)?;
    state.require_model(&request.model, ModelKind::Generate)?;
    let mut items = request.prompt.into_items();
    if items.len() > 1 {
        return Err(InvalidRequest::BatchedPrompt.into());
    }
    let prompt = match items.pop() {
        Some(PromptItem::Text(text)) => state.tokenizer.encode(&text),
        Some(PromptItem::Tokens(tokens)) => tokens,
        None => Vec::new(),
    };
    let job = GenerationJob {
        prompt,
        model: request.model,
        cache_salt: request.cache_salt,
        max_tokens: request.max_tokens,
        prompt_logprobs: request.prompt_logprobs,
    };
    let stream = stream.then(|| StreamUsage::of(request.stream_options.as_ref()));
    generate(
        &state,
        record.map(|Extension(id)| id),
        Endpoint::Completion,
        stream,
        job,
    )
    .await
}
