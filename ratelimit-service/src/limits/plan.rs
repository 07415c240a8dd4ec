//! Turns a request and the registry into what the store reserves, and a
//! finished lease into what the store settles.

use tenant_registry::{Limits, Per, Price, Registry, Unit};
use thiserror::Error;

use super::{
    LimitKind, Nanos, Rate, ScopeLimits, Throttles, cost, keys, model_scope, tenant_scope,
};
use crate::clock::{Periods, period_of};
use crate::lease::{LeaseRecord, QuotaRef};
use crate::storage::{CounterField, Hold, Meter, Move, ReservePlan, SettlePlan};

/// One Admit, in the service's terms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdmitInput {
    pub phase: AdmitPhase,
    pub tenant: String,
    pub model: String,
    pub pool: String,
    pub holder: String,
    pub request_id: String,
    pub est_prompt_tokens: u64,
    pub max_tokens: u64,
}

/// Which part of a request's admission an Admit is (see the proto's Phase).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AdmitPhase {
    /// Request, slot, tokens, budgets and the pool queue at once.
    #[default]
    Full,
    /// On the headers: request count and concurrency slot only.
    Open,
    /// After the body: tokens, budgets and the pool queue only.
    Reserve,
}

/// Refusals decided from the registry alone, before any counter is read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PlanError {
    #[error("tenant {0:?} is not in the registry")]
    UnknownTenant(String),
    #[error("tenant {0:?} is disabled")]
    DisabledTenant(String),
    #[error("{0}")]
    TooLarge(String),
}

/// How a lease ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Real usage from the pool's `usage` object.
    Usage {
        prompt: u64,
        completion: u64,
        cached: u64,
    },
    /// Usage unknown (or the lease expired): the reservation is the charge.
    ReservationAsCharge,
    /// The request never ran (pool gate refused, Admit cancelled).
    Refund,
    /// An OPEN lease's request ended: the slot is freed, the request stays
    /// counted, nothing is charged.
    Release,
}

/// What a settled lease charged, for the ledger and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Charge {
    pub nanos: Nanos,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
}

/// The model's price. A model missing from the registry (a filter out of
/// sync) is charged at the highest input and output prices configured, so
/// a mismatch can never be a way around budgets.
pub fn price_of(registry: &Registry, model: &str) -> Price {
    let models = &registry.config().models;
    if let Some(m) = models.get(model) {
        return m.price.clone();
    }
    let max = |f: fn(&Price) -> f64| models.values().map(|m| f(&m.price)).fold(0.0, f64::max);
    Price {
        input_per_mtok: max(|p| p.input_per_mtok),
        output_per_mtok: max(|p| p.output_per_mtok),
        cached_input_per_mtok: None,
    }
}

/// Which scope a limit belongs to, for the refusal's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeKind {
    Tenant,
    Model,
}

/// One scope's counters (limits/keys.rs) and its limits as they apply now.
#[derive(Debug, Clone, PartialEq)]
pub struct ScopePlan {
    pub key: String,
    pub kind: ScopeKind,
    pub limits: ScopeLimits,
}

/// The tenant scope's and the tenant+model scope's limits as they apply now.
/// `None` when the tenant is gone from the registry.
pub fn scope_limits(
    registry: &Registry,
    throttles: &Throttles,
    tenant: &str,
    model: &str,
) -> Option<[ScopePlan; 2]> {
    let t = registry.tenant(tenant)?;
    let fraction = throttles.fraction(tenant);
    let model_limits = t
        .model_limits
        .get(model)
        .cloned()
        .unwrap_or_else(Limits::default);
    Some([
        ScopePlan {
            key: tenant_scope(tenant),
            kind: ScopeKind::Tenant,
            limits: ScopeLimits::compile(&registry.effective_limits(t), fraction),
        },
        ScopePlan {
            key: model_scope(tenant, model),
            kind: ScopeKind::Model,
            limits: ScopeLimits::compile(&model_limits, fraction),
        },
    ])
}

/// What one hold of a plan limits, for the refusal's reason and the
/// rate-limit headers; `None` for counting only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub kind: LimitKind,
    pub scope: ScopeKind,
}

