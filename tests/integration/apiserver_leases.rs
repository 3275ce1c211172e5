//! The stand-in's Lease list and watch over real TLS, as a waiting node uses them (issue 24):
//! a label selector on the list, a watch from the list's resourceVersion with bookmarks that
//! sees slots enter and leave the selector, a 410 for a version too old, 400 for a malformed
//! selector, the verbs checked apart by RBAC, and the request counters tests read.

use std::time::Duration;

use serde_json::{json, Value};

use crate::apisim::{assert_status, control, start, Client};
use crate::util::*;

const BASE: &str = "/apis/coordination.k8s.io/v1/namespaces/yurt-ota/leases";
const LABEL: &str = "yurt-ota.io/daemonset";

fn lease(name: &str, ds: &str) -> Value {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
           "metadata": {"name": name, "labels": {LABEL: ds}},
           "spec": {"holderIdentity": "edge-node-1", "leaseDurationSeconds": 30}})
}

fn rv(v: &Value) -> String {
    v["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn apiserver_lease_list_and_watch_by_label_with_counters_and_rbac() {
    let (h, _d) = start();
    // The agent's own identity: the shipped Role grants it get, list, watch, create, update.
    let c = Client::new(&h);
    let before = h.lease_requests();
    let (s, a) = c.send("POST", BASE, "application/json", &lease("a.0", "a"));
    assert_eq!(s, 201, "{a}");
    let (s, b) = c.send("POST", BASE, "application/json", &lease("b.0", "b"));
    assert_eq!(s, 201, "{b}");
    let (s, taken) = c.send("POST", BASE, "application/json", &lease("a.0", "a"));
    assert_eq!(s, 409, "{taken}");

    let (s, list) = c.get(&format!("{BASE}?labelSelector=yurt-ota.io%2Fdaemonset%3Da"));
    assert_eq!(s, 200, "{list}");
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a.0"]);
    let from = rv(&list);

    let mut watch = c.watch_at(
        BASE,
        &format!("watch=1&resourceVersion={from}&allowWatchBookmarks=true&timeoutSeconds=10&labelSelector=yurt-ota.io%2Fdaemonset%3Da"),
    );
    // a.0 renewed (MODIFIED), relabelled away (DELETED to this watcher), b.0 relabelled in
    // (ADDED), a stale update refused 409, b.0 deleted.
    let mut a1 = a.clone();
    a1["spec"]["leaseDurationSeconds"] = json!(31);
    let (s, a1) = c.send("PUT", &format!("{BASE}/a.0"), "application/json", &a1);
    assert_eq!(s, 200, "{a1}");
    let mut a2 = a1.clone();
    a2["metadata"]["labels"][LABEL] = json!("z");
    let (s, a2) = c.send("PUT", &format!("{BASE}/a.0"), "application/json", &a2);
    assert_eq!(s, 200, "{a2}");
    let mut b1 = b.clone();
    b1["metadata"]["labels"][LABEL] = json!("a");
    let (s, b1) = c.send("PUT", &format!("{BASE}/b.0"), "application/json", &b1);
    assert_eq!(s, 200, "{b1}");
    let (s, stale) = c.send("PUT", &format!("{BASE}/a.0"), "application/json", &a1);
    assert_eq!(s, 409, "{stale}");
    let admin = Client::admin(&h);
    let (s, _) = admin.send(
        "DELETE",
        &format!("{BASE}/b.0"),
        "application/json",
        &json!({}),
    );
    assert_eq!(s, 200);

    let mut seen = Vec::new();
    let mut bookmarks = 0;
    for e in watch.by_ref() {
        let e = e.unwrap();
        if e["type"] == "BOOKMARK" {
            bookmarks += 1;
            assert_eq!(e["object"]["kind"], "Lease");
            if seen.len() >= 4 {
                break;
            }
            continue;
        }
        let m = &e["object"]["metadata"];
        seen.push((
            e["type"].as_str().unwrap().to_owned(),
            m["name"].as_str().unwrap().to_owned(),
            m["labels"][LABEL].as_str().unwrap().to_owned(),
            rv(&e["object"]),
        ));
    }
    assert!(bookmarks >= 1);
    let s4 = |t: &str, n: &str, l: &str, v: String| (t.to_owned(), n.to_owned(), l.to_owned(), v);
    let deleted_at = (rv(&b1).parse::<u64>().unwrap() + 1).to_string();
    assert_eq!(
        seen,
        [
            s4("MODIFIED", "a.0", "a", rv(&a1)),
            s4("DELETED", "a.0", "a", rv(&a2)),
            s4("ADDED", "b.0", "a", rv(&b1)),
            s4("DELETED", "b.0", "a", deleted_at),
        ]
    );

    // The counters: every verb, the two 409s; the admin's DELETE too.
    let n = h.lease_requests().since(&before);
    assert_eq!(
        (
            n.list,
            n.watch,
            n.get,
            n.create,
            n.update,
            n.delete,
            n.conflicts
        ),
        (1, 1, 0, 3, 4, 1, 2),
        "{n:?}"
    );
    let sim = get(&format!("{}/sim", h.control_url())).json();
    assert_eq!(sim["leaseRequests"]["conflicts"], 2, "{sim}");
    assert_eq!(sim["leaseRequests"]["total"], n.total() + before.total());

    // A malformed selector: 400 with the apiserver's Status, on a list and a watch alike.
    for q in ["labelSelector=a%20b", "watch=1&labelSelector=k%20in%20(a"] {
        let (s, st) = c.get(&format!("{BASE}?{q}"));
        assert_eq!(s, 400, "{q}: {st}");
        assert_status(&st, 400, "BadRequest");
        assert!(
            st["message"]
                .as_str()
                .unwrap()
                .starts_with("unable to parse requirement: found "),
            "{st}"
        );
    }

    // A version older than the window: the watch answers 200, then one ERROR 410 and ends.
    control(&h, "/sim/compact");
    let events: Vec<Value> = c
        .watch_at(
            BASE,
            &format!("watch=1&resourceVersion={from}&labelSelector=yurt-ota.io%2Fdaemonset%3Da"),
        )
        .map(Result::unwrap)
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "ERROR");
    assert_status(&events[0]["object"], 410, "Expired");

    // Watch is a verb of its own: the agent may not watch Leases cluster-wide, nor in another
    // namespace; an admin may, and sees the node Leases' heartbeats there.
    let (s, st) = c.get("/apis/coordination.k8s.io/v1/leases?watch=1&timeoutSeconds=1");
    assert_eq!(s, 403, "{st}");
    assert!(st["message"].as_str().unwrap().ends_with(
        "cannot watch resource \"leases\" in API group \"coordination.k8s.io\" at the cluster scope"
    ));
    let rv_now = admin.get(BASE).1["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut all = admin.watch_at(
        "/apis/coordination.k8s.io/v1/leases",
        &format!("watch=1&resourceVersion={rv_now}&timeoutSeconds=5"),
    );
    control(&h, "/sim/heartbeat?count=1");
    let e = all.next().unwrap().unwrap();
    assert_eq!(
        (&e["type"], &e["object"]["metadata"]["namespace"]),
        (&json!("ADDED"), &json!("kube-node-lease")),
        "{e}"
    );
    assert!(h.requests()["forbidden watch leases"] >= 1);
}

