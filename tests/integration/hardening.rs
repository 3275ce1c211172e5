//! Regression tests for the defects of issue 9 (the adversarial run), each through the real
//! binary where the bug was seen there: a scripted upstream on loopback that records every
//! call, real state files, the real CLI.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::thread;
use std::time::Duration;

use serde_json::{json, Value};

use crate::node::{Node, OUTDATED};
use crate::util::*;

const KP: &str = "/openyurt.io/v1/namespaces/kube-system/pods/kube-proxy-hsdvx";

/// Auto mode, fast clocks, no pre-pull and no gates unless `extra` says otherwise.
fn auto(upstream: &str, extra: &str) -> String {
    let prepull = if extra.contains("prepull") {
        ""
    } else {
        "prepull = false\n"
    };
    format!(
        "[upstream]\nurl = \"{upstream}\"\npoll_interval = \"100ms\"\ntimeout = \"1s\"\n\
         [policy]\nmode = \"auto\"\nstable_for = \"200ms\"\ngate_check_interval = \"50ms\"\n{prepull}{extra}"
    )
}

/// The v1.36 list with kube-proxy outdated, `f` applied to each pod.
fn pods_with(f: impl Fn(&mut Value)) -> Vec<u8> {
    let mut list: Value =
        serde_json::from_slice(&fixture_needing_upgrade("1.36", &["kube-proxy"])).unwrap();
    for p in list["items"].as_array_mut().unwrap() {
        f(p);
    }
    serde_json::to_vec(&list).unwrap()
}

fn image_ready(p: &mut Value, revision: &str) {
    if p["metadata"]["name"] == "kube-proxy-hsdvx" {
        p["status"]["conditions"]
            .as_array_mut()
            .unwrap()
            .push(json!({
                "type": "PodImageReady", "status": "True", "reason": "PullImageSuccess",
                "message": format!("controllerrevision: {revision}")
            }));
    }
}

/// One request written byte for byte (no client normalizes the path), and the status answered.
fn raw(agent: &Agent, head: &str, body: &str) -> (u16, String) {
    let addr = agent.base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{head}\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    (status, out)
}

/// Item 2: PodImageReady=True for the old revision was read as "pending" and the imagepull
/// never asked again; YurtHub refuses the upgrade until it is.
#[test]
fn a_new_revision_after_the_prepull_is_pulled_again_not_waited_for_forever() {
    let up = Upstream::start(Pods::Serve(pods_with(|p| image_ready(p, "0ld"))));
    up.answer(vec![(200, "text/plain", "Image pre-pull requested".into())]);
    let agent = Agent::start(&auto(&up.url(), "prepull = true\n"));
    wait_for(
        "the imagepull for the new revision",
        Duration::from_secs(10),
        || {
            up.calls("POST")
                .iter()
                .any(|c| c.path == format!("{KP}/imagepull"))
        },
    );
    assert!(
        !up.calls("POST")
            .iter()
            .any(|c| c.path.ends_with("/upgrade")),
        "no upgrade before the image for this revision is there"
    );
    let st = get(&agent.url("/v1/status")).json();
    assert_eq!(
        st["pods_needing_upgrade"][0]["why_word"], "image_pulling",
        "{st:#}"
    );
    up.set_pods(Pods::Serve(pods_with(|p| image_ready(p, "7f9c8d6b5"))));
    wait_for("the upgrade", Duration::from_secs(10), || {
        up.calls("POST")
            .iter()
            .any(|c| c.path == format!("{KP}/upgrade"))
    });
    let pulls = up
        .calls("POST")
        .iter()
        .filter(|c| c.path.ends_with("/imagepull"))
        .count();
    assert_eq!(pulls, 1, "asked once for the revision");
}

