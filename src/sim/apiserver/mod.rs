//! A kube-apiserver stand-in (SPEC 2b; issue 10 item 7): the subset of the apiserver the agent
//! uses, over HTTPS, with a small DaemonSet controller behind it. Several nodes, each with the
//! recorded kind pods (static, ReplicaSet) and one pod per DaemonSet.
//!
//! - `cluster` (this file): the objects, the "controllers" (DaemonSet recreation, status,
//!   optionally OpenYurt's `PodNeedUpgrade`/pre-pull) and the REST answers;
//! - `store`: objects, resourceVersions, event history and compaction, wire shapes;
//! - `tls`: the generated CA, certificates and kubeconfig;
//! - `server`: TLS sockets, authentication, chunked watches, the `/sim/...` control port.
//!
//! Time moves on a ticker thread (`server`), so watches see recreations as they happen.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

pub mod server;
pub mod store;
pub mod tls;

use super::pod::{encode, rfc3339, set_condition, set_ready};
use store::{details, list_body, status, with_kind, Res, Selector, Store};

const TEMPLATES: &str = include_str!("../templates.json");
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
}

struct Inner {
    store: Store,
    dss: Vec<Ds>,
    due: Vec<(Instant, Due)>,
    names: crate::sim::pod::Names,
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
                names: crate::sim::pod::Names(seed),
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

    fn populate(&self) {
        let mut st = self.lock();
        let now = rfc3339(SystemTime::now());
        for &(ns, name, image, strategy, max_unavailable, current, running) in &DAEMONSETS {
            let uid = st.uid();
            let mut annotations = json!({TEMPLATE_GENERATION: current.to_string()});
            if let Some(s) = strategy {
                annotations[STRATEGY] = json!(s);
            }
            if let Some(m) = max_unavailable {
                annotations[MAX_UNAVAILABLE] = json!(m);
            }
            let revisions = (1..=current)
                .map(|v| Revision {
                    hash: hash(ns, name, v),
                    version: v,
                    revision: u64::from(v),
                })
                .collect();
            st.dss.push(Ds {
                ns: ns.into(),
                name: name.into(),
                uid,
                image: image.into(),
                on_delete: strategy.is_some(),
                annotations,
                generation: u64::from(current),
                observed: u64::from(current),
                template_generation: u64::from(current),
                revisions,
                created: now.clone(),
            });
            let d = st.dss.len() - 1;
            for r in 0..st.dss[d].revisions.len() {
                let cr = controller_revision(&st.dss[d], r);
                st.store.put(Res::ControllerRevisions, cr);
            }
            for node in &self.opts.nodes {
                let pod = self.ds_pod(&mut st, d, node, running, u64::from(running), true, &now);
                st.store.put(Res::Pods, pod);
            }
            self.write_ds(&mut st, d);
        }
        let nodes = self.opts.nodes.clone();
        for node in &nodes {
            for t in &self.node_templates {
                let pod = self.node_pod(&mut st, t, node, None);
                st.store.put(Res::Pods, pod);
            }
            let rs = self
                .node_templates
                .iter()
                .find(|t| owner_kind(t) == "ReplicaSet")
                .cloned();
            for i in 0..self.opts.filler {
                if let Some(t) = &rs {
                    let pod = self.node_pod(&mut st, t, node, Some(i));
                    st.store.put(Res::Pods, pod);
                }
            }
        }
    }

