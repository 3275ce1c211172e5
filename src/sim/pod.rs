//! The pod JSON the model edits: YurtHub's status pre-check, conditions, readiness, the image
//! a pod asked for, the rendered list; and Kubernetes-looking names and dates.
//!
//! `Names` draws from `fastrand`'s seeded generator (wyrand): names that repeat from a seed.

use std::time::SystemTime;

use serde_json::{json, Value};

use super::model::SimPod;
use crate::state::rfc3339;

/// YurtHub's pre-check of the pod's own status.
pub(super) fn check_status(p: &SimPod) -> Result<(), String> {
    let (ns, name) = (&p.namespace, &p.name);
    if p.deleting {
        return Err(format!("Pod {ns}/{name} is deleting, can not be updated"));
    }
    let offered = p.json["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == crate::pod::NEED_UPGRADE && c["status"] == "True")
    });
    if !offered {
        return Err(format!(
            "Pod: {ns}/{name} update status is False, can not be updated"
        ));
    }
    Ok(())
}

pub fn set_condition(pod: &mut Value, kind: &str, status: &str, reason: &str, message: &str) {
    let now = rfc3339(SystemTime::now());
    let Some(conditions) = pod["status"]["conditions"].as_array_mut() else {
        return;
    };
    let mut c =
        json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": now});
    if !reason.is_empty() {
        c["reason"] = json!(reason);
    }
    if !message.is_empty() {
        c["message"] = json!(message);
    }
    match conditions.iter_mut().find(|c| c["type"] == kind) {
        Some(old) => *old = c,
        None => conditions.push(c),
    }
}

/// `PodImageReady` for revision `hash`: `False` when requested, `True` once pulled.
pub(super) fn set_image(p: &mut SimPod, hash: String, pulled: bool) {
    let (status, reason) = if pulled {
        ("True", "PullImageSuccess")
    } else {
        ("False", "")
    };
    set_condition(
        &mut p.json,
        crate::pod::IMAGE_READY,
        status,
        reason,
        &format!("controllerrevision: {hash}"),
    );
    p.image = Some((hash, pulled));
}

/// A DaemonSet pod's container started at `now`: its name and image in the spec and status, a
/// fresh container id, no restarts, and every condition's transition time (the YurtHub
/// simulator's and the apiserver stand-in's replacement pods alike).
pub fn start_container(p: &mut Value, name: &str, image: &str, container_id: &str, now: &str) {
    p["spec"]["containers"][0]["name"] = json!(name);
    p["spec"]["containers"][0]["image"] = json!(image);
    p["status"]["startTime"] = json!(now);
    let cs = &mut p["status"]["containerStatuses"][0];
    cs["name"] = json!(name);
    cs["image"] = json!(image);
    cs["containerID"] = json!(container_id);
    cs["restartCount"] = json!(0);
    for c in p["status"]["conditions"]
        .as_array_mut()
        .into_iter()
        .flatten()
    {
        c["lastTransitionTime"] = json!(now);
    }
}

pub fn set_ready(pod: &mut Value, ready: bool) {
    let status = if ready { "True" } else { "False" };
    for c in pod["status"]["conditions"]
        .as_array_mut()
        .into_iter()
        .flatten()
    {
        if (c["type"] == "Ready" || c["type"] == "ContainersReady") && c["status"] != status {
            c["status"] = json!(status);
            c["lastTransitionTime"] = json!(rfc3339(SystemTime::now()));
        }
    }
    pod["status"]["phase"] = json!(if ready { "Running" } else { "Pending" });
    let cs = &mut pod["status"]["containerStatuses"][0];
    cs["ready"] = json!(ready);
    cs["started"] = json!(ready);
    cs["state"] = if ready {
        json!({"running": {"startedAt": rfc3339(SystemTime::now())}})
    } else {
        json!({"waiting": {"reason": "ContainerCreating"}})
    };
}

pub(super) fn render(pods: &[SimPod], resource_version: u64) -> Vec<u8> {
    let items: Vec<&Value> = pods.iter().map(|p| &p.json).collect();
    serde_json::to_vec(&json!({"kind": "PodList", "apiVersion": "v1",
                               "metadata": {"resourceVersion": resource_version.to_string()}, "items": items}))
    .expect("serializable")
}

/// Kubernetes' "safe" alphabet for generated names (no vowels, no look-alikes).
pub fn encode(mut n: u64, len: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..len)
        .map(|_| {
            let c = ALPHABET[(n % ALPHABET.len() as u64) as usize] as char;
            n /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

/// Random-looking names and uids for simulated objects, from a seed (fastrand: they only
/// need to look random, not be unpredictable). Both simulated wires draw from one.
#[derive(Debug, Clone)]
pub struct Names(fastrand::Rng);

impl Names {
    /// The names this seed gives, the same each time.
    pub fn with_seed(seed: u64) -> Names {
        Names(fastrand::Rng::with_seed(seed))
    }

    /// A version-4-shaped uid.
    pub fn uid(&mut self) -> String {
        let (a, b) = (self.0.u64(..), self.0.u64(..));
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            (b >> 48) & 0x3fff | 0x8000,
            b & 0xffff_ffff_ffff
        )
    }

    /// A five-character generated-name suffix, as the apiserver makes them.
    pub fn suffix(&mut self) -> String {
        encode(self.0.u64(..), 5)
    }
}

#[cfg(test)]
mod tests {
    use super::Names;

    #[test]
    fn names_repeat_from_a_seed_and_look_like_the_apiservers() {
        let (mut a, mut b) = (Names::with_seed(42), Names::with_seed(42));
        let drawn: Vec<String> = (0..50).map(|_| a.suffix()).collect();
        assert_eq!(drawn, (0..50).map(|_| b.suffix()).collect::<Vec<_>>());
        assert_eq!(a.uid(), b.uid());
        for s in &drawn {
            assert_eq!(s.len(), 5, "{s}");
            assert!(
                s.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)),
                "{s}"
            );
        }
        let mut distinct = drawn.clone();
        distinct.sort();
        distinct.dedup();
        assert!(distinct.len() > 45, "{drawn:?}");
        assert_ne!(
            Names::with_seed(43).suffix(),
            drawn[0],
            "another seed, other names"
        );
        // 8-4-4-4-12 hex, version 4, RFC 4122 variant, as in the recorded fixtures.
        let uid = a.uid();
        let parts: Vec<&str> = uid.split('-').collect();
        let lens: Vec<usize> = parts.iter().map(|p| p.len()).collect();
        assert_eq!(lens, [8, 4, 4, 4, 12], "{uid}");
        assert!(
            uid.chars().all(|c| c == '-' || c.is_ascii_hexdigit()),
            "{uid}"
        );
        assert!(
            parts[2].starts_with('4') && "89ab".contains(&parts[3][..1]),
            "{uid}"
        );
    }
}
