//! detect = "revision": the DaemonSets with pods on this node, each listed once by name and
//! watched by name from the list's resourceVersion (renewed from its last one), and their
//! newest ControllerRevision.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::client::q;
use super::revision::{self, DaemonSetView, Decision};
use super::watch::{self, Backoff};
use super::{Detect, Inner, Shared, WATCH_SECONDS};
use crate::upstream::excerpt;

/// How a DaemonSet watch ended.
enum DsWatchEnd {
    /// Watch again from this resourceVersion.
    Renew(String),
    /// Read the DaemonSet afresh first.
    Reread,
    /// Its last pod left this node.
    Untracked,
}

impl Inner {
    /// detect = revision: a thread per DaemonSet with pods on this node; untracked ones stop.
    pub(super) fn track_daemonsets(self: &Arc<Self>) {
        if self.settings.detect != Detect::Revision {
            return;
        }
        let mut s = self.lock();
        let wanted: HashMap<(String, String), String> = s
            .store
            .pods
            .values()
            .filter_map(|e| e.daemonset.clone())
            .map(|(ns, n, uid)| ((ns, n), uid))
            .collect();
        s.daemonsets.retain(|k, t| {
            let keep = wanted.contains_key(k);
            if !keep {
                t.watching = false;
            }
            keep
        });
        for (k, uid) in wanted {
            let t = s.daemonsets.entry(k.clone()).or_default();
            t.uid = uid;
            if !t.watching {
                t.watching = true;
                let me = self.clone();
                let name = format!("ds-{}", k.1);
                if let Err(e) = std::thread::Builder::new()
                    .name(name)
                    .spawn(move || me.daemonset_loop(k))
                {
                    log::error!("cannot start a DaemonSet watch thread: {e}");
                }
            }
        }
    }

    fn still_tracked(&self, k: &(String, String)) -> bool {
        self.lock().daemonsets.get(k).is_some_and(|t| t.watching)
    }

