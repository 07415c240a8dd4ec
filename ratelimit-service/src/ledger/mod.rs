//! The spend ledger: append-only files of settled charges, one JSON object
//! per line, one file per UTC day (`<data-dir>/spend-ledger-YYYY-MM-DD.jsonl`,
//! see [`files`]). Each record is written before Complete answers; at start
//! the current month's files are replayed to rebuild the budget counters. A
//! SIGKILL therefore loses no charge that Complete acknowledged.
//!
//! Durability modes (`--fsync`):
//! - `batch` (default), group commit: a writer thread gathers the records
//!   that arrive within [`BATCH_WINDOW`], writes them and issues one
//!   `fdatasync` for all; each Complete waits for the sync covering its
//!   record. Cost: up to 10 ms plus one sync of added Complete latency, and
//!   throughput bounded by records per sync, not syncs per second. No
//!   request waits for it: the gateway reports after the response.
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
//! so no Complete was acknowledged for it) is cut off at open. Readers
//! ([`export`]) see only what has been synced.

pub mod export;
pub mod files;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use time::Date;
use tokio::sync::oneshot;

use crate::clock::{self, Periods};
use crate::limits::{Nanos, model_scope, tenant_scope};
use crate::storage::SpendTotal;
use files::{Durable, DurableMark};

pub use export::LedgerReader;

/// How long the group-commit writer waits for more records after the first.
/// Each batch costs one `fdatasync`; at 2 ms, `perf` put the syncs of the
/// ledger and the audit trail at a sixth of the service's samples under
/// load, and 10 ms (with the audit's 20) took 7 to 13 µs off the service's
/// ~70 per request in side-by-side runs (bench/README.md). The wait
/// delays only the answer to a Complete (sent after the response), never a
/// request, and a charge is still acknowledged only once it is synced.
pub const BATCH_WINDOW: Duration = Duration::from_millis(10);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum FsyncMode {
    /// One fdatasync per record.
    Always,
    /// Group commit: one fdatasync per batch of records (10 ms window).
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
    /// The gateway's `x-request-id`, to join the charge to access logs.
    /// (Absent in records written before it was added.)
    #[serde(default)]
    pub request_id: String,
    #[serde(default)]
    pub pool: String,
    /// What admission reserved: the upper-bound cost and tokens (prompt
    /// estimate + max_tokens), for reserved-versus-actual reports.
    #[serde(default)]
    pub reserved_usd_nanos: Nanos,
    #[serde(default)]
    pub reserved_tokens: u64,
}

#[derive(Debug, Error)]
pub enum LedgerError {
    #[error("spend ledger {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "spend ledger: both {legacy} and {dated} exist; merge them by hand (append the first to the second, oldest first) and remove {legacy}"
    )]
    LegacyClash { legacy: PathBuf, dated: PathBuf },
    #[error("spend ledger writer has stopped")]
    Closed,
}

/// What replay found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replay {
    /// Records read (the files of the current month).
    pub records: usize,
    /// Bytes of a torn final line that were cut off.
    pub truncated_bytes: u64,
    /// Settled spend per scope in the periods of `now` (older periods do
    /// not count against any budget).
    pub totals: Vec<SpendTotal>,
}

struct Job {
    day: Date,
    line: Vec<u8>,
    done: oneshot::Sender<std::io::Result<()>>,
}

/// Appends records; cheap to clone (a channel to the writer thread).
#[derive(Clone)]
pub struct Ledger {
    tx: mpsc::Sender<Job>,
    dir: PathBuf,
    durable: DurableMark,
}

