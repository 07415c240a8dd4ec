//! The spend ledger: an append-only file of settled charges
//! (`<data-dir>/spend-ledger.jsonl`, one JSON object per line), written
//! before Complete answers and replayed at start to rebuild the budget
//! counters. A SIGKILL therefore loses no charge that Complete acknowledged.
//!
//! Durability modes (`--fsync`):
//! - `batch` (default), group commit: a writer thread gathers the records
//!   that arrive within [`BATCH_WINDOW`], writes them and issues one
//!   `fdatasync` for all; each Complete waits for the sync covering its
//!   record. Cost: up to 2 ms plus one sync of added Complete latency, and
//!   throughput bounded by records per sync, not syncs per second.
//! - `always`: one `fdatasync` per record before the next is written. Cost:
//!   Completes queue behind each other's sync (0.05-2 ms on local NVMe,
//!   2-10 ms on network disks), capping throughput at 1/sync-latency.
//!
//! Not in the ledger: reservations of requests in flight when the process
//! dies. Their leases are lost with the process and nothing is charged for
//! them (the request may have been served: a bounded, documented loss in
//! the tenant's favour).
//!
//! A torn last line (the process died mid-write, before the sync returned,
//! so no Complete was acknowledged for it) is cut off at open.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::oneshot;

use crate::clock::Periods;
use crate::limits::{Nanos, model_scope, tenant_scope};
use crate::storage::SpendTotal;

pub const LEDGER_FILE: &str = "spend-ledger.jsonl";

/// How long the group-commit writer waits for more records after the first.
pub const BATCH_WINDOW: Duration = Duration::from_millis(2);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum FsyncMode {
    /// One fdatasync per record.
    Always,
    /// Group commit: one fdatasync per batch of records (2 ms window).
    #[default]
    Batch,
}

/// One settled charge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerRecord {
    pub ts_ms: i64,
    pub tenant: String,
    pub model: String,
    /// The charge; `usd` is the same amount for people reading the file.
    pub usd_nanos: Nanos,
    pub usd: f64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
    pub lease: String,
    /// completed, client_cancelled, upstream_error, unknown, expired.
    pub outcome: String,
}

#[derive(Debug, Error)]
pub enum LedgerError {
    #[error("spend ledger {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("spend ledger writer has stopped")]
    Closed,
}

/// What replay found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replay {
    pub records: usize,
    /// Bytes of a torn final line that were cut off.
    pub truncated_bytes: u64,
    /// Settled spend per scope in the periods of `now` (older periods do
    /// not count against any budget).
    pub totals: Vec<SpendTotal>,
}

struct Job {
    line: Vec<u8>,
    done: oneshot::Sender<std::io::Result<()>>,
}

/// Appends records; cheap to clone (a channel to the writer thread).
#[derive(Clone)]
pub struct Ledger {
    tx: mpsc::Sender<Job>,
    path: PathBuf,
}

impl Ledger {
    /// Opens (creating) the ledger in `dir`, replays it for the budget
    /// periods of `now_ms`, and starts the writer thread.
    pub fn open(dir: &Path, mode: FsyncMode, now_ms: i64) -> Result<(Self, Replay), LedgerError> {
        let path = dir.join(LEDGER_FILE);
        let io = |source| LedgerError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io)?;
        let replay = replay(&mut file, now_ms).map_err(io)?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("spend-ledger".into())
            .spawn(move || writer(file, rx, mode))
            .map_err(io)?;
        Ok((Self { tx, path }, replay))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `record` and waits until it is on disk.
    pub async fn append(&self, record: &LedgerRecord) -> Result<(), LedgerError> {
        let mut line = serde_json::to_vec(record).map_err(|e| LedgerError::Io {
            path: self.path.clone(),
            source: e.into(),
        })?;
        line.push(b'\n');
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Job { line, done })
            .map_err(|_| LedgerError::Closed)?;
        wait.await
            .map_err(|_| LedgerError::Closed)?
            .map_err(|source| LedgerError::Io {
                path: self.path.clone(),
                source,
            })
    }
}

