//! Operational routes: health, model list, Prometheus metrics.

use super::protocol::{ModelCard, ModelList};
use super::{ApiError, AppState, unix_seconds};
use crate::metrics::{self, CacheConfigInfo};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::atomic::Ordering;

pub async fn health() -> StatusCode {
    StatusCode::OK
}

pub async fn models(State(state): State<AppState>) -> Json<ModelList> {
    let created = unix_seconds();
    let data = state
        .config
        .models
        .iter()
        .chain(&state.config.embedding_models)
        .map(|name| ModelCard {
            id: name.clone(),
            object: "model",
            created,
            owned_by: "vllm",
            root: name.clone(),
            parent: None,
            max_model_len: state.config.max_model_len,
        })
        .collect();
    Json(ModelList {
        object: "list",
        data,
    })
}

pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    if !state.metrics_enabled.load(Ordering::Relaxed) {
        return Err(ApiError::MetricsDisabled);
    }
    let text = metrics::render(
        state.config.metrics_model_name(),
        CacheConfigInfo {
            block_size: state.config.block_size,
            num_gpu_blocks: state.config.num_gpu_blocks,
        },
        state.engine.gauges(),
        &state.engine.stats(),
    );
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}