/// Item 3: a replacement that already needed the next revision never "finished"; the in-flight
/// entry blocked every other pod (max_concurrent 1) and tripped the breaker at ready_timeout.
#[test]
fn an_upgrade_finishes_when_the_replacement_already_needs_the_next_revision() {
    let node = Node::start(Duration::from_millis(100), true);
    node.with(|s| s.outdated_replacements = 1);
    let agent = Agent::start(&auto(&node.url(), "ready_timeout = \"3s\"\n"));
    wait_for(
        "every pod, and the outdated replacement, upgraded",
        Duration::from_secs(20),
        || node.upgraded().len() == 4,
    );
    assert_eq!(
        node.upgraded(),
        vec![
            OUTDATED[0],
            "kube-system/kindnet-r1",
            OUTDATED[1],
            OUTDATED[2]
        ]
    );
    let finished = agent.event_pods("upgrade_finished", 200);
    assert!(finished.iter().any(|p| p == OUTDATED[0]), "{finished:?}");
    assert_eq!(agent.metric("yurt_ota_breaker_tripped"), 0.0);
    assert_eq!(
        agent.metric("yurt_ota_upgrades_total{result=\"failed\"}"),
        0.0
    );
}

/// Item 4: the same uid twice in the list sent two POSTs for one pod within 9 ms.
#[test]
fn a_pod_listed_twice_upstream_gets_one_upgrade_call() {
    let list = pods_with(|_| {});
    let mut v: Value = serde_json::from_slice(&list).unwrap();
    let items = v["items"].as_array_mut().unwrap();
    let kp = items
        .iter()
        .find(|p| p["metadata"]["name"] == "kube-proxy-hsdvx")
        .unwrap()
        .clone();
    items.push(kp);
    let up = Upstream::start(Pods::Serve(serde_json::to_vec(&v).unwrap()));
    up.answer(vec![(
        200,
        "text/plain",
        "Start updating pod kube-system/kube-proxy-hsdvx".into(),
    )]);
    // Room for both copies in one decision, as in the run that found it.
    let agent = Agent::start(&auto(&up.url(), "max_concurrent = 4\n"));
    wait_for("the upgrade", Duration::from_secs(10), || {
        !up.calls("POST").is_empty()
    });
    thread::sleep(Duration::from_millis(1000));
    let posts = up.calls("POST");
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(posts[0].path, format!("{KP}/upgrade"));
    let pods = get(&agent.url("/pods")).json();
    let kps = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["name"] == "kube-proxy-hsdvx")
        .count();
    assert_eq!(kps, 1, "served once too");
    agent.assert_logged_once("listed more than once");
}

/// Item 10: an upstream status of 999 was relayed; a 200 upgrade answer over the body cap was
/// reported as 502 although the upgrade had started.
#[test]
fn only_valid_upstream_statuses_are_relayed_and_a_large_2xx_keeps_its_status() {
    let up = Upstream::start(Pods::Serve(fixture("1.36")));
    let agent = Agent::start(&config_for(&up.url(), "1s", "2s"));
    let url = agent.url(&format!("{KP}/upgrade"));
    up.answer(vec![(999, "text/plain", "odd".into())]);
    let r = post(&url);
    // The hub received the call: it may have started (issue 23, item 1), never "cannot reach".
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.json()["error"], "upstream_no_answer");
    assert!(
        r.json()["message"].as_str().unwrap().contains("999"),
        "{}",
        r.text()
    );

    up.answer(vec![(
        200,
        "text/plain",
        format!("Start updating pod {}", "x".repeat(200 << 10)),
    )]);
    let r = post(&url);
    assert_eq!(r.status, 200, "the upgrade started: its status is relayed");
    assert_eq!(r.body.len(), 64 << 10, "the body cut at the cap");
    assert!(r.text().starts_with("Start updating pod"));
    let st = get(&agent.url("/v1/status")).json();
    assert_eq!(st["recent_upgrades"][0]["status"], 200, "{st:#}");
}

