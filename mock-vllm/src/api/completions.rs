//! `POST /v1/completions`.

use super::generate::{Endpoint, GenerationJob, generate};
use super::protocol::{CompletionRequest, PromptItem};
use super::{ApiError, AppState, InvalidRequest, ModelKind};
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
        endpoint: Endpoint::Completion,
        prompt,
        model: request.model,
        cache_salt: request.cache_salt,
        max_tokens: request.max_tokens,
        stream: request.stream.unwrap_or(false),
        include_usage: request
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
    };
    generate(&state, record.map(|Extension(id)| id), job).await
}