    /// A static or ReplicaSet pod from the recordings, on `node` (filler `i`: a renamed copy).
    fn node_pod(&self, st: &mut Inner, t: &Value, node: &str, filler: Option<usize>) -> Value {
        let mut p = t.clone();
        let template_node = t["spec"]["nodeName"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let mut name = t["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .replace(&template_node, node);
        if let Some(i) = filler {
            name = format!("filler-{i}-{}", st.suffix());
            p["metadata"]["namespace"] = json!("fillers");
        } else if owner_kind(t) == "ReplicaSet" {
            // Unique per node: a fresh suffix after the recorded generateName.
            let prefix = t["metadata"]["generateName"].as_str().unwrap_or_default();
            name = format!("{prefix}{}", st.suffix());
        }
        p["metadata"]["name"] = json!(name);
        p["metadata"]["uid"] = json!(st.uid());
        p["spec"]["nodeName"] = json!(node);
        if owner_kind(t) == "Node" {
            p["metadata"]["ownerReferences"][0]["name"] = json!(node);
        }
        p
    }

    /// A pod of DaemonSet `d` on `node` running template `version` (template generation `tg`).
    #[allow(clippy::too_many_arguments)]
    fn ds_pod(
        &self,
        st: &mut Inner,
        d: usize,
        node: &str,
        version: u32,
        tg: u64,
        ready: bool,
        now: &str,
    ) -> Value {
        let suffix = st.suffix();
        let uid = st.uid();
        let container_id = format!(
            "containerd://{}{}",
            st.uid().replace('-', ""),
            st.uid().replace('-', "")
        );
        let ds = &st.dss[d];
        let image = format!("{}:v1.{version}.0", ds.image);
        let mut p = self.ds_template.clone();
        let m = &mut p["metadata"];
        m["name"] = json!(format!("{}-{suffix}", ds.name));
        m["generateName"] = json!(format!("{}-", ds.name));
        m["namespace"] = json!(ds.ns);
        m["uid"] = json!(uid);
        m["creationTimestamp"] = json!(now);
        m["labels"] = json!({"app": ds.name, "controller-revision-hash": hash(&ds.ns, &ds.name, version),
                             "pod-template-generation": tg.to_string()});
        m["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": ds.name,
                                        "uid": ds.uid, "controller": true, "blockOwnerDeletion": true}]);
        p["spec"]["nodeName"] = json!(node);
        p["spec"]["containers"][0]["name"] = json!(ds.name);
        p["spec"]["containers"][0]["image"] = json!(image);
        p["status"]["startTime"] = json!(now);
        let cs = &mut p["status"]["containerStatuses"][0];
        cs["name"] = json!(ds.name);
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
        if self.opts.openyurt {
            need_upgrade(&mut p, ds);
        }
        p
    }

    /// Writes DaemonSet `d` (spec, annotations, status from its pods) if it changed.
    fn write_ds(&self, st: &mut Inner, d: usize) {
        let ds = &st.dss[d];
        let current = ds.current();
        let pods: Vec<&Value> = st
            .store
            .list(Res::Pods, Some(&ds.ns))
            .filter(|p| p["metadata"]["ownerReferences"][0]["uid"] == ds.uid.as_str())
            .collect();
        let ready = pods.iter().filter(|p| is_ready(p)).count();
        let updated = pods.iter().filter(|p| is_updated(p, ds)).count();
        let desired = self.opts.nodes.len();
        let strategy = if ds.on_delete {
            json!({"type": "OnDelete"})
        } else {
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
        };
        let obj = json!({
            "metadata": {"name": ds.name, "namespace": ds.ns, "uid": ds.uid, "generation": ds.generation,
                         "creationTimestamp": ds.created, "labels": {"app": ds.name},
                         "annotations": ds.annotations},
            "spec": {"selector": {"matchLabels": {"app": ds.name}},
                     "template": {"metadata": {"labels": {"app": ds.name}},
                                  "spec": {"containers": [{"name": ds.name, "image": format!("{}:v1.{}.0", ds.image, current.version),
                                                           "resources": {}, "terminationMessagePath": "/dev/termination-log",
                                                           "terminationMessagePolicy": "File", "imagePullPolicy": "IfNotPresent"}],
                                           "restartPolicy": "Always", "terminationGracePeriodSeconds": 30,
                                           "dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler"}},
                     "updateStrategy": strategy, "revisionHistoryLimit": 10},
            "status": {"currentNumberScheduled": pods.len(), "numberMisscheduled": 0,
                       "desiredNumberScheduled": desired, "numberReady": ready,
                       "observedGeneration": ds.observed, "updatedNumberScheduled": updated,
                       "numberAvailable": ready, "numberUnavailable": desired.saturating_sub(ready)}
        });
        let (ns, name) = (ds.ns.clone(), ds.name.clone());
        let same = st
            .store
            .get(Res::DaemonSets, &ns, &name)
            .is_some_and(|old| {
                let mut old = old.clone();
                old["metadata"]
                    .as_object_mut()
                    .map(|m| m.remove("resourceVersion"));
                old == obj
            });
        if !same {
            st.store.put(Res::DaemonSets, obj);
        }
    }

