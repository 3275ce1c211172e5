//! The node's side of the fleet budget at run time: the DaemonSet views the policy reads, the
//! slots this node holds, and the Lease calls that take, renew, resume and release them. Called
//! from the decision loop's thread only (the act step and each tick); the API reads the views.
//! No lock is held across a Lease call.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use super::cache::{Look, SlotCache};
use super::lease::{daemonset_label, slot_key, slot_name, LeaseError, Leases, Slot, Slots};
use super::view::{DaemonSetInfo, DaemonSetView, FleetView, SlotView};

/// `leaseDurationSeconds` is `policy.ready_timeout` plus this (SPEC 6b): the call, the tick
/// that notices the replacement, and the release fit in it.
pub const LEASE_MARGIN: Duration = Duration::from_secs(10);
/// Another node's lease counts as expired only this long after it has stayed unchanged for its
/// `leaseDurationSeconds`, by this node's monotonic clock since it saw it change (SPEC 6b): no
/// wall clock is compared, so this is a margin for the reads' latency, not for clock skew.
pub const SKEW: Duration = Duration::from_secs(5);
/// A full budget (or unreadable Leases) is tried again after this, plus up to 1 s of jitter.
pub const RETRY: Duration = Duration::from_secs(2);

/// The wait between two nodes next to each other in line for a free slot (issue 24): more
/// than a write's round trip plus the watch's delivery of it to the others, so that the next
/// in line sees the slot taken before its own turn comes.
pub const TURN_STEP: Duration = Duration::from_millis(250);
/// The longest a node waits for its turn once it sees a slot free.
pub const MAX_TURN: Duration = Duration::from_secs(30);
/// While a new slot watch's first LIST is under way, the copy is looked at again after this.
pub const LISTING_RETRY: Duration = Duration::from_millis(100);
/// A slot watch no take asked for this long is stopped (the node has nothing outdated left).
pub const WATCH_IDLE: Duration = Duration::from_secs(60);

/// This node's place in line for DaemonSet `daemonset` (its `slot_key`) at `revision`: the
/// FNV-1a 64 hash of the three, as a fraction in [0, 1). Every node computes its own, the same
/// at every start; a new revision deals the order again.
pub fn rank(node: &str, daemonset: &str, revision: &str) -> f64 {
    let mut h = fnv::FnvHasher::default();
    for part in [node, daemonset, revision] {
        std::hash::Hasher::write(&mut h, part.as_bytes());
        std::hash::Hasher::write_u8(&mut h, 0);
    }
    (std::hash::Hasher::finish(&h) >> 11) as f64 / (1u64 << 53) as f64
}

/// Which of the free slots a node of `rank` tries, and how long after it saw them free (issue
/// 24). Nodes go in rank order: the slots' annotations say how many nodes took a slot for this
/// revision (`started` of `nodes`), so the front of the line is near rank `started / nodes`
/// and about `(rank - started / nodes) * nodes` nodes are ahead of this one. With `free` slots
/// free, the first `free` of the line go within one `TURN_STEP`, each to the slot of its
/// place; the rest wait one step per `free` nodes ahead of them, and find the slots taken (the
/// watch told them) before their turn comes. Past `MAX_TURN` the wait grows with the logarithm
/// of the place: still in order, and bounded for a node far back. The first in line goes at
/// once. A node already behind the
/// front (it lost a race, or saw the slot late) goes within one step, the lower its rank the
/// sooner.
pub fn turn(rank: f64, started: u64, nodes: u32, free: usize) -> (usize, Duration) {
    let n = f64::from(nodes.max(1));
    let front = (started as f64 / n).min(1.0);
    let free = free.max(1);
    let ahead = (rank - front) * n;
    if ahead < 0.0 {
        let place = (rank * n) as usize;
        return (
            place % free,
            TURN_STEP.mul_f64(rank / front.max(f64::MIN_POSITIVE)),
        );
    }
    let place = ahead.floor() as usize;
    // First in line: no one to wait for.
    if ahead < 1.0 {
        return (0, Duration::ZERO);
    }
    let steps = ahead / free as f64;
    let knee = MAX_TURN.as_secs_f64() / TURN_STEP.as_secs_f64();
    let steps = if steps <= knee {
        steps
    } else {
        knee * (1.0 + (steps / knee).ln())
    };
    (place % free, TURN_STEP.mul_f64(steps))
}

