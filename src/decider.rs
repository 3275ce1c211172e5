//! The decision's local inputs, which the decision loop and the API share: the gates, the state
//! store, the policy settings, the fleet slots and the image pre-pulls asked for; and `decide`,
//! which reads them with the pod snapshot into a `policy::Decision`.
//!
//! Below both `agent` (the loop that acts on it) and `api` (which shows it); it imports neither.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use crate::config::PolicySettings;
use crate::gate::Gates;
use crate::policy::{self, Decision};
use crate::state::{self, Store};

/// A failed imagepull is asked again after this.
pub const PULL_RETRY: Duration = Duration::from_secs(30);

/// What the decision loop and the API share besides the pod snapshot.
pub struct Decider {
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

impl Decider {
    pub fn new(gates: Gates, store: Store, policy: PolicySettings) -> Decider {
        Decider {
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
    use crate::snapshot::Snapshot;
    use crate::testing::fixture;

    /// Regression: a failed imagepull used to be remembered as asked, so the pod waited for a
    /// pre-pull that never came; now only an accepted one is, and a failed one is asked again.
    #[test]
    fn a_failed_imagepull_is_asked_again_an_accepted_one_is_not() {
        let mut policy = Settings::default().policy;
        policy.mode = crate::config::Mode::Auto;
        let c = Decider::new(
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
        let pulls = |c: &Decider| {
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
}
