//! What the API and the loops share: the pod snapshot handle, the upstream's health, the recent
//! upgrade outcomes (`Shared`), and the gates, state store and policy (`Control`).
//!
//! Below both `agent` (the loops that write it) and `api` (which serves it); it imports neither.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use crate::config::PolicySettings;
use crate::gate::Gates;
use crate::metrics::{Gauges, Metrics};
use crate::policy::{self, Decision};
use crate::snapshot::Snapshot;
use crate::state::{self, Store};
use crate::upstream::UpstreamError;

/// A failed imagepull is asked again after this.
pub const PULL_RETRY: Duration = Duration::from_secs(30);

/// How many upgrade outcomes `/v1/status` remembers.
const RECENT: usize = 10;

/// What the poller learns and the API serves.
pub struct Shared {
    snapshot: RwLock<Option<Arc<Snapshot>>>,
    health: Mutex<Health>,
    recent: Mutex<VecDeque<Outcome>>,
    pub metrics: Metrics,
    pub poll_interval: Duration,
    /// What the decision loop sleeps on: rung by a new snapshot, a gate event, a state change.
    pub bell: Arc<crate::gate::Bell>,
}

#[derive(Default, Clone)]
pub struct Health {
    /// When the last poll ended, well or not: the poller is alive.
    pub last_attempt: Option<Instant>,
    /// When the last poll started (after `last_attempt` while one runs), for the watchdog.
    pub poll_started: Option<Instant>,
    pub last_success: Option<(Instant, SystemTime)>,
    pub last_error: Option<(UpstreamError, SystemTime)>,
    pub consecutive_failures: u64,
}

/// One upgrade call relayed to the upstream, for `/v1/status`.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub pod: String,
    pub at: SystemTime,
    /// Upstream status; 0 when it could not be reached.
    pub status: u16,
    pub detail: String,
}

