//! Reading the ledger back for billing: pages of records after a cursor
//! (so a billing job resumes exactly where it stopped) and monthly invoices.
//!
//! A [`Cursor`] is a position in the ledger, `YYYY-MM-DD:<byte offset>`:
//! the day file and the offset just past a record. Files only grow while
//! they are the newest and the writer never returns to an older one
//! ([`super::files`]), so "every record after this position" is a stable
//! set: reading again from the same cursor returns the same records, plus
//! any written since, never one twice. Readers stop at the synced end
//! ([`DurableMark`]), so nothing a crash could take back is handed out.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::str::FromStr;

use serde::Serialize;
use thiserror::Error;
use time::Date;

use super::files::{self, DurableMark};
use super::{LedgerRecord, read_lines};
use crate::clock;
use crate::limits::Nanos;

/// Most records one export page may ask for.
pub const MAX_PAGE: usize = 100_000;
/// Records per page when the caller does not say.
pub const DEFAULT_PAGE: usize = 10_000;

/// A position in the ledger: just past one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    pub day: Date,
    pub offset: u64,
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", files::format_day(self.day), self.offset)
    }
}

impl FromStr for Cursor {
    type Err = ExportError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ExportError::BadCursor(s.chars().take(64).collect());
        let (day, offset) = s.split_once(':').ok_or_else(bad)?;
        Ok(Self {
            day: files::parse_day(day).ok_or_else(bad)?,
            offset: offset.parse().map_err(|_| bad())?,
        })
    }
}

#[derive(Debug, Error)]
pub enum ExportError {
    #[error("cursor {0:?} is not a ledger position (expected YYYY-MM-DD:<offset>, as returned)")]
    BadCursor(String),
    #[error("cursor {0} does not point at a record boundary")]
    CursorOffRecord(Cursor),
    #[error("spend ledger {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Which records a page or an invoice covers. Times are Unix ms, `from`
/// inclusive, `to` exclusive.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub tenant: Option<String>,
    pub model: Option<String>,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
}

impl Filter {
    fn matches(&self, r: &LedgerRecord) -> bool {
        self.tenant.as_ref().is_none_or(|t| *t == r.tenant)
            && self.model.as_ref().is_none_or(|m| *m == r.model)
            && self.from_ms.is_none_or(|f| r.ts_ms >= f)
            && self.to_ms.is_none_or(|t| r.ts_ms < t)
    }

    /// Files before this day cannot hold a record at or after `from_ms`
    /// (a record of day X is in file X or a later one).
    fn first_day(&self) -> Option<Date> {
        self.from_ms.map(clock::utc_date)
    }
}

/// One page of an export.
#[derive(Debug, Default)]
pub struct Page {
    /// Each record with the cursor just past it.
    pub records: Vec<(Cursor, LedgerRecord)>,
    /// Where the next page starts: past the last record returned when the
    /// page is full, else past everything synced so far. `None` only while
    /// the ledger is empty and no cursor was given.
    pub next: Option<Cursor>,
}

/// Reads the synced part of the ledger; cheap to clone.
#[derive(Debug, Clone)]
pub struct LedgerReader {
    dir: PathBuf,
    durable: DurableMark,
}

impl LedgerReader {
    pub(crate) fn new(dir: PathBuf, durable: DurableMark) -> Self {
        Self { dir, durable }
    }

