//! A kube-apiserver stand-in (SPEC 2b; issue 10 item 7): the subset of the apiserver the agent
//! uses, over HTTPS, with a small DaemonSet controller behind it. Several nodes, each with the
//! recorded kind pods (static, ReplicaSet) and one pod per DaemonSet.
//!
//! - `cluster` (this file): the objects, rollouts and annotations, the record of DELETEs, Ready
//!   pods and Lease writes (`history`);
//! - `controller`: DaemonSet recreation, status, optionally OpenYurt's `PodNeedUpgrade`/pre-pull;
//! - `rest`: the REST answers;
//! - `store`: objects, resourceVersions, event history and compaction, wire shapes;
//! - `tls`: the generated CA, certificates and kubeconfig;
//! - `server`: TLS sockets, authentication; `watch`: chunked watches; `control`: the `/sim/...`
//!   port.
//!
//! Time moves on a ticker thread (`server`), so watches see recreations as they happen.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

mod control;
mod controller;
mod discovery;
mod history;
pub mod labels;
mod objects;
pub mod rbac;
mod rest;
pub mod server;
pub mod store;
pub mod tls;
mod validate;
mod watch;

pub use rest::{percent_decode, query_value};

use controller::{controller_revision, hash};
use store::{details, status, Res, Selector, Store};
use yurt_ota::sim::pod::{encode, set_condition, set_ready};
use yurt_ota::state::rfc3339;

const TEMPLATES: &str = yurt_ota::sim::model::TEMPLATES;
const JSON: &str = "application/json";
pub const STRATEGY: &str = "apps.openyurt.io/update-strategy";
pub const MAX_UNAVAILABLE: &str = "apps.openyurt.io/max-unavailable";
pub const TEMPLATE_GENERATION: &str = "deprecated.daemonset.template.generation";

/// How the stand-in behaves.
#[derive(Debug, Clone)]
pub struct Options {
    pub nodes: Vec<String>,
    /// A deleted pod's termination (deletionTimestamp set) until it is gone.
    pub grace: Duration,
    /// A DaemonSet pod gone until the controller creates its replacement.
    pub recreate_delay: Duration,
    /// A created pod until it is Ready.
    pub ready_delay: Duration,
    /// A DaemonSet spec change until `status.observedGeneration` catches up.
    pub observe_delay: Duration,
    /// Also play OpenYurt's DaemonSet upgrade controller: `PodNeedUpgrade` on the pods of OTA
    /// DaemonSets, and the pre-pull (`PodImageReady` flips to True after `pull_delay`).
    pub openyurt: bool,
    pub pull_delay: Duration,
    /// Extra ReplicaSet pods per node (to reach, say, 110 pods a node).
    pub filler: usize,
    /// Events kept for watches; older resourceVersions answer 410.
    pub history: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            nodes: vec!["edge-node-1".into()],
            grace: Duration::from_secs(1),
            recreate_delay: Duration::from_secs(2),
            ready_delay: Duration::from_secs(3),
            observe_delay: Duration::from_millis(500),
            openyurt: false,
            pull_delay: Duration::from_secs(2),
            filler: 0,
            history: 1000,
        }
    }
}

/// `(namespace, name, image repository, strategy annotation, max-unavailable, current version,
/// version its pods run)`. Versions below the current one exist as older ControllerRevisions.
type DsSeed = (
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    u32,
    u32,
);
const DAEMONSETS: [DsSeed; 5] = [
    (
        "kube-system",
        "kube-proxy",
        "registry.k8s.io/kube-proxy",
        Some("OTA"),
        None,
        3,
        2,
    ),
    (
        "kube-system",
        "kindnet",
        "docker.io/kindest/kindnetd",
        None,
        None,
        1,
        1,
    ),
    (
        "edge-apps",
        "telemetry-agent",
        "registry.example.com/edge/telemetry-agent",
        Some("AdvancedRollingUpdate"),
        Some("2"),
        5,
        5,
    ),
    (
        "edge-apps",
        "camera-bridge",
        "registry.example.com/edge/camera-bridge",
        Some("OTA"),
        None,
        2,
        2,
    ),
    (
        "fleet",
        "can-gateway",
        "registry.example.com/fleet/can-gateway",
        Some("OTA"),
        Some("1"),
        8,
        7,
    ),
];

