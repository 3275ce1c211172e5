//! What the policy reads of a pod beyond `pod.rs`: include/exclude patterns, the fingerprint of
//! its conditions, the key of a pre-pull.

use crate::pod::Pod;

/// `namespace/name-prefix*` patterns (validated by config): each side exact, or a prefix when it
/// ends in `*`.
pub fn matches(pattern: &str, p: &Pod) -> bool {
    let Some((ns, name)) = pattern.split_once('/') else {
        return false;
    };
    let side = |pat: &str, s: &str| match pat.strip_suffix('*') {
        Some(prefix) => s.starts_with(prefix),
        None => pat == s,
    };
    side(ns, &p.metadata.namespace) && side(name, &p.metadata.name)
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
