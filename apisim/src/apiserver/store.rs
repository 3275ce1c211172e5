//! The stand-in's object store: objects by resource, one resourceVersion counter for all, and the
//! kept event history that watches are served from (compaction drops it).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::{json, Value};

/// The resources the stand-in serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Res {
    Pods,
    DaemonSets,
    ControllerRevisions,
    Leases,
    // What `kubectl apply -f packaging/kubernetes/rbac.yaml` creates (apisim/src/apiserver/
    // objects.rs): stored and served as written; the RBAC ones are enforced.
    Namespaces,
    ServiceAccounts,
    Secrets,
    Roles,
    RoleBindings,
    ClusterRoles,
    ClusterRoleBindings,
}

/// The kinds `objects.rs` serves: (resource, kind, plural, group, cluster-scoped).
pub const CONFIG: [(Res, &str, &str, &str, bool); 7] = [
    (Res::Namespaces, "Namespace", "namespaces", "", true),
    (
        Res::ServiceAccounts,
        "ServiceAccount",
        "serviceaccounts",
        "",
        false,
    ),
    (Res::Secrets, "Secret", "secrets", "", false),
    (
        Res::Roles,
        "Role",
        "roles",
        "rbac.authorization.k8s.io",
        false,
    ),
    (
        Res::RoleBindings,
        "RoleBinding",
        "rolebindings",
        "rbac.authorization.k8s.io",
        false,
    ),
    (
        Res::ClusterRoles,
        "ClusterRole",
        "clusterroles",
        "rbac.authorization.k8s.io",
        true,
    ),
    (
        Res::ClusterRoleBindings,
        "ClusterRoleBinding",
        "clusterrolebindings",
        "rbac.authorization.k8s.io",
        true,
    ),
];

fn config(res: Res) -> Option<&'static (Res, &'static str, &'static str, &'static str, bool)> {
    CONFIG.iter().find(|c| c.0 == res)
}

impl Res {
    /// Namespaces, ClusterRoles and ClusterRoleBindings: no namespace.
    pub fn cluster_scoped(self) -> bool {
        config(self).is_some_and(|c| c.4)
    }
    pub fn kind(self) -> &'static str {
        match self {
            Res::Pods => "Pod",
            Res::DaemonSets => "DaemonSet",
            Res::ControllerRevisions => "ControllerRevision",
            Res::Leases => "Lease",
            r => config(r).map_or("", |c| c.1),
        }
    }
    pub fn api_version(self) -> &'static str {
        match self {
            Res::Pods => "v1",
            Res::DaemonSets | Res::ControllerRevisions => "apps/v1",
            Res::Leases => "coordination.k8s.io/v1",
            r => match config(r).map_or("", |c| c.3) {
                "" => "v1",
                _ => "rbac.authorization.k8s.io/v1",
            },
        }
    }
    /// The plural as the apiserver names it in Status `details.kind`.
    pub fn plural(self) -> &'static str {
        match self {
            Res::Pods => "pods",
            Res::DaemonSets => "daemonsets",
            Res::ControllerRevisions => "controllerrevisions",
            Res::Leases => "leases",
            r => config(r).map_or("", |c| c.2),
        }
    }
    pub fn group(self) -> &'static str {
        match self {
            Res::Pods => "",
            Res::DaemonSets | Res::ControllerRevisions => "apps",
            Res::Leases => "coordination.k8s.io",
            r => config(r).map_or("", |c| c.3),
        }
    }
    /// `pods`, `daemonsets.apps`, `leases.coordination.k8s.io`, as in Status messages.
    pub fn qualified(self) -> String {
        match self.group() {
            "" => self.plural().to_owned(),
            g => format!("{}.{g}", self.plural()),
        }
    }
}

/// A watch event as kept in the history.
pub struct Event {
    pub rv: u64,
    pub res: Res,
    pub kind: &'static str,
    pub object: Arc<Value>,
    /// The object before this event (none for ADDED): a watcher with a selector judges the
    /// change from both, as the apiserver's cacher does.
    pub prev: Option<Arc<Value>>,
}