impl Limited {
    /// The unit whose rate-limit headers report this limit's room
    /// (requests and tokens; money and slots have none).
    pub fn reported_unit(&self) -> Option<Unit> {
        match self.kind {
            LimitKind::Window {
                unit: unit @ (Unit::Requests | Unit::Tokens),
                ..
            } => Some(unit),
            _ => None,
        }
    }
}

/// The order refusals are reported in: money and calendar quotas first
/// (they come back only when their period ends), then rates, then slots.
fn rank(kind: Option<LimitKind>) -> u8 {
    match kind {
        Some(LimitKind::Window { unit, per }) => match (per.rolling_ms(), unit) {
            (None, Unit::Usd) => 0,
            (None, _) => 1,
            (Some(_), Unit::Requests) => 2,
            (Some(_), Unit::Tokens) => 3,
            (Some(_), Unit::Usd) => 4,
        },
        Some(LimitKind::Concurrency) => 5,
        None => 6,
    }
}

/// A lease's cost in one unit.
fn lease_cost(lease: &LeaseRecord, unit: Unit) -> u64 {
    match unit {
        Unit::Requests => u64::from(lease.slot),
        Unit::Tokens => lease.reserved_tokens,
        Unit::Usd => lease.reserved_nanos,
    }
}

/// The calendar period of `per` a lease was reserved in.
fn lease_period(lease: &LeaseRecord, per: Per) -> &str {
    period_of(per, &lease.day, &lease.month)
}

/// Every counter an admission holds, in refusal order, with what each one
/// limits. Fills `lease.quotas` with the calendar request and token quotas
/// it reserves in, which settlement releases whatever the registry says by
/// then.
pub fn holds(scopes: &[ScopePlan], lease: &mut LeaseRecord, periods: &Periods) -> Vec<Hold> {
    let mut out: Vec<Hold> = Vec::with_capacity(scopes.len() * 6);
    lease.quotas.clear();
    for s in scopes {
        let limited = |kind| {
            Some(Limited {
                kind,
                scope: s.kind,
            })
        };
        for l in &s.limits.windows {
            // A RESERVE lease's request was counted by its OPEN lease.
            if l.unit == Unit::Requests && !lease.slot {
                continue;
            }
            let kind = limited(LimitKind::Window {
                unit: l.unit,
                per: l.per,
            });
            let cost = lease_cost(lease, l.unit);
            match l.per.rolling_ms() {
                Some(period_ms) => out.push(Hold {
                    key: keys::bucket(&s.key, l.unit, l.per),
                    meter: Meter::Bucket { period_ms },
                    limit: Some(l.max),
                    cost,
                    what: kind,
                }),
                // Spend is counted below for every scope, limited or not.
                None if l.unit == Unit::Usd => {}
                None => {
                    lease.quotas.push(QuotaRef {
                        scope: s.key.clone(),
                        unit: l.unit,
                        per: l.per,
                    });
                    out.push(Hold {
                        key: keys::counter(&s.key, l.unit, lease_period(lease, l.per)),
                        meter: Meter::Counter {
                            resets_in_ms: periods.ends_in_ms(l.per),
                        },
                        limit: Some(l.max),
                        cost,
                        what: kind,
                    });
                }
            }
        }
        for per in [Per::CalendarDay, Per::CalendarMonth] {
            let limit = s.limits.get(Unit::Usd, per);
            out.push(Hold {
                key: keys::counter(&s.key, Unit::Usd, lease_period(lease, per)),
                meter: Meter::Counter {
                    resets_in_ms: periods.ends_in_ms(per),
                },
                limit,
                cost: lease.reserved_nanos,
                what: limit.and(limited(LimitKind::Window {
                    unit: Unit::Usd,
                    per,
                })),
            });
        }
        if lease.slot {
            out.push(Hold {
                key: keys::slots(&s.key),
                meter: Meter::Slots,
                limit: s.limits.concurrency,
                cost: 1,
                what: s.limits.concurrency.and(limited(LimitKind::Concurrency)),
            });
        }
    }
    out.sort_by_key(|h| rank(h.what.map(|w| w.kind)));
    out
}