    /// Up to `limit` records matching `filter`, after `after` (or from the
    /// start of the filter's period). Blocking file IO: call it from a
    /// blocking context.
    pub fn page(
        &self,
        after: Option<Cursor>,
        filter: &Filter,
        limit: usize,
    ) -> Result<Page, ExportError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let mut records = Vec::new();
        let end = self.scan(after, filter.first_day(), |cursor, record| {
            if filter.matches(&record) {
                records.push((cursor, record));
                if records.len() == limit {
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        })?;
        Ok(Page {
            records,
            next: end.or(after),
        })
    }

    /// One tenant's charges of one calendar month, per model.
    pub fn invoice(&self, tenant: &str, month: Date) -> Result<Invoice, ExportError> {
        let month = month.replace_day(1).unwrap_or(month);
        let next = clock::next_month_start(month);
        let filter = Filter {
            tenant: Some(tenant.to_owned()),
            model: None,
            from_ms: Some(clock::midnight_ms(month)),
            to_ms: next.map(clock::midnight_ms),
        };
        let mut lines: BTreeMap<String, InvoiceLine> = BTreeMap::new();
        let mut days: BTreeMap<(Date, String), InvoiceLine> = BTreeMap::new();
        let as_of = self.scan(None, filter.first_day(), |_, r| {
            if filter.matches(&r) {
                let one = InvoiceLine::of(&r);
                lines.entry(r.model.clone()).or_default().add(&one);
                days.entry((clock::utc_date(r.ts_ms), r.model.clone()))
                    .or_default()
                    .add(&one);
            }
            ControlFlow::Continue(())
        })?;
        let mut total = InvoiceLine::default();
        for line in lines.values() {
            total.add(line);
        }
        let month_ended = next.is_some_and(|n| clock::utc_date(clock::now_ms()) >= n);
        Ok(Invoice {
            tenant: tenant.to_owned(),
            month: format!("{:04}-{:02}", month.year(), u8::from(month.month())),
            complete: month_ended,
            as_of: as_of.map(|c| c.to_string()),
            models: lines
                .into_iter()
                .map(|(model, line)| ModelLine {
                    model,
                    line: line.priced(),
                })
                .collect(),
            days: days
                .into_iter()
                .map(|((day, model), line)| DayLine {
                    day: files::format_day(day),
                    model,
                    line: line.priced(),
                })
                .collect(),
            total: total.priced(),
        })
    }

    /// Visits every synced record after `after` (or in files from
    /// `first_day` on), in ledger order, with the cursor just past it.
    /// Returns the position reached: past the last record visited when
    /// `visit` breaks, else the synced end.
    fn scan(
        &self,
        after: Option<Cursor>,
        first_day: Option<Date>,
        mut visit: impl FnMut(Cursor, LedgerRecord) -> ControlFlow<()>,
    ) -> Result<Option<Cursor>, ExportError> {
        let io = |path: PathBuf| move |source| ExportError::Io { path, source };
        let days = files::list(&self.dir).map_err(io(self.dir.clone()))?;
        let start_day = match (after, first_day) {
            (Some(c), _) => Some(c.day),
            (None, d) => d,
        };
        let mut reached = None;
        for day in days
            .into_iter()
            .filter(|d| start_day.is_none_or(|s| *d >= s))
        {
            let path = files::path(&self.dir, day);
            let mut file = File::open(&path).map_err(io(path.clone()))?;
            let len = file.metadata().map_err(io(path.clone()))?.len();
            let readable = self.durable.readable(day, len);
            let start = match after {
                Some(c) if c.day == day => c.offset,
                _ => 0,
            };
            if start > readable {
                // Past the synced end: nothing new here yet. (A cursor
                // beyond the file itself is not one this ledger gave out.)
                if start > len {
                    return Err(ExportError::CursorOffRecord(Cursor { day, offset: start }));
                }
                reached = Some(Cursor { day, offset: start });
                continue;
            }
            if start > 0 {
                file.seek(SeekFrom::Start(start - 1))
                    .map_err(io(path.clone()))?;
                let mut before = [0u8];
                file.read_exact(&mut before).map_err(io(path.clone()))?;
                if before[0] != b'\n' {
                    return Err(ExportError::CursorOffRecord(Cursor { day, offset: start }));
                }
            }
            let reader = BufReader::new(file).take(readable - start);
            match read_lines(reader, start, |offset, record| {
                visit(Cursor { day, offset }, record)
            })
            .map_err(io(path.clone()))?
            {
                ControlFlow::Break(offset) => return Ok(Some(Cursor { day, offset })),
                ControlFlow::Continue(end) if end > start => {
                    reached = Some(Cursor { day, offset: end });
                }
                ControlFlow::Continue(_) => {}
            }
            if readable < len {
                // The rest of the newest file is not synced yet.
                break;
            }
        }
        Ok(reached.or(after))
    }
}

/// Sums for one model (or the total) of an invoice.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct InvoiceLine {
    pub requests: u64,
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    pub completion_tokens: u64,
    /// Exact: the sum of the records' integer nano-dollars.
    pub usd_nanos: Nanos,
    /// The same amount as a decimal string, never rounded.
    pub usd: String,
    /// Rounded half-up to the cent, for the invoice's face.
    pub usd_cents: u64,
    /// What admission reserved for these requests (upper bound).
    pub reserved_usd_nanos: Nanos,
}

