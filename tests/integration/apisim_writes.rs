//! The kube-apiserver stand-in over real TLS sockets, what changes state: DELETE preconditions,
//! 410s after compaction, dropped watches and an apiserver down, Lease compare-and-swap and its
//! record, rollouts and undo, OpenYurt's conditions (the binary: apisim/tests/binary.rs).

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::apisim::*;

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
    let base = "/apis/coordination.k8s.io/v1/namespaces/yurt-ota/leases";
    let (s, v) = c.get(&format!("{base}/edge-apps.telemetry-agent.0"));
    assert_eq!(s, 404);
    assert_eq!(
        v["message"],
        "leases.coordination.k8s.io \"edge-apps.telemetry-agent.0\" not found"
    );
    assert_eq!(v["details"]["group"], "coordination.k8s.io");
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "edge-apps.telemetry-agent.0", "namespace": "yurt-ota"},
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
        &format!("{base}/edge-apps.telemetry-agent.0"),
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
        &format!("{base}/edge-apps.telemetry-agent.0"),
        "application/json",
        &take,
    );
    assert_eq!(s, 409);
    assert_status(&lost, 409, "Conflict");
    assert_eq!(lost["message"], "Operation cannot be fulfilled on leases.coordination.k8s.io \"edge-apps.telemetry-agent.0\": the object has been modified; please apply your changes to the latest version and try again");
    let (_, now) = c.get(&format!("{base}/edge-apps.telemetry-agent.0"));
    assert_eq!(now["spec"]["holderIdentity"], "edge-node-2");
    assert_eq!(c.get(base).1["items"].as_array().unwrap().len(), 1);
    // The record has the two writes that happened, not the refused one, with their times.
    let hist: Value = crate::util::get(&format!("{}/sim/history", h.control_url())).json();
    let leases: Vec<(&str, &str)> = hist
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "lease")
        .inspect(|e| assert!(e["at_us"].as_u64().unwrap() > 1_700_000_000_000_000))
        .map(|e| (e["verb"].as_str().unwrap(), e["holder"].as_str().unwrap()))
        .collect();
    assert_eq!(
        leases,
        [("create", "edge-node-1"), ("update", "edge-node-2")]
    );
    // The agent's ServiceAccount has Leases in the fleet's namespace only (the shipped RBAC):
    // elsewhere the real 403.
    let mut other = lease.clone();
    other["metadata"]["namespace"] = json!("edge-apps");
    let (s, v) = c.send(
        "POST",
        "/apis/coordination.k8s.io/v1/namespaces/edge-apps/leases",
        "application/json",
        &other,
    );
    assert_eq!(s, 403, "{v}");
    assert_status(&v, 403, "Forbidden");
    assert_eq!(v["message"], "leases.coordination.k8s.io is forbidden: User \"system:serviceaccount:yurt-ota:yurt-ota\" cannot create resource \"leases\" in API group \"coordination.k8s.io\" in the namespace \"edge-apps\"");
    let (s, _) = Client::admin(&h).send(
        "POST",
        "/apis/coordination.k8s.io/v1/namespaces/edge-apps/leases",
        "application/json",
        &other,
    );
    assert_eq!(s, 201, "the admin (system:masters) may");
    // As the real apiserver: a PUT without resourceVersion is 422, a PUT to a missing Lease
    // creates it.
    let mut blind = now.clone();
    blind["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    let (s, v) = c.send(
        "PUT",
        &format!("{base}/edge-apps.telemetry-agent.0"),
        "application/json",
        &blind,
    );
    assert_eq!(s, 422, "{v}");
    assert_status(&v, 422, "Invalid");
    blind["metadata"]["name"] = json!("edge-apps.telemetry-agent.1");
    let (s, v) = c.send(
        "PUT",
        &format!("{base}/edge-apps.telemetry-agent.1"),
        "application/json",
        &blind,
    );
    assert_eq!(s, 201, "{v}");
    blind["spec"]["renewTime"] = json!("2026-11-26T22:00:00Z");
    blind["metadata"]["name"] = json!("edge-apps.telemetry-agent.2");
    let (s, v) = c.send("POST", base, "application/json", &blind);
    assert_eq!((s, &v["reason"]), (400, &json!("BadRequest")), "{v}");
}

#[test]
fn rollout_then_undo_by_generation_and_revision() {
    let (h, _d) = start_with(2, |_| {});
    let c = Client::admin(&h);
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
