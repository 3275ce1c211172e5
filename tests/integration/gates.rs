//! Gates, holds, the queue and automatic mode: the real binary against a scripted node that
//! records every upgrade call with its arrival time, with real signal files and a sysfs-like GPIO
//! tree.

use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::node::{Node, OUTDATED};
use crate::util::*;

const STABLE: Duration = Duration::from_millis(500);

/// Auto mode, fast clocks: poll 100 ms, gates every 50 ms, stable for 500 ms.
fn auto(node: &Node, policy: &str, gates: &str) -> String {
    format!(
        "[upstream]\nurl = \"{}\"\npoll_interval = \"100ms\"\ntimeout = \"1s\"\n\
         [policy]\nmode = \"auto\"\nstable_for = \"500ms\"\ngate_check_interval = \"50ms\"\n{policy}\n{gates}",
        node.url()
    )
}

fn file_gate(name: &str, path: &Path, safety: bool) -> String {
    format!(
        "[[gate]]\nname = \"{name}\"\nkind = \"file\"\npath = \"{}\"\nsafety = {safety}\n",
        path.display()
    )
}

fn touch(path: &Path) {
    std::fs::write(path, "1").unwrap();
}

fn rm(path: &Path) {
    let _ = std::fs::remove_file(path);
}

fn upgrade_url(agent: &Agent, pod: &str, query: &str) -> String {
    let (ns, name) = pod.split_once('/').unwrap();
    agent.url(&format!(
        "/openyurt.io/v1/namespaces/{ns}/pods/{name}/upgrade{query}"
    ))
}

#[test]
fn auto_mode_upgrades_each_outdated_pod_one_at_a_time_while_gates_are_open_and_stable() {
    let node = Node::start(Duration::from_millis(200), true);
    let dir = tempfile::tempdir().unwrap();
    let stopped = dir.path().join("stopped");
    // A sysfs-like GPIO tree: <root>/gpio17/value, as the kernel lays it out.
    let gpio = dir.path().join("gpio");
    std::fs::create_dir_all(gpio.join("gpio17")).unwrap();
    std::fs::write(gpio.join("gpio17/value"), "0\n").unwrap();
    let gates = format!(
        "{}[[gate]]\nname = \"park-brake\"\nkind = \"gpio-sysfs\"\nline = 17\nsysfs_root = \"{}\"\n",
        file_gate("vehicle-stopped", &stopped, true),
        gpio.display()
    );
    let agent = Agent::start(&auto(&node, "", &gates));
    thread::sleep(Duration::from_millis(1200));
    assert!(node.upgraded().is_empty(), "both gates closed");
    let st = get(&agent.url("/v1/status")).json();
    assert_eq!(st["mode"], "auto");
    assert_eq!(st["upgrade_gates_open"], false);
    assert_eq!(
        st["blocked_by"],
        serde_json::json!(["vehicle-stopped", "park-brake"])
    );
    // The pre-pull comes first (prepull is on); once the image is ready, the gates are the
    // reason. Waited for, not slept: under qemu on a loaded machine the pre-pull takes longer.
    wait_for(
        "the gates to be why the pod waits",
        Duration::from_secs(15),
        || {
            let st = get(&agent.url("/v1/status")).json();
            st["pods_needing_upgrade"][0]["why_not_yet"]
                .as_str()
                .is_some_and(|why| why.contains("vehicle-stopped"))
        },
    );
    assert!(node.upgraded().is_empty(), "both gates closed");

    touch(&stopped);
    thread::sleep(Duration::from_millis(1200));
    assert!(node.upgraded().is_empty(), "the GPIO line is still low");

    std::fs::write(gpio.join("gpio17/value"), "1\n").unwrap();
    let opened = Instant::now();
    wait_for("three upgrades", Duration::from_secs(15), || {
        node.upgraded().len() == 3
    });
    assert_eq!(
        node.upgraded(),
        OUTDATED,
        "stable order: namespace, then name"
    );
    let (calls, replaced) = node.with(|s| {
        (
            s.upgrades().iter().map(|c| c.at).collect::<Vec<_>>(),
            s.replaced.clone(),
        )
    });
    assert!(calls[0] >= opened + STABLE, "not before stable_for");
    for i in 1..3 {
        // One at a time: the next call only once the previous replacement is there.
        assert!(calls[i] >= replaced[i - 1].1, "upgrade {i} overlapped");
    }
    wait_for(
        "the last replacement to finish",
        Duration::from_secs(5),
        || agent.metric("yurt_ota_upgrades_total{result=\"succeeded\"}") == 3.0,
    );
    assert_eq!(
        agent.metric("yurt_ota_upgrades_total{result=\"started\"}"),
        3.0
    );
    assert_eq!(
        agent.metric("yurt_ota_gate_open{gate=\"park-brake\",safety=\"false\"}"),
        1.0
    );
    let events = get(&agent.url("/v1/events?limit=100")).json();
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "upgrade_finished").count(),
        3
    );
    agent.assert_logged_once("gate vehicle-stopped open");
}