/// Item 10: hold names `.` and `..` were accepted.
#[test]
fn hold_names_dot_and_dot_dot_are_refused() {
    let up = Upstream::start(Pods::Serve(fixture("1.36")));
    let agent = Agent::start(&config_for(&up.url(), "1s", "2s"));
    for name in [".", ".."] {
        let (status, text) = raw(
            &agent,
            &format!("PUT /v1/holds/{name} HTTP/1.1"),
            r#"{"ttl":"30m"}"#,
        );
        assert_eq!(status, 400, "{text}");
        assert!(text.contains("invalid_name"), "{text}");
    }
    let (status, text) = raw(&agent, "PUT /v1/holds/... HTTP/1.1", r#"{"ttl":"30m"}"#);
    assert_eq!(status, 200, "{text}");
}

/// A hold PUT with a JSON body.
fn put_hold(agent: &Agent, name: &str, body: &Value) -> Reply {
    request(
        "PUT",
        &agent.url(&format!("/v1/holds/{name}")),
        &[("Content-Type", "application/json")],
        Some(body.to_string().as_bytes()),
    )
}

/// Item 8: 10,000 holds made an 11 MB state file rewritten with an fsync on every PUT.
#[test]
fn holds_past_the_cap_are_refused_and_existing_ones_can_be_renewed() {
    let up = Upstream::start(Pods::Serve(fixture("1.36")));
    let agent = Agent::start(&config_for(&up.url(), "1s", "2s"));
    for i in 0..64 {
        assert_eq!(
            put_hold(&agent, &format!("h{i}"), &json!({"ttl": "1h"})).status,
            200
        );
    }
    let r = put_hold(&agent, "h64", &json!({"ttl": "1h"}));
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(r.json()["error"], "too_many_holds");
    assert_eq!(
        put_hold(&agent, "h7", &json!({"ttl": "2h"})).status,
        200,
        "renewal"
    );
    assert_eq!(
        request("DELETE", &agent.url("/v1/holds/h7"), &[], None).status,
        204
    );
    assert_eq!(put_hold(&agent, "h64", &json!({"ttl": "1h"})).status, 200);
    let too_long = put_hold(
        &agent,
        "r",
        &json!({"ttl": "1h", "reason": "x".repeat(1025)}),
    );
    assert_eq!(too_long.status, 400);
}

/// Puts a directory where `state.json` is: every write of the state fails (the rename onto it
/// does), as on a full disk, whoever runs the test. Returns a function that undoes it.
fn break_state(state_dir: &Path) -> impl FnOnce() {
    let file = state_dir.join("state.json");
    std::fs::remove_file(&file).unwrap();
    std::fs::create_dir(&file).unwrap();
    std::fs::write(file.join("in-the-way"), "").unwrap();
    move || std::fs::remove_dir_all(&file).unwrap()
}

/// Item 7: the intent written before an upgrade call ignored a write failure and the call was
/// sent anyway; hold PUTs on a full disk were answered 200 and lost.
#[test]
fn no_upgrade_call_is_sent_when_its_intent_cannot_be_persisted() {
    let up = Upstream::start(Pods::Serve(pods_with(|_| {})));
    up.answer(vec![(
        200,
        "text/plain",
        "Start updating pod kube-system/kube-proxy-hsdvx".into(),
    )]);
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("stopped");
    let state = dir.path().join("state");
    let port = free_port();
    let config = format!(
        "[api]\nlisten = \"127.0.0.1:{port}\"\n{}[[gate]]\nname = \"stopped\"\nkind = \"file\"\npath = \"{}\"\nsafety = true\n",
        auto(&up.url(), ""),
        gate.display()
    );
    let agent = Agent::start_in(&config, &format!("http://127.0.0.1:{port}"), dir);
    wait_for("the first pod list", Duration::from_secs(10), || {
        get(&agent.url("/v1/readyz")).status == 200
    });
    let repair = break_state(&state);
    // The gate opens: the next write is the intent of the upgrade, and it fails. Stable after
    // 200 ms, gates read every 50 ms: 1.5 s is ample for the call had it been sent.
    std::fs::write(&gate, "1").unwrap();
    thread::sleep(Duration::from_millis(1500));
    assert!(
        up.calls("POST").is_empty(),
        "no call without its intent on disk"
    );
    let st = get(&agent.url("/v1/status")).json();
    assert_eq!(
        st["pods_needing_upgrade"][0]["why_word"], "state_unavailable",
        "{st:#}"
    );
    assert!(
        st["state"]["error"]
            .as_str()
            .unwrap()
            .contains("state.json"),
        "{st:#}"
    );
    assert_eq!(agent.metric("yurt_ota_state_writable"), 0.0);
    // What needs durability is refused, not acknowledged and lost.
    let r = put_hold(&agent, "nav", &json!({"ttl": "1h"}));
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"], "state_unavailable");
    assert_eq!(post(&agent.url("/v1/breaker/reset")).status, 503);
    assert_eq!(get(&agent.url("/v1/holds")).json()["holds"], json!([]));

    // Writes succeed again: the agent notices by itself, and the upgrade goes.
    repair();
    wait_for(
        "the upgrade after recovery",
        Duration::from_secs(10),
        || up.calls("POST").len() == 1,
    );
    assert_eq!(agent.metric("yurt_ota_state_writable"), 1.0);
    assert_eq!(
        get(&agent.url("/v1/status")).json()["state"]["writable"],
        true
    );
    assert_eq!(put_hold(&agent, "nav", &json!({"ttl": "1h"})).status, 200);
    assert!(
        agent.log().contains("automatic upgrades resume"),
        "{}",
        agent.log()
    );
}

/// Item 7 as it was seen: 80 hold PUTs on a 64 KiB tmpfs. Every 200 must survive a restart.
/// Needs `mount` (root with CAP_SYS_ADMIN); skipped with a message where it cannot mount.
#[test]
fn on_a_full_tmpfs_every_acknowledged_hold_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&state)
        .output();
    if !mounted.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!("SKIPPED: cannot mount a tmpfs here ({mounted:?}); the directory test above covers the rule");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(state.clone());
    // Filler leaves room for a small state file and not much more.
    std::fs::write(state.join("filler"), vec![0u8; 52 << 10]).unwrap();
    let up = Upstream::start(Pods::Serve(fixture("1.36")));
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let config = format!(
        "[api]\nlisten = \"127.0.0.1:{port}\"\n{}[state]\ndir = \"{}\"\n",
        config_for(&up.url(), "1s", "2s"),
        state.display()
    );
    let agent = Agent::start_with(&config, &base);
    let mut acked = Vec::new();
    let mut refused = 0;
    for i in 0..80 {
        let name = format!("hold-{i}");
        let r = put_hold(
            &agent,
            &name,
            &json!({"ttl": "1h", "reason": "r".repeat(200)}),
        );
        match r.status {
            200 => acked.push(name),
            503 => refused += 1,
            409 => {}
            s => panic!("{s}: {}", r.text()),
        }
    }
    assert!(refused > 0, "the disk filled up: acked {}", acked.len());
    drop(agent);
    let again = Agent::start_with(&config, &base);
    let holds = get(&again.url("/v1/holds")).json();
    let mut kept: Vec<String> = holds["holds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap().to_owned())
        .collect();
    kept.sort();
    acked.sort();
    assert_eq!(kept, acked, "every 200 survived, and nothing else");
}

