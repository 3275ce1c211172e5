//! The whole flow on the simulator: in-process (`upstream.kind = "sim"`) and as a standalone
//! `yurt-ota sim` that the agent reaches over HTTP like a real YurtHub.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::util::*;

const FAST_SIM: &str =
    "[sim]\nrecreate_delay = \"300ms\"\nready_delay = \"300ms\"\npull_delay = \"200ms\"\n";

fn outdated(agent: &Agent) -> Vec<String> {
    let out = agent.cli(&["pods", "--needs-upgrade", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{}/{}",
                p["metadata"]["namespace"].as_str().unwrap(),
                p["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect()
}

fn check_flow(agent: &Agent) {
    wait_for("the first snapshot", Duration::from_secs(5), || {
        get(&agent.url("/v1/readyz")).status == 200
    });
    let before = outdated(agent);
    assert_eq!(before.len(), 3, "{before:?}");
    assert!(
        before[0].starts_with("edge-apps/telemetry-agent-"),
        "sorted by namespace, then name: {before:?}"
    );

    // Upgrade one pod and wait until its replacement is Ready and current.
    let out = agent.cli(&["upgrade", &before[0], "--wait", "--timeout", "20s"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), format!("Start updating pod {}", before[0]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("upgraded: edge-apps/telemetry-agent-"));
    let after = outdated(agent);
    assert_eq!(after, before[1..].to_vec());
    let pods = get(&agent.url("/pods")).json();
    let new: Vec<&Value> = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with("telemetry-agent-")
        })
        .collect();
    assert_eq!(new.len(), 1);
    assert_ne!(
        format!("edge-apps/{}", new[0]["metadata"]["name"].as_str().unwrap()),
        before[0]
    );
    assert!(new[0]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
        .ends_with(":v1.5.0"));

    // Pre-pull: PodImageReady goes False, then True for the current revision.
    let target = &after[0];
    let (ns, name) = target.split_once('/').unwrap();
    let out = agent.cli(&["imagepull", target]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("Image pre-pull requested for pod {target}")
    );
    wait_for("PodImageReady=True", Duration::from_secs(5), || {
        let s = get(&agent.url("/v1/status")).json();
        s["pods_needing_upgrade"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == name && p["image"] == "ready")
    });

    // A pod that does not exist: YurtHub's 500, relayed, and the CLI fails with exit 1.
    let out = agent.cli(&["upgrade", &format!("{ns}/{name}-gone")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!(
        "upgrade refused (500): Get pod failed, pods \"{name}-gone\" not found"
    )));
}

#[test]
fn whole_flow_on_the_in_process_simulator() {
    let agent = Agent::start(&format!(
        "[upstream]\nkind = \"sim\"\npoll_interval = \"100ms\"\n{FAST_SIM}"
    ));
    check_flow(&agent);

    // Publish a new revision of a current DaemonSet: its pod now needs upgrade.
    let r = post(&agent.url("/sim/rollout/edge-apps/camera-bridge"));
    assert_eq!(r.status, 200, "{}", r.text());
    wait_for("camera-bridge outdated", Duration::from_secs(5), || {
        outdated(&agent)
            .iter()
            .any(|p| p.starts_with("edge-apps/camera-bridge-"))
    });

    // Cut the cloud: upgrades answer YurtHub's 503, verbatim.
    assert_eq!(post(&agent.url("/sim/disconnect")).status, 200);
    let target = outdated(&agent)[0].clone();
    let (ns, name) = target.split_once('/').unwrap();
    let r = post(&agent.url(&format!(
        "/openyurt.io/v1/namespaces/{ns}/pods/{name}/upgrade"
    )));
    assert_eq!(
        (r.status, r.text().as_str()),
        (
            503,
            "OTA upgrade is not allowed when node is disconnected to cloud"
        )
    );
    assert_eq!(get(&agent.url("/pods")).status, 200);
    assert_eq!(post(&agent.url("/sim/connect")).status, 200);
    let r = post(&agent.url(&format!(
        "/openyurt.io/v1/namespaces/{ns}/pods/{name}/upgrade"
    )));
    assert_eq!(r.status, 200);
}

#[test]
fn standalone_simulator_speaks_yurthub_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("sim.toml");
    std::fs::write(&cfg, FAST_SIM).unwrap();
    let port = free_port();
    let _sim = KillOnDrop(
        Command::new(BIN)
            .args(["sim", "--listen", &format!("127.0.0.1:{port}"), "--config"])
            .arg(&cfg)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = format!("http://127.0.0.1:{port}");
    wait_for("the simulator", Duration::from_secs(5), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    // YurtHub's own answers.
    assert_eq!(get(&format!("{url}/v1/healthz")).text(), "OK");
    assert_eq!(get(&format!("{url}/nope")).text(), "404 page not found\n");
    let list = get(&format!("{url}/pods"));
    assert_eq!(
        (list.status, list.content_type.as_str()),
        (200, "application/json")
    );
    assert_eq!(list.json()["kind"], "PodList");

    let agent = Agent::start(&config_for(&url, "100ms", "1s"));
    check_flow(&agent);
}
