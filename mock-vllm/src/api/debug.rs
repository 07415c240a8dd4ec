//! Test-only observability: the request capture layer and the `/debug/*` routes.

use super::{ApiError, AppState, MAX_BODY_BYTES, unix_millis};
use crate::request_log::{ReceivedRequest, RequestRecord};
use axum::Json;
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

/// Records every `/v1/*` request before it is handled. Operational and debug routes are left
/// out so that metric scrapes do not push the interesting requests out of the ring.
pub async fn capture(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if !request.uri().path().starts_with("/v1/") {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return ApiError::Http {
            status: StatusCode::BAD_REQUEST,
            detail: "There was an error parsing the body".into(),
        }
        .into_response();
    };
    let mut headers = BTreeMap::<String, String>::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        headers
            .entry(name.as_str().to_string())
            .and_modify(|joined| {
                joined.push_str(", ");
                joined.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    let body_json = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
        })
    };
    let id = state.requests.record(ReceivedRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        headers,
        body: body_json,
        received_at_ms: unix_millis(),
    });
    let mut request = Request::from_parts(parts, Body::from(bytes));
    request.extensions_mut().insert(id);
    next.run(request).await
}

pub async fn requests(State(state): State<AppState>) -> Json<Vec<RequestRecord>> {
    Json(state.requests.snapshot())
}

#[derive(Debug, Deserialize, Serialize)]
pub struct MetricsSwitch {
    enabled: bool,
}

/// `enabled=false` makes `/metrics` answer 503, like a replica whose metrics went stale.
pub async fn toggle_metrics(
    State(state): State<AppState>,
    Query(switch): Query<MetricsSwitch>,
) -> Json<MetricsSwitch> {
    state
        .metrics_enabled
        .store(switch.enabled, Ordering::Relaxed);
    Json(switch)
}

/// Forgets the recorded requests and every cached prefix.
pub async fn reset(State(state): State<AppState>) -> StatusCode {
    state.requests.clear();
    state.engine.reset_prefix_cache();
    StatusCode::NO_CONTENT
}
