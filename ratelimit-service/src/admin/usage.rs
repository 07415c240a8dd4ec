//! `/admin/usage/export` and `/admin/usage/invoice`: the spend ledger for
//! billing and FinOps jobs.
//!
//! Export pages carry a cursor (`x-next-cursor`, and on every JSON line or
//! CSV row the cursor just past that record), so a job that stops anywhere
//! resumes with the last cursor it processed and counts nothing twice.
//! Formats: JSON lines (default), CSV, or a CloudEvents 1.0 batch
//! (`application/cloudevents-batch+json`) whose event ids are the cursors:
//! stable across re-exports, so a metering system deduplicates by id.

use axum::extract::{Query, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime};

use super::{AdminState, error};
use crate::clock;
use crate::ledger::LedgerRecord;
use crate::ledger::export::{
    Cursor, DEFAULT_PAGE, ExportError, Filter, Invoice, InvoiceLine, MAX_PAGE, Page, usd_decimal,
};
use crate::ledger::files;

pub const NEXT_CURSOR: HeaderName = HeaderName::from_static("x-next-cursor");

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Jsonl,
    Csv,
    Cloudevents,
    Json,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    tenant: Option<String>,
    model: Option<String>,
    /// Inclusive; `YYYY-MM-DD` (UTC midnight) or RFC 3339.
    from: Option<String>,
    /// Exclusive; as `from`.
    to: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
    format: Option<Format>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvoiceParams {
    tenant: String,
    /// `YYYY-MM`.
    month: String,
    format: Option<Format>,
    /// CSV rows per `month` (default: one per model) or per `day` and model.
    by: Option<Period>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    #[default]
    Month,
    Day,
}

/// `YYYY-MM-DD` (UTC midnight) or an RFC 3339 instant, as Unix ms.
fn instant_ms(field: &str, value: &str) -> Result<i64, String> {
    if let Some(day) = files::parse_day(value) {
        return Ok(clock::midnight_ms(day));
    }
    OffsetDateTime::parse(value, &Rfc3339)
        .map(|t| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX))
        .map_err(|_| format!("{field}: expected YYYY-MM-DD or RFC 3339, got {value:?}"))
}

fn month_start(value: &str) -> Result<Date, String> {
    files::parse_day(&format!("{value}-01"))
        .filter(|_| value.len() == 7)
        .ok_or_else(|| format!("month: expected YYYY-MM, got {value:?}"))
}

/// The `limit` (default [`DEFAULT_PAGE`], at most [`MAX_PAGE`]) and
/// `cursor` of a paged read, or why they are refused (a 400).
pub(super) fn page_bounds(
    limit: Option<usize>,
    cursor: Option<&str>,
) -> Result<(usize, Option<Cursor>), String> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(format!("limit: must be in 1..={MAX_PAGE}"));
    }
    let after = cursor
        .map(str::parse::<Cursor>)
        .transpose()
        .map_err(|e| e.to_string())?;
    Ok((limit, after))
}

