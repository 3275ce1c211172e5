//! Fleet budget slots on `coordination.k8s.io/v1` Leases (SPEC section 6b).
//!
//! Slot `i` of DaemonSet `ns/ds` is the Lease `<ns>.<ds>.<i>` in the one namespace of the
//! fleet's slots (`fleet.namespace`, default `yurt-ota`), so one Role grants them all.
//! A node holds a slot while its `holderIdentity` is the node's name and its `renewTime` plus
//! `leaseDurationSeconds` has not passed. Every write carries the `resourceVersion` read, so
//! two nodes racing for one slot cannot both win: the apiserver answers the loser 409.
//!
//! Expiry is judged as client-go's leader election judges it (SPEC 6b): from this node's own
//! monotonic time at which it last saw the Lease change (`Observed`), never from the writer's
//! `renewTime`, so a wall clock behind or ahead on any node cannot free a live slot. A Lease
//! first seen held is waited on for its full `leaseDurationSeconds` (plus `margin`).
//!
//! The agent takes slots through `fleet::run` from the watch's copy (`fleet::cache`, issue 24);
//! `Slots::acquire`, one LIST then the writes, is the same rule without a watch.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;
use serde_json::{json, Value};

/// A Lease as far as slots need it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lease {
    pub namespace: String,
    pub name: String,
    /// Empty for a Lease not yet created.
    pub resource_version: String,
    /// `None` or empty: free.
    pub holder: Option<String>,
    pub lease_duration_seconds: u32,
    pub acquire_time: Option<SystemTime>,
    pub renew_time: Option<SystemTime>,
    pub lease_transitions: u32,
    /// The holder's upgrade failed (annotation `yurt-ota.io/failed-revision`, the revision):
    /// it holds the slot because its pod is down, which a waiting node says (SPEC 6b).
    pub failed: Option<String>,
    /// The label `yurt-ota.io/daemonset` (`daemonset_label`): what the slot watch selects.
    /// `None` on a slot an older agent wrote; the next write by this one labels it.
    pub daemonset: Option<String>,
    /// The annotation `yurt-ota.io/takes`, `<revision> <n>`: how many times this slot was taken
    /// for that revision. Summed over the slots, how far the rollout of a revision is
    /// (`run::turn`).
    pub takes: Option<Takes>,
}

/// What a slot's `yurt-ota.io/takes` annotation says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Takes {
    pub revision: String,
    pub count: u32,
}

/// The label every slot Lease carries: its DaemonSet (`daemonset_label`).
pub const DAEMONSET_LABEL: &str = "yurt-ota.io/daemonset";
/// The annotation counting a slot's takes for a revision (`Lease::takes`).
pub const TAKES_ANNOTATION: &str = "yurt-ota.io/takes";

/// The value of `DAEMONSET_LABEL` for DaemonSet `ns/name`: `<ns>.<name>` when that is a valid
/// label value (at most 63 characters; a namespace and a name are lower-case DNS names, so
/// only the length can fail), else the first 46 characters of it, trimmed to end in an
/// alphanumeric, then `-` and the 16 hex digits of the FNV-1a 64 hash of `<ns>/<name>`:
/// stable across nodes, versions and restarts, and distinct for distinct DaemonSets but for
/// a hash collision between two long names of one fleet.
pub fn daemonset_label(ns: &str, name: &str) -> String {
    let plain = format!("{ns}.{name}");
    if valid_label_value(&plain) {
        return plain;
    }
    let mut h = fnv::FnvHasher::default();
    std::hash::Hasher::write(&mut h, format!("{ns}/{name}").as_bytes());
    let hash = std::hash::Hasher::finish(&h);
    let head: String = plain.chars().take(46).collect();
    let head = head.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    if head.is_empty() {
        format!("h{hash:016x}")
    } else {
        format!("{head}-{hash:016x}")
    }
}

/// A Kubernetes label value: at most 63 characters, `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`.
pub fn valid_label_value(v: &str) -> bool {
    let b = v.as_bytes();
    let edge = |c: &u8| c.is_ascii_alphanumeric();
    b.len() <= 63
        && b.first().is_some_and(edge)
        && b.last().is_some_and(edge)
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
}

/// The annotation a holder whose upgrade failed puts on its slot.
pub const FAILED_ANNOTATION: &str = "yurt-ota.io/failed-revision";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseError {
    /// 409: the resourceVersion no longer matches, or the Lease already exists.
    Conflict,
    /// The slot we held is now another node's (it expired while we could not renew it).
    Lost { holder: String },
    /// Anything else: the apiserver unreachable, 403, a malformed answer.
    Unavailable(String),
}

