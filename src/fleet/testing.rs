//! Test support: an apiserver's Lease store in memory, with real compare-and-swap.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::lease::{Lease, LeaseError, Leases};

/// An apiserver's Lease store in memory, with its compare-and-swap.
#[derive(Default)]
pub struct Store {
    pub leases: Mutex<(u64, BTreeMap<String, Lease>)>,
    pub down: std::sync::atomic::AtomicBool,
    /// Every call, in order: `list NS`, `get NAME`, `create NAME HOLDER`, `update NAME HOLDER`.
    pub ops: Mutex<Vec<String>>,
    /// Run before each create or update (a test closes a gate there).
    #[allow(clippy::type_complexity)]
    pub on_write: Mutex<Option<Box<dyn Fn() + Send>>>,
}

impl Store {
    fn check(&self) -> Result<(), LeaseError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(LeaseError::Unavailable("connection refused".into()));
        }
        Ok(())
    }
    fn wrote(&self, op: &str, lease: &Lease) {
        let holder = lease.holder.as_deref().unwrap_or("-");
        self.ops
            .lock()
            .unwrap()
            .push(format!("{op} {} {holder}", lease.name));
        if let Some(f) = &*self.on_write.lock().unwrap() {
            f();
        }
    }

    pub fn holder(&self, name: &str) -> Option<String> {
        self.leases
            .lock()
            .unwrap()
            .1
            .get(name)
            .and_then(|l| l.holder.clone())
    }
}

impl Leases for Store {
    fn list(&self, ns: &str) -> Result<Vec<Lease>, LeaseError> {
        self.ops.lock().unwrap().push(format!("list {ns}"));
        self.check()?;
        Ok(self.leases.lock().unwrap().1.values().cloned().collect())
    }
    fn get(&self, _ns: &str, name: &str) -> Result<Option<Lease>, LeaseError> {
        self.ops.lock().unwrap().push(format!("get {name}"));
        self.check()?;
        Ok(self.leases.lock().unwrap().1.get(name).cloned())
    }
    fn create(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        self.wrote("create", lease);
        self.check()?;
        let mut g = self.leases.lock().unwrap();
        if g.1.contains_key(&lease.name) {
            return Err(LeaseError::Conflict);
        }
        g.0 += 1;
        let stored = Lease {
            resource_version: g.0.to_string(),
            ..lease.clone()
        };
        g.1.insert(lease.name.clone(), stored.clone());
        Ok(stored)
    }
    fn update(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        self.wrote("update", lease);
        self.check()?;
        let mut g = self.leases.lock().unwrap();
        let rv = g.0 + 1;
        match g.1.get_mut(&lease.name) {
            Some(cur) if cur.resource_version == lease.resource_version => {
                *cur = Lease {
                    resource_version: rv.to_string(),
                    ..lease.clone()
                };
                let out = cur.clone();
                g.0 = rv;
                Ok(out)
            }
            Some(_) => Err(LeaseError::Conflict),
            None => Err(LeaseError::Unavailable("404".into())),
        }
    }
}
