//! Operational routes: health, version, model list, Prometheus metrics.

use super::protocol::{ModelCard, ModelList, ModelPermission, Version};
use super::{ApiError, AppState, unix_seconds};
use crate::config::VLLM_VERSION;
use crate::metrics::{self, CacheConfigInfo};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::atomic::Ordering;

/// prometheus_client's `CONTENT_TYPE_LATEST` (0.22 and later), which vLLM's instrumentator
/// sets on `GET /metrics`.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=1.0.0; charset=utf-8";

/// What prometheus_client's ASGI app answers a plain-text scrape with (other methods and paths
/// under `/metrics`).
pub const METRICS_ASGI_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub async fn health() -> StatusCode {
    StatusCode::OK
}

pub async fn version() -> Json<Version> {
    Json(Version {
        version: VLLM_VERSION,
    })
}

/// vLLM's `/v1/models`: every served name of the one engine, each with its `max_model_len`
/// and a default permission. (The mock also lists its embedding models here.)
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
            permission: [ModelPermission {
                id: format!("modelperm-{}", state.random_id()),
                object: "model_permission",
                created,
                allow_create_engine: false,
                allow_sampling: true,
                allow_logprobs: true,
                allow_search_indices: false,
                allow_view: true,
                allow_fine_tuning: false,
                organization: "*",
                group: None,
                is_blocking: false,
            }],
        })
        .collect();
    Json(ModelList {
        object: "list",
        data,
    })
}

pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    exposition(&state, METRICS_CONTENT_TYPE)
}

/// `/metrics` reached through prometheus_client's ASGI mount.
pub async fn metrics_asgi(State(state): State<AppState>, _headers: HeaderMap) -> Response {
    exposition(&state, METRICS_ASGI_CONTENT_TYPE).into_response()
}

fn exposition(state: &AppState, content_type: &'static str) -> Result<Response, ApiError> {
    if !state.metrics_enabled.load(Ordering::Relaxed) {
        return Err(ApiError::MetricsDisabled);
    }
    let text = metrics::render(
        state.config.metrics_model_name(),
        CacheConfigInfo {
            block_size: state.config.block_size,
            num_gpu_blocks: state.config.num_gpu_blocks,
            max_model_len: state.config.max_model_len,
        },
        state.engine.gauges(),
        &state.engine.stats(),
    );
    let mut response = text.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(response)
}
