//! `POST /v1/chat/completions`.

use super::generate::{Endpoint, GenerationJob, generate};
use super::protocol::{ChatCompletionRequest, StreamUsage};
use super::{ApiError, AppState, ModelKind, validate};
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
    let request: ChatCompletionRequest = serde_json::from_slice(&body)?;
    let stream = request.stream.unwrap_or(false);
    validate::stream_options(stream, request.stream_options.as_ref())?;
    validate::prompt_logprobs(stream, request.prompt_logprobs)?;
    state.require_model(&request.model, ModelKind::Generate)?;
    let job = GenerationJob {
        prompt: state.tokenizer.encode_chat(&request.messages),
        model: request.model,
        cache_salt: request.cache_salt,
        max_tokens: request.max_completion_tokens.or(request.max_tokens),
        prompt_logprobs: request.prompt_logprobs,
    };
    let stream = stream.then(|| StreamUsage::of(request.stream_options.as_ref()));
    generate(
        &state,
        record.map(|Extension(id)| id),
        Endpoint::Chat,
        stream,
        job,
    )
    .await
}
