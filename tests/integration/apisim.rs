//! The kube-apiserver stand-in (`yurt-ota-apisim`) over real TLS sockets, with the client the
//! agent uses (ureq over rustls, the generated CA as the only root): authentication, list and
//! watch in the recorded shapes; the helpers `apisim_writes` uses too.

use std::io::{BufRead, BufReader};
use std::time::Duration;

use serde_json::{json, Value};
use yurt_ota_apisim::apiserver::server::{Config, Handle};
use yurt_ota_apisim::apiserver::Options;

use crate::util::{apisim_agent, apisim_nodes, apisim_start, ApiClient};

pub(crate) const WATCH_FIXTURE: &str = "kind-v1.36-kube-system-pods-watch-initial-events.jsonl";

pub(crate) fn start_with(nodes: usize, f: impl FnOnce(&mut Config)) -> (Handle, tempfile::TempDir) {
    let options = Options {
        nodes: apisim_nodes(nodes),
        grace: Duration::from_millis(100),
        recreate_delay: Duration::from_millis(150),
        ready_delay: Duration::from_millis(150),
        observe_delay: Duration::from_millis(100),
        pull_delay: Duration::from_millis(150),
        ..Options::default()
    };
    apisim_start(Duration::from_millis(300), options, f)
}

pub(crate) fn start() -> (Handle, tempfile::TempDir) {
    start_with(1, |_| {})
}

/// `ApiClient` with the shapes these tests send.
pub(crate) type Client = ApiClient;

pub(crate) fn tls(ca_pem: &str, client: Option<(&str, &str)>) -> ureq::Agent {
    apisim_agent(ca_pem, client)
}

impl ApiClient {
    pub(crate) fn send(&self, method: &str, path: &str, ct: &str, body: &Value) -> (u16, Value) {
        let (s, b) = self
            .call(method, path, ct, Some(body.to_string().as_bytes()))
            .unwrap();
        (s, serde_json::from_slice(&b).unwrap())
    }
    /// A watch, read line by line.
    pub(crate) fn watch(&self, query: &str) -> impl Iterator<Item = std::io::Result<Value>> {
        self.watch_at("/api/v1/pods", query)
    }
    pub(crate) fn watch_at(
        &self,
        path: &str,
        query: &str,
    ) -> impl Iterator<Item = std::io::Result<Value>> {
        let r = self
            .agent
            .get(format!("{}{path}?{query}", self.base))
            .header("Authorization", self.auth())
            .call()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(r.headers()["content-type"], "application/json");
        BufReader::new(r.into_body().into_reader())
            .lines()
            .map(|l| l.map(|l| serde_json::from_str(&l).unwrap()))
    }
}

pub(crate) fn control(h: &Handle, path: &str) -> Value {
    let mut r = ureq::post(format!("{}{path}", h.control_url()))
        .send_empty()
        .unwrap();
    serde_json::from_str::<Value>(&r.body_mut().read_to_string().unwrap()).unwrap()
}

pub(crate) fn node_pods(c: &Client, node: &str) -> Value {
    let (s, list) = c.get(&format!(
        "/api/v1/pods?fieldSelector=spec.nodeName%3D{node}"
    ));
    assert_eq!(s, 200, "{list}");
    list
}

pub(crate) fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

