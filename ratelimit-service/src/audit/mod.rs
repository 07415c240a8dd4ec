//! The audit trail: one record per request, in the tenant's own partition.
//!
//! A record says who asked (tenant, credential id, never the secret), what
//! (model, pool, SHA-256 of the request body), what came back (replica,
//! status, SHA-256 of the response body, tokens, cost, TTFT, duration) and
//! when. Content is never kept unless the tenant opted into prompt logging;
//! then the prompt is redacted ([`redact`]) before it is written.
//!
//! Records are handed to one writer thread over a bounded channel (a full
//! channel makes settlement wait rather than drop a record) and written to
//! `<dir>/<tenant>/audit-YYYY-MM-DD.jsonl`, sealed with the tenant's key when
//! its policy says so ([`seal`]). Each batch (the records of [`WINDOW`]) is
//! fsynced before the next. Day files past the tenant's retention are
//! deleted by [`files::sweep`].

pub mod files;
pub mod redact;
pub mod seal;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tenant_registry::AuditPolicy;
use thiserror::Error;
use tokio::sync::mpsc;

use crate::metrics::Metrics;
use crate::reload::SharedRegistry;
use files::Partitions;
use redact::Redactor;
use seal::{MasterKey, SealError};

/// Records waiting for the writer before settlement waits for it.
const QUEUE: usize = 8192;
/// Records written between two fsyncs, at most.
const BATCH: usize = 512;
/// How long the writer lets records gather after the first of a batch.
/// Each batch costs one `fdatasync`, the writer's largest cost; nothing
/// waits for it, and a crash loses at most this window's records (plus the
/// queue, which no window changes).
const WINDOW: std::time::Duration = std::time::Duration::from_millis(20);

#[derive(Debug, Error)]
pub enum AuditError {
    #[error("tenant {0:?} is not an audit partition")]
    BadTenant(String),
    #[error("tenant {0} requires encryption and no --audit-key-file is set")]
    NoKey(String),
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error("audit trail {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One request, as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// RFC 3339, UTC, milliseconds.
    pub ts: String,
    pub ts_ms: i64,
    pub request_id: String,
    pub tenant: String,
    /// `api_key:<key id>`, `jwt:<issuer>` or `mtls:<SPIFFE ID>`.
    pub credential: String,
    pub model: String,
    pub pool: String,
    /// The replica that served it (`host:port`); empty when none did.
    pub replica: String,
    /// The status the client was answered with (0: none was).
    pub http_status: u32,
    /// `completed`, `client_cancelled`, `upstream_error`,
    /// `upstream_rejected`, `expired`, or `rejected`.
    pub outcome: String,
    /// Why admission refused (`tokens_per_minute`, …); empty otherwise.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
    /// Exact charge, as in the spend ledger.
    pub usd: String,
    pub ttft_ms: u64,
    pub duration_ms: u64,
    /// Lower-case hex; empty when there was no body.
    pub request_sha256: String,
    pub response_sha256: String,
    /// The request body as sent to the pool, redacted; only for tenants
    /// that log prompts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prompt_truncated: bool,
}

/// A record on its way to the writer, with the raw prompt when one was
/// captured (redacted by the writer, off the request path).
#[derive(Debug)]
pub struct Entry {
    pub record: AuditRecord,
    pub prompt: Option<Vec<u8>>,
}

/// The handle settlement and admission write through; cheap to clone.
#[derive(Clone)]
pub struct AuditTrail {
    tx: mpsc::Sender<Entry>,
    registry: SharedRegistry,
}

impl AuditTrail {
    /// Starts the writer thread over `dir`. It stops once every handle is
    /// dropped and the queue is drained.
    pub fn start(
        dir: PathBuf,
        key: Option<MasterKey>,
        registry: SharedRegistry,
        metrics: Arc<Metrics>,
    ) -> Result<(Self, std::thread::JoinHandle<()>), AuditError> {
        std::fs::create_dir_all(&dir).map_err(|source| AuditError::Io {
            path: dir.clone(),
            source,
        })?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let writer = Writer {
            partitions: Partitions::new(dir),
            key,
            registry: registry.clone(),
            metrics,
            redactors: HashMap::new(),
        };
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|source| AuditError::Io {
                path: PathBuf::from("audit-writer thread"),
                source,
            })?;
        Ok((Self { tx, registry }, thread))
    }

