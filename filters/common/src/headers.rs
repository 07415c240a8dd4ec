//! Headers the gateway owns. Clients must never be able to set them: the
//! first filter strips them before anything reads them.

pub const TENANT_ID: &str = "x-tenant-id";
pub const TENANT_TIER: &str = "x-tenant-tier";
pub const REQUEST_ID: &str = "x-request-id";
pub const POOL: &str = "x-llm-pool";
pub const PREFIX_KEY: &str = "x-prefix-key";
pub const MODEL: &str = "x-llm-model";
/// Prompt-token estimate computed by the policy, for the upstream and logs.
pub const PROMPT_TOKENS: &str = "x-llm-prompt-tokens";
/// `max_tokens` as reserved by the policy, for the upstream and logs.
pub const MAX_TOKENS: &str = "x-llm-max-tokens";
/// Whether the request streams (`true`/`false`), for the upstream and logs.
pub const STREAM: &str = "x-llm-stream";

/// W3C trace context of Envoy's span for the request
/// (`00-%TRACE_ID%-%SPAN_ID%-01`), set by Envoy's header_mutation filter
/// right after tenant-auth when tracing is on; admission passes it to
/// ratelimit-service so the service's spans join the request's trace.
pub const TRACEPARENT: &str = "x-gateway-traceparent";

/// Filter state (not a header): hex SHA-256 of the response body as the
/// client received it, set by llm-policy when it changed the body on the
/// way (a stripped usage chunk, a rewritten error), empty when it lost
/// sight of the body; admission reports it in place of its own digest of
/// what the pool sent.
pub const RESPONSE_SHA256_STATE: &str = "llm_gateway.response_sha256";

/// Set upstream by admission when a request passed unmetered (fail open).
pub const ADMISSION_BYPASSED: &str = "x-gateway-admission";

/// Whether a client-sent header must be removed before any filter runs.
pub fn is_gateway_owned(name: &str) -> bool {
    is_gateway_owned_name(name.as_bytes())
}

/// [`is_gateway_owned`] on a name as the host hands it over: bytes, which
/// a hostile client may have made anything but UTF-8.
pub fn is_gateway_owned_name(name: &[u8]) -> bool {
    let starts = |prefix: &str| {
        name.get(..prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
    };
    starts("x-tenant-")
        || starts("x-llm-")
        || starts("x-gateway-")
        || name.eq_ignore_ascii_case(PREFIX_KEY.as_bytes())
}

/// A request's headers as they arrived, read from the host in one call:
/// each header a phase reads is looked up here rather than asked of the
/// host (a host call and an allocation callback each, which Envoy charges
/// more for than the lookup costs inside the VM). Kept in step with what
/// the module removes; headers the module sets are written to the host
/// only, for the router and the upstream, never read back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderSnapshot {
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl HeaderSnapshot {
    pub fn new(pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Self {
        Self { pairs }
    }

    /// The first value of `name` (names compare without case), as the
    /// host's single-header read answers a header sent more than once.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.pairs
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v.as_slice())
    }

    /// How many times `name` was sent (any case).
    pub fn count(&self, name: &str) -> usize {
        self.pairs
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .count()
    }

    /// [`Self::get`] as text; `Err` for a value that is not UTF-8.
    pub fn text(&self, name: &str) -> Result<Option<String>, std::str::Utf8Error> {
        self.get(name)
            .map(|v| std::str::from_utf8(v).map(str::to_owned))
            .transpose()
    }

    /// Forgets every header whose name `remove` picks; the distinct names
    /// forgotten, for the caller to remove from the host too.
    pub fn remove_where(&mut self, remove: impl Fn(&[u8]) -> bool) -> Vec<Vec<u8>> {
        let mut removed: Vec<Vec<u8>> = Vec::new();
        self.pairs.retain(|(name, _)| {
            if !remove(name) {
                return true;
            }
            if !removed.iter().any(|r| r.eq_ignore_ascii_case(name)) {
                removed.push(name.clone());
            }
            false
        });
        removed
    }

    /// Forgets `name`; whether it was there.
    pub fn remove(&mut self, name: &str) -> bool {
        !self
            .remove_where(|n| n.eq_ignore_ascii_case(name.as_bytes()))
            .is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(pairs: &[(&str, &[u8])]) -> HeaderSnapshot {
        HeaderSnapshot::new(
            pairs
                .iter()
                .map(|(n, v)| (n.as_bytes().to_vec(), v.to_vec()))
                .collect(),
        )
    }

    #[test]
    fn a_snapshot_answers_as_the_host_would() {
        let mut headers = snapshot(&[
            (":path", b"/v1/chat/completions"),
            ("Authorization", b"Bearer one"),
            ("authorization", b"Bearer two"),
            ("x-tenant-id", b"forged"),
            ("X-Tenant-Tier", b"gold"),
            ("x-bad", b"\xff\xfe"),
        ]);
        // The first of a repeated header, whatever the names' case.
        assert_eq!(headers.get("authorization"), Some(&b"Bearer one"[..]));
        assert_eq!(headers.count("AUTHORIZATION"), 2);
        assert_eq!(headers.count(":path"), 1);
        assert_eq!(headers.count("x-absent"), 0);
        assert_eq!(
            headers.text(":path").unwrap().as_deref(),
            Some("/v1/chat/completions")
        );
        assert!(headers.text("x-bad").is_err());
        assert_eq!(headers.text("x-absent").unwrap(), None);
        let removed = headers.remove_where(is_gateway_owned_name);
        assert_eq!(
            removed,
            vec![b"x-tenant-id".to_vec(), b"X-Tenant-Tier".to_vec()]
        );
        assert!(headers.get("x-tenant-id").is_none() && headers.get("x-tenant-tier").is_none());
        assert!(headers.remove("AUTHORIZATION"));
        assert_eq!(headers.get("authorization"), None, "every value went");
        assert!(!headers.remove("authorization"));
        assert!(headers.get(":path").is_some());
    }

    #[test]
    fn owned_headers() {
        for h in [
            "x-tenant-id",
            "X-Tenant-Tier",
            "x-tenant-anything",
            "x-llm-pool",
            "X-LLM-Model",
            "x-prefix-key",
            "x-gateway-admission",
        ] {
            assert!(is_gateway_owned(h), "{h}");
        }
        for h in [
            "authorization",
            "x-request-id",
            "x-tenantid",
            "x-prefix",
            "content-type",
        ] {
            assert!(!is_gateway_owned(h), "{h}");
        }
        assert!(is_gateway_owned_name(b"X-Tenant-\xe9"));
        assert!(!is_gateway_owned_name(b"x-note-\xe9"));
        assert!(!is_gateway_owned_name(b"x-"));
    }
}
