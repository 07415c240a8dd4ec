//! The one place where the service's decision becomes what the client
//! sees: status, OpenAI error code, `retry-after` and rate-limit headers.

use admission_proto::v1::{AdmitResponse, Decision, RateLimitInfo, RejectReason};
use filter_common::{ErrorKind, GatewayError};
use tenant_registry::FailMode;

use crate::rate_headers::rate_limit_headers;

/// The filter's reading of an Admit answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    Admitted {
        lease_id: String,
        rate_limit: Option<RateLimitInfo>,
        queue_wait_ms: u64,
        /// Request-body bytes to send back for the tenant's audit trail.
        audit_prompt_bytes: u32,
    },
    Rejected(GatewayError),
}

fn retry_after(mut error: GatewayError, ms: u64) -> GatewayError {
    if ms > 0 {
        // Whole seconds, rounded up: a client that waits this long may succeed.
        error = error
            .with_header("retry-after", ms.div_ceil(1000).to_string())
            .with_header("retry-after-ms", ms.to_string());
    }
    error
}

impl Admission {
    pub fn from_response(resp: AdmitResponse) -> Self {
        if resp.decision() == Decision::Admitted {
            return Admission::Admitted {
                lease_id: resp.lease_id,
                rate_limit: resp.rate_limit,
                queue_wait_ms: resp.queue_wait_ms,
                audit_prompt_bytes: resp.audit_prompt_bytes,
            };
        }
        let message = if resp.message.is_empty() {
            "Request refused by admission control.".to_owned()
        } else {
            resp.message.clone()
        };
        let (status, kind, code) = match resp.reason() {
            RejectReason::BudgetExhausted => {
                (429, ErrorKind::InsufficientQuota, "insufficient_quota")
            }
            RejectReason::QueueTimeout => (503, ErrorKind::ServerError, "queue_timeout"),
            RejectReason::UnknownTenant => (403, ErrorKind::PermissionError, "unknown_tenant"),
            RejectReason::RequestTooLarge => (429, ErrorKind::RateLimitError, "request_too_large"),
            RejectReason::QueueFull => (429, ErrorKind::RateLimitError, "queue_full"),
            RejectReason::CircuitOpen => (429, ErrorKind::RateLimitError, "circuit_open"),
            RejectReason::RequestsPerMinute
            | RejectReason::TokensPerMinute
            | RejectReason::RequestsPerWindow
            | RejectReason::TokensPerWindow
            | RejectReason::Concurrency
            | RejectReason::Unspecified => (429, ErrorKind::RateLimitError, "rate_limit_exceeded"),
        };
        let mut error = retry_after(
            GatewayError::new(status, kind, code, message),
            resp.retry_after_ms,
        );
        if let Some(info) = &resp.rate_limit {
            for (k, v) in rate_limit_headers(info) {
                error = error.with_header(k, v);
            }
        }
        Admission::Rejected(error)
    }
}

/// What to do when ratelimit-service cannot be asked: `None` lets the request
/// through unmetered (fail open), otherwise the reply.
pub fn unavailable(mode: FailMode) -> Option<GatewayError> {
    match mode {
        FailMode::Open => None,
        FailMode::Closed => Some(retry_after(
            GatewayError::new(
                503,
                ErrorKind::ServerError,
                "admission_unavailable",
                "Admission control is unavailable; try again shortly.",
            ),
            1000,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(reason: RejectReason, retry_ms: u64) -> GatewayError {
        let resp = AdmitResponse {
            decision: Decision::Rejected as i32,
            reason: reason as i32,
            retry_after_ms: retry_ms,
            message: "nope".into(),
            rate_limit: Some(RateLimitInfo {
                limit_requests: Some(10),
                remaining_requests: Some(0),
                reset_requests_ms: Some(6000),
                ..Default::default()
            }),
            ..Default::default()
        };
        match Admission::from_response(resp) {
            Admission::Rejected(e) => e,
            other => panic!("expected rejection, got {other:?}"),
        }
    }

    fn header<'a>(e: &'a GatewayError, name: &str) -> Option<&'a str> {
        e.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn reasons_map_to_status_and_code() {
        let cases = [
            (RejectReason::RequestsPerMinute, 429, "rate_limit_exceeded"),
            (RejectReason::TokensPerMinute, 429, "rate_limit_exceeded"),
            (RejectReason::RequestsPerWindow, 429, "rate_limit_exceeded"),
            (RejectReason::TokensPerWindow, 429, "rate_limit_exceeded"),
            (RejectReason::Concurrency, 429, "rate_limit_exceeded"),
            (RejectReason::BudgetExhausted, 429, "insufficient_quota"),
            (RejectReason::QueueFull, 429, "queue_full"),
            (RejectReason::QueueTimeout, 503, "queue_timeout"),
            (RejectReason::UnknownTenant, 403, "unknown_tenant"),
            (RejectReason::RequestTooLarge, 429, "request_too_large"),
            (RejectReason::CircuitOpen, 429, "circuit_open"),
        ];
        for (reason, status, code) in cases {
            let e = rejected(reason, 1500);
            assert_eq!((e.status, e.code), (status, code), "{reason:?}");
        }
        assert_eq!(
            rejected(RejectReason::BudgetExhausted, 0).kind,
            ErrorKind::InsufficientQuota
        );
    }

    #[test]
    fn retry_after_rounds_up_and_headers_ride_along() {
        let e = rejected(RejectReason::RequestsPerMinute, 1500);
        assert_eq!(header(&e, "retry-after"), Some("2"));
        assert_eq!(header(&e, "retry-after-ms"), Some("1500"));
        assert_eq!(header(&e, "x-ratelimit-remaining-requests"), Some("0"));
        assert_eq!(header(&e, "x-ratelimit-reset-requests"), Some("6s"));
        assert!(header(&rejected(RejectReason::RequestTooLarge, 0), "retry-after").is_none());
    }

    #[test]
    fn fail_modes() {
        assert!(unavailable(FailMode::Open).is_none());
        let e = unavailable(FailMode::Closed).unwrap();
        assert_eq!((e.status, e.code), (503, "admission_unavailable"));
    }

    #[test]
    fn admitted() {
        let resp = AdmitResponse {
            decision: Decision::Admitted as i32,
            lease_id: "l1".into(),
            queue_wait_ms: 7,
            ..Default::default()
        };
        assert!(
            matches!(Admission::from_response(resp), Admission::Admitted { ref lease_id, queue_wait_ms: 7, .. } if lease_id == "l1")
        );
    }
}
