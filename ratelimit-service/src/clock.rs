//! Wall-clock time as the limits see it: Unix milliseconds, and the UTC
//! calendar periods that budgets are counted in.
//!
//! Every store operation takes `now` as an argument instead of reading the
//! clock itself, so the limit arithmetic is tested with simulated time and
//! two replicas sharing Redis compute with the same numbers (their clocks
//! must be NTP-synchronised; a skew of s seconds shifts bucket refill by s).

use std::time::{SystemTime, UNIX_EPOCH};

use tenant_registry::Per;
use time::{Date, Month, OffsetDateTime};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The budget periods an instant falls in: UTC day and UTC month.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Periods {
    /// `d2025-01-31`
    pub day: String,
    /// `m2025-01`
    pub month: String,
    /// Milliseconds until the day period ends.
    pub day_ends_in_ms: u64,
    /// Milliseconds until the month period ends.
    pub month_ends_in_ms: u64,
}

/// An instant as RFC 3339, UTC (empty if out of range).
pub fn rfc3339(ts_ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ts_ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// The UTC date of an instant.
pub fn utc_date(ms: i64) -> Date {
    OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .date()
}

/// The first day of the month after `date`'s (`None` past year 9999).
pub fn next_month_start(date: Date) -> Option<Date> {
    if date.month() == Month::December {
        Date::from_calendar_date(date.year() + 1, Month::January, 1).ok()
    } else {
        Date::from_calendar_date(date.year(), date.month().next(), 1).ok()
    }
}

impl Periods {
    pub fn at(now_ms: i64) -> Self {
        let date = utc_date(now_ms);
        let (y, m, d) = (date.year(), u8::from(date.month()), date.day());
        let day_start_ms = midnight_ms(date);
        let next_day_ms = day_start_ms + 86_400_000;
        let next_month = next_month_start(date)
            .map(midnight_ms)
            .unwrap_or(next_day_ms);
        Self {
            day: format!("d{y:04}-{m:02}-{d:02}"),
            month: format!("m{y:04}-{m:02}"),
            day_ends_in_ms: u64::try_from(next_day_ms - now_ms).unwrap_or(0),
            month_ends_in_ms: u64::try_from(next_month - now_ms).unwrap_or(0),
        }
    }
}

/// Of a day's and a month's period names, the one `per` counts in (the day
/// for anything but a month).
pub fn period_of<'a>(per: Per, day: &'a str, month: &'a str) -> &'a str {
    match per {
        Per::CalendarMonth => month,
        _ => day,
    }
}

impl Periods {
    /// The calendar period of `per`.
    pub fn of(&self, per: Per) -> &str {
        period_of(per, &self.day, &self.month)
    }

    /// Until the calendar period of `per` ends.
    pub fn ends_in_ms(&self, per: Per) -> u64 {
        match per {
            Per::CalendarMonth => self.month_ends_in_ms,
            _ => self.day_ends_in_ms,
        }
    }
}

/// Unix milliseconds of `date`'s start (UTC).
pub fn midnight_ms(date: Date) -> i64 {
    date.midnight().assume_utc().unix_timestamp() * 1000
}

#[cfg(test)]
mod tests {
    use super::Periods;

    #[test]
    fn periods_and_their_ends() {
        // 2024-12-31T23:59:59.500Z: last half second of a day, month and year.
        let p = Periods::at(1_735_689_599_500);
        assert_eq!(p.day, "d2024-12-31");
        assert_eq!(p.month, "m2024-12");
        assert_eq!(p.day_ends_in_ms, 500);
        assert_eq!(p.month_ends_in_ms, 500);
        // 2024-02-10T00:00:00Z: leap February has 29 days.
        let p = Periods::at(1_707_523_200_000);
        assert_eq!(p.day, "d2024-02-10");
        assert_eq!(p.month, "m2024-02");
        assert_eq!(p.day_ends_in_ms, 86_400_000);
        assert_eq!(p.month_ends_in_ms, 20 * 86_400_000);
    }
}
