//! The trail's files: `<root>/<tenant>/audit-YYYY-MM-DD.jsonl`, one line per
//! record, plain JSON or a sealed line ([`super::seal`]).
//!
//! As in the spend ledger, the writer never goes back to an older file of a
//! tenant, so a reader's cursor (`YYYY-MM-DD:<offset>`, the ledger's
//! [`Cursor`]) that has moved on to a newer file has missed nothing.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Seek, SeekFrom, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use time::Date;

use super::seal::{SealedLine, TenantKey};
use super::{AuditError, AuditRecord, tenant_dir};
use crate::ledger::export::Cursor;
use crate::ledger::{files as days, read_lines};

const PREFIX: &str = "audit-";
/// Open files kept by the writer; past it all are closed (a deployment
/// with more active tenants than this reopens some per batch).
const MAX_OPEN: usize = 256;

fn file_name(day: Date) -> String {
    days::day_file_name(PREFIX, day)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.to_owned(),
        source,
    }
}

struct Open {
    day: Date,
    file: File,
    /// Lines appended since the last sync, written at once before it.
    pending: Vec<u8>,
    dirty: bool,
}

/// The writer's side: one open file per tenant, the newest it wrote.
pub struct Partitions {
    root: PathBuf,
    open: HashMap<String, Open>,
}

impl Partitions {
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            open: HashMap::new(),
        }
    }

    /// Appends `record` to its tenant's file of its day (or the newest
    /// file written, if later), sealed under `key` when given.
    pub fn append(
        &mut self,
        record: &AuditRecord,
        key: Option<&TenantKey>,
    ) -> Result<(), AuditError> {
        let dir = tenant_dir(&self.root, &record.tenant)?;
        let day = days::day_of(record.ts_ms);
        let day = match self.open.get(&record.tenant) {
            Some(open) if open.day >= day => open.day,
            _ => {
                // Moving on to a newer file: what the old one got is written
                // and synced before it is left.
                if let Some(mut old) = self.open.remove(&record.tenant) {
                    old.flush().map_err(io(&dir))?;
                }
                if self.open.len() >= MAX_OPEN {
                    self.sync()?;
                    self.open.clear();
                }
                let day = newest(&dir)?.map_or(day, |newest| newest.max(day));
                fs::create_dir_all(&dir).map_err(io(&dir))?;
                let path = dir.join(file_name(day));
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(io(&path))?;
                self.open.insert(
                    record.tenant.clone(),
                    Open {
                        day,
                        file,
                        pending: Vec::new(),
                        dirty: false,
                    },
                );
                day
            }
        };
        let plain = serde_json::to_vec(record).map_err(|e| AuditError::Io {
            path: dir.clone(),
            source: e.into(),
        })?;
        let mut line = match key {
            None => plain,
            Some(key) => {
                let sealed = key.seal(&record.tenant, &days::format_day(day), &plain)?;
                serde_json::to_vec(&sealed).map_err(|e| AuditError::Io {
                    path: dir.clone(),
                    source: e.into(),
                })?
            }
        };
        line.push(b'\n');
        let Some(open) = self.open.get_mut(&record.tenant) else {
            return Ok(());
        };
        // Whole lines, written together at the next sync (one system call
        // per batch): a crash leaves at most a torn last line, which
        // readers skip.
        open.pending.extend_from_slice(&line);
        open.dirty = true;
        Ok(())
    }

    /// Writes and syncs every file appended to since the last sync.
    pub fn sync(&mut self) -> Result<(), AuditError> {
        for (tenant, open) in self.open.iter_mut().filter(|(_, o)| o.dirty) {
            open.flush().map_err(io(&self.root.join(tenant)))?;
        }
        Ok(())
    }
}

impl Open {
    /// Writes the pending lines and syncs them.
    fn flush(&mut self) -> std::io::Result<()> {
        let written = self.file.write_all(&self.pending);
        // Lines that did not make it are not retried: a partial write may
        // have left part of them, and a retry would tear the file.
        self.pending.clear();
        written?;
        self.file.sync_data()?;
        self.dirty = false;
        Ok(())
    }
}

/// The days that have a file in one tenant's partition, oldest first.
fn list(dir: &Path) -> Result<Vec<Date>, AuditError> {
    match days::list_days(dir, PREFIX) {
        Ok(days) => Ok(days),
        // A tenant with no record yet has no partition.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io(dir)(e)),
    }
}