impl Event {
    /// This event as a watcher with `sel` sees it (`cache_watcher.go` `convertToWatchEvent`):
    /// an object that starts to match is ADDED, one that stops matching is DELETED (its last
    /// matching content at this event's resourceVersion), one matching before and after keeps
    /// its type; `None` when it matches neither before nor after.
    pub fn seen_by(&self, sel: &Selector) -> Option<(&'static str, Value)> {
        let now = self.kind != "DELETED" && sel.matches(&self.object);
        let before = self.prev.as_ref().is_some_and(|p| sel.matches(p));
        match (before, now) {
            (false, true) => Some(("ADDED", (*self.object).clone())),
            (true, true) => Some((self.kind, (*self.object).clone())),
            (true, false) => {
                let mut old = (**self.prev.as_ref()?).clone();
                old["metadata"]["resourceVersion"] = json!(self.rv.to_string());
                Some(("DELETED", old))
            }
            (false, false) => None,
        }
    }
}

pub struct Store {
    pub objects: BTreeMap<(Res, String, String), Value>,
    pub rv: u64,
    pub history: VecDeque<Event>,
    /// Watches from a resourceVersion below this are expired (410).
    pub compacted: u64,
    pub max_history: usize,
    /// Bumped by a forced compaction: open watches end with `ERROR` 410.
    pub epoch: u64,
}

impl Store {
    pub fn new(start_rv: u64, max_history: usize) -> Store {
        Store {
            objects: BTreeMap::new(),
            rv: start_rv,
            history: VecDeque::new(),
            compacted: start_rv,
            max_history,
            epoch: 0,
        }
    }

    pub fn get(&self, res: Res, ns: &str, name: &str) -> Option<&Value> {
        self.objects.get(&(res, ns.to_owned(), name.to_owned()))
    }

    /// Creates or replaces an object: assigns the next resourceVersion and records the event.
    pub fn put(&mut self, res: Res, mut obj: Value) -> Value {
        self.rv += 1;
        let (ns, name) = ns_name(&obj);
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let key = (res, ns, name);
        let prev = self.objects.insert(key, obj.clone()).map(Arc::new);
        let kind = if prev.is_some() { "MODIFIED" } else { "ADDED" };
        self.record(res, kind, obj.clone(), prev);
        obj
    }

    /// Removes an object; the DELETED event carries it at a new resourceVersion, as etcd does.
    pub fn remove(&mut self, res: Res, ns: &str, name: &str) -> Option<Value> {
        let prev = self
            .objects
            .remove(&(res, ns.to_owned(), name.to_owned()))?;
        let mut obj = prev.clone();
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.record(res, "DELETED", obj.clone(), Some(Arc::new(prev)));
        Some(obj)
    }

    fn record(&mut self, res: Res, kind: &'static str, object: Value, prev: Option<Arc<Value>>) {
        self.history.push_back(Event {
            rv: self.rv,
            res,
            kind,
            object: Arc::new(object),
            prev,
        });
        while self.history.len() > self.max_history {
            if let Some(e) = self.history.pop_front() {
                self.compacted = e.rv;
            }
        }
    }

    /// A forced compaction, as if writes had come after every version a client holds: drops the
    /// whole history and moves the resourceVersion on by one, so only the new one can be
    /// watched from. Every watch from before it is expired, whether it is open (`epoch`) or
    /// starts after (a test that drops the open ones at once then sees the 410 either way,
    /// however the threads are scheduled).
    pub fn compact(&mut self) {
        self.rv += 1;
        self.history.clear();
        self.compacted = self.rv;
        self.epoch += 1;
    }

    pub fn list<'a>(
        &'a self,
        res: Res,
        ns: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects
            .iter()
            .filter(move |((r, n, _), _)| *r == res && ns.is_none_or(|ns| ns == n))
            .map(|(_, v)| v)
    }
}

pub fn ns_name(obj: &Value) -> (String, String) {
    let m = &obj["metadata"];
    (
        m["namespace"].as_str().unwrap_or_default().to_owned(),
        m["name"].as_str().unwrap_or_default().to_owned(),
    )
}

/// What a list or watch selects: namespace, `fieldSelector`, `labelSelector` (every form the
/// apiserver reads: `super::labels`).
#[derive(Debug, Default, Clone)]
pub struct Selector {
    pub namespace: Option<String>,
    pub fields: Vec<(String, String)>,
    pub labels: Vec<super::labels::Requirement>,
}