fn export_error(e: ExportError) -> Response {
    match e {
        ExportError::BadCursor(_) | ExportError::CursorOffRecord(_) => {
            error(StatusCode::BAD_REQUEST, e)
        }
        ExportError::Io { .. } => {
            tracing::error!(error = %e, "usage export failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, e)
        }
    }
}

pub async fn export(
    State(state): State<AdminState>,
    params: Result<Query<ExportParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(p) = match params {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let filter = match (|| -> Result<Filter, String> {
        Ok(Filter {
            tenant: p.tenant.clone(),
            model: p.model.clone(),
            from_ms: p
                .from
                .as_deref()
                .map(|v| instant_ms("from", v))
                .transpose()?,
            to_ms: p.to.as_deref().map(|v| instant_ms("to", v)).transpose()?,
        })
    })() {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let (limit, after) = match page_bounds(p.limit, p.cursor.as_deref()) {
        Ok(bounds) => bounds,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let format = p.format.unwrap_or_default();
    if format == Format::Json {
        return error(
            StatusCode::BAD_REQUEST,
            "format: export is jsonl, csv or cloudevents",
        );
    }
    let reader = state.ledger.clone();
    let page = match tokio::task::spawn_blocking(move || reader.page(after, &filter, limit)).await {
        Ok(Ok(page)) => page,
        Ok(Err(e)) => return export_error(e),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let body = match format {
        Format::Jsonl | Format::Json => jsonl(&page),
        Format::Csv => csv_rows(&page),
        Format::Cloudevents => cloudevents(&page, &state.source),
    };
    let (content_type, body) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    if let Some(next) = page.next
        && let Ok(v) = HeaderValue::from_str(&next.to_string())
    {
        response.headers_mut().insert(NEXT_CURSOR, v);
    }
    response
}

pub async fn invoice(
    State(state): State<AdminState>,
    params: Result<Query<InvoiceParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(p) = match params {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let month = match month_start(&p.month) {
        Ok(m) => m,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let reader = state.ledger.clone();
    let tenant = p.tenant.clone();
    let invoice = match tokio::task::spawn_blocking(move || reader.invoice(&tenant, month)).await {
        Ok(Ok(inv)) => inv,
        Ok(Err(e)) => return export_error(e),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    match p.format.unwrap_or(Format::Json) {
        Format::Json => axum::Json(invoice).into_response(),
        Format::Csv => match invoice_csv(&invoice, p.by.unwrap_or_default()) {
            Ok(body) => ([(header::CONTENT_TYPE, CSV)], body).into_response(),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        },
        Format::Jsonl | Format::Cloudevents => {
            error(StatusCode::BAD_REQUEST, "format: invoice is json or csv")
        }
    }
}

const CSV: &str = "text/csv; charset=utf-8";

type Body = Result<(&'static str, Vec<u8>), String>;

/// A record as exported: the ledger fields, its RFC 3339 time, the exact
/// USD decimal, and the cursor just past it.
#[derive(Serialize)]
struct ExportRecord<'a> {
    cursor: String,
    time: String,
    ts_ms: i64,
    tenant: &'a str,
    model: &'a str,
    pool: &'a str,
    request_id: &'a str,
    lease: &'a str,
    outcome: &'a str,
    prompt_tokens: u64,
    cached_tokens: u64,
    completion_tokens: u64,
    reserved_tokens: u64,
    usd_nanos: u64,
    usd: String,
    reserved_usd_nanos: u64,
}

impl<'a> ExportRecord<'a> {
    fn new(cursor: Cursor, r: &'a LedgerRecord) -> Self {
        Self {
            cursor: cursor.to_string(),
            time: clock::rfc3339(r.ts_ms),
            ts_ms: r.ts_ms,
            tenant: &r.tenant,
            model: &r.model,
            pool: &r.pool,
            request_id: &r.request_id,
            lease: &r.lease,
            outcome: &r.outcome,
            prompt_tokens: r.prompt_tokens,
            cached_tokens: r.cached_tokens,
            completion_tokens: r.completion_tokens,
            reserved_tokens: r.reserved_tokens,
            usd_nanos: r.usd_nanos,
            usd: usd_decimal(r.usd_nanos),
            reserved_usd_nanos: r.reserved_usd_nanos,
        }
    }
}

fn jsonl(page: &Page) -> Body {
    let mut out = Vec::new();
    for (cursor, r) in &page.records {
        serde_json::to_writer(&mut out, &ExportRecord::new(*cursor, r))
            .map_err(|e| e.to_string())?;
        out.push(b'\n');
    }
    Ok(("application/x-ndjson", out))
}

fn csv_rows(page: &Page) -> Body {
    let mut w = csv::Writer::from_writer(Vec::new());
    if page.records.is_empty() {
        // The header alone, so an empty page still parses with its columns.
        w.write_record(CSV_COLUMNS).map_err(|e| e.to_string())?;
    }
    for (cursor, r) in &page.records {
        w.serialize(ExportRecord::new(*cursor, r))
            .map_err(|e| e.to_string())?;
    }
    Ok((CSV, w.into_inner().map_err(|e| e.to_string())?))
}

const CSV_COLUMNS: [&str; 16] = [
    "cursor",
    "time",
    "ts_ms",
    "tenant",
    "model",
    "pool",
    "request_id",
    "lease",
    "outcome",
    "prompt_tokens",
    "cached_tokens",
    "completion_tokens",
    "reserved_tokens",
    "usd_nanos",
    "usd",
    "reserved_usd_nanos",
];

/// A CloudEvents 1.0 event in structured JSON form.
#[derive(Serialize)]
struct CloudEvent<'a> {
    specversion: &'static str,
    id: String,
    source: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    subject: &'a str,
    time: String,
    datacontenttype: &'static str,
    data: ExportRecord<'a>,
}

pub const EVENT_TYPE: &str = "io.llm-gateway.usage.v1";

fn cloudevents(page: &Page, source: &str) -> Body {
    let events: Vec<CloudEvent<'_>> = page
        .records
        .iter()
        .map(|(cursor, r)| CloudEvent {
            specversion: "1.0",
            id: cursor.to_string(),
            source,
            kind: EVENT_TYPE,
            subject: &r.tenant,
            time: clock::rfc3339(r.ts_ms),
            datacontenttype: "application/json",
            data: ExportRecord::new(*cursor, r),
        })
        .collect();
    let body = serde_json::to_vec(&events).map_err(|e| e.to_string())?;
    Ok(("application/cloudevents-batch+json", body))
}

#[derive(Serialize)]
struct InvoiceRow<'a> {
    tenant: &'a str,
    month: &'a str,
    /// Empty on month rows and on the total.
    day: &'a str,
    model: &'a str,
    requests: u64,
    prompt_tokens: u64,
    cached_tokens: u64,
    completion_tokens: u64,
    usd_nanos: u64,
    usd: &'a str,
    usd_cents: u64,
    reserved_usd_nanos: u64,
}

/// One row per model (or per day and model), then a `TOTAL` row: the
/// rows above the total always sum to it.
fn invoice_csv(inv: &Invoice, by: Period) -> Result<Vec<u8>, String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let rows: Vec<(&str, &str, &InvoiceLine)> = match by {
        Period::Month => inv
            .models
            .iter()
            .map(|m| ("", m.model.as_str(), &m.line))
            .collect(),
        Period::Day => inv
            .days
            .iter()
            .map(|d| (d.day.as_str(), d.model.as_str(), &d.line))
            .collect(),
    };
    for (day, model, l) in rows.into_iter().chain([("", "TOTAL", &inv.total)]) {
        w.serialize(InvoiceRow {
            tenant: &inv.tenant,
            month: &inv.month,
            day,
            model,
            requests: l.requests,
            prompt_tokens: l.prompt_tokens,
            cached_tokens: l.cached_tokens,
            completion_tokens: l.completion_tokens,
            usd_nanos: l.usd_nanos,
            usd: &l.usd,
            usd_cents: l.usd_cents,
            reserved_usd_nanos: l.reserved_usd_nanos,
        })
        .map_err(|e| e.to_string())?;
    }
    w.into_inner().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn period_and_month_parameters() {
        assert_eq!(instant_ms("from", "2026-03-01").unwrap(), 1_772_323_200_000);
        assert_eq!(
            instant_ms("from", "2026-03-01T00:00:01.5Z").unwrap(),
            1_772_323_201_500
        );
        let e = instant_ms("to", "yesterday").unwrap_err();
        assert!(e.starts_with("to:"), "{e}");
        assert_eq!(
            month_start("2026-03").unwrap(),
            files::parse_day("2026-03-01").unwrap()
        );
        for bad in ["2026-3", "2026-03-01", "2026-13", "march"] {
            assert!(month_start(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn csv_columns_match_the_record() {
        let r = LedgerRecord {
            ts_ms: 0,
            tenant: "a,b".into(),
            model: "m".into(),
            usd_nanos: 1,
            usd: 0.0,
            prompt_tokens: 1,
            completion_tokens: 2,
            cached_tokens: 3,
            lease: "l".into(),
            outcome: "completed".into(),
            request_id: "r\"1".into(),
            pool: "p".into(),
            reserved_usd_nanos: 4,
            reserved_tokens: 5,
        };
        let cursor = Cursor {
            day: files::parse_day("2026-01-01").unwrap(),
            offset: 9,
        };
        let full = Page {
            records: vec![(cursor, r)],
            next: Some(cursor),
        };
        let (_, body) = csv_rows(&full).unwrap();
        let mut rd = csv::Reader::from_reader(body.as_slice());
        let header: Vec<String> = rd.headers().unwrap().iter().map(str::to_owned).collect();
        assert_eq!(header, CSV_COLUMNS);
        let row = rd.records().next().unwrap().unwrap();
        assert_eq!(&row[0], "2026-01-01:9");
        assert_eq!(&row[1], "1970-01-01T00:00:00Z");
        assert_eq!(&row[3], "a,b");
        assert_eq!(&row[6], "r\"1");
        let (_, empty) = csv_rows(&Page::default()).unwrap();
        let mut rd = csv::Reader::from_reader(empty.as_slice());
        assert_eq!(rd.headers().unwrap().len(), CSV_COLUMNS.len());
    }
}