fn newest(dir: &Path) -> Result<Option<Date>, AuditError> {
    Ok(list(dir)?.last().copied())
}

/// A line as stored: sealed, or a plain record.
#[derive(Deserialize)]
#[serde(untagged)]
enum Line {
    Sealed(SealedLine),
    Plain(Box<AuditRecord>),
}

/// One page of a tenant's trail.
#[derive(Debug, Default)]
pub struct Page {
    pub records: Vec<(Cursor, AuditRecord)>,
    /// Where the next page starts (`None` only when the partition is empty
    /// and no cursor was given).
    pub next: Option<Cursor>,
    /// Sealed lines that did not open (wrong or missing key, or altered).
    pub unreadable: usize,
}

/// Reads one tenant's trail: up to `limit` records of days `from..=to`,
/// after `after`. Only `tenant`'s partition is opened. Blocking file IO.
pub fn read(
    root: &Path,
    tenant: &str,
    key: Option<&TenantKey>,
    (from, to): (Option<Date>, Option<Date>),
    after: Option<Cursor>,
    limit: usize,
) -> Result<Page, AuditError> {
    let dir = tenant_dir(root, tenant)?;
    let mut page = Page {
        next: after,
        ..Page::default()
    };
    for day in list(&dir)? {
        if from.is_some_and(|f| day < f) || after.is_some_and(|a| day < a.day) {
            continue;
        }
        if to.is_some_and(|t| day > t) {
            break;
        }
        let day_text = days::format_day(day);
        let path = dir.join(file_name(day));
        let mut file = File::open(&path).map_err(io(&path))?;
        let start = after.filter(|a| a.day == day).map_or(0, |a| a.offset);
        file.seek(SeekFrom::Start(start)).map_err(io(&path))?;
        let end = read_lines(BufReader::new(file), start, |offset, line: Line| {
            let record = match line {
                Line::Plain(record) => Some(*record),
                Line::Sealed(sealed) => key
                    .and_then(|k| k.open(tenant, &day_text, &sealed).ok())
                    .and_then(|plain| serde_json::from_slice(&plain).ok()),
            };
            match record {
                Some(record) => page.records.push((Cursor { day, offset }, record)),
                None => page.unreadable += 1,
            }
            if page.records.len() >= limit {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .map_err(io(&path))?;
        let (ControlFlow::Break(offset) | ControlFlow::Continue(offset)) = end;
        page.next = Some(Cursor { day, offset });
        if end.is_break() {
            break;
        }
    }
    Ok(page)
}

/// Deletes every day file older than its tenant's retention: a file of day
/// D goes once D is `retention_days` days before `today`. `retention` gives
/// a partition's days (tenants no longer in the registry included).
/// Returns the files deleted.
pub fn sweep(
    root: &Path,
    today: Date,
    retention: impl Fn(&str) -> u32,
) -> Result<usize, AuditError> {
    let entries = match fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io(root)(e)),
    };
    let mut deleted = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(tenant) = name.to_str() else {
            continue;
        };
        let Ok(dir) = tenant_dir(root, tenant) else {
            continue;
        };
        let keep = i64::from(retention(tenant));
        for day in list(&dir)? {
            if (today - day).whole_days() >= keep {
                let path = dir.join(file_name(day));
                fs::remove_file(&path).map_err(io(&path))?;
                deleted += 1;
            }
        }
    }
    Ok(deleted)
}

