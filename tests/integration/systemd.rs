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

/// Under systemd (`$JOURNAL_STREAM` names stderr), each line starts with its sd-daemon priority,
/// so that `journalctl -p warning` finds the warnings; elsewhere (the variable names another
/// stream, as one inherited from a service's shell) the lines stay plain.
#[test]
fn log_lines_carry_their_priority_only_when_stderr_is_the_journal() {
    use std::os::unix::fs::MetadataExt;
    for journal in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("agent.log");
        std::fs::write(&log, "").unwrap();
        let m = std::fs::metadata(&log).unwrap();
        let ino = if journal { m.ino() } else { m.ino() + 1 };
        let stream = format!("{}:{ino}", m.dev());
        let port = free_port();
        // Nothing listens upstream: the first poll fails with a warning.
        let config = format!(
            "[api]\nlisten = \"127.0.0.1:{port}\"\n[upstream]\nurl = \"http://127.0.0.1:{}\"\n",
            free_port()
        );
        let agent = Agent::start_env(
            &config,
            &format!("http://127.0.0.1:{port}"),
            dir,
            &[("JOURNAL_STREAM", &stream)],
        );
        wait_for("the failed poll's warning", Duration::from_secs(10), || {
            agent.log().contains("WARN: polling")
        });
        let log = agent.log();
        let lines: Vec<&str> = log.lines().collect();
        if journal {
            assert!(
                lines.iter().any(|l| l.starts_with("<4>WARN: polling")),
                "{log}"
            );
            assert!(lines.iter().any(|l| l.starts_with("<6>INFO: ")), "{log}");
            assert!(lines.iter().all(|l| l.starts_with('<')), "{log}");
        } else {
            assert!(
                lines.iter().any(|l| l.starts_with("WARN: polling")),
                "{log}"
            );
            assert!(lines.iter().all(|l| !l.starts_with('<')), "{log}");
        }
    }
}