#[test]
fn a_gate_that_closes_mid_rollout_stops_the_next_upgrade() {
    let node = Node::start(Duration::from_millis(800), true);
    let dir = tempfile::tempdir().unwrap();
    let stopped = dir.path().join("stopped");
    touch(&stopped);
    let agent = Agent::start(&auto(
        &node,
        "",
        &file_gate("vehicle-stopped", &stopped, true),
    ));
    wait_for("the first upgrade", Duration::from_secs(10), || {
        !node.upgraded().is_empty()
    });
    rm(&stopped);
    let closed = Instant::now();
    thread::sleep(Duration::from_millis(2500));
    assert_eq!(node.upgraded(), vec![OUTDATED[0]], "no second upgrade");
    assert!(node.with(|s| s.upgrades().iter().all(|c| c.at < closed)));
    let st = get(&agent.url("/v1/status")).json();
    assert_eq!(st["blocked_by"], serde_json::json!(["vehicle-stopped"]));
    // The first upgrade was tracked to its end all the same.
    assert_eq!(
        agent.metric("yurt_ota_upgrades_total{result=\"succeeded\"}"),
        1.0
    );
}

#[test]
fn a_file_gate_flapping_faster_than_stable_for_never_upgrades() {
    let node = Node::start(Duration::from_millis(100), true);
    let dir = tempfile::tempdir().unwrap();
    let stopped = dir.path().join("stopped");
    let _agent = Agent::start(&auto(
        &node,
        "",
        &file_gate("vehicle-stopped", &stopped, true),
    ));
    // Open 300 ms, closed 150 ms, for 4 s: every gate check (50 ms) sees each phase.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        touch(&stopped);
        thread::sleep(Duration::from_millis(300));
        rm(&stopped);
        thread::sleep(Duration::from_millis(150));
    }
    assert!(node.upgraded().is_empty(), "{:?}", node.upgraded());
    // Left open, it upgrades: the test could have failed.
    touch(&stopped);
    wait_for("an upgrade once stable", Duration::from_secs(5), || {
        !node.upgraded().is_empty()
    });
}

/// The zone whose wall clock reads 00:xx now (Etc/GMT zones have POSIX signs: Etc/GMT+5 is
/// UTC-5), and the local weekdays of yesterday and today there.
fn zone_just_past_midnight() -> (String, &'static str, &'static str) {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    let now = jiff::Timestamp::now();
    let utc_hour = now.to_zoned_datetime(jiff::tz::TimeZone::UTC).hour();
    let zone = if utc_hour <= 12 {
        format!("Etc/GMT+{utc_hour}")
    } else {
        format!("Etc/GMT-{}", 24 - utc_hour)
    };
    let local = now.to_zoned_datetime(jiff::tz::TimeZone::get(&zone).unwrap());
    assert_eq!(local.hour(), 0, "{zone}");
    let today = local.weekday().to_monday_zero_offset() as usize;
    (zone, DAYS[(today + 6) % 7], DAYS[today])
}

