//! The fleet's Lease slots and DaemonSet facts over the Kubernetes API (SPEC 6b), for any
//! client that can send one request (`Kube`): the apiserver upstream implements it with its
//! HTTPS client, the tests with ureq over rustls against the apiserver stand-in.
//!
//! `GET/POST/PUT /apis/coordination.k8s.io/v1/namespaces/{ns}/leases[/{name}]` (a GET of the
//! collection lists the namespace's Leases); a 409 is
//! `Conflict` (another node wrote first); a 404 on an update too (the Lease moved on: gone).

use serde_json::Value;

use super::lease::{Lease, LeaseError, Leases};
use super::strategy::{MAX_UNAVAILABLE_ANNOTATION, STRATEGY_ANNOTATION};
use super::view::DaemonSetInfo;

/// One request: method, path (from `/apis/…`), JSON body; the status and body answered, or
/// why there was no answer.
pub trait Kube: Send + Sync {
    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<(u16, Vec<u8>), String>;
}

/// `Leases` over the Kubernetes API.
pub struct LeaseApi<K>(pub K);

fn path(ns: &str, name: Option<&str>) -> String {
    let base = format!("/apis/coordination.k8s.io/v1/namespaces/{ns}/leases");
    match name {
        Some(n) => format!("{base}/{n}"),
        None => base,
    }
}

fn unexpected(what: &str, status: u16, body: &[u8]) -> LeaseError {
    LeaseError::Unavailable(format!(
        "{what} answered {status}: {}",
        crate::excerpt::excerpt(body)
    ))
}

fn parse(what: &str, body: &[u8]) -> Result<Lease, LeaseError> {
    Lease::from_json(body).map_err(|e| LeaseError::Unavailable(format!("{what}: {e}")))
}

impl<K: Kube> Leases for LeaseApi<K> {
    fn list(&self, namespace: &str) -> Result<Vec<Lease>, LeaseError> {
        let p = path(namespace, None);
        let what = format!("GET {p}");
        match self.0.request("GET", &p, None) {
            Ok((200, body)) => Lease::list_from_json(&body)
                .map_err(|e| LeaseError::Unavailable(format!("{what}: {e}"))),
            Ok((status, body)) => Err(unexpected(&what, status, &body)),
            Err(e) => Err(LeaseError::Unavailable(format!("{what}: {e}"))),
        }
    }

    fn get(&self, namespace: &str, name: &str) -> Result<Option<Lease>, LeaseError> {
        let p = path(namespace, Some(name));
        let what = format!("GET {p}");
        match self.0.request("GET", &p, None) {
            Ok((200, body)) => parse(&what, &body).map(Some),
            Ok((404, _)) => Ok(None),
            Ok((status, body)) => Err(unexpected(&what, status, &body)),
            Err(e) => Err(LeaseError::Unavailable(format!("{what}: {e}"))),
        }
    }

    fn create(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        let p = path(&lease.namespace, None);
        let what = format!("POST {p}");
        let body = lease.to_json().to_string();
        match self.0.request("POST", &p, Some(body.as_bytes())) {
            Ok((200..=201, body)) => parse(&what, &body),
            Ok((409, _)) => Err(LeaseError::Conflict),
            Ok((status, body)) => Err(unexpected(&what, status, &body)),
            Err(e) => Err(LeaseError::Unavailable(format!("{what}: {e}"))),
        }
    }

    fn update(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        let p = path(&lease.namespace, Some(&lease.name));
        let what = format!("PUT {p}");
        let body = lease.to_json().to_string();
        match self.0.request("PUT", &p, Some(body.as_bytes())) {
            Ok((200..=201, body)) => parse(&what, &body),
            Ok((404 | 409, _)) => Err(LeaseError::Conflict),
            Ok((status, body)) => Err(unexpected(&what, status, &body)),
            Err(e) => Err(LeaseError::Unavailable(format!("{what}: {e}"))),
        }
    }
}

