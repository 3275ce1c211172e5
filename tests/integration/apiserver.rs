//! The real binary in apiserver mode against the TLS apiserver stand-in (`yurt_ota_apisim::apiserver`):
//! CA, token, rotated token file, client certificate; list then watch, dropped watches, 410s,
//! the apiserver down; upgrades with YurtHub's answers; detect = revision through rollouts and
//! `rollout undo`; the automatic flow under a file gate.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use yurt_ota_apisim::apiserver::server::Handle;
use yurt_ota_apisim::apiserver::Options;

use crate::util::*;

const NODE: &str = "edge-node-1";

fn stand_in() -> (Handle, tempfile::TempDir) {
    stand_in_with(false)
}

fn stand_in_with(openyurt: bool) -> (Handle, tempfile::TempDir) {
    let options = Options {
        nodes: vec![NODE.into()],
        grace: Duration::from_millis(100),
        recreate_delay: Duration::from_millis(200),
        ready_delay: Duration::from_millis(200),
        observe_delay: Duration::from_millis(100),
        pull_delay: Duration::from_millis(200),
        openyurt,
        ..Options::default()
    };
    apisim_start(Duration::from_millis(500), options, |_| {})
}

fn config(kubeconfig: &Path, detect: &str, extra: &str) -> String {
    format!(
        "[upstream]\nkind = \"apiserver\"\nkubeconfig = \"{}\"\nnode_name = \"{NODE}\"\ndetect = \"{detect}\"\n\
         poll_interval = \"100ms\"\ntimeout = \"2s\"\n{extra}",
        kubeconfig.display()
    )
}

fn control(h: &Handle, path: &str) -> Value {
    let r = post(&format!("{}{path}", h.control_url()));
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    r.json()
}

fn pods(agent: &Agent) -> Vec<Value> {
    let r = get(&agent.url("/pods"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["items"].as_array().unwrap().clone()
}

fn pod_named<'a>(pods: &'a [Value], prefix: &str) -> Option<&'a Value> {
    pods.iter()
        .find(|p| p["metadata"]["name"].as_str().unwrap().starts_with(prefix))
}

fn need(p: &Value) -> Option<(String, String)> {
    p["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "PodNeedUpgrade")
        .map(|c| {
            (
                c["status"].as_str().unwrap().to_owned(),
                c["message"].as_str().unwrap_or_default().to_owned(),
            )
        })
}

fn watch(agent: &Agent) -> Value {
    get(&agent.url("/v1/status")).json()["upstream"]["watch"].clone()
}

fn wait_pods(agent: &Agent, what: &str, mut f: impl FnMut(&[Value]) -> bool) {
    wait_for(what, Duration::from_secs(20), || {
        let r = get(&agent.url("/pods"));
        r.status == 200 && f(r.json()["items"].as_array().unwrap())
    });
}

#[test]
fn wrong_ca_is_refused() {
    let (h, _d) = stand_in();
    let (other, _d2) = stand_in();
    let text = std::fs::read_to_string(&h.files.kubeconfig).unwrap();
    let other_ca = std::fs::read(&other.files.ca).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    // The same server, but the other stand-in's CA.
    std::fs::write(dir.path().join("ca.crt"), other_ca).unwrap();
    let yaml: Vec<String> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("certificate-authority"))
        .map(|l| {
            if l.trim_start().starts_with("server:") {
                format!("{l}\n    certificate-authority: ca.crt")
            } else {
                l.to_owned()
            }
        })
        .collect();
    std::fs::write(&kc, yaml.join("\n")).unwrap();
    let agent = Agent::start(&config(&kc, "revision", ""));
    std::thread::sleep(Duration::from_millis(1500));
    let r = get(&agent.url("/pods"));
    assert_eq!(r.status, 503, "{}", r.text());
    let w = watch(&agent);
    assert_eq!(w["connected"], false);
    let err = w["last_error"].as_str().unwrap().to_lowercase();
    assert!(
        err.contains("certificate") || err.contains("issuer"),
        "{err}"
    );
}

