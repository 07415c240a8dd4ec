//! Live throttles set from the admin API: a tenant runs at a fraction of its
//! RPM, TPM and concurrency until cleared. Local to this replica (not in
//! Redis): an operator throttles every replica, or the one it talks to.

use std::collections::HashMap;
use std::sync::RwLock;

#[derive(Debug, Default)]
pub struct Throttles {
    fractions: RwLock<HashMap<String, f64>>,
}

impl Throttles {
    /// The fraction `tenant` runs at (1.0 when not throttled).
    pub fn fraction(&self, tenant: &str) -> f64 {
        let map = self.fractions.read().unwrap_or_else(|e| e.into_inner());
        map.get(tenant).copied().unwrap_or(1.0)
    }

    /// Sets a fraction in `0..=1`; 1 clears the throttle.
    pub fn set(&self, tenant: &str, fraction: f64) {
        let mut map = self.fractions.write().unwrap_or_else(|e| e.into_inner());
        if fraction >= 1.0 {
            map.remove(tenant);
        } else {
            map.insert(tenant.to_owned(), fraction.max(0.0));
        }
    }

    pub fn all(&self) -> HashMap<String, f64> {
        self.fractions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
