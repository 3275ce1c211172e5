//! The upgrade step of the act: a fleet slot, the intent on disk, the gates re-read at the moment
//! of action (SPEC 5), the call, and what its answer means for the state.

use std::time::{Duration, Instant, SystemTime};

use super::act::Actor;
use crate::excerpt::excerpt;
use crate::gate::Purpose;
use crate::node_view::Outcome;
use crate::policy::{self, Target};
use crate::snapshot::Snapshot;
use crate::state::{self, Backoff, InFlight, Parked};
use crate::upstream::{PodNow, UpstreamError};

/// Backoff after a 5xx or no answer: 5 s, doubling, at most 5 minutes.
const BACKOFF_FIRST: Duration = Duration::from_secs(5);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// An upgrade that may have started is read again at most this often while reads fail.
const RECHECK_EVERY: Duration = Duration::from_secs(2);

impl Actor {
    /// Takes a fleet slot if the pod's DaemonSet has a budget, records the intent, re-reads
    /// the gates, and only then calls the upstream (SPEC 5 and 6b). A slot is given back at
    /// once when the call is not made or not accepted.
    pub(super) fn upgrade(
        &self,
        pod: &Target,
        force: bool,
        slot: Option<&str>,
        down: bool,
        snap: Option<&Snapshot>,
    ) {
        let c = &self.control;
        let key = pod.key();
        let started = SystemTime::now();
        let t0 = Instant::now();
        let leases = self.upstream.leases();
        if let Some(ds) = slot {
            if let Err(e) = c.fleet.take(leases, ds, pod.revision.as_deref(), started) {
                if !down {
                    log::debug!("not upgrading {key} yet: fleet budget: {e}");
                    return;
                }
                // Its pod counts as unavailable already: replacing it adds no node down.
                log::info!("upgrading {key} without a slot of the fleet budget ({e}): its pod is unavailable already");
            }
        }
        // A node whose pod is unavailable keeps its slot whatever happens here: it stands for
        // that node being down (SPEC 6b); the tick gives it back once the pod is available.
        let release = |why: &str| {
            if let Some(ds) = slot.filter(|_| !down) {
                c.fleet.release(leases, ds, why);
            }
        };
        // Persisted first: after a crash in the call, the restarted agent does not call again.
        // No call without it on disk, and never a second entry for one uid.
        let intent = c.store.intend(InFlight {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            uid: pod.uid.clone(),
            owner_uid: pod.owner_uid.clone(),
            started_ms: state::unix_ms(started),
            accepted: false,
            revision: pod.revision.clone(),
            uncertain: false,
        });
        match intent {
            Ok(true) => {}
            Ok(false) => {
                log::warn!(
                    "not upgrading {key}: an upgrade of its uid {} is already in flight",
                    pod.uid
                );
                return;
            }
            Err(e) => {
                log::warn!(
                    "not upgrading {key}: the intent cannot be written first ({e}); upgrades pause until it can"
                );
                release("the intent could not be written");
                return;
            }
        }
        let t_intent = t0.elapsed();
        // The moment of action (SPEC section 5): every upgrade gate read afresh, and holds.
        let mut closed = c.gates.recheck(Purpose::Upgrade, force);
        if !force {
            let now_ms = state::unix_ms(SystemTime::now());
            c.store.read(|s| {
                closed.extend(s.active_holds(now_ms).map(|h| format!("hold:{}", h.name)))
            });
        }
        if !closed.is_empty() {
            let msg = format!(
                "not upgrading {key}: {} closed at the moment of action",
                closed.join(", ")
            );
            log::info!("{msg}");
            c.store.update(|s| {
                s.in_flight.retain(|f| f.uid != pod.uid);
                s.event(SystemTime::now(), "upgrade_held_back", Some(&key), msg);
            });
            release("a gate read closed at the moment of action");
            return;
        }
        let t_recheck = t0.elapsed();
        let result = self.upstream.upgrade(&pod.namespace, &pod.name);
        log::debug!(
            "upgrade {key}: intent durable after {:.2} ms, gates re-read after {:.2} ms, answer after {:.2} ms",
            ms(t_intent),
            ms(t_recheck),
            ms(t0.elapsed())
        );
        let status = result.as_ref().map_or(0, |r| r.status);
        self.shared.metrics.upstream_call("upgrade", status);
        let detail = match &result {
            Ok(r) => format!("{} {}", r.status, excerpt(&r.body)),
            Err(e) => e.to_string(),
        };
        self.shared.record_outcome(Outcome {
            pod: key.clone(),
            at: SystemTime::now(),
            status,
            detail: detail.clone(),
        });
        let wall = SystemTime::now();
        match status {
            200..=299 => {
                self.shared.metrics.upgrade("started");
                log::info!("upgrade {key} started: upstream answered {detail}");
                c.store.update(|s| {
                    if let Some(f) = s.in_flight.iter_mut().find(|f| f.uid == pod.uid) {
                        f.accepted = true;
                    }
                    s.backoff.retain(|b| b.uid != pod.uid);
                    s.event(wall, "upgrade_started", Some(&key), detail);
                });
            }
            400..=499 => {
                self.shared.metrics.upgrade("refused");
                log::warn!("upgrade {key} refused: upstream answered {detail}; parked until its conditions change");
                let fingerprint = snap
                    .and_then(|s| s.pods.iter().find(|p| p.metadata.uid == pod.uid))
                    .map_or(0, policy::fingerprint);
                c.store.update(|s| {
                    s.in_flight.retain(|f| f.uid != pod.uid);
                    s.parked.retain(|p| p.uid != pod.uid);
                    s.parked.push(Parked {
                        uid: pod.uid.clone(),
                        key: key.clone(),
                        fingerprint,
                        detail: detail.clone(),
                    });
                    s.event(wall, "upgrade_refused", Some(&key), detail);
                });
                release("the upstream refused the upgrade");
            }
            _ if !maybe_started(&result) => {
                self.shared.metrics.upgrade("error");
                c.store.update(|s| {
                    s.in_flight.retain(|f| f.uid != pod.uid);
                    back_off(s, &pod.uid, &key, &detail, wall);
                });
                release("the upgrade call failed");
            }
            _ => {
                // The request went out whole and no answer came, or a 5xx: the pod may be
                // being replaced. The slot stays held until the pod is read again (issue 23,
                // item 1; SPEC 6b).
                self.shared.metrics.upgrade("uncertain");
                let msg = format!(
                    "the upgrade call for {key} may have started ({detail}): the slot is kept and the pod read again"
                );
                log::warn!("{msg}");
                c.store.update(|s| {
                    if let Some(f) = s.in_flight.iter_mut().find(|f| f.uid == pod.uid) {
                        f.uncertain = true;
                    }
                    s.event(wall, "upgrade_uncertain", Some(&key), msg);
                });
                self.recheck(&pod.uid);
            }
        }
    }