#[test]
fn token_rotated_token_file_and_client_certificate() {
    let (h, _d) = stand_in();
    for kc in [&h.files.kubeconfig, &h.files.kubeconfig_cert] {
        let agent = Agent::start(&config(kc, "revision", ""));
        wait_pods(&agent, "the node's pods", |p| p.len() >= 8);
        assert!(pods(&agent).iter().all(|p| p["spec"]["nodeName"] == NODE));
    }
    let agent = Agent::start(&config(&h.files.kubeconfig_token_file, "revision", ""));
    wait_pods(&agent, "the node's pods", |p| p.len() >= 8);
    // A rotated token: the old one is refused from now on, the agent reads the new file.
    control(&h, "/sim/rotate-token");
    control(&h, "/sim/drop-watches");
    wait_for(
        "a reconnect with the rotated token",
        Duration::from_secs(20),
        || {
            let w = watch(&agent);
            w["reconnects"].as_u64().unwrap() + w["relists"].as_u64().unwrap() >= 1
                && w["connected"] == true
        },
    );
    // Proof the new token works: a change made now reaches the agent through the watch.
    control(&h, "/sim/rollout/edge-apps/camera-bridge");
    wait_pods(&agent, "the rollout through the new watch", |p| {
        pod_named(p, "camera-bridge")
            .and_then(need)
            .is_some_and(|(s, _)| s == "True")
    });
}

#[test]
fn list_then_watch_drops_410s_and_the_apiserver_down() {
    let (h, _d) = stand_in();
    let agent = Agent::start(&config(&h.files.kubeconfig, "revision", ""));
    wait_pods(&agent, "the list", |p| p.len() >= 8);
    // The watch opens just after the list: waited for, since under qemu the gap is long.
    wait_for("the watch to connect", Duration::from_secs(15), || {
        watch(&agent)["connected"] == true
    });
    let before = watch(&agent);
    assert_eq!(before["connected"], true, "{before}");
    assert_eq!(before["relists"], 0);
    // The initial list plus one watch, not polls.
    let ready = get(&agent.url("/v1/readyz"));
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["watch"]["connected"], true);

    // Dropped mid-stream: re-watched from the last resourceVersion, no relist.
    control(&h, "/sim/drop-watches");
    wait_for("a reconnect", Duration::from_secs(30), || {
        let w = watch(&agent);
        w["reconnects"].as_u64() >= Some(1) && w["connected"] == true
    });
    assert_eq!(watch(&agent)["relists"], 0);

    // History compacted, then the watch dropped: the re-watch gets 410 and relists.
    control(&h, "/sim/compact");
    control(&h, "/sim/drop-watches");
    wait_for("a relist after 410", Duration::from_secs(30), || {
        watch(&agent)["relists"].as_u64() >= Some(1)
    });

    // Down: the pods are still served from memory, and the upgrade answers YurtHub's 503.
    let n = pods(&agent).len();
    control(&h, "/sim/down");
    control(&h, "/sim/drop-watches");
    wait_for("the watch to notice", Duration::from_secs(30), || {
        watch(&agent)["connected"] == false
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(pods(&agent).len(), n);
    let proxy = pod_named(&pods(&agent), "kube-proxy").unwrap()["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = post(&agent.url(&format!(
        "/openyurt.io/v1/namespaces/kube-system/pods/{proxy}/upgrade"
    )));
    assert_eq!(
        (r.status, r.text().as_str()),
        (
            503,
            "OTA upgrade is not allowed when node is disconnected to cloud"
        )
    );
    control(&h, "/sim/up");
    wait_for("the watch back", Duration::from_secs(70), || {
        watch(&agent)["connected"] == true
    });
}

