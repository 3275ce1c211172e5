//! What the policy reads of a pod beyond `pod.rs`: include/exclude patterns, the fingerprint of
//! its conditions, the key of a pre-pull.

use crate::config::Pattern;
use crate::pod::Pod;

/// Whether `pattern` (`policy.include`/`exclude`) matches the pod's namespace and name.
pub fn matches(pattern: &Pattern, p: &Pod) -> bool {
    pattern.matches(&p.metadata.namespace, &p.metadata.name)
}

/// Identifies a pod's conditions, to tell when a parked pod's situation changed. FNV-1a, so the
/// value persisted in the state file means the same in the next version.
pub fn fingerprint(p: &Pod) -> u64 {
    use std::hash::Hasher as _;
    let mut h = fnv::FnvHasher::default();
    for c in &p.status.conditions {
        for part in [&c.kind, &c.status, &c.reason, &c.message] {
            h.write(part.as_bytes());
            h.write(&[0xff]);
        }
    }
    h.finish()
}

/// The pre-pull asked for a pod at a revision: asked once.
pub fn pull_key(p: &Pod) -> String {
    format!(
        "{}@{}",
        p.metadata.uid,
        p.target_revision().unwrap_or_default()
    )
}

/// The minReadySeconds of the DaemonSet `owner_uid`, as the fleet view knows it (0 when not).
pub(super) fn min_ready(fleet: &crate::fleet::FleetView, owner_uid: &str) -> std::time::Duration {
    fleet
        .get(owner_uid)
        .map_or(std::time::Duration::ZERO, |ds| ds.min_ready)
}

/// When each in-flight upgrade's replacement, Ready but not yet for minReadySeconds, becomes
/// available (ms since the epoch).
pub(super) fn available_at<'a>(i: &'a super::Inputs) -> impl Iterator<Item = u64> + 'a {
    let pods = i.pods.unwrap_or_default();
    i.state.in_flight.iter().filter_map(move |f| {
        let old = crate::pod::Upgraded {
            uid: &f.uid,
            owner_uid: &f.owner_uid,
            name: &f.name,
        };
        let new = crate::pod::replacement(pods, old)?;
        let wait = min_ready(i.fleet, &f.owner_uid);
        (!wait.is_zero())
            .then(|| new.ready_since_ms())
            .flatten()
            .map(|since| since.saturating_add(wait.as_millis() as u64) + 1)
    })
}

/// The DaemonSets whose fleet slot this node keeps (SPEC 6b: a slot stands for an unavailable
/// node): an upgrade of it in flight, or this node's pod of it not available (not Ready for
/// the DaemonSet's minReadySeconds, being deleted, or missing), whatever its revision and
/// whether or not the upgrade failed. Only DaemonSets with a budget are named.
pub fn slots_needed(
    pods: &[Pod],
    state: &crate::state::State,
    fleet: &crate::fleet::FleetView,
    now_ms: u64,
) -> std::collections::HashSet<String> {
    // Pods this node's upgrades deleted are not available, whatever a stale list says.
    let deleted: std::collections::HashSet<&str> = (state.in_flight.iter().map(|f| f.uid.as_str()))
        .chain(state.blocked.iter().map(|b| b.uid.as_str()))
        .collect();
    let mut available = std::collections::HashSet::new();
    for p in pods
        .iter()
        .filter(|p| !deleted.contains(p.metadata.uid.as_str()))
    {
        if let Some(o) = p.owner() {
            if p.is_available(min_ready(fleet, &o.uid), now_ms) {
                available.insert(o.uid.as_str());
            }
        }
    }
    let in_flight: std::collections::HashSet<&str> = state
        .in_flight
        .iter()
        .map(|f| f.owner_uid.as_str())
        .collect();
    fleet
        .iter()
        .filter(|(_, ds)| ds.budget.is_some())
        .filter(|(uid, _)| in_flight.contains(uid.as_str()) || !available.contains(uid.as_str()))
        .map(|(uid, _)| uid.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    /// FNV-1a 64 over the conditions, as earlier versions persisted it in the state file.
    #[test]
    fn a_fingerprint_means_what_it_meant_in_the_state_file() {
        let p: crate::pod::Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "a", "namespace": "n", "uid": "u"},
            "status": {"conditions": [{"type": "Ready", "status": "False"}]}
        }))
        .unwrap();
        assert_eq!(super::fingerprint(&p), 0x4b54_93b6_02c4_a3ef);
    }
}
