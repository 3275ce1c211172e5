//! The local API against a scripted upstream: relays, error codes, auth, sockets, shutdown.

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::*;

const TEXT: &str = "text/plain; charset=utf-8";
const POD: &str = "/openyurt.io/v1/namespaces/kube-system/pods/kube-proxy-hsdvx";

fn agent_for(up: &Upstream) -> Agent {
    let a = Agent::start(&config_for(&up.url(), "200ms", "1s"));
    wait_for("the first snapshot", Duration::from_secs(5), || {
        get(&a.url("/pods")).status == 200
    });
    a
}

#[test]
fn every_yurthub_answer_reaches_the_device_app_verbatim() {
    let up = Upstream::start(Pods::Serve(fixture_needing_upgrade(
        "1.36",
        &["kube-proxy"],
    )));
    let agent = agent_for(&up);
    // SPEC section 2: v1.7 answers, and the older versions' variants.
    let answers: Vec<(u16, &str, String)> = vec![
        (200, "application/json", "Start updating pod kube-system/kube-proxy-hsdvx".into()),
        (403, TEXT, "Pre check update pod failed, Failed to check pod kube-system/kube-proxy-hsdvx status, error: Pod: kube-system/kube-proxy-hsdvx update status is False, can not be updated".into()),
        (403, TEXT, "Pre check update pod failed, Failed to check pod kube-system/kube-proxy-hsdvx image ready, error: Pod: kube-system/kube-proxy-hsdvx image is not ready, reason: PullImageFail, message: controllerrevision: 7f9c8d6b5".into()),
        (400, TEXT, "Pod has no owner references".into()),
        (400, TEXT, "Not support ota upgrade pod type ReplicaSet".into()),
        (500, TEXT, "Get pod failed, pods \"kube-proxy-hsdvx\" not found".into()),
        (500, TEXT, "Apply update failed".into()),
        (503, TEXT, "OTA upgrade is not allowed when node is disconnected to cloud".into()),
        (403, TEXT, "Pod is not-updatable".into()),
        (403, TEXT, "Configmap for static pod does not exist".into()),
    ];
    for (status, ct, body) in answers {
        up.answer(vec![(status, ct, body.clone())]);
        let r = post(&agent.url(&format!("{POD}/upgrade")));
        assert_eq!(
            (r.status, r.text(), r.content_type.as_str()),
            (status, body.clone(), ct),
            "relay of {status} {body}"
        );
    }
    for (status, ct, body) in [
        (200, "application/json", "Image pre-pull requested for pod kube-system/kube-proxy-hsdvx"),
        (404, TEXT, "404 page not found\n"),
        (403, TEXT, "Failed to check pod status kube-system/kube-proxy-hsdvx, error: Pod: kube-system/kube-proxy-hsdvx update status is False, can not be updated"),
    ] {
        up.answer(vec![(status, ct, body.into())]);
        let r = post(&agent.url(&format!("{POD}/imagepull")));
        assert_eq!((r.status, r.text(), r.content_type.as_str()), (status, body.into(), ct));
    }
    // Each went upstream exactly once, to the same path: no retries on the request path.
    let calls = up.calls("POST");
    assert_eq!(calls.len(), 13);
    assert!(calls[..10]
        .iter()
        .all(|c| c.path == format!("{POD}/upgrade")));
    assert_eq!(
        agent.metric("yurt_ota_upstream_calls_total{call=\"upgrade\",code=\"403\"}"),
        4.0
    );
    let recent = get(&agent.url("/v1/status")).json()["recent_upgrades"].clone();
    assert_eq!(recent[0]["status"], 403);
    assert_eq!(recent.as_array().unwrap().len(), 10);
}