#[test]
fn upgrade_answers_are_yurthubs() {
    let (h, _d) = stand_in();
    let agent = Agent::start(&config(&h.files.kubeconfig, "revision", ""));
    // Each DaemonSet is judged when its own revisions are read: wait for both that are asked.
    wait_pods(&agent, "kube-proxy and camera-bridge judged", |p| {
        ["kube-proxy", "camera-bridge"]
            .iter()
            .all(|n| pod_named(p, n).and_then(need).is_some())
    });
    let p = pods(&agent);
    let name = |prefix: &str| {
        pod_named(&p, prefix).unwrap()["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let up = |ns: &str, pod: &str| {
        let r = post(&agent.url(&format!(
            "/openyurt.io/v1/namespaces/{ns}/pods/{pod}/upgrade"
        )));
        (r.status, r.text())
    };
    // Not handled (RollingUpdate): no condition, so YurtHub's "update status is False".
    let kindnet = name("kindnet");
    assert!(need(pod_named(&p, "kindnet").unwrap()).is_none());
    assert_eq!(
        up("kube-system", &kindnet),
        (403, format!("Pre check update pod failed, Failed to check pod kube-system/{kindnet} status, error: Pod: kube-system/{kindnet} update status is False, can not be updated"))
    );
    // Current: PodNeedUpgrade False.
    let cam = name("camera-bridge");
    assert_eq!(
        need(pod_named(&p, "camera-bridge").unwrap()).unwrap().0,
        "False"
    );
    assert_eq!(up("edge-apps", &cam).0, 403);
    // A ReplicaSet pod: the status check comes first, as in YurtHub.
    let coredns = name("coredns");
    assert_eq!(up("kube-system", &coredns).0, 403);
    // Missing pod: YurtHub's 500 with the apiserver's message.
    assert_eq!(
        up("kube-system", "nope"),
        (500, "Get pod failed, pods \"nope\" not found".into())
    );
    // Outdated: 200, the pod deleted with its uid as precondition, then replaced.
    let proxy = name("kube-proxy");
    assert_eq!(
        need(pod_named(&p, "kube-proxy").unwrap()).unwrap().0,
        "True"
    );
    let (code, body) = up("kube-system", &proxy);
    assert_eq!(
        (code, body.as_str()),
        (
            200,
            format!("Start updating pod kube-system/{proxy}").as_str()
        )
    );
    // Deleting now: YurtHub's answer for a pod being deleted.
    let (code, body) = up("kube-system", &proxy);
    assert!(code == 403 || code == 500, "{code} {body}");
    wait_pods(&agent, "the replacement, current", |p| {
        pod_named(p, "kube-proxy").is_some_and(|n| {
            n["metadata"]["name"] != proxy.as_str() && need(n).is_some_and(|c| c.0 == "False")
        })
    });
    // Imagepull without OpenYurt: 404, as from a YurtHub before v1.7.
    let r = post(&agent.url(&format!(
        "/openyurt.io/v1/namespaces/edge-apps/pods/{cam}/imagepull"
    )));
    assert_eq!(r.status, 404);
}

#[test]
fn rollout_and_undo_detected_by_revision() {
    let (h, _d) = stand_in();
    let agent = Agent::start(&config(&h.files.kubeconfig, "revision", ""));
    wait_pods(&agent, "camera-bridge judged", |p| {
        pod_named(p, "camera-bridge").and_then(need).is_some()
    });
    let (status, old_hash) = need(pod_named(&pods(&agent), "camera-bridge").unwrap()).unwrap();
    assert_eq!(status, "False");
    control(&h, "/sim/rollout/edge-apps/camera-bridge");
    wait_pods(&agent, "the rollout", |p| {
        pod_named(p, "camera-bridge")
            .and_then(need)
            .is_some_and(|(s, m)| s == "True" && m != old_hash)
    });
    // `rollout undo`: the running pod's template is the newest again (a new revision number for
    // the old hash): current, by hash.
    control(&h, "/sim/rollout/edge-apps/camera-bridge/undo");
    wait_pods(&agent, "the undo", |p| {
        pod_named(p, "camera-bridge")
            .and_then(need)
            .is_some_and(|(s, m)| s == "False" && m == old_hash)
    });
    let ds = watch(&agent)["daemonsets"].clone();
    let kindnet = ds
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["daemonset"] == "kube-system/kindnet")
        .unwrap();
    assert_eq!(kindnet["handled"], false);
    assert!(
        kindnet["why_not"]
            .as_str()
            .unwrap()
            .contains("not OnDelete"),
        "{kindnet}"
    );
}