pub(crate) fn fixture_events() -> Vec<Value> {
    let path = format!(
        "{}/tests/fixtures/{WATCH_FIXTURE}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub(crate) fn assert_status(v: &Value, code: u16, reason: &str) {
    assert_eq!(
        keys(v),
        keys(&json!({"kind":0,"apiVersion":0,"metadata":0,"status":0,"message":0,"reason":0,"code":0}))
            .into_iter()
            .chain(v.get("details").map(|_| "details".to_owned()))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>(),
        "{v}"
    );
    assert_eq!(
        (v["kind"].as_str(), v["status"].as_str()),
        (Some("Status"), Some("Failure"))
    );
    assert_eq!(
        (v["code"].as_u64(), v["reason"].as_str()),
        (Some(u64::from(code)), Some(reason)),
        "{v}"
    );
}

#[test]
fn authentication_token_client_certificate_and_ca() {
    let (h, dir) = start();
    let path = format!("{}/api/v1/pods", h.url());
    // No credentials, a wrong token: 401 with a Status.
    let agent = tls(&h.ca_pem, None);
    for auth in [None, Some("Bearer nope")] {
        let mut req = agent.get(&path);
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let mut r = req.call().unwrap();
        assert_eq!(r.status().as_u16(), 401);
        assert_status(
            &serde_json::from_str::<Value>(&r.body_mut().read_to_string().unwrap()).unwrap(),
            401,
            "Unauthorized",
        );
    }
    // The token from the written file; the client certificate from the written files.
    let token = std::fs::read_to_string(dir.path().join("token")).unwrap();
    let r = agent
        .get(&path)
        .header("Authorization", format!("Bearer {token}"))
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (cert, key) = (
        std::fs::read_to_string(dir.path().join("client.crt")).unwrap(),
        std::fs::read_to_string(dir.path().join("client.key")).unwrap(),
    );
    let r = tls(&h.ca_pem, Some((&cert, &key)))
        .get(&path)
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // Another stand-in's CA is refused at the handshake.
    let (other, _d) = start();
    let e = tls(&other.ca_pem, None).get(&path).call().unwrap_err();
    assert!(format!("{e:?}").contains("InvalidCertificate"), "{e:?}");
    // A client certificate from a foreign CA: the handshake completes and the request is 401,
    // as a real apiserver answers; with the right token beside it, the token authenticates.
    let foreign = tls(
        &h.ca_pem,
        Some((&other.client_cert_pem, &other.client_key_pem)),
    );
    let mut r = foreign.get(&path).call().unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_status(
        &serde_json::from_str::<Value>(&r.body_mut().read_to_string().unwrap()).unwrap(),
        401,
        "Unauthorized",
    );
    let r = foreign
        .get(&path)
        .header("Authorization", format!("Bearer {token}"))
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // A rotated token: the old one is refused, the file holds the new one.
    control(&h, "/sim/rotate-token");
    let r = agent
        .get(&path)
        .header("Authorization", format!("Bearer {token}"))
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let rotated = std::fs::read_to_string(dir.path().join("token")).unwrap();
    assert_ne!(rotated, token);
    let r = agent
        .get(&path)
        .header("Authorization", format!("Bearer {rotated}"))
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // The kubeconfig names the server, carries the CA and the token.
    let kc = std::fs::read_to_string(dir.path().join("kubeconfig")).unwrap();
    assert!(
        kc.contains(&format!("server: {}", h.url())) && kc.contains("certificate-authority-data: ")
    );
    assert!(kc.contains(&format!("token: {token}")) && kc.contains("current-context: apisim"));
}

#[test]
fn list_has_the_recorded_shape_and_parses_as_a_snapshot() {
    let (h, _d) = start_with(3, |_| {});
    let c = Client::admin(&h);
    let fixture: Value = serde_json::from_slice(
        &std::fs::read(format!(
            "{}/tests/fixtures/kind-v1.36-kube-system-podlist.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap(),
    )
    .unwrap();
    for node in ["edge-node-1", "edge-node-3"] {
        let list = node_pods(&c, node);
        assert_eq!(keys(&list), keys(&fixture));
        assert_eq!(keys(&list["metadata"]), ["resourceVersion"]);
        let items = list["items"].as_array().unwrap();
        assert_eq!(
            items.len(),
            5 + 8 - 2,
            "5 DaemonSet pods, 4 static, 2 ReplicaSet"
        );
        for item in items {
            assert_eq!(
                keys(item),
                keys(&fixture["items"][0]),
                "items carry no kind/apiVersion"
            );
            assert_eq!(item["spec"]["nodeName"], node);
        }
        let snap =
            yurt_ota::snapshot::Snapshot::build(&serde_json::to_vec(&list).unwrap()).unwrap();
        assert_eq!(snap.pods.len(), items.len());
        let ds = snap
            .pods
            .iter()
            .filter(|p| p.owner().unwrap().kind == "DaemonSet")
            .count();
        assert_eq!(ds, 5);
    }
    // The DaemonSet and its revisions, as the agent's revision detection reads them.
    let (s, ds) = c.get("/apis/apps/v1/namespaces/kube-system/daemonsets/kube-proxy");
    assert_eq!(s, 200);
    assert_eq!(
        (ds["kind"].as_str(), ds["apiVersion"].as_str()),
        (Some("DaemonSet"), Some("apps/v1"))
    );
    assert_eq!(ds["spec"]["updateStrategy"]["type"], "OnDelete");
    assert_eq!(
        ds["metadata"]["annotations"]["apps.openyurt.io/update-strategy"],
        "OTA"
    );
    assert_eq!(
        ds["metadata"]["annotations"]["deprecated.daemonset.template.generation"],
        "3"
    );
    assert_eq!(
        ds["status"]["observedGeneration"],
        ds["metadata"]["generation"]
    );
    assert_eq!(
        (
            ds["status"]["desiredNumberScheduled"].as_u64(),
            ds["status"]["updatedNumberScheduled"].as_u64()
        ),
        (Some(3), Some(0))
    );
    let (s, crs) = c.get(
        "/apis/apps/v1/namespaces/kube-system/controllerrevisions?labelSelector=app%3Dkube-proxy",
    );
    assert_eq!(
        (s, crs["kind"].as_str()),
        (200, Some("ControllerRevisionList"))
    );
    let newest = crs["items"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|r| r["revision"].as_u64())
        .unwrap();
    assert_eq!(newest["revision"], 3);
    assert_eq!(
        newest["metadata"]["ownerReferences"][0]["uid"],
        ds["metadata"]["uid"]
    );
    let pod = &node_pods(&c, "edge-node-2")["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| {
            p["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with("kube-proxy-")
        })
        .unwrap()
        .clone();
    assert_eq!(
        pod["metadata"]["labels"]["pod-template-generation"], "2",
        "one revision behind"
    );
    assert_ne!(
        pod["metadata"]["labels"]["controller-revision-hash"],
        newest["metadata"]["labels"]["controller-revision-hash"]
    );
    // GET of one pod has kind/apiVersion; a missing one is the real 404 Status.
    let (s, one) = c.get(&format!(
        "/api/v1/namespaces/kube-system/pods/{}",
        pod["metadata"]["name"].as_str().unwrap()
    ));
    assert_eq!(
        (s, one["kind"].as_str(), &one["metadata"]["uid"]),
        (200, Some("Pod"), &pod["metadata"]["uid"])
    );
    let (s, nf) = c.get("/api/v1/namespaces/kube-system/pods/nope");
    assert_eq!(s, 404);
    assert_status(&nf, 404, "NotFound");
    assert_eq!(nf["message"], "pods \"nope\" not found");
}

#[test]
fn initial_events_watch_matches_the_recorded_stream() {
    let (h, _d) = start();
    let c = Client::new(&h);
    let fixture = fixture_events();
    let events: Vec<Value> = c
        .watch("fieldSelector=spec.nodeName%3Dedge-node-1&watch=1&allowWatchBookmarks=true&resourceVersion=0&resourceVersionMatch=NotOlderThan&sendInitialEvents=true&timeoutSeconds=1")
        .map(Result::unwrap)
        .collect();
    let added: Vec<&Value> = events.iter().filter(|e| e["type"] == "ADDED").collect();
    assert_eq!(added.len(), 11);
    let first_bookmark = events.iter().position(|e| e["type"] == "BOOKMARK").unwrap();
    assert_eq!(
        first_bookmark, 11,
        "the initial-events-end bookmark follows the ADDED events"
    );
    let (want_added, want_bm) = (&fixture[0], fixture.last().unwrap());
    assert_eq!(keys(added[0]), keys(want_added));
    assert_eq!(keys(&added[0]["object"]), keys(&want_added["object"]));
    assert!(keys(&added[0]["object"]["metadata"]).contains(&"managedFields".to_owned()));
    let bm = &events[first_bookmark];
    assert_eq!(keys(&bm["object"]), keys(&want_bm["object"]));
    assert_eq!(
        bm["object"]["metadata"]["annotations"],
        want_bm["object"]["metadata"]["annotations"]
    );
    assert_eq!(bm["object"]["spec"], want_bm["object"]["spec"]);
    assert_eq!(
        keys(&bm["object"]["metadata"]),
        keys(&want_bm["object"]["metadata"])
    );
    // The stream ended at its timeout with the final chunk: the same client watches on.
    let rv = bm["object"]["metadata"]["resourceVersion"]
        .as_str()
        .unwrap();
    let again: Vec<Value> = c
        .watch(&format!("watch=1&resourceVersion={rv}&timeoutSeconds=1"))
        .map(Result::unwrap)
        .collect();
    assert!(again.is_empty(), "{again:?}");
    // Every ADDED object parses with the project's pod type.
    for e in added {
        let p: yurt_ota::pod::Pod = serde_json::from_value(e["object"].clone()).unwrap();
        assert_eq!(p.spec.node_name, "edge-node-1");
    }
}

#[test]
fn list_then_watch_sees_delete_recreate_ready_and_bookmarks() {
    let (h, _d) = start_with(2, |_| {});
    let c = Client::new(&h);
    let list = node_pods(&c, "edge-node-1");
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let old = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| {
            p["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with("can-gateway-")
        })
        .unwrap()
        .clone();
    let (name, uid) = (
        old["metadata"]["name"].as_str().unwrap(),
        old["metadata"]["uid"].as_str().unwrap(),
    );
    let mut watch = c.watch(&format!(
        "fieldSelector=spec.nodeName%3Dedge-node-1&watch=1&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=5"
    ));
    // A pod on the other node changes: not in this watch.
    let other = node_pods(&c, "edge-node-2")["items"][0]["metadata"].clone();
    let del =
        |ns: &str, n: &str, uid: &str| {
            c.send("DELETE", &format!("/api/v1/namespaces/{ns}/pods/{n}"), "application/json",
               &json!({"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": uid}}))
        };
    let (s, _) = del(
        other["namespace"].as_str().unwrap(),
        other["name"].as_str().unwrap(),
        other["uid"].as_str().unwrap(),
    );
    assert_eq!(s, 200);
    let (s, deleted) = del("fleet", name, uid);
    assert_eq!(s, 200, "{deleted}");
    assert!(deleted["metadata"]["deletionTimestamp"].is_string());
    let mut seen = Vec::new();
    let mut last_rv = rv.parse::<u64>().unwrap();
    let mut bookmarks = 0;
    for e in watch.by_ref() {
        let e = e.unwrap();
        let o = &e["object"];
        let erv: u64 = o["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(erv >= last_rv, "resourceVersions only grow");
        last_rv = erv;
        if e["type"] == "BOOKMARK" {
            bookmarks += 1;
            assert_eq!(keys(o), keys(&fixture_events().last().unwrap()["object"]));
            if seen.len() >= 4 {
                break;
            }
            continue;
        }
        assert_eq!(o["spec"]["nodeName"], "edge-node-1", "{e}");
        let p: yurt_ota::pod::Pod = serde_json::from_value(o.clone()).unwrap();
        seen.push((
            e["type"].as_str().unwrap().to_owned(),
            p.metadata.name.clone(),
            p.is_ready(),
            p.is_deleting(),
        ));
    }
    assert!(bookmarks >= 1);
    assert_eq!(seen[0], ("MODIFIED".into(), name.to_owned(), true, true));
    assert_eq!(seen[1].0, "DELETED");
    assert_eq!((seen[2].0.as_str(), seen[2].2), ("ADDED", false));
    assert!(
        seen[2].1.starts_with("can-gateway-") && seen[2].1 != name,
        "a new name"
    );
    assert_eq!(
        (seen[3].0.as_str(), &seen[3].1, seen[3].2),
        ("MODIFIED", &seen[2].1, true)
    );
    // Gone: 404; the replacement has a new uid at the DaemonSet's current revision.
    let (s, nf) = del("fleet", name, uid);
    assert_eq!(s, 404);
    assert_status(&nf, 404, "NotFound");
    let (_, new) = c.get(&format!("/api/v1/namespaces/fleet/pods/{}", seen[2].1));
    assert_ne!(new["metadata"]["uid"].as_str(), Some(uid));
    assert_eq!(new["metadata"]["labels"]["pod-template-generation"], "8");
}

/// As the apiserver's cacher: a BOOKMARK 2 s before the watch's `timeoutSeconds` ends, however
/// long the periodic bookmark interval, so the client re-watches from a fresh version.
#[test]
fn a_bookmark_two_seconds_before_the_watch_times_out() {
    let (h, _d) = start_with(1, |c| c.bookmark_interval = Duration::from_secs(600));
    let c = Client::new(&h);
    let rv = node_pods(&c, "edge-node-1")["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let start = std::time::Instant::now();
    let watch = c.watch(&format!(
        "fieldSelector=spec.nodeName%3Dedge-node-1&watch=1&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=4"
    ));
    let mut at = Vec::new();
    for e in watch {
        let e = e.unwrap();
        if e["type"] == "BOOKMARK" {
            at.push(start.elapsed());
        }
    }
    let ended = start.elapsed();
    assert_eq!(at.len(), 1, "{at:?}");
    assert!(
        at[0] >= Duration::from_millis(1500) && at[0] < Duration::from_millis(3500),
        "{at:?}"
    );
    assert!(ended >= Duration::from_millis(3500), "{ended:?}");
}
