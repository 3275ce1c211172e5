//! The process set-up for flat memory (`src/malloc.rs`): under glibc, `run` re-executes itself
//! once with `GLIBC_TUNABLES`, keeping its name, and keeps an operator's own value.

use crate::util::*;

/// `GLIBC_TUNABLES` in the environment of the running agent (after any re-exec: same pid).
fn tunables(agent: &Agent) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{}/environ", agent.child.id())).unwrap();
    environ
        .split(|&b| b == 0)
        .find_map(|v| v.strip_prefix(b"GLIBC_TUNABLES="))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

fn comm(agent: &Agent) -> String {
    std::fs::read_to_string(format!("/proc/{}/comm", agent.child.id()))
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn run_sets_the_glibc_tunables_under_its_own_name_and_keeps_an_operators_own() {
    let gnu = cfg!(all(target_os = "linux", target_env = "gnu"));
    // Only when this test's own environment leaves the variable unset is it the agent's to set.
    if std::env::var_os("GLIBC_TUNABLES").is_none() {
        let agent = Agent::start("");
        // glibc (2.36 here) cuts the string at its first `:` in place as it parses it, and
        // /proc/PID/environ shows that memory: what is left is the value's start.
        match tunables(&agent) {
            Some(v) => assert!(
                gnu && !v.is_empty() && yurt_ota::malloc::TUNABLES.starts_with(&v),
                "{v}"
            ),
            None => assert!(!gnu, "no GLIBC_TUNABLES after the re-exec"),
        }
        assert!(
            yurt_ota::malloc::TUNABLES.contains("glibc.pthread.stack_cache_size=0"),
            "ended connection threads' stacks are not kept"
        );
        assert_eq!(
            comm(&agent),
            "yurt-ota",
            "the re-exec keeps the process name"
        );
    }
    let port = free_port();
    let own = "glibc.malloc.arena_max=1";
    let agent = Agent::start_env(
        &format!("[api]\nlisten = \"127.0.0.1:{port}\"\n"),
        &format!("http://127.0.0.1:{port}"),
        tempfile::tempdir().unwrap(),
        &[("GLIBC_TUNABLES", own)],
    );
    assert_eq!(tunables(&agent).as_deref(), Some(own));
    assert_eq!(comm(&agent), "yurt-ota");
}
