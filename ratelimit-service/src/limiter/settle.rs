//! Complete, Renew and the sweeper: how leases end.

use std::time::{Duration, Instant};

use super::{CompleteOutcome, Completion, Limiter, LimiterError, millis};
use crate::audit::{AuditRecord, Entry};
use crate::breaker::Signal;
use crate::cached_tokens;
use crate::clock::now_ms;
use crate::lease::LeaseRecord;
use crate::ledger::LedgerRecord;
use crate::ledger::export::usd_decimal;
use crate::limits::plan::{Charge, Settlement};
use crate::limits::{cost, plan_settlement};
use crate::metrics::Metrics;

/// Leases the sweeper frees per pass.
const SWEEP_BATCH: usize = 512;

impl Limiter {
    /// Settles a lease with real usage. Idempotent: an unknown lease
    /// (already completed or expired) is a no-op. Returns once the charge
    /// is in the ledger.
    pub async fn complete(&self, completion: Completion) -> Result<(), LimiterError> {
        let inner = &*self.inner;
        let permit = inner.permits.take(&completion.lease_id);
        let Some(lease) = inner.store.lease(&completion.lease_id).await? else {
            return Ok(());
        };
        if let Some(carried) = cached_tokens::evidence(
            completion.outcome,
            completion.usage.as_ref(),
            completion.cached_tokens_reported,
        ) && !lease.pool.is_empty()
        {
            inner.cached_tokens.record(&lease.pool, carried);
        }
        let (settlement, outcome) = match (completion.usage, completion.outcome) {
            // The slot of an OPEN lease: freed, nothing charged.
            (_, CompleteOutcome::Released) => (Settlement::Release, "released"),
            (Some(u), outcome) => (
                Settlement::Usage {
                    prompt: u.prompt_tokens,
                    completion: u.completion_tokens,
                    cached: u.cached_tokens,
                },
                outcome.label(),
            ),
            // Refused by the pool: nothing generated, the output reservation
            // goes back; the prompt estimate stays (the gateway cannot tell
            // how far the pool got, and 4xx storms must not be free).
            (None, CompleteOutcome::UpstreamRejected) => (
                Settlement::Usage {
                    prompt: lease.est_prompt_tokens,
                    completion: 0,
                    cached: 0,
                },
                CompleteOutcome::UpstreamRejected.label(),
            ),
            (None, _) => (Settlement::ReservationAsCharge, "unknown"),
        };
        // The pool's 5xx is not the tenant's doing; a hang-up or a request
        // the pool refused is (retry loops produce both).
        match completion.outcome {
            CompleteOutcome::Completed => self.breaker_signal(&lease.tenant, Signal::Success),
            CompleteOutcome::ClientCancelled | CompleteOutcome::UpstreamRejected => {
                self.breaker_signal(&lease.tenant, Signal::Failure)
            }
            _ => {}
        }
        // The fair queue is charged what the ledgers are: real usage when
        // known, else the reservation it was charged at admission (a tenant
        // that hangs up before its usage arrives must not look light).
        if let Some(mut permit) = permit
            && let Settlement::Usage {
                prompt, completion, ..
            } = settlement
        {
            permit.settle(prompt, completion);
        }
        if let Some(ttft) = completion
            .ttft
            .filter(|_| settlement != Settlement::Release)
        {
            let registry = inner.registry.current();
            // A tenant removed since it was admitted has no tier any more.
            let tier = registry
                .tenant(&lease.tenant)
                .map_or("", |t| t.tier.as_str());
            inner
                .metrics
                .ttft_seconds
                .get_or_create(&crate::metrics::TenantTierLabel {
                    tenant: lease.tenant.clone(),
                    tier: tier.to_owned(),
                })
                .observe(ttft.as_secs_f64());
        }
        // Handed over whole: the audit facts may carry a prompt (up to
        // 64 KiB) that need not be copied.
        let audit = (settlement != Settlement::Release).then_some(completion);
        self.settle(&lease, settlement, false, outcome, audit)
            .await?;
        Ok(())
    }

    pub(super) async fn settle(
        &self,
        lease: &LeaseRecord,
        settlement: Settlement,
        only_if_expired: bool,
        outcome: &str,
        audit: Option<Completion>,
    ) -> Result<bool, LimiterError> {
        let inner = &*self.inner;
        // Counted from before the counters change until the ledger has the
        // record, so `ledger_pending == 0` means every charge visible in the
        // counters survives a crash.
        let _pending = PendingWrite::start(&inner.metrics);
        let registry = inner.registry.current();
        let now = now_ms();
        let (plan, charge) = plan_settlement(
            &registry,
            &inner.throttles,
            lease,
            settlement,
            now,
            only_if_expired,
        );
        let applied = inner.store.settle(&plan).await.inspect_err(|_| {
            inner.metrics.store_errors.inc();
        })?;
        if applied && !matches!(settlement, Settlement::Refund | Settlement::Release) {
            self.record(lease, charge, now, outcome).await?;
            self.write_audit(lease, &charge, now, outcome, audit).await;
        }
        Ok(applied)
    }

