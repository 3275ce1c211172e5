//! The kube-apiserver stand-in (`yurt-ota-apisim`) over real TLS sockets, with the client the
//! agent uses (ureq over rustls, the generated CA as the only root): authentication, list and
//! watch in the recorded shapes, 410s, DELETE preconditions, Lease compare-and-swap, rollouts.

use std::io::{BufRead, BufReader, Read};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use yurt_ota::sim::apiserver::server::{self, Config, Handle};
use yurt_ota::sim::apiserver::Options;

use crate::util::{apisim_agent, ApiClient};

const WATCH_FIXTURE: &str = "kind-v1.36-kube-system-pods-watch-initial-events.jsonl";

fn start_with(nodes: usize, f: impl FnOnce(&mut Config)) -> (Handle, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        control: "127.0.0.1:0".parse().unwrap(),
        dir: dir.path().to_owned(),
        token: None,
        sans: Vec::new(),
        bookmark_interval: Duration::from_millis(300),
        options: Options {
            nodes: (1..=nodes).map(|i| format!("edge-node-{i}")).collect(),
            grace: Duration::from_millis(100),
            recreate_delay: Duration::from_millis(150),
            ready_delay: Duration::from_millis(150),
            observe_delay: Duration::from_millis(100),
            pull_delay: Duration::from_millis(150),
            ..Options::default()
        },
    };
    f(&mut cfg);
    (server::start(cfg).unwrap(), dir)
}

fn start() -> (Handle, tempfile::TempDir) {
    start_with(1, |_| {})
}

/// `ApiClient` with the shapes these tests send.
type Client = ApiClient;

fn tls(ca_pem: &str, client: Option<(&str, &str)>) -> ureq::Agent {
    apisim_agent(ca_pem, client)
}

