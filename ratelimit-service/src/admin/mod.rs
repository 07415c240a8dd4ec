//! Admin HTTP, on its own listener apart from the data path. Every route but
//! `/healthz` needs `Authorization: Bearer <--admin-token>`.

pub mod audit;
pub mod usage;

pub use audit::AuditAccess;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use crate::ledger::LedgerReader;
use crate::limiter::Limiter;
use crate::reload::Reloader;

#[derive(Clone)]
pub struct AdminState {
    pub limiter: Limiter,
    pub reloader: Arc<Reloader>,
    pub ledger: LedgerReader,
    pub audit: AuditAccess,
    /// CloudEvents `source` of this replica's usage exports.
    pub source: Arc<str>,
    /// `None` only with `--admin-insecure`.
    pub token: Option<Arc<str>>,
}

pub fn router(state: AdminState) -> Router {
    let protected = Router::new()
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/admin/usage", get(usage))
        .route("/admin/usage/export", get(usage::export))
        .route("/admin/usage/invoice", get(usage::invoice))
        .route("/admin/audit", get(audit::read))
        .route("/admin/reload", post(reload))
        .route("/admin/tenants/{id}/throttle", post(throttle))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .merge(protected)
        .with_state(state)
}

async fn authenticate(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let Some(token) = &state.token else {
        return next.run(request).await;
    };
    if bearer(request.headers())
        .is_some_and(|given| constant_time_eq(given.as_bytes(), token.as_bytes()))
    {
        next.run(request).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "admin token required\n",
        )
            .into_response()
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Compares without an early exit, so response time does not reveal how
/// much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, axum::Json(json!({ "error": message.to_string() }))).into_response()
}

async fn readyz(State(state): State<AdminState>) -> Response {
    match state.limiter.usage().await {
        Ok(_) => "ready\n".into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    if let Err(e) = state.limiter.refresh_gauges().await {
        tracing::warn!(error = %e, "metrics: store gauges not refreshed");
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.limiter.metrics().encode(),
    )
        .into_response()
}

async fn usage(State(state): State<AdminState>) -> Response {
    match state.limiter.usage().await {
        Ok(tenants) => axum::Json(json!({ "tenants": tenants })).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

async fn reload(State(state): State<AdminState>) -> Response {
    match state.reloader.reload() {
        Ok(tenants) => axum::Json(json!({ "reloaded": true, "tenants": tenants })).into_response(),
        Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ThrottleBody {
    fraction: f64,
}

async fn throttle(
    State(state): State<AdminState>,
    Path(tenant): Path<String>,
    body: Result<axum::Json<ThrottleBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let fraction = match body {
        Ok(axum::Json(b)) => b.fraction,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    if !(0.0..=1.0).contains(&fraction) {
        return error(
            StatusCode::BAD_REQUEST,
            "fraction must be in [0, 1]; 1 clears the throttle",
        );
    }
    if state.limiter.registry().current().tenant(&tenant).is_none() {
        return error(StatusCode::NOT_FOUND, format!("unknown tenant {tenant:?}"));
    }
    state.limiter.throttles().set(&tenant, fraction);
    tracing::info!(tenant, fraction, "tenant throttle set");
    axum::Json(json!({ "tenant": tenant, "fraction": fraction })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert_eq!(bearer(&h), Some("s3cret"));
        h.insert(header::AUTHORIZATION, "Basic s3cret".parse().unwrap());
        assert_eq!(bearer(&h), None);
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
