//! The simulator (SPEC section 8): one node whose pods answer like YurtHub v1.7.
//!
//! - `model`: the node itself (pods cloned from real recorded ones, DaemonSets, revisions, the
//!   timing of recreate, Ready and image pulls), behind a small API any wire can use.
//! - `yurthub`: YurtHub's wire over that model (`GET /pods`, the OTA calls, their checks and
//!   exact answers).
//! - `pod`: edits to a pod's JSON (conditions, readiness, image), the rendered list, names and
//!   dates.
//! - `server`: `yurt-ota sim`, the node served over HTTP.
//!
//! `Node` holds the model under a lock. Time moves only when a request arrives: each call passes
//! "now" and the model first applies what was due by then.

use std::sync::Mutex;
use std::time::Instant;

use serde_json::{json, Value};

use crate::config::SimSettings;

pub mod model;
pub mod pod; // pod JSON edits, also the kube-apiserver stand-in's (apisim/)
pub mod server;
mod yurthub;

use model::{Model, RolloutError};

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

/// The simulated node, shared by the threads that answer for it.
pub struct Node {
    node_name: String,
    model: Mutex<Model>,
}

impl Node {
    pub fn new(settings: SimSettings) -> Node {
        Node {
            node_name: settings.node_name.clone(),
            model: Mutex::new(Model::new(settings)),
        }
    }

    /// The model, after applying what was due by `now`.
    pub fn model(&self, now: Instant) -> std::sync::MutexGuard<'_, Model> {
        // A panic while holding the lock leaves consistent-enough sim state; keep serving.
        let mut m = self.model.lock().unwrap_or_else(|e| e.into_inner());
        m.advance(now);
        m
    }

    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// Answers one request like YurtHub v1.7, plus the `/sim/...` control routes.
    pub fn handle(&self, now: Instant, method: &str, path: &str) -> Answer {
        let mut m = self.model(now);
        let path = path.split('?').next().unwrap_or_default();
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match parts.as_slice() {
            ["sim", ..] => control(&mut m, method, &parts),
            _ => yurthub::handle(&mut m, now, method, &parts),
        }
    }
}

/// The `/sim/...` routes: look at the node, roll a DaemonSet out, cut the cloud link.
fn control(m: &mut Model, method: &str, parts: &[&str]) -> Answer {
    let post = method == "POST";
    match parts {
        ["sim", "rollout", ns, ds] if post => match m.rollout(ns, ds) {
            Ok(r) => Answer::json(
                200,
                json!({"daemonset": format!("{ns}/{ds}"), "revision": r.revision, "hash": r.hash, "pods_marked": r.pods_marked}),
            ),
            Err(RolloutError::NotFound) => Answer::json(
                404,
                json!({"error": "not_found", "message": format!("no DaemonSet {ns}/{ds} on the simulated node")}),
            ),
            Err(RolloutError::NotOta) => Answer::json(
                409,
                json!({"error": "not_ota", "message": format!("DaemonSet {ns}/{ds} does not use the OTA update strategy")}),
            ),
        },
        ["sim", "disconnect"] if post => {
            m.set_connected(false);
            Answer::json(200, json!({"connected": false}))
        }
        ["sim", "connect"] if post => {
            m.set_connected(true);
            Answer::json(200, json!({"connected": true}))
        }
        ["sim"] if method == "GET" => Answer::json(200, describe(m)),
        // gorilla/mux: a known path with another method is a bare 405.
        ["sim"] | ["sim", "rollout", _, _] | ["sim", "disconnect" | "connect"] => {
            Answer::text(405, "")
        }
        _ => Answer::text(404, "404 page not found\n"),
    }
}

fn describe(m: &Model) -> Value {
    let ds: Vec<Value> = m
        .daemonsets()
        .iter()
        .map(|d| {
            json!({"namespace": d.namespace, "name": d.name, "ota": d.ota,
                   "revision": d.revision, "hash": d.current_hash()})
        })
        .collect();
    json!({"node": m.node_name(), "connected": m.connected(), "pods": m.pods().len(), "daemonsets": ds})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::{ImageState, Pod};
    use std::time::Duration;

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

    fn upgrade_path(pod: &str) -> String {
        format!("/openyurt.io/v1/namespaces/edge-apps/pods/{pod}/upgrade")
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
        let (code, body) = post(&node, t0, &upgrade_path(&old.metadata.name));
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
        let (code, body) = post(&node, t0, &upgrade_path(&old.metadata.name));
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

    /// `GET /pods` serves a list rendered once per change: after every kind of change it is
    /// the model rendered afresh, and the change shows in it.
    #[test]
    fn the_cached_pod_list_is_rendered_afresh_after_every_change() {
        let node = Node::new(settings());
        let t0 = Instant::now();
        let list = |at: Instant| {
            let body = node.handle(at, "GET", "/pods").body;
            let m = node.model(at);
            assert_eq!(body, pod::render(m.pods(), m.resource_version()));
            body
        };
        let mut last = list(t0);
        let mut changed = |at: Instant, what: &str| {
            let now = list(at);
            assert_ne!(now, last, "{what} shows in the list");
            last = now;
        };
        let ds = |prefix: &str| find(&pods(&node, t0), prefix).metadata.name.clone();
        assert_eq!(
            post(&node, t0, "/sim/rollout/edge-apps/camera-bridge").0,
            200
        );
        changed(t0, "a rollout");
        let p = ds("kube-proxy");
        let pull = format!("/openyurt.io/v1/namespaces/kube-system/pods/{p}/imagepull");
        assert_eq!(post(&node, t0, &pull).0, 200);
        changed(t0, "an imagepull asked");
        changed(t0 + Duration::from_secs(2), "the image pulled");
        let cam = ds("camera-bridge");
        assert_eq!(post(&node, t0, &upgrade_path(&cam)).0, 200);
        changed(t0, "an upgrade (the pod deleting)");
        changed(t0 + Duration::from_secs(3), "the pod recreated");
        changed(t0 + Duration::from_secs(7), "the new pod Ready");
        // The link to the cloud is not in the pod list: the same bytes, still fresh.
        let before = list(t0 + Duration::from_secs(7));
        assert_eq!(post(&node, t0, "/sim/disconnect").0, 200);
        assert_eq!(list(t0 + Duration::from_secs(8)), before);
        assert_eq!(post(&node, t0, "/sim/connect").0, 200);
        assert_eq!(list(t0 + Duration::from_secs(8)), before);
    }
}
