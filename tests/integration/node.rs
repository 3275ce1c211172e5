//! A scripted node on loopback that behaves like YurtHub over a DaemonSet rollout: it serves the
//! recorded fixture pods, records every POST with its arrival time, and on an accepted upgrade
//! replaces the pod (new name and uid, same DaemonSet owner) after a delay, Ready or not.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::{fixture_needing_upgrade, free_port, Call};

/// The outdated DaemonSet pods, in the order an automatic rollout takes them.
pub const OUTDATED: [&str; 3] = [
    "kube-system/kindnet-4pxt7",
    "kube-system/kube-proxy-hsdvx",
    "kube-system/node-exporter-7xk2p",
];

pub struct NodeState {
    pub pods: Vec<Value>,
    pub calls: Vec<Call>,
    /// `(due, old pod name)`: replacements not yet made.
    due: Vec<(Instant, String)>,
    /// `(old pod name, when its replacement appeared)`.
    pub replaced: Vec<(String, Instant)>,
    /// From an accepted upgrade until the old pod is gone and the replacement is there. Until
    /// then the old pod is listed unchanged, as YurtHub's cache may still show it.
    pub replace_after: Duration,
    /// Whether replacements are Ready.
    pub ready: bool,
    /// Restart count of replacements (a crash loop when high).
    pub restarts: u32,
    /// The status answered to upgrades of pods that exist and need upgrade.
    pub upgrade_status: u16,
    /// How many of the next replacements come up already needing a newer revision (the cloud
    /// published another one while they started).
    pub outdated_replacements: u32,
    seq: u32,
}

impl NodeState {
    pub fn upgrades(&self) -> Vec<&Call> {
        self.calls
            .iter()
            .filter(|c| c.path.ends_with("/upgrade"))
            .collect()
    }

    fn apply_due(&mut self, now: Instant) {
        let due: Vec<String> = self
            .due
            .iter()
            .filter(|(at, _)| *at <= now)
            .map(|(_, n)| n.clone())
            .collect();
        self.due.retain(|(at, _)| *at > now);
        for name in due {
            let Some(i) = self
                .pods
                .iter()
                .position(|p| p["metadata"]["name"] == name.as_str())
            else {
                continue;
            };
            let mut pod = self.pods.remove(i);
            self.seq += 1;
            let base = name.rsplit_once('-').map_or(name.as_str(), |(b, _)| b);
            let new_name = format!("{base}-r{}", self.seq);
            pod["metadata"]["name"] = json!(new_name);
            pod["metadata"]["uid"] = json!(format!("replacement-uid-{}", self.seq));
            let ready = if self.ready { "True" } else { "False" };
            let conditions = pod["status"]["conditions"].as_array_mut().unwrap();
            if self.outdated_replacements > 0 {
                self.outdated_replacements -= 1;
                for c in conditions.iter_mut() {
                    if c["type"] == "PodNeedUpgrade" {
                        c["message"] = json!("controllerrevision: 8a0d9e7c6");
                    }
                }
            } else {
                conditions.retain(|c| c["type"] != "PodNeedUpgrade");
            }
            for c in conditions.iter_mut() {
                if c["type"] == "Ready" || c["type"] == "ContainersReady" {
                    c["status"] = json!(ready);
                }
            }
            pod["status"]["containerStatuses"][0]["restartCount"] = json!(self.restarts);
            self.pods.push(pod);
            self.replaced.push((name, now));
        }
    }