/// The facts of a `apps/v1` DaemonSet the fleet logic needs; `None` without a uid or name.
pub fn daemonset_info(ds: &Value) -> Option<DaemonSetInfo> {
    let meta = &ds["metadata"];
    let ann = &meta["annotations"];
    let text = |v: &Value| v.as_str().map(str::to_owned);
    Some(DaemonSetInfo {
        uid: text(&meta["uid"])?,
        namespace: text(&meta["namespace"]).unwrap_or_default(),
        name: text(&meta["name"])?,
        strategy: text(&ann[STRATEGY_ANNOTATION]),
        max_unavailable: text(&ann[MAX_UNAVAILABLE_ANNOTATION]),
        desired_number_scheduled: ds["status"]["desiredNumberScheduled"]
            .as_u64()
            .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX)),
        min_ready_seconds: ds["spec"]["minReadySeconds"]
            .as_u64()
            .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// (answers to give, requests seen)
    type Script = (Vec<(u16, String)>, Vec<String>);

    /// Answers from a script, recording each request.
    struct Scripted(Mutex<Script>);

    impl Kube for Scripted {
        fn request(&self, m: &str, p: &str, _: Option<&[u8]>) -> Result<(u16, Vec<u8>), String> {
            let mut g = self.0.lock().unwrap();
            g.1.push(format!("{m} {p}"));
            if g.0.is_empty() {
                return Err("connection refused".into());
            }
            let (s, b) = g.0.remove(0);
            Ok((s, b.into_bytes()))
        }
    }

    #[test]
    fn statuses_map_to_lease_outcomes() {
        let lease = Lease {
            namespace: "fleet".into(),
            name: "fleet.gw.0".into(),
            resource_version: "7".into(),
            holder: Some("node-a".into()),
            lease_duration_seconds: 310,
            acquire_time: None,
            renew_time: None,
            lease_transitions: 0,
            failed: None,
        };
        let body = lease.to_json().to_string();
        let api = LeaseApi(Scripted(Mutex::new((
            vec![
                (200, body.clone()),
                (404, String::new()),
                (409, String::new()),
                (404, String::new()),
                (403, "{\"reason\":\"Forbidden\"}".into()),
                (200, "not json".into()),
            ],
            Vec::new(),
        ))));
        assert_eq!(api.get("fleet", "fleet.gw.0").unwrap(), Some(lease.clone()));
        assert_eq!(api.get("fleet", "fleet.gw.0").unwrap(), None);
        assert_eq!(api.create(&lease), Err(LeaseError::Conflict));
        assert_eq!(
            api.update(&lease),
            Err(LeaseError::Conflict),
            "gone: moved on"
        );
        assert!(matches!(api.update(&lease), Err(LeaseError::Unavailable(e)) if e.contains("403")));
        assert!(matches!(
            api.get("fleet", "x"),
            Err(LeaseError::Unavailable(_))
        ));
        assert!(
            matches!(api.get("fleet", "x"), Err(LeaseError::Unavailable(e)) if e.contains("refused"))
        );
        let list = LeaseApi(Scripted(Mutex::new((
            vec![
                (
                    200,
                    format!("{{\"kind\":\"LeaseList\",\"items\":[{body}]}}"),
                ),
                (403, String::new()),
            ],
            Vec::new(),
        ))));
        assert_eq!(list.list("fleet").unwrap(), vec![lease.clone()]);
        assert!(matches!(list.list("fleet"), Err(LeaseError::Unavailable(e)) if e.contains("403")));
        assert_eq!(
            list.0 .0.lock().unwrap().1[0],
            "GET /apis/coordination.k8s.io/v1/namespaces/fleet/leases"
        );
        assert_eq!(
            api.0 .0.lock().unwrap().1[..5],
            [
                "GET /apis/coordination.k8s.io/v1/namespaces/fleet/leases/fleet.gw.0",
                "GET /apis/coordination.k8s.io/v1/namespaces/fleet/leases/fleet.gw.0",
                "POST /apis/coordination.k8s.io/v1/namespaces/fleet/leases",
                "PUT /apis/coordination.k8s.io/v1/namespaces/fleet/leases/fleet.gw.0",
                "PUT /apis/coordination.k8s.io/v1/namespaces/fleet/leases/fleet.gw.0",
            ]
        );
    }

    #[test]
    fn daemonset_facts_are_read_from_the_object() {
        let ds = serde_json::json!({
            "metadata": {"name": "gw", "namespace": "fleet", "uid": "u1",
                "annotations": {"apps.openyurt.io/update-strategy": "AdvancedRollingUpdate",
                                "apps.openyurt.io/max-unavailable": "2"}},
            "spec": {"minReadySeconds": 7},
            "status": {"desiredNumberScheduled": 5}
        });
        assert_eq!(
            daemonset_info(&ds),
            Some(DaemonSetInfo {
                uid: "u1".into(),
                namespace: "fleet".into(),
                name: "gw".into(),
                strategy: Some("AdvancedRollingUpdate".into()),
                max_unavailable: Some("2".into()),
                desired_number_scheduled: 5,
                min_ready_seconds: 7,
            })
        );
        assert_eq!(daemonset_info(&serde_json::json!({"metadata": {}})), None);
    }
}
