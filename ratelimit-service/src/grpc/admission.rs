//! `llmgateway.admission.v1.Admission` over the [`Limiter`].

use std::time::{Duration, Instant};

use admission_proto::v1::{
    self as pb, AdmitRequest, AdmitResponse, AdmitStreamRequest, CompleteBatchRequest,
    CompleteRequest, CompleteResponse, PoolLimitsRequest, PoolLimitsResponse, PoolModelLimit,
    RenewRequest, RenewResponse, admission_server::Admission,
};
use futures_util::future::join_all;
use opentelemetry::trace::{Span as _, SpanKind, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use tonic::{Request, Response, Status, Streaming};

use super::admit_stream::{self, AnswerStream};
use super::{caller_deadline, unavailable};
use crate::audit::{AuditRecord, Entry};
use crate::clock::now_ms;
use crate::limiter::{
    AdmitDecision, AuditFacts, CompleteOutcome, Completion, Limiter, RejectReason, Usage,
};
use crate::limits::plan::{AdmitInput, AdmitPhase};
use crate::limits::{Per, ScopeViews};
use crate::metrics::PhaseLabel;
use crate::pool::models::PoolModels;
use crate::telemetry;

#[derive(Clone)]
pub struct AdmissionService {
    limiter: Limiter,
    pool_models: PoolModels,
}

impl AdmissionService {
    pub fn new(limiter: Limiter, pool_models: PoolModels) -> Self {
        Self {
            limiter,
            pool_models,
        }
    }

    pub(super) fn limiter(&self) -> &Limiter {
        &self.limiter
    }
}

fn reason(r: RejectReason) -> pb::RejectReason {
    match r {
        RejectReason::Requests(Per::Minute) => pb::RejectReason::RequestsPerMinute,
        RejectReason::Tokens(Per::Minute) => pb::RejectReason::TokensPerMinute,
        RejectReason::Requests(_) => pb::RejectReason::RequestsPerWindow,
        RejectReason::Tokens(_) => pb::RejectReason::TokensPerWindow,
        RejectReason::Concurrency => pb::RejectReason::Concurrency,
        RejectReason::BudgetExhausted => pb::RejectReason::BudgetExhausted,
        RejectReason::QueueFull => pb::RejectReason::QueueFull,
        RejectReason::QueueTimeout => pb::RejectReason::QueueTimeout,
        RejectReason::UnknownTenant => pb::RejectReason::UnknownTenant,
        RejectReason::RequestTooLarge => pb::RejectReason::RequestTooLarge,
        RejectReason::CircuitOpen => pb::RejectReason::CircuitOpen,
    }
}

fn rate_limit_info(v: &ScopeViews) -> pb::RateLimitInfo {
    pb::RateLimitInfo {
        limit_requests: v.requests.map(|b| b.limit),
        remaining_requests: v.requests.map(|b| b.remaining),
        reset_requests_ms: v.requests.map(|b| b.reset_ms),
        limit_tokens: v.tokens.map(|b| b.limit),
        remaining_tokens: v.tokens.map(|b| b.remaining),
        reset_tokens_ms: v.tokens.map(|b| b.reset_ms),
    }
}

fn completion(r: CompleteRequest) -> Completion {
    let outcome = match pb::Outcome::try_from(r.outcome) {
        Ok(pb::Outcome::Completed) => CompleteOutcome::Completed,
        Ok(pb::Outcome::ClientCancelled) => CompleteOutcome::ClientCancelled,
        Ok(pb::Outcome::UpstreamError) => CompleteOutcome::UpstreamError,
        Ok(pb::Outcome::UpstreamRejected) => CompleteOutcome::UpstreamRejected,
        Ok(pb::Outcome::Released) => CompleteOutcome::Released,
        _ => CompleteOutcome::Unspecified,
    };
    Completion {
        lease_id: r.lease_id,
        outcome,
        usage: r.usage_known.then_some(Usage {
            prompt_tokens: u64::from(r.prompt_tokens),
            completion_tokens: u64::from(r.completion_tokens),
            cached_tokens: u64::from(r.cached_tokens),
        }),
        ttft: (r.ttft_ms > 0).then(|| Duration::from_millis(r.ttft_ms)),
        cached_tokens_reported: r.cached_tokens_reported,
        duration: Duration::from_millis(r.latency_ms),
        audit: r.audit.map(audit_facts).unwrap_or_default(),
    }
}

/// A digest as the filter sent it: 32 bytes, else none (a report cannot
/// make the trail carry anything but a SHA-256).
fn digest_hex(bytes: &[u8]) -> String {
    if bytes.len() == 32 {
        hex::encode(bytes)
    } else {
        String::new()
    }
}

/// Text fields of a report are cut to this many bytes: the trail stores
/// them as given.
const MAX_FIELD: usize = 512;

fn bounded(mut s: String) -> String {
    if s.len() > MAX_FIELD {
        let mut cut = MAX_FIELD;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

fn audit_facts(a: pb::AuditFacts) -> AuditFacts {
    AuditFacts {
        credential: bounded(a.credential),
        request_sha256: digest_hex(&a.request_sha256),
        response_sha256: digest_hex(&a.response_sha256),
        http_status: a.http_status,
        replica: bounded(a.upstream_host),
        prompt: (!a.prompt.is_empty()).then_some(a.prompt),
        prompt_truncated: a.prompt_truncated,
    }
}

/// What is known of a refused request, for its audit record.
struct RefusalFacts {
    tenant: String,
    model: String,
    pool: String,
    request_id: String,
    /// As sent: bounded and hex-encoded only for a refusal's record (most
    /// admissions are not refused, and this runs on every one).
    credential: String,
    request_sha256: Vec<u8>,
}

impl AdmissionService {
    /// A refused request is a request too: the trail shows who was turned
    /// away and why, with what the gateway knew of it.
    async fn audit_refusal(&self, facts: RefusalFacts, why: RejectReason) {
        let now = now_ms();
        let record = AuditRecord {
            ts: crate::clock::rfc3339(now),
            ts_ms: now,
            request_id: facts.request_id,
            tenant: facts.tenant,
            credential: bounded(facts.credential),
            model: facts.model,
            pool: facts.pool,
            http_status: why.http_status(),
            outcome: "rejected".into(),
            reason: why.label().into(),
            usd: "0".into(),
            request_sha256: digest_hex(&facts.request_sha256),
            ..AuditRecord::default()
        };
        self.limiter
            .audit()
            .write(Entry {
                record,
                prompt: None,
            })
            .await;
    }
}

fn phase_label(phase: AdmitPhase) -> &'static str {
    match phase {
        AdmitPhase::Open => "open",
        AdmitPhase::Reserve => "reserve",
        AdmitPhase::Full => "full",
    }
}

/// The Admit span, a child of the gateway's; an empty context when traces
/// are off.
fn admit_span(r: &AdmitRequest, phase: AdmitPhase) -> Context {
    if !telemetry::enabled() {
        return Context::new();
    }
    let tracer = telemetry::tracer();
    let span = tracer
        .span_builder("ratelimit.admit")
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("tenant_id", r.tenant.clone()),
            KeyValue::new("tier", r.tier.clone()),
            KeyValue::new("pool", r.pool.clone()),
            KeyValue::new("model", r.model.clone()),
            KeyValue::new("request_id", r.request_id.clone()),
            KeyValue::new("phase", phase_label(phase)),
        ])
        .start_with_context(&tracer, &telemetry::parent(&r.traceparent));
    Context::new().with_span(span)
}