/// The Lease I/O this node uses: the store and its own name (`holderIdentity`).
pub type Io<'a> = Option<(&'a (dyn Leases + 'a), &'a str)>;

pub struct Fleet {
    duration: Duration,
    /// `fleet.namespace`: where every slot Lease lives.
    namespace: String,
    inner: Mutex<Inner>,
    /// When this node last saw each other node's slot Lease change (expiry, SPEC 6b).
    observed: super::lease::Observed,
    /// The monotonic clock (`Instant::now`; the simulation passes a virtual one).
    clock: fn() -> Instant,
}

#[derive(Default)]
struct Inner {
    infos: Vec<DaemonSetInfo>,
    views: FleetView,
    /// Messages logged once (unknown strategies, malformed budgets).
    logged: HashSet<String>,
    /// Slots held, by DaemonSet uid, with when each was last written (`None`: renew now).
    held: HashMap<String, (Slot, Option<Instant>)>,
    /// DaemonSets whose slots were looked for since the start (a slot held from before).
    checked: HashSet<String>,
    /// The last Lease error logged, so an unreachable apiserver logs once.
    last_error: Option<String>,
    /// After a failed look for slots held from before, not again until then.
    resume_after: Option<Instant>,
    /// The slot watches, by DaemonSet uid, with when a take last asked for each.
    watches: HashMap<String, (Arc<SlotCache>, Instant)>,
}

impl Fleet {
    pub fn new(ready_timeout: Duration) -> Fleet {
        Fleet {
            duration: ready_timeout + LEASE_MARGIN,
            namespace: "yurt-ota".into(),
            inner: Mutex::new(Inner::default()),
            observed: super::lease::Observed::default(),
            clock: Instant::now,
        }
    }

    /// Reads monotonic time from `clock` rather than `Instant::now`: renewals, retries and
    /// the expiry of other nodes' Leases (the simulation of `fleet::scale` runs on virtual time).
    pub fn with_clock(mut self, clock: fn() -> Instant) -> Fleet {
        self.clock = clock;
        self.observed.clock = clock;
        self
    }

    fn now(&self) -> Instant {
        (self.clock)()
    }

    /// The slots' Leases in `namespace` (`fleet.namespace`), not the default `yurt-ota`.
    pub fn in_namespace(mut self, namespace: &str) -> Fleet {
        namespace.clone_into(&mut self.namespace);
        self
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `leaseDurationSeconds` written.
    pub fn lease_duration(&self) -> Duration {
        self.duration
    }

    /// What the policy and the status read.
    pub fn view(&self) -> FleetView {
        self.lock().views.clone()
    }

    /// The DaemonSets the upstream reports now. Unknown strategies and malformed budgets are
    /// logged once each.
    pub fn refresh(&self, infos: Vec<DaemonSetInfo>) {
        let mut g = self.lock();
        if g.infos == infos {
            return;
        }
        let mut views = FleetView::with_capacity(infos.len());
        for info in &infos {
            let (mut view, budget_error) = DaemonSetView::of(info);
            if let Some(old) = g.views.get(&info.uid) {
                if old.budget == view.budget {
                    view.slots = old.slots.clone();
                }
            }
            let ds = format!("{}/{}", info.namespace, info.name);
            if let Err(v) = &view.strategy {
                if g.logged.insert(format!("strategy {} {v}", info.uid)) {
                    log::warn!(
                        "DaemonSet {ds}: {} {v:?} is no strategy OpenYurt knows (OTA, AdvancedRollingUpdate); its pods are left alone",
                        super::strategy::STRATEGY_ANNOTATION
                    );
                }
            }
            if let Some(e) = budget_error {
                if g.logged.insert(format!("budget {} {e}", info.uid)) {
                    log::warn!(
                        "DaemonSet {ds}: {e}; using the default budget of {} slot(s)",
                        view.budget.unwrap_or(1)
                    );
                }
            }
            views.insert(info.uid.clone(), view);
        }
        g.views = views;
        g.infos = infos;
    }

    fn target(&self, ds_uid: &str) -> Option<(String, String, u32)> {
        let g = self.lock();
        let v = g.views.get(ds_uid)?;
        Some((v.namespace.clone(), v.name.clone(), v.budget?))
    }

    fn set_slots(&self, ds_uid: &str, slots: SlotView) {
        if let Some(v) = self.lock().views.get_mut(ds_uid) {
            v.slots = slots;
        }
    }

    fn retry_ms(now: SystemTime) -> u64 {
        let jitter = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| {
            u64::from(d.subsec_nanos() % 1_000_000_000) / 1_000_000
        });
        crate::state::unix_ms(now + RETRY) + jitter
    }

