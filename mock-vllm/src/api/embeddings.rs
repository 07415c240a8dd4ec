//! `POST /v1/embeddings`: deterministic vectors, no batching model (pooling is one cheap pass).

use super::generate::{Prompt, check_engine_input, tokenize_checked};
use super::protocol::{
    Embedding, EmbeddingList, EmbeddingVector, PromptItem, ResponseHeader, Usage,
};
use super::{ApiError, AppState, ModelKind, body, requests, unix_seconds};
use crate::metrics::FinishReason;
use crate::tokenizer::TokenId;
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use base64::prelude::{BASE64_STANDARD, Engine as _};
use bytes::Bytes;
use sha2::{Digest, Sha256};

/// Length of every returned vector.
pub const EMBEDDING_DIMENSIONS: usize = 16;

pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    // A generation server has no pooling routes: vLLM 404s the path itself.
    if state.config.embedding_models.is_empty() {
        return Err(ApiError::RouteNotFound);
    }
    let request = requests::embedding(&body::read_json(&headers, &body)?)?;
    let id = format!(
        "embd-{}",
        state.base_request_id(&headers, request.request_id.as_deref())
    );
    let model = state.resolve_model(request.model.as_deref(), ModelKind::Embed)?;
    if let Some(dimensions) = &request.dimensions {
        return Err(ApiError::BadRequest {
            message: format!(
                "Model '{model}' does not support Matryoshka embeddings; dimensions must be \
                 unset (received dimensions={dimensions})."
            ),
            param: None,
        });
    }
    let base64 = request.encoding_format.as_deref() == Some("base64");
    // Pooling tokenizes with no output budget, so a prompt may fill the whole context.
    let mut inputs: Vec<Vec<TokenId>> = Vec::new();
    for item in request.input.into_items() {
        let prompt = match item {
            PromptItem::Text(text) => Prompt::Text(text),
            PromptItem::Tokens(tokens) => Prompt::Tokens(tokens),
        };
        inputs.push(tokenize_checked(&state, prompt, 0, "max_tokens")?);
    }
    for input in &inputs {
        check_engine_input(input)?;
    }
    let prompt_tokens: usize = inputs.iter().map(Vec::len).sum();
    state.engine.update_stats(|stats| {
        stats.prompt_tokens += prompt_tokens as u64;
        stats.record_finished(FinishReason::Stop);
    });
    let header = ResponseHeader {
        id,
        object: "list",
        created: unix_seconds(),
        model,
    };
    let data = inputs
        .iter()
        .enumerate()
        .map(|(index, tokens)| Embedding {
            index,
            object: "embedding",
            embedding: {
                let vector = embed(&header.model, tokens);
                if base64 {
                    let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                    EmbeddingVector::Base64(BASE64_STANDARD.encode(bytes))
                } else {
                    EmbeddingVector::Float(vector)
                }
            },
        })
        .collect();
    Ok(Json(EmbeddingList {
        header: &header,
        data,
        usage: Usage::whole(prompt_tokens, 0, None),
    })
    .into_response())
}

/// A unit-length vector derived from a hash of the model and the input's tokens.
fn embed(model: &str, tokens: &[TokenId]) -> Vec<f32> {
    let mut hasher = Sha256::new();
    hasher.update(model.as_bytes());
    hasher.update([0]);
    for token in tokens {
        hasher.update(token.to_le_bytes());
    }
    let digest: [u8; 32] = hasher.finalize().into();
    let raw: Vec<f32> = digest
        .chunks_exact(2)
        .take(EMBEDDING_DIMENSIONS)
        .map(|pair| f32::from(u16::from_le_bytes([pair[0], pair[1]])) / 32767.5 - 1.0)
        .collect();
    let norm = raw.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm == 0.0 {
        return raw;
    }
    raw.into_iter().map(|x| x / norm).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_are_deterministic_unit_length_and_input_specific() {
        let a = embed("e", &[1, 2, 3]);
        assert_eq!(a.len(), EMBEDDING_DIMENSIONS);
        assert_eq!(a, embed("e", &[1, 2, 3]));
        assert_ne!(a, embed("e", &[1, 2, 4]));
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
    }
}
