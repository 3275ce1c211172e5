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

use super::lease::{holder_word, slot_index, slot_name, Lease};

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
    /// The held ones by when they expire (`expiry`), soonest first.
    held: BTreeSet<(Expiry, String)>,
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
    /// Not listed yet: looked at again shortly.
    Listing,
    /// The watch is down: nothing is taken on a stale picture.
    Unknown(String),
    /// This node holds slot `index` (after a restart, or its own write).
    Mine { index: u32, lease: Lease },
    /// Slots this node may take: free, missing (`None`: no Lease yet) or expired by local
    /// observation, each with when this node saw it become free; in slot order, at most 64;
    /// and how many there are in all.
    Free {
        slots: Vec<(u32, Option<Lease>, Instant)>,
        count: usize,
    },
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
        let relist = s.synced;
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
        // A slot missing since before a re-list is missing for as long (a re-list every 2 s
        // without the watch grant must not restart the turns); one that went missing in
        // between, since now.
        if !relist || old.keys().any(|n| !s.leases.contains_key(n)) {
            s.missing_since = Some(now);
        }
        s.rv = rv;
        s.synced = true;
        s.error = None;
    }

    /// One watch event.
    pub fn apply(&self, change: Change) {
        self.change(change, true);
    }

    /// A Lease read or written outside the watch (this node's own write, before its echo; a
    /// GET after a 409): kept, but the watch's resourceVersion stays the stream's, so that a
    /// watch started again misses none of the events before it.
    pub fn learn(&self, lease: Lease) {
        self.change(Change::Upsert(lease), false);
    }

    fn change(&self, change: Change, from_watch: bool) {
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
                if from_watch && !l.resource_version.is_empty() {
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
                if from_watch && !l.resource_version.is_empty() {
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

    /// The holders, at most ten named, in Lease-name order, then how many more; and how many
    /// slots of `daemonset` of `budget` are held.
    pub fn holders(&self, daemonset: &str, budget: u32) -> (Vec<String>, u32) {
        let s = self.lock();
        let held = s
            .held
            .iter()
            .filter(|(_, n)| slot_index(daemonset, n, budget).is_some())
            .count();
        (s.named(), u32::try_from(held).unwrap_or(u32::MAX))
    }

    /// What `me` may do about slots `daemonset` (its `slot_key`) of `budget`, `grace` being
    /// the margin past a Lease's `leaseDurationSeconds` before it counts as expired.
    pub fn look(&self, daemonset: &str, budget: u32, me: &str, grace: Duration) -> Look {
        let now = (self.clock)();
        let s = self.lock();
        // A first LIST that failed is its error (looked at again after a retry), not a list
        // under way (looked at again every 100 ms for as long as it keeps failing).
        if let Some(e) = &s.error {
            return Look::Unknown(e.clone());
        }
        if !s.synced {
            return Look::Listing;
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
        // Expired by local observation, soonest first: ordered by when each expires (each has
        // its own duration), so the first one not expired ends the scan.
        for (at, name) in &s.held {
            let Expiry::At(at) = at else { break };
            let Some(e) = s.leases.get(name) else {
                continue;
            };
            let Some(expiry) = at.checked_add(grace) else {
                break;
            };
            if expiry >= now || free.len() >= MAX_FREE {
                break;
            }
            if let Some(i) = index(name) {
                free.push((i, Some(e.lease.clone()), expiry));
            }
        }
        if free.is_empty() {
            return Look::Full { holders: s.named() };
        }
        free.sort_by_key(|(i, _, _)| *i);
        let count =
            (s.free.len() + (budget as usize).saturating_sub(s.leases.len())).max(free.len());
        Look::Free { slots: free, count }
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

/// When a held Lease expires by this node's clock: `leaseDurationSeconds` after this node saw
/// it change. `Never` past what an `Instant` holds (sorted after every `At`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Expiry {
    At(Instant),
    Never,
}

fn expiry(changed: Instant, l: &Lease) -> Expiry {
    changed
        .checked_add(Duration::from_secs(u64::from(l.lease_duration_seconds)))
        .map_or(Expiry::Never, Expiry::At)
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
                self.held.insert((expiry(changed, &l), name.clone()));
                self.by_holder.insert(h.to_owned(), name.clone());
            }
        }
        if let Some(t) = &l.takes {
            *self.takes.entry(t.revision.clone()).or_default() += u64::from(t.count);
        }
        self.leases.insert(name, Entry { lease: l, changed });
    }

    fn remove(&mut self, name: &str) {
        let Some(e) = self.leases.remove(name) else {
            return;
        };
        self.free.remove(name);
        self.held
            .remove(&(expiry(e.changed, &e.lease), name.to_owned()));
        if let Some(h) = &e.lease.holder {
            if self.by_holder.get(h).is_some_and(|n| n == name) {
                self.by_holder.remove(h);
            }
        }
        if let Some(t) = &e.lease.takes {
            if let Some(n) = self.takes.get_mut(&t.revision) {
                *n = n.saturating_sub(u64::from(t.count));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::time::SystemTime;

    use super::*;
    use crate::fleet::lease::{daemonset_label, Leases};
    use crate::fleet::run::{Fleet, TURN_STEP};
    use crate::fleet::testing::Store;
    use crate::fleet::view::{DaemonSetInfo, SlotView};

    thread_local! {
        static MS: Cell<u64> = const { Cell::new(0) };
    }

    fn base() -> Instant {
        static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *BASE.get_or_init(Instant::now)
    }

    fn mono() -> Instant {
        base() + Duration::from_millis(MS.with(Cell::get))
    }

    /// `ms` into the test: the monotonic clock moved, and the wall time of then.
    fn at(ms: u64) -> SystemTime {
        MS.with(|m| m.set(ms));
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000) + Duration::from_millis(ms)
    }

    const DS: &str = "ds-uid";

    fn fleet(nodes: u32, budget: &str) -> Fleet {
        let f = Fleet::new(Duration::from_secs(60))
            .in_namespace("fleet")
            .with_clock(mono);
        f.refresh(vec![DaemonSetInfo {
            uid: DS.into(),
            namespace: "edge".into(),
            name: "gw".into(),
            strategy: Some("AdvancedRollingUpdate".into()),
            max_unavailable: Some(budget.into()),
            desired_number_scheduled: nodes,
            min_ready_seconds: 0,
        }]);
        f
    }

    /// Tries until taken or `until_ms`, as the decision loop does: again at the view's retry.
    fn take_by(f: &Fleet, store: &Store, node: &str, from: u64, until_ms: u64) -> Option<u64> {
        let mut t = from;
        while t <= until_ms {
            match f.take(Some((store, node)), DS, Some("rev-2"), at(t)) {
                Ok(()) => return Some(t),
                Err(_) => {
                    let retry = match f.view()[DS].slots.clone() {
                        SlotView::Full { retry_ms, .. }
                        | SlotView::Unavailable { retry_ms, .. } => retry_ms,
                        other => panic!("{other:?}"),
                    };
                    let now = crate::state::unix_ms(at(t));
                    t += retry.saturating_sub(now).max(1);
                }
            }
        }
        None
    }

    #[test]
    fn an_expired_slot_behind_a_longer_lease_seen_earlier_is_free() {
        let lease = |i: u32, secs: u32, holder: &str, rv: &str| Lease {
            namespace: "fleet".into(),
            name: format!("edge.gw.{i}"),
            resource_version: rv.into(),
            holder: Some(holder.into()),
            lease_duration_seconds: secs,
            daemonset: Some("edge.gw".into()),
            ..Lease::default()
        };
        let c = SlotCache::new(mono);
        at(0);
        c.replace(vec![lease(0, 1000, "node-x", "1")], "1".into());
        at(10_000);
        c.apply(Change::Upsert(lease(1, 10, "node-y", "2")));
        at(30_000);
        let look = c.look("edge.gw", 2, "node-b", Duration::ZERO);
        assert!(
            matches!(&look, Look::Free { slots, .. } if slots.len() == 1 && slots[0].0 == 1),
            "{look:?}"
        );
    }

    #[test]
    fn a_lease_read_outside_the_watch_does_not_move_the_watchs_version() {
        let c = SlotCache::new(mono);
        c.replace(Vec::new(), "10".into());
        let read = Lease {
            namespace: "fleet".into(),
            name: "edge.gw.0".into(),
            resource_version: "15".into(),
            holder: Some("node-x".into()),
            lease_duration_seconds: 60,
            ..Lease::default()
        };
        c.learn(read.clone());
        assert_eq!(
            c.rv(),
            "10",
            "events 11-14 would be missed by a watch from 15"
        );
        assert_eq!(
            c.get("edge.gw.0").map(|l| l.resource_version),
            Some("15".into())
        );
        c.apply(Change::Upsert(Lease {
            resource_version: "16".into(),
            ..read
        }));
        assert_eq!(c.rv(), "16");
    }

    #[test]
    fn a_first_list_that_failed_reads_as_its_error_not_as_a_list_under_way() {
        let c = SlotCache::new(mono);
        let look = || c.look("edge.gw", 1, "node-a", Duration::ZERO);
        assert_eq!(look(), Look::Listing);
        c.set_error(Some("the slot Leases cannot be listed: 500".into()));
        assert!(matches!(look(), Look::Unknown(e) if e.contains("500")));
        c.replace(Vec::new(), "7".into());
        assert!(
            !matches!(look(), Look::Unknown(_) | Look::Listing),
            "{:?}",
            look()
        );
    }

    #[test]
    fn a_waiting_node_watches_and_sends_no_request_until_a_slot_frees() {
        let store = Store::default();
        let a = fleet(10, "1");
        take_by(&a, &store, "node-a", 0, 10_000).expect("taken");
        let label = daemonset_label("edge", "gw");
        assert_eq!(
            *store.ops.lock().unwrap(),
            [
                format!("watch fleet {label}"),
                "create edge.gw.0 node-a".to_owned()
            ],
            "one watch, one write: no LIST of the namespace"
        );
        assert!(!a.watching(DS), "holding, it watches no more");
        let held = store.lease("edge.gw.0").unwrap();
        assert_eq!(held.daemonset.as_deref(), Some(label.as_str()));
        assert_eq!(held.takes.as_ref().map(|t| t.count), Some(1));
        let b = fleet(10, "1");
        let before = store.ops.lock().unwrap().len();
        // A minute of waiting (tried every 2 to 3 s): the watch started once, nothing else.
        assert_eq!(take_by(&b, &store, "node-b", 0, 70_000), None);
        assert_eq!(
            store.ops.lock().unwrap()[before..],
            [format!("watch fleet {label}")]
        );
        assert!(b.watching(DS));
        assert!(
            matches!(&b.view()[DS].slots, SlotView::Full { holders, .. } if holders == &["node-a"])
        );
        // Released: the watch shows it, and b takes it with one write.
        a.release(Some((&store, "node-a")), DS, "done");
        let before = store.ops.lock().unwrap().len();
        let took = take_by(&b, &store, "node-b", 70_000, 200_000).expect("taken");
        assert!(took < 70_000 + 31_000, "{took}");
        assert_eq!(
            store.ops.lock().unwrap()[before..],
            ["update edge.gw.0 node-b"]
        );
        let l = store.lease("edge.gw.0").unwrap();
        assert_eq!(l.takes.map(|t| t.count), Some(2), "two takes of rev-2");
    }

    #[test]
    fn a_node_far_back_in_line_keeps_its_watch_through_a_turn_longer_than_the_idle_limit() {
        use crate::fleet::run::{rank, turn, WATCH_IDLE};
        use std::collections::HashSet;
        let store = Store::default();
        // 10,000 nodes, one slot: the node whose place makes it wait longest.
        let nodes = 10_000;
        let node = (0..200)
            .map(|i| format!("node-{i}"))
            .max_by_key(|n| turn(rank(n, "edge.gw", "rev-2"), 0, nodes, 1).1)
            .unwrap();
        let wait = turn(rank(&node, "edge.gw", "rev-2"), 0, nodes, 1).1;
        assert!(wait > WATCH_IDLE * 2, "{wait:?}");
        let f = fleet(nodes, "1");
        let needed: HashSet<String> = [DS.to_owned()].into();
        let io = Some((&store as &dyn Leases, node.as_str()));
        // As the agent's loop does: the fleet's tick at every wake (at least every 20 s: a
        // gate, a pod list), a take only once the view's retry is due (the decision waits).
        let (mut t, mut take_at) = (0, 0);
        let took = loop {
            assert!(t < wait.as_millis() as u64 + 10_000, "not taken by {t} ms");
            f.maintain(io, Some(&needed), at(t));
            if t >= take_at {
                if f.take(io, DS, Some("rev-2"), at(t)).is_ok() {
                    break t;
                }
                take_at = match f.view()[DS].slots.clone() {
                    SlotView::Full { retry_ms, .. } | SlotView::Unavailable { retry_ms, .. } => {
                        t + retry_ms.saturating_sub(crate::state::unix_ms(at(t))).max(1)
                    }
                    other => panic!("{other:?}"),
                };
            }
            t = take_at.min(t + 20_000);
        };
        assert!(took >= wait.as_millis() as u64, "{took} before its turn");
        let watches = (store.ops.lock().unwrap().iter())
            .filter(|op| op.starts_with("watch"))
            .count();
        assert_eq!(
            watches, 1,
            "one watch through the wait, not one per idle limit"
        );
    }

    #[test]
    fn a_node_stops_watching_once_it_no_longer_asks() {
        let store = Store::default();
        let a = fleet(10, "1");
        take_by(&a, &store, "node-a", 0, 10_000).expect("taken");
        let b = fleet(10, "1");
        assert!(b
            .take(Some((&store, "node-b")), DS, Some("rev-2"), at(1000))
            .is_err());
        assert!(b.watching(DS));
        let empty = std::collections::HashSet::new();
        b.maintain(Some((&store, "node-b")), Some(&empty), at(30_000));
        assert!(b.watching(DS), "asked 29 s ago");
        b.maintain(Some((&store, "node-b")), Some(&empty), at(62_000));
        assert!(!b.watching(DS), "nothing asked for a minute: stopped");
    }

    #[test]
    fn an_expired_holder_is_judged_from_the_watch_by_local_time() {
        let store = Store::default();
        let a = fleet(10, "1");
        take_by(&a, &store, "node-a", 0, 10_000).expect("taken");
        // node-a dies holding it; its renewTime, written by a clock an hour ahead, is ignored.
        let b = fleet(10, "1");
        assert_eq!(
            take_by(&b, &store, "node-b", 1_000, 70_000 + 5_000 - 1),
            None
        );
        let took = take_by(&b, &store, "node-b", 75_000, 200_000).expect("expired");
        // 60 s ready_timeout + 10 s margin = 70 s lease, + 5 s: from when b first saw it.
        assert!((76_000..76_000 + 31_000).contains(&took), "{took}");
        assert_eq!(store.holder("edge.gw.0").as_deref(), Some("node-b"));
    }

    #[test]
    fn an_unlabelled_slot_of_an_older_agent_is_found_and_labelled_at_the_next_write() {
        let store = Store::default();
        // An older agent's slot: no label, so no watch shows it.
        store
            .create(&Lease {
                namespace: "fleet".into(),
                name: "edge.gw.0".into(),
                holder: Some("old-node".into()),
                lease_duration_seconds: 70,
                ..Lease::default()
            })
            .unwrap();
        let b = fleet(10, "1");
        assert_eq!(take_by(&b, &store, "node-b", 0, 10_000), None);
        let ops = store.ops.lock().unwrap().clone();
        assert_eq!(
            ops[2..],
            ["create edge.gw.0 node-b", "get edge.gw.0"],
            "{ops:?}"
        );
        assert!(
            matches!(&b.view()[DS].slots, SlotView::Full { holders, .. } if holders == &["old-node"])
        );
        // The old agent gives it back (still unlabelled): b reads it afresh, then takes it.
        let cur = store.lease("edge.gw.0").unwrap();
        store
            .update(&Lease {
                holder: None,
                ..cur
            })
            .unwrap();
        let took = take_by(&b, &store, "node-b", 80_000, 200_000);
        assert!(took.is_some());
        let l = store.lease("edge.gw.0").unwrap();
        assert_eq!(l.holder.as_deref(), Some("node-b"));
        assert_eq!(
            l.daemonset.as_deref(),
            Some("edge.gw"),
            "labelled by this write"
        );
    }

    #[test]
    fn nodes_go_in_rank_order_one_step_apart() {
        use crate::fleet::run::{rank, turn};
        // Ten nodes of a hundred, nothing started: the lowest rank first, one step per place.
        let ranks: Vec<f64> = (0..100)
            .map(|i| rank(&format!("node-{i}"), "edge.gw", "rev-2"))
            .collect();
        let mut sorted = ranks.clone();
        sorted.sort_by(f64::total_cmp);
        let (_, first) = turn(sorted[0], 0, 100, 1);
        let (_, fifth) = turn(sorted[4], 0, 100, 1);
        assert!(first < fifth);
        assert!(first < TURN_STEP * 3, "{first:?}");
        // Half started: a node at the front waits less than one still far back.
        let (_, near) = turn(0.51, 50, 100, 1);
        let (_, far) = turn(0.99, 50, 100, 1);
        assert!(
            near < TURN_STEP * 2 && far > TURN_STEP * 40,
            "{near:?} {far:?}"
        );
        // Far back the wait stays bounded, and still grows.
        let (_, a) = turn(0.5, 0, 10_000, 1);
        let (_, b) = turn(0.9, 0, 10_000, 1);
        assert!(a < b && b < Duration::from_secs(180), "{a:?} {b:?}");
        // A new revision deals a new order.
        assert_ne!(
            rank("node-1", "edge.gw", "rev-2"),
            rank("node-1", "edge.gw", "rev-3")
        );
        // With ten slots free, the first ten go at once, each to its own slot.
        let picks: std::collections::BTreeSet<usize> = (0..10)
            .map(|k| turn(f64::from(k) / 100.0, 0, 100, 10).0)
            .collect();
        assert_eq!(picks.len(), 10);
    }
}
