//! `POST /v1/completions`.

use super::generate::{Api, Endpoint, GenerationJob, Prompt, generate};
use super::protocol::PromptItem;
use super::{ApiError, AppState, ModelKind, body, requests};
use crate::request_log::RecordId;
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
    let request = requests::completion(&body::read_json(&headers, &body)?)?;
    let model = state.resolve_model(request.common.model.as_deref(), ModelKind::Generate)?;
    let mut items = request.prompt.into_items();
    if items.len() > 1 {
        // vLLM runs one engine request per prompt and answers them as choices; the mock
        // serves one prompt per request.
        return Err(ApiError::validation(
            "the mock serves one prompt per request: send a string or one array of token ids",
            Some("prompt"),
            None,
        ));
    }
    let prompt = match items.pop() {
        Some(PromptItem::Text(text)) => Prompt::Text(text),
        Some(PromptItem::Tokens(tokens)) => Prompt::Tokens(tokens),
        None => Prompt::Tokens(Vec::new()),
    };
    let id = format!(
        "{}{}",
        Endpoint::Completion.id_prefix(),
        state.base_request_id(&headers, request.common.request_id.as_deref())
    );
    let job = GenerationJob {
        api: Api::Completion,
        prompt,
        model,
        cache_salt: request.common.cache_salt,
        max_tokens: Some(request.max_tokens),
        max_tokens_param: "max_tokens",
        prompt_logprobs: request.prompt_logprobs,
        temperature: request.common.temperature,
        top_p: request.common.top_p,
    };
    let stream = request.common.stream.then_some(request.stream_usage);
    generate(
        &state,
        record.map(|Extension(id)| id),
        Endpoint::Completion,
        stream,
        id,
        job,
    )
    .await
}