    /// The controllers' timers: applies what is due, as it falls due, until `stop`. Changes
    /// are made under the lock and notified, so no wake-up is lost.
    pub fn run_timers(&self, stop: &crate::shutdown::Shutdown) {
        let mut st = self.lock();
        while !stop.is_triggered() {
            let now = Instant::now();
            let mut changed = false;
            while let Some(i) = (0..st.due.len()).min_by_key(|&i| st.due[i].0) {
                if st.due[i].0 > now {
                    break;
                }
                let (at, due) = st.due.remove(i);
                changed = true;
                self.apply(&mut st, at, due);
            }
            if changed {
                self.changed.notify_all();
            }
            let wait = st
                .due
                .iter()
                .map(|(t, _)| *t)
                .min()
                .map_or(Duration::from_secs(3600), |t| {
                    t.saturating_duration_since(Instant::now())
                });
            st = self
                .changed
                .wait_timeout(st, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Wakes every waiter (the timers, the watches), under the lock so that none misses it.
    pub fn wake(&self) {
        let _st = self.lock();
        self.changed.notify_all();
    }

    fn apply(&self, st: &mut Inner, at: Instant, due: Due) {
        match due {
            Due::Gone { ns, name, uid } => {
                if !st
                    .store
                    .get(Res::Pods, &ns, &name)
                    .is_some_and(|p| p["metadata"]["uid"] == uid.as_str())
                {
                    return;
                }
                let Some(old) = st.store.remove(Res::Pods, &ns, &name) else {
                    return;
                };
                let owner = &old["metadata"]["ownerReferences"][0];
                if let Some(d) = st.dss.iter().position(|d| owner["uid"] == d.uid.as_str()) {
                    let node = old["spec"]["nodeName"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    st.due
                        .push((at + self.opts.recreate_delay, Due::Create { ds: d, node }));
                    self.write_ds(st, d);
                }
            }
            Due::Create { ds, node } => {
                let (version, tg) = (st.dss[ds].current().version, st.dss[ds].template_generation);
                let now = rfc3339(SystemTime::now());
                let pod = self.ds_pod(st, ds, &node, version, tg, false, &now);
                let (ns, name) = store::ns_name(&pod);
                let uid = pod["metadata"]["uid"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                st.store.put(Res::Pods, pod);
                st.due
                    .push((at + self.opts.ready_delay, Due::Ready { ns, name, uid }));
                self.write_ds(st, ds);
            }
            Due::Ready { ns, name, uid } => {
                self.change_pod(st, &ns, &name, &uid, |p| set_ready(p, true));
            }
            Due::Observe { ds } => {
                st.dss[ds].observed = st.dss[ds].generation;
                self.write_ds(st, ds);
                if self.opts.openyurt {
                    self.mark_pods(st, ds);
                }
            }
            Due::Pulled {
                ns,
                name,
                uid,
                hash,
            } => {
                self.change_pod(st, &ns, &name, &uid, |p| {
                    let c = condition(p, crate::pod::IMAGE_READY);
                    if c["status"] == "False"
                        && c["message"] == format!("controllerrevision: {hash}").as_str()
                    {
                        set_condition(
                            p,
                            crate::pod::IMAGE_READY,
                            "True",
                            "PullImageSuccess",
                            &format!("controllerrevision: {hash}"),
                        );
                    }
                });
            }
        }
    }

    /// Changes pod `ns/name` if it still has `uid`; the DaemonSet's status follows.
    fn change_pod(
        &self,
        st: &mut Inner,
        ns: &str,
        name: &str,
        uid: &str,
        f: impl FnOnce(&mut Value),
    ) {
        let Some(mut p) = st.store.get(Res::Pods, ns, name).cloned() else {
            return;
        };
        if p["metadata"]["uid"] != uid {
            return;
        }
        let before = p.clone();
        f(&mut p);
        if p == before {
            return;
        }
        let owner = p["metadata"]["ownerReferences"][0]["uid"].clone();
        st.store.put(Res::Pods, p);
        if let Some(d) = st.dss.iter().position(|d| owner == d.uid.as_str()) {
            self.write_ds(st, d);
        }
    }

    /// OpenYurt's controller: `PodNeedUpgrade` on every pod of an OTA DaemonSet.
    fn mark_pods(&self, st: &mut Inner, d: usize) {
        let ds_uid = st.dss[d].uid.clone();
        let ns = st.dss[d].ns.clone();
        let pods: Vec<Value> = st
            .store
            .list(Res::Pods, Some(&ns))
            .filter(|p| p["metadata"]["ownerReferences"][0]["uid"] == ds_uid.as_str())
            .cloned()
            .collect();
        for mut p in pods {
            let before = p.clone();
            need_upgrade(&mut p, &st.dss[d]);
            if p != before {
                st.store.put(Res::Pods, p);
            }
        }
    }

    /// Publishes a new template (`undo`: back to the previous revision's template, whose
    /// ControllerRevision is reused with a bumped `.revision`, as `kubectl rollout undo` does).
    pub fn rollout(&self, ns: &str, name: &str, undo: bool) -> Result<Value, (u16, String)> {
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
            });
            ds.revisions.len() - 1
        };
        ds.generation += 1;
        ds.template_generation = ds.generation;
        ds.annotations[TEMPLATE_GENERATION] = json!(ds.generation.to_string());
        let out = json!({"daemonset": format!("{ns}/{name}"), "generation": ds.generation,
                         "revision": ds.revisions[r].revision, "hash": ds.revisions[r].hash,
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
                       "annotations": d.annotations})
            })
            .collect();
        json!({"nodes": self.opts.nodes, "resourceVersion": st.store.rv.to_string(),
               "compacted": st.store.compacted.to_string(),
               "pods": st.store.list(Res::Pods, None).count(), "daemonsets": dss})
    }

