//! `tenantctl usage`: ratelimit-service's usage export and invoices over its
//! admin API, for billing jobs run from cron or CI.
//!
//! `export --cursor-file F` resumes where the last run stopped: after each
//! page is written to the output and flushed, the page's `x-next-cursor`
//! replaces F (write to a temporary file, then rename). A run killed between
//! the two writes the last page again on the next run; each record carries
//! its `cursor`, so a consumer that keeps the highest cursor it loaded drops
//! those repeats.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum UsageError {
    #[error("{url}: {source}")]
    Http {
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },
    #[error("{url}: HTTP {status}: {body}")]
    Refused {
        url: String,
        status: u16,
        body: String,
    },
    #[error("cursor file {path}: {source}")]
    CursorFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("writing the export: {0}")]
    Output(#[source] std::io::Error),
    #[error("{url}: the answer is not a CloudEvents batch: {source}")]
    NotABatch {
        url: String,
        #[source]
        source: serde_json::Error,
    },
}

/// The largest answer read: a full export page is about 40 MB.
const MAX_BODY: u64 = 256 << 20;

/// The admin API of one ratelimit-service replica.
pub struct AdminApi {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

/// What an export asks for (`None`: no filter).
#[derive(Debug, Clone, Default)]
pub struct ExportQuery {
    pub tenant: Option<String>,
    pub model: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    /// jsonl, csv or cloudevents.
    pub format: String,
    pub page_size: usize,
}

impl AdminApi {
    pub fn new(base: &str, token: Option<String>) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(120)))
            .http_status_as_error(false)
            .build()
            .into();
        Self {
            base: base.trim_end_matches('/').to_owned(),
            token,
            agent,
        }
    }

    /// GETs `path` with `query`; the body and the `x-next-cursor` header.
    fn get(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<(String, Option<String>), UsageError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.agent.get(&url);
        for (k, v) in query {
            req = req.query(k, v);
        }
        if let Some(t) = &self.token {
            req = req.header("authorization", &format!("Bearer {t}"));
        }
        let http = |source| UsageError::Http {
            url: url.clone(),
            source: Box::new(source),
        };
        let mut resp = req.call().map_err(http)?;
        let status = resp.status().as_u16();
        let next = resp
            .headers()
            .get("x-next-cursor")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // A full page is up to 100k records: past ureq's 10 MB default.
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_string()
            .map_err(http)?;
        if status != 200 {
            return Err(UsageError::Refused {
                url,
                status,
                body: body.trim().to_owned(),
            });
        }
        Ok((body, next))
    }

    /// Pages through the export from the cursor in `cursor_file` (or the
    /// start), writing records to `out`; returns how many were written.
    /// CSV gets one header line; CloudEvents come out one event per line.
    pub fn export(
        &self,
        q: &ExportQuery,
        cursor_file: Option<&Path>,
        out: &mut dyn Write,
    ) -> Result<usize, UsageError> {
        let mut cursor = match cursor_file {
            Some(p) => read_cursor(p)?,
            None => None,
        };
        let page_size = q.page_size.to_string();
        let mut written = 0;
        let mut header_written = false;
        loop {
            let mut query: Vec<(&str, &str)> =
                vec![("format", q.format.as_str()), ("limit", page_size.as_str())];
            for (k, v) in [
                ("tenant", &q.tenant),
                ("model", &q.model),
                ("from", &q.from),
                ("to", &q.to),
                ("cursor", &cursor),
            ] {
                if let Some(v) = v {
                    query.push((k, v.as_str()));
                }
            }
            let (body, next) = self.get("/admin/usage/export", &query)?;
            let records = match q.format.as_str() {
                "csv" => {
                    let mut lines = body.split_inclusive('\n');
                    let header = lines.next().unwrap_or_default();
                    if !header_written {
                        out.write_all(header.as_bytes())
                            .map_err(UsageError::Output)?;
                        header_written = true;
                    }
                    let rows: String = lines.collect();
                    out.write_all(rows.as_bytes()).map_err(UsageError::Output)?;
                    // Rows may hold quoted newlines: count records, not lines.
                    csv::Reader::from_reader(body.as_bytes()).records().count()
                }
                "cloudevents" => {
                    let events: Vec<serde_json::Value> =
                        serde_json::from_str(&body).map_err(|source| UsageError::NotABatch {
                            url: format!("{}/admin/usage/export", self.base),
                            source,
                        })?;
                    for e in &events {
                        writeln!(out, "{e}").map_err(UsageError::Output)?;
                    }
                    events.len()
                }
                _ => {
                    out.write_all(body.as_bytes()).map_err(UsageError::Output)?;
                    body.lines().count()
                }
            };
            out.flush().map_err(UsageError::Output)?;
            written += records;
            if let (Some(p), Some(n)) = (cursor_file, &next) {
                write_cursor(p, n)?;
            }
            if next.is_some() {
                cursor = next;
            }
            if records < q.page_size {
                return Ok(written);
            }
        }
    }

    /// One tenant's invoice for `month` (`YYYY-MM`), as json or csv, its
    /// CSV rows `by` month (one per model) or day (per day and model).
    pub fn invoice(
        &self,
        tenant: &str,
        month: &str,
        format: &str,
        by: &str,
    ) -> Result<String, UsageError> {
        let (body, _) = self.get(
            "/admin/usage/invoice",
            &[
                ("tenant", tenant),
                ("month", month),
                ("format", format),
                ("by", by),
            ],
        )?;
        Ok(body)
    }
}

fn read_cursor(path: &Path) -> Result<Option<String>, UsageError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s.trim().to_owned()).filter(|s| !s.is_empty())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(UsageError::CursorFile {
            path: path.display().to_string(),
            source,
        }),
    }
}

fn write_cursor(path: &Path, cursor: &str) -> Result<(), UsageError> {
    let err = |source| UsageError::CursorFile {
        path: path.display().to_string(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(err)?;
    writeln!(f, "{cursor}").map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}