/// Ends the Admit span with its decision; a wait in the fair queue becomes
/// its child span, ending now (the wait is the last thing Admit does).
fn trace_decision(cx: &Context, decision: &AdmitDecision) {
    if !telemetry::enabled() {
        return;
    }
    let span = cx.span();
    match decision {
        AdmitDecision::Admitted { queue_wait, .. } => {
            span.set_attribute(KeyValue::new("decision", "admitted"));
            span.set_attribute(KeyValue::new(
                "queue_wait_ms",
                i64::try_from(millis(*queue_wait)).unwrap_or(i64::MAX),
            ));
            let now = std::time::SystemTime::now();
            let tracer = telemetry::tracer();
            let mut wait = tracer
                .span_builder("ratelimit.queue_wait")
                .with_start_time(now.checked_sub(*queue_wait).unwrap_or(now))
                .start_with_context(&tracer, cx);
            wait.end_with_timestamp(now);
        }
        AdmitDecision::Rejected { reason, .. } => {
            span.set_attribute(KeyValue::new("decision", "rejected"));
            span.set_attribute(KeyValue::new("reason", reason.label()));
        }
    }
    span.end();
}

/// Settles one report inside its own span, a child of the request's.
async fn settle_traced(
    limiter: Limiter,
    report: CompleteRequest,
) -> Result<(), crate::limiter::LimiterError> {
    if !telemetry::enabled() {
        return limiter.complete(completion(report)).await;
    }
    let tracer = telemetry::tracer();
    let mut span = tracer
        .span_builder("ratelimit.settle")
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("outcome", report.outcome().as_str_name()),
            KeyValue::new("prompt_tokens", i64::from(report.prompt_tokens)),
            KeyValue::new("completion_tokens", i64::from(report.completion_tokens)),
        ])
        .start_with_context(&tracer, &telemetry::parent(&report.traceparent));
    let result = limiter.complete(completion(report)).await;
    if let Err(e) = &result {
        span.set_status(opentelemetry::trace::Status::error(e.to_string()));
    }
    span.end();
    result
}