    /// One REST request (authenticated already).
    pub fn handle(&self, method: &str, target: &str, content_type: &str, body: &[u8]) -> Reply {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let q = |k: &str| query_value(query, k);
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (res, ns, name, sub) = match parts.as_slice() {
            ["version"] => {
                return json_reply(
                    200,
                    &json!({"major": "1", "minor": "36", "gitVersion": "v1.36.0-yurt-ota-apisim",
                                               "platform": "linux/amd64"}),
                )
            }
            ["healthz" | "readyz" | "livez"] => {
                return Reply::Full {
                    status: 200,
                    content_type: "text/plain; charset=utf-8",
                    body: b"ok".to_vec(),
                }
            }
            ["api", "v1", rest @ ..] => match route(rest, "pods", Res::Pods) {
                Some(r) => r,
                None => return unknown(),
            },
            ["apis", "apps", "v1", rest @ ..] => {
                match route(rest, "daemonsets", Res::DaemonSets)
                    .or_else(|| route(rest, "controllerrevisions", Res::ControllerRevisions))
                {
                    Some(r) => r,
                    None => return unknown(),
                }
            }
            ["apis", "coordination.k8s.io", "v1", rest @ ..] => {
                match route(rest, "leases", Res::Leases) {
                    Some(r) => r,
                    None => return unknown(),
                }
            }
            _ => return unknown(),
        };
        match (method, name, sub) {
            ("GET", None, None) => {
                let sel = match Selector::parse(
                    ns,
                    q("fieldSelector").as_deref(),
                    q("labelSelector").as_deref(),
                ) {
                    Ok(s) => s,
                    Err(e) => return status_reply(400, "BadRequest", &e, None),
                };
                let rv = q("resourceVersion").unwrap_or_default();
                let parsed_rv = match rv.as_str() {
                    "" | "0" => None,
                    v => match v.parse::<u64>() {
                        Ok(n) => Some(n),
                        Err(_) => {
                            return status_reply(
                                400,
                                "BadRequest",
                                &format!("invalid resource version: {v}"),
                                None,
                            )
                        }
                    },
                };
                if matches!(q("watch").as_deref(), Some("1" | "true")) {
                    let timeout = q("timeoutSeconds")
                        .and_then(|t| t.parse::<u64>().ok())
                        .map_or(Duration::from_secs(1800), Duration::from_secs);
                    return Reply::Watch(Watch {
                        res,
                        sel,
                        from: parsed_rv,
                        initial_events: q("sendInitialEvents").as_deref() == Some("true"),
                        bookmarks: q("allowWatchBookmarks").as_deref() == Some("true"),
                        timeout,
                    });
                }
                let st = self.lock();
                let exact = q("resourceVersionMatch").as_deref() == Some("Exact");
                if let Some(v) = parsed_rv {
                    if exact && v != st.store.rv && v < st.store.compacted
                        || q("continue").is_some() && v < st.store.compacted
                    {
                        return status_reply(
                            410,
                            "Expired",
                            "The resourceVersion for the provided list is too old.",
                            None,
                        );
                    }
                }
                let body = list_body(
                    res,
                    st.store.rv,
                    st.store.list(res, ns).filter(|o| sel.matches(o)),
                );
                Reply::Full {
                    status: 200,
                    content_type: JSON,
                    body,
                }
            }
            ("GET", Some(name), None | Some("status")) => {
                let st = self.lock();
                match st.store.get(res, ns.unwrap_or_default(), name) {
                    Some(o) => Reply::Full {
                        status: 200,
                        content_type: JSON,
                        body: with_kind(res, o).into_bytes(),
                    },
                    None => not_found(res, name),
                }
            }
            ("DELETE", Some(name), None) if matches!(res, Res::Pods | Res::Leases) => {
                self.delete(res, ns.unwrap_or_default(), name, body)
            }
            ("PATCH", Some(name), Some("status")) if res == Res::Pods => {
                self.patch_status(ns.unwrap_or_default(), name, content_type, body)
            }
            ("POST", None, None) if res == Res::Leases && ns.is_some() => {
                self.create(res, ns.unwrap_or_default(), body)
            }
            ("PUT", Some(name), None) if res == Res::Leases => {
                self.update(res, ns.unwrap_or_default(), name, body)
            }
            _ => status_reply(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
                Some(json!({})),
            ),
        }
    }

