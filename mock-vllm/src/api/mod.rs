//! HTTP surface: the OpenAI-compatible routes, operational routes and test-only debug routes.

mod body;
mod chat;
mod completions;
mod debug;
mod embeddings;
mod error;
mod generate;
mod ops;
mod prompt_logprobs;
pub mod protocol;
pub(crate) mod python;
mod requests;
mod responses;
mod sse;
mod validate;
mod whole;

pub use error::ApiError;

use crate::config::MockConfig;
use crate::engine::Engine;
use crate::request_log::RequestLog;
use crate::tokenizer::PromptTokenizer;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
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
    /// vLLM's `system_fingerprint`: its version and a hash of the serving configuration.
    pub fingerprint: Arc<str>,
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
            fingerprint: fingerprint(&config).into(),
            metrics_enabled: Arc::new(AtomicBool::new(true)),
            config,
            engine,
            tokenizer,
            replica_header,
        }
    }

    /// vLLM's `_check_model`: an absent or empty name means the served model, a served name
    /// (any alias) is answered under the first one, as `models.model_name()` does; any other
    /// is a 404. Returns the name responses carry.
    pub fn resolve_model(&self, name: Option<&str>, kind: ModelKind) -> Result<String, ApiError> {
        let served = match kind {
            ModelKind::Generate => &self.config.models,
            ModelKind::Embed => &self.config.embedding_models,
        };
        let first = served.first().cloned().unwrap_or_default();
        match name {
            None | Some("") => Ok(first),
            Some(name) if served.iter().any(|m| m == name) => Ok(first),
            Some(name) => Err(match kind {
                ModelKind::Generate => ApiError::NotFound {
                    message: format!(
                        "The model `{name}` does not exist. Valid aliases: {}.",
                        served.join(", ")
                    ),
                    param: Some("model".into()),
                },
                // The pooling server ignores `_check_model`'s answer and fails later, in
                // `_maybe_get_adapters`, with a shorter message and no parameter.
                ModelKind::Embed => ApiError::NotFound {
                    message: format!("The model `{name}` does not exist."),
                    param: None,
                },
            }),
        }
    }

    /// vLLM's `_base_request_id`: the `X-Request-Id` header (any value, read as Latin-1),
    /// else the body's `request_id`, else a random 16-hex-digit id.
    pub fn base_request_id(&self, headers: &HeaderMap, body_request_id: Option<&str>) -> String {
        if let Some(value) = headers.get(REQUEST_ID_HEADER) {
            return latin1(value.as_bytes());
        }
        match body_request_id {
            Some(id) => id.to_string(),
            None => self.random_id(),
        }
    }

    /// vLLM's `random_uuid()`: 16 hex digits.
    pub fn random_id(&self) -> String {
        self.ids.next()
    }
}

/// `vllm-<version>-<8 hex>`, constant for a given configuration, like vLLM's.
fn fingerprint(config: &MockConfig) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(config.models.join("\0").as_bytes());
    hasher.update(config.max_model_len.to_le_bytes());
    hasher.update(config.block_size.to_le_bytes());
    let digest = hasher.finalize();
    let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("vllm-{}-{hex}", crate::config::VLLM_VERSION)
}

fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// `X-Request-Id`, which names responses and, with `--enable-request-id-headers`, is echoed.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Random-looking 16-hex-digit ids, like vLLM's `random_uuid()` (64 bits of a uuid4): a
/// counter scrambled with a per-process seed, so ids never repeat within a run.
#[derive(Debug)]
struct IdSource {
    seed: u64,
    counter: AtomicU64,
}

impl IdSource {
    fn new() -> Self {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self {
            seed,
            counter: AtomicU64::new(0),
        }
    }

    fn next(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        // SplitMix64's finalizer is a bijection, so distinct counters give distinct ids.
        let mut z = n
            .wrapping_add(self.seed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        format!("{:016x}", z ^ (z >> 31))
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
        .route("/v1/chat/completions", only(post(chat::create), "POST"))
        .route("/v1/completions", only(post(completions::create), "POST"))
        .route("/v1/responses", only(post(responses::create), "POST"))
        .route("/v1/embeddings", only(post(embeddings::create), "POST"))
        .route("/v1/models", only(get(ops::models), "GET"))
        .route("/health", only(get(ops::health), "GET"))
        // SageMaker's health check, GET and POST; two routes, so other methods name GET.
        .route("/ping", only(get(ops::health).post(ops::health), "GET"))
        .route("/version", only(get(ops::version), "GET"))
        // vLLM serves GET /metrics through its instrumentator and every other method (and any
        // path under /metrics) through prometheus_client's ASGI app.
        .route(
            "/metrics",
            get(ops::metrics)
                .head(ops::metrics_asgi)
                .fallback(ops::metrics_asgi),
        )
        .route("/debug/requests", get(debug::requests))
        .route("/debug/metrics", post(debug::toggle_metrics))
        .route("/debug/reset", post(debug::reset))
        .fallback(fallback)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            debug::capture,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            request_id_header,
        ))
        .layer(axum::middleware::map_response_with_state(
            state.clone(),
            tag_replica,
        ))
        .with_state(state)
}

/// A FastAPI route: any other method (HEAD included, which FastAPI does not add) is Starlette's
/// 405 naming the one it takes.
fn only(route: MethodRouter<AppState>, allow: &'static str) -> MethodRouter<AppState> {
    let refuse = move || async move { ApiError::MethodNotAllowed { allow } };
    if allow == "GET" {
        route.head(refuse).fallback(refuse)
    } else {
        route.fallback(refuse)
    }
}

/// Starlette's 404 for unknown paths, except under `/metrics`, which vLLM mounts as a prefix.
async fn fallback(State(state): State<AppState>, request: Request) -> Response {
    if request.uri().path().starts_with("/metrics") {
        return ops::metrics_asgi(State(state), request.headers().clone()).await;
    }
    ApiError::RouteNotFound.into_response()
}

/// vLLM's `XRequestIdMiddleware`, behind `--enable-request-id-headers`: every response gets the
/// request's `X-Request-Id`, or a fresh uuid4 in hex.
async fn request_id_header(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if !state.config.enable_request_id_headers {
        return next.run(request).await;
    }
    let id = request.headers().get(REQUEST_ID_HEADER).cloned();
    let mut response = next.run(request).await;
    let id = id.unwrap_or_else(|| {
        let hex = format!("{}{}", state.random_id(), state.random_id());
        HeaderValue::from_str(&hex).unwrap_or(HeaderValue::from_static("0"))
    });
    response.headers_mut().append(REQUEST_ID_HEADER, id);
    response
}

/// `server` and `vary` as uvicorn and vLLM's CORS middleware set them on every response, and
/// the mock's own replica header.
async fn tag_replica(State(state): State<AppState>, mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::SERVER, HeaderValue::from_static("uvicorn"));
    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    headers.insert(REPLICA_HEADER, state.replica_header.clone());
    response
}