    async fn record(
        &self,
        lease: &LeaseRecord,
        charge: Charge,
        now: i64,
        outcome: &str,
    ) -> Result<(), LimiterError> {
        let m = &self.inner.metrics;
        m.tokens(
            &lease.tenant,
            charge.prompt_tokens,
            charge.completion_tokens,
        );
        m.spend_usd
            .get_or_create(&Metrics::tenant(&lease.tenant))
            .inc_by(cost::nanos_to_usd(charge.nanos));
        let record = LedgerRecord {
            ts_ms: now,
            tenant: lease.tenant.clone(),
            model: lease.model.clone(),
            usd_nanos: charge.nanos,
            usd: cost::nanos_to_usd(charge.nanos),
            prompt_tokens: charge.prompt_tokens,
            completion_tokens: charge.completion_tokens,
            cached_tokens: charge.cached_tokens,
            lease: lease.id.clone(),
            outcome: outcome.to_owned(),
            request_id: lease.request_id.clone(),
            pool: lease.pool.clone(),
            reserved_usd_nanos: lease.reserved_nanos,
            reserved_tokens: lease.reserved_tokens,
        };
        self.inner.ledger.append(&record).await.inspect_err(|e| {
            m.ledger_errors.inc();
            tracing::error!(error = %e, lease = %lease.id, "charge applied but not recorded");
        })?;
        Ok(())
    }

    /// The request's audit record (after its charge is in the ledger, so
    /// the record carries what was billed). `completion` is `None` for a
    /// lease that expired: its holder vanished, so only the lease is known.
    async fn write_audit(
        &self,
        lease: &LeaseRecord,
        charge: &Charge,
        now: i64,
        outcome: &str,
        completion: Option<Completion>,
    ) {
        let ttft_ms = completion.as_ref().and_then(|c| c.ttft).map_or(0, millis);
        let duration_ms = completion.as_ref().map_or(0, |c| millis(c.duration));
        let facts = completion.map(|c| c.audit).unwrap_or_default();
        let record = AuditRecord {
            ts: crate::clock::rfc3339(now),
            ts_ms: now,
            request_id: lease.request_id.clone(),
            tenant: lease.tenant.clone(),
            credential: facts.credential,
            model: lease.model.clone(),
            pool: lease.pool.clone(),
            replica: facts.replica,
            http_status: facts.http_status,
            outcome: outcome.to_owned(),
            reason: String::new(),
            prompt_tokens: charge.prompt_tokens,
            completion_tokens: charge.completion_tokens,
            cached_tokens: charge.cached_tokens,
            usd: usd_decimal(charge.nanos),
            ttft_ms,
            duration_ms,
            request_sha256: facts.request_sha256,
            response_sha256: facts.response_sha256,
            prompt: None,
            prompt_truncated: facts.prompt_truncated,
        };
        self.inner
            .audit
            .write(Entry {
                record,
                prompt: facts.prompt,
            })
            .await;
    }

    /// Extends leases by the TTL; returns the ids the service no longer knows.
    pub async fn renew(&self, lease_ids: &[String]) -> Result<Vec<String>, LimiterError> {
        let inner = &*self.inner;
        let ttl = inner.lease_ttl;
        let unknown = inner
            .store
            .renew(lease_ids, now_ms() + millis(ttl) as i64)
            .await?;
        let local_expiry = Instant::now() + ttl;
        for id in lease_ids.iter().filter(|id| !unknown.contains(id)) {
            inner.permits.extend(id, local_expiry);
        }
        Ok(unknown)
    }

    /// Frees leases past their TTL (their holder vanished), charging the
    /// reservation since the request may well have been served, and drops
    /// pool permits of leases completed or expired elsewhere.
    pub async fn sweep(&self) -> Result<usize, LimiterError> {
        let inner = &*self.inner;
        let now = now_ms();
        let mut freed = 0;
        for id in inner.store.expired(now, SWEEP_BATCH).await? {
            let Some(lease) = inner.store.lease(&id).await? else {
                continue;
            };
            if self
                .settle(
                    &lease,
                    Settlement::ReservationAsCharge,
                    true,
                    "expired",
                    None,
                )
                .await?
            {
                inner.permits.take(&id);
                freed += 1;
                inner
                    .metrics
                    .leases_expired
                    .get_or_create(&Metrics::tenant(&lease.tenant))
                    .inc();
                tracing::info!(lease = %id, tenant = %lease.tenant, holder = %lease.holder, "lease expired");
            }
        }
        let local_now = Instant::now();
        for id in inner.permits.past(local_now) {
            match inner.store.lease(&id).await? {
                Some(l) if l.expires_ms > now => {
                    let left =
                        Duration::from_millis(u64::try_from(l.expires_ms - now).unwrap_or(0));
                    inner.permits.extend(&id, local_now + left);
                }
                _ => {
                    inner.permits.take(&id);
                }
            }
        }
        Ok(freed)
    }

    /// Runs [`Self::sweep`] every `interval` until the task is aborted.
    pub async fn sweep_forever(self, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.sweep().await {
                tracing::warn!(error = %e, "lease sweep failed");
            }
        }
    }
}

/// Holds one unit of `ledger_pending` for as long as it lives.
struct PendingWrite<'a>(&'a Metrics);

impl<'a> PendingWrite<'a> {
    fn start(metrics: &'a Metrics) -> Self {
        metrics.ledger_pending.inc();
        Self(metrics)
    }
}

impl Drop for PendingWrite<'_> {
    fn drop(&mut self) {
        self.0.ledger_pending.dec();
    }
}