pub fn plan_admission(
    registry: &Registry,
    throttles: &Throttles,
    input: &AdmitInput,
    lease_id: String,
    now_ms: i64,
    expires_ms: i64,
) -> Result<ReservePlan, PlanError> {
    let tenant = registry
        .tenant(&input.tenant)
        .ok_or_else(|| PlanError::UnknownTenant(input.tenant.clone()))?;
    if tenant.disabled {
        return Err(PlanError::DisabledTenant(input.tenant.clone()));
    }
    let scopes = scope_limits(registry, throttles, &input.tenant, &input.model)
        .ok_or_else(|| PlanError::UnknownTenant(input.tenant.clone()))?;
    // OPEN reserves no tokens; RESERVE neither counts the request nor takes a
    // slot: its OPEN lease did both.
    let (est_prompt, max_tokens) = match input.phase {
        AdmitPhase::Open => (0, 0),
        AdmitPhase::Full | AdmitPhase::Reserve => (input.est_prompt_tokens, input.max_tokens),
    };
    let slot = input.phase != AdmitPhase::Reserve;
    let tokens = est_prompt.saturating_add(max_tokens);
    let price = price_of(registry, &input.model);
    let nanos = cost::upper_bound(&price, est_prompt, max_tokens);
    let periods = Periods::at(now_ms);
    let mut lease = LeaseRecord {
        id: lease_id,
        tenant: input.tenant.clone(),
        model: input.model.clone(),
        pool: input.pool.clone(),
        holder: input.holder.clone(),
        request_id: input.request_id.clone(),
        scopes: scopes.iter().map(|s| s.key.clone()).collect(),
        est_prompt_tokens: est_prompt,
        max_tokens,
        reserved_tokens: tokens,
        reserved_nanos: nanos,
        day: periods.day.clone(),
        month: periods.month.clone(),
        admitted_ms: now_ms,
        expires_ms,
        slot,
        quotas: Vec::new(),
    };
    // A request larger than a whole window's limit could never be admitted:
    // say so instead of asking the client to retry forever.
    for s in &scopes {
        for l in s.limits.windows.iter().filter(|l| l.max > 0) {
            let cost = lease_cost(&lease, l.unit);
            if cost <= l.max {
                continue;
            }
            return Err(PlanError::TooLarge(match l.unit {
                Unit::Usd => format!(
                    "request may cost up to ${:.6}; the limit is ${:.2} per {}",
                    cost::nanos_to_usd(cost),
                    cost::nanos_to_usd(l.max),
                    window_name(l.per)
                ),
                _ => format!(
                    "request reserves {cost} {} (prompt estimate + max_tokens); \
                     the limit is {} {} per {}",
                    l.unit.name(),
                    l.max,
                    l.unit.name(),
                    window_name(l.per)
                ),
            }));
        }
    }
    let holds = holds(&scopes, &mut lease, &periods);
    Ok(ReservePlan {
        lease,
        holds,
        now_ms,
    })
}

/// A window as a message says it: "minute", "calendar month".
pub fn window_name(per: Per) -> String {
    per.name().replace('_', " ")
}

/// How a settlement changes each unit: the rolling buckets' deltas, and what
/// the calendar counters finally charge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deltas {
    pub requests: i64,
    pub tokens: i64,
    pub usd: i64,
    /// What stays counted in the period of the settlement.
    pub charged_requests: u64,
    pub charged_tokens: u64,
    pub charged_nanos: Nanos,
}

