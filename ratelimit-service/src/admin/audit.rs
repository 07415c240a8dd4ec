//! `GET /admin/audit?tenant=<id>`: one tenant's audit trail, as JSON lines.
//!
//! Only the named tenant's partition is opened, so a caller scoped to one
//! tenant (a proxy that fixes `tenant`, or a tenant's compliance officer)
//! cannot page into another's. Sealed records are opened here with the
//! tenant's key; a record that does not open is counted in
//! `x-audit-unreadable`, never returned.

use std::path::PathBuf;

use axum::extract::{Query, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::usage::{NEXT_CURSOR, page_bounds};
use super::{AdminState, error};
use crate::audit::seal::MasterKey;
use crate::audit::{AuditError, AuditRecord, files};
use crate::ledger::files as days;

const UNREADABLE: HeaderName = HeaderName::from_static("x-audit-unreadable");

/// Where the trail is and how to open it.
#[derive(Clone)]
pub struct AuditAccess {
    pub dir: PathBuf,
    pub key: Option<MasterKey>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    tenant: String,
    /// First day, `YYYY-MM-DD`, inclusive.
    from: Option<String>,
    /// Last day, `YYYY-MM-DD`, inclusive.
    to: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
}

#[derive(Serialize)]
struct Line<'a> {
    #[serde(flatten)]
    record: &'a AuditRecord,
    cursor: String,
}

fn day(field: &str, value: Option<&str>) -> Result<Option<time::Date>, String> {
    value
        .map(|v| {
            days::parse_day(v).ok_or_else(|| format!("{field}: expected YYYY-MM-DD, got {v:?}"))
        })
        .transpose()
}

pub async fn read(
    State(state): State<AdminState>,
    params: Result<Query<AuditParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(p) = match params {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let period = match (day("from", p.from.as_deref()), day("to", p.to.as_deref())) {
        (Ok(from), Ok(to)) => (from, to),
        (Err(e), _) | (_, Err(e)) => return error(StatusCode::BAD_REQUEST, e),
    };
    let (limit, after) = match page_bounds(p.limit, p.cursor.as_deref()) {
        Ok(bounds) => bounds,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let known = state
        .limiter
        .registry()
        .current()
        .tenant(&p.tenant)
        .is_some();
    let access = state.audit.clone();
    let tenant = p.tenant.clone();
    let page = tokio::task::spawn_blocking(move || {
        let dir = crate::audit::tenant_dir(&access.dir, &tenant)?;
        if !known && !dir.exists() {
            return Err(AuditError::BadTenant(tenant));
        }
        let key = access.key.as_ref().map(|k| k.tenant_key(&tenant));
        files::read(&access.dir, &tenant, key.as_ref(), period, after, limit)
    })
    .await;
    let page = match page {
        Ok(Ok(page)) => page,
        Ok(Err(e @ AuditError::BadTenant(_))) => return error(StatusCode::NOT_FOUND, e),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "audit read failed");
            return error(StatusCode::INTERNAL_SERVER_ERROR, e);
        }
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let mut body = Vec::new();
    for (cursor, record) in &page.records {
        let line = Line {
            record,
            cursor: cursor.to_string(),
        };
        if let Err(e) = serde_json::to_writer(&mut body, &line) {
            return error(StatusCode::INTERNAL_SERVER_ERROR, e);
        }
        body.push(b'\n');
    }
    let mut response = ([(header::CONTENT_TYPE, "application/jsonl")], body).into_response();
    let headers = response.headers_mut();
    if let Some(next) = page.next
        && let Ok(v) = HeaderValue::from_str(&next.to_string())
    {
        headers.insert(NEXT_CURSOR, v);
    }
    headers.insert(UNREADABLE, HeaderValue::from(page.unreadable));
    response
}
