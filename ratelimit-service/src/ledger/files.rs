//! The ledger's files: one per UTC day, `spend-ledger-YYYY-MM-DD.jsonl`.
//!
//! A record goes to the file of its day, except that the writer never goes
//! back to an older file: a record stamped 23:59:59.999 that reaches the
//! writer after midnight joins the new day's file. So a file grows only
//! while it is the newest, file D holds records of day D and earlier (never
//! later), and an export cursor that has moved on to a newer file can have
//! missed nothing behind it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use time::{Date, Month};

use crate::clock;

/// The single file of versions before daily rotation; renamed at open.
pub const LEGACY_FILE: &str = "spend-ledger.jsonl";
const PREFIX: &str = "spend-ledger-";
const SUFFIX: &str = ".jsonl";

pub fn file_name(day: Date) -> String {
    day_file_name(PREFIX, day)
}

/// `<prefix>YYYY-MM-DD.jsonl`: a day file of the ledger or the audit trail.
pub fn day_file_name(prefix: &str, day: Date) -> String {
    format!("{prefix}{}{SUFFIX}", format_day(day))
}

pub fn path(dir: &Path, day: Date) -> PathBuf {
    dir.join(file_name(day))
}

/// `YYYY-MM-DD`.
pub fn format_day(day: Date) -> String {
    format!(
        "{:04}-{:02}-{:02}",
        day.year(),
        u8::from(day.month()),
        day.day()
    )
}

/// Parses `YYYY-MM-DD` strictly (no signs, no short fields).
pub fn parse_day(s: &str) -> Option<Date> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let year = i32::try_from(digits(0..4)?).ok()?;
    let month = Month::try_from(u8::try_from(digits(5..7)?).ok()?).ok()?;
    let day = u8::try_from(digits(8..10)?).ok()?;
    Date::from_calendar_date(year, month, day).ok()
}

/// The day a record stamped `ts_ms` belongs to.
pub fn day_of(ts_ms: i64) -> Date {
    clock::utc_date(ts_ms)
}

/// The days that have a ledger file in `dir`, oldest first.
pub fn list(dir: &Path) -> io::Result<Vec<Date>> {
    list_days(dir, PREFIX)
}

/// The days that have a `<prefix>YYYY-MM-DD.jsonl` file in `dir`, oldest
/// first.
pub fn list_days(dir: &Path, prefix: &str) -> io::Result<Vec<Date>> {
    let mut days: Vec<Date> = fs::read_dir(dir)?
        .filter_map(|entry| {
            let name = entry.ok()?.file_name();
            let name = name.to_str()?;
            parse_day(name.strip_prefix(prefix)?.strip_suffix(SUFFIX)?)
        })
        .collect();
    days.sort_unstable();
    Ok(days)
}

/// The newest file and how many of its bytes are on disk. Readers stop
/// there, so an export never hands out a record that a crash before the
/// sync could still take back; files older than `day` are complete, and a
/// file newer than `day` has nothing synced yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Durable {
    pub day: Date,
    pub len: u64,
}

/// Shared between the writer thread (which moves it forward after each
/// sync) and readers.
#[derive(Debug, Clone, Default)]
pub struct DurableMark(Arc<Mutex<Option<Durable>>>);

impl DurableMark {
    pub fn new(initial: Option<Durable>) -> Self {
        Self(Arc::new(Mutex::new(initial)))
    }

    pub fn get(&self) -> Option<Durable> {
        // A poisoned lock still holds a valid mark: it is a plain Copy value.
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set(&self, mark: Durable) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(mark);
    }

    /// How far a reader may read the file of `day`: all of an older file,
    /// the synced part of the newest, nothing of a file newer than that.
    pub fn readable(&self, day: Date, file_len: u64) -> u64 {
        match self.get() {
            Some(d) if day < d.day => file_len,
            Some(d) if day == d.day => d.len.min(file_len),
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_names_round_trip_and_reject_near_misses() {
        let d = Date::from_calendar_date(2026, Month::February, 3).unwrap();
        assert_eq!(file_name(d), "spend-ledger-2026-02-03.jsonl");
        assert_eq!(parse_day("2026-02-03"), Some(d));
        for bad in [
            "2026-2-03",
            "2026-02-3x",
            "+026-02-03",
            "2026-13-01",
            "2026-02-30",
            "2026/02/03",
            "",
        ] {
            assert_eq!(parse_day(bad), None, "{bad}");
        }
    }

    #[test]
    fn listing_sees_only_day_files_in_order() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "spend-ledger-2026-03-02.jsonl",
            "spend-ledger-2026-02-28.jsonl",
            "spend-ledger.jsonl",
            "spend-ledger-2026-03-01.jsonl.tmp",
            "notes.txt",
        ] {
            fs::write(dir.path().join(name), "").unwrap();
        }
        let days: Vec<String> = list(dir.path())
            .unwrap()
            .into_iter()
            .map(format_day)
            .collect();
        assert_eq!(days, ["2026-02-28", "2026-03-02"]);
    }
}
