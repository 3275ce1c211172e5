//! A command gate: runs argv (no shell) every `interval`; exit 0 means open. A command that runs
//! past `timeout` is killed and reads closed.
//!
//! The wait with a timeout is `wait-timeout`'s (`Child::wait_timeout`): it blocks in `poll(2)`
//! until the child ends or the timeout passes, woken by a SIGCHLD handler it installs once for
//! the process (a self-pipe). Checked against its source (0.2.1) and ours: it takes SIGCHLD
//! only and calls the handler it found there; signal-hook holds SIGTERM and SIGINT
//! (src/shutdown.rs) and chains to a handler it finds too, so neither replaces the other's.
//! Both set `SA_RESTART`. What changes: SIGCHLD, ignored by default, now has a handler, so a
//! blocking call Linux never restarts (`poll(2)`, a socket read under a read timeout) can see
//! `EINTR` in the thread that takes it; Linux hands a child's SIGCHLD to the thread that
//! started it, here the gate's own, which is waiting for exactly that.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use wait_timeout::ChildExt;

use std::sync::Arc;

use super::{Bell, Notice, Reading, Signal};

pub struct CommandGate {
    argv: Vec<String>,
    interval: Duration,
    timeout: Duration,
    last: Option<(Instant, Result<Reading, String>)>,
}

impl CommandGate {
    pub fn new(argv: Vec<String>, interval: Duration, timeout: Duration) -> CommandGate {
        CommandGate {
            argv,
            interval,
            timeout,
            last: None,
        }
    }

    fn run(&self) -> Result<Reading, String> {
        let prog = &self.argv[0];
        let mut child = Command::new(prog)
            .args(&self.argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // The gate command is not the service: it must not talk to systemd for it.
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .spawn()
            .map_err(|e| format!("{prog}: cannot start: {e}"))?;
        let status = match child.wait_timeout(self.timeout) {
            Ok(Some(status)) => status,
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{prog} ran longer than {} and was killed",
                    crate::config::HumanDuration(self.timeout)
                ));
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{prog}: {e}"));
            }
        };
        match status.code() {
            Some(code) => Ok(Reading {
                open: code == 0,
                detail: format!("{prog} exited {code}"),
            }),
            None => Err(format!("{prog} was killed by a signal ({status})")),
        }
    }
}

impl Signal for CommandGate {
    fn notice(&mut self, _: &Arc<Bell>, _: Duration) -> Notice {
        Notice::Periodic(format!(
            "runs every {}",
            crate::config::HumanDuration(self.interval)
        ))
    }

    fn next_change(&self, _now: SystemTime) -> Option<Duration> {
        let (at, _) = self.last.as_ref()?;
        Some((*at + self.interval).saturating_duration_since(Instant::now()))
    }

    fn read(&mut self, _now: SystemTime, fresh: bool) -> Result<Reading, String> {
        let now = Instant::now();
        match &self.last {
            Some((at, r)) if !fresh && now.duration_since(*at) < self.interval => r.clone(),
            _ => {
                let r = self.run();
                self.last = Some((now, r.clone()));
                r
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(argv: &[&str], timeout_ms: u64) -> CommandGate {
        CommandGate::new(
            argv.iter().map(|s| s.to_string()).collect(),
            Duration::from_secs(60),
            Duration::from_millis(timeout_ms),
        )
    }

    #[test]
    fn exit_codes_timeouts_and_missing_programs() {
        let now = SystemTime::now();
        assert!(gate(&["/bin/true"], 2000).read(now, false).unwrap().open);
        let r = gate(&["/bin/sh", "-c", "exit 3"], 2000)
            .read(now, false)
            .unwrap();
        assert!(!r.open && r.detail.contains("exited 3"), "{}", r.detail);
        let started = Instant::now();
        let e = gate(&["/bin/sleep", "30"], 200)
            .read(now, false)
            .unwrap_err();
        assert!(e.contains("killed"), "{e}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the hang was cut short"
        );
        // A missing program: closed. Most targets report it at spawn; a static glibc (armv7
        // crt-static) only from the child, as exit status 127.
        match gate(&["/nonexistent/check"], 200).read(now, false) {
            Err(e) => assert!(e.contains("cannot start"), "{e}"),
            Ok(r) => assert!(!r.open && r.detail.ends_with("exited 127"), "{r:?}"),
        }
    }

    #[test]
    fn the_result_is_reused_within_the_interval_unless_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("ok");
        let script = format!("test -e {}", flag.display());
        let mut g = gate(&["/bin/sh", "-c", &script], 2000);
        let now = SystemTime::now();
        assert!(!g.read(now, false).unwrap().open);
        std::fs::write(&flag, "").unwrap();
        assert!(
            !g.read(now, false).unwrap().open,
            "cached within the interval"
        );
        assert!(
            g.read(now, true).unwrap().open,
            "a fresh read runs it again"
        );
    }
}
