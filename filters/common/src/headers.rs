//! Headers the gateway owns. Clients must never be able to set them: the
//! first filter strips them before anything reads them.

pub const TENANT_ID: &str = "x-tenant-id";
pub const TENANT_TIER: &str = "x-tenant-tier";
pub const REQUEST_ID: &str = "x-request-id";
pub const POOL: &str = "x-llm-pool";
pub const PREFIX_KEY: &str = "x-prefix-key";
pub const MODEL: &str = "x-llm-model";
/// Prompt-token estimate computed by llm-policy, read by admission.
pub const PROMPT_TOKENS: &str = "x-llm-prompt-tokens";
/// `max_tokens` as reserved by llm-policy, read by admission.
pub const MAX_TOKENS: &str = "x-llm-max-tokens";
/// Whether the request streams (`true`/`false`), read by admission.
pub const STREAM: &str = "x-llm-stream";

/// Set upstream by admission when a request passed unmetered (fail open).
pub const ADMISSION_BYPASSED: &str = "x-gateway-admission";

/// Whether a client-sent header must be removed before any filter runs.
pub fn is_gateway_owned(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.starts_with("x-tenant-")
        || lower.starts_with("x-llm-")
        || lower.starts_with("x-gateway-")
        || lower == PREFIX_KEY
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
