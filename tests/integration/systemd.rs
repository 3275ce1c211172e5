//! `Type=notify` through a real notification socket: READY=1 after the first poll, STATUS=
//! lines that follow what the agent waits on, WATCHDOG=1 while it makes progress, STOPPING=1.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::node::Node;
use crate::util::*;

/// Every datagram received within `wait`, or until `until` holds for one.
fn receive(sock: &UnixDatagram, wait: Duration, until: impl Fn(&str) -> bool) -> Vec<String> {
    let deadline = Instant::now() + wait;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let done = until(&msg);
            out.push(msg);
            if done {
                break;
            }
        }
    }
    out
}

#[test]
fn ready_status_watchdog_and_stopping_reach_the_notify_socket() {
    let node = Node::start(Duration::from_millis(100), true);
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let stopped = dir.path().join("stopped");
    let port = free_port();
    let config = format!(
        "[api]\nlisten = \"127.0.0.1:{port}\"\n[upstream]\nurl = \"{}\"\npoll_interval = \"200ms\"\n\
         [policy]\nmode = \"auto\"\nstable_for = \"300ms\"\n\
         [[gate]]\nname = \"vehicle-stopped\"\nkind = \"file\"\npath = \"{}\"\nsafety = true\n",
        node.url(),
        stopped.display()
    );
    let agent = Agent::start_env(
        &config,
        &format!("http://127.0.0.1:{port}"),
        tempfile::tempdir().unwrap(),
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "1000000"),
        ],
    );
    let msgs = receive(&sock, Duration::from_secs(5), |m| m.contains("READY=1"));
    let ready = msgs
        .iter()
        .find(|m| m.contains("READY=1"))
        .expect("READY=1");
    assert!(
        ready.contains("STATUS=3 pods need upgrade; waiting: gate vehicle-stopped closed"),
        "{ready:?}"
    );
    // The watchdog is pinged at least every half period while the agent makes progress.
    let msgs = receive(&sock, Duration::from_millis(2500), |_| false);
    let pings = msgs.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    assert!((3..=8).contains(&pings), "{pings} pings in 2.5 s: {msgs:?}");

    std::fs::write(&stopped, "1").unwrap();
    let msgs = receive(&sock, Duration::from_secs(5), |m| m.contains("upgrading"));
    assert!(
        msgs.iter()
            .any(|m| m.contains("STATUS=3 pods need upgrade; upgrading kube-system/kindnet-4pxt7")),
        "{msgs:?}"
    );
    let pid = agent.child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let msgs = receive(&sock, Duration::from_secs(5), |m| m.contains("STOPPING=1"));
    assert!(msgs.iter().any(|m| m.contains("STOPPING=1")), "{msgs:?}");
}