#[test]
fn a_window_across_midnight_opens_after_midnight_only_for_the_day_it_started() {
    let (zone, yesterday, today) = zone_just_past_midnight();
    let window = |day: &str| {
        format!(
            "[[gate]]\nname = \"night\"\nkind = \"window\"\nwindows = [\"{day} 23:00-02:00\"]\ntimezone = \"{zone}\"\n"
        )
    };
    // Today's window starts tonight at 23:00: closed now.
    let node = Node::start(Duration::from_millis(100), true);
    let agent = Agent::start(&auto(&node, "", &window(today)));
    thread::sleep(Duration::from_millis(1200));
    assert!(node.upgraded().is_empty());
    let st = get(&agent.url("/v1/status")).json();
    let gate = &st["gates"][0];
    assert_eq!(
        (gate["kind"].as_str(), gate["open"].as_bool()),
        (Some("window"), Some(false))
    );
    assert!(gate["next_open"].as_str().is_some(), "{gate}");
    // A manual call is refused with an estimate: until 23:00 local, plus stable_for.
    let r = post(&upgrade_url(&agent, OUTDATED[0], ""));
    assert_eq!(r.status, 409, "{}", r.text());
    let retry: u64 = r.header("Retry-After").unwrap().parse().unwrap();
    assert!((22 * 3600 - 120..=23 * 3600).contains(&retry), "{retry}");
    drop(agent);

    // Yesterday's window runs on past midnight: open now.
    let node = Node::start(Duration::from_millis(100), true);
    let _agent = Agent::start(&auto(&node, "", &window(yesterday)));
    wait_for(
        "upgrades inside the window",
        Duration::from_secs(10),
        || node.upgraded().len() == 3,
    );
}

