//! Admit: reserve, then wait at the pool gate; refund on any way out.

use std::time::{Duration, Instant};

use super::{AdmitDecision, Limiter, LimiterError, RejectReason, millis};
use crate::breaker::Signal;
use crate::clock::now_ms;
use crate::lease::{LeaseRecord, new_lease_id};
use crate::limits::plan::{AdmitInput, AdmitPhase, PlanError, Settlement, window_name};
use crate::limits::{
    BucketView, LimitKind, Per, ScopeKind, ScopeViews, Unit, plan_admission, tightest,
};
use crate::metrics::Metrics;
use crate::pool::{GateError, Ticket};
use crate::storage::{Refusal, ReserveOutcome, ReservePlan};

/// Retry hint for a concurrency refusal: slots free when requests finish,
/// which no counter predicts.
const CONCURRENCY_RETRY_MS: u64 = 1_000;
/// Queue wait for a pool missing from the registry.
const DEFAULT_QUEUE_WAIT: Duration = Duration::from_secs(10);

/// The reason, retry hint and message for a store refusal. Calendar limits
/// come back when their UTC period ends (the store's wait for them); rates
/// when the bucket has room; slots when requests finish.
fn explain(refusal: &Refusal) -> (RejectReason, u64, String) {
    let Some(limited) = refusal.what else {
        // A hold without a limit never refuses; say something true anyway.
        return (
            RejectReason::Concurrency,
            refusal.wait_ms.max(CONCURRENCY_RETRY_MS),
            "limit reached".into(),
        );
    };
    let scope = match limited.scope {
        ScopeKind::Tenant => "tenant",
        ScopeKind::Model => "model",
    };
    let (reason, what, retry) = match limited.kind {
        LimitKind::Concurrency => (
            RejectReason::Concurrency,
            "concurrent request limit reached".to_owned(),
            CONCURRENCY_RETRY_MS,
        ),
        LimitKind::Window { unit, per } => {
            let what = match (unit, per) {
                (Unit::Usd, Per::CalendarDay) => "daily budget exhausted".to_owned(),
                (Unit::Usd, Per::CalendarMonth) => "monthly budget exhausted".to_owned(),
                (Unit::Usd, per) => format!("budget per {} exhausted", window_name(per)),
                (unit, per) => format!("{} per {} limit reached", unit.name(), window_name(per)),
            };
            (RejectReason::of_window(unit, per), what, 0)
        }
    };
    // Another limit may refuse for longer than the first one found.
    (
        reason,
        retry.max(refusal.wait_ms),
        format!("{what} ({scope} limit)"),
    )
}

/// The rate-limit headers' views: per unit, the tightest limited hold.
fn views_of(plan: &ReservePlan, views: &[Option<BucketView>]) -> ScopeViews {
    tightest(
        plan.holds
            .iter()
            .zip(views)
            .filter_map(|(hold, view)| Some((hold.what?.reported_unit()?, (*view)?))),
    )
}