/// Item 9: a hold reason with `\r\n` forged an `INFO:` line in the log, and escape sequences
/// retitled and cleared the terminal through `yurt-ota events` and `status`.
#[test]
fn a_hold_reason_cannot_forge_log_lines_or_drive_the_terminal() {
    let up = Upstream::start(Pods::Serve(fixture("1.36")));
    let agent = Agent::start(&config_for(&up.url(), "1s", "2s"));
    let reason = "nav\r\nINFO: hold nav released\u{1b}]0;pwned\u{7}\u{1b}[2J\u{9b}31m";
    assert_eq!(
        put_hold(&agent, "nav", &json!({"ttl": "1h", "reason": reason})).status,
        200
    );
    let log = agent.log();
    assert!(log.contains("hold nav set"), "{log}");
    assert!(
        !log.lines()
            .any(|l| l.starts_with("INFO: hold nav released")),
        "a forged line:\n{log}"
    );
    assert!(!log.contains('\u{1b}') && !log.contains('\r'), "{log:?}");
    for args in [&["events"][..], &["status"], &["holds"]] {
        let out = agent.cli(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{args:?} printed a control character: {text:?}"
        );
        assert!(
            text.contains("\\u{1b}]0;pwned"),
            "{args:?} shows it escaped: {text}"
        );
    }
    // --json stays exact.
    let out = agent.cli(&["holds", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["holds"][0]["reason"], reason);
}