struct Revision {
    hash: String,
    /// The image tag `v1.{version}.0` of this template.
    version: u32,
    revision: u64,
    /// Published with `?broken=1`: its pods never become Ready (a broken image).
    broken: bool,
    /// Published with `?flaky=1`: its pods become Ready, then crash (Ready False, restarts)
    /// after `ready_delay` more: a failure that `spec.minReadySeconds` is there to catch.
    flaky: bool,
}

struct Ds {
    ns: String,
    name: String,
    uid: String,
    image: String,
    on_delete: bool,
    annotations: Value,
    generation: u64,
    observed: u64,
    template_generation: u64,
    revisions: Vec<Revision>,
    created: String,
    /// `spec.minReadySeconds` (`POST /sim/min-ready/NS/DS?seconds=N`).
    min_ready_seconds: u32,
    /// The most nodes whose pod of it was unavailable (not Ready, deleting or missing) at
    /// once, since the start: tests assert the budget from it.
    peak_unavailable: usize,
}

impl Ds {
    fn current(&self) -> &Revision {
        self.revisions
            .iter()
            .max_by_key(|r| r.revision)
            .expect("a DaemonSet has a revision")
    }
    fn ota(&self) -> bool {
        self.on_delete
            && self.annotations[STRATEGY]
                .as_str()
                .is_some_and(|s| s.eq_ignore_ascii_case("ota"))
    }
}

enum Due {
    Gone {
        ns: String,
        name: String,
        uid: String,
    },
    Create {
        ds: usize,
        node: String,
    },
    Ready {
        ns: String,
        name: String,
        uid: String,
    },
    Observe {
        ds: usize,
    },
    Pulled {
        ns: String,
        name: String,
        uid: String,
        hash: String,
    },
    /// A pod of a flaky revision crashes.
    Crash {
        ns: String,
        name: String,
        uid: String,
    },
}

struct Inner {
    store: Store,
    dss: Vec<Ds>,
    due: Vec<(Instant, Due)>,
    names: yurt_ota::sim::pod::Names,
    /// What happened, in order (`GET /sim/history`): every pod DELETE, every DaemonSet pod
    /// turned Ready, every Lease write, each with its wall-clock time; the newest
    /// `HISTORY_KEPT` (a stand-in left running does not grow without bound).
    history: std::collections::VecDeque<Value>,
    /// The sequence number of the next entry.
    next_seq: u64,
}

/// What the HTTP layer sends.
pub enum Reply {
    Full {
        status: u16,
        content_type: &'static str,
        body: Vec<u8>,
    },
    Watch(Watch),
}

/// A watch to stream: events of `res` matching `sel`, after `from` (None: the current state
/// first, as ADDED events).
#[derive(Debug, Clone)]
pub struct Watch {
    pub res: Res,
    pub sel: Selector,
    pub from: Option<u64>,
    pub initial_events: bool,
    pub bookmarks: bool,
    pub timeout: Duration,
}

pub struct Cluster {
    opts: Options,
    ds_template: Value,
    node_templates: Vec<Value>,
    inner: Mutex<Inner>,
    /// Notified on every change (watches and the ticker wait on it).
    pub changed: Condvar,
}

fn json_reply(status: u16, v: &Value) -> Reply {
    Reply::Full {
        status,
        content_type: JSON,
        body: v.to_string().into_bytes(),
    }
}

pub fn status_reply(code: u16, reason: &str, message: &str, det: Option<Value>) -> Reply {
    json_reply(code, &status(code, reason, message, det))
}

fn not_found(res: Res, name: &str) -> Reply {
    status_reply(
        404,
        "NotFound",
        &format!("{} \"{name}\" not found", res.qualified()),
        Some(details(res, name)),
    )
}

