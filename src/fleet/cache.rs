//! The slot Leases of one DaemonSet as a waiting node keeps them (issue 24): filled by a LIST
//! with the label selector, then kept by the watch from its resourceVersion (`fleet::kube` on
//! the apiserver, the in-memory stores of `fleet::store` in the tests and the simulation). A
//! waiting node reads only this cache, and writes only when it shows a slot it may take.
//!
//! Expiry is the rule of `Observed` (SPEC 6b), fed by the watch: a held Lease is expired once
//! this cache has not seen it change for its `leaseDurationSeconds` plus the margin, by this
//! node's monotonic clock; the writer's `renewTime` is never compared with it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::lease::{slot_index, slot_name, Lease};

/// What a watch brought.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Upsert(Lease),
    Delete(Lease),
}

/// One DaemonSet's slot Leases, by name.
pub struct SlotCache {
    state: Mutex<State>,
    clock: fn() -> Instant,
}

#[derive(Default)]
struct State {
    /// A LIST has filled it: until then nothing is known and no slot is taken.
    synced: bool,
    /// Why the watch is not running now, when it is not (the cache is stale then).
    error: Option<String>,
    /// The resourceVersion to watch from.
    rv: String,
    leases: BTreeMap<String, Entry>,
    /// Names of the Leases without a holder.
    free: BTreeSet<String>,
    /// The held ones by when this node saw them change, oldest first (expiry).
    held: BTreeSet<(Instant, String)>,
    /// Holder to Lease name.
    by_holder: HashMap<String, String>,
    /// Takes per revision summed over the slots (`Lease::takes`).
    takes: HashMap<String, u64>,
    /// When a slot went missing last (the list, a DELETED): a missing slot is free since then.
    missing_since: Option<Instant>,
}

struct Entry {
    lease: Lease,
    /// When this node saw it change (resourceVersion, holder, renewTime, duration).
    changed: Instant,
}

/// What the cache shows a node that wants a slot of `budget`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Look {
    /// Not listed yet, or the watch is down: nothing is taken on a stale picture.
    Unknown(String),
    /// This node holds slot `index` (after a restart, or its own write).
    Mine { index: u32, lease: Lease },
    /// Slots this node may take: free, missing (`None`: no Lease yet) or expired by local
    /// observation, each with when this node saw it become free; in slot order, at most 64.
    Free(Vec<(u32, Option<Lease>, Instant)>),
    /// Every slot held: the holders, at most 10 named.
    Full { holders: Vec<String> },
}

const MAX_FREE: usize = 64;
const MAX_NAMED: usize = 10;

fn fingerprint(l: &Lease) -> (&str, Option<&str>, Option<std::time::SystemTime>, u32) {
    (
        &l.resource_version,
        l.holder.as_deref(),
        l.renew_time,
        l.lease_duration_seconds,
    )
}