    fn delete(&self, res: Res, ns: &str, name: &str, body: &[u8]) -> Reply {
        let opts: Value = if body.is_empty() {
            json!({})
        } else {
            match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => {
                    return status_reply(
                        400,
                        "BadRequest",
                        &format!("couldn't get version/kind; json parse error: {e}"),
                        None,
                    )
                }
            }
        };
        let mut st = self.lock();
        let Some(obj) = st.store.get(res, ns, name).cloned() else {
            return not_found(res, name);
        };
        let pre = &opts["preconditions"];
        let conflict = |what: &str, want: &str, got: &str| {
            status_reply(
                409,
                "Conflict",
                &format!(
                    "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: {what} in precondition: {want}, {what} in object meta: {got}",
                    res.qualified()
                ),
                Some(details(res, name)),
            )
        };
        if let Some(uid) = pre["uid"].as_str() {
            let got = obj["metadata"]["uid"].as_str().unwrap_or_default();
            if uid != got {
                return conflict("UID", uid, got);
            }
        }
        if let Some(rv) = pre["resourceVersion"].as_str() {
            let got = obj["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default();
            if rv != got {
                return conflict("ResourceVersion", rv, got);
            }
        }
        if res != Res::Pods {
            let gone = st.store.remove(res, ns, name).unwrap_or(obj);
            drop(st);
            self.changed.notify_all();
            return json_reply(
                200,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                                          "details": {"name": name, "group": res.group(), "kind": res.plural(),
                                                      "uid": gone["metadata"]["uid"]}}),
            );
        }
        // Graceful: deletionTimestamp now, gone after the grace; a second DELETE changes nothing.
        let out = if obj["metadata"]["deletionTimestamp"].is_null() {
            let mut p = obj;
            p["metadata"]["deletionTimestamp"] =
                json!(rfc3339(SystemTime::now() + Duration::from_secs(30)));
            p["metadata"]["deletionGracePeriodSeconds"] = json!(30);
            let uid = p["metadata"]["uid"].as_str().unwrap_or_default().to_owned();
            let p = st.store.put(Res::Pods, p);
            st.due.push((
                Instant::now() + self.opts.grace,
                Due::Gone {
                    ns: ns.into(),
                    name: name.into(),
                    uid,
                },
            ));
            let owner = p["metadata"]["ownerReferences"][0]["uid"].clone();
            if let Some(d) = st.dss.iter().position(|d| owner == d.uid.as_str()) {
                self.write_ds(&mut st, d);
            }
            p
        } else {
            obj
        };
        drop(st);
        self.changed.notify_all();
        Reply::Full {
            status: 200,
            content_type: JSON,
            body: with_kind(res, &out).into_bytes(),
        }
    }

    fn patch_status(&self, ns: &str, name: &str, content_type: &str, body: &[u8]) -> Reply {
        let patch: Value = match serde_json::from_slice(body) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => {
                return status_reply(400, "BadRequest", "patch body must be a JSON object", None)
            }
            Err(e) => {
                return status_reply(
                    400,
                    "BadRequest",
                    &format!("error decoding patch: {e}"),
                    None,
                )
            }
        };
        let ct = content_type.split(';').next().unwrap_or_default().trim();
        let strategic = match ct {
            "application/merge-patch+json" => false,
            "application/strategic-merge-patch+json" => true,
            _ => {
                return status_reply(415, "UnsupportedMediaType", "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json", None)
            }
        };
        let mut st = self.lock();
        let Some(mut p) = st.store.get(Res::Pods, ns, name).cloned() else {
            return not_found(Res::Pods, name);
        };
        if let Some(rv) = patch["metadata"]["resourceVersion"].as_str() {
            if p["metadata"]["resourceVersion"] != rv {
                return status_reply(409, "Conflict", &format!("Operation cannot be fulfilled on pods \"{name}\": the object has been modified; please apply your changes to the latest version and try again"), Some(details(Res::Pods, name)));
            }
        }
        // Only the status is written through the status subresource.
        let status_only = json!({"status": patch["status"].clone()});
        if strategic {
            store::strategic_status_patch(&mut p, &status_only);
        } else {
            store::merge_patch(&mut p, &status_only);
        }
        let p = st.store.put(Res::Pods, p);
        if self.opts.openyurt {
            let c = condition(&p, crate::pod::IMAGE_READY);
            if c["status"] == "False" {
                if let Some(h) = c["message"]
                    .as_str()
                    .and_then(|m| m.strip_prefix("controllerrevision: "))
                {
                    let uid = p["metadata"]["uid"].as_str().unwrap_or_default().to_owned();
                    st.due.push((
                        Instant::now() + self.opts.pull_delay,
                        Due::Pulled {
                            ns: ns.into(),
                            name: name.into(),
                            uid,
                            hash: h.into(),
                        },
                    ));
                }
            }
        }
        drop(st);
        self.changed.notify_all();
        Reply::Full {
            status: 200,
            content_type: JSON,
            body: with_kind(Res::Pods, &p).into_bytes(),
        }
    }

    fn parse_object(res: Res, ns: &str, body: &[u8]) -> Result<Value, Reply> {
        let mut obj: Value = serde_json::from_slice(body).map_err(|e| {
            status_reply(
                400,
                "BadRequest",
                &format!("error decoding request body: {e}"),
                None,
            )
        })?;
        if !obj.is_object() || !obj["metadata"].is_object() {
            return Err(status_reply(
                400,
                "BadRequest",
                "the object has no metadata",
                None,
            ));
        }
        if obj["metadata"]["name"].as_str().is_none_or(str::is_empty) {
            return Err(status_reply(422, "Invalid", &format!("{} \"\" is invalid: metadata.name: Required value: name or generateName is required", res.kind()), None));
        }
        match obj["metadata"]["namespace"].as_str() {
            Some(n) if n != ns => {
                return Err(status_reply(400, "BadRequest", "the namespace of the provided object does not match the namespace sent on the request", None))
            }
            _ => obj["metadata"]["namespace"] = json!(ns),
        }
        if let Some(o) = obj.as_object_mut() {
            o.remove("kind");
            o.remove("apiVersion");
        }
        Ok(obj)
    }

    fn create(&self, res: Res, ns: &str, body: &[u8]) -> Reply {
        let mut obj = match Self::parse_object(res, ns, body) {
            Ok(o) => o,
            Err(r) => return r,
        };
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let mut st = self.lock();
        if st.store.get(res, ns, &name).is_some() {
            return status_reply(
                409,
                "AlreadyExists",
                &format!("{} \"{name}\" already exists", res.qualified()),
                Some(details(res, &name)),
            );
        }
        let uid = st.uid();
        let m = &mut obj["metadata"];
        m["uid"] = json!(uid);
        m["creationTimestamp"] = json!(rfc3339(SystemTime::now()));
        if let Some(m) = m.as_object_mut() {
            m.remove("resourceVersion");
        }
        let obj = st.store.put(res, obj);
        drop(st);
        self.changed.notify_all();
        Reply::Full {
            status: 201,
            content_type: JSON,
            body: with_kind(res, &obj).into_bytes(),
        }
    }

    /// PUT: a compare-and-swap on `metadata.resourceVersion` (unconditional without one).
    fn update(&self, res: Res, ns: &str, name: &str, body: &[u8]) -> Reply {
        let mut obj = match Self::parse_object(res, ns, body) {
            Ok(o) => o,
            Err(r) => return r,
        };
        if obj["metadata"]["name"] != name {
            return status_reply(
                400,
                "BadRequest",
                "the name of the object does not match the name on the URL",
                None,
            );
        }
        let mut st = self.lock();
        let Some(old) = st.store.get(res, ns, name) else {
            return not_found(res, name);
        };
        if let Some(rv) = obj["metadata"]["resourceVersion"].as_str() {
            if old["metadata"]["resourceVersion"] != rv {
                return status_reply(409, "Conflict", &format!("Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again", res.qualified()), Some(details(res, name)));
            }
        }
        obj["metadata"]["uid"] = old["metadata"]["uid"].clone();
        obj["metadata"]["creationTimestamp"] = old["metadata"]["creationTimestamp"].clone();
        let obj = st.store.put(res, obj);
        drop(st);
        self.changed.notify_all();
        Reply::Full {
            status: 200,
            content_type: JSON,
            body: with_kind(res, &obj).into_bytes(),
        }
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
            .filter(|e| e.rv > from && e.res == w.res && w.sel.matches(&e.object))
            .map(|e| store::event_line(e.kind, e.res, &e.object))
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

/// `[namespaces, ns,] plural [, name [, sub]]` for `plural`.
/// A request's resource, namespace, name and subresource.
type Target<'a> = (Res, Option<&'a str>, Option<&'a str>, Option<&'a str>);

