//! Issue 24, from real processes: 20 agents against the apiserver stand-in, an `Auto`
//! (AdvancedRollingUpdate) DaemonSet with `max-unavailable: 1` rolled out. One node takes the
//! slot and upgrades, its replacement held NotReady (the stand-in's readiness delay); the other
//! 19 wait. Over a window while they wait, the stand-in counts the Lease requests: a waiting
//! node lists its DaemonSet's slots once and then watches them, so the window holds no Lease
//! LIST per second of waiting, and the Lease requests are a handful per node, whatever the
//! window's length.

use std::time::{Duration, Instant};

use yurt_ota_apisim::apiserver::server::LeaseRequests;
use yurt_ota_apisim::apiserver::Options;

use crate::fleet_agents::{agent, deleted, history, wait_budget, DS};
use crate::util::*;

const NODES: usize = 20;
/// How long the requests are counted while 19 nodes wait.
const WINDOW: Duration = Duration::from_secs(20);
/// The upgrading node's replacement stays NotReady this long: well past the window, even on a
/// slow machine (the test ends with the window, so this costs no time).
const NOT_READY: Duration = Duration::from_secs(150);

#[test]
fn fleet_nineteen_waiting_nodes_make_no_lease_list_per_second_of_waiting() {
    let options = Options {
        nodes: apisim_nodes(NODES),
        grace: Duration::from_millis(100),
        recreate_delay: Duration::from_millis(200),
        ready_delay: NOT_READY,
        observe_delay: Duration::from_millis(100),
        ..Options::default()
    };
    let (h, dir) = apisim_start(Duration::from_secs(1), options, |_| {});
    for (key, value) in [
        ("apps.openyurt.io/update-strategy", "Auto"),
        ("apps.openyurt.io/max-unavailable", "1"),
    ] {
        let a = post(&format!(
            "{}/sim/annotate/{DS}?key={key}&value={value}",
            h.control_url()
        ));
        assert_eq!(a.status, 200, "{}", a.text());
    }
    let agents: Vec<Agent> = (1..=NODES)
        .map(|i| agent(dir.path(), i, "ready_timeout = \"300s\"", ""))
        .collect();
    wait_budget(&agents.iter().collect::<Vec<_>>(), 1);

    let at_rollout = h.lease_requests();
    let r = post(&format!("{}/sim/rollout/{DS}", h.control_url()));
    assert_eq!(r.status, 200, "{}", r.text());
    // One node took the slot and deleted its pod; the waiting nodes have read the slots at least
    // once each (a LIST to find them held): 19 are waiting.
    wait_for("one node upgrading", Duration::from_secs(60), || {
        deleted(&history(&h)).len() == 1
    });
    wait_for(
        "every node has read the slots",
        Duration::from_secs(60),
        || h.lease_requests().since(&at_rollout).list >= (NODES - 1) as u64,
    );
    std::thread::sleep(Duration::from_secs(2));

    let before = h.lease_requests();
    let started = Instant::now();
    std::thread::sleep(WINDOW);
    let n: LeaseRequests = h.lease_requests().since(&before);
    let window = started.elapsed();
    let upgrading = deleted(&history(&h));
    assert_eq!(
        upgrading.len(),
        1,
        "one node upgrading, 19 waiting, through the window: {upgrading:?}"
    );
    let waiting = (NODES - 1) as f64;
    let per_node_second = n.list as f64 / waiting / window.as_secs_f64();
    eprintln!(
        "fleet watch figures: {NODES} agents, 1 upgrading, {} waiting, {:.1} s: Lease {n:?}, \
         total {}; {per_node_second:.3} LIST per waiting node per second; since the rollout: {:?}",
        NODES - 1,
        window.as_secs_f64(),
        n.total(),
        h.lease_requests().since(&at_rollout)
    );
    // A waiting node lists once, then watches: in the window at most a re-list each (a watch
    // cut or expired) and a few more; polling lists at every retry (~0.37 a node a second).
    assert!(
        n.list <= (NODES - 1) as u64 + 5,
        "{} Lease LISTs in {window:?} while 19 nodes wait ({per_node_second:.3} per waiting node \
         per second): a waiting node must watch, not poll",
        n.list
    );
    // A handful per node (a re-list, re-watches, the holder's renewal), not one per second.
    assert!(
        n.total() <= 3 * NODES as u64,
        "{} Lease requests in {window:?} ({n:?}): not a handful per node",
        n.total()
    );
    drop(agents);
}
