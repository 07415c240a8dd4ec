//! `POST /v1/responses`: the Responses API as vLLM serves it without tools or a response
//! store. A request is a chat prompt (instructions as a system message, then the input), so it
//! goes through the same tokenizer, chat template, prefix cache and engine as chat and costs
//! the same tokens.

mod protocol;
mod sse;

use self::protocol::{
    IncompleteDetails, OutputMessage, OutputText, ResponseObject, ResponseUsage, ResponsesRequest,
};
use super::generate::{Finished, GenerationJob, run_to_end, submit};
use super::{ApiError, AppState, ModelKind, unix_seconds};
use crate::filler;
use crate::request_log::RecordId;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use serde_json::Value;

pub async fn create(
    State(state): State<AppState>,
    record: Option<Extension<RecordId>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: ResponsesRequest = serde_json::from_slice(&body)?;
    state.require_model(&request.model, ModelKind::Generate)?;
    // vLLM runs with its response store off: nothing can run in the background, and no earlier
    // response can be found.
    if request.background.unwrap_or(false) {
        return Err(ApiError::BackgroundUnsupported);
    }
    if let Some(id) = &request.previous_response_id {
        return Err(ApiError::ResponseNotFound(id.clone()));
    }
    let mut generation = submit(
        &state,
        record.map(|Extension(id)| id),
        GenerationJob {
            prompt: state.tokenizer.encode_chat(&request.chat_messages()),
            model: request.model.clone(),
            cache_salt: request.cache_salt.clone(),
            max_tokens: request.max_output_tokens,
            prompt_logprobs: None,
        },
    )?;
    let meta = ResponseMeta {
        id: state.next_id("resp_"),
        message_id: state.next_id("msg_"),
        created_at: unix_seconds(),
        max_output_tokens: generation.max_tokens,
        prompt_tokens: generation.prompt.len(),
        request: Echo::from(request),
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
}

impl From<ResponsesRequest> for Echo {
    fn from(request: ResponsesRequest) -> Self {
        Self {
            model: request.model,
            stream: request.stream.unwrap_or(false),
            instructions: request.instructions,
            metadata: request.metadata,
            // vLLM's sampling defaults when the model's generation config sets none.
            temperature: request.temperature.unwrap_or(1.0),
            top_p: request.top_p.unwrap_or(1.0),
            tool_choice: request.tool_choice.unwrap_or_else(|| "auto".into()),
            tools: request.tools.unwrap_or_default(),
            parallel_tool_calls: request.parallel_tool_calls.unwrap_or(true),
            service_tier: request.service_tier.unwrap_or_else(|| "auto".into()),
            text: request.text,
            reasoning: request.reasoning,
            truncation: request.truncation.unwrap_or_else(|| "disabled".into()),
            user: request.user,
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
            input_messages: None,
            output_messages: None,
        }
    }
}
