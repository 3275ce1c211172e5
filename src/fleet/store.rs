//! An apiserver's Lease store in memory: resourceVersions, compare-and-swap as the apiserver
//! does it, and the label selector of the slot watch. One store for the unit tests
//! (`fleet::testing::Store`, which adds a request log and faults) and the simulation
//! (`fleet::scale::Model`, which adds counting, latency and delayed watch delivery).

use std::collections::BTreeMap;

use super::lease::{Lease, LeaseError};

/// The Leases of every namespace, by `(namespace, name)`, and the last resourceVersion given.
#[derive(Default, Debug, Clone)]
pub struct Versioned {
    pub rv: u64,
    pub leases: BTreeMap<(String, String), Lease>,
}

impl Versioned {
    /// Every Lease of `namespace`; with `label`, those whose `DAEMONSET_LABEL` is it.
    pub fn list(&self, namespace: &str, label: Option<&str>) -> Vec<Lease> {
        self.leases
            .values()
            .filter(|l| l.namespace == namespace)
            .filter(|l| label.is_none() || l.daemonset.as_deref() == label)
            .cloned()
            .collect()
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Lease> {
        self.leases
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// A POST: `Conflict` (409 AlreadyExists) when the name is taken.
    pub fn create(&mut self, lease: &Lease) -> Result<Lease, LeaseError> {
        let key = (lease.namespace.clone(), lease.name.clone());
        if self.leases.contains_key(&key) {
            return Err(LeaseError::Conflict);
        }
        self.rv += 1;
        let stored = Lease {
            resource_version: self.rv.to_string(),
            ..lease.clone()
        };
        self.leases.insert(key, stored.clone());
        Ok(stored)
    }

    /// A PUT carrying the resourceVersion read: `Conflict` (409) when it moved on, or (as the
    /// apiserver answers 404) when the Lease is gone.
    pub fn update(&mut self, lease: &Lease) -> Result<Lease, LeaseError> {
        let key = (lease.namespace.clone(), lease.name.clone());
        let rv = self.rv + 1;
        match self.leases.get_mut(&key) {
            Some(cur) if cur.resource_version == lease.resource_version => {
                *cur = Lease {
                    resource_version: rv.to_string(),
                    ..lease.clone()
                };
                self.rv = rv;
                Ok(cur.clone())
            }
            Some(_) | None => Err(LeaseError::Conflict),
        }
    }
}