    /// Lists the DaemonSet (and its ControllerRevisions when its generation moved), then
    /// watches it by name; a change of generation or annotations re-reads, nothing is polled.
    /// A watch that ends (its `timeoutSeconds`, a broken stream, no connection) is renewed from
    /// the last resourceVersion seen, bookmarks included, as the kubelet's reflector does: the
    /// DaemonSet is listed again only after a 410, a refusal, `DELETED` or an `ERROR` event.
    fn daemonset_loop(self: Arc<Self>, k: (String, String)) {
        let mut backoff = Backoff::new();
        let mut last_gen: Option<(i64, i64)> = None;
        // Where to watch from; None: read the DaemonSet first.
        let mut from: Option<String> = None;
        while self.still_tracked(&k) {
            let rv = match from.take() {
                Some(rv) => rv,
                None => match self.read_daemonset(&k, &mut last_gen) {
                    Ok(rv) => rv,
                    Err(e) => {
                        self.set_skip(&k, None, Some(e));
                        std::thread::sleep(backoff.next_delay());
                        continue;
                    }
                },
            };
            let began = std::time::Instant::now();
            from = match self.watch_daemonset(&k, rv, &mut last_gen) {
                DsWatchEnd::Renew(rv) => Some(rv),
                DsWatchEnd::Reread => None,
                DsWatchEnd::Untracked => return,
            };
            // A watch that ended at once (an error, a proxy) is not re-opened in a tight loop.
            if began.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(backoff.next_delay());
            } else {
                backoff.reset();
            }
        }
    }

    /// The DaemonSet read by a list of its one name, applied; the list's resourceVersion to
    /// watch from, as client-go's reflector does. Not the object's own: a DaemonSet unchanged
    /// for a while carries a version older than the watch cache's window, and a watch from it
    /// would get 410 every time (`watch_cache.go`, `getAllEventsSinceLocked`).
    fn read_daemonset(
        &self,
        k: &(String, String),
        last_gen: &mut Option<(i64, i64)>,
    ) -> Result<String, String> {
        let (ns, name) = (&k.0, &k.1);
        let path = format!(
            "/apis/apps/v1/namespaces/{ns}/daemonsets?fieldSelector={}",
            q(&format!("metadata.name={name}"))
        );
        let list = match self.get(&path) {
            Ok((200, body)) => serde_json::from_slice::<Value>(&body).map_err(|e| e.to_string()),
            Ok((code, body)) => Err(format!("answered {code}: {}", excerpt(&body))),
            Err(e) => Err(e.to_string()),
        }
        .map_err(|e| format!("cannot read DaemonSet {ns}/{name}: {e}"))?;
        let ds = list["items"]
            .as_array()
            .ok_or_else(|| format!("cannot read DaemonSet {ns}/{name}: not a list"))?
            .iter()
            .find(|d| d["metadata"]["name"] == **name)
            .ok_or_else(|| format!("DaemonSet {ns}/{name} not found"))?;
        self.update_daemonset(k, ds, last_gen)?;
        let rv = match list["metadata"]["resourceVersion"].as_str() {
            Some(v) if !v.is_empty() => v,
            // A list without a version (no apiserver does that): the object's is the best left.
            _ => ds["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default(),
        };
        Ok(rv.to_owned())
    }

    /// One watch of the DaemonSet by name from `rv`, applying what it sends.
    fn watch_daemonset(
        &self,
        k: &(String, String),
        mut rv: String,
        last_gen: &mut Option<(i64, i64)>,
    ) -> DsWatchEnd {
        let (ns, name) = (&k.0, &k.1);
        let path = format!(
            "/apis/apps/v1/namespaces/{ns}/daemonsets?fieldSelector={}&resourceVersion={}&watch=1&allowWatchBookmarks=true&timeoutSeconds={WATCH_SECONDS}",
            q(&format!("metadata.name={name}")),
            q(&rv)
        );
        let resp = match self.request(&self.streams, "GET", &path, None) {
            Ok(r) if r.status == 200 => r,
            // An answer: 410 (too old), or a refusal the GET will name in status.
            Ok(_) => return DsWatchEnd::Reread,
            // No answer (the apiserver down): try the same watch again.
            Err(_) => return DsWatchEnd::Renew(rv),
        };
        let mut r = resp;
        let mut buf = Vec::new();
        // Ended by the server or broken: renew from what was seen.
        while let Ok(Some(line)) = watch::read_line(&mut r, &mut buf) {
            if !self.still_tracked(k) {
                return DsWatchEnd::Untracked;
            }
            // An event over `MAX_EVENT` or not JSON is skipped, as in the pod watch.
            let Some(mut ev) = line
                .ok()
                .and_then(|()| serde_json::from_slice::<Value>(&buf).ok())
            else {
                continue;
            };
            let obj = ev["object"].take();
            match ev["type"].as_str() {
                Some("MODIFIED" | "ADDED") => {
                    if let Err(e) = self.update_daemonset(k, &obj, last_gen) {
                        self.set_skip(k, None, Some(e));
                        return DsWatchEnd::Reread;
                    }
                }
                Some("BOOKMARK") => {}
                _ => return DsWatchEnd::Reread, // DELETED, ERROR (410 among them)
            }
            if let Some(v) = obj["metadata"]["resourceVersion"].as_str() {
                rv = v.to_owned();
            }
        }
        DsWatchEnd::Renew(rv)
    }

    fn set_skip(&self, k: &(String, String), view: Option<DaemonSetView>, skip: Option<String>) {
        let mut s = self.lock();
        if let Some(t) = s.daemonsets.get_mut(k) {
            if view.is_some() {
                t.view = view;
            }
            t.skip = skip;
        }
    }

    fn update_daemonset(
        &self,
        k: &(String, String),
        ds: &Value,
        last_gen: &mut Option<(i64, i64)>,
    ) -> Result<(), String> {
        let gen = ds["metadata"]["generation"].as_i64().unwrap_or(0);
        let observed = ds["status"]["observedGeneration"].as_i64().unwrap_or(0);
        let ann = &ds["metadata"]["annotations"];
        let mut view = DaemonSetView {
            generation: gen,
            observed_generation: observed,
            strategy: ds["spec"]["updateStrategy"]["type"]
                .as_str()
                .unwrap_or("RollingUpdate")
                .to_owned(),
            ota_annotation: ann["apps.openyurt.io/update-strategy"]
                .as_str()
                .map(str::to_owned),
            template_generation: ann["deprecated.daemonset.template.generation"]
                .as_str()
                .map(str::to_owned),
            newest_hash: None,
        };
        let info = crate::fleet::kube::daemonset_info(ds);
        if let Some(t) = self.lock().daemonsets.get_mut(k) {
            t.info = info;
        }
        let old = self.lock().daemonsets.get(k).and_then(|t| t.view.clone());
        let relevant =
            view.strategy == "OnDelete" && view.ota_annotation.is_some() && observed >= gen;
        if relevant {
            if *last_gen == Some((gen, observed)) {
                view.newest_hash = old.and_then(|o| o.newest_hash);
            } else {
                view.newest_hash = self.newest_revision(k, ds)?;
                *last_gen = Some((gen, observed));
            }
        }
        let skip = match revision::decide(&view, &Default::default()) {
            Decision::Skip(s) => Some(s.to_string()),
            Decision::Condition { .. } => None,
        };
        self.set_skip(k, Some(view), skip);
        Ok(())
    }

    /// The hash of the owned ControllerRevision with the highest `.revision`.
    fn newest_revision(&self, k: &(String, String), ds: &Value) -> Result<Option<String>, String> {
        let uid = ds["metadata"]["uid"].as_str().unwrap_or_default();
        let selector: Vec<String> = ds["spec"]["selector"]["matchLabels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some(format!("{k}={}", v.as_str()?)))
                    .collect()
            })
            .unwrap_or_default();
        let path = format!(
            "/apis/apps/v1/namespaces/{}/controllerrevisions?labelSelector={}",
            k.0,
            q(&selector.join(","))
        );
        let list: Value = match self.get(&path) {
            Ok((200, body)) => serde_json::from_slice(&body)
                .map_err(|e| format!("ControllerRevision list: {e}"))?,
            Ok((code, body)) => {
                return Err(format!(
                    "ControllerRevision list answered {code}: {}",
                    excerpt(&body)
                ))
            }
            Err(e) => return Err(format!("ControllerRevision list: {e}")),
        };
        Ok(newest_owned(&list, uid))
    }

    pub(super) fn decision(&self, s: &Shared, e: &watch::Entry) -> Option<(bool, String)> {
        let (ns, name, uid) = e.daemonset.as_ref()?;
        let t = s.daemonsets.get(&(ns.clone(), name.clone()))?;
        if &t.uid != uid {
            return None;
        }
        match revision::decide(t.view.as_ref()?, &e.labels) {
            Decision::Condition { needs, hash } => Some((needs, hash)),
            Decision::Skip(_) => None,
        }
    }
}