fn signed(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The moves that end `lease`: buckets of the scopes' current rolling
/// limits (`limits`, `None` when the tenant is gone) take `deltas`; spend
/// and the lease's calendar quotas move from its reservation to the periods
/// of `now_ms`; slots are freed.
pub fn moves(
    lease: &LeaseRecord,
    limits: Option<&[ScopePlan]>,
    deltas: &Deltas,
    now_ms: i64,
) -> Vec<Move> {
    let periods = Periods::at(now_ms);
    let mut out = Vec::new();
    for scope in &lease.scopes {
        let current = limits.and_then(|l| l.iter().find(|s| &s.key == scope));
        for l in current.iter().flat_map(|s| &s.limits.windows) {
            let Some(period_ms) = l.per.rolling_ms() else {
                continue;
            };
            let delta = match l.unit {
                Unit::Requests => deltas.requests,
                Unit::Tokens => deltas.tokens,
                Unit::Usd => deltas.usd,
            };
            if delta != 0 {
                out.push(Move::Bucket {
                    key: keys::bucket(scope, l.unit, l.per),
                    rate: Rate {
                        limit: l.max,
                        period_ms,
                    },
                    delta,
                });
            }
        }
        let calendar = [Per::CalendarDay, Per::CalendarMonth]
            .into_iter()
            .map(|per| (Unit::Usd, per))
            .chain(
                lease
                    .quotas
                    .iter()
                    .filter(|q| &q.scope == scope)
                    .map(|q| (q.unit, q.per)),
            );
        for (unit, per) in calendar {
            let charged = match unit {
                Unit::Requests => deltas.charged_requests,
                Unit::Tokens => deltas.charged_tokens,
                Unit::Usd => deltas.charged_nanos,
            };
            let reserved = lease_cost(lease, unit);
            if reserved > 0 {
                out.push(Move::Counter {
                    key: keys::counter(scope, unit, lease_period(lease, per)),
                    field: CounterField::Reserved,
                    delta: -signed(reserved),
                });
            }
            if charged > 0 {
                out.push(Move::Counter {
                    key: keys::counter(scope, unit, periods.of(per)),
                    field: CounterField::Spent,
                    delta: signed(charged),
                });
            }
        }
        if lease.slot {
            out.push(Move::Slot {
                key: keys::slots(scope),
            });
        }
    }
    out
}

pub fn plan_settlement(
    registry: &Registry,
    throttles: &Throttles,
    lease: &LeaseRecord,
    settlement: Settlement,
    now_ms: i64,
    only_if_expired: bool,
) -> (SettlePlan, Charge) {
    let limits = scope_limits(registry, throttles, &lease.tenant, &lease.model);
    let reserved_tokens = signed(lease.reserved_tokens);
    let reserved_nanos = signed(lease.reserved_nanos);
    let counted = u64::from(lease.slot);
    let (deltas, charge) = match settlement {
        Settlement::Usage {
            prompt,
            completion,
            cached,
        } => {
            let price = price_of(registry, &lease.model);
            let charge = Charge {
                nanos: cost::actual(&price, prompt, completion, cached),
                prompt_tokens: prompt,
                completion_tokens: completion,
                cached_tokens: cached.min(prompt),
            };
            let real = prompt.saturating_add(completion);
            let deltas = Deltas {
                requests: 0,
                tokens: signed(real) - reserved_tokens,
                usd: signed(charge.nanos) - reserved_nanos,
                charged_requests: counted,
                charged_tokens: real,
                charged_nanos: charge.nanos,
            };
            (deltas, charge)
        }
        Settlement::ReservationAsCharge => (
            Deltas {
                charged_requests: counted,
                charged_tokens: lease.reserved_tokens,
                charged_nanos: lease.reserved_nanos,
                ..Deltas::default()
            },
            Charge {
                nanos: lease.reserved_nanos,
                prompt_tokens: lease.est_prompt_tokens,
                completion_tokens: lease.max_tokens,
                cached_tokens: 0,
            },
        ),
        // The request stays counted; nothing is charged.
        Settlement::Release => (
            Deltas {
                tokens: -reserved_tokens,
                usd: -reserved_nanos,
                charged_requests: counted,
                ..Deltas::default()
            },
            Charge::default(),
        ),
        Settlement::Refund => (
            Deltas {
                // A RESERVE lease never counted its request: nothing to give back.
                requests: -signed(counted),
                tokens: -reserved_tokens,
                usd: -reserved_nanos,
                ..Deltas::default()
            },
            Charge::default(),
        ),
    };
    let plan = SettlePlan {
        lease_id: lease.id.clone(),
        now_ms,
        only_if_expired,
        moves: moves(lease, limits.as_ref().map(|l| &l[..]), &deltas, now_ms),
    };
    (plan, charge)
}
