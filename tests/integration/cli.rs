//! The operator CLI and check-config: output, exit codes, and errors that say what to do.

use crate::util::*;

/// Writes `text` as the file `name` in `dir` and returns its path.
fn write_config(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn unreachable_agent_is_exit_1_with_a_hint() {
    let port = free_port();
    let api = format!("http://127.0.0.1:{port}");
    for cmd in [
        &["status"][..],
        &["pods"],
        &["upgrade", "kube-system/kube-proxy-x"],
        &["imagepull", "a/b"],
    ] {
        let mut args = cmd.to_vec();
        args.extend(["--api", &api]);
        let (code, _, err) = run(&args);
        assert_eq!(code, Some(1), "{cmd:?}");
        assert!(
            err.contains(&format!("agent not reachable at {api}"))
                && err.contains("is yurt-ota running?"),
            "{err}"
        );
    }
}

#[test]
fn usage_errors_are_exit_2() {
    for args in [
        &[][..],
        &["bogus"],
        &["upgrade"],
        &["upgrade", "nslash"],
        &["pods", "--frob"],
        &["upgrade", "a/b", "--timeout", "x"],
    ] {
        let (code, _, err) = run(args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains("yurt-ota help"), "{err}");
    }
    let (code, out, _) = run(&["--version"]);
    assert_eq!(
        (code, out.trim()),
        (Some(0), concat!("yurt-ota ", env!("CARGO_PKG_VERSION")))
    );
    let (code, out, _) = run(&["help"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("yurt-ota upgrade NS/POD"));
}

#[test]
fn check_config_prints_settings_or_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_config(
        &dir,
        "good.toml",
        "[upstream]\npoll_interval = \"2s\"\n[policy]\non_closed = \"queue\"\n",
    );
    let (code, out, _) = run(&["check-config", "--config", good.to_str().unwrap()]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("poll_interval = \"2s\"")
            && out.contains("on_closed = \"queue\"")
            && out.contains("listen = \"127.0.0.1:10290\""),
        "{out}"
    );

    let bad = write_config(&dir, "bad.toml", "[upstream]\nkind = \"kubelet\"\ntimeout = \"soon\"\n[api]\nlisten = \"nowhere\"\nport = 1\n");
    let (code, out, err) = run(&["check-config", "--config", bad.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(out.is_empty());
    let file = bad.display().to_string();
    for key in [
        "upstream.kind",
        "upstream.timeout",
        "api.listen",
        "api.port",
    ] {
        assert!(err.contains(&format!("{file}: `{key}`")), "{key} in {err}");
    }

    let (code, _, err) = run(&["check-config", "--config", "/nonexistent/yurt-ota.toml"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("/nonexistent/yurt-ota.toml: cannot read the file"),
        "{err}"
    );
    // The agent refuses to start on the same file.
    let (code, _, err) = run(&["run", "--config", bad.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(err.contains("`upstream.kind`"), "{err}");
}

#[test]
fn check_config_refuses_a_token_file_run_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("token");
    std::fs::write(&empty, "  \n").unwrap();
    for token in [empty, dir.path().join("missing")] {
        let conf = write_config(
            &dir,
            "c.toml",
            &format!("[api]\ntoken_file = \"{}\"\n", token.display()),
        );
        let want = format!("{}: `api.token_file`: {}", conf.display(), token.display());
        for cmd in ["check-config", "run"] {
            let (code, out, err) = run(&[cmd, "--config", conf.to_str().unwrap()]);
            assert_eq!(code, Some(1), "{cmd}: {out} {err}");
            assert!(err.contains(&want), "{cmd}: {err}");
        }
    }
}

#[test]
fn an_absurd_duration_is_a_config_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let conf = write_config(
        &dir,
        "c.toml",
        "[upstream]\npoll_interval = \"99999999999999999h\"\n[policy]\nready_timeout = \"1000000h\"\n",
    );
    for cmd in ["check-config", "run"] {
        let (code, _, err) = run(&[cmd, "--config", conf.to_str().unwrap()]);
        assert_eq!(code, Some(1), "{cmd}: {err}");
        assert!(
            err.contains("`upstream.poll_interval`: \"99999999999999999h\" is out of range")
                && err.contains("`policy.ready_timeout`: \"1000000h\" is out of range"),
            "{cmd}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn status_and_pods_tables() {
    let up = Upstream::start(Pods::Serve(fixture_needing_upgrade(
        "1.35",
        &["kube-proxy"],
    )));
    let agent = Agent::start(&config_for(&up.url(), "200ms", "1s"));
    wait_for("snapshot", std::time::Duration::from_secs(5), || {
        get(&agent.url("/pods")).status == 200
    });
    let out = agent.cli(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains("ready: yes")
            && text.contains(&up.url())
            && text.contains("8 on the node, 1 need upgrade"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("kube-system  kube-proxy-rcc24  7f9c8d6b5")),
        "{text}"
    );

    let out = agent.cli(&["pods"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 9, "{text}");
    assert!(text.starts_with("NAMESPACE    NAME"));
    let proxy = text
        .lines()
        .find(|l| l.contains("kube-proxy-rcc24"))
        .unwrap();
    assert!(
        proxy.contains("DaemonSet/kube-proxy") && proxy.contains(" yes "),
        "{proxy}"
    );
    let out = agent.cli(&["pods", "--needs-upgrade"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
}