impl Ledger {
    /// Opens (creating) the ledger in `dir`, replays it for the budget
    /// periods of `now_ms`, and starts the writer thread.
    pub fn open(dir: &Path, mode: FsyncMode, now_ms: i64) -> Result<(Self, Replay), LedgerError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LedgerError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        migrate_legacy(dir)?;
        let days = files::list(dir).map_err(io(dir))?;
        let replay = replay(dir, &days, now_ms)?;
        let durable = match days.last() {
            Some(&day) => {
                let path = files::path(dir, day);
                let len = std::fs::metadata(&path).map_err(io(&path))?.len();
                Some(Durable { day, len })
            }
            None => None,
        };
        let durable = DurableMark::new(durable);
        let (tx, rx) = mpsc::channel();
        let files = DayFiles {
            dir: dir.to_path_buf(),
            current: None,
            durable: durable.clone(),
        };
        std::thread::Builder::new()
            .name("spend-ledger".into())
            .spawn(move || writer(files, rx, mode))
            .map_err(io(dir))?;
        Ok((
            Self {
                tx,
                dir: dir.to_path_buf(),
                durable,
            },
            replay,
        ))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads what has been synced, for exports and invoices.
    pub fn reader(&self) -> LedgerReader {
        LedgerReader::new(self.dir.clone(), self.durable.clone())
    }

    /// Appends `record` and waits until it is on disk.
    pub async fn append(&self, record: &LedgerRecord) -> Result<(), LedgerError> {
        let mut line = serde_json::to_vec(record).map_err(|e| LedgerError::Io {
            path: self.dir.clone(),
            source: e.into(),
        })?;
        line.push(b'\n');
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Job {
                day: files::day_of(record.ts_ms),
                line,
                done,
            })
            .map_err(|_| LedgerError::Closed)?;
        wait.await
            .map_err(|_| LedgerError::Closed)?
            .map_err(|source| LedgerError::Io {
                path: self.dir.clone(),
                source,
            })
    }
}

/// Renames the single pre-rotation file to the day of its newest record,
/// which keeps the rule that file D holds nothing later than D. Its torn
/// tail, if any, is cut first.
fn migrate_legacy(dir: &Path) -> Result<(), LedgerError> {
    let legacy = dir.join(files::LEGACY_FILE);
    let io = |source| LedgerError::Io {
        path: legacy.clone(),
        source,
    };
    let mut file = match OpenOptions::new().read(true).write(true).open(&legacy) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(e)),
    };
    let mut newest: Option<Date> = None;
    read_records(&mut file, true, |rec| {
        let day = files::day_of(rec.ts_ms);
        newest = Some(newest.map_or(day, |n| n.max(day)));
    })
    .map_err(io)?;
    drop(file);
    let Some(day) = newest else {
        return std::fs::remove_file(&legacy).map_err(io);
    };
    let dated = files::path(dir, day);
    if dated.exists() {
        return Err(LedgerError::LegacyClash { legacy, dated });
    }
    std::fs::rename(&legacy, &dated).map_err(io)?;
    tracing::info!(from = %legacy.display(), to = %dated.display(), "spend ledger moved to daily files");
    Ok(())
}

/// Reads every whole record of `file`, calling `visit` for each. With
/// `cut_torn_tail`, a final line without its newline (never synced, never
/// acknowledged) is cut off. Returns (records, bytes cut).
fn read_records(
    file: &mut File,
    cut_torn_tail: bool,
    mut visit: impl FnMut(LedgerRecord),
) -> std::io::Result<(usize, u64)> {
    let mut records = 0;
    let (ControlFlow::Continue(good_len) | ControlFlow::Break(good_len)) =
        read_lines(BufReader::new(&mut *file), 0, |_, rec| {
            records += 1;
            visit(rec);
            ControlFlow::Continue(())
        })?;
    let len = file.seek(SeekFrom::End(0))?;
    if cut_torn_tail && len > good_len {
        file.set_len(good_len)?;
        file.sync_data()?;
        return Ok((records, len - good_len));
    }
    Ok((records, 0))
}

/// The one reader of the ledger's line format, for replay and export alike:
/// calls `visit` with each whole record of `reader` (positioned at byte
/// `start` of its file) and the offset just past it. A final line without its
/// newline (torn, or not synced yet) is not a record; an unreadable line is
/// logged and skipped. Returns `Break(offset past the record visit broke on)`
/// or `Continue(offset past the last whole line)`.
pub(crate) fn read_lines<T: serde::de::DeserializeOwned>(
    mut reader: impl BufRead,
    start: u64,
    mut visit: impl FnMut(u64, T) -> ControlFlow<()>,
) -> std::io::Result<ControlFlow<u64, u64>> {
    let mut offset = start;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            return Ok(ControlFlow::Continue(offset));
        }
        offset += n as u64;
        match serde_json::from_slice::<T>(&line) {
            Ok(record) => {
                if visit(offset, record).is_break() {
                    return Ok(ControlFlow::Break(offset));
                }
            }
            Err(_) => tracing::warn!(
                offset = offset - n as u64,
                "skipping unreadable ledger line"
            ),
        }
    }
}