#[test]
fn a_hold_blocks_upgrades_until_its_ttl_runs_out() {
    let node = Node::start(Duration::from_millis(100), true);
    let dir = tempfile::tempdir().unwrap();
    let stopped = dir.path().join("stopped");
    let agent = Agent::start(&auto(
        &node,
        "",
        &file_gate("vehicle-stopped", &stopped, true),
    ));
    let set = Instant::now();
    let out = agent.cli(&[
        "hold",
        "nav",
        "--ttl",
        "3s",
        "--reason",
        "navigation active",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    touch(&stopped);
    thread::sleep(Duration::from_millis(1000));
    let holds = get(&agent.url("/v1/holds")).json();
    assert_eq!(holds["holds"][0]["name"], "nav");
    assert_eq!(holds["holds"][0]["reason"], "navigation active");
    // A device app's upgrade is refused while the hold stands, with an estimate.
    let r = post(&upgrade_url(&agent, OUTDATED[1], ""));
    assert_eq!(r.status, 409);
    assert_eq!(r.json()["blocked_by"], serde_json::json!(["hold:nav"]));
    let retry: u64 = r.header("Retry-After").unwrap().parse().unwrap();
    assert!((1..=3).contains(&retry), "{retry}");
    assert_eq!(agent.metric("yurt_ota_holds_active"), 1.0);
    wait_for("upgrades after the hold", Duration::from_secs(10), || {
        node.upgraded().len() == 3
    });
    let first = node.with(|s| s.upgrades()[0].at);
    assert!(
        first >= set + Duration::from_secs(3),
        "not before the TTL ran out"
    );
    let events = agent.cli(&["events"]);
    let text = String::from_utf8_lossy(&events.stdout);
    assert!(text.contains("hold_expired"), "{text}");

    // Bad holds are refused with the reason; release of an unknown hold is 404.
    let put = |body: &str| {
        request(
            "PUT",
            &agent.url("/v1/holds/x"),
            &[("Content-Type", "application/json")],
            Some(body.as_bytes()),
        )
    };
    assert_eq!(put("{\"reason\":\"no ttl\"}").status, 400);
    assert_eq!(put("{\"ttl\":\"30d\"}").status, 400);
    assert_eq!(put("not json").status, 400);
    assert_eq!(
        request("PUT", &agent.url("/v1/holds/bad%20name"), &[], Some(b"{}")).status,
        400
    );
    assert_eq!(
        request("DELETE", &agent.url("/v1/holds/none"), &[], None).status,
        404
    );
}

/// SPEC 6: a failure blocks that revision of that DaemonSet on this node (YurtHub mode too);
/// the pods of other DaemonSets go on; `reset-breaker` clears it by hand.
#[test]
fn the_breaker_trips_on_a_replacement_that_never_becomes_ready() {
    let node = Node::start(Duration::from_millis(100), false);
    let agent = Agent::start(&auto(&node, "ready_timeout = \"1500ms\"\n", ""));
    let blocked = |agent: &Agent| {
        get(&agent.url("/v1/status")).json()["blocked_revisions"]
            .as_array()
            .map_or(0, Vec::len)
    };
    wait_for("the revision blocked", Duration::from_secs(10), || {
        blocked(&agent) == 1
    });
    assert_eq!(node.upgraded()[0], OUTDATED[0]);
    let st = get(&agent.url("/v1/status")).json();
    let b = &st["blocked_revisions"][0];
    assert!(
        b["reason"].as_str().unwrap().contains("ready_timeout"),
        "{st:#}"
    );
    assert!(b["pod"].as_str().unwrap().ends_with(OUTDATED[0]), "{st:#}");
    assert_eq!(st["breaker"]["tripped"], false, "not for everything");
    assert_eq!(
        agent.metric("yurt_ota_upgrades_total{result=\"failed\"}"),
        1.0
    );
    // Other DaemonSets go on; the failed pod is not called again by itself.
    wait_for(
        "the next DaemonSet's upgrade",
        Duration::from_secs(10),
        || node.upgraded().len() >= 2,
    );
    thread::sleep(Duration::from_millis(500));
    assert_eq!(
        node.upgraded().iter().filter(|p| *p == OUTDATED[0]).count(),
        1,
        "{:?}",
        node.upgraded()
    );

    let out = agent.cli(&["reset-breaker"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("breaker reset"));
    wait_for("cleared by hand", Duration::from_secs(5), || {
        blocked(&agent) == 0
    });
}

/// SPEC 6, YurtHub mode: the cloud publishes a newer revision for the node whose upgrade
/// failed; the block on the failed revision lifts by itself and the pod is upgraded again, with
/// no call on the device.
#[test]
fn in_yurthub_mode_a_newer_revision_clears_the_block() {
    let node = Node::start(Duration::from_millis(100), false);
    let agent = Agent::start(&auto(&node, "ready_timeout = \"1500ms\"\n", ""));
    let blocked = |agent: &Agent| {
        get(&agent.url("/v1/status")).json()["blocked_revisions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    wait_for("the revision blocked", Duration::from_secs(10), || {
        !blocked(&agent).is_empty()
    });
    assert_eq!(blocked(&agent)[0]["revision"], "7f9c8d6b5");
    // The fix: every broken replacement now needs revision 9b1e0f8d7, and comes up Ready.
    node.with(|s| {
        s.ready = true;
        for p in s.pods.iter_mut() {
            let name = p["metadata"]["name"].as_str().unwrap().to_owned();
            if name.contains("-r") && name.starts_with("kindnet") {
                p["status"]["conditions"]
                    .as_array_mut()
                    .unwrap()
                    .push(serde_json::json!({
                        "type": "PodNeedUpgrade", "status": "True",
                        "message": "controllerrevision: 9b1e0f8d7"
                    }));
            }
        }
    });
    wait_for(
        "the fixed revision upgraded",
        Duration::from_secs(15),
        || {
            node.upgraded()
                .iter()
                .any(|p| p.starts_with("kube-system/kindnet-r"))
        },
    );
    wait_for("the block lifted", Duration::from_secs(10), || {
        blocked(&agent).iter().all(|b| {
            b["revision"] != "7f9c8d6b5" || !b["pod"].as_str().unwrap().contains("kindnet")
        })
    });
    let events = get(&agent.url("/v1/events?limit=256")).json();
    assert!(events["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["kind"] == "revision_unblocked"));
}

#[test]
fn a_crash_looping_replacement_trips_the_breaker_before_ready_timeout() {
    let node = Node::start(Duration::from_millis(100), false);
    node.with(|s| s.restarts = 5);
    let agent = Agent::start(&auto(&node, "ready_timeout = \"5m\"\n", ""));
    let mut reason = String::new();
    wait_for("the revision blocked", Duration::from_secs(10), || {
        let st = get(&agent.url("/v1/status")).json();
        reason = st["blocked_revisions"][0]["reason"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        !reason.is_empty()
    });
    assert!(reason.contains("restarted 5 times"), "{reason}");
}

#[test]
fn a_queued_upgrade_survives_a_restart_and_runs_when_the_gate_opens() {
    let node = Node::start(Duration::from_millis(100), true);
    let dir = tempfile::tempdir().unwrap();
    let stopped = dir.path().join("stopped");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let config = format!(
        "[api]\nlisten = \"127.0.0.1:{port}\"\n[upstream]\nurl = \"{}\"\npoll_interval = \"100ms\"\n\
         [policy]\nstable_for = \"500ms\"\ngate_check_interval = \"50ms\"\n{}",
        node.url(),
        file_gate("vehicle-stopped", &stopped, true)
    );
    let agent_dir = tempfile::tempdir().unwrap();
    let keep = agent_dir.path().to_owned();
    let mut agent = Agent::start_in(&config, &base, agent_dir);
    wait_for("a snapshot", Duration::from_secs(5), || {
        get(&agent.url("/pods")).status == 200
    });
    let r = post(&upgrade_url(&agent, OUTDATED[1], ""));
    assert_eq!(r.status, 409, "{}", r.text());
    let v = r.json();
    assert_eq!(
        (v["error"].as_str(), v["blocked_by"][0].as_str()),
        (Some("gate_closed"), Some("vehicle-stopped"))
    );
    assert!(
        r.header("Retry-After").is_none(),
        "a file gate gives no estimate"
    );
    let r = post(&upgrade_url(&agent, OUTDATED[1], "?when=idle"));
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["queued"], true);
    let r = post(&upgrade_url(
        &agent,
        "kube-system/no-such-pod",
        "?when=idle",
    ));
    assert_eq!(r.status, 404);

    let hold = request(
        "PUT",
        &agent.url("/v1/holds/diag"),
        &[],
        Some(br#"{"ttl":"10m","reason":"diagnostics"}"#),
    );
    assert_eq!(hold.status, 200);

    // kill -9: the queue and the hold are on disk already.
    agent.child.kill().unwrap();
    agent.child.wait().unwrap();
    let dir = std::mem::replace(&mut agent.dir, tempfile::tempdir().unwrap());
    drop(agent);
    assert_eq!(dir.path(), keep);
    let agent = Agent::start_in(&config, &base, dir);
    wait_for("the queue in status", Duration::from_secs(5), || {
        get(&agent.url("/v1/status")).json()["queue"][0]["pod"] == OUTDATED[1]
    });
    let holds = get(&agent.url("/v1/holds")).json();
    assert_eq!(
        holds["holds"][0]["reason"], "diagnostics",
        "the hold survived the restart"
    );
    assert_eq!(agent.cli(&["release", "diag"]).status.code(), Some(0));
    thread::sleep(Duration::from_millis(800));
    assert!(node.upgraded().is_empty(), "manual mode, gate closed");
    touch(&stopped);
    wait_for("the queued upgrade", Duration::from_secs(5), || {
        node.upgraded() == vec![OUTDATED[1]]
    });
    thread::sleep(Duration::from_millis(500));
    assert_eq!(
        node.upgraded(),
        vec![OUTDATED[1]],
        "only the queued pod, in manual mode"
    );
    // Gates open and stable: a plain call goes through at once and is relayed.
    let r = post(&upgrade_url(&agent, OUTDATED[0], ""));
    assert_eq!(
        (r.status, r.text()),
        (200, format!("Start updating pod {}", OUTDATED[0]))
    );
}

#[test]
fn after_kill_9_mid_upgrade_the_restarted_agent_sends_no_duplicate_call() {
    // The old pod stays listed, unchanged, for 4 s after the call (YurtHub's cache lags).
    let node = Node::start(Duration::from_secs(4), true);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let config = format!(
        "[api]\nlisten = \"127.0.0.1:{port}\"\n{}",
        auto(&node, "", "")
    );
    let mut agent = Agent::start_in(&config, &base, tempfile::tempdir().unwrap());
    wait_for("the first upgrade", Duration::from_secs(10), || {
        !node.upgraded().is_empty()
    });
    Command::new("kill")
        .args(["-9", &agent.child.id().to_string()])
        .status()
        .unwrap();
    agent.child.wait().unwrap();
    let dir = std::mem::replace(&mut agent.dir, tempfile::tempdir().unwrap());
    drop(agent);
    let agent = Agent::start_in(&config, &base, dir);
    thread::sleep(Duration::from_millis(2000));
    assert_eq!(
        node.upgraded(),
        vec![OUTDATED[0]],
        "no second call for the same pod"
    );
    let st = get(&agent.url("/v1/status")).json();
    assert_eq!(st["in_flight"][0]["pod"], OUTDATED[0], "{st:#}");
    // Once the replacement is Ready, the rollout goes on.
    wait_for("the next upgrade", Duration::from_secs(10), || {
        node.upgraded().len() == 2
    });
    assert_eq!(node.upgraded()[1], OUTDATED[1]);
}

#[test]
fn force_skips_holds_and_windows_never_a_safety_gate() {
    let node = Node::start(Duration::from_millis(100), true);
    let dir = tempfile::tempdir().unwrap();
    let stopped = dir.path().join("stopped");
    // A window on the day after tomorrow (UTC): certainly closed now.
    let (_, _, today) = zone_just_past_midnight();
    let later = [
        "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed",
    ][["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
        .iter()
        .position(|d| *d == today)
        .unwrap()
        + 2];
    let config = format!(
        "[upstream]\nurl = \"{}\"\npoll_interval = \"100ms\"\n[policy]\nstable_for = \"300ms\"\n\
         gate_check_interval = \"50ms\"\n{}[[gate]]\nname = \"never\"\nkind = \"window\"\n\
         windows = [\"{later} 12:00-12:01\"]\ntimezone = \"UTC\"\n",
        node.url(),
        file_gate("vehicle-stopped", &stopped, true)
    );
    let agent = Agent::start(&config);
    wait_for("a snapshot", Duration::from_secs(5), || {
        get(&agent.url("/pods")).status == 200
    });
    let hold = request(
        "PUT",
        &agent.url("/v1/holds/nav"),
        &[],
        Some(br#"{"ttl":"10m","reason":"navigation"}"#),
    );
    assert_eq!(hold.status, 200, "{}", hold.text());
    // The safety gate is closed: force does not help.
    let r = post(&upgrade_url(&agent, OUTDATED[0], "?force=true"));
    assert_eq!(r.status, 409);
    assert_eq!(
        r.json()["blocked_by"],
        serde_json::json!(["vehicle-stopped"])
    );
    touch(&stopped);
    thread::sleep(Duration::from_millis(600));
    // Without force: the window and the hold block.
    let r = post(&upgrade_url(&agent, OUTDATED[0], ""));
    assert_eq!(r.status, 409);
    let blocked = r.json()["blocked_by"].clone();
    assert_eq!(
        blocked,
        serde_json::json!(["never", "hold:nav"]),
        "{blocked}"
    );
    // With force: through, and relayed.
    let r = post(&upgrade_url(&agent, OUTDATED[0], "?force=true"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(node.upgraded(), vec![OUTDATED[0]]);
}

#[test]
fn upstream_errors_back_off_and_a_refusal_parks_the_pod() {
    let node = Node::start(Duration::from_millis(100), true);
    node.with(|s| s.upgrade_status = 500);
    let agent = Agent::start(&auto(&node, "", ""));
    wait_for("the first call", Duration::from_secs(5), || {
        !node.upgraded().is_empty()
    });
    thread::sleep(Duration::from_millis(1500));
    let st = get(&agent.url("/v1/status")).json();
    let first = &st["pods_needing_upgrade"][0];
    assert_eq!(
        (first["name"].as_str(), first["why_word"].as_str()),
        (Some("kindnet-4pxt7"), Some("backoff")),
        "{st:#}"
    );
    // Backed off: kindnet is not called again within 5 s (a backed-off pod does not hold the
    // max_concurrent slot, so the others were tried meanwhile).
    let calls = node.with(|s| s.upgrades().iter().map(|c| c.at).collect::<Vec<_>>());
    let retries: Vec<_> = node
        .upgraded()
        .iter()
        .zip(&calls)
        .filter(|(p, _)| p.as_str() == OUTDATED[0])
        .map(|(_, at)| *at)
        .collect();
    assert_eq!(retries.len(), 1, "no retry within the 5 s backoff");
    wait_for("the retry after 5 s", Duration::from_secs(10), || {
        node.upgraded()
            .iter()
            .filter(|p| p.as_str() == OUTDATED[0])
            .count()
            == 2
    });
    let again = node.with(|s| {
        s.upgrades()
            .iter()
            .filter(|c| c.path.contains("kindnet"))
            .map(|c| c.at)
            .collect::<Vec<_>>()
    });
    assert!(
        again[1] >= again[0] + Duration::from_secs(5),
        "{:?}",
        again[1] - again[0]
    );
    // A 500 after the call was sent: it may have started; the pod read again, unchanged.
    assert!(agent.metric("yurt_ota_upgrades_total{result=\"uncertain\"}") >= 2.0);

    // A 403 parks the pod: no call again while its conditions stay as they are.
    node.with(|s| s.upgrade_status = 403);
    wait_for("all three parked", Duration::from_secs(15), || {
        let st = get(&agent.url("/v1/status")).json();
        st["pods_needing_upgrade"]
            .as_array()
            .is_some_and(|p| p.len() == 3 && p.iter().all(|p| p["why_word"] == "parked"))
    });
    let n = node.upgraded().len();
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(node.upgraded().len(), n, "parked pods are not called");
}

/// Command gates wait for their checks with `wait-timeout`, whose SIGCHLD handler lives beside
/// signal-hook's SIGTERM handler: with checks ending and timing out around it, SIGTERM still
/// stops the agent cleanly and at once.
#[test]
fn command_gates_time_out_and_sigterm_still_stops_the_agent() {
    let node = Node::start(Duration::from_millis(100), true);
    let gates = "[[gate]]\nname = \"quick\"\nkind = \"command\"\nargv = [\"/bin/true\"]\n\
                 interval = \"100ms\"\ntimeout = \"5s\"\n\
                 [[gate]]\nname = \"hung\"\nkind = \"command\"\nargv = [\"/bin/sleep\", \"30\"]\n\
                 interval = \"100ms\"\ntimeout = \"200ms\"\n";
    let mut agent = Agent::start(&auto(&node, "", gates));
    wait_for("both checks run", Duration::from_secs(10), || {
        let st = get(&agent.url("/v1/status")).json();
        let g = &st["gates"];
        g[0]["open"] == true && g[1]["open"] == false && g[1].to_string().contains("killed")
    });
    let started = Instant::now();
    let code = agent.terminate();
    assert!(code.success(), "{code:?}\n{}", agent.log());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(agent.log().contains("stopped"), "{}", agent.log());
}
