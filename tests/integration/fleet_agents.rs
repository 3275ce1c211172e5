//! Five real agents (different node names) against one apiserver stand-in: the
//! AdvancedRollingUpdate DaemonSet edge-apps/telemetry-agent (max-unavailable 2) rolled out;
//! never more than 2 nodes between their pod's delete and the replacement's Ready.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};
use yurt_ota::sim::apiserver::server::{self, Config};
use yurt_ota::sim::apiserver::Options;

use crate::util::*;

fn client(h: &server::Handle) -> ureq::Agent {
    let ca = Certificate::from_pem(h.ca_pem.as_bytes()).unwrap();
    ureq::Agent::config_builder()
        .tls_config(
            TlsConfig::builder()
                .provider(TlsProvider::Rustls)
                .root_certs(RootCerts::Specific(Arc::new(vec![ca])))
                .build(),
        )
        .http_status_as_error(false)
        .build()
        .into()
}

/// Whether node `i` runs a Ready telemetry-agent pod at `hash`.
fn upgraded_on(client: &ureq::Agent, h: &server::Handle, i: usize, hash: &str) -> bool {
    let mut r = client
        .get(format!("{}/api/v1/namespaces/edge-apps/pods", h.url()))
        .header("Authorization", format!("Bearer {}", h.token()))
        .call()
        .unwrap();
    let v: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    let node = format!("edge-node-{i}");
    v["items"].as_array().unwrap().iter().any(|p| {
        p["metadata"]["name"]
            .as_str()
            .unwrap()
            .starts_with("telemetry-agent-")
            && p["spec"]["nodeName"] == node.as_str()
            && p["metadata"]["deletionTimestamp"].is_null()
            && p["metadata"]["labels"]["controller-revision-hash"] == hash
            && p["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
    })
}

#[test]
fn five_agents_roll_out_an_advanced_rolling_update_within_its_budget_of_two() {
    let dir = tempfile::tempdir().unwrap();
    let h = server::start(Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        control: "127.0.0.1:0".parse().unwrap(),
        dir: dir.path().to_owned(),
        token: None,
        sans: Vec::new(),
        bookmark_interval: Duration::from_millis(300),
        options: Options {
            nodes: (1..=5).map(|i| format!("edge-node-{i}")).collect(),
            grace: Duration::from_millis(100),
            recreate_delay: Duration::from_millis(200),
            ready_delay: Duration::from_millis(1500),
            observe_delay: Duration::from_millis(100),
            ..Options::default()
        },
    })
    .unwrap();
    let agents: Vec<Agent> = (1..=5)
        .map(|i| {
            Agent::start(&format!(
                "[upstream]\nkind = \"apiserver\"\nkubeconfig = \"{}\"\nnode_name = \"edge-node-{i}\"\n\
                 detect = \"revision\"\n[policy]\nstable_for = \"300ms\"\ngate_check_interval = \"50ms\"\n\
                 ready_timeout = \"20s\"\nprepull = false\n",
                dir.path().join("kubeconfig").display()
            ))
        })
        .collect();
    for a in &agents {
        wait_for(
            "the DaemonSet's budget seen",
            Duration::from_secs(20),
            || {
                get(&a.url("/v1/status")).json()["fleet"]
                    .as_array()
                    .is_some_and(|f| {
                        f.iter().any(|d| {
                            d["daemonset"] == "edge-apps/telemetry-agent" && d["budget"] == 2
                        })
                    })
            },
        );
    }
    let ca = Certificate::from_pem(h.ca_pem.as_bytes()).unwrap();
    let client: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(
            TlsConfig::builder()
                .provider(TlsProvider::Rustls)
                .root_certs(RootCerts::Specific(Arc::new(vec![ca])))
                .build(),
        )
        .http_status_as_error(false)
        .build()
        .into();
    let pods = || -> Vec<Value> {
        let mut r = client
            .get(format!("{}/api/v1/namespaces/edge-apps/pods", h.url()))
            .header("Authorization", format!("Bearer {}", h.token()))
            .call()
            .unwrap();
        let v: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| {
                p["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .starts_with("telemetry-agent-")
            })
            .cloned()
            .collect()
    };
    let rollout: Value = post(&format!(
        "{}/sim/rollout/edge-apps/telemetry-agent",
        h.control_url()
    ))
    .json();
    let new_hash = rollout["hash"].as_str().unwrap().to_owned();
    let ready = |p: &Value| {
        p["metadata"]["deletionTimestamp"].is_null()
            && p["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
    };
    let (mut most, started) = (0, Instant::now());
    loop {
        let pods = pods();
        let down = (1..=5)
            .filter(|i| {
                let node = format!("edge-node-{i}");
                !pods
                    .iter()
                    .any(|p| p["spec"]["nodeName"] == node.as_str() && ready(p))
            })
            .count();
        most = most.max(down);
        let done = (1..=5).all(|i| {
            let node = format!("edge-node-{i}");
            pods.iter().any(|p| {
                p["spec"]["nodeName"] == node.as_str()
                    && ready(p)
                    && p["metadata"]["labels"]["controller-revision-hash"] == new_hash.as_str()
            })
        });
        if done {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "not all upgraded; most down {most}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(most <= 2, "{most} nodes down at once");
    assert_eq!(most, 2, "the budget was used");
    drop(agents);
}

/// Budget 1; node 1's agent is stopped (its node NotReady for us), node 2..5's run. The first
/// agent to hold the slot is killed with -9: the others wait for its lease to expire (lease
/// ready_timeout 3 s + 10 s margin, + 5 s skew allowance), then the rollout completes without
/// node 1.
#[test]
fn a_stopped_agent_stalls_nothing_and_a_killed_holder_frees_its_slot_at_lease_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let h = server::start(Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        control: "127.0.0.1:0".parse().unwrap(),
        dir: dir.path().to_owned(),
        token: None,
        sans: Vec::new(),
        bookmark_interval: Duration::from_millis(300),
        options: Options {
            nodes: (1..=5).map(|i| format!("edge-node-{i}")).collect(),
            grace: Duration::from_millis(100),
            recreate_delay: Duration::from_millis(200),
            ready_delay: Duration::from_millis(800),
            observe_delay: Duration::from_millis(100),
            ..Options::default()
        },
    })
    .unwrap();
    let a: Value = post(&format!(
        "{}/sim/annotate/edge-apps/telemetry-agent?key=apps.openyurt.io/max-unavailable&value=1",
        h.control_url()
    ))
    .json();
    assert_eq!(a["value"], "1", "{a}");
    let mut agents: Vec<(usize, Agent)> = (2..=5)
        .map(|i| {
            (
                i,
                Agent::start(&format!(
                    "[upstream]\nkind = \"apiserver\"\nkubeconfig = \"{}\"\nnode_name = \"edge-node-{i}\"\n\
                     detect = \"revision\"\n[policy]\nstable_for = \"300ms\"\ngate_check_interval = \"50ms\"\n\
                     ready_timeout = \"3s\"\nprepull = false\n",
                    dir.path().join("kubeconfig").display()
                )),
            )
        })
        .collect();
    for (_, a) in &agents {
        wait_for(
            "the DaemonSet's budget seen",
            Duration::from_secs(20),
            || {
                get(&a.url("/v1/status")).json()["fleet"]
                    .as_array()
                    .is_some_and(|f| {
                        f.iter().any(|d| {
                            d["daemonset"] == "edge-apps/telemetry-agent" && d["budget"] == 1
                        })
                    })
            },
        );
    }
    let rollout: Value = post(&format!(
        "{}/sim/rollout/edge-apps/telemetry-agent",
        h.control_url()
    ))
    .json();
    let new_hash = rollout["hash"].as_str().unwrap().to_owned();
    // The first holder is killed -9 while it holds the slot.
    let mut holder = None;
    wait_for("a slot held", Duration::from_secs(20), || {
        holder = agents.iter().position(|(_, a)| {
            get(&a.url("/v1/status")).json()["fleet"]
                .as_array()
                .is_some_and(|f| f.iter().any(|d| d["slots"] == "held"))
        });
        holder.is_some()
    });
    let (killed_node, mut killed) = agents.remove(holder.unwrap());
    std::process::Command::new("kill")
        .args(["-9", &killed.child.id().to_string()])
        .status()
        .unwrap();
    killed.child.wait().unwrap();
    let at_kill = Instant::now();
    // The others finish, but none starts before the killed holder's lease expired.
    let c = client(&h);
    let alive: Vec<usize> = agents.iter().map(|(i, _)| *i).collect();
    wait_for("the live nodes upgraded", Duration::from_secs(60), || {
        alive.iter().all(|i| upgraded_on(&c, &h, *i, &new_hash))
    });
    assert!(!upgraded_on(&c, &h, 1, &new_hash), "node 1 has no agent");
    let events: Vec<Value> = agents
        .iter()
        .flat_map(|(_, a)| {
            get(&a.url("/v1/events?limit=256")).json()["events"]
                .as_array()
                .unwrap()
                .clone()
        })
        .filter(|e| e["kind"] == "upgrade_started")
        .collect();
    assert_eq!(events.len(), 3, "each live node once: {events:#?}");
    // They started only once the killed holder's lease had expired.
    // Lease: 3 s + 10 s margin; taken over 5 s after expiry: 18 s at the earliest, from the
    // last write before the kill (at most a tick before it).
    assert!(
        at_kill.elapsed() >= Duration::from_secs(17),
        "the slot was taken before the lease expired ({:?})",
        at_kill.elapsed()
    );
    let _ = killed_node;
}
