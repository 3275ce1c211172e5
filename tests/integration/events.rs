//! Gates that tell (issue 13): the real binary sleeps until a gate's event, and still never
//! upgrades on a flapping gate, and still converges when an event is lost.

use std::thread;
use std::time::{Duration, Instant};

use crate::node::Node;
use crate::util::*;

/// Auto mode, a file gate, stable for 500 ms, the slow re-read every `reread`.
fn config(node: &Node, gate: &str, reread: &str) -> String {
    format!(
        "[upstream]\nurl = \"{}\"\npoll_interval = \"100ms\"\ntimeout = \"1s\"\n\
         [policy]\nmode = \"auto\"\nstable_for = \"500ms\"\ngate_reread = \"{reread}\"\n{gate}",
        node.url()
    )
}

#[test]
fn a_gate_flapping_faster_than_stable_for_never_upgrades() {
    let node = Node::start(Duration::from_millis(100), true);
    let dir = tempfile::tempdir().unwrap();
    let stopped = dir.path().join("run/vehicle/stopped");
    let gate = format!(
        "[[gate]]\nname = \"vehicle-stopped\"\nkind = \"file\"\npath = \"{}\"\nsafety = true\n",
        stopped.display()
    );
    // The directory does not exist yet: watched from its nearest existing parent.
    let agent = Agent::start(&config(&node, &gate, "30s"));
    wait_for("the first snapshot", Duration::from_secs(10), || {
        get(&agent.url("/v1/status")).json()["snapshot"].is_object()
    });
    let watch = || get(&agent.url("/v1/status")).json()["gates"][0]["watch"].clone();
    assert_eq!(watch(), format!("inotify on {}", dir.path().display()));
    std::fs::create_dir_all(stopped.parent().unwrap()).unwrap();
    wait_for("the watch to move down", Duration::from_secs(5), || {
        watch() == format!("inotify on {}", stopped.parent().unwrap().display()).as_str()
    });
    // Open 300 ms, closed 100 ms, for 4 s: never open for 500 ms on end.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        std::fs::write(&stopped, "1").unwrap();
        thread::sleep(Duration::from_millis(300));
        std::fs::remove_file(&stopped).unwrap();
        thread::sleep(Duration::from_millis(100));
    }
    assert!(node.upgraded().is_empty(), "{:?}", node.upgraded());
    // Each flap was seen (no 250 ms tick any more: the events told it).
    let changes = agent.metric("yurt_ota_gate_changes_total{gate=\"vehicle-stopped\"}");
    assert!(changes >= 15.0, "{changes} changes seen of 20");
    // Left open, it upgrades: the test could fail.
    std::fs::write(&stopped, "1").unwrap();
    let opened = Instant::now();
    wait_for("the upgrade once stable", Duration::from_secs(5), || {
        !node.upgraded().is_empty()
    });
    let at = node.with(|s| s.upgrades()[0].at);
    assert!(
        at >= opened + Duration::from_millis(500),
        "not before stable_for"
    );
}

/// A write through a hard link in another directory is reported to that directory's watch,
/// not to the gate's: the gate's event is lost. The slow re-read still sees it.
#[test]
fn a_lost_event_still_converges_through_the_slow_reread() {
    let node = Node::start(Duration::from_millis(100), true);
    let dir = tempfile::tempdir().unwrap();
    let (signals, elsewhere) = (dir.path().join("signals"), dir.path().join("elsewhere"));
    std::fs::create_dir_all(&signals).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    let flag = signals.join("stopped");
    std::fs::write(&flag, "0").unwrap();
    std::fs::hard_link(&flag, elsewhere.join("alias")).unwrap();
    let gate = format!(
        "[[gate]]\nname = \"vehicle-stopped\"\nkind = \"file\"\npath = \"{}\"\n\
         open_when = \"equals\"\nvalue = \"1\"\nsafety = true\n",
        flag.display()
    );
    let agent = Agent::start(&config(&node, &gate, "2s"));
    wait_for("the first snapshot", Duration::from_secs(10), || {
        get(&agent.url("/v1/status")).json()["snapshot"].is_object()
    });
    thread::sleep(Duration::from_millis(500));
    assert!(node.upgraded().is_empty(), "closed: it reads 0");
    // Same inode, written in place: no event in `signals`.
    std::fs::OpenOptions::new()
        .write(true)
        .open(elsewhere.join("alias"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"1"))
        .unwrap();
    assert_eq!(std::fs::read_to_string(&flag).unwrap(), "1");
    wait_for(
        "the upgrade after the re-read",
        Duration::from_secs(6),
        || !node.upgraded().is_empty(),
    );
}
