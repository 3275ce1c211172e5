//! The decision (SPEC sections 5 and 6), as a pure function: from the pods, the gate readings,
//! the persisted state, "now" and the settings, to the actions to take and, for every pod that
//! needs upgrade, why it is not upgraded yet. The loop in `agent` performs the actions.
//!
//! `why.rs` holds the reasons and the blockers (also asked by the API), `pods.rs` what is read of
//! a pod (patterns, fingerprint, pull key), `decide.rs` the per-pod decision; `decide` below adds
//! the moment to look again.

use std::time::{Duration, Instant};

use crate::config::PolicySettings;
use crate::gate::GateState;
use crate::pod::Pod;
use crate::state::State;

mod decide;
mod pods;
mod why;

pub use pods::{fingerprint, matches, pull_key, slots_needed};
pub use why::{blockers, deferral_over, retry_after, Blockers, Why};

/// A replacement pod whose containers restarted this often is crash-looping.
pub const CRASH_LOOP_RESTARTS: u32 = 3;

/// The pod an action is about, with what identifies its replacement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub owner_uid: String,
    /// The revision it is upgraded to, when the upstream names it (`PodNeedUpgrade`).
    pub revision: Option<String>,
}

impl Target {
    pub fn of(p: &Pod) -> Target {
        Target {
            namespace: p.metadata.namespace.clone(),
            name: p.metadata.name.clone(),
            uid: p.metadata.uid.clone(),
            owner_uid: p.owner().map(|o| o.uid.clone()).unwrap_or_default(),
            revision: p.target_revision().map(str::to_owned),
        }
    }

    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Take a fleet slot of DaemonSet `slot` (its uid) if it has a budget, re-check the gates,
    /// then send the upgrade call.
    Upgrade {
        pod: Target,
        force: bool,
        slot: Option<String>,
        /// The pod is unavailable already (SPEC 6b): it is replaced without waiting for a
        /// free slot, and takes or keeps one if it can.
        down: bool,
    },
    /// Ask for the image pre-pull; `pull_key` says which revision, so it is asked once.
    Pull {
        pod: Target,
        pull_key: String,
    },
    /// The replacement is Ready and up to date.
    Finished {
        uid: String,
        replacement: String,
    },
    /// Not available in time, or crash-looping: block that revision of its DaemonSet.
    Failed {
        uid: String,
        reason: String,
    },
    /// A newer revision (`newer`) of a DaemonSet whose revision `revision` failed here: the
    /// block is lifted, and the pod is upgraded as usual (SPEC 6).
    Unblock {
        owner_uid: String,
        revision: Option<String>,
        newer: Option<String>,
    },
    /// An upgrade call that may have been carried out (`InFlight::uncertain`): the pod is
    /// read again, and the call counted as under way or as never made.
    Recheck {
        uid: String,
    },
    Dequeue {
        uid: String,
        reason: String,
    },
    /// A parked pod's conditions changed: it may be tried again.
    Unpark {
        uid: String,
    },
    /// "Needs upgrade since" (`policy.max_defer`): start tracking these pods `(uid,
    /// namespace/name)` now, and forget these uids (no longer needing upgrade, or gone).
    TrackOutdated {
        add: Vec<(String, String)>,
        forget: Vec<String>,
    },
    /// A pod's deferral ran out (`policy.max_defer`): log it and record it, once.
    DeferralExpired {
        uid: String,
        key: String,
        since_ms: u64,
    },
}

pub struct Inputs<'a> {
    /// `None` before the first successful poll.
    pub pods: Option<&'a [Pod]>,
    pub gates: &'a [GateState],
    pub state: &'a State,
    pub now: Instant,
    pub now_ms: u64,
    pub settings: &'a PolicySettings,
    /// False once the upstream answered 404 to an imagepull (YurtHub before v1.7).
    pub imagepull_supported: bool,
    /// `pull_key`s already asked for.
    pub pulls_requested: &'a [String],
    /// Why the state cannot be written, when it cannot (`Store::unavailable`): upgrades pause.
    pub state_unavailable: Option<&'a str>,
    /// The DaemonSets' strategies, budgets and slots, by uid (SPEC 6b); empty with YurtHub.
    pub fleet: &'a crate::fleet::FleetView,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    pub actions: Vec<Action>,
    /// `(namespace/name, why, queued)` for every pod needing upgrade that is not acted on.
    pub waiting: Vec<(String, Why, bool)>,
    /// The upgrade gates without force, for status.
    pub blockers: Blockers,
    /// When this decision may change with no new input (no gate event, snapshot or API call):
    /// the gates turn stable, a hold expires, a backoff ends, an upgrade reaches
    /// `ready_timeout`. `None`: only new input changes it. The loop sleeps until then.
    pub next_look: Option<Duration>,
}

/// Linear in the pods: every lookup by uid goes through a map built once per call (a node list
/// of 20,000 pods made the nested scans take seconds).
pub fn decide(i: &Inputs) -> Decision {
    let mut d = decide::decide_now(i);
    d.next_look = next_look(i, &d);
    d
}

/// The earliest moment at which `decide` on the same inputs would answer differently.
fn next_look(i: &Inputs, d: &Decision) -> Option<Duration> {
    let after = |ms: u64| (ms > i.now_ms).then(|| Duration::from_millis(ms - i.now_ms));
    let ready = i.settings.ready_timeout.as_millis() as u64;
    let holds = i.state.holds.iter().filter_map(|h| after(h.expires_ms));
    let backoff = i.state.backoff.iter().filter_map(|b| after(b.retry_ms));
    // Failed once strictly past ready_timeout: just after it.
    let timeouts = (i.state.in_flight.iter()).filter_map(|f| after(f.started_ms + ready + 1));
    // Per pod: a forced pod (queued with force, or past max_defer) has its own stability,
    // counted over the safety gates only.
    let waiting = d.waiting.iter().filter_map(|(_, why, _)| match why {
        Why::NotStable(left) => Some(*left),
        Why::Backoff { retry_in, .. } => Some(*retry_in),
        _ => None,
    });
    // The moment a pod's deferral runs out (`policy.max_defer`): holds stop blocking it.
    let deferrals = i.settings.max_defer.into_iter().flat_map(|max| {
        let max = max.as_millis() as u64;
        (i.state.outdated.iter()).filter_map(move |o| after(o.since_ms.saturating_add(max)))
    });
    // A replacement Ready, not yet for its DaemonSet's minReadySeconds: available then.
    let available = pods::available_at(i).filter_map(after);
    // An upgrade that may have started: its pod read again.
    let uncertain =
        (i.state.in_flight.iter().any(|f| f.uncertain)).then_some(Duration::from_secs(2));
    // A fleet slot tried again.
    let slots = i.fleet.values().filter_map(|ds| match &ds.slots {
        crate::fleet::SlotView::Full { retry_ms, .. }
        | crate::fleet::SlotView::Unavailable { retry_ms, .. } => after(*retry_ms),
        _ => None,
    });
    (d.blockers.stable_in.into_iter())
        .chain(holds)
        .chain(backoff)
        .chain(timeouts)
        .chain(waiting)
        .chain(deferrals)
        .chain(slots)
        .chain(available)
        .chain(uncertain)
        .min()
}

#[cfg(test)]
mod tests;