/// Replays the files that can hold records of `now`'s month (file D holds
/// nothing later than D, so files before the month's first day cannot) and
/// cuts a torn tail off the newest file, the only one a crash can leave
/// mid-write.
fn replay(dir: &Path, days: &[Date], now_ms: i64) -> Result<Replay, LedgerError> {
    let now = Periods::at(now_ms);
    let month_start = clock::utc_date(now_ms).replace_day(1).unwrap_or(Date::MIN);
    let newest = days.last().copied();
    let mut totals: HashMap<(String, String), Nanos> = HashMap::new();
    let mut out = Replay::default();
    for &day in days
        .iter()
        .filter(|&&d| d >= month_start || Some(d) == newest)
    {
        let path = files::path(dir, day);
        let io = |source| LedgerError::Io {
            path: path.clone(),
            source,
        };
        let is_newest = Some(day) == newest;
        let mut file = OpenOptions::new()
            .read(true)
            .write(is_newest)
            .open(&path)
            .map_err(io)?;
        let (records, cut) = read_records(&mut file, is_newest, |rec| {
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
        })
        .map_err(io)?;
        out.records += records;
        out.truncated_bytes += cut;
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

/// The writer's open file: the newest day it has written.
struct DayFiles {
    dir: PathBuf,
    current: Option<(Date, File, u64)>,
    durable: DurableMark,
}

impl DayFiles {
    /// The file a record of `day` goes to: its day's, or the current one if
    /// that is newer (never back to an older file, see [`files`]).
    fn for_day(&mut self, day: Date) -> std::io::Result<&mut (Date, File, u64)> {
        let floor = self
            .current
            .as_ref()
            .map(|c| c.0)
            .or_else(|| self.durable.get().map(|d| d.day));
        let day = floor.map_or(day, |f| f.max(day));
        if self.current.as_ref().is_some_and(|c| c.0 != day) {
            // Moving on: what the old file got is synced before it is left.
            if let Some((_, old, _)) = self.current.take() {
                old.sync_data()?;
            }
        }
        if self.current.is_none() {
            let file = OpenOptions::new()
                .append(true)
                .create(true)
                .open(files::path(&self.dir, day))?;
            let mut len = file.metadata()?.len();
            // After a failed write, bytes past the last sync belong to
            // records that were refused (their Completes got the error):
            // cut them, or a partial line would swallow the next record. A
            // file newer than the mark was created by this writer and never
            // synced, so none of it was acknowledged.
            let synced = match self.durable.get() {
                Some(mark) if mark.day == day => mark.len,
                _ => 0,
            };
            if len > synced {
                file.set_len(synced)?;
                len = synced;
            }
            self.current = Some((day, file, len));
        }
        self.current
            .as_mut()
            .ok_or_else(|| std::io::Error::other("ledger file not open"))
    }

    /// Appends whole lines of `day` in one write: a crash leaves at most a
    /// torn last line, as with one write per line, for one system call per
    /// batch instead of one per record.
    fn write(&mut self, day: Date, lines: &[u8]) -> std::io::Result<()> {
        let (_, file, len) = self.for_day(day)?;
        file.write_all(lines)?;
        *len += lines.len() as u64;
        Ok(())
    }

    /// Writes `batch`, each run of records of one day at once.
    fn write_batch(&mut self, batch: &[Job]) -> std::io::Result<()> {
        let mut lines = Vec::new();
        for run in batch.chunk_by(|a, b| a.day == b.day) {
            let Some(first) = run.first() else { continue };
            lines.clear();
            for job in run {
                lines.extend_from_slice(&job.line);
            }
            self.write(first.day, &lines)?;
        }
        Ok(())
    }

    /// Syncs the current file and lets readers see up to its end.
    fn sync(&mut self) -> std::io::Result<()> {
        if let Some((day, file, len)) = &self.current {
            file.sync_data()?;
            self.durable.set(Durable {
                day: *day,
                len: *len,
            });
        }
        Ok(())
    }
}

/// The writer thread: owns the files, exits when every [`Ledger`] is dropped.
fn writer(mut files: DayFiles, rx: mpsc::Receiver<Job>, mode: FsyncMode) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        if mode == FsyncMode::Batch {
            // Sleep through the window rather than wait on the channel:
            // a waiting receiver is woken by every send, a sleeping one by
            // none, and under load those wake-ups cost more than the sync.
            std::thread::sleep(BATCH_WINDOW);
            batch.extend(rx.try_iter());
        }
        let result = files.write_batch(&batch).and_then(|()| files.sync());
        if result.is_err() {
            // The file's length is no longer known for sure (a write may
            // have been partial): reopen it on the next batch.
            files.current = None;
        }
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
            request_id: String::new(),
            pool: String::new(),
            reserved_usd_nanos: 0,
            reserved_tokens: 0,
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
            // Every record went to today's file: the writer never goes back.
            assert_eq!(files::list(dir.path()).unwrap(), [files::day_of(NOW)]);
            let path = files::path(dir.path(), files::day_of(NOW));
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

    #[tokio::test]
    async fn replay_reads_only_this_months_files() {
        let dir = tempfile::tempdir().unwrap();
        let last_month = NOW - 40 * 86_400_000;
        {
            let (ledger, _) = Ledger::open(dir.path(), FsyncMode::Batch, last_month).unwrap();
            ledger.append(&record("acme", 5, last_month)).await.unwrap();
        }
        // Last month's file is unreadable: replay must not need it.
        let old = files::path(dir.path(), files::day_of(last_month));
        let (ledger, replay) = Ledger::open(dir.path(), FsyncMode::Batch, NOW).unwrap();
        assert_eq!(
            replay.records, 1,
            "the newest file is read for its torn tail"
        );
        ledger.append(&record("acme", 3, NOW)).await.unwrap();
        drop(ledger);
        std::fs::write(&old, "not json\n").unwrap();
        let (_, replay) = Ledger::open(dir.path(), FsyncMode::Batch, NOW).unwrap();
        assert_eq!(replay.records, 1);
        assert_eq!(total(&replay, "t/acme", "m2025-03"), 3);
    }

    #[tokio::test]
    async fn the_single_file_of_older_versions_becomes_a_day_file() {
        let dir = tempfile::tempdir().unwrap();
        let lines: String = [NOW - 86_400_000, NOW]
            .iter()
            .map(|&ts| serde_json::to_string(&record("acme", 4, ts)).unwrap() + "\n")
            .collect();
        let legacy = dir.path().join(files::LEGACY_FILE);
        std::fs::write(&legacy, lines + r#"{"torn"#).unwrap();
        let (ledger, replay) = Ledger::open(dir.path(), FsyncMode::Batch, NOW).unwrap();
        assert!(!legacy.exists());
        // Named after its newest record, so it holds nothing later than its day.
        assert_eq!(files::list(dir.path()).unwrap(), [files::day_of(NOW)]);
        assert_eq!(replay.records, 2);
        assert_eq!(total(&replay, "t/acme", "m2025-03"), 8);
        ledger.append(&record("acme", 1, NOW)).await.unwrap();
        let page = ledger
            .reader()
            .page(None, &export::Filter::default(), 10)
            .unwrap();
        assert_eq!(page.records.len(), 3);

        // Both forms present (a downgrade and upgrade): refuse to guess.
        std::fs::write(
            &legacy,
            serde_json::to_string(&record("acme", 4, NOW)).unwrap() + "\n",
        )
        .unwrap();
        assert!(matches!(
            Ledger::open(dir.path(), FsyncMode::Batch, NOW),
            Err(LedgerError::LegacyClash { .. })
        ));
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