    /// Bytes of the request body the filter should send back for `tenant`'s
    /// trail (0: it does not log prompts).
    pub fn prompt_bytes(&self, tenant: &str) -> u32 {
        self.registry
            .current()
            .tenant(tenant)
            .filter(|t| t.audit().log_prompts && t.audit().retention_days > 0)
            .map_or(0, |t| t.audit().max_prompt_bytes)
    }

    /// Queues a record; waits while the writer is a full queue behind.
    pub async fn write(&self, entry: Entry) {
        if self.tx.send(entry).await.is_err() {
            tracing::error!("audit writer has stopped; record lost");
        }
    }
}

/// Owns the files; runs on its own thread.
struct Writer {
    partitions: Partitions,
    key: Option<MasterKey>,
    registry: SharedRegistry,
    metrics: Arc<Metrics>,
    /// Compiled redaction rules per tenant, with the policy they came from
    /// (recompiled when a reload changes it).
    redactors: HashMap<String, (AuditPolicy, Redactor)>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Entry>) {
        let mut batch = Vec::with_capacity(BATCH);
        while let Some(first) = rx.blocking_recv() {
            batch.push(first);
            // Let the records of the next few milliseconds gather before
            // writing: a writer blocked on the queue is woken by every
            // record, one that sleeps by none, and each batch costs a sync.
            // Nothing waits on the sync (settlement only queues).
            std::thread::sleep(WINDOW);
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(entry) => batch.push(entry),
                    Err(_) => break,
                }
            }
            for entry in batch.drain(..) {
                let tenant = entry.record.tenant.clone();
                if let Err(e) = self.write(entry) {
                    self.metrics.audit_errors.inc();
                    tracing::error!(error = %e, tenant = %tenant, "audit record not written");
                }
            }
            if let Err(e) = self.partitions.sync() {
                self.metrics.audit_errors.inc();
                tracing::error!(error = %e, "audit trail not synced");
            }
        }
    }

    fn write(&mut self, entry: Entry) -> Result<(), AuditError> {
        let Entry { mut record, prompt } = entry;
        let policy = self
            .registry
            .current()
            .tenant(&record.tenant)
            .map(|t| t.audit().clone())
            .unwrap_or_default();
        if policy.retention_days == 0 {
            return Ok(());
        }
        if let Some(prompt) = prompt.filter(|_| policy.log_prompts) {
            let redacted = self
                .redactor(&record.tenant, &policy)
                .redact(&prompt, record.prompt_truncated);
            for (kind, n) in &redacted.counts {
                self.metrics
                    .audit_redactions
                    .get_or_create(&crate::metrics::KindLabel {
                        kind: (*kind).to_owned(),
                    })
                    .inc_by(u64::from(*n));
            }
            record.prompt = Some(redacted.text);
        } else {
            record.prompt_truncated = false;
        }
        let key = match (policy.encrypt, &self.key) {
            (false, _) => None,
            (true, Some(master)) => Some(master.tenant_key(&record.tenant)),
            (true, None) => return Err(AuditError::NoKey(record.tenant)),
        };
        self.partitions.append(&record, key.as_ref())?;
        self.metrics
            .audit_records
            .get_or_create(&Metrics::tenant(&record.tenant))
            .inc();
        Ok(())
    }

    fn redactor(&mut self, tenant: &str, policy: &AuditPolicy) -> &Redactor {
        let slot = self
            .redactors
            .entry(tenant.to_owned())
            .or_insert_with(|| (policy.clone(), Redactor::new(policy)));
        if slot.0 != *policy {
            *slot = (policy.clone(), Redactor::new(policy));
        }
        &slot.1
    }
}

/// Where a tenant's partition lives; refuses names that are not tenant
/// ids (a hostile `../ledger` must not read another directory).
pub fn tenant_dir(root: &Path, tenant: &str) -> Result<PathBuf, AuditError> {
    if tenant_registry::valid_id(tenant) {
        Ok(root.join(tenant))
    } else {
        Err(AuditError::BadTenant(tenant.chars().take(80).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_tenant_ids_only() {
        let root = Path::new("/audit");
        assert_eq!(tenant_dir(root, "acme").unwrap(), root.join("acme"));
        for bad in ["", ".", "..", "../ledger", "a/b", "a\\b", "a\0"] {
            assert!(tenant_dir(root, bad).is_err(), "{bad:?}");
        }
    }
}