impl InvoiceLine {
    /// One record's contribution (not priced: see [`Self::priced`]).
    fn of(r: &LedgerRecord) -> Self {
        Self {
            requests: 1,
            prompt_tokens: r.prompt_tokens,
            cached_tokens: r.cached_tokens,
            completion_tokens: r.completion_tokens,
            usd_nanos: r.usd_nanos,
            reserved_usd_nanos: r.reserved_usd_nanos,
            ..Self::default()
        }
    }

    /// Adds the counters of `o`; the decimal and cents are derived once, by
    /// [`Self::priced`], not per record.
    fn add(&mut self, o: &InvoiceLine) {
        self.requests += o.requests;
        self.prompt_tokens += o.prompt_tokens;
        self.cached_tokens += o.cached_tokens;
        self.completion_tokens += o.completion_tokens;
        self.usd_nanos += o.usd_nanos;
        self.reserved_usd_nanos += o.reserved_usd_nanos;
    }

    fn priced(mut self) -> Self {
        self.usd = usd_decimal(self.usd_nanos);
        self.usd_cents = self.usd_nanos.saturating_add(5_000_000) / 10_000_000;
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelLine {
    pub model: String,
    #[serde(flatten)]
    pub line: InvoiceLine,
}

/// One model's charges on one UTC day of the month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DayLine {
    /// `YYYY-MM-DD`.
    pub day: String,
    pub model: String,
    #[serde(flatten)]
    pub line: InvoiceLine,
}

/// One tenant's month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Invoice {
    pub tenant: String,
    /// `YYYY-MM` (UTC).
    pub month: String,
    /// Whether the month is over; until then the invoice is a running one.
    pub complete: bool,
    /// The ledger position the invoice was computed up to.
    pub as_of: Option<String>,
    pub models: Vec<ModelLine>,
    /// The same charges per day and model (they sum to `models`).
    pub days: Vec<DayLine>,
    pub total: InvoiceLine,
}

