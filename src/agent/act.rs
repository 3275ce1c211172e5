//! The act step of the decision loop: one `Action` carried out against the upstream and the state
//! store. The loop (`Autopilot`) decides when; this decides nothing.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::gate::Purpose;
use crate::policy::{self, Action, Target};
use crate::shared::{Control, Outcome, Shared, PULL_RETRY};
use crate::snapshot::Snapshot;
use crate::state::{self, Backoff, Breaker, InFlight, Parked};
use crate::upstream::{excerpt, Upstream};

/// Backoff after a 5xx or no answer: 5 s, doubling, at most 5 minutes.
const BACKOFF_FIRST: Duration = Duration::from_secs(5);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Carries out actions: calls the upstream, records outcomes and metrics, updates the store.
pub struct Actor {
    upstream: Arc<dyn Upstream>,
    shared: Arc<Shared>,
    control: Arc<Control>,
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
            Action::Upgrade { pod, force } => self.upgrade(pod, *force, snap),
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
                c.store.update(|s| {
                    if let Some(f) = take(&mut s.in_flight, |f| &f.uid == uid) {
                        let msg = format!(
                            "upgrade of {}/{} finished: {replacement} is Ready",
                            f.namespace, f.name
                        );
                        log::info!("{msg}");
                        let key = format!("{}/{}", f.namespace, f.name);
                        s.event(wall, "upgrade_finished", Some(&key), msg);
                    }
                });
            }
            Action::Failed { uid, reason } => {
                self.shared.metrics.upgrade("failed");
                c.store.update(|s| {
                    let f = take(&mut s.in_flight, |f| &f.uid == uid);
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
                });
            }
            Action::Dequeue { uid, reason } => c.store.update(|s| {
                if let Some(q) = take(&mut s.queue, |q| &q.uid == uid) {
                    let key = format!("{}/{}", q.namespace, q.name);
                    log::info!("{key} left the queue: {reason}");
                    s.event(wall, "dequeued", Some(&key), reason.clone());
                }
            }),
            Action::Unpark { uid } => c.store.update(|s| s.parked.retain(|p| &p.uid != uid)),
        }
    }

    /// Records the intent, re-reads the gates, and only then calls the upstream.
    fn upgrade(&self, pod: &Target, force: bool, snap: Option<&Snapshot>) {
        let c = &self.control;
        let key = pod.key();
        let started = SystemTime::now();
        // Persisted first: after a crash in the call, the restarted agent does not call again.
        // No call without it on disk, and never a second entry for one uid.
        let intent = c.store.commit(|s| {
            if s.in_flight.iter().any(|f| f.uid == pod.uid) {
                return false;
            }
            s.in_flight.push(InFlight {
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
                uid: pod.uid.clone(),
                owner_uid: pod.owner_uid.clone(),
                started_ms: state::unix_ms(started),
                accepted: false,
            });
            true
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
                return;
            }
        }
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
            return;
        }
        let result = self.upstream.upgrade(&pod.namespace, &pod.name);
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
            }
            _ => {
                self.shared.metrics.upgrade("error");
                c.store.update(|s| {
                    s.in_flight.retain(|f| f.uid != pod.uid);
                    let attempts = s
                        .backoff
                        .iter()
                        .find(|b| b.uid == pod.uid)
                        .map_or(0, |b| b.attempts)
                        + 1;
                    let wait = BACKOFF_FIRST
                        .saturating_mul(1 << (attempts - 1).min(16))
                        .min(BACKOFF_MAX);
                    log::warn!(
                        "upgrade {key} failed: {detail}; retrying in {}s (attempt {attempts})",
                        wait.as_secs()
                    );
                    s.backoff.retain(|b| b.uid != pod.uid);
                    s.backoff.push(Backoff {
                        uid: pod.uid.clone(),
                        key: key.clone(),
                        attempts,
                        retry_ms: state::unix_ms(wall + wait),
                        detail: detail.clone(),
                    });
                    s.event(wall, "upgrade_error", Some(&key), detail);
                });
            }
        }
    }
}

/// Removes and returns the first element matching `f`.
fn take<T>(v: &mut Vec<T>, f: impl Fn(&T) -> bool) -> Option<T> {
    let i = v.iter().position(f)?;
    Some(v.remove(i))
}
