//! Leases: one per admitted request. The store holds the reservation record
//! (shared between replicas with Redis); this replica additionally holds the
//! pool permit of each lease it admitted, which only it can free.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::limits::Nanos;
use crate::pool::gate::PoolPermit;

/// What a request reserved, stored until Complete, a refund or expiry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub id: String,
    pub tenant: String,
    pub model: String,
    pub pool: String,
    pub holder: String,
    pub request_id: String,
    /// Counter scopes holding a concurrency slot and the spend reservation.
    pub scopes: Vec<String>,
    pub est_prompt_tokens: u64,
    pub max_tokens: u64,
    /// Reserved against TPM: prompt estimate + max_tokens.
    pub reserved_tokens: u64,
    /// Reserved against both budgets (upper-bound cost).
    pub reserved_nanos: Nanos,
    /// Budget periods the reservation was made in.
    pub day: String,
    pub month: String,
    pub admitted_ms: i64,
    pub expires_ms: i64,
    /// Whether this lease counted a request and holds a concurrency slot
    /// (FULL and OPEN admissions; a RESERVE lease rides on its OPEN lease's).
    #[serde(default = "holds_slot")]
    pub slot: bool,
    /// Calendar quotas of requests or tokens the lease reserved in
    /// (budgets in USD are counted in every scope and not listed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quotas: Vec<QuotaRef>,
}

/// A calendar quota a lease holds a reservation in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaRef {
    pub scope: String,
    pub unit: tenant_registry::Unit,
    pub per: tenant_registry::Per,
}

/// Leases written before two-phase admission all held their slot.
fn holds_slot() -> bool {
    true
}

/// 128 random bits, hex: unguessable, so one tenant cannot complete or
/// renew another's lease.
pub fn new_lease_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS randomness is a broken host; a time-and-counter id still
        // keeps leases distinct.
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        bytes[..8].copy_from_slice(&crate::clock::now_ms().to_le_bytes());
        bytes[8..].copy_from_slice(&n.to_le_bytes());
    }
    hex::encode(bytes)
}

/// The pool permit of a lease admitted here, and when this replica last
/// knew the lease to be alive.
struct Held {
    permit: PoolPermit,
    expires: Instant,
}

/// Pool permits of leases this replica admitted.
#[derive(Default)]
pub struct HeldPermits {
    held: Mutex<HashMap<String, Held>>,
}

impl HeldPermits {
    pub fn insert(&self, lease_id: String, permit: PoolPermit, expires: Instant) {
        self.lock().insert(lease_id, Held { permit, expires });
    }

    /// Takes the permit out (Complete); the caller settles and drops it.
    pub fn take(&self, lease_id: &str) -> Option<PoolPermit> {
        self.lock().remove(lease_id).map(|h| h.permit)
    }

    pub fn extend(&self, lease_id: &str, expires: Instant) {
        if let Some(h) = self.lock().get_mut(lease_id) {
            h.expires = expires;
        }
    }

    /// Lease ids whose local expiry has passed: the sweeper asks the store
    /// whether they were renewed through another replica.
    pub fn past(&self, now: Instant) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, h)| h.expires <= now)
            .map(|(id, _)| id.clone())
            .collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        // A panic while holding this lock cannot leave the map half-updated
        // (every operation is one HashMap call), so poisoning is ignored.
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_ids_are_random_hex() {
        let a = new_lease_id();
        let b = new_lease_id();
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