/// Settles `reports` as `CompleteBatch` does; UNAVAILABLE naming the first
/// failure when any could not be settled.
pub(super) async fn settle_all(
    limiter: &Limiter,
    reports: Vec<CompleteRequest>,
) -> Result<(), Status> {
    // Settled concurrently, so the ledger's group commit syncs the whole
    // batch at once instead of once per report; in one task, which the
    // ledger's answers wake once for the batch rather than a task per
    // report. Spawned: a caller that gives up must not abort a settlement
    // halfway.
    let total = reports.len();
    let settling = reports
        .into_iter()
        .map(|report| settle_traced(limiter.clone(), report));
    let settled = tokio::spawn(join_all(settling)).await;
    let mut failed = Vec::new();
    match settled {
        Ok(results) => failed.extend(
            results
                .into_iter()
                .filter_map(|r| r.err().map(|e| e.to_string())),
        ),
        Err(e) => failed.push(e.to_string()),
    }
    if let Some(first) = failed.first() {
        return Err(Status::unavailable(format!(
            "{} of {total} reports not settled; first: {first}",
            failed.len()
        )));
    }
    Ok(())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl AdmissionService {
    /// One admission, asked by an Admit call or by a message on an
    /// `AdmitStream`: the answer, or the status the call would end with.
    /// The caller stops waiting at `deadline`; dropping the future leaves
    /// the queue and refunds.
    pub(super) async fn decide(
        &self,
        r: AdmitRequest,
        deadline: Option<Instant>,
    ) -> Result<AdmitResponse, Status> {
        if r.tenant.is_empty() {
            return Err(Status::invalid_argument("tenant is required"));
        }
        let phase = match pb::Phase::try_from(r.phase) {
            Ok(pb::Phase::Open) => AdmitPhase::Open,
            Ok(pb::Phase::Reserve) => AdmitPhase::Reserve,
            Ok(pb::Phase::Full) => AdmitPhase::Full,
            Err(_) => return Err(Status::invalid_argument("unknown admission phase")),
        };
        self.limiter
            .metrics()
            .admit_calls
            .get_or_create(&PhaseLabel {
                phase: phase_label(phase),
            })
            .inc();
        let cx = admit_span(&r, phase);
        // Kept for the audit record of a refusal.
        let refusal = RefusalFacts {
            tenant: r.tenant.clone(),
            model: r.model.clone(),
            pool: r.pool.clone(),
            request_id: r.request_id.clone(),
            credential: r.credential,
            request_sha256: r.request_sha256,
        };
        let input = AdmitInput {
            phase,
            tenant: r.tenant,
            model: r.model,
            pool: r.pool,
            holder: r.holder,
            request_id: r.request_id,
            est_prompt_tokens: u64::from(r.estimated_prompt_tokens),
            max_tokens: u64::from(r.max_tokens),
        };
        let decision = match self.limiter.admit(input, deadline).await {
            Ok(decision) => decision,
            Err(e) => {
                cx.span()
                    .set_status(opentelemetry::trace::Status::error(e.to_string()));
                cx.span().end();
                return Err(unavailable(e));
            }
        };
        trace_decision(&cx, &decision);
        let response = match decision {
            AdmitDecision::Admitted {
                lease_id,
                ttl,
                views,
                queue_wait,
            } => AdmitResponse {
                decision: pb::Decision::Admitted.into(),
                lease_id,
                lease_ttl_ms: u32::try_from(ttl.as_millis()).unwrap_or(u32::MAX),
                rate_limit: Some(rate_limit_info(&views)),
                queue_wait_ms: millis(queue_wait),
                // Only the phase that sees the body (and bills) captures it.
                audit_prompt_bytes: if phase == AdmitPhase::Open {
                    0
                } else {
                    self.limiter.audit().prompt_bytes(&refusal.tenant)
                },
                ..AdmitResponse::default()
            },
            AdmitDecision::Rejected {
                reason: why,
                message,
                retry_after_ms,
                views,
            } => {
                self.audit_refusal(refusal, why).await;
                AdmitResponse {
                    decision: pb::Decision::Rejected.into(),
                    reason: reason(why).into(),
                    message,
                    retry_after_ms,
                    rate_limit: Some(rate_limit_info(&views)),
                    ..AdmitResponse::default()
                }
            }
        };
        Ok(response)
    }
}

#[tonic::async_trait]
impl Admission for AdmissionService {
    async fn admit(
        &self,
        request: Request<AdmitRequest>,
    ) -> Result<Response<AdmitResponse>, Status> {
        let deadline = caller_deadline(request.metadata());
        self.decide(request.into_inner(), deadline)
            .await
            .map(Response::new)
    }

    type AdmitStreamStream = AnswerStream;

    async fn admit_stream(
        &self,
        request: Request<Streaming<AdmitStreamRequest>>,
    ) -> Result<Response<AnswerStream>, Status> {
        Ok(Response::new(admit_stream::serve(
            self.clone(),
            request.into_inner(),
        )))
    }

    async fn complete(
        &self,
        request: Request<CompleteRequest>,
    ) -> Result<Response<CompleteResponse>, Status> {
        settle_traced(self.limiter.clone(), request.into_inner())
            .await
            .map_err(unavailable)?;
        Ok(Response::new(CompleteResponse {}))
    }

    async fn complete_batch(
        &self,
        request: Request<CompleteBatchRequest>,
    ) -> Result<Response<CompleteResponse>, Status> {
        settle_all(&self.limiter, request.into_inner().reports).await?;
        Ok(Response::new(CompleteResponse {}))
    }

    async fn renew(
        &self,
        request: Request<RenewRequest>,
    ) -> Result<Response<RenewResponse>, Status> {
        let ids = request.into_inner().lease_ids;
        let unknown_lease_ids = self.limiter.renew(&ids).await.map_err(unavailable)?;
        Ok(Response::new(RenewResponse { unknown_lease_ids }))
    }

    async fn pool_limits(
        &self,
        _request: Request<PoolLimitsRequest>,
    ) -> Result<Response<PoolLimitsResponse>, Status> {
        let limits = self
            .pool_models
            .snapshot()
            .into_iter()
            .map(|(pool, model, max_model_len)| PoolModelLimit {
                pool,
                model,
                max_model_len,
            })
            .collect();
        Ok(Response::new(PoolLimitsResponse { limits }))
    }
}
