//! What survives a restart (SPEC section 6): upgrades in flight, the queue, holds, the circuit
//! breaker, parked and backed-off pods, and a bounded event log, in one JSON file in
//! `state.dir` (`state.json`); and the intent of the latest upgrade call, in a record of its own
//! (`intent`, see `intent`).
//!
//! `state.json` is written atomically: a temp file in the same directory, fsync, rename, fsync
//! of the directory. A file that cannot be parsed is set aside (renamed, never deleted) with a
//! warning, and the agent starts fresh rather than crash-looping on it.

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

mod disk;
mod intent;
mod store;
#[cfg(test)]
mod tests;

pub use store::{Store, Unavailable, RETRY_EVERY};

/// The event log keeps this many, newest first.
pub const MAX_EVENTS: usize = 256;
/// At most this many holds at once: each one is rewritten with every state change.
pub const MAX_HOLDS: usize = 64;
/// A hold's reason is at most this many bytes.
pub const MAX_REASON: usize = 1024;
/// A state file over this is set aside at start without being read whole, and a state that
/// would serialize larger is not written. Holds, queue, parked and backed-off pods of a node
/// (110 pods by default) and 256 events stay far below it.
pub const MAX_FILE: u64 = 4 << 20;
const FILE: &str = "state.json";

/// Milliseconds since the Unix epoch: persisted times are wall-clock times.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub fn from_unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + std::time::Duration::from_millis(ms)
}

/// `2026-11-25T17:44:01Z`: RFC 3339 in UTC, whole seconds, as Kubernetes writes times (jiff);
/// the API's times and the simulators' objects. Before 1970 reads as the epoch.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    i64::try_from(secs)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .unwrap_or(jiff::Timestamp::MAX)
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct State {
    pub in_flight: Vec<InFlight>,
    pub queue: Vec<Queued>,
    pub holds: Vec<Hold>,
    /// Tripped for everything (an intent record that cannot be trusted); cleared by hand.
    pub breaker: Option<Breaker>,
    /// The DaemonSet revisions this node does not try again by itself (SPEC 6): one entry per
    /// DaemonSet, cleared by a newer revision of it or by hand.
    pub blocked: Vec<Blocked>,
    pub parked: Vec<Parked>,
    pub backoff: Vec<Backoff>,
    /// Since when each pod has needed upgrade (`policy.max_defer`): one entry per uid, only
    /// for pods that need upgrade now, at most `MAX_OUTDATED`.
    pub outdated: Vec<Outdated>,
    /// Newest first.
    pub events: VecDeque<Event>,
    /// The sequence number of the newest intent record (`intent`) this state includes: a
    /// record with a higher one was written after this state, and is taken in at start.
    pub intent_seq: u64,
}

/// At most this many "needs upgrade since" entries (a node runs 110 pods by default); past it,
/// new ones are not tracked (their deferral does not run) and this is logged.
pub const MAX_OUTDATED: usize = 2048;

/// A pod first seen needing upgrade at `since_ms`, by its uid: a replacement is a new pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outdated {
    pub uid: String,
    pub key: String,
    pub since_ms: u64,
    /// Its deferral ran out, and that was logged and put in the event log (once).
    #[serde(default)]
    pub expired: bool,
}

/// An upgrade call that was (or was about to be) sent: the pod is not called again while this
/// exists, across restarts too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InFlight {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The DaemonSet's uid: its next pod is the replacement.
    pub owner_uid: String,
    pub started_ms: u64,
    /// The upstream accepted the call (2xx). False while the call is under way.
    pub accepted: bool,
    /// The revision the pod was upgraded to (`PodNeedUpgrade`'s `controllerrevision:`), when
    /// the upstream names it: a failure blocks that revision of the DaemonSet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The call got no answer, or a 5xx, after it was sent whole: it may have been carried out.
    /// The slot stays held until the pod is read again (gone or deleting: under way;
    /// unchanged: it did not happen).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub uncertain: bool,
}

/// A pod an app or operator asked to upgrade when the gates allow (`?when=idle`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Queued {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub at_ms: u64,
    /// Asked with `?force=true`: holds and convenience gates do not apply.
    pub force: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hold {
    pub name: String,
    pub reason: String,
    pub created_ms: u64,
    pub expires_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Breaker {
    pub tripped_ms: u64,
    pub reason: String,
}

/// A failed upgrade: this revision of this DaemonSet is not tried again by this node by
/// itself (SPEC 6). A newer revision of the DaemonSet clears it, as `POST /v1/breaker/reset`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Blocked {
    /// The DaemonSet's uid.
    pub owner_uid: String,
    /// `namespace/name` of the DaemonSet, for status (`of pod NS/NAME` in YurtHub mode, which
    /// reports no DaemonSets).
    #[serde(default)]
    pub daemonset: String,
    /// The revision that failed; `None` when the upstream names none (YurtHub before v1.7):
    /// then every revision of the DaemonSet waits for a reset by hand.
    pub revision: Option<String>,
    /// The pod whose upgrade failed, and its uid: deleted by that upgrade, it never counts as
    /// this node's available pod again (a pod list read before the DELETE still shows it).
    pub pod: String,
    #[serde(default)]
    pub uid: String,
    pub tripped_ms: u64,
    pub reason: String,
}

/// A pod the upstream refused (4xx): not tried again until its conditions change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Parked {
    pub uid: String,
    pub key: String,
    pub fingerprint: u64,
    pub detail: String,
}

/// A pod whose upgrade call failed with 5xx or no answer: retried after `retry_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Backoff {
    pub uid: String,
    pub key: String,
    pub attempts: u32,
    pub retry_ms: u64,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub at_ms: u64,
    /// A stable word: upgrade_started, upgrade_finished, upgrade_failed, gate_open, …
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    pub message: String,
}

impl State {
    pub fn event(&mut self, at: SystemTime, kind: &str, pod: Option<&str>, message: String) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_back();
        }
        self.events.push_front(Event {
            at_ms: unix_ms(at),
            kind: kind.to_owned(),
            pod: pod.map(str::to_owned),
            message,
        });
    }

    /// Holds that have not expired at `now_ms`.
    pub fn active_holds(&self, now_ms: u64) -> impl Iterator<Item = &Hold> {
        self.holds.iter().filter(move |h| h.expires_ms > now_ms)
    }

    /// Sets (or replaces) a hold. A new name past `MAX_HOLDS` active holds is refused with the
    /// reason. (Expired ones leave with the next tick, which logs them.)
    pub fn set_hold(&mut self, hold: Hold, now_ms: u64) -> Result<(), String> {
        self.holds.retain(|h| h.name != hold.name);
        if self.active_holds(now_ms).count() >= MAX_HOLDS {
            return Err(format!(
                "{MAX_HOLDS} holds are active, the most this agent keeps; release one (DELETE /v1/holds/NAME) or reuse a name"
            ));
        }
        self.holds.push(hold);
        Ok(())
    }
}
