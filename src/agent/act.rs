//! The act step of the decision loop: one `Action` carried out against the upstream and the state
//! store (an upgrade in `upgrade`). The loop (`Autopilot`) decides when; this decides nothing.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use crate::decider::{Decider, PULL_RETRY};
use crate::excerpt::excerpt;
use crate::gate::Purpose;
use crate::node_view::NodeView;
use crate::policy::Action;
use crate::snapshot::Snapshot;
use crate::state::{self, Blocked};
use crate::upstream::{Failure, Upstream};

/// Carries out actions: calls the upstream, records outcomes and metrics, updates the store.
pub struct Actor {
    pub(super) upstream: Arc<dyn Upstream>,
    pub(super) shared: Arc<NodeView>,
    pub(super) control: Arc<Decider>,
    /// When an upgrade that may have started was last read again (`recheck`).
    pub(super) rechecked: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Actor {
    pub fn new(upstream: Arc<dyn Upstream>, shared: Arc<NodeView>, control: Arc<Decider>) -> Actor {
        Actor {
            upstream,
            shared,
            control,
            rechecked: std::sync::Mutex::new(None),
        }
    }

    pub fn act(&self, action: &Action, snap: Option<&Snapshot>) {
        let c = &self.control;
        let wall = SystemTime::now();
        match action {
            Action::Upgrade {
                pod,
                force,
                slot,
                down,
            } => self.upgrade(pod, *force, slot.as_deref(), *down, snap),
            Action::Recheck { uid } => self.recheck(uid),
            Action::Unblock {
                owner_uid,
                revision,
                newer,
            } => c.store.update(|s| {
                if let Some(b) = take(&mut s.blocked, |b| &b.owner_uid == owner_uid) {
                    let rev = |r: &Option<String>| r.clone().unwrap_or_else(|| "?".into());
                    let msg = format!(
                        "revision {} of DaemonSet {} clears the block on revision {} (it failed on this node: {}); upgraded as usual, every gate still applying",
                        rev(newer),
                        b.daemonset,
                        rev(revision),
                        b.reason
                    );
                    log::info!("{msg}");
                    s.event(wall, "revision_unblocked", Some(&b.pod), msg);
                }
            }),
            Action::Pull { pod, pull_key } => {
                let closed = c.gates.recheck(Purpose::Pull, false);
                if !closed.is_empty() {
                    return;
                }
                let result = self.upstream.imagepull(&pod.namespace, &pod.name);
                self.shared
                    .metrics
                    .upstream_call("imagepull", result.as_ref().map_or(0, |r| r.status));
                match result {
                    Ok(r) if r.status == 404 => {
                        if c.imagepull_supported.swap(false, Ordering::Relaxed) {
                            log::info!(
                                "imagepull answered 404: the upstream predates pre-pull (YurtHub < v1.7); upgrading without it"
                            );
                        }
                    }
                    Ok(r) => {
                        let accepted = (200..300).contains(&r.status);
                        let (body, key) = (excerpt(&r.body), pod.key());
                        if accepted {
                            log::info!("imagepull {key}: upstream answered {} {body}", r.status);
                        } else {
                            log::warn!(
                                "imagepull {key}: upstream answered {} {body}; asking again in {}s",
                                r.status,
                                PULL_RETRY.as_secs()
                            );
                        }
                        c.pull_asked(pull_key, accepted);
                    }
                    Err(e) => {
                        log::warn!(
                            "imagepull {}: upstream {e}; asking again in {}s",
                            pod.key(),
                            PULL_RETRY.as_secs()
                        );
                        c.pull_asked(pull_key, false);
                    }
                }
            }
            Action::Finished { uid, replacement } => {
                self.shared.metrics.upgrade("succeeded");
                let owner = c.store.update(|s| {
                    let f = take(&mut s.in_flight, |f| &f.uid == uid)?;
                    let msg = format!(
                        "upgrade of {}/{} finished: {replacement} is Ready",
                        f.namespace, f.name
                    );
                    log::info!("{msg}");
                    let key = format!("{}/{}", f.namespace, f.name);
                    s.event(wall, "upgrade_finished", Some(&key), msg);
                    Some(f.owner_uid)
                });
                if let Some(owner) = owner {
                    let why = format!("{replacement} is Ready");
                    c.fleet.release(self.upstream.leases(), &owner, &why);
                }
            }
            Action::Failed { uid, reason } => {
                self.shared.metrics.upgrade("failed");
                let daemonsets = c.fleet.view();
                let failed = c.store.update(|s| {
                    let f = take(&mut s.in_flight, |f| &f.uid == uid)?;
                    let key = format!("{}/{}", f.namespace, f.name);
                    // YurtHub mode reports no DaemonSets: named by its pod then.
                    let ds = daemonsets.get(&f.owner_uid).map_or_else(
                        || format!("of pod {key}"),
                        |d| format!("{}/{}", d.namespace, d.name),
                    );
                    let rev = f.revision.as_deref().unwrap_or("?");
                    log::warn!(
                        "upgrade of {key} failed: {reason}; this node does not try revision {rev} of its DaemonSet {ds} again by itself (a newer revision clears it, as POST /v1/breaker/reset)"
                    );
                    s.event(wall, "upgrade_failed", Some(&key), reason.clone());
                    s.blocked.retain(|b| b.owner_uid != f.owner_uid);
                    s.blocked.push(Blocked {
                        owner_uid: f.owner_uid.clone(),
                        daemonset: ds.clone(),
                        revision: f.revision.clone(),
                        pod: key.clone(),
                        uid: f.uid.clone(),
                        tripped_ms: state::unix_ms(wall),
                        reason: reason.clone(),
                    });
                    s.event(
                        wall,
                        "revision_blocked",
                        Some(&key),
                        format!("revision {rev} of {ds} blocked on this node: {reason}"),
                    );
                    Some(f)
                });
                // The slot is kept: this node is down (SPEC 6b); `maintain` gives it back once
                // its pod is available again.
                if let Some(f) = failed {
                    c.fleet.note_failed(&f.owner_uid, f.revision.as_deref());
                    let report = self.upstream.report_failure(&Failure {
                        namespace: &f.namespace,
                        pod: &f.name,
                        uid: &f.uid,
                        revision: f.revision.as_deref(),
                        reason,
                    });
                    if let Err(e) = report {
                        log::warn!(
                            "the UpgradeFailed Event for {}/{} could not be created: {e}",
                            f.namespace,
                            f.name
                        );
                    }
                }
            }
            Action::Dequeue { uid, reason } => c.store.update(|s| {
                if let Some(q) = take(&mut s.queue, |q| &q.uid == uid) {
                    let key = format!("{}/{}", q.namespace, q.name);
                    log::info!("{key} left the queue: {reason}");
                    s.event(wall, "dequeued", Some(&key), reason.clone());
                }
            }),
            Action::Unpark { uid } => c.store.update(|s| s.parked.retain(|p| &p.uid != uid)),
            Action::TrackOutdated { add, forget } => c.store.update(|s| {
                s.outdated.retain(|o| !forget.contains(&o.uid));
                let since_ms = state::unix_ms(wall);
                for (uid, key) in add {
                    if s.outdated.len() >= state::MAX_OUTDATED {
                        log::warn!(
                            "{} pods need upgrade, the most tracked for policy.max_defer; {key} is not tracked",
                            state::MAX_OUTDATED
                        );
                        break;
                    }
                    if !s.outdated.iter().any(|o| &o.uid == uid) {
                        s.outdated.push(state::Outdated {
                            uid: uid.clone(),
                            key: key.clone(),
                            since_ms,
                            expired: false,
                        });
                    }
                }
            }),
            Action::DeferralExpired { uid, key, since_ms } => c.store.update(|s| {
                if let Some(o) = s.outdated.iter_mut().find(|o| &o.uid == uid) {
                    o.expired = true;
                    let max = c.policy.max_defer.unwrap_or_default();
                    let msg = format!(
                        "{key} has needed upgrade since {} (policy.max_defer {}): holds and non-safety gates no longer block it; safety gates still do",
                        crate::state::rfc3339(state::from_unix_ms(*since_ms)),
                        crate::config::HumanDuration(max)
                    );
                    log::info!("{msg}");
                    s.event(wall, "deferral_expired", Some(key), msg);
                }
            }),
        }
    }

    /// Each tick: the DaemonSets the upstream reports now, and the slots held (resumed after a
    /// start, renewed, released once no longer needed: SPEC 6b, a slot stands for an
    /// unavailable node). Before the first pod list, no slot is resumed or released.
    pub fn fleet_tick(&self) {
        let c = &self.control;
        c.fleet.refresh(self.upstream.daemonsets());
        let snap = self.shared.snapshot();
        let view = c.fleet.view();
        let now = SystemTime::now();
        let needed = snap.as_ref().map(|snap| {
            c.store
                .read(|s| crate::policy::slots_needed(&snap.pods, s, &view, state::unix_ms(now)))
        });
        c.fleet
            .maintain(self.upstream.leases(), needed.as_ref(), now);
    }
}

/// Removes and returns the first element matching `f`.
pub(super) fn take<T>(v: &mut Vec<T>, f: impl Fn(&T) -> bool) -> Option<T> {
    let i = v.iter().position(f)?;
    Some(v.remove(i))
}
