//! The non-streaming answer of chat and text completions: one JSON body once the last token
//! is out.

use super::generate::{Endpoint, Generation, run_to_end};
use super::protocol::{
    AssistantMessage, ChatChoice, ChatCompletion, ResponseHeader, TextChoice, TextCompletion, Usage,
};
use super::{ApiError, prompt_logprobs};
use crate::filler;
use crate::tokenizer::PromptTokenizer;
use axum::Json;
use axum::response::{IntoResponse, Response};

pub async fn respond(
    mut generation: Generation,
    header: ResponseHeader,
    endpoint: Endpoint,
    tokenizer: &PromptTokenizer,
) -> Result<Response, ApiError> {
    let finished = run_to_end(&mut generation).await?;
    let usage = Usage::new(
        generation.prompt.len(),
        finished.generated as usize,
        finished.cached_tokens,
    );
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
                message: AssistantMessage {
                    role: "assistant",
                    content: text,
                },
                logprobs: None,
                finish_reason: "length",
                stop_reason: None,
            }],
            service_tier: None,
            system_fingerprint: None,
            usage,
            prompt_logprobs,
            prompt_token_ids: None,
            kv_transfer_params: None,
        })
        .into_response(),
        Endpoint::Completion => Json(TextCompletion {
            header,
            choices: [TextChoice {
                index: 0,
                text: &text,
                logprobs: None,
                finish_reason: "length",
                stop_reason: None,
                token_ids: None,
                prompt_logprobs,
                prompt_token_ids: None,
            }],
            service_tier: None,
            system_fingerprint: None,
            usage,
            kv_transfer_params: None,
        })
        .into_response(),
    };
    Ok(response)
}
