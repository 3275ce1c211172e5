//! The REST answers: lists, gets, watches requested, pod DELETE (graceful), pod status PATCH,
//! Lease POST/PUT (compare-and-swap on resourceVersion) and DELETE.

use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

use super::store::{self, details, list_body, with_kind, Res, Selector};
use super::*;

impl Cluster {
    /// One REST request (authenticated already).
    pub fn handle(&self, method: &str, target: &str, content_type: &str, body: &[u8]) -> Reply {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let q = |k: &str| query_value(query, k);
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        if method == "GET" {
            if let Some(doc) = super::discovery::answer(&parts) {
                return json_reply(200, &doc);
            }
        }
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
            ["api", "v1", "namespaces", ns, "events"] if method == "POST" => {
                return self.event(ns, body)
            }
            ["api", "v1", rest @ ..] => {
                match route(rest, "pods", Res::Pods).or_else(|| config_route("", rest)) {
                    Some(r) => r,
                    None => return unknown(),
                }
            }
            ["apis", "rbac.authorization.k8s.io", "v1", rest @ ..] => {
                match config_route("rbac.authorization.k8s.io", rest) {
                    Some(r) => r,
                    None => return unknown(),
                }
            }
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
            ("PATCH", Some(name), None) if res == Res::DaemonSets => {
                self.patch_daemonset(ns.unwrap_or_default(), name, content_type, body)
            }
            ("PATCH", Some(name), Some("status")) if res == Res::Pods => {
                self.patch_status(ns.unwrap_or_default(), name, content_type, body)
            }
            ("POST", None, None) if res == Res::Leases && ns.is_some() => {
                self.create(res, ns.unwrap_or_default(), body)
            }
            ("POST", None, None) if store::CONFIG.iter().any(|c| c.0 == res) => {
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

    /// `POST /api/v1/namespaces/{ns}/events`: a core/v1 Event, answered 201 and put in the
    /// record (`event: "k8s_event"`, with its reason, type, message, pod and reporting node).
    /// Not kept as an object: nothing the agent reads lists Events.
    fn event(&self, ns: &str, body: &[u8]) -> Reply {
        let mut ev: Value = match serde_json::from_slice(body) {
            Ok(v @ Value::Object(_)) => v,
            _ => return status_reply(400, "BadRequest", "the body is not an Event object", None),
        };
        if ev["metadata"]["namespace"]
            .as_str()
            .is_some_and(|n| n != ns)
            || ev["involvedObject"]["name"].as_str().is_none()
            || ev["reason"].as_str().is_none()
        {
            return status_reply(
                422,
                "Invalid",
                "an Event needs involvedObject.name and reason, in the namespace of the URL",
                None,
            );
        }
        let mut st = self.lock();
        let uid = st.uid();
        let name = match ev["metadata"]["name"].as_str() {
            Some(n) => n.to_owned(),
            None => format!(
                "{}{}",
                ev["metadata"]["generateName"].as_str().unwrap_or("event."),
                st.suffix()
            ),
        };
        ev["metadata"]["name"] = json!(name);
        ev["metadata"]["namespace"] = json!(ns);
        ev["metadata"]["uid"] = json!(uid);
        ev["kind"] = json!("Event");
        ev["apiVersion"] = json!("v1");
        st.note_event(&ev);
        json_reply(201, &ev)
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
            if res == Res::Leases {
                st.note_lease("delete", &gone);
            }
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
            st.note_pod("delete", &p);
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
            let c = condition(&p, yurt_ota::pod::IMAGE_READY);
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

    /// `kubectl annotate`: a JSON merge (or strategic merge) patch of a DaemonSet's
    /// annotations, which set its strategy and budget. Only `metadata.annotations` is patched
    /// here; a patch of anything else is refused 422 (the stand-in's controller owns the rest).
    fn patch_daemonset(&self, ns: &str, name: &str, content_type: &str, body: &[u8]) -> Reply {
        let ct = content_type.split(';').next().unwrap_or_default().trim();
        if ct != "application/merge-patch+json" && ct != "application/strategic-merge-patch+json" {
            return status_reply(415, "UnsupportedMediaType", "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json", None);
        }
        let patch: Value = match serde_json::from_slice(body) {
            Ok(v @ Value::Object(_)) => v,
            _ => return status_reply(400, "BadRequest", "patch body must be a JSON object", None),
        };
        let only_annotations = patch.as_object().is_some_and(|m| {
            m.keys().all(|k| k == "metadata")
                && patch["metadata"].as_object().is_some_and(|m| {
                    m.keys()
                        .all(|k| k == "annotations" || k == "resourceVersion")
                })
        });
        if !only_annotations {
            return status_reply(422, "Invalid", &format!("daemonsets.apps {name:?} is invalid: yurt-ota-apisim patches metadata.annotations only"), Some(details(Res::DaemonSets, name)));
        }
        if self.lock().store.get(Res::DaemonSets, ns, name).is_none() {
            return not_found(Res::DaemonSets, name);
        }
        if let Some(m) = patch["metadata"]["annotations"].as_object() {
            for (k, v) in m {
                if let Err(e) = self.annotate(ns, name, k, v.as_str()) {
                    return status_reply(404, "NotFound", &e, None);
                }
            }
        }
        let st = self.lock();
        match st.store.get(Res::DaemonSets, ns, name) {
            Some(o) => Reply::Full {
                status: 200,
                content_type: JSON,
                body: with_kind(Res::DaemonSets, o).into_bytes(),
            },
            None => not_found(Res::DaemonSets, name),
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
            _ if res.cluster_scoped() => {
                if let Some(m) = obj["metadata"].as_object_mut() {
                    m.remove("namespace");
                }
            }
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
        if res == Res::Leases {
            if let Err(r) = super::validate::lease(&obj, false) {
                return r;
            }
        }
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
        if res == Res::Leases {
            st.note_lease("create", &obj);
        }
        drop(st);
        self.changed.notify_all();
        Reply::Full {
            status: 201,
            content_type: JSON,
            body: with_kind(res, &obj).into_bytes(),
        }
    }

    /// PUT: a compare-and-swap on `metadata.resourceVersion`, required (422 without, as the
    /// apiserver's Lease strategy allows no unconditional update); a missing Lease is created
    /// (201: the strategy allows create on update).
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
        let exists = self.lock().store.get(res, ns, name).is_some();
        if res == Res::Leases {
            if let Err(r) = super::validate::lease(&obj, exists) {
                return r;
            }
            if !exists {
                return self.create(res, ns, body);
            }
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
        if res == Res::Leases {
            st.note_lease("update", &obj);
        }
        drop(st);
        self.changed.notify_all();
        Reply::Full {
            status: 200,
            content_type: JSON,
            body: with_kind(res, &obj).into_bytes(),
        }
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

/// The kinds `objects.rs` serves, as a `Target`.
fn config_route<'a>(group: &str, rest: &[&'a str]) -> Option<Target<'a>> {
    super::objects::route(group, rest).map(|(r, ns, name)| (r, ns, name, None))
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
}