    /// Reads the pod of an upgrade that may have been carried out (`InFlight::uncertain`):
    /// gone or being deleted, the upgrade is under way and tracked as started; unchanged, the
    /// call did not happen: backoff, and the slot given back unless the pod is down anyway.
    /// A read that fails changes nothing: the next tick asks again, at most every 2 s.
    pub(super) fn recheck(&self, uid: &str) {
        let c = &self.control;
        let Some(f) = c.store.read(|s| {
            s.in_flight
                .iter()
                .find(|f| f.uid == uid && f.uncertain)
                .cloned()
        }) else {
            return;
        };
        {
            let mut last = self.rechecked.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|at| at.elapsed() < RECHECK_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        let key = format!("{}/{}", f.namespace, f.name);
        let wall = SystemTime::now();
        match self.upstream.pod_now(&f.namespace, &f.name, &f.uid) {
            Ok(PodNow::Replaced) => {
                self.shared.metrics.upgrade("started");
                let msg =
                    format!("{key} is gone or being deleted: its upgrade is under way after all");
                log::info!("{msg}");
                c.store.update(|s| {
                    if let Some(f) = s.in_flight.iter_mut().find(|f| f.uid == uid) {
                        f.uncertain = false;
                        f.accepted = true;
                    }
                    s.backoff.retain(|b| b.uid != uid);
                    s.event(wall, "upgrade_started", Some(&key), msg);
                });
            }
            Ok(PodNow::Unchanged) => {
                let detail =
                    "read again, the pod is unchanged: the upgrade call did not happen".to_owned();
                log::info!("{key}: {detail}");
                c.store.update(|s| {
                    s.in_flight.retain(|f| f.uid != uid);
                    back_off(s, uid, &key, &detail, wall);
                });
                // Kept if its pod is down anyway: the next tick decides (`slots_needed`).
                self.fleet_tick();
            }
            Err(e) => log::debug!("{key}: reading it again failed ({e}); the slot stays held"),
        }
    }
}

/// Whether a failed upgrade call may have been carried out: anything but "not connected" (the
/// request never left) and the upstream's own "disconnected" answer (YurtHub did not send it).
fn maybe_started(result: &Result<crate::upstream::Relay, UpstreamError>) -> bool {
    match result {
        Err(UpstreamError::Connect(_)) => false,
        Err(_) => true,
        Ok(r) if r.status == 503 && excerpt(&r.body).contains("disconnected") => false,
        Ok(r) => r.status >= 500,
    }
}

/// A call that failed: tried again after a capped, doubling wait.
fn back_off(s: &mut crate::state::State, uid: &str, key: &str, detail: &str, wall: SystemTime) {
    let attempts = s
        .backoff
        .iter()
        .find(|b| b.uid == uid)
        .map_or(0, |b| b.attempts)
        + 1;
    let wait = BACKOFF_FIRST
        .saturating_mul(1 << (attempts - 1).min(16))
        .min(BACKOFF_MAX);
    log::warn!(
        "upgrade {key} failed: {detail}; retrying in {}s (attempt {attempts})",
        wait.as_secs()
    );
    s.backoff.retain(|b| b.uid != uid);
    s.backoff.push(Backoff {
        uid: uid.to_owned(),
        key: key.to_owned(),
        attempts,
        retry_ms: state::unix_ms(wall + wait),
        detail: detail.to_owned(),
    });
    s.event(wall, "upgrade_error", Some(key), detail.to_owned());
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FileOpen, GateKind, GateSettings, Settings};
    use crate::decider::Decider;
    use crate::fleet::testing::Store as Leases;
    use crate::fleet::{DaemonSetInfo, Slots};
    use crate::node_view::NodeView;
    use crate::policy::Action;
    use crate::state::Store;
    use crate::upstream::testing::Fake;
    use std::path::PathBuf;
    use std::sync::Arc;