impl ApiClient {
    fn send(&self, method: &str, path: &str, ct: &str, body: &Value) -> (u16, Value) {
        let (s, b) = self
            .call(method, path, ct, Some(body.to_string().as_bytes()))
            .unwrap();
        (s, serde_json::from_slice(&b).unwrap())
    }
    /// A watch, read line by line.
    fn watch(&self, query: &str) -> impl Iterator<Item = std::io::Result<Value>> {
        self.watch_at("/api/v1/pods", query)
    }
    fn watch_at(&self, path: &str, query: &str) -> impl Iterator<Item = std::io::Result<Value>> {
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

fn control(h: &Handle, path: &str) -> Value {
    let mut r = ureq::post(format!("{}{path}", h.control_url()))
        .send_empty()
        .unwrap();
    serde_json::from_str::<Value>(&r.body_mut().read_to_string().unwrap()).unwrap()
}

fn node_pods(c: &Client, node: &str) -> Value {
    let (s, list) = c.get(&format!(
        "/api/v1/pods?fieldSelector=spec.nodeName%3D{node}"
    ));
    assert_eq!(s, 200, "{list}");
    list
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

fn fixture_events() -> Vec<Value> {
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

fn assert_status(v: &Value, code: u16, reason: &str) {
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
    let c = Client::new(&h);
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

#[test]
fn delete_precondition_conflict_is_the_real_409() {
    let (h, _d) = start();
    let c = Client::new(&h);
    let pod = node_pods(&c, "edge-node-1")["items"][0]["metadata"].clone();
    let path = format!(
        "/api/v1/namespaces/{}/pods/{}",
        pod["namespace"].as_str().unwrap(),
        pod["name"].as_str().unwrap()
    );
    let (s, v) = c.send("DELETE", &path, "application/json",
        &json!({"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": "00000000-0000-4000-8000-000000000000"}}));
    assert_eq!(s, 409);
    assert_status(&v, 409, "Conflict");
    assert_eq!(v["details"], json!({"name": pod["name"], "kind": "pods"}));
    assert_eq!(
        v["message"],
        format!("Operation cannot be fulfilled on pods \"{}\": Precondition failed: UID in precondition: 00000000-0000-4000-8000-000000000000, UID in object meta: {}",
                pod["name"].as_str().unwrap(), pod["uid"].as_str().unwrap())
    );
    let (s, still) = c.get(&path);
    assert_eq!(
        (s, still["metadata"]["deletionTimestamp"].is_null()),
        (200, true),
        "nothing deleted"
    );
}

#[test]
fn expired_resource_versions_answer_410() {
    let (h, _d) = start();
    let c = Client::new(&h);
    let rv = node_pods(&c, "edge-node-1")["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    // An open watch ends with ERROR 410 when the history is compacted under it.
    let mut open = c.watch(&format!("watch=1&resourceVersion={rv}&timeoutSeconds=10"));
    std::thread::sleep(Duration::from_millis(100));
    control(&h, "/sim/rollout/fleet/can-gateway");
    control(&h, "/sim/compact");
    let rest: Vec<Value> = open.by_ref().map(Result::unwrap).collect();
    let err = rest.last().unwrap();
    assert_eq!(err["type"], "ERROR");
    assert_status(&err["object"], 410, "Expired");
    assert!(err["object"]["message"]
        .as_str()
        .unwrap()
        .starts_with("too old resource version: "));
    // A new watch from before the compaction: the same ERROR event, then the stream ends.
    let events: Vec<Value> = c
        .watch(&format!("watch=1&resourceVersion={rv}"))
        .map(Result::unwrap)
        .collect();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "ERROR");
    assert_status(&events[0]["object"], 410, "Expired");
    // 410 as an HTTP status: a list at an exact, compacted resourceVersion, and an injected one.
    let (s, v) = c.get(&format!(
        "/api/v1/pods?resourceVersion={rv}&resourceVersionMatch=Exact"
    ));
    assert_eq!(s, 410);
    assert_status(&v, 410, "Expired");
    control(&h, "/sim/fail?count=1&code=410");
    let (s, v) = c.get("/api/v1/pods?fieldSelector=spec.nodeName%3Dedge-node-1");
    assert_eq!(s, 410);
    assert_status(&v, 410, "Expired");
    assert_eq!(c.get("/api/v1/pods").0, 200, "only the next request failed");
}

#[test]
fn dropped_watches_and_an_apiserver_down_then_up() {
    let (h, _d) = start();
    let c = Client::new(&h);
    let mut w = c.watch("watch=1&timeoutSeconds=30");
    // The initial ADDED events, then the cut: the stream ends without its last chunk.
    for _ in 0..11 {
        w.next().unwrap().unwrap();
    }
    assert_eq!(control(&h, "/sim/drop-watches")["dropped"], 1);
    let t = Instant::now();
    assert!(
        w.next().is_some_and(|r| r.is_err()),
        "cut mid-stream is an error, not a clean end"
    );
    assert!(t.elapsed() < Duration::from_secs(5));
    control(&h, "/sim/down");
    let e = c
        .agent
        .get(format!("{}/api/v1/pods", h.url()))
        .call()
        .unwrap_err();
    assert!(
        matches!(e, ureq::Error::Io(_) | ureq::Error::ConnectionFailed),
        "{e:?}"
    );
    control(&h, "/sim/up");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match c
            .agent
            .get(format!("{}/api/v1/pods", h.url()))
            .header("Authorization", c.auth())
            .call()
        {
            Ok(r) if r.status() == 200 => break,
            other => assert!(Instant::now() < deadline, "still down: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    control(&h, "/sim/fail?count=2&code=503");
    assert_eq!(c.get("/api/v1/pods").0, 503);
    assert_eq!(c.get("/api/v1/pods").0, 503);
    assert_eq!(c.get("/api/v1/pods").0, 200);
}

#[test]
fn lease_compare_and_swap() {
    let (h, _d) = start();
    let c = Client::new(&h);
    let base = "/apis/coordination.k8s.io/v1/namespaces/edge-apps/leases";
    let (s, v) = c.get(&format!("{base}/yurt-ota-telemetry-agent-0"));
    assert_eq!(s, 404);
    assert_eq!(
        v["message"],
        "leases.coordination.k8s.io \"yurt-ota-telemetry-agent-0\" not found"
    );
    assert_eq!(v["details"]["group"], "coordination.k8s.io");
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "yurt-ota-telemetry-agent-0", "namespace": "edge-apps"},
        "spec": {"holderIdentity": "edge-node-1", "leaseDurationSeconds": 300,
                 "acquireTime": "2026-11-26T22:00:00.000000Z", "renewTime": "2026-11-26T22:00:00.000000Z"}});
    let (s, created) = c.send("POST", base, "application/json", &lease);
    assert_eq!(s, 201, "{created}");
    assert_eq!(
        (
            created["kind"].as_str(),
            created["spec"]["holderIdentity"].as_str()
        ),
        (Some("Lease"), Some("edge-node-1"))
    );
    let rv1 = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, v) = c.send("POST", base, "application/json", &lease);
    assert_eq!(s, 409);
    assert_status(&v, 409, "AlreadyExists");
    // Two nodes race from the same read: the first write wins, the second is the real 409.
    let mut take = created.clone();
    take["spec"]["holderIdentity"] = json!("edge-node-2");
    let (s, won) = c.send(
        "PUT",
        &format!("{base}/yurt-ota-telemetry-agent-0"),
        "application/json",
        &take,
    );
    assert_eq!(s, 200, "{won}");
    assert_ne!(
        won["metadata"]["resourceVersion"].as_str(),
        Some(rv1.as_str())
    );
    assert_eq!(won["metadata"]["uid"], created["metadata"]["uid"]);
    take["spec"]["holderIdentity"] = json!("edge-node-3");
    let (s, lost) = c.send(
        "PUT",
        &format!("{base}/yurt-ota-telemetry-agent-0"),
        "application/json",
        &take,
    );
    assert_eq!(s, 409);
    assert_status(&lost, 409, "Conflict");
    assert_eq!(lost["message"], "Operation cannot be fulfilled on leases.coordination.k8s.io \"yurt-ota-telemetry-agent-0\": the object has been modified; please apply your changes to the latest version and try again");
    let (_, now) = c.get(&format!("{base}/yurt-ota-telemetry-agent-0"));
    assert_eq!(now["spec"]["holderIdentity"], "edge-node-2");
    assert_eq!(c.get(base).1["items"].as_array().unwrap().len(), 1);
}

#[test]
fn rollout_then_undo_by_generation_and_revision() {
    let (h, _d) = start_with(2, |_| {});
    let c = Client::new(&h);
    let ds_path = "/apis/apps/v1/namespaces/edge-apps/daemonsets/telemetry-agent";
    let crs_path = "/apis/apps/v1/namespaces/edge-apps/controllerrevisions?labelSelector=app%3Dtelemetry-agent";
    let (_, before) = c.get(ds_path);
    assert_eq!(
        before["metadata"]["annotations"]["apps.openyurt.io/update-strategy"],
        "AdvancedRollingUpdate"
    );
    assert_eq!(
        before["metadata"]["annotations"]["apps.openyurt.io/max-unavailable"],
        "2"
    );
    let rv = before["metadata"]["resourceVersion"].as_str().unwrap();
    let ds_watch = c.watch_at(
        "/apis/apps/v1/namespaces/edge-apps/daemonsets",
        &format!("watch=1&resourceVersion={rv}&fieldSelector=metadata.name%3Dtelemetry-agent&timeoutSeconds=1"),
    );
    let r = control(&h, "/sim/rollout/edge-apps/telemetry-agent");
    assert_eq!(
        (r["generation"].as_u64(), r["revision"].as_u64()),
        (Some(6), Some(6))
    );
    let (_, ds) = c.get(ds_path);
    assert_eq!(ds["metadata"]["generation"], 6);
    assert_eq!(
        ds["metadata"]["annotations"]["deprecated.daemonset.template.generation"],
        "6"
    );
    // The controller catches up a moment later.
    let deadline = Instant::now() + Duration::from_secs(5);
    while c.get(ds_path).1["status"]["observedGeneration"] != 6 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    // The DaemonSet watch saw the new generation, then the controller catching up.
    let seen: Vec<(u64, u64)> = ds_watch
        .map(Result::unwrap)
        .filter(|e| e["type"] == "MODIFIED")
        .map(|e| {
            assert_eq!(e["object"]["kind"], "DaemonSet");
            let o = &e["object"];
            (
                o["metadata"]["generation"].as_u64().unwrap(),
                o["status"]["observedGeneration"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        (seen.first(), seen.last()),
        (Some(&(6, 5)), Some(&(6, 6))),
        "{seen:?}"
    );
    let (_, crs) = c.get(crs_path);
    let newest = |crs: &Value| {
        crs["items"]
            .as_array()
            .unwrap()
            .iter()
            .max_by_key(|r| r["revision"].as_u64())
            .unwrap()
            .clone()
    };
    let new_rev = newest(&crs);
    assert_eq!(
        (
            new_rev["revision"].as_u64(),
            &new_rev["metadata"]["labels"]["controller-revision-hash"]
        ),
        (Some(6), &r["hash"])
    );
    // Delete the pod on node 1: its replacement is at the new revision, by both labels.
    let pods = node_pods(&c, "edge-node-1");
    let p = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| {
            p["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with("telemetry-agent-")
        })
        .unwrap()
        .clone();
    let old_hash = p["metadata"]["labels"]["controller-revision-hash"].clone();
    c.send("DELETE", &format!("/api/v1/namespaces/edge-apps/pods/{}", p["metadata"]["name"].as_str().unwrap()), "application/json",
           &json!({"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": p["metadata"]["uid"]}}));
    let replacement = wait_pod(&c, "edge-node-1", "telemetry-agent-", &p["metadata"]["uid"]);
    assert_eq!(
        replacement["metadata"]["labels"]["controller-revision-hash"],
        r["hash"]
    );
    assert_eq!(
        replacement["metadata"]["labels"]["pod-template-generation"],
        "6"
    );
    assert_eq!(
        replacement["spec"]["containers"][0]["image"],
        "registry.example.com/edge/telemetry-agent:v1.6.0"
    );
    // Undo: back to the old template; its ControllerRevision is reused with revision 7.
    let u = control(&h, "/sim/rollout/edge-apps/telemetry-agent/undo");
    assert_eq!(
        (u["generation"].as_u64(), u["revision"].as_u64(), &u["hash"]),
        (Some(7), Some(7), &old_hash)
    );
    let (_, crs) = c.get(crs_path);
    assert_eq!(
        crs["items"].as_array().unwrap().len(),
        6,
        "no new ControllerRevision"
    );
    assert_eq!(
        newest(&crs)["metadata"]["labels"]["controller-revision-hash"],
        old_hash
    );
    // Node 2's pod (never upgraded) is current again by its hash, although its
    // pod-template-generation is old: the controller's IsPodUpdated rule.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, ds) = c.get(ds_path);
        if ds["status"]["observedGeneration"] == 7 {
            assert_eq!(
                ds["status"]["updatedNumberScheduled"], 1,
                "{}",
                ds["status"]
            );
            break;
        }
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The Ready pod named `prefix*` on `node` whose uid is not `old`.
fn wait_pod(c: &Client, node: &str, prefix: &str, old: &Value) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let list = node_pods(c, node);
        if let Some(p) = list["items"].as_array().unwrap().iter().find(|p| {
            p["metadata"]["name"].as_str().unwrap().starts_with(prefix)
                && p["metadata"]["uid"] != *old
                && p["status"]["conditions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
        }) {
            return p.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no replacement for {prefix} on {node}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn openyurt_conditions_and_the_status_patch_prepull() {
    let (h, _d) = start_with(1, |c| c.options.openyurt = true);
    let c = Client::new(&h);
    let pods = node_pods(&c, "edge-node-1");
    let snap = yurt_ota::snapshot::Snapshot::build(&serde_json::to_vec(&pods).unwrap()).unwrap();
    let mut needing: Vec<String> = snap
        .needing_upgrade()
        .map(|p| p.metadata.name.clone())
        .collect();
    needing.sort();
    assert_eq!(
        needing.len(),
        2,
        "kube-proxy and can-gateway are one revision behind: {needing:?}"
    );
    let p = snap
        .needing_upgrade()
        .find(|p| p.metadata.name.starts_with("kube-proxy-"))
        .unwrap();
    let target = p.target_revision().unwrap().to_owned();
    let patch = json!({"status": {"conditions": [{"type": "PodImageReady", "status": "False",
        "lastProbeTime": null, "lastTransitionTime": "2026-11-26T22:00:00Z", "message": format!("controllerrevision: {target}")}]}});
    let path = format!(
        "/api/v1/namespaces/kube-system/pods/{}/status",
        p.metadata.name
    );
    let (s, v) = c.send("PATCH", &path, "application/json", &patch);
    assert_eq!(s, 415);
    assert_status(&v, 415, "UnsupportedMediaType");
    let (s, patched) = c.send(
        "PATCH",
        &path,
        "application/strategic-merge-patch+json",
        &patch,
    );
    assert_eq!(s, 200, "{patched}");
    let conds = patched["status"]["conditions"].as_array().unwrap();
    assert!(
        conds.iter().any(|c| c["type"] == "Ready"),
        "strategic merge keeps the other conditions"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, pod) = c.get(&format!(
            "/api/v1/namespaces/kube-system/pods/{}",
            p.metadata.name
        ));
        let pod: yurt_ota::pod::Pod = serde_json::from_value(pod).unwrap();
        if pod.image_state() == yurt_ota::pod::ImageState::Ready {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not pulled: {:?}",
            pod.image_state()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_binary_writes_its_files_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_yurt-ota-apisim"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--nodes",
            "2",
            "--san",
            "localhost",
            "--dir",
        ])
        .arg(dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dir.path().join("control").exists() {
        assert!(Instant::now() < deadline, "no control file");
        std::thread::sleep(Duration::from_millis(20));
    }
    let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();
    // The kubeconfigs name the server by the first --san, which the certificate carries.
    assert!(
        read("server").starts_with("https://localhost:"),
        "{}",
        read("server")
    );
    assert!(read("kubeconfig-cert").contains(&format!("server: {}\n", read("server"))));
    let c = Client {
        agent: tls(&read("ca.crt"), None),
        base: read("server"),
        token: read("token"),
    };
    assert_eq!(
        node_pods(&c, "edge-node-2")["items"]
            .as_array()
            .unwrap()
            .len(),
        11
    );
    let mut r = ureq::get(format!("{}/sim", read("control")))
        .call()
        .unwrap();
    let state: Value =
        serde_json::from_str::<Value>(&r.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(state["nodes"], json!(["edge-node-1", "edge-node-2"]));
    assert_eq!(state["requests"]["list pods"], 1);
    child.kill().unwrap();
    let mut err = String::new();
    child.wait().unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        err.contains("kube-apiserver stand-in on https://localhost:"),
        "{err}"
    );
}
