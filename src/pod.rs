//! The few pod fields the agent reads, and the OpenYurt upgrade rules over them (SPEC section 2).
//!
//! Everything else in a pod is ignored; unknown fields never fail a parse, and `null` reads as
//! empty wherever Kubernetes may send it.

use serde::{Deserialize, Deserializer};

pub const NEED_UPGRADE: &str = "PodNeedUpgrade";
pub const IMAGE_READY: &str = "PodImageReady";
/// The prefix of both conditions' messages from OpenYurt v1.7.
pub const REVISION_PREFIX: &str = "controllerrevision: ";

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Pod {
    pub metadata: Meta,
    #[serde(default, deserialize_with = "nullable")]
    pub spec: Spec,
    #[serde(default, deserialize_with = "nullable")]
    pub status: Status,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    pub name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub namespace: String,
    #[serde(default, deserialize_with = "nullable")]
    pub uid: String,
    #[serde(default)]
    pub deletion_timestamp: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub owner_references: Vec<OwnerRef>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct OwnerRef {
    #[serde(default, deserialize_with = "nullable")]
    pub kind: String,
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub uid: String,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    #[serde(default, deserialize_with = "nullable")]
    pub node_name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub containers: Vec<Container>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Container {
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub image: String,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    #[serde(default, deserialize_with = "nullable")]
    pub phase: String,
    #[serde(default, deserialize_with = "nullable")]
    pub conditions: Vec<Condition>,
    #[serde(default, deserialize_with = "nullable")]
    pub container_statuses: Vec<ContainerStatus>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Condition {
    #[serde(rename = "type", default, deserialize_with = "nullable")]
    pub kind: String,
    #[serde(default, deserialize_with = "nullable")]
    pub status: String,
    #[serde(default, deserialize_with = "nullable")]
    pub reason: String,
    #[serde(default, deserialize_with = "nullable")]
    pub message: String,
    /// RFC 3339, as the kubelet writes it; read for `Ready` (`spec.minReadySeconds`).
    #[serde(rename = "lastTransitionTime", default, deserialize_with = "nullable")]
    pub last_transition_time: String,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStatus {
    #[serde(default)]
    pub restart_count: u32,
    #[serde(default)]
    pub ready: bool,
}

/// `null` and absent both read as the type's default.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(d: D) -> Result<T, D::Error> {
    Option::<T>::deserialize(d).map(Option::unwrap_or_default)
}

/// What the image pre-pull condition says about the revision the pod would upgrade to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageState {
    /// No `PodImageReady` condition: no pre-pull was asked for (or YurtHub predates v1.7).
    NotRequested,
    /// Requested, not yet `True` for the current revision; YurtHub refuses the upgrade.
    Pending,
    Ready,
}

impl Pod {
    pub fn condition(&self, kind: &str) -> Option<&Condition> {
        self.status.conditions.iter().find(|c| c.kind == kind)
    }

    /// The controlling owner as YurtHub sees it: the first owner reference.
    pub fn owner(&self) -> Option<&OwnerRef> {
        self.metadata.owner_references.first()
    }

    pub fn is_deleting(&self) -> bool {
        self.metadata.deletion_timestamp.is_some()
    }

    pub fn is_ready(&self) -> bool {
        self.condition("Ready").is_some_and(|c| c.status == "True")
    }

    /// Available as Kubernetes counts it for a DaemonSet's rolling update: Ready, not being
    /// deleted, and Ready for `min_ready` by its `Ready` condition's `lastTransitionTime` (a
    /// time that cannot be read counts as just now: not yet available when `min_ready` > 0).
    pub fn is_available(&self, min_ready: std::time::Duration, now_ms: u64) -> bool {
        if !self.is_ready() || self.is_deleting() {
            return false;
        }
        if min_ready.is_zero() {
            return true;
        }
        self.ready_since_ms()
            .is_some_and(|since| since.saturating_add(min_ready.as_millis() as u64) <= now_ms)
    }

    /// When the pod turned Ready (`lastTransitionTime` of `Ready=True`), in ms since the epoch.
    pub fn ready_since_ms(&self) -> Option<u64> {
        let c = self.condition("Ready").filter(|c| c.status == "True")?;
        let ts: jiff::Timestamp = c.last_transition_time.parse().ok()?;
        u64::try_from(ts.as_millisecond()).ok()
    }

    /// `PodNeedUpgrade` is exactly `True`, whatever the owner.
    pub fn upgrade_offered(&self) -> bool {
        self.condition(NEED_UPGRADE)
            .is_some_and(|c| c.status == "True")
    }

    /// SPEC section 2: `PodNeedUpgrade=True`, not being deleted, first owner a DaemonSet.
    pub fn needs_upgrade(&self) -> bool {
        self.upgrade_offered()
            && !self.is_deleting()
            && self.owner().is_some_and(|o| o.kind == "DaemonSet")
    }

    /// The revision the cloud wants this pod at, from the v1.7 `PodNeedUpgrade` message.
    pub fn target_revision(&self) -> Option<&str> {
        self.condition(NEED_UPGRADE)?
            .message
            .strip_prefix(REVISION_PREFIX)
            .filter(|h| !h.is_empty())
    }

    /// Mirrors YurtHub's check: an existing `PodImageReady` must be `True` for the current hash.
    /// A pre-pull counts only for the revision it was asked for: a condition naming another
    /// revision (the cloud published a newer one after the pull) reads as `NotRequested` for
    /// the current one, and `image_pull_outdated` tells it apart from no condition at all.
    pub fn image_state(&self) -> ImageState {
        let Some(c) = self.condition(IMAGE_READY) else {
            return ImageState::NotRequested;
        };
        let for_current = match (
            c.message.strip_prefix(REVISION_PREFIX),
            self.target_revision(),
        ) {
            (Some(have), Some(want)) if have != want => return ImageState::NotRequested,
            (Some(_), Some(_)) => true,
            // Without a revision in PodNeedUpgrade (before v1.7) there is nothing to compare.
            (_, None) => true,
            (None, Some(_)) => false,
        };
        if c.status == "True" && for_current {
            ImageState::Ready
        } else {
            ImageState::Pending
        }
    }

    /// `PodImageReady` exists for another revision than the one the pod needs: YurtHub refuses
    /// the upgrade until a pre-pull for the current revision succeeds, so one must be asked for
    /// whether or not `policy.prepull` is on.
    pub fn image_pull_outdated(&self) -> bool {
        let have = self
            .condition(IMAGE_READY)
            .and_then(|c| c.message.strip_prefix(REVISION_PREFIX));
        matches!((have, self.target_revision()), (Some(have), Some(want)) if have != want)
    }

    pub fn restarts(&self) -> u32 {
        self.status
            .container_statuses
            .iter()
            .map(|c| c.restart_count)
            .sum()
    }

    pub fn key(&self) -> String {
        format!("{}/{}", self.metadata.namespace, self.metadata.name)
    }
}

/// The order automatic upgrades take pods in (SPEC section 6): namespace, then name.
pub fn upgrade_order(a: &Pod, b: &Pod) -> std::cmp::Ordering {
    (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
}

/// The pod that was upgraded: its uid, its owner's uid, and its name.
#[derive(Debug, Clone, Copy)]
pub struct Upgraded<'a> {
    pub uid: &'a str,
    pub owner_uid: &'a str,
    pub name: &'a str,
}

impl Upgraded<'_> {
    /// A pod that can only be its successor: another uid of the same owner. A DaemonSet has one
    /// pod per node; a Node owns every static pod on it, so for those the name must match too
    /// (a static pod keeps its name).
    pub fn succeeded_by(&self, p: &Pod) -> bool {
        p.metadata.uid != self.uid
            && p.owner().is_some_and(|o| {
                o.uid == self.owner_uid && (o.kind != "Node" || p.metadata.name == self.name)
            })
    }
}

/// SPEC section 2, "the upgrade of pod X finished": the old uid is gone, and a pod with the same
/// owner is present and Ready. Whether the replacement already needs a newer revision does not
/// matter (the cloud may publish one while it starts): it is a new pod, handled afresh.
/// Returns that replacement.
pub fn replacement<'a>(pods: &'a [Pod], old: Upgraded) -> Option<&'a Pod> {
    if pods.iter().any(|p| p.metadata.uid == old.uid) {
        return None;
    }
    pods.iter()
        .find(|p| old.succeeded_by(p) && p.is_ready() && !p.is_deleting())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    fn ds_pod(conditions: serde_json::Value) -> Pod {
        pod(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1",
                         "ownerReferences": [{"kind": "DaemonSet", "name": "ds", "uid": "ds-uid"}]},
            "status": {"conditions": conditions}
        }))
    }

    #[test]
    fn real_fixture_pods_parse_and_none_needs_upgrade() {
        for v in crate::testing::VERSIONS {
            let list: serde_json::Value =
                serde_json::from_slice(&crate::testing::fixture(v)).unwrap();
            let pods: Vec<Pod> = serde_json::from_value(list["items"].clone()).unwrap();
            assert_eq!(pods.len(), 8);
            assert_eq!(
                pods.iter()
                    .filter(|p| p.owner().unwrap().kind == "DaemonSet")
                    .count(),
                2
            );
            assert!(pods.iter().all(|p| p.is_ready() && !p.needs_upgrade()));
        }
    }

    #[test]
    fn needs_upgrade_rules() {
        let need = json!([{"type": "PodNeedUpgrade", "status": "True", "message": "controllerrevision: abc"}]);
        assert!(ds_pod(need.clone()).needs_upgrade());
        assert_eq!(ds_pod(need.clone()).target_revision(), Some("abc"));
        assert!(!ds_pod(json!([{"type": "PodNeedUpgrade", "status": "False"}])).needs_upgrade());
        assert!(!ds_pod(json!([{"type": "PodNeedUpgrade", "status": "true"}])).needs_upgrade());
        assert!(!ds_pod(json!([])).needs_upgrade());
        assert!(!ds_pod(json!(null)).needs_upgrade());

        let mut deleting = ds_pod(need.clone());
        deleting.metadata.deletion_timestamp = Some("2026-01-01T00:00:00Z".into());
        assert!(!deleting.needs_upgrade());

        let mut static_pod = ds_pod(need.clone());
        static_pod.metadata.owner_references[0].kind = "Node".into();
        assert!(!static_pod.needs_upgrade());
        assert!(static_pod.upgrade_offered());

        let mut orphan = ds_pod(need);
        orphan.metadata.owner_references.clear();
        assert!(!orphan.needs_upgrade());
    }

    #[test]
    fn image_state_follows_yurthub() {
        let need = json!({"type": "PodNeedUpgrade", "status": "True", "message": "controllerrevision: new"});
        let with = |img: serde_json::Value| ds_pod(json!([need, img])).image_state();
        assert_eq!(
            ds_pod(json!([need])).image_state(),
            ImageState::NotRequested
        );
        assert_eq!(
            with(
                json!({"type": "PodImageReady", "status": "True", "message": "controllerrevision: new"})
            ),
            ImageState::Ready
        );
        assert_eq!(
            with(
                json!({"type": "PodImageReady", "status": "True", "message": "controllerrevision: old"})
            ),
            ImageState::NotRequested,
            "pulled for an older revision: not requested for this one"
        );
        assert!(ds_pod(json!([
            need,
            {"type": "PodImageReady", "status": "True", "message": "controllerrevision: old"}
        ]))
        .image_pull_outdated());
        assert!(!ds_pod(json!([
            need,
            {"type": "PodImageReady", "status": "False", "message": "controllerrevision: new"}
        ]))
        .image_pull_outdated());
        assert!(!ds_pod(json!([need])).image_pull_outdated());
        assert_eq!(
            with(
                json!({"type": "PodImageReady", "status": "False", "message": "controllerrevision: new"})
            ),
            ImageState::Pending
        );
    }

    #[test]
    fn available_means_ready_for_min_ready_seconds() {
        let ready_at =
            |t: &str| ds_pod(json!([{"type": "Ready", "status": "True", "lastTransitionTime": t}]));
        // 2027-01-15T08:00:00Z
        let t0: u64 = 1_800_000_000_000;
        let p = ready_at("2027-01-15T08:00:00Z");
        let s = std::time::Duration::from_secs;
        assert!(p.is_available(s(0), t0));
        assert!(!p.is_available(s(10), t0 + 9_999));
        assert!(p.is_available(s(10), t0 + 10_000));
        // No readable transition time: Ready, but not available while min_ready applies.
        let p = ready_at("");
        assert!(p.is_available(s(0), t0));
        assert!(!p.is_available(s(10), t0 + 1_000_000));
        let p = ds_pod(
            json!([{"type": "Ready", "status": "False", "lastTransitionTime": "2027-01-15T08:00:00Z"}]),
        );
        assert!(!p.is_available(s(0), t0));
    }

    #[test]
    fn replacement_needs_old_uid_gone_and_new_pod_ready() {
        let old = ds_pod(json!([{"type": "PodNeedUpgrade", "status": "True"}]));
        let mut new = ds_pod(json!([{"type": "Ready", "status": "False"}]));
        new.metadata.uid = "u2".into();
        let up = |owner_uid| Upgraded {
            uid: "u1",
            owner_uid,
            name: "old-name",
        };
        assert!(replacement(&[old.clone(), new.clone()], up("ds-uid")).is_none());
        assert!(replacement(std::slice::from_ref(&new), up("ds-uid")).is_none());
        new.status.conditions[0].status = "True".into();
        assert_eq!(
            replacement(std::slice::from_ref(&new), up("ds-uid"))
                .unwrap()
                .metadata
                .uid,
            "u2"
        );
        assert!(replacement(std::slice::from_ref(&new), up("other-ds")).is_none());
        // Regression (issue 9, item 3): a replacement that already needs the next revision
        // still finishes the upgrade that made it.
        let mut outdated = new.clone();
        outdated.status.conditions.push(Condition {
            kind: NEED_UPGRADE.into(),
            status: "True".into(),
            reason: String::new(),
            message: "controllerrevision: newer".into(),
            ..Condition::default()
        });
        assert_eq!(
            replacement(std::slice::from_ref(&outdated), up("ds-uid"))
                .unwrap()
                .metadata
                .uid,
            "u2"
        );
        // Static pods: the Node owns them all; only the same name is a successor.
        new.metadata.owner_references[0].kind = "Node".into();
        assert!(replacement(std::slice::from_ref(&new), up("ds-uid")).is_none());
        new.metadata.name = "old-name".into();
        assert!(replacement(std::slice::from_ref(&new), up("ds-uid")).is_some());
    }
}
