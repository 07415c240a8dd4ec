//! What the limiter takes and answers, in the service's terms.

use std::time::Duration;

use thiserror::Error;

use crate::ledger::LedgerError;
use crate::limits::{Per, ScopeViews, Unit};
use crate::storage::StoreError;

/// Why Admit refused (maps 1:1 to the proto's RejectReason).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// A requests limit over a window (`Per::Minute` is RPM).
    Requests(Per),
    /// A tokens limit over a window (`Per::Minute` is TPM).
    Tokens(Per),
    Concurrency,
    BudgetExhausted,
    QueueFull,
    QueueTimeout,
    UnknownTenant,
    RequestTooLarge,
    /// The tenant's circuit breaker is open (crate::breaker).
    CircuitOpen,
}

impl RejectReason {
    /// The status the admission filter answers this refusal with
    /// (filters/admission/src/outcome.rs), for the audit record.
    pub fn http_status(self) -> u32 {
        match self {
            Self::QueueTimeout => 503,
            Self::UnknownTenant => 403,
            _ => 429,
        }
    }

    /// The refusal of a limit of `unit` over `per`; money is a budget
    /// whatever its window.
    pub fn of_window(unit: Unit, per: Per) -> Self {
        match unit {
            Unit::Requests => Self::Requests(per),
            Unit::Tokens => Self::Tokens(per),
            Unit::Usd => Self::BudgetExhausted,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Requests(per) => match per {
                Per::Second => "requests_per_second",
                Per::Minute => "requests_per_minute",
                Per::Hour => "requests_per_hour",
                Per::Day => "requests_per_day",
                Per::CalendarDay => "requests_per_calendar_day",
                Per::CalendarMonth => "requests_per_calendar_month",
            },
            Self::Tokens(per) => match per {
                Per::Second => "tokens_per_second",
                Per::Minute => "tokens_per_minute",
                Per::Hour => "tokens_per_hour",
                Per::Day => "tokens_per_day",
                Per::CalendarDay => "tokens_per_calendar_day",
                Per::CalendarMonth => "tokens_per_calendar_month",
            },
            Self::Concurrency => "concurrency",
            Self::BudgetExhausted => "budget_exhausted",
            Self::QueueFull => "queue_full",
            Self::QueueTimeout => "queue_timeout",
            Self::UnknownTenant => "unknown_tenant",
            Self::RequestTooLarge => "request_too_large",
            Self::CircuitOpen => "circuit_open",
        }
    }

    /// Whether the tenant caused this refusal (its own limits and queue),
    /// which its circuit breaker counts; the pool's trouble and refusals
    /// that say nothing of the tenant's behaviour do not count.
    pub fn is_tenants_doing(self) -> bool {
        match self {
            Self::Requests(_)
            | Self::Tokens(_)
            | Self::Concurrency
            | Self::BudgetExhausted
            | Self::QueueFull
            | Self::RequestTooLarge => true,
            Self::QueueTimeout | Self::UnknownTenant | Self::CircuitOpen => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdmitDecision {
    Admitted {
        lease_id: String,
        ttl: Duration,
        views: ScopeViews,
        queue_wait: Duration,
    },
    Rejected {
        reason: RejectReason,
        message: String,
        retry_after_ms: u64,
        views: ScopeViews,
    },
}

/// How a request ended, as Complete reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompleteOutcome {
    Completed,
    ClientCancelled,
    UpstreamError,
    /// The pool answered 4xx: nothing was generated.
    UpstreamRejected,
    /// An OPEN lease's request ended.
    Released,
    Unspecified,
}

impl CompleteOutcome {
    pub(super) fn label(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::ClientCancelled => "client_cancelled",
            Self::UpstreamError => "upstream_error",
            Self::UpstreamRejected => "upstream_rejected",
            Self::Released => "released",
            Self::Unspecified => "unspecified",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub lease_id: String,
    pub outcome: CompleteOutcome,
    /// `None` when the pool's usage is unknown: the reservation is charged.
    pub usage: Option<Usage>,
    pub ttft: Option<Duration>,
    /// Whether the usage carried a cached-token count; `None` from filters
    /// that do not say.
    pub cached_tokens_reported: Option<bool>,
    /// From admission to the response's end (or the hang-up).
    pub duration: Duration,
    /// What the audit record needs beyond the bill.
    pub audit: AuditFacts,
}

/// One request as the filter saw it, for the tenant's audit trail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFacts {
    pub credential: String,
    /// Lower-case hex, empty when unknown.
    pub request_sha256: String,
    pub response_sha256: String,
    pub http_status: u32,
    pub replica: String,
    /// The start of the body as sent to the pool (tenants that log prompts).
    pub prompt: Option<Vec<u8>>,
    pub prompt_truncated: bool,
}

#[derive(Debug, Error)]
pub enum LimiterError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Per-tenant usage for the admin API.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TenantUsage {
    pub tenant: String,
    pub requests: u64,
    pub rejected: u64,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub in_flight: u64,
    pub spend_today_usd: f64,
    pub spend_month_usd: f64,
    pub reserved_today_usd: f64,
    pub daily_budget_usd: Option<f64>,
    pub monthly_budget_usd: Option<f64>,
    pub throttle: f64,
}

/// Every reason, for per-reason totals.
pub fn all_reasons() -> impl Iterator<Item = RejectReason> {
    const WINDOWS: [Per; 6] = [
        Per::Second,
        Per::Minute,
        Per::Hour,
        Per::Day,
        Per::CalendarDay,
        Per::CalendarMonth,
    ];
    WINDOWS
        .into_iter()
        .flat_map(|p| [RejectReason::Requests(p), RejectReason::Tokens(p)])
        .chain([
            RejectReason::Concurrency,
            RejectReason::BudgetExhausted,
            RejectReason::QueueFull,
            RejectReason::QueueTimeout,
            RejectReason::UnknownTenant,
            RejectReason::RequestTooLarge,
            RejectReason::CircuitOpen,
        ])
}
