//! The simulated node: pods cloned from real recorded ones, DaemonSets with revisions, and the
//! timing of what follows an upgrade (recreate, become Ready, image pulled). No wire here: the
//! YurtHub answers are in `yurthub`, and another wire (the apiserver's) can sit beside it on the
//! same model.
//!
//! Time moves only when a wire calls `advance(now)`: the model then applies what was due.

use std::collections::VecDeque;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::pod::{check_status, encode, render, set_condition, set_image, set_ready};
use crate::config::SimSettings;
use crate::state::rfc3339;

/// The recorded pod templates the node is cloned from; the apiserver stand-in (apisim/) clones them too.
pub const TEMPLATES: &str = include_str!("templates.json");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    DaemonSet(usize),
    Node,
    ReplicaSet,
}

pub struct DaemonSet {
    pub namespace: &'static str,
    pub name: &'static str,
    pub image: &'static str,
    pub uid: String,
    /// Uses the OTA strategy: its pods carry `PodNeedUpgrade`.
    pub ota: bool,
    pub revision: u32,
}

pub struct SimPod {
    pub json: Value,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub owner: Owner,
    pub deleting: bool,
    /// `PodImageReady`: the hash it was asked for, and whether it is pulled.
    pub image: Option<(String, bool)>,
}

enum Due {
    Replace { uid: String },
    Ready { uid: String },
    ImagePulled { uid: String, hash: String },
}

pub struct Model {
    settings: SimSettings,
    ds_template: Value,
    connected: bool,
    daemonsets: Vec<DaemonSet>,
    pods: Vec<SimPod>,
    due: VecDeque<(Instant, Due)>,
    resource_version: u64,
    names: super::pod::Names,
    /// The rendered `GET /pods` body, dropped on every change.
    rendered: Option<Vec<u8>>,
}

/// `(namespace, name, image repository, OTA, current revision, revision its pod runs)`.
const DAEMONSETS: [(&str, &str, &str, bool, u32, u32); 6] = [
    (
        "kube-system",
        "kube-proxy",
        "registry.k8s.io/kube-proxy",
        true,
        3,
        2,
    ),
    (
        "kube-system",
        "kindnet",
        "docker.io/kindest/kindnetd",
        false,
        1,
        1,
    ),
    (
        "edge-apps",
        "telemetry-agent",
        "registry.example.com/edge/telemetry-agent",
        true,
        5,
        4,
    ),
    (
        "edge-apps",
        "camera-bridge",
        "registry.example.com/edge/camera-bridge",
        true,
        2,
        2,
    ),
    (
        "fleet",
        "can-gateway",
        "registry.example.com/fleet/can-gateway",
        true,
        8,
        7,
    ),
    (
        "fleet",
        "log-shipper",
        "registry.example.com/fleet/log-shipper",
        false,
        1,
        1,
    ),
];

/// Why a delete was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteError {
    NotFound,
    /// The uid precondition named another pod (one recreated under the same name).
    UidMismatch {
        actual: String,
    },
}

/// Why a rollout was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloutError {
    NotFound,
    NotOta,
}

/// A rollout done: the DaemonSet's new revision and hash, and how many pods now need upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollout {
    pub revision: u32,
    pub hash: String,
    pub pods_marked: usize,
}

impl DaemonSet {
    /// The `controller-revision-hash` of `revision` of this DaemonSet.
    pub fn hash(&self, revision: u32) -> String {
        revision_hash(self, revision)
    }

    /// The hash of its current revision.
    pub fn current_hash(&self) -> String {
        revision_hash(self, self.revision)
    }
}

impl SimPod {
    /// YurtHub's pre-check of the pod's own status: not deleting, `PodNeedUpgrade` True.
    pub fn check_status(&self) -> Result<(), String> {
        check_status(self)
    }
}