    fn note_error(&self, e: &str) {
        let mut g = self.lock();
        if g.last_error.as_deref() != Some(e) {
            log::warn!("fleet budget: {e}; no upgrade starts without a slot, trying again");
            g.last_error = Some(e.to_owned());
        }
    }

    /// Takes a slot of `ds_uid`'s budget for this node, for its pod's `revision`. `Err` when
    /// none was taken: every slot held, this node's turn not come yet, or the Leases cannot be
    /// reached. The view then says why, for `why_not_yet`, and when to try again. A DaemonSet
    /// no longer known, or without a budget any more, is refused too (fail closed): the next
    /// decision sees it as it is now.
    ///
    /// Waiting costs no request (issue 24): the first take starts a watch of the DaemonSet's
    /// slot Leases (`Leases::watch_slots`), and every take reads that cache. A write is made
    /// only when it shows a slot free, missing or expired by local observation, and this
    /// node's turn in line (`turn`) has come since it saw it free.
    pub fn take(
        &self,
        io: Io,
        ds_uid: &str,
        revision: Option<&str>,
        now: SystemTime,
    ) -> Result<(), String> {
        let Some((ns, name, budget)) = self.target(ds_uid) else {
            return Err(format!("DaemonSet {ds_uid} changed since the decision"));
        };
        let Some((leases, node)) = io else {
            let e = "the upstream offers no Leases".to_owned();
            self.unavailable(ds_uid, &e, now);
            return Err(e);
        };
        let key = slot_key(&ns, &name);
        let label = daemonset_label(&ns, &name);
        let rev = revision.unwrap_or("?");
        // Held already (an earlier attempt whose call was not made): renewed, no watch.
        let held = self.lock().held.get(ds_uid).map(|(s, _)| s.clone());
        if let Some(mut slot) = held {
            let slots = self.slots(leases, node, Some(&label), revision);
            return match slots.renew(&mut slot, now) {
                Ok(()) => {
                    let index = slot.index;
                    self.lock()
                        .held
                        .insert(ds_uid.to_owned(), (slot, Some(self.now())));
                    self.set_slots(ds_uid, SlotView::Held { index });
                    Ok(())
                }
                Err(e) => {
                    if matches!(e, LeaseError::Lost { .. }) {
                        self.lock().held.remove(ds_uid);
                    }
                    Err(self.lease_error(ds_uid, &ns, &name, &e, now))
                }
            };
        }
        let cache = match self.cache(leases, ds_uid, &label) {
            Ok(c) => c,
            Err(e) => {
                let e = format!("the slots of {ns}/{name} cannot be watched: {e}");
                self.note_error(&e);
                self.unavailable(ds_uid, &e, now);
                return Err(e);
            }
        };
        let slots = self.slots(leases, node, Some(&label), revision);
        let (index, lease) = match cache.look(&key, budget, node, SKEW) {
            Look::Listing => {
                let e = format!("the slots of {ns}/{name} are being listed");
                let soon = crate::state::unix_ms(now + LISTING_RETRY);
                self.set_slots(
                    ds_uid,
                    SlotView::Unavailable {
                        error: e.clone(),
                        retry_ms: soon,
                    },
                );
                return Err(e);
            }
            Look::Unknown(e) => {
                let e = format!("the slots of {ns}/{name} are not known yet: {e}");
                self.unavailable(ds_uid, &e, now);
                return Err(e);
            }
            Look::Full { holders } => {
                let e = format!("{budget}/{budget} slots held by {}", holders.join(", "));
                self.full(ds_uid, (holders, budget), Self::retry_ms(now));
                return Err(e);
            }
            // Held from before (a restart): renewed below, as a take.
            Look::Mine { index, lease } => (index, Some(lease)),
            Look::Free { slots: free, count } => {
                let desired = self.desired(ds_uid).max(budget);
                let (pick, wait) = turn(rank(node, &key, rev), cache.takes(rev), desired, count);
                let pick = pick % free.len();
                let (index, lease, since) = free[pick].clone();
                let due = since + wait;
                let left = due.saturating_duration_since(self.now());
                if !left.is_zero() {
                    // Waiting its turn is asking: the watch is kept until the turn comes (a
                    // node far back waits past WATCH_IDLE, and a new watch would start its
                    // copy, and the wait, again).
                    if let Some((_, at)) = self.lock().watches.get_mut(ds_uid) {
                        *at = (*at).max(due);
                    }
                    let retry = crate::state::unix_ms(now + left);
                    self.full(ds_uid, cache.holders(&key, budget), retry);
                    return Err(format!(
                        "slot {index} of {ns}/{name} is free; this node's turn in line comes in {:.1}s",
                        left.as_secs_f64()
                    ));
                }
                // Written by an agent that does not label its slots: not watched, so read
                // afresh before its expiry is believed (its holder may be renewing it).
                if let Some(l) = lease.as_ref().filter(|l| l.daemonset.is_none()) {
                    match leases.get(&l.namespace, &l.name) {
                        Ok(Some(fresh)) if fresh.resource_version != l.resource_version => {
                            cache.learn(fresh);
                            self.full(ds_uid, cache.holders(&key, budget), Self::retry_ms(now));
                            return Err(format!("slot {index} of {ns}/{name} was renewed"));
                        }
                        Ok(_) => {}
                        Err(e) => return Err(self.lease_error(ds_uid, &ns, &name, &e, now)),
                    }
                }
                (index, lease)
            }
        };
        // The version the write is conditioned on: a 409 with the copy still at it means the
        // copy is stale.
        let lease_sent = lease.as_ref().map(|l| l.resource_version.clone());
        let written = match lease {
            Some(l) if l.holder.as_deref() == Some(node) => {
                let mut slot = Slot { index, lease: l };
                slots.renew(&mut slot, now).map(|()| slot.lease)
            }
            l => slots.write_take(&self.namespace, &key, index, l, now),
        };
        match written {
            Ok(lease) => {
                log::info!(
                    "fleet budget of {ns}/{name}: took slot {index} of {budget} ({})",
                    lease.name
                );
                cache.learn(lease.clone());
                {
                    let mut g = self.lock();
                    g.last_error = None;
                    g.held
                        .insert(ds_uid.to_owned(), (Slot { index, lease }, Some(self.now())));
                    // Taken now: no slot of it from before a restart is left to look for.
                    g.checked.insert(ds_uid.to_owned());
                    // Holding, the node waits no more: the watch stops.
                    g.watches.remove(ds_uid);
                }
                self.set_slots(ds_uid, SlotView::Held { index });
                Ok(())
            }
            Err(LeaseError::Conflict) => {
                let slot = slot_name(&key, index);
                // A Lease the watch does not show (no label: an older agent's), or whose copy
                // the write found stale: read, so that the next look is on what the apiserver
                // holds (an unlabelled one is labelled by the next write to it).
                let stale = cache.get(&slot).is_none_or(|l| {
                    lease_sent
                        .as_deref()
                        .is_some_and(|rv| rv == l.resource_version)
                });
                if stale {
                    match leases.get(&self.namespace, &slot) {
                        Ok(Some(l)) => cache.learn(l),
                        Ok(None) => {}
                        Err(e) => return Err(self.lease_error(ds_uid, &ns, &name, &e, now)),
                    }
                }
                // Lost the race: looked at again after a retry (2-3 s), by when the watch has
                // told who won. Sooner (one turn step) made the losers race each other: 7 409s
                // per take at 10,000 nodes instead of under 2 (cargo bench --bench fleet_scale).
                self.full(ds_uid, cache.holders(&key, budget), Self::retry_ms(now));
                Err(format!(
                    "slot {index} of {ns}/{name} was taken by another node first (409)"
                ))
            }
            Err(e) => Err(self.lease_error(ds_uid, &ns, &name, &e, now)),
        }
    }

