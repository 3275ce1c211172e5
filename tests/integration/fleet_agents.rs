//! Five real agents (different node names) against one apiserver stand-in: the
//! AdvancedRollingUpdate DaemonSet edge-apps/telemetry-agent (max-unavailable 2) rolled out;
//! never more than 2 nodes between their pod's DELETE and the replacement's Ready, from the
//! stand-in's record of both (`/sim/history`), not from sampling. The helpers here serve
//! `fleet_gates` too.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;
use yurt_ota_apisim::apiserver::server;
use yurt_ota_apisim::apiserver::Options;

use crate::util::*;

pub const DS: &str = "edge-apps/telemetry-agent";

/// A stand-in with nodes edge-node-1..=5, quick controllers, a replacement Ready after `ready`.
pub fn standin(ready: Duration) -> (server::Handle, tempfile::TempDir) {
    let options = Options {
        nodes: apisim_nodes(5),
        grace: Duration::from_millis(100),
        recreate_delay: Duration::from_millis(200),
        ready_delay: ready,
        observe_delay: Duration::from_millis(100),
        ..Options::default()
    };
    apisim_start(Duration::from_millis(300), options, |_| {})
}

/// The agent of edge-node-`i` against the stand-in in `dir`; `extra`: more TOML (gates).
pub fn agent(dir: &std::path::Path, i: usize, policy: &str, extra: &str) -> Agent {
    Agent::start(&format!(
        "[upstream]\nkind = \"apiserver\"\nkubeconfig = \"{}\"\nnode_name = \"edge-node-{i}\"\n\
         detect = \"revision\"\npoll_interval = \"250ms\"\n[policy]\nstable_for = \"300ms\"\ngate_check_interval = \"50ms\"\n\
         prepull = false\n{policy}\n{extra}",
        dir.join("kubeconfig").display()
    ))
}

/// Waits (generously: the machine may be busy) until each agent's status shows the budget.
pub fn wait_budget(agents: &[&Agent], budget: u64) {
    for a in agents {
        wait_for(
            "the DaemonSet's budget seen",
            Duration::from_secs(60),
            || {
                get(&a.url("/v1/status")).json()["fleet"]
                    .as_array()
                    .is_some_and(|f| {
                        f.iter()
                            .any(|d| d["daemonset"] == DS && d["budget"] == budget)
                    })
            },
        );
    }
}

/// The stand-in's record: every pod DELETE, DaemonSet pod Ready and Lease write, in order.
pub fn history(h: &server::Handle) -> Vec<Value> {
    get(&format!("{}/sim/history", h.control_url()))
        .json()
        .as_array()
        .unwrap()
        .clone()
}

/// The telemetry-agent DELETEs and Readies of the history, for `DS`.
fn pod_events<'a>(hist: &'a [Value], event: &'a str) -> impl Iterator<Item = &'a Value> {
    hist.iter()
        .filter(move |e| e["event"] == event && e["daemonset"] == DS)
}

/// The nodes whose telemetry-agent pod was deleted.
pub fn deleted(hist: &[Value]) -> BTreeSet<String> {
    pod_events(hist, "delete")
        .map(|e| e["node"].as_str().unwrap().to_owned())
        .collect()
}

/// From the record, in its order: the most nodes at once between a DELETE of their
/// telemetry-agent pod and their replacement's Ready. With every replacement Ready by the end,
/// this is exact, not sampled.
pub fn most_down(hist: &[Value]) -> usize {
    let (mut down, mut most) = (BTreeSet::new(), 0);
    for e in hist.iter().filter(|e| e["daemonset"] == DS) {
        let node = e["node"].as_str().unwrap().to_owned();
        match e["event"].as_str() {
            Some("delete") => {
                down.insert(node);
            }
            Some("ready") => {
                down.remove(&node);
            }
            _ => {}
        }
        most = most.max(down.len());
    }
    assert!(
        down.is_empty(),
        "a node still waits for its replacement: {down:?}"
    );
    most
}

/// Lease writes for `DS`'s slots: (verb, holder) in order.
pub fn lease_writes(hist: &[Value]) -> Vec<&Value> {
    hist.iter()
        .filter(|e| {
            e["event"] == "lease"
                && e["lease"]
                    .as_str()
                    .is_some_and(|l| l.starts_with("yurt-ota/edge-apps.telemetry-agent."))
        })
        .collect()
}