impl Selector {
    /// Parses `spec.nodeName=x,metadata.name=y` and a label selector; unsupported or malformed
    /// ones are errors worded like the apiserver's.
    pub fn parse(
        namespace: Option<&str>,
        fields: Option<&str>,
        labels: Option<&str>,
    ) -> Result<Selector, String> {
        let mut s = Selector {
            namespace: namespace.map(str::to_owned),
            ..Selector::default()
        };
        for term in fields
            .unwrap_or_default()
            .split(',')
            .filter(|t| !t.is_empty())
        {
            let (k, v) = term
                .split_once("==")
                .or_else(|| term.split_once('='))
                .ok_or_else(|| format!("invalid selector: '{term}'; can't understand '{term}'"))?;
            if !matches!(k, "spec.nodeName" | "metadata.name" | "metadata.namespace") {
                return Err(format!("field label not supported: {k}"));
            }
            s.fields.push((k.to_owned(), v.to_owned()));
        }
        s.labels = super::labels::parse(labels.unwrap_or_default())?;
        Ok(s)
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let m = &obj["metadata"];
        if let Some(ns) = &self.namespace {
            if m["namespace"] != ns.as_str() {
                return false;
            }
        }
        let fields_ok = self.fields.iter().all(|(k, v)| {
            let got = match k.as_str() {
                "spec.nodeName" => obj["spec"]["nodeName"].as_str(),
                "metadata.name" => m["name"].as_str(),
                _ => m["namespace"].as_str(),
            };
            got.unwrap_or_default() == v
        });
        fields_ok && self.labels.iter().all(|r| r.matches(&m["labels"]))
    }
}

/// One object as the apiserver writes it alone (GET, watch event): `kind` and `apiVersion` first.
pub fn with_kind(res: Res, obj: &Value) -> String {
    let rest = obj.to_string();
    let rest = rest.strip_prefix('{').unwrap_or(&rest);
    let sep = if rest == "}" { "" } else { "," };
    format!(
        "{{\"kind\":\"{}\",\"apiVersion\":\"{}\"{sep}{rest}",
        res.kind(),
        res.api_version()
    )
}

/// A `*List`: items without their own `kind`/`apiVersion`, as the apiserver lists them.
pub fn list_body<'a>(res: Res, rv: u64, items: impl Iterator<Item = &'a Value>) -> Vec<u8> {
    let mut out = format!(
        "{{\"kind\":\"{}List\",\"apiVersion\":\"{}\",\"metadata\":{{\"resourceVersion\":\"{rv}\"}},\"items\":[",
        res.kind(),
        res.api_version()
    )
    .into_bytes();
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, item).expect("serializable");
    }
    out.extend_from_slice(b"]}");
    out
}

/// One watch event line (newline included).
pub fn event_line(kind: &str, res: Res, obj: &Value) -> Vec<u8> {
    format!(
        "{{\"type\":\"{kind}\",\"object\":{}}}\n",
        with_kind(res, obj)
    )
    .into_bytes()
}

/// A `BOOKMARK`: only `metadata.resourceVersion` (and the initial-events-end annotation), with the
/// empty spec/status the apiserver's encoder leaves for pods (see the recorded stream).
pub fn bookmark_line(res: Res, rv: u64, initial_end: bool) -> Vec<u8> {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let tail = match res {
        Res::Pods => ",\"spec\":{\"containers\":null},\"status\":{}",
        Res::DaemonSets => ",\"spec\":{\"selector\":null,\"template\":{\"metadata\":{},\"spec\":{\"containers\":null}},\"updateStrategy\":{}},\"status\":{\"currentNumberScheduled\":0,\"numberMisscheduled\":0,\"desiredNumberScheduled\":0,\"numberReady\":0}",
        Res::ControllerRevisions => ",\"data\":null,\"revision\":0",
        Res::Leases => ",\"spec\":{}",
        _ => "",
    };
    format!(
        "{{\"type\":\"BOOKMARK\",\"object\":{{\"kind\":\"{}\",\"apiVersion\":\"{}\",\"metadata\":{meta}{tail}}}}}\n",
        res.kind(),
        res.api_version()
    )
    .into_bytes()
}

/// A `v1.Status` failure body, as the apiserver writes it.
pub fn status(code: u16, reason: &str, message: &str, details: Option<Value>) -> Value {
    let mut s = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                       "message": message, "reason": reason, "code": code});
    if let Some(d) = details {
        s["details"] = d;
    }
    s
}