#[test]
fn automatic_flow_under_a_file_gate() {
    let (h, d) = stand_in();
    let gate = d.path().join("parked");
    let agent = Agent::start(&config(
        &h.files.kubeconfig,
        "revision",
        &format!(
            "[policy]\nmode = \"auto\"\nstable_for = \"300ms\"\ngate_check_interval = \"50ms\"\nmax_concurrent = 1\n\
             [[gate]]\nname = \"parked\"\nkind = \"file\"\npath = \"{}\"\nsafety = true\n",
            gate.display()
        ),
    ));
    let outdated = |p: &[Value]| {
        p.iter()
            .filter(|p| need(p).is_some_and(|c| c.0 == "True"))
            .count()
    };
    wait_pods(&agent, "outdated pods", |p| outdated(p) >= 2);
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        outdated(&pods(&agent)) >= 2,
        "gate closed: nothing upgraded"
    );
    std::fs::write(&gate, "1").unwrap();
    wait_pods(&agent, "every outdated pod upgraded", |p| {
        outdated(p) == 0
            && p.iter()
                .all(|p| p["metadata"]["deletionTimestamp"].is_null())
    });
    let events = get(&agent.url("/v1/events?limit=50")).text();
    assert!(
        events.contains("kube-proxy") && events.contains("can-gateway"),
        "{events}"
    );
}

#[test]
fn a_pod_recreated_under_the_same_name_is_not_deleted() {
    use yurt_ota::upstream::apiserver::{kubeconfig, Apiserver, Detect, Settings};
    use yurt_ota::upstream::Upstream;
    let (h, _d) = stand_in();
    let up = Apiserver::start(Settings {
        target: kubeconfig::load(&h.files.kubeconfig).unwrap(),
        node_name: NODE.into(),
        detect: Detect::Revision,
        timeout: Duration::from_secs(2),
    })
    .unwrap();
    wait_for("the list", Duration::from_secs(10), || {
        up.list_pods().is_ok()
    });
    let list: Value = serde_json::from_slice(&up.list_pods().unwrap()).unwrap();
    let items = list["items"].as_array().unwrap();
    let proxy = pod_named(items, "kube-proxy").unwrap();
    let name = proxy["metadata"]["name"].as_str().unwrap();
    let uid = proxy["metadata"]["uid"].as_str().unwrap();
    // The uid the check read is not the pod's any more (recreated in between): the apiserver's
    // 409 on the precondition becomes YurtHub's 403, and the pod lives on.
    let r = up
        .delete("kube-system", name, "0f0f0f0f-recreated-meanwhile")
        .unwrap();
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    assert!(String::from_utf8_lossy(&r.body).starts_with("Pre check update pod failed, "));
    std::thread::sleep(Duration::from_millis(500));
    let again: Value = serde_json::from_slice(&up.list_pods().unwrap()).unwrap();
    let same = pod_named(again["items"].as_array().unwrap(), "kube-proxy").unwrap();
    assert_eq!(same["metadata"]["uid"], uid);
    assert!(same["metadata"]["deletionTimestamp"].is_null());
    // With the uid read, the delete goes through.
    let r = up.delete("kube-system", name, uid).unwrap();
    assert_eq!(
        (r.status, String::from_utf8_lossy(&r.body).into_owned()),
        (200, format!("Start updating pod kube-system/{name}"))
    );
    let gone = up.delete("kube-system", "nope", uid).unwrap();
    assert_eq!(gone.status, 403);
}

