//! The stand-in's record (`GET /sim/history`): every pod DELETE, every DaemonSet pod turned
//! Ready (or crashed), every Lease write and every Event created, in order, with its wall-clock time, so that tests judge the
//! fleet budget from what happened rather than by sampling.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::{Cluster, Inner};

/// Entries kept (a stand-in left running does not grow without bound).
const HISTORY_KEPT: usize = 100_000;

impl Cluster {
    /// The history (see `Inner::history`), from sequence number `since`.
    pub fn history(&self, since: u64) -> Value {
        let st = self.lock();
        let after: Vec<&Value> = st
            .history
            .iter()
            .filter(|e| e["seq"].as_u64().is_some_and(|s| s >= since))
            .collect();
        json!(after)
    }
}

impl Inner {
    /// Appends `v` to the history with its sequence number and time (`at_us`: microseconds
    /// since the Unix epoch, the same clock the tests read).
    fn note(&mut self, mut v: Value) {
        v["seq"] = json!(self.next_seq);
        self.next_seq += 1;
        if self.history.len() >= HISTORY_KEPT {
            self.history.pop_front();
        }
        v["at_us"] = json!(SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64));
        self.history.push_back(v);
    }

    /// A DaemonSet pod's DELETE or Ready, in the history.
    pub(super) fn note_pod(&mut self, event: &str, p: &Value) {
        let owner = &p["metadata"]["ownerReferences"][0];
        if owner["kind"] != "DaemonSet" {
            return;
        }
        let v = json!({"event": event, "node": p["spec"]["nodeName"], "pod": p["metadata"]["name"],
                       "daemonset": format!("{}/{}", p["metadata"]["namespace"].as_str().unwrap_or_default(),
                                            owner["name"].as_str().unwrap_or_default())});
        self.note(v);
    }

    /// A Kubernetes Event created (`UpgradeFailed`), with the node that reported it.
    pub(super) fn note_event(&mut self, e: &Value) {
        let node = e["reportingInstance"]
            .as_str()
            .or_else(|| e["source"]["host"].as_str());
        let v = json!({"event": "k8s_event", "reason": e["reason"], "type": e["type"],
                       "message": e["message"], "node": node,
                       "pod": format!("{}/{}", e["involvedObject"]["namespace"].as_str().unwrap_or_default(),
                                      e["involvedObject"]["name"].as_str().unwrap_or_default())});
        self.note(v);
    }

    /// A Lease write (`create`, `update`, `delete`), with the holder it left.
    pub(super) fn note_lease(&mut self, verb: &str, l: &Value) {
        let v = json!({"event": "lease", "verb": verb, "lease": format!("{}/{}",
                        l["metadata"]["namespace"].as_str().unwrap_or_default(),
                        l["metadata"]["name"].as_str().unwrap_or_default()),
                       "holder": l["spec"]["holderIdentity"]});
        self.note(v);
    }
}
