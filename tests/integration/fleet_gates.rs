//! Five real agents against one apiserver stand-in, with gates: an `OTA` DaemonSet with a
//! budget, whose nodes upgrade only once their own gates open and never more than the budget
//! at once; and a node whose safety gate closes between its decision and its call, which gives
//! its slot back at the re-read and does not upgrade. Everything is judged from the stand-in's
//! record (`/sim/history`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::fleet_agents::*;
use crate::util::*;

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

#[test]
fn ota_with_a_budget_upgrades_each_node_when_its_own_gate_opens() {
    let (h, dir) = standin(Duration::from_millis(1500));
    let a: Value = post(&format!(
        "{}/sim/annotate/{DS}?key=apps.openyurt.io/update-strategy&value=OTA",
        h.control_url()
    ))
    .json();
    assert_eq!(a["value"], "OTA", "{a}");
    let go = |i: usize| dir.path().join(format!("go-{i}"));
    let agents: Vec<Agent> = (1..=5)
        .map(|i| {
            let gate = format!(
                "[[gate]]\nname = \"parked\"\nkind = \"file\"\npath = \"{}\"\nopen_when = \"exists\"\n",
                go(i).display()
            );
            agent(dir.path(), i, "mode = \"auto\"\nready_timeout = \"20s\"", &gate)
        })
        .collect();
    wait_budget(&agents.iter().collect::<Vec<_>>(), 2);
    let rollout: Value = post(&format!("{}/sim/rollout/{DS}", h.control_url())).json();
    let new_hash = rollout["hash"].as_str().unwrap().to_owned();
    let c = ApiClient::admin(&h);
    // Every gate closed: nothing moves.
    wait_for(
        "every agent saw the new revision",
        Duration::from_secs(60),
        || {
            agents.iter().all(|a| {
                get(&a.url("/v1/status")).json()["pods_needing_upgrade"]
                    .as_array()
                    .is_some_and(|p| {
                        p.iter().any(|p| {
                            p["name"].as_str().unwrap().starts_with("telemetry-agent-")
                                && p["strategy"] == "OTA"
                                && p["why_word"] == "blocked"
                        })
                    })
            })
        },
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(deleted(&history(&h)).is_empty(), "no gate open, no upgrade");
    // Nodes 1-3 open together (three candidates for two slots), node 4 later, node 5 never.
    let mut opened = [u64::MAX; 6];
    for (i, at) in opened.iter_mut().enumerate().take(4).skip(1) {
        *at = now_us();
        std::fs::write(go(i), b"").unwrap();
    }
    wait_for("nodes 1-3 upgraded", Duration::from_secs(180), || {
        (1..=3).all(|i| upgraded_on(&c, i, &new_hash))
    });
    assert!(!upgraded_on(&c, 4, &new_hash), "node 4's gate is closed");
    opened[4] = now_us();
    std::fs::write(go(4), b"").unwrap();
    wait_for("node 4 upgraded", Duration::from_secs(180), || {
        upgraded_on(&c, 4, &new_hash)
    });
    // Node 5 had as long as node 4 and more; a few more ticks for it to misbehave.
    std::thread::sleep(Duration::from_secs(2));
    let hist = history(&h);
    for e in hist
        .iter()
        .filter(|e| e["event"] == "delete" && e["daemonset"] == DS)
    {
        let node = e["node"].as_str().unwrap();
        let i: usize = node.trim_start_matches("edge-node-").parse().unwrap();
        assert!(
            e["at_us"].as_u64().unwrap() >= opened[i],
            "{node} deleted before its gate opened: {e}"
        );
    }
    let nodes = deleted(&hist);
    assert_eq!(
        nodes.into_iter().collect::<Vec<_>>(),
        ["edge-node-1", "edge-node-2", "edge-node-3", "edge-node-4"],
        "node 5's gate never opened"
    );
    let most = most_down(&hist);
    assert!(
        most <= 2,
        "{most} nodes between DELETE and Ready at once: {hist:#?}"
    );
    drop(agents);
}

#[test]
fn a_node_whose_safety_gate_closes_at_the_reread_gives_its_slot_back_and_does_not_upgrade() {
    let (h, dir) = standin(Duration::from_millis(1500));
    // Node 3's safety gate: open until the stand-in has seen node 3 take a slot, closed from
    // then on (and closed when the stand-in cannot be asked). So it is open and stable at the
    // decision, and reads closed at the re-read right after the slot is taken.
    let script = dir.path().join("brake-3.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nh=$(curl -sf {}/sim/history) || exit 1\n\
             case \"$h\" in *'\"holder\":\"edge-node-3\"'*) exit 1;; esac\nexit 0\n",
            h.control_url()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let agents: Vec<Agent> = (1..=5)
        .map(|i| {
            let gate = if i == 3 {
                format!(
                    "[[gate]]\nname = \"brake\"\nkind = \"command\"\nargv = [\"{}\"]\n\
                     interval = \"200ms\"\ntimeout = \"5s\"\nsafety = true\n",
                    script.display()
                )
            } else {
                String::new()
            };
            agent(dir.path(), i, "ready_timeout = \"20s\"", &gate)
        })
        .collect();
    wait_budget(&agents.iter().collect::<Vec<_>>(), 2);
    let rollout: Value = post(&format!("{}/sim/rollout/{DS}", h.control_url())).json();
    let new_hash = rollout["hash"].as_str().unwrap().to_owned();
    let c = ApiClient::admin(&h);
    wait_for("the other four upgraded", Duration::from_secs(180), || {
        [1, 2, 4, 5].iter().all(|i| upgraded_on(&c, *i, &new_hash))
    });
    // Node 3 takes a slot once one is free, and gives it back.
    let taken_and_released = |hist: &[Value]| {
        let w = lease_writes(hist);
        w.iter()
            .position(|e| e["holder"] == "edge-node-3")
            .is_some_and(|t| w[t + 1..].iter().any(|e| e["lease"] == w[t]["lease"]))
    };
    wait_for(
        "node 3 took a slot and let it go",
        Duration::from_secs(120),
        || taken_and_released(&history(&h)),
    );
    std::thread::sleep(Duration::from_secs(2));
    let hist = history(&h);
    let writes = lease_writes(&hist);
    let takes: Vec<usize> = (0..writes.len())
        .filter(|&t| writes[t]["holder"] == "edge-node-3")
        .collect();
    assert_eq!(
        takes.len(),
        1,
        "one take, no renewal, no second take: {writes:#?}"
    );
    let t = takes[0];
    let next = writes[t + 1..]
        .iter()
        .find(|e| e["lease"] == writes[t]["lease"])
        .unwrap();
    assert!(
        next["holder"].is_null(),
        "the next write of node 3's slot is its release: {writes:#?}"
    );
    // Nothing of node 3's happened between its take and its release but the re-read.
    let (from, to) = (writes[t]["seq"].as_u64(), next["seq"].as_u64());
    assert!(hist
        .iter()
        .filter(|e| e["seq"].as_u64() > from && e["seq"].as_u64() < to)
        .all(|e| e["node"] != "edge-node-3" && e["holder"] != "edge-node-3"));
    assert!(
        !deleted(&hist).contains("edge-node-3"),
        "node 3 never upgraded"
    );
    assert!(!upgraded_on(&c, 3, &new_hash));
    eprintln!(
        "node 3 held its slot {} ms (take to release, the re-read running its gate command)",
        (next["at_us"].as_u64().unwrap() - writes[t]["at_us"].as_u64().unwrap()) / 1000
    );
    assert_eq!(most_down(&hist), 2);
    drop(agents);
}