/// `details` naming an object: `{"name":…,"group":…,"kind":"leases"}` (no group for core).
pub fn details(res: Res, name: &str) -> Value {
    let mut d = json!({"name": name, "kind": res.plural()});
    if !res.group().is_empty() {
        d["group"] = json!(res.group());
    }
    d
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let t = target.as_object_mut().expect("object");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// Strategic merge patch of a pod status, as far as the agent uses it: `conditions` merged by
/// `type`, everything else as a merge patch.
pub fn strategic_status_patch(pod: &mut Value, patch: &Value) {
    let mut patch = patch.clone();
    let conditions = patch
        .get_mut("status")
        .and_then(|s| s.as_object_mut())
        .and_then(|s| s.remove("conditions"));
    merge_patch(pod, &patch);
    let Some(Value::Array(new)) = conditions else {
        return;
    };
    if !pod["status"]["conditions"].is_array() {
        pod["status"]["conditions"] = json!([]);
    }
    let old = pod["status"]["conditions"].as_array_mut().expect("array");
    for c in new {
        match old.iter_mut().find(|o| o["type"] == c["type"]) {
            Some(o) => merge_patch(o, &c),
            None => old.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_as_the_apiserver_reads_them() {
        let pod = json!({"metadata": {"name": "a", "namespace": "n", "labels": {"app": "x"}},
                         "spec": {"nodeName": "edge-node-1"}});
        let sel = |f: &str, l: &str| Selector::parse(None, Some(f), Some(l)).unwrap();
        assert!(sel("spec.nodeName=edge-node-1", "").matches(&pod));
        assert!(sel("spec.nodeName==edge-node-1,metadata.name=a", "app=x").matches(&pod));
        assert!(!sel("spec.nodeName=edge-node-2", "").matches(&pod));
        assert!(!sel("", "app!=x").matches(&pod));
        assert!(!sel("", "app=y").matches(&pod));
        assert!(Selector::parse(None, Some("status.phase=Running"), None).is_err());
        assert!(!Selector::parse(Some("other"), None, None)
            .unwrap()
            .matches(&pod));
    }

    #[test]
    fn history_compaction_and_resource_versions() {
        let mut s = Store::new(100, 3);
        for i in 0..5 {
            s.put(
                Res::Leases,
                json!({"metadata": {"name": format!("l{i}"), "namespace": "n"}}),
            );
        }
        assert_eq!((s.rv, s.history.len(), s.compacted), (105, 3, 102));
        assert_eq!(
            s.get(Res::Leases, "n", "l4").unwrap()["metadata"]["resourceVersion"],
            "105"
        );
        let gone = s.remove(Res::Leases, "n", "l4").unwrap();
        assert_eq!(gone["metadata"]["resourceVersion"], "106");
        assert_eq!(s.history.back().unwrap().kind, "DELETED");
        s.compact();
        assert_eq!((s.history.len(), s.compacted, s.epoch), (0, 107, 1));
    }

    #[test]
    fn patches() {
        let mut pod = json!({"status": {"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True"}, {"type": "PodImageReady", "status": "True", "message": "m1"}]}});
        let patch = json!({"status": {"conditions": [{"type": "PodImageReady", "status": "False", "message": "m2"}]}});
        let mut strategic = pod.clone();
        strategic_status_patch(&mut strategic, &patch);
        assert_eq!(
            strategic["status"]["conditions"].as_array().unwrap().len(),
            2
        );
        assert_eq!(strategic["status"]["conditions"][1]["message"], "m2");
        merge_patch(&mut pod, &patch);
        assert_eq!(
            pod["status"]["conditions"].as_array().unwrap().len(),
            1,
            "a merge patch replaces lists"
        );
        merge_patch(&mut pod, &json!({"status": {"phase": null}}));
        assert!(pod["status"].get("phase").is_none());
    }

    #[test]
    fn wire_shapes() {
        let obj = json!({"metadata": {"name": "a"}});
        assert_eq!(
            with_kind(Res::Leases, &obj),
            r#"{"kind":"Lease","apiVersion":"coordination.k8s.io/v1","metadata":{"name":"a"}}"#
        );
        assert_eq!(
            String::from_utf8(list_body(Res::Pods, 7, std::iter::empty())).unwrap(),
            r#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"7"},"items":[]}"#
        );
        assert_eq!(String::from_utf8(bookmark_line(Res::Pods, 550, true)).unwrap(),
                   "{\"type\":\"BOOKMARK\",\"object\":{\"kind\":\"Pod\",\"apiVersion\":\"v1\",\"metadata\":{\"annotations\":{\"k8s.io/initial-events-end\":\"true\"},\"resourceVersion\":\"550\"},\"spec\":{\"containers\":null},\"status\":{}}}\n");
    }
}
