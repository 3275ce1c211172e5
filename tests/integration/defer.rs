//! `policy.max_defer` (SPEC 6b, "a bounded not now"): the real binary against the scripted
//! node. A hold renewed forever and a closed convenience gate stop blocking once a pod has
//! needed upgrade for `max_defer`; a closed safety gate never does. The "since" survives a
//! restart.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use crate::node::{Node, OUTDATED};
use crate::util::*;

fn touch(path: &Path) {
    std::fs::write(path, "1").unwrap();
}

#[test]
fn a_hold_renewed_forever_stops_blocking_once_the_deferral_ran_out_a_safety_gate_never() {
    let node = Node::start(Duration::from_millis(100), true);
    let files = tempfile::tempdir().unwrap();
    let stopped = files.path().join("stopped");
    let night = files.path().join("night");
    touch(&stopped);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let config = format!(
        "[api]\nlisten = \"127.0.0.1:{port}\"\n\
         [upstream]\nurl = \"{}\"\npoll_interval = \"100ms\"\ntimeout = \"1s\"\n\
         [policy]\nmode = \"auto\"\nstable_for = \"500ms\"\ngate_check_interval = \"50ms\"\n\
         max_defer = \"4s\"\nmax_concurrent = 3\nprepull = false\n\
         [[gate]]\nname = \"vehicle-stopped\"\nkind = \"file\"\npath = \"{}\"\nsafety = true\n\
         [[gate]]\nname = \"night\"\nkind = \"file\"\npath = \"{}\"\nsafety = false\n",
        node.url(),
        stopped.display(),
        night.display()
    );
    let mut agent = Agent::start_in(&config, &base, tempfile::tempdir().unwrap());
    let started = Instant::now();
    let renew = |agent: &Agent| {
        let out = agent.cli(&["hold", "nav", "--ttl", "1h", "--reason", "navigation"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    renew(&agent);
    // Safety gate open, but the hold and the night gate block: nothing before max_defer.
    let pod = |st: &serde_json::Value, key: &str| {
        st["pods_needing_upgrade"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| {
                format!(
                    "{}/{}",
                    p["namespace"].as_str().unwrap(),
                    p["name"].as_str().unwrap()
                ) == key
            })
            .cloned()
            .unwrap_or_else(|| panic!("{key} not in {st:#}"))
    };
    wait_for(
        "needs-upgrade-since tracked",
        Duration::from_secs(5),
        || {
            let st = get(&agent.url("/v1/status")).json();
            st["pods_needing_upgrade"].as_array().is_some_and(|a| {
                a.len() == 3 && a.iter().all(|p| p["needs_upgrade_since"].is_string())
            })
        },
    );
    let st = get(&agent.url("/v1/status")).json();
    let since = pod(&st, OUTDATED[0])["needs_upgrade_since"].clone();
    let why = pod(&st, OUTDATED[0])["why_not_yet"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(why.contains("hold:nav") && why.contains("night"), "{why}");
    assert_eq!(pod(&st, OUTDATED[0])["deferral_expired"], false);
    let upgrade = |agent: &Agent| {
        let (ns, name) = OUTDATED[1].split_once('/').unwrap();
        post(&agent.url(&format!(
            "/openyurt.io/v1/namespaces/{ns}/pods/{name}/upgrade"
        )))
    };
    let r = upgrade(&agent);
    assert_eq!(r.status, 409);
    assert_eq!(
        r.json()["blocked_by"],
        serde_json::json!(["night", "hold:nav"])
    );
    assert!(pod(&st, OUTDATED[0])["forced_from"].is_string());

    // The "since" survives a restart (state.dir).
    thread::sleep(Duration::from_millis(800));
    let dir = std::mem::replace(&mut agent.dir, tempfile::tempdir().unwrap());
    drop(agent);
    let agent = Agent::start_in(&config, &base, dir);
    wait_for(
        "the restarted agent's status",
        Duration::from_secs(5),
        || {
            get(&agent.url("/v1/status")).json()["pods_needing_upgrade"]
                .as_array()
                .is_some_and(|a| a.len() == 3)
        },
    );
    let st = get(&agent.url("/v1/status")).json();
    assert_eq!(
        pod(&st, OUTDATED[0])["needs_upgrade_since"],
        since,
        "{st:#}"
    );

    // Close the safety gate before the deferral runs out, and keep the hold renewed.
    std::fs::remove_file(&stopped).unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(3500),
        "too slow to test the order"
    );
    assert!(
        node.upgraded().is_empty(),
        "hold and night gate blocked before max_defer"
    );
    while started.elapsed() < Duration::from_secs(6) {
        renew(&agent);
        thread::sleep(Duration::from_millis(300));
    }
    assert!(
        node.upgraded().is_empty(),
        "a closed safety gate still blocks past max_defer"
    );
    let st = get(&agent.url("/v1/status")).json();
    for key in OUTDATED {
        let p = pod(&st, key);
        assert_eq!(p["deferral_expired"], true, "{p:#}");
        assert_eq!(p["why_not_yet"], "blocked by vehicle-stopped", "{p:#}");
    }
    // A device app's call is treated as forced too: only the safety gate answers.
    let r = upgrade(&agent);
    assert_eq!(r.status, 409);
    assert_eq!(
        r.json()["blocked_by"],
        serde_json::json!(["vehicle-stopped"])
    );
    // The event log says it once per pod.
    let mut told = agent.event_pods("deferral_expired", 256);
    told.sort();
    assert_eq!(told, OUTDATED);
    assert!(agent.log().contains("policy.max_defer"));

    // The safety gate opens: upgrades go, the hold still renewed and the night gate closed.
    renew(&agent);
    let opened = Instant::now();
    touch(&stopped);
    wait_for("all three upgraded", Duration::from_secs(10), || {
        node.upgraded().len() == 3
    });
    let mut got = node.upgraded();
    got.sort();
    assert_eq!(got, OUTDATED);
    assert!(node.with(|s| s
        .upgrades()
        .iter()
        .all(|c| c.at >= opened + Duration::from_millis(500))));
    assert_eq!(
        get(&agent.url("/v1/holds")).json()["holds"][0]["name"],
        "nav"
    );
}
