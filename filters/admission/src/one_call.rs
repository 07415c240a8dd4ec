//! When a request is admitted in one call instead of two.
//!
//! Two-phase admission asks the service twice per request: OPEN on the
//! headers (the request count and the concurrency slot, so a tenant over
//! either is refused before its body is read) and RESERVE once the policy
//! has decided (tokens, budgets, the pool's fair queue). A small body
//! arrives with its headers, in the same read: refusing it before it is
//! read saves nothing, and the second round trip costs every request a
//! gRPC call on each side. Such a request is admitted once its body is in,
//! with one FULL call that does both.
//!
//! Waiting for the body without an admission must stay bounded: a client
//! that announces a small body and never sends it holds a stream without
//! holding a concurrency slot. [`BodyWaiters`] caps how many requests of
//! one tenant may wait so on a worker; past the cap a request is admitted
//! on its headers as before, where the tenant's concurrency limit holds.

use hashbrown::HashMap;
use tenant_registry::TenantId;

/// The announced body length when a request announcing `content_length`
/// (the header's text; none for a chunked or HTTP/2 body without one) may
/// wait for its body to be admitted in one call, given the largest body
/// that may (`max_body_bytes`, 0: none).
pub fn body_fits_one_call(content_length: Option<&str>, max_body_bytes: u64) -> Option<u64> {
    content_length
        .and_then(|text| text.trim().parse::<u64>().ok())
        .filter(|&announced| announced > 0 && announced <= max_body_bytes)
}

/// Requests per tenant on one worker that wait for their body before any
/// admission call.
#[derive(Debug)]
pub struct BodyWaiters {
    per_tenant: u32,
    waiting: HashMap<TenantId, u32>,
}

impl BodyWaiters {
    pub fn new(per_tenant: u32) -> Self {
        Self {
            per_tenant,
            waiting: HashMap::new(),
        }
    }

    /// A request of `tenant` starts to wait; `false` when the tenant
    /// already has its most waiting (the request is admitted on its
    /// headers instead).
    pub fn join(&mut self, tenant: &TenantId) -> bool {
        let waiting = self.waiting(tenant);
        if waiting >= self.per_tenant {
            return false;
        }
        *self.waiting.entry(tenant.clone()).or_insert(0) = waiting + 1;
        true
    }

    /// A request of `tenant` that waited stopped waiting (it was admitted,
    /// refused, or ended).
    pub fn leave(&mut self, tenant: &TenantId) {
        if let Some(n) = self.waiting.get_mut(tenant.as_str()) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.waiting.remove(tenant.as_str());
            }
        }
    }

    /// Requests of `tenant` waiting now.
    pub fn waiting(&self, tenant: &TenantId) -> u32 {
        self.waiting.get(tenant.as_str()).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_announced_small_body_waits() {
        let fits = |text| body_fits_one_call(text, 16_384);
        assert_eq!(fits(Some("112")), Some(112));
        assert_eq!(fits(Some("16384")), Some(16_384));
        assert_eq!(fits(Some("16385")), None);
        assert_eq!(fits(None), None, "chunked: unknown size");
        assert_eq!(fits(Some("0")), None, "no body to wait for");
        assert_eq!(fits(Some("-1")), None);
        assert_eq!(fits(Some("12x")), None);
        assert_eq!(fits(Some("99999999999999999999999")), None);
        assert_eq!(body_fits_one_call(Some("112"), 0), None, "0 turns it off");
    }

    #[test]
    fn each_tenant_waits_up_to_its_cap() {
        let (acme, other) = (TenantId::from("acme"), TenantId::from("other"));
        let mut waiters = BodyWaiters::new(2);
        assert!(waiters.join(&acme));
        assert!(waiters.join(&acme));
        assert!(!waiters.join(&acme), "third waiter of acme");
        assert!(waiters.join(&other), "another tenant is not affected");
        waiters.leave(&acme);
        assert_eq!(waiters.waiting(&acme), 1);
        assert!(waiters.join(&acme), "a place came free");
        waiters.leave(&acme);
        waiters.leave(&acme);
        waiters.leave(&acme);
        assert_eq!(waiters.waiting(&acme), 0, "never below zero");
        assert!(!BodyWaiters::new(0).join(&acme), "0: no request waits");
    }
}