/// The real kubectl, `get leases -l … -w`: it lists with the selector, then watches from the
/// list's version and prints each event as the stand-in sends it; a malformed selector is its
/// `Error from server (BadRequest)`.
#[test]
fn apiserver_leases_watched_by_kubectl_with_a_label_selector() {
    let Some(kubectl) = crate::kubectl::kubectl("apiserver_leases_watched_by_kubectl") else {
        return;
    };
    let (h, d) = start();
    let c = Client::new(&h);
    let (s, _) = c.send("POST", BASE, "application/json", &lease("a.0", "a"));
    assert_eq!(s, 201);
    let before = h.lease_requests();
    let mut child = KillOnDrop(
        std::process::Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(d.path().join("kubeconfig-admin"))
            .args([
                "get",
                "leases",
                "-n",
                "yurt-ota",
                "-l",
                "yurt-ota.io/daemonset in (a)",
                "-w",
                "--output-watch-events",
                "-o",
                "json",
                "--request-timeout=20s",
            ])
            .env("HOME", d.path())
            .env_remove("KUBECONFIG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_for("kubectl's watch", Duration::from_secs(20), || {
        h.lease_requests().since(&before).watch >= 1
    });
    let (s, b) = c.send("POST", BASE, "application/json", &lease("b.0", "a"));
    assert_eq!(s, 201);
    let mut b1 = b.clone();
    b1["metadata"]["labels"][LABEL] = json!("z");
    let (s, _) = c.send("PUT", &format!("{BASE}/b.0"), "application/json", &b1);
    assert_eq!(s, 200);
    std::thread::sleep(Duration::from_millis(1500));
    let _ = child.0.kill();
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.0.stdout.take().unwrap(), &mut out).unwrap();
    let events: Vec<(String, String, String)> = serde_json::Deserializer::from_str(&out)
        .into_iter::<Value>()
        .map(|e| {
            let e = e.unwrap();
            let m = &e["object"]["metadata"];
            (
                e["type"].as_str().unwrap().to_owned(),
                m["name"].as_str().unwrap().to_owned(),
                m["labels"][LABEL].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let e = |t: &str, n: &str| (t.to_owned(), n.to_owned(), "a".to_owned());
    assert_eq!(
        events,
        [e("ADDED", "a.0"), e("ADDED", "b.0"), e("DELETED", "b.0")],
        "{out}"
    );
    let n = h.lease_requests().since(&before);
    assert_eq!((n.list, n.watch), (1, 1), "one list, then one watch: {n:?}");

    // A malformed selector: kubectl shows the stand-in's 400 as it shows the apiserver's.
    let out = std::process::Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(d.path().join("kubeconfig-admin"))
        .args(["get", "leases", "-A", "-l", "a in (x"])
        .env("HOME", d.path())
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("Error from server (BadRequest)")
            && err.ends_with("unable to parse requirement: found '', expected: ',' or ')'\n"),
        "{err}"
    );
}