#[test]
fn openyurt_detection_and_the_imagepull_status_patch() {
    let (h, _d) = stand_in_with(true);
    let agent = Agent::start(&config(&h.files.kubeconfig, "openyurt", ""));
    wait_pods(&agent, "OpenYurt's PodNeedUpgrade", |p| {
        pod_named(p, "kube-proxy")
            .and_then(need)
            .is_some_and(|c| c.0 == "True")
    });
    let p = pods(&agent);
    let proxy = pod_named(&p, "kube-proxy").unwrap()["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, target) = need(pod_named(&p, "kube-proxy").unwrap()).unwrap();
    let r = post(&agent.url(&format!(
        "/openyurt.io/v1/namespaces/kube-system/pods/{proxy}/imagepull"
    )));
    assert_eq!(
        (r.status, r.text()),
        (
            200,
            format!("Image pre-pull requested for pod kube-system/{proxy}")
        )
    );
    // The patch set PodImageReady for the target revision; the stand-in's pre-pull flips it.
    wait_pods(&agent, "PodImageReady=True for the target", |p| {
        pod_named(p, "kube-proxy").is_some_and(|pod| {
            pod["status"]["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| {
                    c["type"] == "PodImageReady"
                        && c["status"] == "True"
                        && c["message"] == target.as_str()
                })
        })
    });
    let r = post(&agent.url(&format!(
        "/openyurt.io/v1/namespaces/kube-system/pods/{proxy}/upgrade"
    )));
    assert_eq!(
        (r.status, r.text()),
        (200, format!("Start updating pod kube-system/{proxy}"))
    );
}

/// The stand-in's request counters (`GET /sim`), by verb and resource.
fn requests(h: &Handle, key: &str) -> u64 {
    let r = get(&format!("{}/sim", h.control_url()));
    r.json()["requests"][key].as_u64().unwrap_or(0)
}

#[test]
fn daemonset_watches_are_renewed_from_their_resource_version() {
    let (h, _d) = stand_in();
    let agent = agent_counting_daemonset_reads(&h);
    // A bookmark or two (every 500 ms here) moves the versions to watch from.
    std::thread::sleep(Duration::from_secs(1));
    let tracked = tracked_daemonsets(&agent);
    let (lists, watches) = (
        requests(&h, "list daemonsets"),
        requests(&h, "watch daemonsets"),
    );
    assert_eq!(lists, tracked, "one list per DaemonSet at start");

    // Every watch ended: renewed from the last resourceVersion, with no list (the kubelet's way).
    control(&h, "/sim/drop-watches");
    wait_for(
        "the DaemonSet watches renewed",
        Duration::from_secs(30),
        || requests(&h, "watch daemonsets") >= watches + tracked,
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        requests(&h, "list daemonsets"),
        lists,
        "renewals read again"
    );
    // The renewed watch carries a rollout.
    control(&h, "/sim/rollout/edge-apps/camera-bridge");
    wait_pods(&agent, "the rollout through a renewed watch", |p| {
        pod_named(p, "camera-bridge")
            .and_then(need)
            .is_some_and(|(s, _)| s == "True")
    });

    // Compaction: the open watches get ERROR 410, and only then is each DaemonSet listed again,
    // once: the watch goes on from the list's version, which is inside the window (from the
    // object's own, older than the compaction, it would get 410 again and list again, for ever).
    let (lists, watches) = (
        requests(&h, "list daemonsets"),
        requests(&h, "watch daemonsets"),
    );
    control(&h, "/sim/compact");
    wait_for(
        "a list and a watch per DaemonSet after 410",
        Duration::from_secs(30),
        || {
            requests(&h, "list daemonsets") >= lists + tracked
                && requests(&h, "watch daemonsets") >= watches + tracked
        },
    );
    settled_daemonset_watches(&h, lists + tracked);
}

