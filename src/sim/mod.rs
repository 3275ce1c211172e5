//! The YurtHub simulator (SPEC section 8): one node whose pods answer like YurtHub v1.7.
//!
//! Pods are cloned from real pods recorded from a kind cluster (`templates.json`), so they have
//! the full shape of real ones. Time moves only when a request arrives: each call passes "now"
//! and the node first applies what was due by then (recreate, become Ready, image pulled).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::config::SimSettings;

pub mod apiserver; // the kube-apiserver stand-in (`yurt-ota-apisim`)
pub mod server;

const TEMPLATES: &str = include_str!("templates.json");
const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

/// One HTTP answer, as YurtHub would send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Answer {
    fn text(status: u16, body: impl Into<String>) -> Answer {
        Answer {
            status,
            content_type: TEXT,
            body: body.into().into_bytes(),
        }
    }
    /// YurtHub's `WriteJSONResponse`: the JSON header on a bare text body.
    fn ok_text(body: String) -> Answer {
        Answer {
            status: 200,
            content_type: JSON,
            body: body.into_bytes(),
        }
    }
    fn json(status: u16, v: Value) -> Answer {
        Answer {
            status,
            content_type: JSON,
            body: v.to_string().into_bytes(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    DaemonSet(usize),
    Node,
    ReplicaSet,
}

struct DaemonSet {
    namespace: &'static str,
    name: &'static str,
    image: &'static str,
    uid: String,
    /// Uses the OTA strategy: its pods carry `PodNeedUpgrade`.
    ota: bool,
    revision: u32,
}

struct SimPod {
    json: Value,
    namespace: String,
    name: String,
    uid: String,
    owner: Owner,
    deleting: bool,
    /// `PodImageReady`: the hash it was asked for, and whether it is pulled.
    image: Option<(String, bool)>,
}

enum Due {
    Replace { uid: String },
    Ready { uid: String },
    ImagePulled { uid: String, hash: String },
}

struct State {
    connected: bool,
    daemonsets: Vec<DaemonSet>,
    pods: Vec<SimPod>,
    due: VecDeque<(Instant, Due)>,
    resource_version: u64,
    rng: u64,
    /// The rendered `GET /pods` body, dropped on every change.
    rendered: Option<Vec<u8>>,
}

pub struct Node {
    settings: SimSettings,
    ds_template: Value,
    state: Mutex<State>,
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

impl Node {
    pub fn new(settings: SimSettings) -> Node {
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
        let mut st = State {
            connected: true,
            daemonsets: Vec::new(),
            pods: Vec::new(),
            due: VecDeque::new(),
            resource_version: 1000,
            rng: seed,
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
                .replace(&template_node, &settings.node_name);
            p["metadata"]["name"] = json!(name);
            p["metadata"]["uid"] = json!(st.uid());
            p["spec"]["nodeName"] = json!(settings.node_name);
            if owner == Owner::Node {
                p["metadata"]["ownerReferences"][0]["name"] = json!(settings.node_name);
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
        let node = Node {
            settings,
            ds_template,
            state: Mutex::new(st),
        };
        {
            let mut st = node.lock();
            for (i, &(namespace, name, image, ota, current, running)) in
                DAEMONSETS.iter().enumerate()
            {
                let uid = st.uid();
                st.daemonsets.push(DaemonSet {
                    namespace,
                    name,
                    image,
                    uid,
                    ota,
                    revision: current,
                });
                let pod = node.new_ds_pod(&mut st, i, running, true, &now);
                st.pods.push(pod);
            }
        }
        node
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent-enough sim state; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn node_name(&self) -> &str {
        &self.settings.node_name
    }

    /// Answers one request like YurtHub v1.7 (plus the `/sim/...` control routes).
    pub fn handle(&self, now: Instant, method: &str, path: &str) -> Answer {
        let mut st = self.lock();
        self.advance(&mut st, now);
        let path = path.split('?').next().unwrap_or_default();
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let post = method == "POST";
        match parts.as_slice() {
            ["pods"] if method == "GET" => {
                let st = &mut *st;
                let body = st
                    .rendered
                    .get_or_insert_with(|| render(&st.pods, st.resource_version))
                    .clone();
                Answer {
                    status: 200,
                    content_type: JSON,
                    body,
                }
            }
            ["v1", "healthz"] if method == "GET" => Answer::text(200, "OK"),
            ["openyurt.io", "v1", "namespaces", ns, "pods", pod, "upgrade"] if post => {
                self.upgrade(&mut st, now, ns, pod)
            }
            ["openyurt.io", "v1", "namespaces", ns, "pods", pod, "imagepull"] if post => {
                self.imagepull(&mut st, now, ns, pod)
            }
            ["sim", "rollout", ns, ds] if post => self.rollout(&mut st, ns, ds),
            ["sim", "disconnect"] if post => {
                st.connected = false;
                Answer::json(200, json!({"connected": false}))
            }
            ["sim", "connect"] if post => {
                st.connected = true;
                Answer::json(200, json!({"connected": true}))
            }
            ["sim"] if method == "GET" => Answer::json(200, self.describe(&st)),
            // gorilla/mux: a known path with another method is a bare 405.
            ["pods"] | ["v1", "healthz"] | ["sim"] => Answer::text(405, ""),
            ["openyurt.io", "v1", "namespaces", _, "pods", _, "upgrade" | "imagepull"]
            | ["sim", "rollout", _, _]
            | ["sim", "disconnect" | "connect"] => Answer::text(405, ""),
            _ => Answer::text(404, "404 page not found\n"),
        }
    }

    fn describe(&self, st: &State) -> Value {
        let ds: Vec<Value> = st
            .daemonsets
            .iter()
            .map(|d| {
                json!({"namespace": d.namespace, "name": d.name, "ota": d.ota,
                       "revision": d.revision, "hash": revision_hash(d, d.revision)})
            })
            .collect();
        json!({"node": self.settings.node_name, "connected": st.connected, "pods": st.pods.len(), "daemonsets": ds})
    }

    fn upgrade(&self, st: &mut State, now: Instant, ns: &str, pod: &str) -> Answer {
        let i = match st.locate(ns, pod) {
            Ok(i) => i,
            Err(answer) => return answer,
        };
        if let Err(e) = check_status(&st.pods[i]) {
            return Answer::text(403, format!("Pre check update pod failed, Failed to check pod {ns}/{pod} status, error: {e}"));
        }
        let p = &st.pods[i];
        if let Some((hash, pulled)) = &p.image {
            let want = match p.owner {
                Owner::DaemonSet(d) => revision_hash(&st.daemonsets[d], st.daemonsets[d].revision),
                _ => String::new(),
            };
            if !pulled || *hash != want {
                let reason = if *pulled { "PullImageSuccess" } else { "" };
                return Answer::text(
                    403,
                    format!(
                        "Pre check update pod failed, Failed to check pod {ns}/{pod} image ready, error: \
                         Pod: {ns}/{pod} image is not ready, reason: {reason}, message: controllerrevision: {hash}"
                    ),
                );
            }
        }
        match p.owner {
            Owner::DaemonSet(_) => {}
            // The sim has no YurtStaticSet configmaps.
            Owner::Node => return Answer::text(403, "Configmap for static pod does not exist"),
            Owner::ReplicaSet => {
                return Answer::text(400, "Not support ota upgrade pod type ReplicaSet")
            }
        }
        let uid = p.uid.clone();
        st.change(i, |p| {
            p.deleting = true;
            p.json["metadata"]["deletionTimestamp"] = json!(rfc3339(SystemTime::now()));
            p.json["metadata"]["deletionGracePeriodSeconds"] = json!(30);
        });
        st.schedule(now + self.settings.recreate_delay, Due::Replace { uid });
        Answer::ok_text(format!("Start updating pod {ns}/{pod}"))
    }

    fn imagepull(&self, st: &mut State, now: Instant, ns: &str, pod: &str) -> Answer {
        let i = match st.locate(ns, pod) {
            Ok(i) => i,
            Err(answer) => return answer,
        };
        if let Err(e) = check_status(&st.pods[i]) {
            return Answer::text(
                403,
                format!("Failed to check pod status {ns}/{pod}, error: {e}"),
            );
        }
        let Owner::DaemonSet(d) = st.pods[i].owner else {
            return Answer::text(500, "Patch pod status for imagepull failed");
        };
        let hash = revision_hash(&st.daemonsets[d], st.daemonsets[d].revision);
        let uid = st.pods[i].uid.clone();
        let h = hash.clone();
        st.change(i, move |p| set_image(p, h, false));
        st.schedule(
            now + self.settings.pull_delay,
            Due::ImagePulled { uid, hash },
        );
        Answer::ok_text(format!("Image pre-pull requested for pod {ns}/{pod}"))
    }

    fn rollout(&self, st: &mut State, ns: &str, name: &str) -> Answer {
        let Some(d) = st
            .daemonsets
            .iter()
            .position(|d| d.namespace == ns && d.name == name)
        else {
            return Answer::json(
                404,
                json!({"error": "not_found", "message": format!("no DaemonSet {ns}/{name} on the simulated node")}),
            );
        };
        if !st.daemonsets[d].ota {
            return Answer::json(
                409,
                json!({"error": "not_ota", "message": format!("DaemonSet {ns}/{name} does not use the OTA update strategy")}),
            );
        }
        st.daemonsets[d].revision += 1;
        let revision = st.daemonsets[d].revision;
        let hash = revision_hash(&st.daemonsets[d], revision);
        let mut marked = 0;
        for i in 0..st.pods.len() {
            if st.pods[i].owner == Owner::DaemonSet(d) && !st.pods[i].deleting {
                let h = hash.clone();
                st.change(i, move |p| {
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
        Answer::json(
            200,
            json!({"daemonset": format!("{ns}/{name}"), "revision": revision, "hash": hash, "pods_marked": marked}),
        )
    }

    /// Applies everything that was due by `now`, in order.
    fn advance(&self, st: &mut State, now: Instant) {
        while st.due.front().is_some_and(|(at, _)| *at <= now) {
            let Some((at, due)) = st.due.pop_front() else {
                break;
            };
            match due {
                Due::Replace { uid } => {
                    let Some(i) = st.pods.iter().position(|p| p.uid == uid) else {
                        continue;
                    };
                    let old = st.pods.remove(i);
                    if let Owner::DaemonSet(d) = old.owner {
                        let revision = st.daemonsets[d].revision;
                        let pod =
                            self.new_ds_pod(st, d, revision, false, &rfc3339(SystemTime::now()));
                        let uid = pod.uid.clone();
                        st.pods.push(pod);
                        st.schedule(at + self.settings.ready_delay, Due::Ready { uid });
                    }
                    st.touch();
                }
                Due::Ready { uid } => {
                    if let Some(i) = st.pods.iter().position(|p| p.uid == uid) {
                        st.change(i, |p| set_ready(&mut p.json, true));
                    }
                }
                Due::ImagePulled { uid, hash } => {
                    if let Some(i) = st.pods.iter().position(|p| p.uid == uid) {
                        st.change(i, move |p| {
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
    fn new_ds_pod(
        &self,
        st: &mut State,
        d: usize,
        revision: u32,
        ready: bool,
        now: &str,
    ) -> SimPod {
        let ds = &st.daemonsets[d];
        let (ns, ds_name, ds_uid, image) = (
            ds.namespace,
            ds.name,
            ds.uid.clone(),
            format!("{}:v1.{revision}.0", ds.image),
        );
        let pod_hash = revision_hash(ds, revision);
        let current_hash = revision_hash(ds, ds.revision);
        let ota = ds.ota;
        let name = format!("{ds_name}-{}", st.suffix());
        let uid = st.uid();
        let container_id = format!(
            "containerd://{}{}",
            st.uid().replace('-', ""),
            st.uid().replace('-', "")
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
        p["spec"]["containers"][0]["name"] = json!(ds_name);
        p["spec"]["containers"][0]["image"] = json!(image);
        p["status"]["startTime"] = json!(now);
        let cs = &mut p["status"]["containerStatuses"][0];
        cs["name"] = json!(ds_name);
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
}

impl State {
    fn find(&self, ns: &str, name: &str) -> Option<usize> {
        self.pods
            .iter()
            .position(|p| p.namespace == ns && p.name == name)
    }

    /// What YurtHub checks before either OTA call: the cloud is reachable, the pod exists.
    fn locate(&self, ns: &str, name: &str) -> Result<usize, Answer> {
        if !self.connected {
            return Err(Answer::text(
                503,
                "OTA upgrade is not allowed when node is disconnected to cloud",
            ));
        }
        self.find(ns, name)
            .ok_or_else(|| Answer::text(500, format!("Get pod failed, pods \"{name}\" not found")))
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

    fn next(&mut self) -> u64 {
        // xorshift64: names and uids only need to look random, not be unpredictable.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn uid(&mut self) -> String {
        let (a, b) = (self.next(), self.next());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            (b >> 48) & 0x3fff | 0x8000,
            b & 0xffff_ffff_ffff
        )
    }

    fn suffix(&mut self) -> String {
        let n = self.next();
        encode(n, 5)
    }
}

/// YurtHub's pre-check of the pod's own status.
fn check_status(p: &SimPod) -> Result<(), String> {
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

fn set_condition(pod: &mut Value, kind: &str, status: &str, reason: &str, message: &str) {
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
fn set_image(p: &mut SimPod, hash: String, pulled: bool) {
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

fn set_ready(pod: &mut Value, ready: bool) {
    let status = if ready { "True" } else { "False" };
    for c in pod["status"]["conditions"]
        .as_array_mut()
        .into_iter()
        .flatten()
    {
        if c["type"] == "Ready" || c["type"] == "ContainersReady" {
            c["status"] = json!(status);
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

fn render(pods: &[SimPod], resource_version: u64) -> Vec<u8> {
    let items: Vec<&Value> = pods.iter().map(|p| &p.json).collect();
    serde_json::to_vec(&json!({"kind": "PodList", "apiVersion": "v1",
                               "metadata": {"resourceVersion": resource_version.to_string()}, "items": items}))
    .expect("serializable")
}

/// Kubernetes-looking hash of a DaemonSet revision (`controller-revision-hash`).
fn revision_hash(ds: &DaemonSet, revision: u32) -> String {
    // FNV-1a: stable across runs, so a revision always has the same hash.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in format!("{}/{}/{revision}", ds.namespace, ds.name).bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    encode(h, 10)
}

/// Kubernetes' "safe" alphabet for generated names (no vowels, no look-alikes).
fn encode(mut n: u64, len: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..len)
        .map(|_| {
            let c = ALPHABET[(n % ALPHABET.len() as u64) as usize] as char;
            n /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

/// `2026-11-25T17:44:01Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::{ImageState, Pod};

    fn settings() -> SimSettings {
        SimSettings {
            node_name: "sim-node-1".into(),
            recreate_delay: Duration::from_secs(3),
            ready_delay: Duration::from_secs(4),
            pull_delay: Duration::from_secs(2),
        }
    }

    fn pods(node: &Node, at: Instant) -> Vec<Pod> {
        let a = node.handle(at, "GET", "/pods");
        assert_eq!((a.status, a.content_type), (200, JSON));
        crate::snapshot::Snapshot::build(&a.body).unwrap().pods
    }

    fn find<'a>(pods: &'a [Pod], prefix: &str) -> &'a Pod {
        pods.iter()
            .find(|p| p.metadata.name.starts_with(prefix))
            .unwrap()
    }

    fn post(node: &Node, at: Instant, path: &str) -> (u16, String) {
        let a = node.handle(at, "POST", path);
        (a.status, String::from_utf8(a.body).unwrap())
    }

    #[test]
    fn starts_with_every_owner_kind_and_three_outdated_daemonsets() {
        let node = Node::new(settings());
        let pods = pods(&node, Instant::now());
        let count = |k: &str| pods.iter().filter(|p| p.owner().unwrap().kind == k).count();
        assert_eq!(
            (count("DaemonSet"), count("Node"), count("ReplicaSet")),
            (6, 4, 2)
        );
        let mut outdated: Vec<String> = pods
            .iter()
            .filter(|p| p.needs_upgrade())
            .map(Pod::key)
            .collect();
        outdated.sort();
        assert_eq!(outdated.len(), 3);
        assert!(
            outdated[0].starts_with("edge-apps/telemetry-agent-"),
            "{outdated:?}"
        );
        assert!(pods
            .iter()
            .all(|p| p.spec.node_name == "sim-node-1" && p.is_ready()));
        let statics: Vec<&Pod> = pods
            .iter()
            .filter(|p| p.owner().unwrap().kind == "Node")
            .collect();
        assert!(statics
            .iter()
            .all(|p| p.metadata.name.ends_with("-sim-node-1")));
        let proxy = find(&pods, "kube-proxy");
        assert!(proxy.target_revision().is_some());
        assert!(proxy.spec.containers[0].image.ends_with(":v1.2.0"));
    }

    #[test]
    fn upgrade_deletes_then_recreates_then_becomes_ready() {
        let node = Node::new(settings());
        let t0 = Instant::now();
        let before = pods(&node, t0);
        let old = find(&before, "telemetry-agent").clone();
        let owner = old.owner().unwrap().uid.clone();
        let (code, body) = post(
            &node,
            t0,
            &format!(
                "/openyurt.io/v1/namespaces/edge-apps/pods/{}/upgrade",
                old.metadata.name
            ),
        );
        assert_eq!(
            (code, body.as_str()),
            (
                200,
                format!("Start updating pod edge-apps/{}", old.metadata.name).as_str()
            )
        );
        assert_eq!(node.handle(t0, "POST", "/x").content_type, TEXT);

        let deleting = pods(&node, t0 + Duration::from_secs(1));
        assert!(find(&deleting, "telemetry-agent").is_deleting());
        let (code, body) = post(
            &node,
            t0,
            &format!(
                "/openyurt.io/v1/namespaces/edge-apps/pods/{}/upgrade",
                old.metadata.name
            ),
        );
        assert_eq!(code, 403);
        assert!(body.contains("is deleting, can not be updated"), "{body}");

        let upgraded = crate::pod::Upgraded {
            uid: &old.metadata.uid,
            owner_uid: &owner,
            name: &old.metadata.name,
        };
        let recreated = pods(&node, t0 + Duration::from_secs(3));
        let new = find(&recreated, "telemetry-agent");
        assert_ne!(new.metadata.uid, old.metadata.uid);
        assert_ne!(new.metadata.name, old.metadata.name);
        assert!(new.spec.containers[0].image.ends_with(":v1.5.0"));
        assert!(!new.is_ready() && !new.upgrade_offered());
        assert!(crate::pod::replacement(&recreated, upgraded).is_none());

        let ready = pods(&node, t0 + Duration::from_secs(7));
        let replaced = crate::pod::replacement(&ready, upgraded).unwrap();
        assert_eq!(replaced.metadata.uid, new.metadata.uid);
    }

    #[test]
    fn yurthub_errors() {
        let node = Node::new(settings());
        let t = Instant::now();
        let all = pods(&node, t);
        let up = |ns: &str, p: &str| {
            post(
                &node,
                t,
                &format!("/openyurt.io/v1/namespaces/{ns}/pods/{p}/upgrade"),
            )
        };
        assert_eq!(
            up("edge-apps", "nope"),
            (500, "Get pod failed, pods \"nope\" not found".into())
        );
        let current = find(&all, "camera-bridge");
        let (code, body) = up("edge-apps", &current.metadata.name);
        assert_eq!(code, 403);
        assert!(
            body.starts_with(
                "Pre check update pod failed, Failed to check pod edge-apps/camera-bridge-"
            ),
            "{body}"
        );
        assert!(
            body.ends_with("update status is False, can not be updated"),
            "{body}"
        );
        let (code, _) = up("kube-system", &find(&all, "coredns").metadata.name);
        assert_eq!(code, 403);

        assert_eq!(post(&node, t, "/sim/disconnect").0, 200);
        let outdated = find(&all, "can-gateway");
        assert_eq!(
            up("fleet", &outdated.metadata.name),
            (
                503,
                "OTA upgrade is not allowed when node is disconnected to cloud".into()
            )
        );
        assert_eq!(
            node.handle(t, "GET", "/pods").status,
            200,
            "the list works offline"
        );
        assert_eq!(post(&node, t, "/sim/connect").0, 200);
        assert_eq!(up("fleet", &outdated.metadata.name).0, 200);

        assert_eq!(node.handle(t, "GET", "/nope").body, b"404 page not found\n");
        assert_eq!(node.handle(t, "DELETE", "/pods").status, 405);
        assert_eq!(node.handle(t, "GET", "/v1/healthz").body, b"OK");
    }

    #[test]
    fn imagepull_then_upgrade_is_gated_on_the_image() {
        let node = Node::new(settings());
        let t0 = Instant::now();
        let p = find(&pods(&node, t0), "kube-proxy").metadata.name.clone();
        let (code, body) = post(
            &node,
            t0,
            &format!("/openyurt.io/v1/namespaces/kube-system/pods/{p}/imagepull"),
        );
        assert_eq!(
            (code, body),
            (
                200,
                format!("Image pre-pull requested for pod kube-system/{p}")
            )
        );
        assert_eq!(
            find(&pods(&node, t0), "kube-proxy").image_state(),
            ImageState::Pending
        );
        let (code, body) = post(
            &node,
            t0,
            &format!("/openyurt.io/v1/namespaces/kube-system/pods/{p}/upgrade"),
        );
        assert_eq!(code, 403);
        assert!(body.contains("image is not ready"), "{body}");
        let later = t0 + Duration::from_secs(2);
        assert_eq!(
            find(&pods(&node, later), "kube-proxy").image_state(),
            ImageState::Ready
        );
        assert_eq!(
            post(
                &node,
                later,
                &format!("/openyurt.io/v1/namespaces/kube-system/pods/{p}/upgrade")
            )
            .0,
            200
        );
    }

    #[test]
    fn rollout_marks_a_current_daemonset() {
        let node = Node::new(settings());
        let t = Instant::now();
        assert!(!find(&pods(&node, t), "camera-bridge").needs_upgrade());
        let (code, body) = post(&node, t, "/sim/rollout/edge-apps/camera-bridge");
        assert_eq!(code, 200, "{body}");
        let p = pods(&node, t);
        let cam = find(&p, "camera-bridge");
        assert!(cam.needs_upgrade());
        assert_eq!(
            cam.target_revision().unwrap(),
            serde_json::from_str::<Value>(&body).unwrap()["hash"]
        );
        assert_eq!(post(&node, t, "/sim/rollout/kube-system/kindnet").0, 409);
        assert_eq!(post(&node, t, "/sim/rollout/nope/nope").0, 404);
    }

    #[test]
    fn dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_628_641)),
            "2026-11-25T17:44:01Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
    }
}
