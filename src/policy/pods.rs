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
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for c in &p.status.conditions {
        for part in [&c.kind, &c.status, &c.reason, &c.message] {
            for b in part.bytes().chain([0xff]) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
    }
    h
}

/// The pre-pull asked for a pod at a revision: asked once.
pub fn pull_key(p: &Pod) -> String {
    format!(
        "{}@{}",
        p.metadata.uid,
        p.target_revision().unwrap_or_default()
    )
}