fn route<'a>(rest: &[&'a str], plural: &str, res: Res) -> Option<Target<'a>> {
    let (ns, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(*ns), rest),
        _ => (None, rest),
    };
    match rest {
        [p] if *p == plural => Some((res, ns, None, None)),
        [p, name] if *p == plural && ns.is_some() => Some((res, ns, Some(*name), None)),
        [p, name, sub] if *p == plural && ns.is_some() => Some((res, ns, Some(*name), Some(*sub))),
        _ => None,
    }
}

fn unknown() -> Reply {
    status_reply(
        404,
        "NotFound",
        "the server could not find the requested resource",
        Some(json!({})),
    )
}

/// A query parameter, percent-decoded.
pub fn query_value(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (percent_decode(k) == key).then(|| percent_decode(v))
    })
}

pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
            (b'+', ..) => out.push(b' '),
            (c, ..) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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

/// OpenYurt's `PodNeedUpgrade`, set once the DaemonSet's status caught up.
fn need_upgrade(p: &mut Value, ds: &Ds) {
    if !ds.ota() || ds.observed != ds.generation {
        return;
    }
    let status = if is_updated(p, ds) { "False" } else { "True" };
    let message = format!("controllerrevision: {}", ds.current().hash);
    let c = condition(p, crate::pod::NEED_UPGRADE);
    if c["status"] != status || c["message"] != message.as_str() {
        set_condition(p, crate::pod::NEED_UPGRADE, status, "", &message);
    }
}