impl std::fmt::Display for LeaseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeaseError::Conflict => f.write_str("another node wrote the lease first (409)"),
            LeaseError::Lost { holder } => write!(f, "the slot is now held by {holder}"),
            LeaseError::Unavailable(e) => f.write_str(e),
        }
    }
}

/// The Lease calls slots need; the apiserver client implements them.
pub trait Leases {
    /// `GET .../namespaces/{ns}/leases`: every Lease of the namespace, in one read. A slot is
    /// found by its name among them (the apiserver selects by label or field, not by a name
    /// prefix; the Leases of a DaemonSet's namespace are few).
    fn list(&self, namespace: &str) -> Result<Vec<Lease>, LeaseError>;
    /// `GET .../leases/{name}`: `None` on 404.
    fn get(&self, namespace: &str, name: &str) -> Result<Option<Lease>, LeaseError>;
    /// `POST .../leases`: `Conflict` when it already exists.
    fn create(&self, lease: &Lease) -> Result<Lease, LeaseError>;
    /// `PUT .../leases/{name}` carrying `resource_version`: `Conflict` when it moved on.
    fn update(&self, lease: &Lease) -> Result<Lease, LeaseError>;
    /// Keeps the Leases of `namespace` labelled `DAEMONSET_LABEL=label` in a cache: a LIST
    /// with that label selector, then a watch from its resourceVersion (bookmarks on; watched
    /// again from the last resourceVersion when it ends, listed again on 410 Gone), for as
    /// long as the caller keeps the cache (`Arc`). `clock` times what the cache sees change.
    fn watch_slots(
        &self,
        namespace: &str,
        label: &str,
        clock: fn() -> Instant,
    ) -> Result<std::sync::Arc<super::cache::SlotCache>, LeaseError>;
}

/// The name of slot `index` of a DaemonSet, `daemonset` its `slot_key`:
/// `<ds-namespace>.<ds-name>.<index>`.
pub fn slot_name(daemonset: &str, index: u32) -> String {
    format!("{daemonset}.{index}")
}

/// What names a DaemonSet's slots among the fleet's: `<ds-namespace>.<ds-name>`. A valid Lease
/// name (a DNS subdomain) whatever the two names, as a namespace holds no dot.
pub fn slot_key(ds_namespace: &str, ds_name: &str) -> String {
    format!("{ds_namespace}.{ds_name}")
}

/// The slot index a Lease name stands for among a DaemonSet's `budget` slots (the inverse of
/// `slot_name`): slots are found among the Leases that exist, never by a loop over the budget.
pub fn slot_index(daemonset: &str, name: &str, budget: u32) -> Option<u32> {
    let i: u32 = name
        .strip_prefix(daemonset)?
        .strip_prefix('.')?
        .parse()
        .ok()?;
    (i < budget && slot_name(daemonset, i) == name).then_some(i)
}

/// What this node saw of other nodes' Leases, and when by its own monotonic clock: a Lease
/// is expired once it has not changed (`resourceVersion`, holder, `renewTime`) for its
/// `leaseDurationSeconds` since this node saw it change. One per node, kept across attempts.
pub struct Observed {
    seen: Mutex<HashMap<String, (String, Instant)>>,
    /// The monotonic clock (`Instant::now`; tests set their own).
    pub clock: fn() -> Instant,
}

impl Default for Observed {
    fn default() -> Self {
        Observed {
            seen: Mutex::new(HashMap::new()),
            clock: Instant::now,
        }
    }
}

impl Observed {
    /// Records `lease` as read now; returns when it was last seen to change.
    fn saw(&self, lease: &Lease) -> Instant {
        let now = (self.clock)();
        let record = format!(
            "{}|{}|{:?}|{:?}",
            lease.resource_version,
            lease.holder.as_deref().unwrap_or(""),
            lease.renew_time,
            lease.lease_duration_seconds
        );
        let mut g = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let key = format!("{}/{}", lease.namespace, lease.name);
        match g.get_mut(&key) {
            Some((r, at)) if *r == record => *at,
            Some(entry) => {
                *entry = (record, now);
                now
            }
            None => {
                g.insert(key, (record, now));
                now
            }
        }
    }

    /// Forgets the Leases of `prefix` not in `names` (deleted): the record stays bounded by
    /// the slots that exist.
    fn forget_others(&self, namespace: &str, keep: &[&Lease], of: impl Fn(&str) -> bool) {
        let mut g = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        g.retain(|k, _| {
            let Some((ns, name)) = k.split_once('/') else {
                return false;
            };
            ns != namespace || !of(name) || keep.iter().any(|l| l.name == name)
        });
    }
}