/// Runs [`sweep`] at start and every `interval` until aborted; a tenant
/// no longer in the registry keeps the default retention.
pub async fn sweep_forever(
    root: PathBuf,
    registry: crate::reload::SharedRegistry,
    interval: std::time::Duration,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (root, registry) = (root.clone(), registry.current());
        let swept = tokio::task::spawn_blocking(move || {
            let today = crate::clock::utc_date(crate::clock::now_ms());
            sweep(&root, today, |tenant| {
                registry.tenant(tenant).map_or_else(
                    || tenant_registry::AuditPolicy::default().retention_days,
                    |t| t.audit().retention_days,
                )
            })
        })
        .await;
        match swept {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(files = n, "audit files past retention deleted"),
            Ok(Err(e)) => tracing::warn!(error = %e, "audit retention sweep failed"),
            Err(e) => tracing::warn!(error = %e, "audit retention sweep failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use time::macros::date;

    use super::*;
    use crate::audit::seal::MasterKey;
    use crate::clock::midnight_ms;

    fn record(tenant: &str, day: Date, n: u64) -> AuditRecord {
        AuditRecord {
            tenant: tenant.into(),
            ts_ms: midnight_ms(day) + 1000,
            request_id: format!("r{n}"),
            prompt_tokens: n,
            ..AuditRecord::default()
        }
    }

    #[test]
    fn each_tenant_reads_its_own_partition_only_and_pages_resume() {
        let root = tempfile::tempdir().unwrap();
        let mut p = Partitions::new(root.path().into());
        let d1 = date!(2026 - 11 - 27);
        let d2 = date!(2026 - 11 - 28);
        for n in 0..5 {
            p.append(&record("acme", if n < 2 { d1 } else { d2 }, n), None)
                .unwrap();
            p.append(&record("globex", d2, 100 + n), None).unwrap();
        }
        p.sync().unwrap();
        let first = read(root.path(), "acme", None, (None, None), None, 3).unwrap();
        let ids: Vec<_> = first
            .records
            .iter()
            .map(|(_, r)| r.request_id.as_str())
            .collect();
        assert_eq!(ids, ["r0", "r1", "r2"]);
        let rest = read(root.path(), "acme", None, (None, None), first.next, 10).unwrap();
        let ids: Vec<_> = rest
            .records
            .iter()
            .map(|(_, r)| r.request_id.as_str())
            .collect();
        assert_eq!(ids, ["r3", "r4"]);
        assert!(rest.records.iter().all(|(_, r)| r.tenant == "acme"));
        let only_d1 = read(root.path(), "acme", None, (None, Some(d1)), None, 10).unwrap();
        assert_eq!(only_d1.records.len(), 2);
        assert!(read(root.path(), "../acme", None, (None, None), None, 10).is_err());
    }

    #[test]
    fn sealed_lines_open_with_the_tenants_key_only() {
        let root = tempfile::tempdir().unwrap();
        let master = MasterKey::from_bytes([3; 32]);
        let key = master.tenant_key("acme");
        let mut p = Partitions::new(root.path().into());
        let mut r = record("acme", date!(2026 - 11 - 28), 1);
        r.request_id = "visible-only-when-opened".into();
        p.append(&r, Some(&key)).unwrap();
        p.sync().unwrap();
        let raw = fs::read_to_string(root.path().join("acme/audit-2026-11-28.jsonl")).unwrap();
        assert!(!raw.contains("visible-only"), "{raw}");
        let page = read(root.path(), "acme", Some(&key), (None, None), None, 10).unwrap();
        assert_eq!(page.records[0].1, r);
        let wrong = master.tenant_key("globex");
        let page = read(root.path(), "acme", Some(&wrong), (None, None), None, 10).unwrap();
        assert_eq!((page.records.len(), page.unreadable), (0, 1));
    }

    #[test]
    fn sweep_keeps_each_tenants_retention() {
        let root = tempfile::tempdir().unwrap();
        let today = date!(2026 - 11 - 28);
        for back in [40i64, 7, 6, 0] {
            let day = today - time::Duration::days(back);
            let mut p1 = Partitions::new(root.path().into());
            p1.append(&record("short", day, 0), None).unwrap();
            let mut p2 = Partitions::new(root.path().into());
            p2.append(&record("long", day, 0), None).unwrap();
        }
        let deleted = sweep(root.path(), today, |t| if t == "short" { 7 } else { 30 }).unwrap();
        assert_eq!(deleted, 2 + 1);
        assert_eq!(
            list(&root.path().join("short")).unwrap(),
            [today - time::Duration::days(6), today]
        );
        assert_eq!(list(&root.path().join("long")).unwrap().len(), 3);
    }

    #[test]
    fn the_writer_never_goes_back_to_an_older_day() {
        let root = tempfile::tempdir().unwrap();
        let mut p = Partitions::new(root.path().into());
        p.append(&record("acme", date!(2026 - 11 - 28), 1), None)
            .unwrap();
        p.append(&record("acme", date!(2026 - 11 - 27), 2), None)
            .unwrap();
        assert_eq!(
            list(&root.path().join("acme")).unwrap(),
            [date!(2026 - 11 - 28)]
        );
    }
}