impl Limiter {
    /// Reserves the tenant's limits, then waits at the pool gate until
    /// `deadline` at the latest (the pool's max queue wait when `None`).
    /// Cancel-safe: dropping the future refunds the reservation.
    pub async fn admit(
        &self,
        input: AdmitInput,
        deadline: Option<Instant>,
    ) -> Result<AdmitDecision, LimiterError> {
        let inner = &*self.inner;
        let registry = inner.registry.current();
        let now = now_ms();
        let started = Instant::now();
        let pool_wait = registry
            .config()
            .pools
            .get(input.pool.as_str())
            .map_or(DEFAULT_QUEUE_WAIT, |p| {
                Duration::from_millis(p.max_queue_wait_ms)
            });
        // An open breaker refuses before anything is reserved or queued; a
        // RESERVE rides on an OPEN lease admitted before it opened.
        if input.phase != AdmitPhase::Reserve
            && let Some(open) = inner.breakers.check(&input.tenant, clock_ms(now))
        {
            return Ok(self.rejected(
                &input.tenant,
                RejectReason::CircuitOpen,
                "circuit breaker open: this tenant's requests kept failing; retry after the cool-down"
                    .into(),
                open.retry_after_ms,
                ScopeViews::default(),
            ));
        }
        let deadline = deadline.map_or(started + pool_wait, |d| d.min(started + pool_wait));
        // While queued the lease must outlive the wait: Admit itself is the
        // heartbeat until it answers.
        let expires_ms = now
            + millis(deadline.saturating_duration_since(started)) as i64
            + millis(inner.lease_ttl) as i64;

        let (plan, views) = match self.reserve(&input, now, expires_ms).await? {
            Ok(reserved) => reserved,
            Err(refused) => return Ok(refused),
        };
        if input.phase == AdmitPhase::Open {
            // On the headers there is nothing to queue for yet: the lease is
            // the request's count and slot, renewed by its holder until the
            // request ends (RELEASED) and swept if the holder vanishes.
            return Ok(AdmitDecision::Admitted {
                lease_id: plan.lease.id,
                ttl: inner.lease_ttl,
                views,
                queue_wait: Duration::ZERO,
            });
        }
        self.wait_for_pool(&input, plan.lease, views, started, deadline)
            .await
    }

    /// Plans the request's holds and reserves them in the store: the plan
    /// and the rate-limit views, or the refusal to answer with.
    async fn reserve(
        &self,
        input: &AdmitInput,
        now: i64,
        expires_ms: i64,
    ) -> Result<Result<(ReservePlan, ScopeViews), AdmitDecision>, LimiterError> {
        let inner = &*self.inner;
        let registry = inner.registry.current();
        let plan = match plan_admission(
            &registry,
            &inner.throttles,
            input,
            new_lease_id(),
            now,
            expires_ms,
        ) {
            Ok(plan) => plan,
            Err(e) => {
                let reason = match e {
                    PlanError::UnknownTenant(_) | PlanError::DisabledTenant(_) => {
                        RejectReason::UnknownTenant
                    }
                    PlanError::TooLarge(_) => RejectReason::RequestTooLarge,
                };
                return Ok(Err(self.rejected(
                    &input.tenant,
                    reason,
                    e.to_string(),
                    0,
                    ScopeViews::default(),
                )));
            }
        };
        let outcome = inner.store.reserve(&plan).await.inspect_err(|_| {
            inner.metrics.store_errors.inc();
        })?;
        Ok(match outcome {
            ReserveOutcome::Refused { refusal, views } => {
                let (reason, retry_after_ms, message) = explain(&refusal);
                Err(self.rejected(
                    &input.tenant,
                    reason,
                    message,
                    retry_after_ms,
                    views_of(&plan, &views),
                ))
            }
            ReserveOutcome::Admitted { views } => {
                let views = views_of(&plan, &views);
                Ok((plan, views))
            }
        })
    }