    fn lease_error(
        &self,
        ds_uid: &str,
        ns: &str,
        name: &str,
        e: &LeaseError,
        now: SystemTime,
    ) -> String {
        let e = format!("the slots of {ns}/{name} cannot be taken: {e}");
        self.note_error(&e);
        self.unavailable(ds_uid, &e, now);
        e
    }

    fn unavailable(&self, ds_uid: &str, e: &str, now: SystemTime) {
        self.set_slots(
            ds_uid,
            SlotView::Unavailable {
                error: e.to_owned(),
                retry_ms: Self::retry_ms(now),
            },
        );
    }

    fn full(&self, ds_uid: &str, (holders, held): (Vec<String>, u32), retry_ms: u64) {
        self.set_slots(
            ds_uid,
            SlotView::Full {
                holders,
                held,
                retry_ms,
            },
        );
    }

    /// `status.desiredNumberScheduled` of `ds_uid`: the nodes in line.
    fn desired(&self, ds_uid: &str) -> u32 {
        let g = self.lock();
        g.infos
            .iter()
            .find(|i| i.uid == ds_uid)
            .map_or(0, |i| i.desired_number_scheduled)
    }

    /// The slot watch of `ds_uid`, started by the first take that needs it.
    fn cache(
        &self,
        leases: &dyn Leases,
        ds_uid: &str,
        label: &str,
    ) -> Result<Arc<SlotCache>, LeaseError> {
        let now = self.now();
        if let Some((c, at)) = self.lock().watches.get_mut(ds_uid) {
            *at = now;
            return Ok(c.clone());
        }
        let c = leases.watch_slots(&self.namespace, label, self.clock)?;
        self.lock()
            .watches
            .insert(ds_uid.to_owned(), (c.clone(), now));
        Ok(c)
    }