/// Nano-dollars as an exact decimal string: `1234500` is `"0.0012345"`.
pub fn usd_decimal(nanos: Nanos) -> String {
    let frac = format!("{:09}", nanos % 1_000_000_000);
    let frac = frac.trim_end_matches('0');
    let whole = nanos / 1_000_000_000;
    if frac.is_empty() {
        format!("{whole}")
    } else {
        format!("{whole}.{frac}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{FsyncMode, Ledger};

    // 2026-03-31T23:59:59.000Z and the next morning.
    const EVENING: i64 = 1_775_001_599_000;
    const MORNING: i64 = EVENING + 8 * 3_600_000;

    fn record(tenant: &str, model: &str, nanos: Nanos, ts_ms: i64) -> LedgerRecord {
        LedgerRecord {
            ts_ms,
            tenant: tenant.into(),
            model: model.into(),
            usd_nanos: nanos,
            usd: nanos as f64 / 1e9,
            prompt_tokens: 10,
            completion_tokens: 5,
            cached_tokens: 2,
            lease: format!("l{nanos}"),
            outcome: "completed".into(),
            request_id: String::new(),
            pool: "latency".into(),
            reserved_usd_nanos: nanos * 2,
            reserved_tokens: 100,
        }
    }

    fn all(reader: &LedgerReader, after: Option<Cursor>, filter: &Filter) -> Vec<Nanos> {
        let mut out = Vec::new();
        let mut cursor = after;
        loop {
            let page = reader.page(cursor, filter, 2).unwrap();
            let n = page.records.len();
            out.extend(page.records.iter().map(|(_, r)| r.usd_nanos));
            assert!(page.next >= cursor, "cursors only move forward");
            cursor = page.next;
            if n < 2 {
                return out;
            }
        }
    }

    #[tokio::test]
    async fn pages_resume_exactly_across_day_files() {
        let dir = tempfile::tempdir().unwrap();
        let (ledger, _) = Ledger::open(dir.path(), FsyncMode::Batch, EVENING).unwrap();
        let reader = ledger.reader();
        assert!(
            reader
                .page(None, &Filter::default(), 10)
                .unwrap()
                .next
                .is_none()
        );
        for (i, ts) in [EVENING, EVENING, MORNING, MORNING, MORNING]
            .iter()
            .enumerate()
        {
            let tenant = if i % 2 == 0 { "acme" } else { "globex" };
            ledger
                .append(&record(tenant, "m", 1 + i as u64, *ts))
                .await
                .unwrap();
        }
        // A late record of yesterday joins today's file: never back.
        ledger
            .append(&record("acme", "m", 6, EVENING))
            .await
            .unwrap();
        assert_eq!(
            files::list(dir.path()).unwrap().len(),
            2,
            "one file per day"
        );

        let everything = Filter::default();
        assert_eq!(all(&reader, None, &everything), [1, 2, 3, 4, 5, 6]);
        let acme = Filter {
            tenant: Some("acme".into()),
            ..Filter::default()
        };
        assert_eq!(all(&reader, None, &acme), [1, 3, 5, 6]);

        // A job that stopped after the first page resumes with its cursor
        // and gets the rest once, then only what is written later.
        let first = reader.page(None, &everything, 3).unwrap();
        assert_eq!(first.records.len(), 3);
        let cursor = first.next.unwrap();
        assert_eq!(cursor, first.records[2].0);
        let parsed: Cursor = cursor.to_string().parse().unwrap();
        assert_eq!(parsed, cursor);
        assert_eq!(all(&reader, Some(cursor), &everything), [4, 5, 6]);
        let end = reader.page(Some(cursor), &everything, 100).unwrap().next;
        assert!(
            reader
                .page(end, &everything, 100)
                .unwrap()
                .records
                .is_empty()
        );
        ledger
            .append(&record("acme", "m", 7, MORNING))
            .await
            .unwrap();
        assert_eq!(all(&reader, end, &everything), [7]);

        // The period filter: the morning's records (the late one is dated
        // the evening before, whatever file it is in).
        let morning = Filter {
            from_ms: Some(MORNING - 3_600_000),
            ..Filter::default()
        };
        assert_eq!(all(&reader, None, &morning), [3, 4, 5, 7]);
    }

    #[tokio::test]
    async fn cursors_it_never_gave_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (ledger, _) = Ledger::open(dir.path(), FsyncMode::Always, EVENING).unwrap();
        ledger
            .append(&record("acme", "m", 1, EVENING))
            .await
            .unwrap();
        let reader = ledger.reader();
        let day = files::day_of(EVENING);
        for bad in [
            "",
            "2026-03-31",
            "2026-03-31:x",
            "31-03-2026:0",
            "2026-03-31:-1",
        ] {
            assert!(
                matches!(bad.parse::<Cursor>(), Err(ExportError::BadCursor(_))),
                "{bad}"
            );
        }
        let mid = Cursor { day, offset: 3 };
        assert!(matches!(
            reader.page(Some(mid), &Filter::default(), 10),
            Err(ExportError::CursorOffRecord(_))
        ));
        let beyond = Cursor {
            day,
            offset: 1 << 40,
        };
        assert!(matches!(
            reader.page(Some(beyond), &Filter::default(), 10),
            Err(ExportError::CursorOffRecord(_))
        ));
    }

    #[test]
    fn nothing_past_the_synced_end_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let day = files::day_of(EVENING);
        let line = serde_json::to_string(&record("acme", "m", 1, EVENING)).unwrap() + "\n";
        std::fs::write(files::path(dir.path(), day), line.repeat(2)).unwrap();
        let mark = DurableMark::new(Some(files::Durable {
            day,
            len: line.len() as u64,
        }));
        let reader = LedgerReader::new(dir.path().to_path_buf(), mark);
        let page = reader.page(None, &Filter::default(), 10).unwrap();
        assert_eq!(page.records.len(), 1);
        assert_eq!(page.next.unwrap().offset, line.len() as u64);
    }

    #[tokio::test]
    async fn invoice_sums_one_tenants_month_per_model() {
        let dir = tempfile::tempdir().unwrap();
        let (ledger, _) = Ledger::open(dir.path(), FsyncMode::Batch, EVENING).unwrap();
        // March: two on m1, one on m2; April (the morning after) is not in it.
        for (model, nanos, ts) in [
            ("m1", 1_004_999, EVENING),
            ("m2", 10, EVENING - 86_400_000),
            ("m1", 1, EVENING),
            ("m1", 999, MORNING),
        ] {
            ledger
                .append(&record("acme", model, nanos, ts))
                .await
                .unwrap();
        }
        ledger
            .append(&record("globex", "m1", 77, EVENING))
            .await
            .unwrap();
        let march = files::parse_day("2026-03-10").unwrap();
        let inv = ledger.reader().invoice("acme", march).unwrap();
        assert_eq!(inv.month, "2026-03");
        assert!(inv.complete);
        let m1 = &inv.models[0];
        assert_eq!((m1.model.as_str(), m1.line.requests), ("m1", 2));
        assert_eq!(m1.line.usd_nanos, 1_005_000);
        assert_eq!(m1.line.usd, "0.001005");
        assert_eq!(m1.line.prompt_tokens, 20);
        assert_eq!(m1.line.cached_tokens, 4);
        assert_eq!(m1.line.reserved_usd_nanos, 2_010_000);
        assert_eq!(inv.models[1].line.usd_nanos, 10);
        assert_eq!(inv.total.requests, 3);
        assert_eq!(inv.total.usd_nanos, 1_005_010);
        // Per day: m2 on the 30th, m1 on the 31st; they sum to the month.
        let days: Vec<(&str, &str, u64)> = inv
            .days
            .iter()
            .map(|d| (d.day.as_str(), d.model.as_str(), d.line.usd_nanos))
            .collect();
        assert_eq!(
            days,
            [("2026-03-30", "m2", 10), ("2026-03-31", "m1", 1_005_000)]
        );
        // $0.00100501 is a tenth of a cent: rounds to 0 cents.
        assert_eq!(inv.total.usd_cents, 0);
    }

    #[test]
    fn decimal_and_cents() {
        assert_eq!(usd_decimal(0), "0");
        assert_eq!(usd_decimal(1), "0.000000001");
        assert_eq!(usd_decimal(12_340_000_000), "12.34");
        let cents = |n: Nanos| {
            InvoiceLine {
                usd_nanos: n,
                ..InvoiceLine::default()
            }
            .priced()
            .usd_cents
        };
        assert_eq!(cents(4_999_999), 0);
        assert_eq!(cents(5_000_000), 1);
        assert_eq!(cents(1_234_999_999), 123);
        assert_eq!(cents(1_235_000_000), 124);
    }
}
