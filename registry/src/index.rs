//! Tenant id to tenant, holding positions only. A map keyed by the id would
//! hold a second copy of every id; with a registry of real size every filter
//! VM holds the index, so it keeps 4 bytes per tenant and hashes the id it
//! finds in the tenant list.

use hashbrown::hash_table::Entry;
use hashbrown::{DefaultHashBuilder, HashTable};
use std::hash::BuildHasher;

use crate::Tenant;

#[derive(Clone, Default)]
pub(crate) struct TenantIndex {
    /// Positions in the tenant list, hashed by the tenant's id.
    table: HashTable<u32>,
    hasher: DefaultHashBuilder,
}

impl std::fmt::Debug for TenantIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantIndex")
            .field("tenants", &self.table.len())
            .finish()
    }
}

impl TenantIndex {
    /// Indexes `tenants`; validation has refused duplicate ids (a duplicate
    /// would be indexed once, at its first position).
    pub(crate) fn new(tenants: &[Tenant]) -> Self {
        let mut index = Self {
            table: HashTable::with_capacity(tenants.len()),
            hasher: DefaultHashBuilder::default(),
        };
        let hasher = &index.hasher;
        for (position, tenant) in tenants.iter().enumerate() {
            let Ok(position) = u32::try_from(position) else {
                break;
            };
            let id = tenant.id.as_str();
            // One hash and one probe: an id already there keeps its place.
            if let Entry::Vacant(slot) = index.table.entry(
                hasher.hash_one(id),
                |&p| at(tenants, p).is_some_and(|t| t.id.as_str() == id),
                |&p| hash_at(hasher, tenants, p),
            ) {
                slot.insert(position);
            }
        }
        index
    }

    pub(crate) fn find<'t>(&self, tenants: &'t [Tenant], id: &str) -> Option<&'t Tenant> {
        let position = self.table.find(self.hasher.hash_one(id), |&p| {
            at(tenants, p).is_some_and(|t| t.id.as_str() == id)
        })?;
        at(tenants, *position)
    }
}

fn at(tenants: &[Tenant], position: u32) -> Option<&Tenant> {
    tenants.get(usize::try_from(position).ok()?)
}

fn hash_at(hasher: &DefaultHashBuilder, tenants: &[Tenant], position: u32) -> u64 {
    at(tenants, position).map_or(0, |t| hasher.hash_one(t.id.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(id: &str) -> Tenant {
        Tenant {
            id: crate::TenantId::new(id),
            ..Tenant::default()
        }
    }

    #[test]
    fn finds_every_tenant_and_no_other() {
        let tenants: Vec<Tenant> = (0..1000).map(|i| tenant(&format!("t{i}"))).collect();
        let index = TenantIndex::new(&tenants);
        for t in &tenants {
            assert_eq!(index.find(&tenants, &t.id).map(|f| &f.id), Some(&t.id));
        }
        assert!(index.find(&tenants, "t1000").is_none());
        assert!(index.find(&tenants, "").is_none());
    }

    #[test]
    fn a_duplicate_id_finds_the_first() {
        let mut tenants = vec![tenant("acme"), tenant("acme")];
        tenants[1].disabled = true;
        let index = TenantIndex::new(&tenants);
        assert!(!index.find(&tenants, "acme").unwrap().disabled);
    }
}
