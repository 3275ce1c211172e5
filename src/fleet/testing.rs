//! Test support: the in-memory Lease store of `fleet::store` behind a lock, with a request
//! log, an apiserver that can be down, a hook before writes, and watches delivered at once.

use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use super::cache::{Change, SlotCache};
use super::lease::{Lease, LeaseError, Leases};
use super::store::Versioned;

type Watcher = (String, String, Weak<SlotCache>);

/// An apiserver's Lease store in memory, with its compare-and-swap.
#[derive(Default)]
pub struct Store {
    pub leases: Mutex<Versioned>,
    pub down: std::sync::atomic::AtomicBool,
    /// Every call, in order: `list NS`, `get NAME`, `create NAME HOLDER`, `update NAME HOLDER`,
    /// `watch NS LABEL`.
    pub ops: Mutex<Vec<String>>,
    /// Run before each create or update (a test closes a gate there).
    #[allow(clippy::type_complexity)]
    pub on_write: Mutex<Option<Box<dyn Fn() + Send>>>,
    /// The watches (namespace, label, cache), each sent every change at once.
    watchers: Mutex<Vec<Watcher>>,
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

    /// Sends a stored Lease to the watches that select it.
    fn notify(&self, l: &Lease) {
        let mut w = self.watchers.lock().unwrap();
        w.retain(|(_, _, c)| c.strong_count() > 0);
        for (ns, label, cache) in w.iter() {
            if *ns == l.namespace && l.daemonset.as_deref() == Some(label) {
                if let Some(c) = cache.upgrade() {
                    c.apply(Change::Upsert(l.clone()));
                }
            }
        }
    }

    /// Finds a Lease by name in any namespace (the tests use one).
    pub fn lease(&self, name: &str) -> Option<Lease> {
        let g = self.leases.lock().unwrap();
        g.leases.values().find(|l| l.name == name).cloned()
    }

    /// The holder of the Lease `name` (`lease`).
    pub fn holder(&self, name: &str) -> Option<String> {
        self.lease(name).and_then(|l| l.holder)
    }

    /// The requests made, by their first word.
    pub fn count(&self, op: &str) -> usize {
        let ops = self.ops.lock().unwrap();
        ops.iter()
            .filter(|o| o.split(' ').next() == Some(op))
            .count()
    }
}

impl Leases for Store {
    fn list(&self, ns: &str) -> Result<Vec<Lease>, LeaseError> {
        self.ops.lock().unwrap().push(format!("list {ns}"));
        self.check()?;
        Ok(self.leases.lock().unwrap().list(ns, None))
    }
    fn get(&self, ns: &str, name: &str) -> Result<Option<Lease>, LeaseError> {
        self.ops.lock().unwrap().push(format!("get {name}"));
        self.check()?;
        let g = self.leases.lock().unwrap();
        // Tests written before namespaces mattered look a slot up in any.
        Ok(g.get(ns, name)
            .or_else(|| g.leases.values().find(|l| l.name == name).cloned()))
    }
    fn create(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        self.wrote("create", lease);
        self.check()?;
        let stored = self.leases.lock().unwrap().create(lease)?;
        self.notify(&stored);
        Ok(stored)
    }
    fn update(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        self.wrote("update", lease);
        self.check()?;
        let stored = self.leases.lock().unwrap().update(lease)?;
        self.notify(&stored);
        Ok(stored)
    }
    fn watch_slots(
        &self,
        ns: &str,
        label: &str,
        clock: fn() -> Instant,
    ) -> Result<Arc<SlotCache>, LeaseError> {
        self.ops.lock().unwrap().push(format!("watch {ns} {label}"));
        self.check()?;
        let cache = Arc::new(SlotCache::new(clock));
        let g = self.leases.lock().unwrap();
        cache.replace(g.list(ns, Some(label)), g.rv.to_string());
        self.watchers
            .lock()
            .unwrap()
            .push((ns.into(), label.into(), Arc::downgrade(&cache)));
        Ok(cache)
    }
}
