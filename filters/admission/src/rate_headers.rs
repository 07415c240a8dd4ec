//! OpenAI's rate-limit response headers.

use admission_proto::v1::RateLimitInfo;

/// OpenAI-style duration: `20ms`, `1.5s`, `6m0s`.
pub fn format_reset(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        let s = format!("{:.3}", ms as f64 / 1000.0);
        format!("{}s", s.trim_end_matches('0').trim_end_matches('.'))
    } else {
        let secs = ms / 1000;
        format!("{}m{}s", secs / 60, secs % 60)
    }
}

/// `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` for the limits
/// the tenant has; an absent limit gets no headers.
pub fn rate_limit_headers(info: &RateLimitInfo) -> Vec<(&'static str, String)> {
    let mut out = Vec::with_capacity(6);
    let mut push = |name: &'static str, v: Option<u64>, reset: bool| {
        if let Some(v) = v {
            out.push((
                name,
                if reset {
                    format_reset(v)
                } else {
                    v.to_string()
                },
            ));
        }
    };
    push("x-ratelimit-limit-requests", info.limit_requests, false);
    push(
        "x-ratelimit-remaining-requests",
        info.remaining_requests,
        false,
    );
    push("x-ratelimit-reset-requests", info.reset_requests_ms, true);
    push("x-ratelimit-limit-tokens", info.limit_tokens, false);
    push("x-ratelimit-remaining-tokens", info.remaining_tokens, false);
    push("x-ratelimit-reset-tokens", info.reset_tokens_ms, true);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_formats() {
        assert_eq!(format_reset(20), "20ms");
        assert_eq!(format_reset(1000), "1s");
        assert_eq!(format_reset(1500), "1.5s");
        assert_eq!(format_reset(59_999), "59.999s");
        assert_eq!(format_reset(360_000), "6m0s");
    }

    #[test]
    fn only_present_limits() {
        let info = RateLimitInfo {
            limit_tokens: Some(1000),
            remaining_tokens: Some(250),
            reset_tokens_ms: Some(45_000),
            ..Default::default()
        };
        let h = rate_limit_headers(&info);
        assert_eq!(
            h,
            vec![
                ("x-ratelimit-limit-tokens", "1000".to_owned()),
                ("x-ratelimit-remaining-tokens", "250".to_owned()),
                ("x-ratelimit-reset-tokens", "45s".to_owned()),
            ]
        );
    }
}