fn replay(file: &mut File, now_ms: i64) -> std::io::Result<Replay> {
    let now = Periods::at(now_ms);
    let mut totals: HashMap<(String, String), Nanos> = HashMap::new();
    let mut out = Replay::default();
    let mut reader = BufReader::new(&mut *file);
    let mut good_len = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        if line.last() != Some(&b'\n') {
            // Torn tail: never synced, never acknowledged.
            break;
        }
        good_len += n as u64;
        let Ok(rec) = serde_json::from_slice::<LedgerRecord>(&line) else {
            tracing::warn!(
                offset = good_len - n as u64,
                "skipping unreadable ledger line"
            );
            continue;
        };
        out.records += 1;
        let p = Periods::at(rec.ts_ms);
        for period in [p.day, p.month] {
            if period != now.day && period != now.month {
                continue;
            }
            for scope in [
                tenant_scope(&rec.tenant),
                model_scope(&rec.tenant, &rec.model),
            ] {
                *totals.entry((scope, period.clone())).or_default() += rec.usd_nanos;
            }
        }
    }
    drop(reader);
    let len = file.seek(SeekFrom::End(0))?;
    if len > good_len {
        file.set_len(good_len)?;
        file.sync_data()?;
        out.truncated_bytes = len - good_len;
    }
    out.totals = totals
        .into_iter()
        .map(|((scope, period), nanos)| SpendTotal {
            scope,
            period,
            nanos,
        })
        .collect();
    out.totals
        .sort_by(|a, b| (&a.scope, &a.period).cmp(&(&b.scope, &b.period)));
    Ok(out)
}

/// The writer thread: owns the file, exits when every [`Ledger`] is dropped.
fn writer(mut file: File, rx: mpsc::Receiver<Job>, mode: FsyncMode) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        if mode == FsyncMode::Batch {
            let until = Instant::now() + BATCH_WINDOW;
            while let Some(left) = until.checked_duration_since(Instant::now()) {
                match rx.recv_timeout(left) {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
        }
        let result = batch
            .iter()
            .try_for_each(|job| file.write_all(&job.line))
            .and_then(|()| file.sync_data());
        for job in batch {
            let r = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
            };
            // The waiter may have gone (Complete cancelled): the record is
            // written regardless.
            let _ = job.done.send(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(tenant: &str, nanos: Nanos, ts_ms: i64) -> LedgerRecord {
        LedgerRecord {
            ts_ms,
            tenant: tenant.into(),
            model: "m".into(),
            usd_nanos: nanos,
            usd: nanos as f64 / 1e9,
            prompt_tokens: 10,
            completion_tokens: 5,
            cached_tokens: 0,
            lease: "l".into(),
            outcome: "completed".into(),
        }
    }

    fn total(replay: &Replay, scope: &str, period: &str) -> Nanos {
        replay
            .totals
            .iter()
            .find(|t| t.scope == scope && t.period == period)
            .map_or(0, |t| t.nanos)
    }

    // 2025-03-15T12:00:00Z
    const NOW: i64 = 1_742_040_000_000;

    #[tokio::test]
    async fn replay_after_crash_loses_no_acknowledged_charge() {
        for mode in [FsyncMode::Always, FsyncMode::Batch] {
            let dir = tempfile::tempdir().unwrap();
            let (ledger, replay) = Ledger::open(dir.path(), mode, NOW).unwrap();
            assert_eq!(replay.records, 0);
            let writes = (0..20).map(|i| {
                let ledger = ledger.clone();
                async move { ledger.append(&record("acme", 1_000 + i, NOW)).await }
            });
            for r in spawn_all(writes).await {
                r.unwrap();
            }
            ledger
                .append(&record("globex", 7, NOW - 86_400_000))
                .await
                .unwrap();
            ledger
                .append(&record("acme", 5, NOW - 40 * 86_400_000))
                .await
                .unwrap();
            // No clean shutdown: drop the handle (as SIGKILL would) and add a
            // torn half-record, as a write cut short by the kill leaves.
            drop(ledger);
            let path = dir.path().join(LEDGER_FILE);
            let mut f = OpenOptions::new().append(true).open(&path).unwrap();
            f.write_all(br#"{"ts_ms":1742040000000,"tenant":"acme","#)
                .unwrap();
            drop(f);

            let (ledger, replay) = Ledger::open(dir.path(), mode, NOW).unwrap();
            assert_eq!(replay.records, 22);
            assert!(replay.truncated_bytes > 0);
            let acme_today: Nanos = (0..20).map(|i| 1_000 + i).sum();
            assert_eq!(total(&replay, "t/acme", "d2025-03-15"), acme_today);
            assert_eq!(total(&replay, "m/acme/m", "m2025-03"), acme_today);
            // Yesterday counts for the month only; last month not at all.
            assert_eq!(total(&replay, "t/globex", "d2025-03-15"), 0);
            assert_eq!(total(&replay, "t/globex", "m2025-03"), 7);
            // Appending after the cut continues on a clean line.
            ledger.append(&record("acme", 1, NOW)).await.unwrap();
            drop(ledger);
            let (_, replay) = Ledger::open(dir.path(), mode, NOW).unwrap();
            assert_eq!(replay.records, 23);
            assert_eq!(replay.truncated_bytes, 0);
            assert_eq!(total(&replay, "t/acme", "d2025-03-15"), acme_today + 1);
        }
    }

    async fn spawn_all<F>(futs: impl Iterator<Item = F>) -> Vec<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let handles: Vec<_> = futs.map(tokio::spawn).collect();
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap());
        }
        out
    }
}