    /// Whether this node watches the slots of `ds_uid` now.
    pub fn watching(&self, ds_uid: &str) -> bool {
        self.lock().watches.contains_key(ds_uid)
    }

    fn slots<'a>(
        &'a self,
        leases: &'a dyn Leases,
        node: &'a str,
        label: Option<&'a str>,
        revision: Option<&'a str>,
    ) -> Slots<'a, dyn Leases + 'a> {
        Slots {
            leases,
            holder: node,
            duration: self.duration,
            margin: SKEW,
            observed: &self.observed,
            label,
            revision,
        }
    }

    /// Whether this node holds a slot of `ds_uid`.
    pub fn holds(&self, ds_uid: &str) -> bool {
        self.lock().held.contains_key(ds_uid)
    }

    /// Gives back the slot of `ds_uid` this node holds, if any (holder cleared). A release that
    /// fails leaves the lease to expire by itself.
    pub fn release(&self, io: Io, ds_uid: &str, why: &str) {
        let Some((slot, _)) = self.lock().held.remove(ds_uid) else {
            return;
        };
        self.set_slots(ds_uid, SlotView::Unknown);
        let Some((leases, node)) = io else { return };
        match self.slots(leases, node, None, None).release(&slot) {
            Ok(()) => log::info!(
                "fleet budget: released slot {} ({}/{}): {why}",
                slot.index,
                slot.lease.namespace,
                slot.lease.name
            ),
            Err(e) => log::warn!(
                "fleet budget: releasing {}/{} failed ({e}); it expires by itself within {}s",
                slot.lease.namespace,
                slot.lease.name,
                self.duration.as_secs() + SKEW.as_secs()
            ),
        }
    }

    /// How long until a held slot is due for renewal (the decision loop wakes then: a slot
    /// kept for a down pod has no upgrade in flight to wake it). `None`: no slot held.
    pub fn next_renewal(&self) -> Option<Duration> {
        let g = self.lock();
        g.held
            .values()
            .map(|(_, at)| match at {
                None => Duration::ZERO,
                Some(at) => {
                    (self.duration / 3).saturating_sub(self.now().saturating_duration_since(*at))
                }
            })
            .min()
    }

    /// The upgrade of `ds_uid` failed on this node: its slot, kept, is shown as held for a
    /// failed upgrade (status, and other nodes' `why_not_yet` through the Lease).
    pub fn note_failed(&self, ds_uid: &str, revision: Option<&str>) {
        let mut g = self.lock();
        let rev = revision.unwrap_or("?").to_owned();
        if let Some((slot, at)) = g.held.get_mut(ds_uid) {
            slot.lease.failed = Some(rev);
            *at = None; // written at the next tick
        }
    }

    /// Each tick of the decision loop: after a start, find the slots held from before (kept
    /// when still needed, released otherwise: never leaked); renew held slots every third of
    /// the lease; release a slot no longer needed. `needed` names the DaemonSets whose slot
    /// this node keeps (`policy::slots_needed`: an upgrade in flight, or this node's pod of it
    /// unavailable, SPEC 6b); `None` before the first pod list: nothing is resumed or released.
    pub fn maintain(&self, io: Io, needed: Option<&HashSet<String>>, now: SystemTime) {
        let Some((leases, node)) = io else { return };
        let slots = self.slots(leases, node, None, None);
        // The watches no take asked for lately: the node waits for those slots no more.
        {
            let now = self.now();
            let mut g = self.lock();
            g.watches
                .retain(|_, (_, at)| now.saturating_duration_since(*at) < WATCH_IDLE);
        }
        // Resume: once per DaemonSet with a budget; after a failure, again after RETRY.
        let unchecked: Vec<(String, String, String, u32)> = match needed {
            None => Vec::new(),
            Some(_) => {
                let g = self.lock();
                let wait = g.resume_after.is_some_and(|at| self.now() < at);
                g.views
                    .iter()
                    .filter(|(uid, _)| !wait && !g.checked.contains(*uid))
                    .filter_map(|(uid, v)| {
                        Some((uid.clone(), v.namespace.clone(), v.name.clone(), v.budget?))
                    })
                    .collect()
            }
        };
        for (uid, ns, name, budget) in unchecked {
            match slots.held(&self.namespace, &slot_key(&ns, &name), budget) {
                Ok(found) => {
                    self.lock().checked.insert(uid.clone());
                    let Some(slot) = found else { continue };
                    let index = slot.index;
                    // Renewed at once below: its age is unknown.
                    self.lock().held.insert(uid.clone(), (slot, None));
                    if needed.is_some_and(|n| n.contains(&uid)) {
                        log::info!("fleet budget of {ns}/{name}: resumed slot {index}, held from before a restart (an upgrade in flight, or this node's pod unavailable)");
                        self.set_slots(&uid, SlotView::Held { index });
                    } else {
                        self.release(
                            io,
                            &uid,
                            "held from before a restart, and this node's pod is available",
                        );
                    }
                }
                Err(e) => {
                    self.note_error(&format!("the slots of {ns}/{name} cannot be read: {e}"));
                    self.lock().resume_after = Some(self.now() + RETRY);
                    break;
                }
            }
        }
        // Release what is no longer needed; renew the rest when due.
        let held: Vec<(String, Slot, Option<Instant>)> = self
            .lock()
            .held
            .iter()
            .map(|(k, (s, at))| (k.clone(), s.clone(), *at))
            .collect();
        for (uid, mut slot, renewed) in held {
            if needed.is_some_and(|n| !n.contains(&uid)) {
                self.release(io, &uid, "this node's pod is available");
                continue;
            }
            if renewed
                .is_some_and(|at| self.now().saturating_duration_since(at) < self.duration / 3)
            {
                continue;
            }
            // Labelled at the first renewal, if an older agent wrote it.
            let label = self
                .lock()
                .views
                .get(&uid)
                .map(|v| daemonset_label(&v.namespace, &v.name));
            let renewing = Slots {
                label: label.as_deref(),
                ..self.slots(leases, node, None, None)
            };
            match renewing.renew(&mut slot, now) {
                Ok(()) => {
                    let mut g = self.lock();
                    g.last_error = None;
                    g.held.insert(uid, (slot, Some(self.now())));
                }
                Err(LeaseError::Lost { holder }) => {
                    log::warn!(
                        "fleet budget: slot {}/{} was taken over by {holder:?} while this node could not renew it",
                        slot.lease.namespace,
                        slot.lease.name
                    );
                    self.lock().held.remove(&uid);
                    self.set_slots(&uid, SlotView::Unknown);
                }
                Err(e) => {
                    self.note_error(&format!(
                        "renewing {}/{} failed: {e}",
                        slot.lease.namespace, slot.lease.name
                    ));
                    // Tried again after RETRY, not at every tick.
                    let again = self.now().checked_sub(self.duration / 3).map(|t| t + RETRY);
                    if let Some((_, at)) = self.lock().held.get_mut(&uid) {
                        *at = again;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
impl Fleet {
    /// Makes every held slot due for renewal at the next tick.
    pub fn age_held(&self) {
        for (_, at) in self.lock().held.values_mut() {
            *at = None;
        }
    }
}
