//! `POST /v1/responses`: the Responses API as vLLM serves it without tools or a response
//! store. A request is a chat prompt (instructions as a system message, then the input), so it
//! goes through the same tokenizer, chat template, prefix cache and engine as chat and costs
//! the same tokens.

mod protocol;
mod sse;

use self::protocol::{
    IncompleteDetails, OutputMessage, OutputText, ResponseObject, ResponseUsage, ResponsesRequest,
};
use super::error::{Issue, Loc};
use super::generate::{Api, Finished, GenerationJob, Prompt, run_to_end, submit};
use super::{ApiError, AppState, ModelKind, body, requests, unix_seconds};
use crate::filler;
use crate::request_log::RecordId;
use crate::tokenizer::render_chat;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use serde_json::Value;

pub async fn create(
    State(state): State<AppState>,
    record: Option<Extension<RecordId>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let checked = requests::responses(&body::read_json(&headers, &body)?)?;
    let request: ResponsesRequest = serde_json::from_value(checked).map_err(|_| {
        ApiError::RequestValidation(vec![Issue::field(
            "model_attributes_type",
            vec![Loc::Key("input".into())],
            "Input should be a valid dictionary or object to extract fields from",
            &Value::Null,
        )])
    })?;
    let model = state.resolve_model(request.model.as_deref(), ModelKind::Generate)?;
    // vLLM runs with its response store off: nothing can run in the background, and no earlier
    // response can be found.
    if request.background.unwrap_or(false) && request.store.unwrap_or(true) {
        return Err(ApiError::Typed {
            message: "This vLLM engine does not support `store=True` and therefore does not \
                      support the background mode. To enable these features, set the \
                      environment variable `VLLM_ENABLE_RESPONSES_API_STORE=1` when launching \
                      the vLLM server."
                .into(),
            kind: "invalid_request_error",
            status: StatusCode::BAD_REQUEST,
            param: Some("background"),
        });
    }
    if let Some(id) = &request.previous_response_id {
        return Err(ApiError::Typed {
            message: format!("Response with id '{id}' not found."),
            kind: "invalid_request_error",
            status: StatusCode::NOT_FOUND,
            param: Some("response_id"),
        });
    }
    let mut generation = submit(
        &state,
        record.map(|Extension(id)| id),
        GenerationJob {
            api: Api::Responses,
            prompt: Prompt::Text(render_chat(&request.chat_messages())),
            model: model.clone(),
            cache_salt: request.cache_salt.clone(),
            max_tokens: request.max_output_tokens,
            max_tokens_param: "max_output_tokens",
            prompt_logprobs: None,
            temperature: request.temperature,
            top_p: request.top_p,
        },
    )?;
    let meta = ResponseMeta {
        id: request
            .request_id
            .clone()
            .unwrap_or_else(|| format!("resp_{}", state.random_id())),
        message_id: format!("msg_{}", state.random_id()),
        created_at: unix_seconds(),
        max_output_tokens: generation.max_tokens,
        prompt_tokens: generation.prompt.len(),
        block_size: generation.block_size,
        request: Echo::from(request, model),
    };
    if meta.request.stream {
        return Ok(sse::response(generation, meta));
    }
    let finished = run_to_end(&mut generation).await?;
    let text = filler::completion_text(finished.generated);
    Ok(Json(meta.finished(&text, finished)).into_response())
}

/// The request fields a response object repeats, with vLLM's defaults filled in.
#[derive(Debug)]
struct Echo {
    model: String,
    stream: bool,
    instructions: Option<String>,
    metadata: Option<Value>,
    temperature: f64,
    top_p: f64,
    tool_choice: Value,
    tools: Vec<Value>,
    parallel_tool_calls: bool,
    service_tier: String,
    text: Option<Value>,
    reasoning: Option<Value>,
    truncation: String,
    user: Option<String>,
    presence_penalty: f64,
    frequency_penalty: f64,
}