    /// Waits at the pool gate with a reserved lease until `deadline`; the
    /// reservation is refunded on every way out but admission.
    async fn wait_for_pool(
        &self,
        input: &AdmitInput,
        lease: LeaseRecord,
        views: ScopeViews,
        started: Instant,
        deadline: Instant,
    ) -> Result<AdmitDecision, LimiterError> {
        let inner = &*self.inner;
        let registry = inner.registry.current();
        let mut reservation = Reservation {
            limiter: self.clone(),
            lease: Some(lease),
        };
        let (weight, priority) = registry.tenant(&input.tenant).map_or((1.0, 0), |t| {
            (
                registry.weight(t),
                registry.tier_of(t).map_or(0, |tier| tier.priority),
            )
        });
        let lease_id = reservation.lease_id().to_owned();
        let ticket = Ticket {
            tenant: input.tenant.clone(),
            weight,
            priority,
            est_input: input.est_prompt_tokens,
            est_output: input.max_tokens,
        };
        let gate_result = inner.gate.acquire(&input.pool, ticket, deadline).await;
        let queue_wait = started.elapsed();
        // A request refused at once by a full queue never waited: counting it
        // would drag the histogram towards zero.
        if !matches!(gate_result, Err(GateError::QueueFull { .. })) {
            inner
                .metrics
                .queue_wait_seconds
                .get_or_create(&Metrics::tenant(&input.tenant))
                .observe(queue_wait.as_secs_f64());
        }
        let permit = match gate_result {
            Ok(permit) => permit,
            Err(e) => {
                reservation.refund().await;
                let (reason, retry) = match &e {
                    GateError::QueueFull { retry_after, .. } => {
                        (RejectReason::QueueFull, millis(*retry_after))
                    }
                    // The pool is busy now; a retry a second later may find room.
                    GateError::QueueTimeout { .. } => (RejectReason::QueueTimeout, 1000),
                };
                return Ok(self.rejected(&input.tenant, reason, e.to_string(), retry, views));
            }
        };
        // The queue wait is over: from now on the holder must renew.
        let ttl = inner.lease_ttl;
        let renewed = inner
            .store
            .renew(
                std::slice::from_ref(&lease_id),
                now_ms() + millis(ttl) as i64,
            )
            .await
            .inspect_err(|_| {
                inner.metrics.store_errors.inc();
            })?;
        if !renewed.is_empty() {
            // The sweeper freed it meanwhile (clock jump): nothing to refund.
            reservation.disarm();
            return Ok(self.rejected(
                &input.tenant,
                RejectReason::QueueTimeout,
                "lease expired while queued".into(),
                0,
                views,
            ));
        }
        inner
            .permits
            .insert(lease_id.clone(), permit, Instant::now() + ttl);
        reservation.disarm();
        inner
            .metrics
            .admitted
            .get_or_create(&Metrics::tenant(&input.tenant))
            .inc();
        Ok(AdmitDecision::Admitted {
            lease_id,
            ttl,
            views,
            queue_wait,
        })
    }

    fn rejected(
        &self,
        tenant: &str,
        reason: RejectReason,
        message: String,
        retry_after_ms: u64,
        views: ScopeViews,
    ) -> AdmitDecision {
        self.inner.metrics.reject(tenant, reason.label());
        if reason.is_tenants_doing() {
            self.breaker_signal(tenant, Signal::Failure);
        }
        AdmitDecision::Rejected {
            reason,
            message,
            retry_after_ms,
            views,
        }
    }
}

impl Limiter {
    /// Counts an outcome for `tenant`'s breaker; logs and counts a trip.
    pub(super) fn breaker_signal(&self, tenant: &str, signal: Signal) {
        let inner = &*self.inner;
        if let Some(open) = inner.breakers.record(tenant, signal, clock_ms(now_ms())) {
            inner
                .metrics
                .circuit_trips
                .get_or_create(&Metrics::tenant(tenant))
                .inc();
            tracing::warn!(
                tenant,
                cooldown_ms = open.retry_after_ms,
                "circuit breaker opened: the tenant's requests kept failing"
            );
        }
    }
}

/// The breaker's clock: Unix ms, never negative.
fn clock_ms(now: i64) -> u64 {
    u64::try_from(now).unwrap_or(0)
}

/// A reservation not yet handed to a holder: refunded if dropped, which is
/// what happens when the client cancels Admit while it waits in the queue.
struct Reservation {
    limiter: Limiter,
    lease: Option<LeaseRecord>,
}

impl Reservation {
    fn lease_id(&self) -> &str {
        self.lease.as_ref().map_or("", |l| l.id.as_str())
    }

    fn disarm(&mut self) {
        self.lease = None;
    }

    async fn refund(&mut self) {
        if let Some(lease) = self.lease.take()
            && let Err(e) = self
                .limiter
                .settle(&lease, Settlement::Refund, false, "refund", None)
                .await
        {
            tracing::error!(error = %e, lease = %lease.id, "refund failed; the lease expires instead");
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let Some(lease) = self.lease.take() else {
            return;
        };
        let limiter = self.limiter.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    let mut r = Reservation {
                        limiter,
                        lease: Some(lease),
                    };
                    r.refund().await;
                });
            }
            Err(_) => {
                tracing::error!(lease = %lease.id, "no runtime to refund on; the lease expires instead");
            }
        }
    }
}