#[test]
fn serves_the_fixture_pods_from_its_snapshot() {
    let raw = fixture_needing_upgrade("1.33", &["kube-proxy", "etcd"]);
    let up = Upstream::start(Pods::Serve(raw.clone()));
    let agent = agent_for(&up);
    let r = get(&agent.url("/pods"));
    assert_eq!(r.content_type, "application/json");
    let age: u64 = r
        .header("X-Yurt-Ota-Snapshot-Age")
        .unwrap()
        .parse()
        .unwrap();
    assert!(age <= 1, "{age}");
    let mut want: Value = serde_json::from_slice(&raw).unwrap();
    for item in want["items"].as_array_mut().unwrap() {
        item["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("managedFields");
    }
    assert_eq!(r.json(), want);
    // Query parameters are ignored, as YurtHub does.
    assert_eq!(get(&agent.url("/pods?labelSelector=x")).json(), want);

    let status = get(&agent.url("/v1/status")).json();
    let outdated = status["pods_needing_upgrade"].as_array().unwrap();
    // etcd is a static pod (owner Node): offered by the cloud but not a DaemonSet pod.
    assert_eq!(outdated.len(), 1, "{status:#}");
    assert_eq!(outdated[0]["name"], "kube-proxy-9vxzb");
    assert_eq!(outdated[0]["target_revision"], "7f9c8d6b5");
    assert_eq!(status["upstream"]["url"], up.url());
    assert_eq!(agent.metric("yurt_ota_pods_needing_upgrade"), 1.0);
    assert_eq!(agent.metric("yurt_ota_pods"), 8.0);
}

#[test]
fn bad_input_gets_the_documented_errors() {
    let up = Upstream::start(Pods::Serve(fixture("1.35")));
    let agent = agent_for(&up);
    let ns = "/openyurt.io/v1/namespaces";
    for path in [
        format!("{ns}/Kube-System/pods/x/upgrade"),
        format!("{ns}/kube_system/pods/x/upgrade"),
        format!("{ns}/kube-system/pods/UPPER/upgrade"),
        format!("{ns}/kube-system/pods/a..b/imagepull"),
        format!("{ns}/kube-system/pods/%2e%2e/upgrade"),
        format!("{ns}/{}/pods/x/upgrade", "a".repeat(64)),
        format!("{ns}/kube-system/pods/{}/upgrade", "a".repeat(254)),
    ] {
        let r = post(&agent.url(&path));
        assert_eq!(
            (r.status, r.json()["error"].clone()),
            (400, "invalid_name".into()),
            "{path}"
        );
        assert!(r.json()["message"].as_str().unwrap().len() > 10);
    }
    assert!(
        up.calls("POST").is_empty(),
        "invalid names never go upstream"
    );

    let r = get(&agent.url("/v2/pods"));
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (404, Some("not_found"))
    );
    let r = request("DELETE", &agent.url("/pods"), &[], None);
    assert_eq!((r.status, r.header("Allow")), (405, Some("GET")));
    assert_eq!(r.json()["error"], "method_not_allowed");
    let r = get(&agent.url(&format!("{POD}/upgrade")));
    assert_eq!((r.status, r.header("Allow")), (405, Some("POST")));

    let big = vec![b'x'; 64 * 1024 + 1];
    let r = request(
        "POST",
        &agent.url(&format!("{POD}/upgrade")),
        &[],
        Some(&big),
    );
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (413, Some("payload_too_large"))
    );
    let ok = vec![b'x'; 64 * 1024];
    up.answer(vec![(
        200,
        "application/json",
        "Start updating pod kube-system/kube-proxy-hsdvx".into(),
    )]);
    assert_eq!(
        request(
            "POST",
            &agent.url(&format!("{POD}/upgrade")),
            &[],
            Some(&ok)
        )
        .status,
        200
    );
    assert_eq!(up.calls("POST").len(), 1, "the 413 never went upstream");

    // Regression: with tiny_http, one request declaring a huge body it never sent made the agent
    // allocate that much when answering ("memory allocation of 100000000000 bytes failed").
    for path in ["/pods", "/nope", &format!("{POD}/upgrade")] {
        let mut s = std::net::TcpStream::connect(agent.base.trim_start_matches("http://")).unwrap();
        use std::io::{Read, Write};
        s.write_all(
            format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000000\r\n\r\nabc")
                .as_bytes(),
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 413 "), "{out}");
        assert!(out.contains("\"error\":\"payload_too_large\""), "{out}");
    }
    let r = request(
        "POST",
        &agent.url(&format!("{POD}/upgrade")),
        &[("Transfer-Encoding", "chunked")],
        Some(b"abc"),
    );
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (411, Some("length_required"))
    );

    // The agent is still serving after all of that.
    assert_eq!(get(&agent.url("/v1/healthz")).text(), "ok");
    assert_eq!(
        agent.metric("yurt_ota_api_requests_total{route=\"upgrade\",code=\"400\"}"),
        6.0
    );
    assert_eq!(
        agent.metric("yurt_ota_api_requests_total{route=\"unknown\",code=\"404\"}"),
        1.0
    );
}

