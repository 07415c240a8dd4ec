//! The non-streaming answer of chat and text completions: one JSON body once the last token
//! is out.
//!
//! The mock never samples an end-of-sequence token or a stop string: every generation runs to
//! its output length, which vLLM reports as `finish_reason: "length"` with `stop_reason: null`
//! (`stop` would need an EOS or a stop string, `abort` only reaches the metrics).

use super::generate::{Endpoint, Generation, run_to_end};
use super::protocol::{
    AssistantMessage, ChatChoice, ChatCompletion, ResponseHeader, TextChoice, TextCompletion, Usage,
};
use super::{ApiError, prompt_logprobs};
use crate::filler;
use crate::tokenizer::PromptTokenizer;
use axum::Json;
use axum::response::{IntoResponse, Response};

/// Why every mock generation ends: it reached its `max_tokens` (or the end of the context).
pub const FINISH_REASON: &str = "length";

pub async fn respond(
    mut generation: Generation,
    header: ResponseHeader,
    endpoint: Endpoint,
    tokenizer: &PromptTokenizer,
) -> Result<Response, ApiError> {
    let finished = run_to_end(&mut generation).await?;
    let usage = Usage::whole(
        generation.prompt.len(),
        finished.generated as usize,
        generation.prompt_details(finished.cached_tokens, endpoint, false),
    );
    let fingerprint = &*generation.fingerprint;
    let text = filler::completion_text(finished.generated);
    let prompt_logprobs = generation
        .prompt_logprobs
        .map(|top| prompt_logprobs::build(tokenizer, &generation.prompt, top));
    let header = &header;
    let response = match endpoint {
        Endpoint::Chat => Json(ChatCompletion {
            header,
            choices: [ChatChoice {
                index: 0,
                message: AssistantMessage::new(text),
                logprobs: None,
                finish_reason: FINISH_REASON,
                stop_reason: None,
                token_ids: None,
                routed_experts: None,
            }],
            service_tier: None,
            system_fingerprint: fingerprint,
            usage,
            prompt_logprobs,
            prompt_token_ids: None,
            prompt_text: None,
            kv_transfer_params: None,
            ec_transfer_params: None,
            metrics: None,
        })
        .into_response(),
        Endpoint::Completion => Json(TextCompletion {
            header,
            choices: [TextChoice {
                index: 0,
                text: &text,
                logprobs: None,
                finish_reason: FINISH_REASON,
                stop_reason: None,
                token_ids: None,
                prompt_logprobs,
                prompt_token_ids: None,
                routed_experts: None,
            }],
            service_tier: None,
            system_fingerprint: fingerprint,
            usage,
            kv_transfer_params: None,
            ec_transfer_params: None,
            metrics: None,
        })
        .into_response(),
    };
    Ok(response)
}
