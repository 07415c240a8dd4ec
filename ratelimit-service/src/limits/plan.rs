//! Turns a request and the registry into what the store reserves, and a
//! finished lease into what the store settles.

use tenant_registry::{Limits, Price, Registry};
use thiserror::Error;

use super::{Nanos, ScopeLimits, Throttles, cost, model_scope, tenant_scope};
use crate::clock::Periods;
use crate::lease::LeaseRecord;
use crate::storage::{AdmitPlan, ScopePlan, ScopeSettle, SettlePlan};

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
            limits: ScopeLimits::compile(&registry.effective_limits(t), fraction),
        },
        ScopePlan {
            key: model_scope(tenant, model),
            limits: ScopeLimits::compile(&model_limits, fraction),
        },
    ])
}

pub fn plan_admission(
    registry: &Registry,
    throttles: &Throttles,
    input: &AdmitInput,
    lease_id: String,
    now_ms: i64,
    expires_ms: i64,
) -> Result<AdmitPlan, PlanError> {
    let tenant = registry
        .tenant(&input.tenant)
        .ok_or_else(|| PlanError::UnknownTenant(input.tenant.clone()))?;
    if tenant.disabled {
        return Err(PlanError::DisabledTenant(input.tenant.clone()));
    }
    let mut scopes = scope_limits(registry, throttles, &input.tenant, &input.model)
        .ok_or_else(|| PlanError::UnknownTenant(input.tenant.clone()))?;
    // OPEN reserves no tokens; RESERVE neither counts the request nor takes a
    // slot: its OPEN lease did both.
    let (est_prompt, max_tokens) = match input.phase {
        AdmitPhase::Open => (0, 0),
        AdmitPhase::Full | AdmitPhase::Reserve => (input.est_prompt_tokens, input.max_tokens),
    };
    let slot = input.phase != AdmitPhase::Reserve;
    if !slot {
        for s in &mut scopes {
            s.limits.rpm = None;
            s.limits.concurrency = None;
        }
    }
    let tokens = est_prompt.saturating_add(max_tokens);
    let price = price_of(registry, &input.model);
    let nanos = cost::upper_bound(&price, est_prompt, max_tokens);
    for s in &scopes {
        let l = &s.limits;
        if let Some(tpm) = l.tpm.filter(|&t| t > 0 && tokens > t) {
            return Err(PlanError::TooLarge(format!(
                "request reserves {tokens} tokens (prompt estimate + max_tokens); \
                 the limit is {tpm} tokens per minute"
            )));
        }
        for (budget, name) in [(l.daily_nanos, "daily"), (l.monthly_nanos, "monthly")] {
            if let Some(b) = budget.filter(|&b| b > 0 && nanos > b) {
                return Err(PlanError::TooLarge(format!(
                    "request may cost up to ${:.6}; the {name} budget is ${:.2}",
                    cost::nanos_to_usd(nanos),
                    cost::nanos_to_usd(b)
                )));
            }
        }
    }
    let periods = Periods::at(now_ms);
    Ok(AdmitPlan {
        lease: LeaseRecord {
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
            day: periods.day,
            month: periods.month,
            admitted_ms: now_ms,
            expires_ms,
            slot,
        },
        scopes: scopes.into(),
        now_ms,
    })
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
    let reserved_tokens = lease.reserved_tokens as f64;
    let (requests_delta, tokens_delta, charge) = match settlement {
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
            let real = prompt.saturating_add(completion) as f64;
            (0.0, real - reserved_tokens, charge)
        }
        Settlement::ReservationAsCharge => (
            0.0,
            0.0,
            Charge {
                nanos: lease.reserved_nanos,
                prompt_tokens: lease.est_prompt_tokens,
                completion_tokens: lease.max_tokens,
                cached_tokens: 0,
            },
        ),
        // The request stays counted; nothing is charged.
        Settlement::Release => (0.0, -reserved_tokens, Charge::default()),
        Settlement::Refund => (
            // A RESERVE lease never counted its request: nothing to give back.
            if lease.slot { -1.0 } else { 0.0 },
            -reserved_tokens,
            Charge::default(),
        ),
    };
    let scopes = lease
        .scopes
        .iter()
        .map(|key| {
            let current = limits
                .as_ref()
                .and_then(|l| l.iter().find(|s| &s.key == key))
                .map(|s| s.limits.clone())
                .unwrap_or_default();
            ScopeSettle {
                key: key.clone(),
                rpm: current.rpm,
                tpm: current.tpm,
                requests_delta,
                tokens_delta,
            }
        })
        .collect();
    let periods = Periods::at(now_ms);
    let plan = SettlePlan {
        lease_id: lease.id.clone(),
        now_ms,
        only_if_expired,
        scopes,
        reserved_nanos: lease.reserved_nanos,
        reserved_day: lease.day.clone(),
        reserved_month: lease.month.clone(),
        charge_nanos: charge.nanos,
        charge_day: periods.day,
        charge_month: periods.month,
        slot: lease.slot,
    };
    (plan, charge)
}