/// An agent with `detect = "revision"` once it has decided, and has listed and watched each
/// DaemonSet it tracks, once.
///
/// Its upstream timeout is 15 s: a call given up after 2 s (the other tests' timeout) and made
/// again would count twice, and under qemu for armv7, with the whole suite running, a TLS
/// handshake and a read can take that long (two CI runs read one too many; none alone).
fn agent_counting_daemonset_reads(h: &Handle) -> Agent {
    let cfg = config(&h.files.kubeconfig, "revision", "")
        .replace("timeout = \"2s\"", "timeout = \"15s\"");
    assert!(cfg.contains("timeout = \"15s\""), "{cfg}");
    let agent = Agent::start(&cfg);
    wait_pods(&agent, "a decision by revision", |p| {
        pod_named(p, "camera-bridge").and_then(need).is_some()
    });
    // Read again on each look: the agent may still be taking up a DaemonSet (slow under qemu).
    // A second list of one never matches.
    wait_for(
        "one list and a watch per tracked DaemonSet",
        Duration::from_secs(30),
        || {
            let t = tracked_daemonsets(&agent);
            t >= 2 && requests(h, "list daemonsets") == t && requests(h, "watch daemonsets") >= t
        },
    );
    agent
}

fn tracked_daemonsets(agent: &Agent) -> u64 {
    watch(agent)["daemonsets"].as_array().unwrap().len() as u64
}

/// The DaemonSet lists stay at `lists` for 3 s, longer than the agent's backoff after a 410
/// (at most 1 s at first): each DaemonSet is watched, not read over and over.
fn settled_daemonset_watches(h: &Handle, lists: u64) {
    let watches = requests(h, "watch daemonsets");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        (
            requests(h, "list daemonsets"),
            requests(h, "watch daemonsets")
        ),
        (lists, watches),
        "no list and no new watch: the watches opened stay open"
    );
}

/// A DaemonSet unchanged while the rest of the cluster wrote on (node heartbeats) carries a
/// resourceVersion older than the window a watch can start from. Watched from its list's
/// version, it is watched all the same; from its own (the agent before 2026-11-27), every watch
/// got 410.
#[test]
fn a_daemonset_older_than_the_watch_window_is_watched_from_its_lists_version() {
    let options = Options {
        nodes: vec![NODE.into()],
        history: 20,
        ..Options::default()
    };
    let (h, _d) = apisim_start(Duration::from_millis(500), options, |_| {});
    let beat = control(&h, "/sim/heartbeat?count=40");
    assert_eq!(beat["heartbeats"], 40, "{beat}");
    let agent = agent_counting_daemonset_reads(&h);
    settled_daemonset_watches(&h, tracked_daemonsets(&agent));
    // And the watch carries a rollout.
    control(&h, "/sim/rollout/edge-apps/camera-bridge");
    wait_pods(&agent, "the rollout through the watch", |p| {
        pod_named(p, "camera-bridge")
            .and_then(need)
            .is_some_and(|(s, _)| s == "True")
    });
}

#[test]
fn a_routine_watch_drop_is_no_warning_with_a_rustls_url() {
    // Issue 23 item 9: a watch connection that ended without TLS close_notify (a proxy's idle
    // timeout, an apiserver restarting) logged WARN with rustls' URL to its manual.
    let (h, _d) = stand_in();
    let agent = Agent::start(&config(&h.files.kubeconfig, "revision", ""));
    wait_pods(&agent, "the list", |p| p.len() >= 8);
    wait_for("the watch to connect", Duration::from_secs(15), || {
        watch(&agent)["connected"] == true
    });
    control(&h, "/sim/drop-watches");
    wait_for("a reconnect", Duration::from_secs(30), || {
        let w = watch(&agent);
        w["reconnects"].as_u64() >= Some(1) && w["connected"] == true
    });
    let log = agent.log();
    assert!(
        !log.lines()
            .any(|l| l.contains("WARN") && l.contains("watch")),
        "a routine watch drop logged a warning:\n{log}"
    );
    assert!(!log.contains("docs.rs"), "{log}");
    assert!(log.contains("watching again from resourceVersion"), "{log}");
}

