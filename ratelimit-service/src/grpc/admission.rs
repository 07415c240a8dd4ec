//! `llmgateway.admission.v1.Admission` over the [`Limiter`].

use std::time::Duration;

use admission_proto::v1::{
    self as pb, AdmitRequest, AdmitResponse, CompleteBatchRequest, CompleteRequest,
    CompleteResponse, PoolLimitsRequest, PoolLimitsResponse, PoolModelLimit, RenewRequest,
    RenewResponse, admission_server::Admission,
};
use tonic::{Request, Response, Status};

use super::{caller_deadline, unavailable};
use crate::limiter::{AdmitDecision, CompleteOutcome, Completion, Limiter, RejectReason, Usage};
use crate::limits::ScopeViews;
use crate::limits::plan::{AdmitInput, AdmitPhase};
use crate::pool_models::PoolModels;

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
}

fn reason(r: RejectReason) -> pb::RejectReason {
    match r {
        RejectReason::RequestsPerMinute => pb::RejectReason::RequestsPerMinute,
        RejectReason::TokensPerMinute => pb::RejectReason::TokensPerMinute,
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
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[tonic::async_trait]
impl Admission for AdmissionService {
    async fn admit(
        &self,
        request: Request<AdmitRequest>,
    ) -> Result<Response<AdmitResponse>, Status> {
        let deadline = caller_deadline(request.metadata());
        let r = request.into_inner();
        if r.tenant.is_empty() {
            return Err(Status::invalid_argument("tenant is required"));
        }
        let phase = match pb::Phase::try_from(r.phase) {
            Ok(pb::Phase::Open) => AdmitPhase::Open,
            Ok(pb::Phase::Reserve) => AdmitPhase::Reserve,
            Ok(pb::Phase::Full) => AdmitPhase::Full,
            Err(_) => return Err(Status::invalid_argument("unknown admission phase")),
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
        let decision = self
            .limiter
            .admit(input, deadline)
            .await
            .map_err(unavailable)?;
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
                ..AdmitResponse::default()
            },
            AdmitDecision::Rejected {
                reason: why,
                message,
                retry_after_ms,
                views,
            } => AdmitResponse {
                decision: pb::Decision::Rejected.into(),
                reason: reason(why).into(),
                message,
                retry_after_ms,
                rate_limit: Some(rate_limit_info(&views)),
                ..AdmitResponse::default()
            },
        };
        Ok(Response::new(response))
    }

    async fn complete(
        &self,
        request: Request<CompleteRequest>,
    ) -> Result<Response<CompleteResponse>, Status> {
        self.limiter
            .complete(completion(request.into_inner()))
            .await
            .map_err(unavailable)?;
        Ok(Response::new(CompleteResponse {}))
    }

    async fn complete_batch(
        &self,
        request: Request<CompleteBatchRequest>,
    ) -> Result<Response<CompleteResponse>, Status> {
        // Settled concurrently, so the ledger's group commit syncs the whole
        // batch at once instead of once per report. Spawned, not joined in a
        // set: a caller that gives up must not abort a settlement halfway.
        let settling: Vec<_> = request
            .into_inner()
            .reports
            .into_iter()
            .map(|report| {
                let limiter = self.limiter.clone();
                tokio::spawn(async move { limiter.complete(completion(report)).await })
            })
            .collect();
        let total = settling.len();
        let mut failed = Vec::new();
        for task in settling {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failed.push(e.to_string()),
                Err(e) => failed.push(e.to_string()),
            }
        }
        if let Some(first) = failed.first() {
            return Err(Status::unavailable(format!(
                "{} of {total} reports not settled; first: {first}",
                failed.len()
            )));
        }
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
