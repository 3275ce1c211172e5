//! The stand-in's controllers: the cluster populated, DaemonSet pods recreated after a
//! delete (their Ready later), DaemonSet status, OpenYurt's `PodNeedUpgrade` and pre-pull, on
//! timers that fire as they fall due.

use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

use super::store::{self, Res};
use super::*;

impl Cluster {
    pub(super) fn populate(&self) {
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
                    broken: false,
                    flaky: false,
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
                min_ready_seconds: 0,
                peak_unavailable: 0,
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
    pub(super) fn node_pod(
        &self,
        st: &mut Inner,
        t: &Value,
        node: &str,
        filler: Option<usize>,
    ) -> Value {
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
    pub(super) fn ds_pod(
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
        yurt_ota::sim::pod::start_container(&mut p, &ds.name, &image, &container_id, now);
        set_ready(&mut p, ready);
        if self.opts.openyurt {
            need_upgrade(&mut p, ds);
        }
        p
    }

    /// Writes DaemonSet `d` (spec, annotations, status from its pods) if it changed.
    pub(super) fn write_ds(&self, st: &mut Inner, d: usize) {
        let available = st
            .store
            .list(Res::Pods, Some(&st.dss[d].ns))
            .filter(|p| p["metadata"]["ownerReferences"][0]["uid"] == st.dss[d].uid.as_str())
            .filter(|p| is_ready(p))
            .count();
        let unavailable = self.opts.nodes.len().saturating_sub(available);
        let peak = &mut st.dss[d].peak_unavailable;
        *peak = (*peak).max(unavailable);
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
                     "updateStrategy": strategy, "revisionHistoryLimit": 10,
                     "minReadySeconds": ds.min_ready_seconds},
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
    pub fn run_timers(&self, stop: &yurt_ota::shutdown::Shutdown) {
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

    pub(super) fn apply(&self, st: &mut Inner, at: Instant, due: Due) {
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
                let broken = st.dss[ds].current().broken;
                let now = rfc3339(SystemTime::now());
                let pod = self.ds_pod(st, ds, &node, version, tg, false, &now);
                let (ns, name) = store::ns_name(&pod);
                let uid = pod["metadata"]["uid"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                st.store.put(Res::Pods, pod);
                if !broken {
                    st.due
                        .push((at + self.opts.ready_delay, Due::Ready { ns, name, uid }));
                }
                self.write_ds(st, ds);
            }
            Due::Ready { ns, name, uid } => {
                self.change_pod(st, &ns, &name, &uid, |p| set_ready(p, true));
                if let Some(p) = st.store.get(Res::Pods, &ns, &name).cloned() {
                    if p["metadata"]["uid"] == uid.as_str() {
                        st.note_pod("ready", &p);
                        let flaky = st.dss.iter().any(|d| {
                            d.revisions.iter().any(|r| {
                                r.flaky
                                    && p["metadata"]["labels"]["controller-revision-hash"]
                                        == r.hash.as_str()
                            })
                        });
                        if flaky {
                            st.due
                                .push((at + self.opts.ready_delay, Due::Crash { ns, name, uid }));
                        }
                    }
                }
            }
            Due::Crash { ns, name, uid } => {
                self.change_pod(st, &ns, &name, &uid, |p| {
                    set_ready(p, false);
                    let cs = &mut p["status"]["containerStatuses"][0];
                    cs["restartCount"] = json!(yurt_ota::policy::CRASH_LOOP_RESTARTS);
                    cs["state"] = json!({"waiting": {"reason": "CrashLoopBackOff"}});
                });
                if let Some(p) = st.store.get(Res::Pods, &ns, &name).cloned() {
                    if p["metadata"]["uid"] == uid.as_str() {
                        st.note_pod("crash", &p);
                    }
                }
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
                    let c = condition(p, yurt_ota::pod::IMAGE_READY);
                    if c["status"] == "False"
                        && c["message"] == format!("controllerrevision: {hash}").as_str()
                    {
                        set_condition(
                            p,
                            yurt_ota::pod::IMAGE_READY,
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
    pub(super) fn change_pod(
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
    pub(super) fn mark_pods(&self, st: &mut Inner, d: usize) {
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
}

/// OpenYurt's `PodNeedUpgrade`, set once the DaemonSet's status caught up.
pub(super) fn need_upgrade(p: &mut Value, ds: &Ds) {
    if !ds.ota() || ds.observed != ds.generation {
        return;
    }
    let status = if is_updated(p, ds) { "False" } else { "True" };
    let message = format!("controllerrevision: {}", ds.current().hash);
    let c = condition(p, yurt_ota::pod::NEED_UPGRADE);
    if c["status"] != status || c["message"] != message.as_str() {
        set_condition(p, yurt_ota::pod::NEED_UPGRADE, status, "", &message);
    }
}

pub(super) fn controller_revision(ds: &Ds, r: usize) -> Value {
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
pub(super) fn hash(ns: &str, name: &str, version: u32) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in format!("{ns}/{name}/{version}").bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    encode(h, 10)
}