impl Cluster {
    pub fn new(opts: Options) -> Cluster {
        let templates: Value = serde_json::from_str(TEMPLATES).expect("embedded templates");
        let items = templates["items"].as_array().expect("templates hold items");
        let owner = |p: &Value| p["metadata"]["ownerReferences"][0]["kind"].clone();
        let ds_template = items
            .iter()
            .find(|p| {
                p["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("kube-proxy"))
            })
            .expect("a DaemonSet pod template")
            .clone();
        let node_templates = items
            .iter()
            .filter(|p| owner(p) != "DaemonSet")
            .cloned()
            .collect();
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        let c = Cluster {
            ds_template,
            node_templates,
            inner: Mutex::new(Inner {
                store: Store::new(1000, opts.history.max(1)),
                dss: Vec::new(),
                due: Vec::new(),
                names: yurt_ota::sim::pod::Names::with_seed(seed),
                history: Default::default(),
                next_seq: 0,
            }),
            changed: Condvar::new(),
            opts,
        };
        c.populate();
        c
    }

    pub fn options(&self) -> &Options {
        &self.opts
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes a new template (`undo`: back to the previous revision's template, whose
    /// ControllerRevision is reused with a bumped `.revision`, as `kubectl rollout undo` does).
    /// `broken`/`flaky`: a new template whose pods never become Ready, or crash after they did
    /// (see `Revision`).
    pub fn rollout(
        &self,
        ns: &str,
        name: &str,
        undo: bool,
        broken: bool,
        flaky: bool,
    ) -> Result<Value, (u16, String)> {
        let mut st = self.lock();
        let st = &mut *st;
        let Some(d) = st.dss.iter().position(|d| d.ns == ns && d.name == name) else {
            return Err((404, format!("no DaemonSet {ns}/{name}")));
        };
        let ds = &mut st.dss[d];
        let top = ds.current().revision;
        let r = if undo {
            let Some(prev) = ds
                .revisions
                .iter()
                .enumerate()
                .filter(|(_, r)| r.revision < top)
                .max_by_key(|(_, r)| r.revision)
                .map(|(i, _)| i)
            else {
                return Err((
                    409,
                    format!("DaemonSet {ns}/{name} has no previous revision"),
                ));
            };
            ds.revisions[prev].revision = top + 1;
            prev
        } else {
            let version = ds.revisions.iter().map(|r| r.version).max().unwrap_or(0) + 1;
            ds.revisions.push(Revision {
                hash: hash(ns, name, version),
                version,
                revision: top + 1,
                broken,
                flaky,
            });
            ds.revisions.len() - 1
        };
        ds.generation += 1;
        ds.template_generation = ds.generation;
        ds.annotations[TEMPLATE_GENERATION] = json!(ds.generation.to_string());
        let out = json!({"daemonset": format!("{ns}/{name}"), "generation": ds.generation,
                         "revision": ds.revisions[r].revision, "hash": ds.revisions[r].hash,
                         "broken": ds.revisions[r].broken, "flaky": ds.revisions[r].flaky,
                         "image": format!("{}:v1.{}.0", ds.image, ds.revisions[r].version)});
        let cr = controller_revision(&st.dss[d], r);
        st.store.put(Res::ControllerRevisions, cr);
        self.write_ds(st, d);
        st.due.push((
            Instant::now() + self.opts.observe_delay,
            Due::Observe { ds: d },
        ));
        self.changed.notify_all();
        Ok(out)
    }

    /// Sets a DaemonSet annotation (strategy, budget) as `kubectl annotate` would.
    pub fn annotate(
        &self,
        ns: &str,
        name: &str,
        key: &str,
        value: Option<&str>,
    ) -> Result<(), String> {
        let mut st = self.lock();
        let Some(d) = st.dss.iter().position(|d| d.ns == ns && d.name == name) else {
            return Err(format!("no DaemonSet {ns}/{name}"));
        };
        match value {
            Some(v) => st.dss[d].annotations[key] = json!(v),
            None => {
                st.dss[d].annotations.as_object_mut().map(|m| m.remove(key));
            }
        }
        // OpenYurt's strategies need OnDelete: set it too, a spec change (generation + 1).
        if key == STRATEGY && value.is_some() && !st.dss[d].on_delete {
            st.dss[d].on_delete = true;
            st.dss[d].generation += 1;
            st.due.push((
                Instant::now() + self.opts.observe_delay,
                Due::Observe { ds: d },
            ));
        }
        self.write_ds(&mut st, d);
        if self.opts.openyurt {
            self.mark_pods(&mut st, d);
        }
        self.changed.notify_all();
        Ok(())
    }

    /// Sets `spec.minReadySeconds` of a DaemonSet (a spec change, as `kubectl patch` makes).
    pub fn set_min_ready(&self, ns: &str, name: &str, seconds: u32) -> Result<(), String> {
        let mut st = self.lock();
        let Some(d) = st.dss.iter().position(|d| d.ns == ns && d.name == name) else {
            return Err(format!("no DaemonSet {ns}/{name}"));
        };
        st.dss[d].min_ready_seconds = seconds;
        st.dss[d].generation += 1;
        st.dss[d].observed = st.dss[d].generation;
        self.write_ds(&mut st, d);
        self.changed.notify_all();
        Ok(())
    }

    /// `count` rounds of the kubelets' node heartbeats: each node's Lease in `kube-node-lease`
    /// renewed, as every 10 s on a real cluster. Writes that touch nothing the agent reads,
    /// yet move the window of versions a watch can start from (`Options::history`).
    pub fn heartbeat(&self, count: u32) -> u64 {
        let mut st = self.lock();
        for _ in 0..count {
            for node in &self.opts.nodes {
                let now = rfc3339(SystemTime::now());
                let lease = json!({
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": node, "namespace": "kube-node-lease"},
                    "spec": {"holderIdentity": node, "leaseDurationSeconds": 40, "renewTime": now},
                });
                st.store.put(Res::Leases, lease);
            }
        }
        self.changed.notify_all();
        st.store.rv
    }

    /// `count` more ReplicaSet pods on each node, each padded with an annotation of `bytes`
    /// bytes: what one with the right to create pods can make a node's agent hold (issue 23).
    pub fn flood(&self, count: usize, bytes: usize) -> u64 {
        let template = self
            .node_templates
            .iter()
            .find(|t| owner_kind(t) == "ReplicaSet")
            .cloned();
        let mut st = self.lock();
        if let Some(t) = template {
            for node in &self.opts.nodes {
                for i in 0..count {
                    let mut pod = self.node_pod(&mut st, &t, node, Some(i));
                    let name = format!("flood-{}", st.suffix());
                    pod["metadata"]["name"] = json!(name);
                    pod["metadata"]["annotations"]["yurt-ota.test/padding"] =
                        json!("x".repeat(bytes));
                    st.store.put(Res::Pods, pod);
                }
            }
        }
        self.changed.notify_all();
        st.store.rv
    }

    pub fn compact(&self) {
        self.lock().store.compact();
        self.changed.notify_all();
    }

    /// A summary for `GET /sim`.
    pub fn describe(&self) -> Value {
        let st = self.lock();
        let dss: Vec<Value> = st
            .dss
            .iter()
            .map(|d| {
                let c = d.current();
                json!({"namespace": d.ns, "name": d.name, "generation": d.generation,
                       "observedGeneration": d.observed, "revision": c.revision, "hash": c.hash,
                       "annotations": d.annotations, "minReadySeconds": d.min_ready_seconds,
                       "peakUnavailable": d.peak_unavailable})
            })
            .collect();
        json!({"nodes": self.opts.nodes, "resourceVersion": st.store.rv.to_string(),
               "compacted": st.store.compacted.to_string(),
               "pods": st.store.list(Res::Pods, None).count(), "daemonsets": dss})
    }

    /// For a watch: the events after `from` matching, the current resourceVersion, whether
    /// `from` is expired, and the compaction epoch.
    pub fn events_after(&self, w: &Watch, from: u64) -> (Vec<Vec<u8>>, u64, bool, u64) {
        let st = self.lock();
        if from < st.store.compacted {
            return (Vec::new(), st.store.rv, true, st.store.epoch);
        }
        let lines = st
            .store
            .history
            .iter()
            .filter(|e| e.rv > from && e.res == w.res)
            .filter_map(|e| e.seen_by(&w.sel))
            .map(|(kind, o)| store::event_line(kind, w.res, &o))
            .collect();
        (lines, st.store.rv, false, st.store.epoch)
    }

    /// The current objects as ADDED events, and the resourceVersion they are at.
    pub fn initial(&self, w: &Watch) -> (Vec<Vec<u8>>, u64, u64) {
        let st = self.lock();
        let lines = st
            .store
            .list(w.res, None)
            .filter(|o| w.sel.matches(o))
            .map(|o| store::event_line("ADDED", w.res, o))
            .collect();
        (lines, st.store.rv, st.store.epoch)
    }

    pub fn compacted(&self) -> u64 {
        self.lock().store.compacted
    }

    /// Waits for a change, at most `timeout`.
    pub fn wait(&self, seen_rv: u64, seen_epoch: u64, timeout: Duration) {
        let st = self.lock();
        if st.store.rv != seen_rv || st.store.epoch != seen_epoch {
            return;
        }
        let _ = self.changed.wait_timeout(st, timeout);
    }
}

impl Inner {
    fn uid(&mut self) -> String {
        self.names.uid()
    }

    fn suffix(&mut self) -> String {
        self.names.suffix()
    }
}

fn owner_kind(p: &Value) -> &str {
    p["metadata"]["ownerReferences"][0]["kind"]
        .as_str()
        .unwrap_or_default()
}

fn is_ready(p: &Value) -> bool {
    p["metadata"]["deletionTimestamp"].is_null() && condition(p, "Ready")["status"] == "True"
}

/// The DaemonSet controller's `IsPodUpdated`: template generation or the current hash.
fn is_updated(p: &Value, ds: &Ds) -> bool {
    let l = &p["metadata"]["labels"];
    l["pod-template-generation"] == ds.template_generation.to_string().as_str()
        || l["controller-revision-hash"] == ds.current().hash.as_str()
}

fn condition<'a>(p: &'a Value, kind: &str) -> &'a Value {
    p["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind))
        .unwrap_or(&Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_per_node_with_filler() {
        let c = Cluster::new(Options {
            nodes: vec!["a".into(), "b".into()],
            filler: 99,
            ..Options::default()
        });
        let Reply::Full { status, body, .. } =
            c.handle("GET", "/api/v1/pods?fieldSelector=spec.nodeName=b", "", b"")
        else {
            panic!("a list");
        };
        assert_eq!(status, 200);
        let snap = yurt_ota::snapshot::Snapshot::build(&body).unwrap();
        assert_eq!(
            snap.pods.len(),
            110,
            "5 DaemonSet, 4 static, 2 ReplicaSet and 99 filler pods"
        );
        assert!(snap.pods.iter().all(|p| p.spec.node_name == "b"));
        let mut names: Vec<&str> = snap.pods.iter().map(|p| p.metadata.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 110, "unique names");
    }

    #[test]
    fn deletes_and_lease_writes_are_recorded_in_order() {
        let c = Cluster::new(Options::default());
        let Reply::Full { body, .. } = c.handle(
            "GET",
            "/api/v1/namespaces/edge-apps/pods?labelSelector=app%3Dtelemetry-agent",
            "",
            b"",
        ) else {
            panic!("a list");
        };
        let list: Value = serde_json::from_slice(&body).unwrap();
        let pod = list["items"][0]["metadata"]["name"].as_str().unwrap();
        let path = format!("/api/v1/namespaces/edge-apps/pods/{pod}");
        c.handle("DELETE", &path, "", b"");
        c.handle("DELETE", &path, "", b""); // terminating already: not a second DELETE
        let lease = br#"{"metadata":{"name":"l"},"spec":{"holderIdentity":"edge-node-1"}}"#;
        c.handle(
            "POST",
            "/apis/coordination.k8s.io/v1/namespaces/edge-apps/leases",
            JSON,
            lease,
        );
        let h = c.history(0);
        let h = h.as_array().unwrap();
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(
            (
                &h[0]["event"],
                &h[0]["node"],
                &h[0]["pod"],
                &h[0]["daemonset"]
            ),
            (
                &json!("delete"),
                &json!("edge-node-1"),
                &json!(pod),
                &json!("edge-apps/telemetry-agent")
            )
        );
        assert_eq!(
            (&h[1]["event"], &h[1]["holder"]),
            (&json!("lease"), &json!("edge-node-1"))
        );
        assert!(h[0]["at_us"].as_u64() <= h[1]["at_us"].as_u64());
        assert_eq!(c.history(1).as_array().unwrap().len(), 1, "from seq 1");
    }

    /// A Lease watch with a label selector, as the cacher serves it: a Lease relabelled out of
    /// the selector is DELETED for that watcher (its last matching content, at the new
    /// version), relabelled in is ADDED; other namespaces and labels are not sent; a malformed
    /// selector is 400 with the parser's words, on a list and a watch alike.
    #[test]
    fn a_lease_watch_with_a_label_selector_sees_leases_enter_and_leave_it() {
        let c = Cluster::new(Options::default());
        let base = "/apis/coordination.k8s.io/v1/namespaces/yurt-ota/leases";
        let lease = |name: &str, ds: &str, rv: Option<&str>| {
            let mut l = json!({"metadata": {"name": name, "labels": {"yurt-ota.io/daemonset": ds}},
                               "spec": {"holderIdentity": "edge-node-1", "leaseDurationSeconds": 30}});
            if let Some(rv) = rv {
                l["metadata"]["resourceVersion"] = json!(rv);
            }
            l.to_string()
        };
        let write = |method: &str, path: &str, body: String| -> Value {
            let Reply::Full { status, body, .. } = c.handle(method, path, JSON, body.as_bytes())
            else {
                panic!("a full reply");
            };
            assert!(status < 300, "{status} {}", String::from_utf8_lossy(&body));
            serde_json::from_slice(&body).unwrap()
        };
        let a0 = write("POST", base, lease("a.0", "a", None));
        let Reply::Full { body, .. } = c.handle(
            "GET",
            &format!("{base}?labelSelector=yurt-ota.io%2Fdaemonset%3Da"),
            "",
            b"",
        ) else {
            panic!("a list");
        };
        let list: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(list["items"].as_array().unwrap().len(), 1);
        let rv: u64 = list["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let Reply::Watch(w) = c.handle(
            "GET",
            &format!("{base}?watch=1&resourceVersion={rv}&allowWatchBookmarks=true&labelSelector=yurt-ota.io%2Fdaemonset%20in%20(a)"),
            "",
            b"",
        ) else {
            panic!("a watch");
        };
        let b = write("POST", base, lease("b.0", "b", None));
        write(
            "POST",
            "/apis/coordination.k8s.io/v1/namespaces/other/leases",
            lease("a.9", "a", None),
        );
        let a1 = write(
            "PUT",
            &format!("{base}/a.0"),
            lease("a.0", "a", a0["metadata"]["resourceVersion"].as_str()),
        );
        let a_rv = a1["metadata"]["resourceVersion"].as_str().unwrap();
        let a2 = write("PUT", &format!("{base}/a.0"), lease("a.0", "z", Some(a_rv)));
        let b_rv = b["metadata"]["resourceVersion"].as_str().unwrap();
        write("PUT", &format!("{base}/b.0"), lease("b.0", "a", Some(b_rv)));
        c.handle("DELETE", &format!("{base}/b.0"), "", b"");
        let (lines, _, expired, _) = c.events_after(&w, rv);
        assert!(!expired);
        let seen: Vec<(String, String, String, String)> = lines
            .iter()
            .map(|l| {
                let e: Value = serde_json::from_slice(l).unwrap();
                let m = &e["object"]["metadata"];
                (
                    e["type"].as_str().unwrap().to_owned(),
                    m["name"].as_str().unwrap().to_owned(),
                    m["labels"]["yurt-ota.io/daemonset"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                    m["resourceVersion"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let a2_rv = a2["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_owned();
        let s = |a: &str, b: &str, c: &str, d: &str| (a.into(), b.into(), c.into(), d.into());
        assert_eq!(
            seen,
            [
                s("MODIFIED", "a.0", "a", a_rv),
                s("DELETED", "a.0", "a", &a2_rv),
                s(
                    "ADDED",
                    "b.0",
                    "a",
                    &(a2_rv.parse::<u64>().unwrap() + 1).to_string()
                ),
                s(
                    "DELETED",
                    "b.0",
                    "a",
                    &(a2_rv.parse::<u64>().unwrap() + 2).to_string()
                ),
            ]
        );
        for q in ["labelSelector=a%20b", "watch=1&labelSelector=a%20in%20b"] {
            let Reply::Full { status, body, .. } = c.handle("GET", &format!("{base}?{q}"), "", b"")
            else {
                panic!("a full reply");
            };
            let st: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(
                (status, &st["reason"], &st["code"]),
                (400, &json!("BadRequest"), &json!(400))
            );
            assert!(
                st["message"]
                    .as_str()
                    .unwrap()
                    .starts_with("unable to parse requirement: found 'b'"),
                "{st}"
            );
        }
    }
}