#[test]
fn a_401_on_the_pod_list_is_not_kind_connect() {
    // Issue 23 item 9: the server was reached and refused the credential, yet polls counted
    // `connect` and status said "cannot connect". The token in this kubeconfig is refused
    // from now on: 401 on the pod list.
    let (h, _d) = stand_in();
    control(&h, "/sim/rotate-token");
    let agent = Agent::start(&config(&h.files.kubeconfig, "revision", ""));
    wait_for("a failed poll", Duration::from_secs(20), || {
        agent.metric("yurt_ota_polls_total{result=\"status\"}") >= 1.0
    });
    assert_eq!(
        agent.metric("yurt_ota_polls_total{result=\"connect\"}"),
        0.0
    );
    let status = get(&agent.url("/v1/status")).json();
    assert_eq!(
        status["upstream"]["last_error"]["kind"], "status",
        "{status}"
    );
    let error = status["upstream"]["last_error"].to_string();
    assert!(
        error.contains("401") && error.contains("refused the credential"),
        "{status}"
    );
    assert!(!error.contains("cannot connect"), "{error}");
}

#[test]
fn apiserver_mode_keeps_every_pod_the_watch_sends() {
    // Issue 23 item 4: 2,000 distinct 100 KB pods took the agent from 5 MB to 400 MB and
    // `GET /pods` served 200 MB. Bounded as YurtHub mode is (32 MiB of pod list): the last
    // good pods are served, and status and the poll metric say why. 400 pods of 100 KB here
    // (40 MB, over the bound).
    let (h, _d) = stand_in();
    let agent = Agent::start(&config(&h.files.kubeconfig, "revision", ""));
    wait_pods(&agent, "the list", |p| p.len() >= 8);
    wait_for("the watch to connect", Duration::from_secs(15), || {
        watch(&agent)["connected"] == true
    });
    control(&h, "/sim/flood?count=400&bytes=102400");
    wait_for("the bound to be reported", Duration::from_secs(60), || {
        !watch(&agent)["pods_over_limit"].is_null()
    });
    let over = watch(&agent)["pods_over_limit"].clone();
    assert_eq!(over["max_bytes"], 32 << 20, "{over}");
    assert!(over["bytes"].as_u64().unwrap() > 32 << 20, "{over}");
    wait_for(
        "a poll refused as too large",
        Duration::from_secs(20),
        || agent.metric("yurt_ota_polls_total{result=\"too_large\"}") >= 1.0,
    );
    // The last good pods, within the bound.
    let r = get(&agent.url("/pods"));
    assert_eq!(r.status, 200);
    assert!(r.body.len() <= 32 << 20, "{} bytes served", r.body.len());
    assert!(r.json()["items"].as_array().unwrap().len() < 8 + 400);
    let status = get(&agent.url("/v1/status")).json();
    assert!(
        status["upstream"]["last_error"]
            .to_string()
            .contains("32 MiB"),
        "{status}"
    );
    let rss_kib: u64 = std::fs::read_to_string(format!("/proc/{}/status", agent.child.id()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    // The store (32 MiB), the snapshot's bytes (32 MiB) and its parsed pods, and the relist's
    // buffer: well under the 400 MB the unbounded store reached.
    eprintln!(
        "after the flood: RSS {rss_kib} KiB, GET /pods {} bytes",
        r.body.len()
    );
    assert!(rss_kib < 200 * 1024, "RSS {rss_kib} KiB");
}