#[test]
fn upstream_down_or_slow_on_upgrade_is_502_or_504() {
    let up = Upstream::start(Pods::Serve(fixture("1.35")));
    let agent = agent_for(&up);
    up.set_pods(Pods::Hang);
    up.answer(vec![]);
    let (port, _) = up.stop();
    let r = post(&agent.url(&format!("{POD}/upgrade")));
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (502, Some("upstream_unreachable"))
    );
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains(&format!("127.0.0.1:{port}")));
    // The pod list is still served from the snapshot.
    assert_eq!(get(&agent.url("/pods")).status, 200);

    // An upstream that accepts and never answers: bounded by upstream.timeout.
    let hung = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let started = Instant::now();
    let r = post(&agent.url(&format!("{POD}/upgrade")));
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (504, Some("upstream_timeout")),
        "{}",
        r.text()
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    drop(hung);
    assert_eq!(
        agent.metric("yurt_ota_upstream_calls_total{call=\"upgrade\",code=\"0\"}"),
        2.0
    );
}

#[test]
fn no_snapshot_before_the_first_poll_and_readyz_flips() {
    let port = free_port();
    // Nothing listens yet: every poll is refused.
    let agent = Agent::start(&config_for(
        &format!("http://127.0.0.1:{port}"),
        "200ms",
        "500ms",
    ));
    wait_for("a failed poll", Duration::from_secs(5), || {
        agent.metric("yurt_ota_polls_total{result=\"connect\"}") >= 1.0
    });
    let r = get(&agent.url("/pods"));
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (503, Some("no_snapshot"))
    );
    let r = get(&agent.url("/v1/readyz"));
    assert_eq!(r.status, 503);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("cannot connect"),
        "{}",
        r.text()
    );
    assert_eq!(
        get(&agent.url("/v1/healthz")).status,
        200,
        "alive while not ready"
    );

    let up = Upstream::start_on(
        port,
        std::sync::Arc::new(std::sync::Mutex::new(Script {
            pods: Pods::Serve(fixture("1.32")),
            answers: vec![],
            calls: vec![],
        })),
    );
    wait_for("readyz 200", Duration::from_secs(5), || {
        get(&agent.url("/v1/readyz")).status == 200
    });
    assert_eq!(get(&agent.url("/pods")).status, 200);

    up.stop();
    // Three poll intervals (600 ms) without success: not ready, but the pods are still served.
    wait_for("readyz 503", Duration::from_secs(5), || {
        get(&agent.url("/v1/readyz")).status == 503
    });
    let r = get(&agent.url("/pods"));
    assert_eq!(r.status, 200);
    assert!(r
        .header("X-Yurt-Ota-Snapshot-Age")
        .unwrap()
        .parse::<u64>()
        .is_ok());
    assert!(get(&agent.url("/v1/readyz")).json()["message"]
        .as_str()
        .unwrap()
        .contains("more than 3 poll intervals"));
    assert_eq!(agent.metric("yurt_ota_ready"), 0.0);
}

#[test]
fn mutating_routes_need_the_token() {
    let up = Upstream::start(Pods::Serve(fixture("1.36")));
    up.answer(vec![(
        200,
        "application/json",
        "Start updating pod kube-system/kube-proxy-hsdvx".into(),
    )]);
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let port = free_port();
    let agent = Agent::start_with(
        &format!(
            "[api]\nlisten = \"0.0.0.0:{port}\"\ntoken_file = \"{}\"\n{}",
            token.display(),
            config_for(&up.url(), "200ms", "1s")
        ),
        &format!("http://127.0.0.1:{port}"),
    );
    let url = agent.url(&format!("{POD}/upgrade"));
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Bearer s3cret-tokeX"),
        Some("s3cret-token"),
        Some("Basic s3cret-token"),
        Some("Bearers3cret-token"),
    ] {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        let r = request("POST", &url, &headers, None);
        assert_eq!(
            (r.status, r.json()["error"].as_str()),
            (401, Some("unauthorized")),
            "{auth:?}"
        );
    }
    assert!(up.calls("POST").is_empty());
    let r = request(
        "POST",
        &url,
        &[("Authorization", "Bearer s3cret-token")],
        None,
    );
    assert_eq!(r.status, 200);
    // RFC 7235: the scheme is case-insensitive (lowercase `bearer` was refused).
    let r = request(
        "POST",
        &url,
        &[("Authorization", "bearer s3cret-token")],
        None,
    );
    assert_ne!(r.status, 401, "{}", r.text());
    assert_eq!(
        get(&agent.url("/v1/status")).status,
        200,
        "reads need no token"
    );
    assert!(!agent.log().contains("s3cret"), "the token is never logged");

    // The CLI reads the token from --token-file.
    let out = agent.cli(&["imagepull", "kube-system/kube-proxy-hsdvx"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Authorization: Bearer"));
    let out = Command::new(BIN)
        .args([
            "upgrade",
            "kube-system/kube-proxy-hsdvx",
            "--api",
            &agent.base,
            "--token-file",
        ])
        .arg(&token)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn idle_and_stalled_connections_are_closed() {
    use std::io::{Read, Write};
    let up = Upstream::start(Pods::Serve(fixture("1.36")));
    let agent = Agent::start(&format!(
        "connection_timeout = \"300ms\"\n{}",
        config_for(&up.url(), "200ms", "1s")
    ));
    let started = Instant::now();
    let mut idle = agent.connect();
    let mut half = agent.connect();
    half.write_all(b"GET /pods HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // Meanwhile others are served.
    assert_eq!(get(&agent.url("/v1/healthz")).status, 200);
    for conn in [&mut idle, &mut half] {
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut rest = Vec::new();
        // The agent closes the connection (tiny_http may first send a bare 408).
        conn.read_to_end(&mut rest).unwrap();
        assert!(
            rest.is_empty() || rest.starts_with(b"HTTP/1.1 408"),
            "{:?}",
            String::from_utf8_lossy(&rest)
        );
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[test]
fn non_loopback_listen_without_a_token_is_refused_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, "[api]\nlisten = \"0.0.0.0:10290\"\n").unwrap();
    let out = Command::new(BIN)
        .arg("run")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}: `api.listen`: 0.0.0.0:10290 is not a loopback address",
            cfg.display()
        )),
        "{err}"
    );
}

