//! Economic limits as data: a limit is an amount of a unit (requests,
//! tokens, USD) over a window, in a scope (the tenant, or the tenant and one
//! model), plus a cap on requests in flight.
//!
//! The classic fields (`rpm`, `tpm`, `daily_budget_usd`,
//! `monthly_budget_usd`) are shorthands for four of these windows; any other
//! window is declared in `windows` without code. ratelimit-service compiles
//! every window the same way, so a new one needs nothing but the registry.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Requests,
    /// Prompt + completion tokens.
    Tokens,
    /// Spend, priced from `[models]`.
    Usd,
}

/// The window a limit is counted over.
///
/// `second` … `day` are rolling: room comes back continuously at
/// `limit / window` (no boundary to burst across). `calendar_day` and
/// `calendar_month` are UTC calendar periods that start empty at midnight
/// and on the first of the month, as bills and quotas usually are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Per {
    Second,
    Minute,
    Hour,
    Day,
    CalendarDay,
    CalendarMonth,
}

impl Per {
    /// Length of a rolling window; `None` for a calendar period.
    pub fn rolling_ms(self) -> Option<u64> {
        match self {
            Per::Second => Some(1_000),
            Per::Minute => Some(60_000),
            Per::Hour => Some(3_600_000),
            Per::Day => Some(86_400_000),
            Per::CalendarDay | Per::CalendarMonth => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Per::Second => "second",
            Per::Minute => "minute",
            Per::Hour => "hour",
            Per::Day => "day",
            Per::CalendarDay => "calendar_day",
            Per::CalendarMonth => "calendar_month",
        }
    }
}

impl Unit {
    pub fn name(self) -> &'static str {
        match self {
            Unit::Requests => "requests",
            Unit::Tokens => "tokens",
            Unit::Usd => "usd",
        }
    }
}

/// One entry of `windows`: exactly one of `requests`, `tokens`, `usd`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowLimit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd: Option<f64>,
    pub per: Option<Per>,
}

impl WindowLimit {
    /// The unit and amount, when exactly one is set (validation makes sure).
    pub fn amount(&self) -> Option<(Unit, f64)> {
        match (self.requests, self.tokens, self.usd) {
            (Some(r), None, None) => Some((Unit::Requests, r as f64)),
            (None, Some(t), None) => Some((Unit::Tokens, t as f64)),
            (None, None, Some(u)) => Some((Unit::Usd, u)),
            _ => None,
        }
    }

    /// The entry as (unit, window, amount), when it is well formed.
    fn entry(&self) -> Option<(Unit, Per, f64)> {
        let (unit, amount) = self.amount()?;
        Some((unit, self.per?, amount))
    }
}

/// Economic limits. Every field is optional: absent means unlimited, and a
/// tenant's value overrides its tier's, field by field and window by window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Shorthand for `{ requests = N, per = "minute" }`.
    pub rpm: Option<u64>,
    /// Shorthand for `{ tokens = N, per = "minute" }`.
    pub tpm: Option<u64>,
    pub max_concurrency: Option<u32>,
    /// Shorthand for `{ usd = X, per = "calendar_day" }`.
    pub daily_budget_usd: Option<f64>,
    /// Shorthand for `{ usd = X, per = "calendar_month" }`.
    pub monthly_budget_usd: Option<f64>,
    /// Fraction of a budget at which an alert fires (metrics + log).
    pub budget_alert_ratio: Option<f64>,
    /// Any other window.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<WindowLimit>,
}

impl Limits {
    /// No limit at all (what `Default` gives, usable in a `static`).
    pub const NONE: Limits = Limits {
        rpm: None,
        tpm: None,
        max_concurrency: None,
        daily_budget_usd: None,
        monthly_budget_usd: None,
        budget_alert_ratio: None,
        windows: Vec::new(),
    };

    /// The shorthand fields as windows.
    pub(crate) fn shorthands(&self) -> impl Iterator<Item = ((Unit, Per), f64)> {
        [
            self.rpm.map(|v| ((Unit::Requests, Per::Minute), v as f64)),
            self.tpm.map(|v| ((Unit::Tokens, Per::Minute), v as f64)),
            self.daily_budget_usd
                .map(|v| ((Unit::Usd, Per::CalendarDay), v)),
            self.monthly_budget_usd
                .map(|v| ((Unit::Usd, Per::CalendarMonth), v)),
        ]
        .into_iter()
        .flatten()
    }

    /// Every limit as (unit, window, amount), shorthands included.
    /// Validation refuses a window declared twice in one table; should a
    /// merged table still hold both (see [`Limits::over`]), the `windows`
    /// entry wins and the shorthand is left out.
    pub fn windows(&self) -> impl Iterator<Item = (Unit, Per, f64)> + '_ {
        let explicit = || self.windows.iter().filter_map(WindowLimit::entry);
        self.shorthands()
            .filter(move |((unit, per), _)| !explicit().any(|(u, p, _)| u == *unit && p == *per))
            .map(|((unit, per), amount)| (unit, per, amount))
            .chain(explicit())
    }

    /// Every limit by unit and window (see [`Limits::windows`]).
    pub fn by_window(&self) -> BTreeMap<(Unit, Per), f64> {
        self.windows()
            .map(|(unit, per, amount)| ((unit, per), amount))
            .collect()
    }

    /// The limit of one unit over one window.
    pub fn limit(&self, unit: Unit, per: Per) -> Option<f64> {
        self.windows()
            .find(|(u, p, _)| *u == unit && *p == per)
            .map(|(_, _, amount)| amount)
    }

    /// `self` with every unset field and window taken from `base`.
    pub fn over(&self, base: &Limits) -> Limits {
        let own = self.by_window();
        let inherited = base.windows.iter().filter(|w| {
            w.entry()
                .is_some_and(|(unit, per, _)| !own.contains_key(&(unit, per)))
        });
        let mut merged = Limits {
            rpm: self.rpm.or(base.rpm),
            tpm: self.tpm.or(base.tpm),
            max_concurrency: self.max_concurrency.or(base.max_concurrency),
            daily_budget_usd: self.daily_budget_usd.or(base.daily_budget_usd),
            monthly_budget_usd: self.monthly_budget_usd.or(base.monthly_budget_usd),
            budget_alert_ratio: self.budget_alert_ratio.or(base.budget_alert_ratio),
            windows: self.windows.clone(),
        };
        merged.windows.extend(inherited.cloned());
        merged
    }
}
