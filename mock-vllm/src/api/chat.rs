//! `POST /v1/chat/completions`.

use super::generate::{Endpoint, GenerationJob, generate};
use super::protocol::ChatCompletionRequest;
use super::{ApiError, AppState, ModelKind};
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
    state.require_model(&request.model, ModelKind::Generate)?;
    let job = GenerationJob {
        endpoint: Endpoint::Chat,
        prompt: state.tokenizer.encode_chat(&request.messages),
        model: request.model,
        cache_salt: request.cache_salt,
        max_tokens: request.max_completion_tokens.or(request.max_tokens),
        stream: request.stream.unwrap_or(false),
        include_usage: request
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
    };
    generate(&state, record.map(|Extension(id)| id), job).await
}
