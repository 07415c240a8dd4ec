//! The gRPC port: the Admission API and Envoy's RateLimitService, side by side.

pub mod admission;
pub mod admit_stream;
pub mod rls;

use std::time::{Duration, Instant};

use tonic::Status;
use tonic::metadata::MetadataMap;

/// Store failures answer UNAVAILABLE, not INTERNAL or UNKNOWN: the callers
/// (the admission filter, Envoy's ratelimit filter) treat an unavailable
/// service by their configured failure mode (the tier's `fail_mode`,
/// `failure_mode_deny`) instead of guessing.
pub fn unavailable(e: impl std::fmt::Display) -> Status {
    tracing::warn!(error = %e, "answering UNAVAILABLE");
    Status::unavailable(format!("ratelimit-service cannot decide: {e}"))
}

/// When the caller stops waiting, from the `grpc-timeout` header, less a
/// margin so the answer (e.g. QUEUE_TIMEOUT) still arrives in time.
pub fn caller_deadline(metadata: &MetadataMap) -> Option<Instant> {
    let raw = metadata.get("grpc-timeout")?.to_str().ok()?;
    Some(deadline_in(parse_grpc_timeout(raw)?))
}

/// When a caller that waits `timeout` from now stops waiting, less a margin
/// so the answer (e.g. QUEUE_TIMEOUT) still arrives in time.
pub fn deadline_in(timeout: Duration) -> Instant {
    const MARGIN: Duration = Duration::from_millis(50);
    Instant::now() + timeout.saturating_sub(MARGIN)
}

/// `grpc-timeout`: up to 8 digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(raw: &str) -> Option<Duration> {
    if raw.len() < 2 || raw.len() > 9 {
        return None;
    }
    let (digits, unit) = raw.split_at(raw.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::parse_grpc_timeout;
    use std::time::Duration;

    #[test]
    fn grpc_timeouts() {
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("5x"), None);
        assert_eq!(parse_grpc_timeout("m"), None);
    }
}