#[test]
fn unix_socket_and_sigterm() {
    let up = Upstream::start(Pods::Serve(fixture("1.36")));
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("run/api.sock");
    // A stale socket file from an earlier crash must not stop the agent from starting.
    std::fs::create_dir_all(sock.parent().unwrap()).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let api = format!("unix:{}", sock.display());
    let mut agent = Agent::start_with(
        &format!(
            "[api]\nlisten = \"{api}\"\n{}",
            config_for(&up.url(), "200ms", "1s")
        ),
        &api,
    );
    wait_for("the socket", Duration::from_secs(5), || {
        let out = agent.cli(&["pods", "--json"]);
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("kube-proxy-")
    });
    let out = agent.cli(&["status", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["snapshot"]["pods"], 8);
    // Owner and group may connect, others not, whatever the umask.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "{mode:o}");

    let started = Instant::now();
    let code = agent.terminate();
    assert!(code.success(), "{code:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(!sock.exists(), "the socket is removed on shutdown");
    assert!(agent.log().contains("stopped"), "{}", agent.log());
}

#[test]
fn a_second_agent_cannot_take_over_a_live_unix_socket() {
    let up = Upstream::start(Pods::Serve(fixture("1.36")));
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let api = format!("unix:{}", sock.display());
    let config = format!(
        "[api]\nlisten = \"{api}\"\n{}",
        config_for(&up.url(), "200ms", "1s")
    );
    let mut first = Agent::start_with(&config, &api);
    wait_for("the socket", Duration::from_secs(5), || {
        first.cli(&["status", "--json"]).status.success()
    });
    // The second agent, same socket path: it refuses to start, naming the path.
    let second_dir = tempfile::tempdir().unwrap();
    let second_config = second_dir.path().join("config.toml");
    std::fs::write(
        &second_config,
        format!(
            "{config}\n[state]\ndir = \"{}\"\n",
            second_dir.path().join("state").display()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&second_config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains(&sock.display().to_string()), "{err}");
    // The first agent still serves on its socket, and still stops at once.
    assert!(first.cli(&["status", "--json"]).status.success());
    let started = Instant::now();
    let code = first.terminate();
    assert!(code.success(), "{code:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn slow_clients_do_not_lock_out_others() {
    let up = Upstream::start(Pods::Serve(fixture("1.36")));
    let agent = Agent::start(&format!(
        "max_connections = 4\nconnection_timeout = \"30s\"\n{}",
        config_for(&up.url(), "200ms", "1s")
    ));
    // Attackers hold every slot twice over: half trickle a request head, half stay silent.
    let mut slow = Vec::new();
    for i in 0..8 {
        let mut s = agent.connect();
        if i % 2 == 0 {
            s.write_all(b"G").unwrap();
        }
        slow.push(s);
    }
    for i in 0..20 {
        for s in slow.iter_mut().step_by(2) {
            let _ = s.write_all(b"E");
        }
        let r = get(&agent.url("/v1/status"));
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
}