impl Model {
    pub fn new(settings: SimSettings) -> Model {
        let templates: Value =
            serde_json::from_str(TEMPLATES).expect("embedded templates are JSON");
        let items = templates["items"].as_array().expect("templates hold items");
        let owner_kind = |p: &Value| {
            p["metadata"]["ownerReferences"][0]["kind"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        };
        let ds_template = items
            .iter()
            .find(|p| {
                p["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("kube-proxy"))
            })
            .expect("a DaemonSet template")
            .clone();
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        let mut st = Model {
            settings,
            ds_template,
            connected: true,
            daemonsets: Vec::new(),
            pods: Vec::new(),
            due: VecDeque::new(),
            resource_version: 1000,
            names: super::pod::Names::with_seed(seed),
            rendered: None,
        };
        let now = rfc3339(SystemTime::now());
        // Static (mirror) and ReplicaSet pods, as recorded, moved to this node.
        let template_node = items
            .iter()
            .find_map(|p| p["spec"]["nodeName"].as_str())
            .unwrap_or_default()
            .to_owned();
        for p in items.iter().filter(|p| owner_kind(p) != "DaemonSet") {
            let mut p = p.clone();
            let owner = if owner_kind(&p) == "Node" {
                Owner::Node
            } else {
                Owner::ReplicaSet
            };
            let name = p["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .replace(&template_node, &st.settings.node_name);
            p["metadata"]["name"] = json!(name);
            p["metadata"]["uid"] = json!(st.uid());
            p["spec"]["nodeName"] = json!(st.settings.node_name);
            if owner == Owner::Node {
                p["metadata"]["ownerReferences"][0]["name"] = json!(st.settings.node_name);
            }
            st.pods.push(SimPod {
                namespace: p["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                name,
                uid: p["metadata"]["uid"].as_str().unwrap_or_default().to_owned(),
                json: p,
                owner,
                deleting: false,
                image: None,
            });
        }
        for (i, &(namespace, name, image, ota, current, running)) in DAEMONSETS.iter().enumerate() {
            let uid = st.uid();
            st.daemonsets.push(DaemonSet {
                namespace,
                name,
                image,
                uid,
                ota,
                revision: current,
            });
            let pod = st.new_ds_pod(i, running, true, &now);
            st.pods.push(pod);
        }
        st
    }

    pub fn node_name(&self) -> &str {
        &self.settings.node_name
    }

    pub fn connected(&self) -> bool {
        self.connected
    }

    /// Cuts or restores the node's link to the cloud (`/sim/disconnect`, `/sim/connect`).
    pub fn set_connected(&mut self, connected: bool) {
        self.connected = connected;
    }

    pub fn pods(&self) -> &[SimPod] {
        &self.pods
    }

    pub fn pod(&self, ns: &str, name: &str) -> Option<&SimPod> {
        self.find(ns, name).map(|i| &self.pods[i])
    }

    pub fn daemonsets(&self) -> &[DaemonSet] {
        &self.daemonsets
    }

    /// The change counter: bumped by every change to any pod (the list's resourceVersion).
    pub fn resource_version(&self) -> u64 {
        self.resource_version
    }

    /// The `PodList` JSON, rendered once per change.
    pub fn pod_list(&mut self) -> Vec<u8> {
        let (pods, rv) = (&self.pods, self.resource_version);
        self.rendered
            .get_or_insert_with(|| render(pods, rv))
            .clone()
    }

    /// Deletes pod `ns/name`, gracefully: it is marked deleting now and, if a DaemonSet owns
    /// it, replaced after `recreate_delay` by a pod of the DaemonSet's current revision. With
    /// `uid`, only when the pod still has that uid (a DELETE precondition).
    pub fn delete_pod(
        &mut self,
        now: Instant,
        ns: &str,
        name: &str,
        uid: Option<&str>,
    ) -> Result<(), DeleteError> {
        let i = self.find(ns, name).ok_or(DeleteError::NotFound)?;
        if uid.is_some_and(|u| u != self.pods[i].uid) {
            return Err(DeleteError::UidMismatch {
                actual: self.pods[i].uid.clone(),
            });
        }
        if self.pods[i].deleting {
            return Ok(());
        }
        let uid = self.pods[i].uid.clone();
        self.change(i, |p| {
            p.deleting = true;
            p.json["metadata"]["deletionTimestamp"] = json!(rfc3339(SystemTime::now()));
            p.json["metadata"]["deletionGracePeriodSeconds"] = json!(30);
        });
        self.schedule(now + self.settings.recreate_delay, Due::Replace { uid });
        Ok(())
    }

    /// Asks for the image of the owning DaemonSet's current revision on pod `i` of `pods()`:
    /// `PodImageReady` False now, True after `pull_delay`. `None` when no DaemonSet owns it.
    pub fn request_image(&mut self, now: Instant, ns: &str, name: &str) -> Option<String> {
        let i = self.find(ns, name)?;
        let Owner::DaemonSet(d) = self.pods[i].owner else {
            return None;
        };
        let hash = self.daemonsets[d].current_hash();
        let uid = self.pods[i].uid.clone();
        let h = hash.clone();
        self.change(i, move |p| set_image(p, h, false));
        self.schedule(
            now + self.settings.pull_delay,
            Due::ImagePulled {
                uid,
                hash: hash.clone(),
            },
        );
        Some(hash)
    }

    /// A new revision of DaemonSet `ns/name`: its pods get `PodNeedUpgrade` True.
    pub fn rollout(&mut self, ns: &str, name: &str) -> Result<Rollout, RolloutError> {
        let d = self
            .daemonsets
            .iter()
            .position(|d| d.namespace == ns && d.name == name)
            .ok_or(RolloutError::NotFound)?;
        if !self.daemonsets[d].ota {
            return Err(RolloutError::NotOta);
        }
        self.daemonsets[d].revision += 1;
        let revision = self.daemonsets[d].revision;
        let hash = self.daemonsets[d].current_hash();
        let mut marked = 0;
        for i in 0..self.pods.len() {
            if self.pods[i].owner == Owner::DaemonSet(d) && !self.pods[i].deleting {
                let h = hash.clone();
                self.change(i, move |p| {
                    set_condition(
                        &mut p.json,
                        crate::pod::NEED_UPGRADE,
                        "True",
                        "",
                        &format!("controllerrevision: {h}"),
                    )
                });
                marked += 1;
            }
        }
        Ok(Rollout {
            revision,
            hash,
            pods_marked: marked,
        })
    }

    /// Applies everything that was due by `now`, in order.
    pub fn advance(&mut self, now: Instant) {
        while self.due.front().is_some_and(|(at, _)| *at <= now) {
            let Some((at, due)) = self.due.pop_front() else {
                break;
            };
            match due {
                Due::Replace { uid } => {
                    let Some(i) = self.pods.iter().position(|p| p.uid == uid) else {
                        continue;
                    };
                    let old = self.pods.remove(i);
                    if let Owner::DaemonSet(d) = old.owner {
                        let revision = self.daemonsets[d].revision;
                        let pod = self.new_ds_pod(d, revision, false, &rfc3339(SystemTime::now()));
                        let uid = pod.uid.clone();
                        self.pods.push(pod);
                        self.schedule(at + self.settings.ready_delay, Due::Ready { uid });
                    }
                    self.touch();
                }
                Due::Ready { uid } => {
                    if let Some(i) = self.pods.iter().position(|p| p.uid == uid) {
                        self.change(i, |p| set_ready(&mut p.json, true));
                    }
                }
                Due::ImagePulled { uid, hash } => {
                    if let Some(i) = self.pods.iter().position(|p| p.uid == uid) {
                        self.change(i, move |p| {
                            // A pull for an older revision no longer counts.
                            if p.image.as_ref().is_some_and(|(h, _)| *h == hash) {
                                set_image(p, hash, true);
                            }
                        });
                    }
                }
            }
        }
    }

    /// A pod of DaemonSet `d` at `revision`, cloned from the recorded DaemonSet pod.
    fn new_ds_pod(&mut self, d: usize, revision: u32, ready: bool, now: &str) -> SimPod {
        let ds = &self.daemonsets[d];
        let (ns, ds_name, ds_uid, image) = (
            ds.namespace,
            ds.name,
            ds.uid.clone(),
            format!("{}:v1.{revision}.0", ds.image),
        );
        let pod_hash = revision_hash(ds, revision);
        let current_hash = revision_hash(ds, ds.revision);
        let ota = ds.ota;
        let name = format!("{ds_name}-{}", self.suffix());
        let uid = self.uid();
        let container_id = format!(
            "containerd://{}{}",
            self.uid().replace('-', ""),
            self.uid().replace('-', "")
        );
        let mut p = self.ds_template.clone();
        let m = &mut p["metadata"];
        m["name"] = json!(name);
        m["generateName"] = json!(format!("{ds_name}-"));
        m["namespace"] = json!(ns);
        m["uid"] = json!(uid);
        m["creationTimestamp"] = json!(now);
        m["labels"] = json!({"app": ds_name, "controller-revision-hash": pod_hash, "pod-template-generation": revision.to_string()});
        m["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": ds_name,
                                        "uid": ds_uid, "controller": true, "blockOwnerDeletion": true}]);
        p["spec"]["nodeName"] = json!(self.settings.node_name);
        super::pod::start_container(&mut p, ds_name, &image, &container_id, now);
        set_ready(&mut p, ready);
        if ota {
            let status = if pod_hash == current_hash {
                "False"
            } else {
                "True"
            };
            set_condition(
                &mut p,
                crate::pod::NEED_UPGRADE,
                status,
                "",
                &format!("controllerrevision: {current_hash}"),
            );
        }
        SimPod {
            json: p,
            namespace: ns.to_owned(),
            name,
            uid,
            owner: Owner::DaemonSet(d),
            deleting: false,
            image: None,
        }
    }

    fn find(&self, ns: &str, name: &str) -> Option<usize> {
        self.pods
            .iter()
            .position(|p| p.namespace == ns && p.name == name)
    }

    fn schedule(&mut self, at: Instant, due: Due) {
        let pos = self
            .due
            .iter()
            .position(|(t, _)| *t > at)
            .unwrap_or(self.due.len());
        self.due.insert(pos, (at, due));
    }

    fn touch(&mut self) {
        self.resource_version += 1;
        self.rendered = None;
    }

    /// Changes pod `i` and bumps its resourceVersion.
    fn change(&mut self, i: usize, f: impl FnOnce(&mut SimPod)) {
        self.touch();
        let p = &mut self.pods[i];
        f(p);
        p.json["metadata"]["resourceVersion"] = json!(self.resource_version.to_string());
    }

    fn uid(&mut self) -> String {
        self.names.uid()
    }

    fn suffix(&mut self) -> String {
        self.names.suffix()
    }
}

/// Kubernetes-looking hash of a DaemonSet revision (`controller-revision-hash`).
fn revision_hash(ds: &DaemonSet, revision: u32) -> String {
    // FNV-1a: stable across runs, so a revision always has the same hash.
    use std::hash::Hasher as _;
    let mut h = fnv::FnvHasher::default();
    h.write(format!("{}/{}/{revision}", ds.namespace, ds.name).as_bytes());
    encode(h.finish(), 10)
}