fn controller_revision(ds: &Ds, r: usize) -> Value {
    let rev = &ds.revisions[r];
    json!({
        "metadata": {"name": format!("{}-{}", ds.name, rev.hash), "namespace": ds.ns,
                     "uid": format!("{}-{:012x}", &ds.uid[..23], rev.version),
                     "creationTimestamp": ds.created,
                     "labels": {"app": ds.name, "controller-revision-hash": rev.hash},
                     "annotations": {TEMPLATE_GENERATION: ds.template_generation.to_string()},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": ds.name,
                                          "uid": ds.uid, "controller": true, "blockOwnerDeletion": true}]},
        "data": {"spec": {"template": {"$patch": "replace", "metadata": {"labels": {"app": ds.name}},
                 "spec": {"containers": [{"name": ds.name, "image": format!("{}:v1.{}.0", ds.image, rev.version)}]}}}},
        "revision": rev.revision
    })
}

/// A Kubernetes-looking template hash, stable per (DaemonSet, template version).
fn hash(ns: &str, name: &str, version: u32) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in format!("{ns}/{name}/{version}").bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    encode(h, 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_percent_decoded() {
        let q =
            "fieldSelector=spec.nodeName%3Dedge-node-1&watch=1&labelSelector=a%3Db%2Cc%21%3Dd&x";
        assert_eq!(
            query_value(q, "fieldSelector").as_deref(),
            Some("spec.nodeName=edge-node-1")
        );
        assert_eq!(query_value(q, "labelSelector").as_deref(), Some("a=b,c!=d"));
        assert_eq!(query_value(q, "x").as_deref(), Some(""));
        assert_eq!(query_value(q, "y"), None);
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

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
        let snap = crate::snapshot::Snapshot::build(&body).unwrap();
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
}