    fn list(&self) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"},
            "items": self.pods,
        }))
        .unwrap()
    }

    fn post(&mut self, path: &str, now: Instant) -> (u16, String) {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let (ns, name, verb) = match parts.as_slice() {
            ["openyurt.io", "v1", "namespaces", ns, "pods", name, verb] => (*ns, *name, *verb),
            _ => return (404, "404 page not found\n".into()),
        };
        let pod = self
            .pods
            .iter()
            .find(|p| p["metadata"]["name"] == name && p["metadata"]["namespace"] == ns);
        match verb {
            // A YurtHub before v1.7: no pre-pull.
            "imagepull" => (404, "404 page not found\n".into()),
            "upgrade" => {
                let Some(pod) = pod else {
                    return (500, format!("Get pod failed, pods \"{name}\" not found"));
                };
                let offered = pod["status"]["conditions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|c| c["type"] == "PodNeedUpgrade" && c["status"] == "True");
                if !offered {
                    return (403, format!("Pre check update pod failed, Pod: {ns}/{name} update status is False, can not be updated"));
                }
                if self.upgrade_status != 200 {
                    return (self.upgrade_status, "Apply update failed".into());
                }
                if !self.due.iter().any(|(_, n)| n == name) {
                    self.due.push((now + self.replace_after, name.to_owned()));
                }
                (200, format!("Start updating pod {ns}/{name}"))
            }
            _ => (404, "404 page not found\n".into()),
        }
    }
}

/// The v1.36 fixture pods with kindnet and kube-proxy outdated, plus a third DaemonSet pod
/// (node-exporter) cloned from kube-proxy under its own DaemonSet.
fn pods() -> Vec<Value> {
    let list: Value =
        serde_json::from_slice(&fixture_needing_upgrade("1.36", &["kube-proxy", "kindnet"]))
            .unwrap();
    let mut pods = list["items"].as_array().unwrap().clone();
    let mut extra = pods
        .iter()
        .find(|p| p["metadata"]["name"] == "kube-proxy-hsdvx")
        .unwrap()
        .clone();
    extra["metadata"]["name"] = json!("node-exporter-7xk2p");
    extra["metadata"]["uid"] = json!("0d7c2b9e-5b1a-4f5e-9d55-2c7a1f3e8b10");
    extra["metadata"]["ownerReferences"][0]["name"] = json!("node-exporter");
    extra["metadata"]["ownerReferences"][0]["uid"] = json!("e8a1c3f2-6b7d-4e0a-9f1c-3d5b7a9e2c4f");
    pods.push(extra);
    pods
}

pub struct Node {
    pub port: u16,
    pub state: Arc<Mutex<NodeState>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Node {
    pub fn start(replace_after: Duration, ready: bool) -> Node {
        let port = free_port();
        let server = tiny_http::Server::http(("127.0.0.1", port)).unwrap();
        let state = Arc::new(Mutex::new(NodeState {
            pods: pods(),
            calls: Vec::new(),
            due: Vec::new(),
            replaced: Vec::new(),
            replace_after,
            ready,
            restarts: 0,
            upgrade_status: 200,
            outdated_replacements: 0,
            seq: 0,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, flag) = (state.clone(), stop.clone());
        let thread = thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let Ok(Some(mut req)) = server.recv_timeout(Duration::from_millis(20)) else {
                    continue;
                };
                let mut sink = Vec::new();
                let _ = req.as_reader().read_to_end(&mut sink);
                let now = Instant::now();
                let mut s = st.lock().unwrap();
                s.apply_due(now);
                let (status, ct, body) = if req.method() == &tiny_http::Method::Get {
                    (200, "application/json", s.list())
                } else {
                    s.calls.push(Call {
                        method: req.method().to_string(),
                        path: req.url().to_owned(),
                        at: now,
                    });
                    let (status, text) = s.post(req.url(), now);
                    (status, "text/plain; charset=utf-8", text.into_bytes())
                };
                drop(s);
                let header = tiny_http::Header::from_bytes("Content-Type", ct).unwrap();
                let _ = req.respond(
                    tiny_http::Response::from_data(body)
                        .with_status_code(status)
                        .with_header(header),
                );
            }
        });
        Node {
            port,
            state,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut NodeState) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }

    /// The pods the upgrade calls named, in order, as `namespace/name`.
    pub fn upgraded(&self) -> Vec<String> {
        self.with(|s| {
            s.upgrades()
                .iter()
                .map(|c| {
                    let p: Vec<&str> = c.path.split('/').collect();
                    format!("{}/{}", p[4], p[6])
                })
                .collect()
        })
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