/// A slot this node holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub index: u32,
    pub lease: Lease,
}

/// What an attempt to take a slot came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotOutcome {
    Taken(Slot),
    /// Every slot is held by a live holder, named here in slot order, for `why_not_yet`.
    Full {
        holders: Vec<String>,
    },
}

/// Slot operations for one node.
pub struct Slots<'a, L: Leases + ?Sized> {
    pub leases: &'a L,
    /// This node's name: the `holderIdentity` written.
    pub holder: &'a str,
    /// `leaseDurationSeconds` written: `policy.ready_timeout` plus a margin.
    pub duration: Duration,
    /// How much longer than its `leaseDurationSeconds` unchanged a node waits before it
    /// treats another's lease as expired.
    pub margin: Duration,
    /// This node's observations of the Leases (kept by the caller across attempts).
    pub observed: &'a Observed,
    /// The `DAEMONSET_LABEL` value every write puts on the slot (`None`: left as it is).
    pub label: Option<&'a str>,
    /// The revision a take is for (`Lease::takes`).
    pub revision: Option<&'a str>,
}

impl<L: Leases + ?Sized> Slots<'_, L> {
    /// Whether `lease` is free for this node: no holder, this node, or unchanged for its
    /// `leaseDurationSeconds` plus `margin` since this node saw it change (`Observed`). The
    /// writer's `renewTime` is never compared with this node's clock.
    fn free(&self, lease: &Lease) -> bool {
        match lease.holder.as_deref() {
            None | Some("") => true,
            Some(h) if h == self.holder => true,
            Some(_) => {
                let changed = self.observed.saw(lease);
                let ttl = Duration::from_secs(u64::from(lease.lease_duration_seconds));
                changed
                    .checked_add(ttl)
                    .and_then(|t| t.checked_add(self.margin))
                    .is_some_and(|expiry| expiry < (self.observed.clock)())
            }
        }
    }

    /// The slot this node already holds among `budget` slots, if any (after a restart).
    pub fn held(
        &self,
        namespace: &str,
        daemonset: &str,
        budget: u32,
    ) -> Result<Option<Slot>, LeaseError> {
        let listed = self.leases.list(namespace)?;
        Ok(listed
            .into_iter()
            .filter_map(|lease| Some((slot_index(daemonset, &lease.name, budget)?, lease)))
            .filter(|(_, l)| l.holder.as_deref() == Some(self.holder))
            .min_by_key(|(i, _)| *i)
            .map(|(index, lease)| Slot { index, lease }))
    }

    /// Take a slot: the one this node already holds (renewed), else the first free one, from
    /// one LIST of the namespace's Leases. A 409 means another node won that slot: the next one
    /// is tried.
    pub fn acquire(
        &self,
        namespace: &str,
        daemonset: &str,
        budget: u32,
        now: SystemTime,
    ) -> Result<SlotOutcome, LeaseError> {
        // The slots that exist, by index: no loop or allocation per slot of the budget.
        let mut slots: Vec<(u32, Lease)> = self
            .leases
            .list(namespace)?
            .into_iter()
            .filter_map(|l| Some((slot_index(daemonset, &l.name, budget)?, l)))
            .collect();
        slots.sort_by_key(|(i, _)| *i);
        {
            let existing: Vec<&Lease> = slots.iter().map(|(_, l)| l).collect();
            self.observed.forget_others(namespace, &existing, |n| {
                slot_index(daemonset, n, budget).is_some()
            });
        }
        if let Some(pos) = slots
            .iter()
            .position(|(_, l)| l.holder.as_deref() == Some(self.holder))
        {
            let (index, lease) = slots.swap_remove(pos);
            let mut slot = Slot { index, lease };
            self.renew(&mut slot, now)?;
            return Ok(SlotOutcome::Taken(slot));
        }
        // The first index with no Lease yet, if one is left under the budget.
        let missing = (slots.len() < budget as usize).then(|| {
            let mut want = 0;
            for (i, _) in &slots {
                if *i != want {
                    break;
                }
                want += 1;
            }
            want
        });
        let mut holders = Vec::new();
        let mut tries: Vec<(u32, Option<Lease>)> = Vec::with_capacity(slots.len() + 1);
        for (index, lease) in slots {
            if self.free(&lease) {
                tries.push((index, Some(lease)));
            } else {
                holders.push((index, holder_word(&lease)));
            }
        }
        if let Some(index) = missing {
            tries.push((index, None));
        }
        tries.sort_by_key(|(i, _)| *i);
        for (index, lease) in tries {
            let taken = self.write_take(namespace, daemonset, index, lease, now);
            match taken {
                Ok(lease) => return Ok(SlotOutcome::Taken(Slot { index, lease })),
                Err(LeaseError::Conflict) => {
                    // Another node won this one: say who, and try the next.
                    let now_held = self.leases.get(namespace, &slot_name(daemonset, index))?;
                    holders.push((index, now_held.and_then(|l| l.holder).unwrap_or_default()));
                }
                Err(e) => return Err(e),
            }
        }
        holders.sort_by_key(|(i, _)| *i);
        let holders = holders.into_iter().map(|(_, h)| h).collect();
        Ok(SlotOutcome::Full { holders })
    }

    /// One write taking slot `index`: a create when `lease` is `None` (no Lease yet), else an
    /// update carrying its resourceVersion. The Lease written carries this node's label
    /// (`label`) and the count of takes for `revision`.
    pub fn write_take(
        &self,
        namespace: &str,
        daemonset: &str,
        index: u32,
        lease: Option<Lease>,
        now: SystemTime,
    ) -> Result<Lease, LeaseError> {
        let rev = self.revision.unwrap_or("?").to_owned();
        let takes = |old: Option<&Takes>| {
            Some(Takes {
                count: old
                    .filter(|t| t.revision == rev)
                    .map_or(0, |t| t.count)
                    .saturating_add(1),
                revision: rev.clone(),
            })
        };
        match lease {
            None => self.leases.create(&Lease {
                namespace: namespace.to_owned(),
                name: slot_name(daemonset, index),
                resource_version: String::new(),
                holder: Some(self.holder.to_owned()),
                lease_duration_seconds: self.duration_seconds(),
                acquire_time: Some(now),
                renew_time: Some(now),
                lease_transitions: 0,
                failed: None,
                daemonset: self.label.map(str::to_owned),
                takes: takes(None),
            }),
            Some(l) => self.leases.update(&Lease {
                holder: Some(self.holder.to_owned()),
                lease_duration_seconds: self.duration_seconds(),
                acquire_time: Some(now),
                renew_time: Some(now),
                lease_transitions: l.lease_transitions + u32::from(l.holder.is_some()),
                failed: None,
                daemonset: self.label.map(str::to_owned).or(l.daemonset.clone()),
                takes: takes(l.takes.as_ref()),
                ..l
            }),
        }
    }

    /// Push the slot's expiry out. A 409 re-reads it: still ours, renew again; another
    /// node's, `Lost`.
    pub fn renew(&self, slot: &mut Slot, now: SystemTime) -> Result<(), LeaseError> {
        for _ in 0..3 {
            let want = Lease {
                holder: Some(self.holder.to_owned()),
                lease_duration_seconds: self.duration_seconds(),
                renew_time: Some(now),
                daemonset: self
                    .label
                    .map(str::to_owned)
                    .or(slot.lease.daemonset.clone()),
                ..slot.lease.clone()
            };
            match self.leases.update(&want) {
                Ok(lease) => {
                    slot.lease = lease;
                    return Ok(());
                }
                Err(LeaseError::Conflict) => {
                    let current = self.leases.get(&slot.lease.namespace, &slot.lease.name)?;
                    match current {
                        Some(l) if l.holder.as_deref() == Some(self.holder) => slot.lease = l,
                        Some(l) => {
                            return Err(LeaseError::Lost {
                                holder: l.holder.unwrap_or_default(),
                            })
                        }
                        None => {
                            return Err(LeaseError::Lost {
                                holder: String::new(),
                            })
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(LeaseError::Conflict)
    }

    /// Give the slot back (holder cleared). A slot already another's, or gone, is released.
    pub fn release(&self, slot: &Slot) -> Result<(), LeaseError> {
        let mut lease = slot.lease.clone();
        for _ in 0..3 {
            let cleared = Lease {
                holder: None,
                failed: None,
                ..lease.clone()
            };
            match self.leases.update(&cleared) {
                Ok(_) => return Ok(()),
                Err(LeaseError::Conflict) => {
                    match self.leases.get(&lease.namespace, &lease.name)? {
                        Some(l) if l.holder.as_deref() == Some(self.holder) => lease = l,
                        _ => return Ok(()),
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(LeaseError::Conflict)
    }

    fn duration_seconds(&self) -> u32 {
        u32::try_from(self.duration.as_secs().max(1)).unwrap_or(u32::MAX)
    }
}

/// A holder as a waiting node names it: `node-a`, or `node-a (failed revision X)`.
pub(crate) fn holder_word(l: &Lease) -> String {
    let h = l.holder.clone().unwrap_or_default();
    match &l.failed {
        Some(r) => format!("{h} (failed revision {r})"),
        None => h,
    }
}

/// RFC 3339 with six fractional digits, as Kubernetes writes a `MicroTime`.
pub fn micro_time(t: SystemTime) -> String {
    let us = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    let ts = jiff::Timestamp::from_microsecond(us).unwrap_or(jiff::Timestamp::MAX);
    ts.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn parse_time(s: &str) -> Option<SystemTime> {
    let us = u64::try_from(s.parse::<jiff::Timestamp>().ok()?.as_microsecond()).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_micros(us))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawLease {
    metadata: RawMeta,
    #[serde(default)]
    spec: Option<RawSpec>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMeta {
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    resource_version: Option<String>,
    #[serde(default)]
    annotations: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    labels: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawSpec {
    holder_identity: Option<String>,
    lease_duration_seconds: Option<u32>,
    acquire_time: Option<String>,
    renew_time: Option<String>,
    lease_transitions: Option<u32>,
}

impl Lease {
    /// A Lease from the apiserver's JSON.
    pub fn from_json(body: &[u8]) -> Result<Lease, String> {
        let raw: RawLease =
            serde_json::from_slice(body).map_err(|e| format!("not a Lease: {e}"))?;
        Ok(Lease::from_raw(raw))
    }

    /// The items of a `LeaseList` and its `metadata.resourceVersion` (to watch from).
    pub fn list_with_version(body: &[u8]) -> Result<(Vec<Lease>, String), String> {
        #[derive(Deserialize)]
        struct ListMeta {
            #[serde(default, rename = "resourceVersion")]
            resource_version: Option<String>,
        }
        #[derive(Deserialize)]
        struct RawList {
            #[serde(default)]
            metadata: Option<ListMeta>,
            items: Vec<RawLease>,
        }
        let raw: RawList =
            serde_json::from_slice(body).map_err(|e| format!("not a LeaseList: {e}"))?;
        let rv = raw
            .metadata
            .and_then(|m| m.resource_version)
            .unwrap_or_default();
        Ok((raw.items.into_iter().map(Lease::from_raw).collect(), rv))
    }

    /// The items of a `LeaseList` (which carry no `kind` of their own).
    pub fn list_from_json(body: &[u8]) -> Result<Vec<Lease>, String> {
        #[derive(Deserialize)]
        struct RawList {
            items: Vec<RawLease>,
        }
        let raw: RawList =
            serde_json::from_slice(body).map_err(|e| format!("not a LeaseList: {e}"))?;
        Ok(raw.items.into_iter().map(Lease::from_raw).collect())
    }

    fn from_raw(raw: RawLease) -> Lease {
        let spec = raw.spec.unwrap_or_default();
        let mut annotations = raw.metadata.annotations.unwrap_or_default();
        let takes = annotations.remove(TAKES_ANNOTATION).and_then(|t| {
            let mut w = t.split(' ');
            Some(Takes {
                revision: w.next()?.to_owned(),
                count: w.next()?.parse().ok()?,
            })
        });
        Lease {
            namespace: raw.metadata.namespace.unwrap_or_default(),
            name: raw.metadata.name,
            resource_version: raw.metadata.resource_version.unwrap_or_default(),
            holder: spec.holder_identity.filter(|h| !h.is_empty()),
            lease_duration_seconds: spec.lease_duration_seconds.unwrap_or(0),
            acquire_time: spec.acquire_time.as_deref().and_then(parse_time),
            renew_time: spec.renew_time.as_deref().and_then(parse_time),
            lease_transitions: spec.lease_transitions.unwrap_or(0),
            failed: annotations.remove(FAILED_ANNOTATION),
            daemonset: raw
                .metadata
                .labels
                .and_then(|mut l| l.remove(DAEMONSET_LABEL)),
            takes,
        }
    }

    /// The body of a create (no resourceVersion) or an update (with it).
    pub fn to_json(&self) -> Value {
        let mut metadata = json!({"name": self.name, "namespace": self.namespace});
        if !self.resource_version.is_empty() {
            metadata["resourceVersion"] = json!(self.resource_version);
        }
        let mut annotations = serde_json::Map::new();
        if let Some(r) = &self.failed {
            annotations.insert(FAILED_ANNOTATION.into(), json!(r));
        }
        if let Some(t) = &self.takes {
            annotations.insert(
                TAKES_ANNOTATION.into(),
                json!(format!("{} {}", t.revision, t.count)),
            );
        }
        if !annotations.is_empty() {
            metadata["annotations"] = Value::Object(annotations);
        }
        if let Some(d) = &self.daemonset {
            metadata["labels"] = json!({ DAEMONSET_LABEL: d });
        }
        json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": {
                "holderIdentity": self.holder,
                "leaseDurationSeconds": self.lease_duration_seconds,
                "acquireTime": self.acquire_time.map(micro_time),
                "renewTime": self.renew_time.map(micro_time),
                "leaseTransitions": self.lease_transitions,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::testing::Store;

    thread_local! {
        /// This test's monotonic clock, moved by `at`.
        static MONO: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
        /// Each node's observations, for this test.
        static OBSERVED: std::cell::RefCell<HashMap<String, &'static Observed>> =
            std::cell::RefCell::new(HashMap::new());
    }

    fn base() -> Instant {
        static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *BASE.get_or_init(Instant::now)
    }

    fn mono() -> Instant {
        MONO.with(|m| m.get()).unwrap_or_else(base)
    }

    /// Node `node`'s slot operations, with its own observations kept across calls.
    fn slots<'a>(store: &'a Store, node: &'a str) -> Slots<'a, Store> {
        let observed = OBSERVED.with(|o| {
            *o.borrow_mut().entry(node.to_owned()).or_insert_with(|| {
                Box::leak(Box::new(Observed {
                    clock: mono,
                    ..Observed::default()
                }))
            })
        });
        Slots {
            leases: store,
            holder: node,
            duration: Duration::from_secs(60),
            margin: Duration::from_secs(5),
            observed,
            label: None,
            revision: None,
        }
    }

    /// `secs` into the test on every clock: the wall time written, and the monotonic time.
    fn at(secs: u64) -> SystemTime {
        MONO.with(|m| m.set(Some(base() + Duration::from_secs(secs))));
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    fn taken(o: SlotOutcome) -> Slot {
        match o {
            SlotOutcome::Taken(s) => s,
            SlotOutcome::Full { holders } => panic!("full: {holders:?}"),
        }
    }

    #[test]
    fn slots_fill_up_to_the_budget_then_name_their_holders() {
        let store = Store::default();
        let a = taken(
            slots(&store, "node-a")
                .acquire("fleet", "gw", 2, at(0))
                .unwrap(),
        );
        let b = taken(
            slots(&store, "node-b")
                .acquire("fleet", "gw", 2, at(1))
                .unwrap(),
        );
        assert_eq!((a.index, b.index), (0, 1));
        assert_eq!(store.holder("gw.0").as_deref(), Some("node-a"));
        assert_eq!(
            slots(&store, "node-c")
                .acquire("fleet", "gw", 2, at(2))
                .unwrap(),
            SlotOutcome::Full {
                holders: vec!["node-a".into(), "node-b".into()]
            }
        );
        // Released, the slot goes to the next node.
        slots(&store, "node-a").release(&a).unwrap();
        assert_eq!(store.holder("gw.0"), None);
        let c = taken(
            slots(&store, "node-c")
                .acquire("fleet", "gw", 2, at(3))
                .unwrap(),
        );
        assert_eq!(c.index, 0);
        assert_eq!(
            c.lease.lease_transitions, 0,
            "a released slot taken again is no transition"
        );
    }

    #[test]
    fn one_list_reads_every_slot() {
        let store = Store::default();
        taken(
            slots(&store, "node-a")
                .acquire("fleet", "gw", 3, at(0))
                .unwrap(),
        );
        taken(
            slots(&store, "node-b")
                .acquire("fleet", "gw", 3, at(0))
                .unwrap(),
        );
        store.ops.lock().unwrap().clear();
        let c = taken(
            slots(&store, "node-c")
                .acquire("fleet", "gw", 3, at(1))
                .unwrap(),
        );
        assert_eq!(c.index, 2);
        assert_eq!(
            *store.ops.lock().unwrap(),
            ["list fleet", "create gw.2 node-c"],
            "one read for three slots, one write"
        );
    }

    #[test]
    fn a_restarted_node_finds_the_slot_it_holds_and_takes_no_second() {
        let store = Store::default();
        let first = taken(
            slots(&store, "node-a")
                .acquire("fleet", "gw", 3, at(0))
                .unwrap(),
        );
        let again = taken(
            slots(&store, "node-a")
                .acquire("fleet", "gw", 3, at(10))
                .unwrap(),
        );
        assert_eq!(first.index, again.index);
        assert_eq!(again.lease.renew_time, Some(at(10)));
        assert_eq!(
            slots(&store, "node-a")
                .held("fleet", "gw", 3)
                .unwrap()
                .map(|s| s.index),
            Some(0)
        );
        assert_eq!(store.holder("gw.1"), None);
    }

    #[test]
    fn an_expired_slot_is_taken_over_only_after_the_lease_and_margin_since_seen() {
        let store = Store::default();
        taken(
            slots(&store, "dead")
                .acquire("fleet", "gw", 1, at(0))
                .unwrap(),
        );
        // node-b first sees it at 1 s: 60 s lease + 5 s margin from then, by its own clock.
        for t in [1, 64, 66] {
            assert!(
                matches!(
                    slots(&store, "node-b")
                        .acquire("fleet", "gw", 1, at(t))
                        .unwrap(),
                    SlotOutcome::Full { .. }
                ),
                "held at {t} s"
            );
        }
        let b = taken(
            slots(&store, "node-b")
                .acquire("fleet", "gw", 1, at(67))
                .unwrap(),
        );
        assert_eq!(b.lease.holder.as_deref(), Some("node-b"));
        assert_eq!(b.lease.lease_transitions, 1);
    }

    #[test]
    fn renewal_keeps_a_slot_and_notices_when_it_was_lost() {
        let store = Store::default();
        let mut a = taken(
            slots(&store, "node-a")
                .acquire("fleet", "gw", 1, at(0))
                .unwrap(),
        );
        slots(&store, "node-a").renew(&mut a, at(30)).unwrap();
        // Renewed at 30, seen renewed by node-b at 31: not free at 80 (31 + 60 + 5 = 96).
        assert!(matches!(
            slots(&store, "node-b")
                .acquire("fleet", "gw", 1, at(31))
                .unwrap(),
            SlotOutcome::Full { .. }
        ));
        assert!(matches!(
            slots(&store, "node-b")
                .acquire("fleet", "gw", 1, at(80))
                .unwrap(),
            SlotOutcome::Full { .. }
        ));
        // node-a could not renew; at 100 node-b takes over, and node-a learns it lost the slot.
        taken(
            slots(&store, "node-b")
                .acquire("fleet", "gw", 1, at(100))
                .unwrap(),
        );
        assert_eq!(
            slots(&store, "node-a").renew(&mut a, at(101)),
            Err(LeaseError::Lost {
                holder: "node-b".into()
            })
        );
        // Releasing a lost slot leaves the new holder alone.
        slots(&store, "node-a").release(&a).unwrap();
        assert_eq!(store.holder("gw.0").as_deref(), Some("node-b"));
    }

    /// Regression (issue 23, item 2): a node whose wall clock is an hour behind wrote
    /// `renewTime` an hour in the past; every other node judged its Lease expired at once and
    /// took the slot during its upgrade.
    #[test]
    fn a_clock_behind_loses_its_own_slot() {
        let store = Store::default();
        at(0);
        let behind = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 - 3600);
        taken(
            slots(&store, "node-a")
                .acquire("fleet", "gw", 1, behind)
                .unwrap(),
        );
        for t in [1, 30, 60] {
            assert!(
                matches!(
                    slots(&store, "node-b")
                        .acquire("fleet", "gw", 1, at(t))
                        .unwrap(),
                    SlotOutcome::Full { .. }
                ),
                "node-a's slot taken at {t} s"
            );
        }
        assert_eq!(store.holder("gw.0").as_deref(), Some("node-a"));
    }

    /// Regression (issue 23, item 2): a holder whose clock is an hour ahead dies; its slot
    /// stays held only for the lease (plus margin) as the others see it, not for the hour.
    #[test]
    fn a_clock_ahead_holds_a_dead_slot_only_for_the_lease() {
        let store = Store::default();
        at(0);
        let ahead = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + 3600);
        taken(
            slots(&store, "dead")
                .acquire("fleet", "gw", 1, ahead)
                .unwrap(),
        );
        assert!(matches!(
            slots(&store, "node-b")
                .acquire("fleet", "gw", 1, at(1))
                .unwrap(),
            SlotOutcome::Full { .. }
        ));
        let b = taken(
            slots(&store, "node-b")
                .acquire("fleet", "gw", 1, at(67))
                .unwrap(),
        );
        assert_eq!(b.lease.holder.as_deref(), Some("node-b"));
    }

    /// Regression (issue 23, item 3): a budget of 4,000,000,000 slots allocated a vector of
    /// that many entries (abort) and looped over each; only the slots that exist are read.
    #[test]
    fn a_huge_budget_allocates_and_loops_nothing_per_slot() {
        let store = Store::default();
        let a = taken(
            slots(&store, "node-a")
                .acquire("fleet", "gw", 4_000_000_000, at(0))
                .unwrap(),
        );
        let b = taken(
            slots(&store, "node-b")
                .acquire("fleet", "gw", u32::MAX, at(0))
                .unwrap(),
        );
        assert_eq!((a.index, b.index), (0, 1));
        assert_eq!(
            slots(&store, "node-b")
                .held("fleet", "gw", u32::MAX)
                .unwrap()
                .map(|s| s.index),
            Some(1)
        );
        assert_eq!(slot_index("edge.gw", "edge.gw.7", 8), Some(7));
        assert_eq!(slot_index("edge.gw", "edge.gw.8", 8), None);
        assert_eq!(slot_index("edge.gw", "edge.gw.07", 8), None);
        assert_eq!(slot_index("edge.gw", "edge.gw.x.1", 8), None);
        // A DaemonSet name may hold dots: another DaemonSet's slots are never taken for its own.
        assert_eq!(slot_index("edge.gw", "edge.gw.b.1", 8), None);
        assert_eq!(slot_index("edge.gw.b", "edge.gw.b.1", 8), Some(1));
    }

    #[test]
    fn racing_nodes_never_hold_more_than_the_budget() {
        let store = std::sync::Arc::new(Store::default());
        let nodes: Vec<String> = (0..12).map(|i| format!("node-{i}")).collect();
        let won: Vec<bool> = std::thread::scope(|s| {
            let handles: Vec<_> = nodes
                .iter()
                .map(|n| {
                    let store = &store;
                    s.spawn(move || {
                        matches!(
                            slots(store, n).acquire("fleet", "gw", 3, at(0)).unwrap(),
                            SlotOutcome::Taken(_)
                        )
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(won.iter().filter(|w| **w).count(), 3);
        let holders: std::collections::BTreeSet<_> = (0..3)
            .filter_map(|i| store.holder(&slot_name("gw", i)))
            .collect();
        assert_eq!(holders.len(), 3, "three distinct holders: {holders:?}");
    }

    #[test]
    fn an_unreachable_apiserver_takes_no_slot() {
        let store = Store::default();
        store.down.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(matches!(
            slots(&store, "node-a").acquire("fleet", "gw", 2, at(0)),
            Err(LeaseError::Unavailable(_))
        ));
    }

    #[test]
    fn lease_json_round_trips_in_the_apiserver_shape() {
        let lease = Lease {
            namespace: "fleet".into(),
            name: "gw.0".into(),
            resource_version: "42".into(),
            holder: Some("node-a".into()),
            lease_duration_seconds: 360,
            acquire_time: Some(at(0) + Duration::from_micros(123_456)),
            renew_time: Some(at(5)),
            lease_transitions: 2,
            failed: Some("7f9c8d6b5".into()),
            daemonset: Some("edge.gw".into()),
            takes: Some(Takes {
                revision: "7f9c8d6b5".into(),
                count: 4,
            }),
        };
        let v = lease.to_json();
        assert_eq!(v["metadata"]["labels"][DAEMONSET_LABEL], "edge.gw");
        assert_eq!(
            v["metadata"]["annotations"][TAKES_ANNOTATION],
            "7f9c8d6b5 4"
        );
        assert_eq!(v["spec"]["acquireTime"], "2027-01-15T08:00:00.123456Z");
        assert_eq!(v["spec"]["renewTime"], "2027-01-15T08:00:05.000000Z");
        assert_eq!(v["metadata"]["resourceVersion"], "42");
        let back = Lease::from_json(v.to_string().as_bytes()).unwrap();
        assert_eq!(back, lease);
        // A create carries no resourceVersion; a cleared holder is null.
        assert_eq!(v["metadata"]["annotations"][FAILED_ANNOTATION], "7f9c8d6b5");
        let fresh = Lease {
            resource_version: String::new(),
            holder: None,
            failed: None,
            ..lease
        };
        let v = fresh.to_json();
        assert!(v["metadata"].get("resourceVersion").is_none());
        assert!(v["spec"]["holderIdentity"].is_null());
        assert!(Lease::from_json(b"{\"kind\":\"Status\"}").is_err());
    }

    #[test]
    fn the_daemonset_label_is_a_valid_label_value_whatever_the_names() {
        assert_eq!(daemonset_label("edge", "gw"), "edge.gw");
        let long = "a".repeat(63);
        for (ns, name) in [
            ("edge", long.as_str()),
            ("kube-system", "x".repeat(253).as_str()),
            ("a-b", "c.d-e".repeat(20).as_str()),
        ] {
            let l = daemonset_label(ns, name);
            assert!(valid_label_value(&l), "{l}");
            assert_eq!(l, daemonset_label(ns, name), "stable");
            assert_ne!(l, daemonset_label(ns, &format!("{name}x")), "distinct");
        }
        assert!(!valid_label_value(&"a".repeat(64)));
        assert!(!valid_label_value("-a"));
        assert!(!valid_label_value("a."));
        assert!(valid_label_value("a_b.c-d"));
    }
}
