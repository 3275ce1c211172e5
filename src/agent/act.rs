//! The act step of the decision loop: one `Action` carried out against the upstream and the state
//! store (an upgrade in `upgrade`). The loop (`Autopilot`) decides when; this decides nothing.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use crate::gate::Purpose;
use crate::policy::Action;
use crate::shared::{Control, Shared, PULL_RETRY};
use crate::snapshot::Snapshot;
use crate::state::{self, Breaker};
use crate::upstream::{excerpt, Upstream};

/// Carries out actions: calls the upstream, records outcomes and metrics, updates the store.
pub struct Actor {
    pub(super) upstream: Arc<dyn Upstream>,
    pub(super) shared: Arc<Shared>,
    pub(super) control: Arc<Control>,
}

impl Actor {
    pub fn new(upstream: Arc<dyn Upstream>, shared: Arc<Shared>, control: Arc<Control>) -> Actor {
        Actor {
            upstream,
            shared,
            control,
        }
    }

    pub fn act(&self, action: &Action, snap: Option<&Snapshot>) {
        let c = &self.control;
        let wall = SystemTime::now();
        match action {
            Action::Upgrade { pod, force, slot } => {
                self.upgrade(pod, *force, slot.as_deref(), snap)
            }
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
                let owner = c.store.update(|s| {
                    let f = take(&mut s.in_flight, |f| &f.uid == uid);
                    let owner = f.as_ref().map(|f| f.owner_uid.clone());
                    let key = f.map(|f| format!("{}/{}", f.namespace, f.name));
                    log::warn!(
                        "upgrade of {} failed: {reason}; circuit breaker tripped, automatic upgrades stop until POST /v1/breaker/reset",
                        key.as_deref().unwrap_or("?")
                    );
                    s.event(wall, "upgrade_failed", key.as_deref(), reason.clone());
                    s.breaker = Some(Breaker {
                        tripped_ms: state::unix_ms(wall),
                        reason: reason.clone(),
                    });
                    s.event(wall, "breaker_tripped", key.as_deref(), reason.clone());
                    owner
                });
                if let Some(owner) = owner {
                    c.fleet
                        .release(self.upstream.leases(), &owner, "the upgrade failed");
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
                        crate::sim::rfc3339(state::from_unix_ms(*since_ms)),
                        crate::config::HumanDuration(max)
                    );
                    log::info!("{msg}");
                    s.event(wall, "deferral_expired", Some(key), msg);
                }
            }),
        }
    }

    /// Each tick: the DaemonSets the upstream reports now, and the slots held (resumed after a
    /// start, renewed, released when no upgrade needs them).
    pub fn fleet_tick(&self) {
        let c = &self.control;
        c.fleet.refresh(self.upstream.daemonsets());
        let owners: Vec<String> = c
            .store
            .read(|s| s.in_flight.iter().map(|f| f.owner_uid.clone()).collect());
        let owners: std::collections::HashSet<&str> = owners.iter().map(String::as_str).collect();
        c.fleet
            .maintain(self.upstream.leases(), &owners, SystemTime::now());
    }
}

/// Removes and returns the first element matching `f`.
pub(super) fn take<T>(v: &mut Vec<T>, f: impl Fn(&T) -> bool) -> Option<T> {
    let i = v.iter().position(f)?;
    Some(v.remove(i))
}