    const DS: &str = "ds-uid";
    const LEASE: &str = "fleet.gw.0";

    /// An apiserver-like upstream: one DaemonSet `fleet/gw` of one node (so that it is first in
    /// line for a slot, `fleet::run::turn`) with a budget of 1 and the Lease store; upgrade
    /// calls go into the store's log, so the order of everything is one list.
    fn fake(leases: &Arc<Leases>, status: u16) -> Arc<Fake> {
        Arc::new(Fake {
            status,
            daemonsets: vec![DaemonSetInfo {
                uid: DS.into(),
                namespace: "fleet".into(),
                name: "gw".into(),
                strategy: Some("AdvancedRollingUpdate".into()),
                max_unavailable: Some("1".into()),
                desired_number_scheduled: 1,
                min_ready_seconds: 0,
            }],
            leases: Some((leases.clone(), "node-a")),
            ..Fake::default()
        })
    }

    struct Rig {
        actor: Actor,
        /// The actor's upstream: its pod list answers `pod_now`.
        fake: Arc<Fake>,
        control: Arc<Decider>,
        leases: Arc<Leases>,
        gate: PathBuf,
        _dir: tempfile::TempDir,
    }

    /// A safety file gate (open), an in-memory state, the fake upstream answering `status`.
    fn rig(status: u16, store: Store) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let gate = dir.path().join("stopped");
        std::fs::write(&gate, "").unwrap();
        let gates = crate::gate::Gates::from_settings(&[GateSettings {
            name: "stopped".into(),
            safety: true,
            upgrade: true,
            pull: false,
            kind: GateKind::File {
                path: gate.clone(),
                open_when: FileOpen::Exists,
                max_age: None,
            },
        }]);
        gates.check();
        let control = Arc::new(Decider::new(gates, store, Settings::default().policy));
        let leases = Arc::new(Leases::default());
        let (actor, fake) = actor_with(&leases, status, &control);
        Rig {
            actor,
            fake,
            control,
            leases,
            gate,
            _dir: dir,
        }
    }

    /// An actor over `control` and the fake upstream of `leases` answering `status`.
    fn actor(leases: &Arc<Leases>, status: u16, control: &Arc<Decider>) -> Actor {
        actor_with(leases, status, control).0
    }

    fn actor_with(leases: &Arc<Leases>, status: u16, control: &Arc<Decider>) -> (Actor, Arc<Fake>) {
        let shared = Arc::new(NodeView::new(Duration::from_secs(5)));
        let fake = fake(leases, status);
        (Actor::new(fake.clone(), shared, control.clone()), fake)
    }

    /// A pod list with gw-abcde (uid `uid`) of the DaemonSet: Ready or not, being deleted or
    /// not; none with `uid` empty.
    fn pod_list(uid: &str, ready: bool, deleting: bool) -> Vec<u8> {
        let mut items = Vec::new();
        if !uid.is_empty() {
            let mut p = serde_json::json!({
                "metadata": {"name": "gw-abcde", "namespace": "fleet", "uid": uid,
                             "ownerReferences": [{"kind": "DaemonSet", "name": "gw", "uid": DS}]},
                "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
            });
            if deleting {
                p["metadata"]["deletionTimestamp"] = "2027-01-15T08:00:00Z".into();
            }
            items.push(p);
        }
        serde_json::json!({"kind": "PodList", "apiVersion": "v1", "items": items})
            .to_string()
            .into_bytes()
    }

    /// What the actor's loop last polled: `body` as its snapshot.
    fn polled(actor: &Actor, body: &[u8]) {
        actor
            .shared
            .succeeded(Some(crate::snapshot::Snapshot::build(body).unwrap()));
    }

    fn upgrade() -> Action {
        Action::Upgrade {
            pod: Target {
                namespace: "fleet".into(),
                name: "gw-abcde".into(),
                uid: "pod-uid".into(),
                owner_uid: DS.into(),
                revision: Some("rev-2".into()),
            },
            force: false,
            slot: Some(DS.into()),
            down: false,
        }
    }

    impl Rig {
        fn ops(&self) -> Vec<String> {
            std::mem::take(&mut *self.leases.ops.lock().unwrap())
        }
        fn in_flight(&self) -> usize {
            self.control.store.read(|s| s.in_flight.len())
        }
    }

    #[test]
    fn a_slot_is_taken_before_the_re_read_and_the_call_and_released_once_ready() {
        let r = rig(200, Store::in_memory());
        r.actor.fleet_tick();
        r.ops(); // the look for a slot held from before a restart
                 // The gate file is read at the re-read: it must still be there after the slot write.
        let gate = r.gate.clone();
        *r.leases.on_write.lock().unwrap() = Some(Box::new(move || {
            assert!(gate.exists(), "the gate was not touched")
        }));
        r.actor.act(&upgrade(), None);
        assert_eq!(
            r.ops(),
            vec![
                "watch yurt-ota fleet.gw".to_owned(),
                format!("create {LEASE} node-a"),
                "upgrade fleet/gw-abcde".into()
            ]
        );
        assert_eq!(r.leases.holder(LEASE).as_deref(), Some("node-a"));
        assert_eq!(r.in_flight(), 1);
        // In flight: renewed when due, not before.
        r.actor.fleet_tick();
        assert!(r.ops().is_empty(), "not due yet");
        r.control.fleet.age_held();
        r.actor.fleet_tick();
        assert_eq!(r.ops(), vec![format!("update {LEASE} node-a")]);
        // The apiserver unreachable: one try, then not at every tick.
        r.leases
            .down
            .store(true, std::sync::atomic::Ordering::SeqCst);
        r.control.fleet.age_held();
        r.actor.fleet_tick();
        r.actor.fleet_tick();
        assert_eq!(r.ops(), vec![format!("update {LEASE} node-a")], "throttled");
        assert!(r.control.fleet.holds(DS), "kept: it may come back");
        r.leases
            .down
            .store(false, std::sync::atomic::Ordering::SeqCst);
        // Ready: released.
        r.actor.act(
            &Action::Finished {
                uid: "pod-uid".into(),
                replacement: "fleet/gw-fghij".into(),
            },
            None,
        );
        assert_eq!(r.ops(), vec![format!("update {LEASE} -")]);
        assert_eq!(r.leases.holder(LEASE), None);
        assert!(!r.control.fleet.holds(DS));
    }

    #[test]
    fn a_gate_that_reads_closed_at_the_re_read_releases_the_slot_at_once() {
        let r = rig(200, Store::in_memory());
        r.actor.fleet_tick();
        r.ops();
        // The gate closes while the slot is being taken: the re-read after it sees it closed.
        let gate = r.gate.clone();
        *r.leases.on_write.lock().unwrap() = Some(Box::new(move || {
            let _ = std::fs::remove_file(&gate);
        }));
        r.actor.act(&upgrade(), None);
        assert_eq!(
            r.ops(),
            vec![
                "watch yurt-ota fleet.gw".to_owned(),
                format!("create {LEASE} node-a"),
                format!("update {LEASE} -"),
            ],
            "taken, then released at once; no upgrade call"
        );
        assert_eq!(r.leases.holder(LEASE), None);
        assert_eq!(r.in_flight(), 0);
        let events = r.control.store.read(|s| s.events.clone());
        assert_eq!(events[0].kind, "upgrade_held_back");
    }

    #[test]
    fn a_full_budget_makes_no_call_and_the_policy_names_the_holder() {
        let r = rig(200, Store::in_memory());
        Slots {
            leases: &*r.leases,
            holder: "node-x",
            duration: Duration::from_secs(60),
            margin: Duration::from_secs(5),
            observed: &crate::fleet::Observed::default(),
            label: Some("fleet.gw"),
            revision: None,
        }
        .acquire("yurt-ota", "fleet.gw", 1, SystemTime::now())
        .unwrap();
        r.actor.fleet_tick();
        r.ops();
        r.actor.act(&upgrade(), None);
        assert_eq!(
            r.ops(),
            vec!["watch yurt-ota fleet.gw".to_owned()],
            "no write, no call: the watch shows the slot held"
        );
        // Again: the watch is kept, nothing is sent.
        r.actor.act(&upgrade(), None);
        assert_eq!(r.ops(), Vec::<String>::new());
        assert_eq!(r.in_flight(), 0);
        assert_eq!(
            r.control.fleet.view()[DS].slots,
            crate::fleet::SlotView::Full {
                holders: vec!["node-x".into()],
                held: 1,
                retry_ms: match &r.control.fleet.view()[DS].slots {
                    crate::fleet::SlotView::Full { retry_ms, .. } => *retry_ms,
                    other => panic!("{other:?}"),
                }
            }
        );
    }

    #[test]
    fn a_daemonset_gone_since_the_decision_gets_no_call() {
        let r = rig(200, Store::in_memory());
        r.actor.act(&upgrade(), None); // no fleet_tick: its DaemonSet is not known
        assert!(r.ops().is_empty(), "no Lease call, no upgrade call");
        assert_eq!(r.in_flight(), 0);
    }

    #[test]
    fn a_refused_call_releases_the_slot() {
        let r = rig(403, Store::in_memory());
        polled(&r.actor, &pod_list("pod-uid", true, false));
        r.actor.fleet_tick();
        r.actor.act(&upgrade(), None);
        assert_eq!(r.leases.holder(LEASE), None);
        assert_eq!(r.in_flight(), 0);
        assert!(r.ops().contains(&format!("update {LEASE} -")));
    }

    /// Regression (issue 23, item 1): the DELETE reached the apiserver, its answer was lost
    /// (or a 5xx came); the node released its slot and the next node took it while this one's
    /// pod was being replaced. The slot stays held until the pod is read again.
    #[test]
    fn a_lost_delete_answer_gives_the_slot_back_while_the_pod_is_being_replaced() {
        for (then, under_way) in [
            (pod_list("pod-uid", true, true), true),
            (pod_list("", false, false), true),
            (pod_list("pod-uid", true, false), false),
        ] {
            let r = rig(500, Store::in_memory());
            polled(&r.actor, &pod_list("pod-uid", true, false));
            r.actor.fleet_tick();
            r.ops();
            // No pod list can be read at first: the answer stays unknown.
            r.actor.act(&upgrade(), None);
            assert_eq!(r.leases.holder(LEASE).as_deref(), Some("node-a"), "kept");
            assert!(!r.ops().contains(&format!("update {LEASE} -")));
            assert!(r.control.store.read(|s| s.in_flight[0].uncertain));
            r.actor.fleet_tick();
            assert!(r.control.fleet.holds(DS), "held while unknown");
            // The next decision reads it again.
            let d = r
                .control
                .decide(Some(&r.actor.shared.snapshot().unwrap().pods));
            let recheck = Action::Recheck {
                uid: "pod-uid".into(),
            };
            assert!(d.actions.contains(&recheck), "{d:?}");
            r.fake.set_pods(Ok(then));
            *r.actor.rechecked.lock().unwrap() = None;
            r.actor.act(&recheck, None);
            let in_flight = r.control.store.read(|s| s.in_flight.clone());
            if under_way {
                assert_eq!(in_flight.len(), 1);
                assert!(in_flight[0].accepted && !in_flight[0].uncertain);
                assert_eq!(r.leases.holder(LEASE).as_deref(), Some("node-a"));
            } else {
                assert!(in_flight.is_empty(), "the call did not happen");
                assert_eq!(r.control.store.read(|s| s.backoff.len()), 1);
                assert_eq!(r.leases.holder(LEASE), None, "given back");
            }
        }
    }

    /// SPEC 6b: a failed upgrade keeps its slot (the node is down); the slot goes back once
    /// the pod is available, and a restart in between resumes it.
    #[test]
    fn a_failed_upgrade_keeps_its_slot_until_the_pod_is_available() {
        let dir = tempfile::tempdir().unwrap();
        let r = rig(200, Store::open(dir.path()));
        polled(&r.actor, &pod_list("pod-uid", true, false));
        r.actor.fleet_tick();
        r.actor.act(&upgrade(), None);
        // The replacement never becomes Ready: failed.
        polled(&r.actor, &pod_list("new-uid", false, false));
        r.ops();
        r.actor.act(
            &Action::Failed {
                uid: "pod-uid".into(),
                reason: "no Ready replacement".into(),
            },
            None,
        );
        r.actor.fleet_tick();
        assert!(!r.ops().contains(&format!("update {LEASE} -")));
        assert_eq!(r.leases.holder(LEASE).as_deref(), Some("node-a"));
        let blocked = r.control.store.read(|s| s.blocked.clone());
        assert_eq!(blocked.len(), 1);
        assert_eq!(
            (
                blocked[0].owner_uid.as_str(),
                blocked[0].revision.as_deref()
            ),
            (DS, Some("rev-2"))
        );
        assert_eq!(blocked[0].daemonset, "fleet/gw");
        // The slot says so, for the nodes that wait.
        r.control.fleet.age_held();
        r.actor.fleet_tick();
        assert_eq!(
            r.leases
                .leases
                .lock()
                .unwrap()
                .get("yurt-ota", LEASE)
                .unwrap()
                .failed
                .as_deref(),
            Some("rev-2")
        );
        let leases = r.leases.clone();
        drop(r);

        // Restarted (SIGKILL: nothing released) while the pod is still down: resumed.
        let after = rig(200, Store::open(dir.path()));
        let (after_actor, _) = actor_with(&leases, 200, &after.control);
        polled(&after_actor, &pod_list("new-uid", false, false));
        after_actor.fleet_tick();
        assert!(after.control.fleet.holds(DS), "resumed");
        assert_eq!(leases.holder(LEASE).as_deref(), Some("node-a"));
        assert_eq!(
            after.control.store.read(|s| s.blocked.len()),
            1,
            "persisted"
        );
        // The pod available again (a fix): given back.
        polled(&after_actor, &pod_list("new-uid", true, false));
        after_actor.fleet_tick();
        assert_eq!(leases.holder(LEASE), None);
        assert!(!after.control.fleet.holds(DS));
    }

    #[test]
    fn a_restart_resumes_a_slot_in_use_and_releases_one_not_in_use() {
        // Before the restart: node-a took the slot and its upgrade is in flight.
        let dir = tempfile::tempdir().unwrap();
        let before = rig(200, Store::open(dir.path()));
        before.actor.fleet_tick();
        before.actor.act(&upgrade(), None);
        assert_eq!(before.leases.holder(LEASE).as_deref(), Some("node-a"));
        let leases = before.leases.clone();
        drop(before);

        // After: the same state file, the same apiserver.
        let mut after = rig(200, Store::open(dir.path()));
        after.leases = leases.clone();
        let after_actor = actor(&leases, 200, &after.control);
        after.ops();
        polled(&after_actor, &pod_list("pod-uid", true, false));
        after_actor.fleet_tick();
        assert_eq!(
            after.ops(),
            vec!["list yurt-ota".to_owned(), format!("update {LEASE} node-a")],
            "found and renewed at once"
        );
        assert!(after.control.fleet.holds(DS));
        assert_eq!(leases.holder(LEASE).as_deref(), Some("node-a"));

        // Another restart with no upgrade in flight (the state lost it) and the pod available:
        // released, not leaked.
        let fresh = rig(200, Store::in_memory());
        let fresh_actor = actor(&leases, 200, &fresh.control);
        polled(&fresh_actor, &pod_list("pod-uid", true, false));
        fresh_actor.fleet_tick();
        assert_eq!(leases.holder(LEASE), None);
        assert!(!fresh.control.fleet.holds(DS));
    }
}