impl Shared {
    pub fn new(poll_interval: Duration) -> Shared {
        Shared {
            snapshot: RwLock::new(None),
            health: Mutex::new(Health::default()),
            recent: Mutex::new(VecDeque::new()),
            metrics: Metrics::default(),
            poll_interval,
            bell: crate::gate::Bell::new(),
        }
    }

    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn health(&self) -> Health {
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Seconds since the last successful poll.
    pub fn snapshot_age(&self, now: Instant) -> Option<Duration> {
        self.health()
            .last_success
            .map(|(at, _)| now.saturating_duration_since(at))
    }

    /// `Ok` when a snapshot newer than three poll intervals exists; else the reason.
    pub fn readiness(&self, now: Instant) -> Result<(), String> {
        let h = self.health();
        let Some((at, _)) = h.last_success else {
            return Err(match h.last_error {
                Some((e, _)) => format!("no snapshot yet: the upstream {e}"),
                None => "no snapshot yet: the first poll has not finished".into(),
            });
        };
        let age = now.saturating_duration_since(at);
        if age > self.poll_interval * 3 {
            let why = h
                .last_error
                .map(|(e, _)| format!(": the upstream {e}"))
                .unwrap_or_default();
            return Err(format!(
                "snapshot is {:.0}s old, more than 3 poll intervals{why}",
                age.as_secs_f64()
            ));
        }
        Ok(())
    }

    pub fn record_outcome(&self, o: Outcome) {
        let mut r = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if r.len() == RECENT {
            r.pop_back();
        }
        r.push_front(o);
    }

    pub fn recent(&self) -> Vec<Outcome> {
        self.recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    pub fn gauges(&self, now: Instant) -> Gauges {
        let snap = self.snapshot();
        Gauges {
            snapshot_age: self.snapshot_age(now).map(|d| d.as_secs_f64()),
            pods: snap.as_ref().map_or(0, |s| s.pods.len()),
            pods_needing_upgrade: snap.as_ref().map_or(0, |s| s.needing_upgrade().count()),
            ready: self.readiness(now).is_ok(),
            ..Gauges::default()
        }
    }

    /// A poll starts now.
    pub(crate) fn polling(&self) {
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .poll_started = Some(Instant::now());
    }

    pub(crate) fn succeeded(&self, snapshot: Option<Snapshot>) -> (bool, u64) {
        if let Some(s) = snapshot {
            *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(s));
            self.bell.ring();
        }
        let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        let first = h.last_success.is_none();
        let failures = std::mem::take(&mut h.consecutive_failures);
        h.last_success = Some((Instant::now(), SystemTime::now()));
        h.last_attempt = Some(Instant::now());
        self.metrics.poll_ok();
        (first, failures)
    }

    pub(crate) fn failed(&self, e: UpstreamError) {
        self.metrics.poll_failed(e.kind());
        let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        h.consecutive_failures += 1;
        h.last_error = Some((e, SystemTime::now()));
        h.last_attempt = Some(Instant::now());
    }
}

/// What the decision loop and the API share besides the pod snapshot.
pub struct Control {
    pub gates: Gates,
    pub store: Store,
    pub policy: PolicySettings,
    /// Why `store` is memory only, when it is.
    pub store_error: Option<String>,
    /// False once the upstream answered 404 to an imagepull (YurtHub before v1.7).
    pub imagepull_supported: AtomicBool,
    /// The DaemonSets' strategies and fleet budget slots (SPEC 6b).
    pub fleet: crate::fleet::Fleet,
    /// Image pre-pulls asked for (`policy::pull_key`): accepted ones (`None`) are not asked
    /// again; failed ones are asked again after the `Instant`.
    pulls: Mutex<Vec<(String, Option<Instant>)>>,
}

impl Control {
    pub fn new(gates: Gates, store: Store, policy: PolicySettings) -> Control {
        Control {
            gates,
            store,
            fleet: crate::fleet::Fleet::new(policy.ready_timeout),
            policy,
            store_error: None,
            imagepull_supported: AtomicBool::new(true),
            pulls: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn pulls(&self) -> std::sync::MutexGuard<'_, Vec<(String, Option<Instant>)>> {
        self.pulls.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records an imagepull answer: accepted, it is not asked again for that revision; failed
    /// (an upstream error, a 403 before the conditions settle, no answer), it is asked again
    /// after `PULL_RETRY`, so a passing failure cannot leave the pod waiting forever.
    pub fn pull_asked(&self, key: &str, accepted: bool) {
        let retry = (!accepted).then(|| Instant::now() + PULL_RETRY);
        let mut pulls = self.pulls();
        pulls.retain(|(k, _)| k != key);
        pulls.push((key.to_owned(), retry));
    }

    /// The decision on `pods` with the gates' last readings and the state now. The loop acts on
    /// it; `/v1/status` shows it.
    pub fn decide(&self, pods: Option<&[crate::pod::Pod]>) -> Decision {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let gates = self.gates.states();
        let pulls: Vec<String> = self
            .pulls()
            .iter()
            .filter(|(_, retry)| retry.is_none_or(|at| at > now))
            .map(|(k, _)| k.clone())
            .collect();
        let unavailable = self.store.unavailable();
        let fleet = self.fleet.view();
        self.store.read(|s| {
            policy::decide(&policy::Inputs {
                pods,
                gates: &gates,
                state: s,
                now,
                now_ms: state::unix_ms(wall),
                settings: &self.policy,
                imagepull_supported: self.imagepull_supported.load(Ordering::Relaxed),
                pulls_requested: &pulls,
                state_unavailable: unavailable.as_deref(),
                fleet: &fleet,
            })
        })
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use crate::policy::Action;
    use crate::testing::fixture;

    /// Regression: a failed imagepull used to be remembered as asked, so the pod waited for a
    /// pre-pull that never came; now only an accepted one is, and a failed one is asked again.
    #[test]
    fn a_failed_imagepull_is_asked_again_an_accepted_one_is_not() {
        let mut policy = Settings::default().policy;
        policy.mode = crate::config::Mode::Auto;
        let c = Control::new(
            crate::gate::Gates::new(Vec::new()),
            Store::in_memory(),
            policy,
        );
        let mut pods = Snapshot::build(&fixture("1.36")).unwrap().pods;
        pods.retain(|p| p.metadata.name.starts_with("kindnet"));
        pods[0].status.conditions.push(crate::pod::Condition {
            kind: "PodNeedUpgrade".into(),
            status: "True".into(),
            reason: String::new(),
            message: "controllerrevision: 7f9c8d6b5".into(),
            ..Default::default()
        });
        let key = policy::pull_key(&pods[0]);
        let pulls = |c: &Control| {
            c.decide(Some(&pods))
                .actions
                .iter()
                .filter(|a| matches!(a, Action::Pull { .. }))
                .count()
        };
        assert_eq!(pulls(&c), 1, "not asked yet");
        c.pull_asked(&key, false);
        assert_eq!(pulls(&c), 0, "failed: not again before PULL_RETRY");
        c.pulls()[0].1 = Some(Instant::now() - Duration::from_secs(1));
        assert_eq!(pulls(&c), 1, "failed, PULL_RETRY over: asked again");
        c.pull_asked(&key, true);
        assert_eq!(pulls(&c), 0, "accepted: not again");
        assert_eq!(c.pulls().len(), 1);
    }

    #[test]
    fn readiness_needs_a_snapshot_newer_than_three_intervals() {
        let shared = Shared::new(Duration::from_secs(5));
        let now = Instant::now();
        assert!(shared
            .readiness(now)
            .unwrap_err()
            .contains("first poll has not finished"));
        shared.succeeded(None);
        assert!(shared.readiness(Instant::now()).is_ok());
        let later = Instant::now() + Duration::from_secs(16);
        assert!(shared
            .readiness(later)
            .unwrap_err()
            .contains("more than 3 poll intervals"));
    }
}