impl SlotCache {
    pub fn new(clock: fn() -> Instant) -> SlotCache {
        SlotCache {
            state: Mutex::new(State::default()),
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The list's answer replaces everything (a first list, or again after 410 Gone).
    pub fn replace(&self, leases: Vec<Lease>, rv: String) {
        let now = (self.clock)();
        let mut s = self.lock();
        let old = std::mem::take(&mut s.leases);
        s.free.clear();
        s.held.clear();
        s.by_holder.clear();
        s.takes.clear();
        for l in leases {
            // Unchanged since the last look: its age is kept (a re-list frees no live slot).
            let changed = old
                .get(&l.name)
                .filter(|e| fingerprint(&e.lease) == fingerprint(&l))
                .map_or(now, |e| e.changed);
            s.insert(l, changed);
        }
        s.rv = rv;
        s.synced = true;
        s.error = None;
        s.missing_since = Some(now);
    }

    /// One watch event (or this node's own write, applied before its echo arrives).
    pub fn apply(&self, change: Change) {
        let now = (self.clock)();
        let mut s = self.lock();
        match change {
            Change::Upsert(l) => {
                // An older version than the one kept (this node's own write came first).
                if let Some(e) = s.leases.get(&l.name) {
                    if older(&l.resource_version, &e.lease.resource_version) {
                        return;
                    }
                }
                if !l.resource_version.is_empty() {
                    s.rv.clone_from(&l.resource_version);
                }
                let changed = match s.leases.get(&l.name) {
                    Some(e) if fingerprint(&e.lease) == fingerprint(&l) => e.changed,
                    _ => now,
                };
                s.remove(&l.name);
                s.insert(l, changed);
            }
            Change::Delete(l) => {
                if !l.resource_version.is_empty() {
                    s.rv.clone_from(&l.resource_version);
                }
                s.remove(&l.name);
                s.missing_since = Some(now);
            }
        }
    }

    /// A BOOKMARK: only the resourceVersion moves.
    pub fn bookmark(&self, rv: String) {
        if !rv.is_empty() {
            self.lock().rv = rv;
        }
    }

    /// The resourceVersion to watch from.
    pub fn rv(&self) -> String {
        self.lock().rv.clone()
    }

    /// The watch is down (`Some`) or back (`None`).
    pub fn set_error(&self, e: Option<String>) {
        self.lock().error = e;
    }

    /// The takes for `revision` summed over the slots: how many nodes started it.
    pub fn takes(&self, revision: &str) -> u64 {
        self.lock().takes.get(revision).copied().unwrap_or(0)
    }

    /// The Lease named `name`, as kept.
    pub fn get(&self, name: &str) -> Option<Lease> {
        self.lock().leases.get(name).map(|e| e.lease.clone())
    }

    /// The holders, at most ten named, in Lease-name order, then how many more.
    pub fn holders(&self) -> Vec<String> {
        self.lock().named()
    }

    /// What `me` may do about slots `daemonset` (its `slot_key`) of `budget`, `grace` being
    /// the margin past a Lease's `leaseDurationSeconds` before it counts as expired.
    pub fn look(&self, daemonset: &str, budget: u32, me: &str, grace: Duration) -> Look {
        let now = (self.clock)();
        let s = self.lock();
        if !s.synced {
            return Look::Unknown("the slot Leases are not listed yet".into());
        }
        if let Some(e) = &s.error {
            return Look::Unknown(e.clone());
        }
        let index = |name: &str| slot_index(daemonset, name, budget);
        if let Some(name) = s.by_holder.get(me) {
            if let (Some(i), Some(e)) = (index(name), s.leases.get(name)) {
                return Look::Mine {
                    index: i,
                    lease: e.lease.clone(),
                };
            }
        }
        let mut free: Vec<(u32, Option<Lease>, Instant)> = s
            .free
            .iter()
            .filter_map(|n| {
                let e = s.leases.get(n)?;
                Some((index(n)?, Some(e.lease.clone()), e.changed))
            })
            .take(MAX_FREE)
            .collect();
        // Missing slots: only while fewer Leases than the budget exist.
        if s.leases.len() < budget as usize {
            let since = s.missing_since.unwrap_or(now);
            let mut i = 0;
            while i < budget && free.len() < MAX_FREE {
                if !s.leases.contains_key(&slot_name(daemonset, i)) {
                    free.push((i, None, since));
                }
                i += 1;
                if i as usize > s.leases.len() + MAX_FREE {
                    break;
                }
            }
        }
        // Expired by local observation, oldest first.
        for (changed, name) in &s.held {
            let Some(e) = s.leases.get(name) else { continue };
            let ttl = Duration::from_secs(u64::from(e.lease.lease_duration_seconds)) + grace;
            let Some(expiry) = changed.checked_add(ttl) else {
                continue;
            };
            if expiry >= now || free.len() >= MAX_FREE {
                break;
            }
            if let Some(i) = index(name) {
                free.push((i, Some(e.lease.clone()), expiry));
            }
        }
        if free.is_empty() {
            return Look::Full {
                holders: s.named(),
            };
        }
        free.sort_by_key(|(i, _, _)| *i);
        Look::Free(free)
    }
}

fn holder_word(l: &Lease) -> String {
    let h = l.holder.clone().unwrap_or_default();
    match &l.failed {
        Some(r) => format!("{h} (failed revision {r})"),
        None => h,
    }
}

/// Whether resourceVersion `a` is older than `b` (both numbers, as every apiserver we know
/// writes them; otherwise not comparable, and the newer arrival wins).
fn older(a: &str, b: &str) -> bool {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(a), Ok(b)) => a < b,
        _ => false,
    }
}

impl State {
    fn named(&self) -> Vec<String> {
        let mut holders: Vec<String> = self
            .leases
            .values()
            .filter(|e| e.lease.holder.is_some())
            .take(MAX_NAMED)
            .map(|e| holder_word(&e.lease))
            .collect();
        let more = self.held.len().saturating_sub(holders.len());
        if more > 0 {
            holders.push(format!("{more} more"));
        }
        holders
    }

    fn insert(&mut self, l: Lease, changed: Instant) {
        let name = l.name.clone();
        match l.holder.as_deref() {
            None | Some("") => {
                self.free.insert(name.clone());
            }
            Some(h) => {
                self.held.insert((changed, name.clone()));
                self.by_holder.insert(h.to_owned(), name.clone());
            }
        }
        if let Some((rev, n)) = &l.takes {
            *self.takes.entry(rev.clone()).or_default() += u64::from(*n);
        }
        self.leases.insert(name, Entry { lease: l, changed });
    }

    fn remove(&mut self, name: &str) {
        let Some(e) = self.leases.remove(name) else {
            return;
        };
        self.free.remove(name);
        self.held.remove(&(e.changed, name.to_owned()));
        if let Some(h) = &e.lease.holder {
            if self.by_holder.get(h).is_some_and(|n| n == name) {
                self.by_holder.remove(h);
            }
        }
        if let Some((rev, n)) = &e.lease.takes {
            if let Some(t) = self.takes.get_mut(rev) {
                *t = t.saturating_sub(u64::from(*n));
            }
        }
    }
}
