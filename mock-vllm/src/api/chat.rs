//! `POST /v1/chat/completions`.

use super::generate::{Api, Endpoint, GenerationJob, Prompt, generate};
use super::{ApiError, AppState, ModelKind, body, requests};
use crate::request_log::RecordId;
use crate::tokenizer::render_chat;
use axum::Extension;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::Bytes;

pub async fn create(
    State(state): State<AppState>,
    record: Option<Extension<RecordId>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request = requests::chat(&body::read_json(&headers, &body)?)?;
    let model = state.resolve_model(request.common.model.as_deref(), ModelKind::Generate)?;
    let id = format!(
        "{}{}",
        Endpoint::Chat.id_prefix(),
        state.base_request_id(&headers, request.common.request_id.as_deref())
    );
    let job = GenerationJob {
        api: Api::Chat,
        prompt: if request.messages.is_empty() {
            Prompt::EmptyChat
        } else {
            Prompt::Text(render_chat(&request.messages))
        },
        model,
        cache_salt: request.common.cache_salt,
        max_tokens: request.max_tokens,
        max_tokens_param: request.max_tokens_param,
        prompt_logprobs: request.prompt_logprobs,
        temperature: request.common.temperature,
        top_p: request.common.top_p,
    };
    let stream = request.common.stream.then_some(request.stream_usage);
    generate(
        &state,
        record.map(|Extension(id)| id),
        Endpoint::Chat,
        stream,
        id,
        job,
    )
    .await
}