impl Echo {
    fn from(request: ResponsesRequest, model: String) -> Self {
        Self {
            model,
            stream: request.stream.unwrap_or(false),
            instructions: request.instructions,
            metadata: request.metadata,
            // vLLM's sampling defaults when the model's generation config sets none.
            temperature: request.temperature.unwrap_or(1.0),
            top_p: request.top_p.unwrap_or(1.0),
            // Without tools vLLM reports `none`, whatever the default.
            tool_choice: request.tool_choice.unwrap_or_else(|| {
                if request.tools.as_ref().is_none_or(Vec::is_empty) {
                    "none".into()
                } else {
                    "auto".into()
                }
            }),
            tools: request.tools.unwrap_or_default(),
            parallel_tool_calls: request.parallel_tool_calls.unwrap_or(true),
            service_tier: request.service_tier.unwrap_or_else(|| "auto".into()),
            text: request.text,
            reasoning: request.reasoning,
            truncation: request.truncation.unwrap_or_else(|| "disabled".into()),
            user: request.user,
            presence_penalty: request.presence_penalty.unwrap_or(0.0),
            frequency_penalty: request.frequency_penalty.unwrap_or(0.0),
        }
    }
}

/// Everything a response object needs besides the generated text.
#[derive(Debug)]
struct ResponseMeta {
    id: String,
    /// The one output message's id, the same in stream events and in the final object.
    message_id: String,
    created_at: u64,
    max_output_tokens: u32,
    prompt_tokens: usize,
    block_size: usize,
    request: Echo,
}

impl ResponseMeta {
    /// The object of `response.created` and `response.in_progress`: no output, no usage yet.
    fn in_progress(&self) -> ResponseObject<'_> {
        self.object("in_progress", None, Vec::new(), None)
    }

    /// The finished object. The mock always stops at `max_output_tokens` (it never samples an
    /// end-of-sequence token), which vLLM reports as `incomplete` for that reason.
    fn finished<'a>(&'a self, text: &'a str, finished: Finished) -> ResponseObject<'a> {
        self.object(
            "incomplete",
            Some(IncompleteDetails {
                reason: "max_output_tokens",
            }),
            vec![self.message("completed", vec![OutputText::new(text, None)])],
            Some(ResponseUsage::new(
                self.prompt_tokens,
                finished.generated as usize,
                finished.cached_tokens,
                (self.prompt_tokens / self.block_size * self.block_size)
                    .saturating_sub(finished.cached_tokens),
            )),
        )
    }

    fn message<'a>(
        &'a self,
        status: &'static str,
        content: Vec<OutputText<'a>>,
    ) -> OutputMessage<'a> {
        OutputMessage {
            id: &self.message_id,
            content,
            role: "assistant",
            status,
            kind: "message",
            phase: None,
        }
    }

    fn object<'a>(
        &'a self,
        status: &'static str,
        incomplete_details: Option<IncompleteDetails>,
        output: Vec<OutputMessage<'a>>,
        usage: Option<ResponseUsage>,
    ) -> ResponseObject<'a> {
        let request = &self.request;
        ResponseObject {
            id: &self.id,
            created_at: self.created_at,
            incomplete_details,
            instructions: request.instructions.as_deref(),
            metadata: request.metadata.as_ref(),
            model: &request.model,
            object: "response",
            output,
            parallel_tool_calls: request.parallel_tool_calls,
            temperature: request.temperature,
            tool_choice: &request.tool_choice,
            tools: &request.tools,
            top_p: request.top_p,
            background: false,
            max_output_tokens: self.max_output_tokens,
            max_tool_calls: None,
            previous_response_id: None,
            prompt: None,
            reasoning: request.reasoning.as_ref(),
            service_tier: &request.service_tier,
            status,
            text: request.text.as_ref(),
            top_logprobs: None,
            truncation: &request.truncation,
            usage,
            user: request.user.as_deref(),
            presence_penalty: request.presence_penalty,
            frequency_penalty: request.frequency_penalty,
            kv_transfer_params: None,
            ec_transfer_params: None,
            input_messages: None,
            output_messages: None,
        }
    }
}
