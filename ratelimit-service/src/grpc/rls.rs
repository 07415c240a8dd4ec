//! `envoy.service.ratelimit.v3.RateLimitService` over the [`RlsLimiter`].

use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::HeaderValue;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    Code, DescriptorStatus, RateLimit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitService;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::envoy::r#type::v3::RateLimitUnit;
use envoy_types::pb::google::protobuf::Duration as PbDuration;
use tonic::{Request, Response, Status};

use super::unavailable;
use crate::clock::now_ms;
use crate::limits::Rate;
use crate::rls::{Descriptor, RlsLimiter};

pub struct RlsService {
    limiter: Arc<RlsLimiter>,
}

impl RlsService {
    pub fn new(limiter: Arc<RlsLimiter>) -> Self {
        Self { limiter }
    }
}

fn override_rate(requests_per_unit: u32, unit: i32) -> Option<Rate> {
    let period_ms = match RateLimitUnit::try_from(unit).ok()? {
        RateLimitUnit::Second => 1_000,
        RateLimitUnit::Minute => 60_000,
        RateLimitUnit::Hour => 3_600_000,
        RateLimitUnit::Day => 86_400_000,
        RateLimitUnit::Month => 30 * 86_400_000,
        RateLimitUnit::Year => 365 * 86_400_000,
        RateLimitUnit::Unknown => return None,
    };
    Some(Rate {
        limit: u64::from(requests_per_unit),
        period_ms,
    })
}

fn unit_of(rate: &Rate) -> Unit {
    match rate.period_ms {
        1_000 => Unit::Second,
        60_000 => Unit::Minute,
        3_600_000 => Unit::Hour,
        86_400_000 => Unit::Day,
        _ => Unit::Unknown,
    }
}

fn duration(ms: u64) -> PbDuration {
    PbDuration {
        seconds: i64::try_from(ms / 1000).unwrap_or(i64::MAX),
        nanos: i32::try_from((ms % 1000) * 1_000_000).unwrap_or(0),
    }
}

#[tonic::async_trait]
impl RateLimitService for RlsService {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let r = request.into_inner();
        let descriptors: Vec<Descriptor> = r
            .descriptors
            .into_iter()
            .map(|d| Descriptor {
                entries: d.entries.into_iter().map(|e| (e.key, e.value)).collect(),
                hits_addend: d.hits_addend.map(|h| h.value),
                negative_hits: d.is_negative_hits,
                limit_override: d
                    .limit
                    .and_then(|l| override_rate(l.requests_per_unit, l.unit)),
            })
            .collect();
        let decision = self
            .limiter
            .should_rate_limit(&r.domain, &descriptors, r.hits_addend, now_ms())
            .await
            .map_err(unavailable)?;
        let statuses = decision
            .statuses
            .into_iter()
            .map(|s| DescriptorStatus {
                code: if s.over_limit {
                    Code::OverLimit
                } else {
                    Code::Ok
                }
                .into(),
                current_limit: s.limit.as_ref().map(|(rate, name)| RateLimit {
                    name: name.clone(),
                    requests_per_unit: u32::try_from(rate.limit).unwrap_or(u32::MAX),
                    unit: unit_of(rate).into(),
                }),
                limit_remaining: u32::try_from(s.remaining).unwrap_or(u32::MAX),
                duration_until_reset: s.limit.is_some().then(|| duration(s.reset_ms)),
                quota: None,
            })
            .collect();
        let response_headers_to_add = decision
            .headers
            .into_iter()
            .map(|(key, value)| HeaderValue {
                key,
                value,
                ..HeaderValue::default()
            })
            .collect();
        Ok(Response::new(RateLimitResponse {
            overall_code: if decision.over_limit {
                Code::OverLimit
            } else {
                Code::Ok
            }
            .into(),
            statuses,
            response_headers_to_add,
            ..RateLimitResponse::default()
        }))
    }
}