/// Whether node `i` runs a Ready telemetry-agent pod at `hash`.
pub fn upgraded_on(c: &ApiClient, i: usize, hash: &str) -> bool {
    let (_, v) = c.get("/api/v1/namespaces/edge-apps/pods");
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

/// Figures from the record, printed for the reader: Lease writes per upgrade and, for each released
/// slot, the time to the next DELETE.
fn figures(h: &server::Handle, hist: &[Value]) {
    let writes = lease_writes(hist);
    let upgrades = pod_events(hist, "delete").count();
    let t = |e: &Value| e["at_us"].as_u64().unwrap();
    let gaps: Vec<u64> = writes
        .iter()
        .filter(|w| w["holder"].is_null())
        .filter_map(|r| {
            pod_events(hist, "delete")
                .find(|d| t(d) >= t(r))
                .map(|d| (t(d) - t(r)) / 1000)
        })
        .collect();
    let requests = get(&format!("{}/sim", h.control_url())).json()["requests"].clone();
    eprintln!(
        "fleet figures: {upgrades} upgrades, {} Lease writes ({} creates), slot freed -> next DELETE (ms): {gaps:?}; requests {requests}",
        writes.len(),
        writes.iter().filter(|w| w["verb"] == "create").count()
    );
}

#[test]
fn five_agents_roll_out_an_advanced_rolling_update_within_its_budget_of_two() {
    let (h, dir) = standin(Duration::from_millis(1500));
    let agents: Vec<Agent> = (1..=5)
        .map(|i| agent(dir.path(), i, "ready_timeout = \"20s\"", ""))
        .collect();
    wait_budget(&agents.iter().collect::<Vec<_>>(), 2);
    let rollout: Value = post(&format!("{}/sim/rollout/{DS}", h.control_url())).json();
    let new_hash = rollout["hash"].as_str().unwrap().to_owned();
    let c = ApiClient::admin(&h);
    wait_for("all five upgraded", Duration::from_secs(180), || {
        (1..=5).all(|i| upgraded_on(&c, i, &new_hash))
    });
    // Each slot is given back once its holder's replacement is Ready.
    wait_for("every slot released", Duration::from_secs(60), || {
        let hist = history(&h);
        let writes = lease_writes(&hist);
        writes.iter().all(|w| {
            let last = writes.iter().rev().find(|l| l["lease"] == w["lease"]);
            last.is_some_and(|l| l["holder"].is_null())
        })
    });
    let hist = history(&h);
    assert_eq!(deleted(&hist).len(), 5, "each node once");
    assert_eq!(pod_events(&hist, "delete").count(), 5, "no second DELETE");
    let most = most_down(&hist);
    assert!(
        most <= 2,
        "{most} nodes between DELETE and Ready at once: {hist:#?}"
    );
    assert_eq!(most, 2, "the budget was used");
    figures(&h, &hist);
    drop(agents);
}

/// Budget 1; node 1's agent is stopped (its node NotReady for us), node 2..5's run. The first
/// agent to hold the slot is killed with -9: the others wait for its lease to expire (lease
/// ready_timeout 3 s + 10 s margin, + 5 s skew allowance), then the rollout completes without
/// node 1.
#[test]
fn a_stopped_agent_stalls_nothing_and_a_killed_holder_frees_its_slot_at_lease_expiry() {
    let (h, dir) = standin(Duration::from_millis(800));
    let a: Value = post(&format!(
        "{}/sim/annotate/edge-apps/telemetry-agent?key=apps.openyurt.io/max-unavailable&value=1",
        h.control_url()
    ))
    .json();
    assert_eq!(a["value"], "1", "{a}");
    let mut agents: Vec<(usize, Agent)> = (2..=5)
        .map(|i| (i, agent(dir.path(), i, "ready_timeout = \"3s\"", "")))
        .collect();
    wait_budget(&agents.iter().map(|(_, a)| a).collect::<Vec<_>>(), 1);
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
    let c = ApiClient::admin(&h);
    let alive: Vec<usize> = agents.iter().map(|(i, _)| *i).collect();
    wait_for("the live nodes upgraded", Duration::from_secs(180), || {
        alive.iter().all(|i| upgraded_on(&c, *i, &new_hash))
    });
    assert!(!upgraded_on(&c, 1, &new_hash), "node 1 has no agent");
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
    // They started only once the killed holder's lease had expired: from the record, the
    // first take by another node after the killed holder's last write comes at least the lease
    // (3 s ready_timeout + 10 s margin) plus the 5 s skew allowance later.
    assert!(at_kill.elapsed() >= Duration::from_secs(17));
    let hist = history(&h);
    let writes = lease_writes(&hist);
    let dead = format!("edge-node-{killed_node}");
    let last = writes
        .iter()
        .rposition(|w| w["holder"] == dead.as_str())
        .expect("the killed holder wrote its slot");
    let next = writes[last..]
        .iter()
        .find(|w| w["holder"].as_str().is_some_and(|n| n != dead))
        .expect("the slot was taken over");
    let waited = next["at_us"].as_u64().unwrap() - writes[last]["at_us"].as_u64().unwrap();
    assert!(
        waited >= 18_000_000,
        "the slot was taken {waited} us after the dead holder's last write: {writes:#?}"
    );
}
