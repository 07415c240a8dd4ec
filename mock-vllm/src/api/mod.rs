//! HTTP surface: the OpenAI-compatible routes, operational routes and test-only debug routes.

mod chat;
mod completions;
mod debug;
mod embeddings;
mod error;
mod generate;
mod ops;
mod prompt_logprobs;
pub mod protocol;
mod responses;
mod sse;
mod validate;
mod whole;

pub use error::{ApiError, InvalidRequest};

use crate::config::MockConfig;
use crate::engine::Engine;
use crate::request_log::RequestLog;
use crate::tokenizer::PromptTokenizer;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderName, HeaderValue, Uri};
use axum::response::Response;
use axum::routing::{get, post};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Response header naming the replica that answered.
pub const REPLICA_HEADER: HeaderName = HeaderName::from_static("x-mock-replica");

/// Largest request body accepted (a 32k-token prompt is ~130 KB of text).
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Everything a handler needs; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    pub config: Arc<MockConfig>,
    pub engine: Engine,
    pub tokenizer: PromptTokenizer,
    pub requests: Arc<RequestLog>,
    pub metrics_enabled: Arc<AtomicBool>,
    replica_header: HeaderValue,
    ids: Arc<IdSource>,
}

/// The kinds of model a replica serves; a name is served as exactly one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    Generate,
    Embed,
}

impl AppState {
    pub fn new(
        config: Arc<MockConfig>,
        engine: Engine,
        tokenizer: PromptTokenizer,
        replica_header: HeaderValue,
    ) -> Self {
        Self {
            requests: Arc::new(RequestLog::new(config.replica_name.clone())),
            ids: Arc::new(IdSource::new()),
            metrics_enabled: Arc::new(AtomicBool::new(true)),
            config,
            engine,
            tokenizer,
            replica_header,
        }
    }

    pub fn require_model(&self, name: &str, kind: ModelKind) -> Result<(), ApiError> {
        let served = match kind {
            ModelKind::Generate => &self.config.models,
            ModelKind::Embed => &self.config.embedding_models,
        };
        if served.iter().any(|m| m == name) {
            Ok(())
        } else {
            Err(ApiError::ModelNotFound(name.to_string()))
        }
    }

    /// A fresh id: `prefix` (with its separator, e.g. `chatcmpl-` or `resp_`) then 32 hex digits.
    pub fn next_id(&self, prefix: &str) -> String {
        self.ids.next(prefix)
    }
}

/// Response ids: unique per process run, like vLLM's random ones, but cheap and readable.
#[derive(Debug)]
struct IdSource {
    run: u64,
    counter: AtomicU64,
}

impl IdSource {
    fn new() -> Self {
        let run = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self {
            run,
            counter: AtomicU64::new(0),
        }
    }

    fn next(&self, prefix: &str) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}{:016x}{n:016x}", self.run)
    }
}

pub fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat::create))
        .route("/v1/completions", post(completions::create))
        .route("/v1/responses", post(responses::create))
        .route("/v1/embeddings", post(embeddings::create))
        .route("/v1/models", get(ops::models))
        .route("/health", get(ops::health))
        .route("/metrics", get(ops::metrics))
        .route("/debug/requests", get(debug::requests))
        .route("/debug/metrics", post(debug::toggle_metrics))
        .route("/debug/reset", post(debug::reset))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            debug::capture,
        ))
        .layer(axum::middleware::map_response_with_state(
            state.clone(),
            tag_replica,
        ))
        .with_state(state)
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::RouteNotFound(uri.path().to_string())
}

async fn tag_replica(State(state): State<AppState>, mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(REPLICA_HEADER, state.replica_header.clone());
    response
}