/// The hash of the ControllerRevision owned by `uid` with the highest `.revision`.
pub fn newest_owned(list: &Value, uid: &str) -> Option<String> {
    list["items"]
        .as_array()?
        .iter()
        .filter(|cr| {
            cr["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|o| o.iter().any(|o| o["uid"] == uid))
        })
        .max_by_key(|cr| cr["revision"].as_i64().unwrap_or(0))
        .and_then(|cr| {
            let m = &cr["metadata"];
            m["labels"]["controller-revision-hash"]
                .as_str()
                .map(str::to_owned)
                .or_else(|| {
                    m["name"]
                        .as_str()
                        .and_then(|n| n.rsplit('-').next())
                        .map(str::to_owned)
                })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn newest_owned_revision_is_the_highest_revision_of_the_owner() {
        let cr = |name: &str, rev: i64, owner: &str| {
            json!({"metadata": {"name": name, "labels": {"controller-revision-hash": name.rsplit('-').next().unwrap()},
                   "ownerReferences": [{"kind": "DaemonSet", "uid": owner}]}, "revision": rev})
        };
        let list = json!({"kind": "ControllerRevisionList", "items": [
            cr("cam-5b6c", 1, "ds-1"), cr("cam-7d9f", 2, "ds-1"), cr("cam-aaaa", 9, "other"),
        ]});
        assert_eq!(newest_owned(&list, "ds-1").as_deref(), Some("7d9f"));
        // `rollout undo`: the old revision is re-numbered as the newest.
        let undone = json!({"items": [cr("cam-5b6c", 3, "ds-1"), cr("cam-7d9f", 2, "ds-1")]});
        assert_eq!(newest_owned(&undone, "ds-1").as_deref(), Some("5b6c"));
        assert_eq!(newest_owned(&json!({"items": []}), "ds-1"), None);
    }
}
