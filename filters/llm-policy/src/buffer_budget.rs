//! Bounds the request bytes one worker holds while bodies are read.
//!
//! llm-policy must see a whole body before it can judge it, so Envoy
//! buffers it. Without a bound, slow uploads from one tenant (each under
//! `max_body_bytes`) could grow a worker's memory without limit before any
//! of them is counted. Each worker (one VM) keeps this ledger: bytes held
//! in all, and per tenant; a body that would pass either bound is refused.

use std::collections::HashMap;

use crate::error::PolicyError;

#[derive(Debug)]
pub struct BufferBudget {
    per_worker: u64,
    per_tenant: u64,
    total: u64,
    by_tenant: HashMap<String, u64>,
}

impl BufferBudget {
    pub fn new(per_worker: u64, per_tenant: u64) -> Self {
        Self {
            per_worker,
            per_tenant,
            total: 0,
            by_tenant: HashMap::new(),
        }
    }

    /// A request of `tenant` now holds `to` bytes where it held `from`.
    /// On refusal nothing changes; the caller still holds `from`.
    pub fn grow(&mut self, tenant: &str, from: u64, to: u64) -> Result<(), PolicyError> {
        let more = to.saturating_sub(from);
        if more == 0 {
            return Ok(());
        }
        let tenant_now = self.by_tenant.get(tenant).copied().unwrap_or(0);
        if tenant_now.saturating_add(more) > self.per_tenant {
            return Err(PolicyError::TenantBufferFull);
        }
        if self.total.saturating_add(more) > self.per_worker {
            return Err(PolicyError::WorkerBufferFull);
        }
        self.total += more;
        *self.by_tenant.entry(tenant.to_owned()).or_insert(0) += more;
        Ok(())
    }

    /// A request of `tenant` that held `held` bytes let them go.
    pub fn release(&mut self, tenant: &str, held: u64) {
        self.total = self.total.saturating_sub(held);
        if let Some(n) = self.by_tenant.get_mut(tenant) {
            *n = n.saturating_sub(held);
            if *n == 0 {
                self.by_tenant.remove(tenant);
            }
        }
    }

    pub fn held(&self) -> u64 {
        self.total
    }

    pub fn held_by(&self, tenant: &str) -> u64 {
        self.by_tenant.get(tenant).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_bound_comes_first_and_release_frees() {
        let mut b = BufferBudget::new(100, 40);
        b.grow("a", 0, 30).unwrap();
        assert_eq!(b.grow("a", 0, 20), Err(PolicyError::TenantBufferFull));
        b.grow("b", 0, 40).unwrap();
        b.grow("c", 0, 30).unwrap();
        assert_eq!(b.grow("d", 0, 1), Err(PolicyError::WorkerBufferFull));
        b.release("a", 30);
        assert_eq!(b.held_by("a"), 0);
        b.grow("d", 0, 30).unwrap();
        assert_eq!(b.held(), 100);
    }

    #[test]
    fn growth_counts_only_the_new_bytes() {
        let mut b = BufferBudget::new(100, 100);
        b.grow("a", 0, 10).unwrap();
        b.grow("a", 10, 60).unwrap();
        b.grow("a", 60, 60).unwrap();
        assert_eq!(b.held_by("a"), 60);
        b.release("a", 60);
        assert_eq!(b.held(), 0);
        // Releasing more than held never underflows.
        b.release("a", 5);
        assert_eq!(b.held(), 0);
    }
}
