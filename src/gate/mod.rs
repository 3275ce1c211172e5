//! Gates (SPEC section 5): local signals that must read open before an upgrade.
//!
//! Each kind of signal sits behind `Signal`; `Gates` reads them, remembers since when each has
//! been open or closed, logs each change once, and re-reads them afresh at the moment of action.
//! A signal that cannot be read is closed (fail closed), with its error kept for `/v1/status`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::config::{GateKind, GateSettings};

pub mod can;
pub mod command;
pub mod file;
pub mod gpio;
pub mod value;
pub mod watch;
pub mod window;

pub use crate::bell::Bell;

/// How a gate learns that its signal may have changed (shown in `/v1/status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// inotify on the directory of this file (or its nearest existing ancestor).
    File(PathBuf),
    /// The signal rings the bell itself (GPIO edge events, `poll(2)` on sysfs); how, for status.
    Events(String),
    /// Only time changes it; `Signal::next_change` says when (a window's next edge).
    Timed(String),
    /// Read again every so often (`Signal::next_change`): a command's interval, or a line with
    /// no edge events; why, for status.
    Periodic(String),
}

/// What a signal says when it could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    pub open: bool,
    /// For a person: the path and what it holds, the GPIO level, the exit code.
    pub detail: String,
}

pub trait Signal: Send {
    /// Reads the signal. `Err` means it could not be read, so the gate is closed. `fresh` asks
    /// for a new reading even where the signal may reuse a recent one (a command's interval).
    fn read(&mut self, now: SystemTime, fresh: bool) -> Result<Reading, String>;

    /// When it will open, where that can be known (a window); for `Retry-After`.
    fn next_open(&self, _now: SystemTime) -> Option<SystemTime> {
        None
    }

    /// Arranges to hear of changes: a signal with events of its own starts them here, ringing
    /// `bell`; one without says how it is watched. `fallback` is the period of a periodic read.
    fn notice(&mut self, _bell: &Arc<Bell>, _fallback: Duration) -> Notice {
        Notice::Periodic("read at every check".into())
    }

    /// How long until the reading may change with no event: a file turning stale, a window's
    /// next edge, a command's next run, a periodic read. `None`: only an event changes it.
    fn next_change(&self, _now: SystemTime) -> Option<Duration> {
        None
    }

    /// How it hears of changes now, where that changes after `notice` (a line that turned out
    /// to have no edge events).
    fn how(&self) -> Option<String> {
        None
    }
}

/// What a gate is checked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Upgrade,
    Pull,
}

/// A gate's configuration and its last reading.
#[derive(Debug, Clone)]
pub struct GateState {
    pub name: String,
    pub kind: &'static str,
    pub safety: bool,
    pub upgrade: bool,
    pub pull: bool,
    pub open: bool,
    /// When it last became open or closed (as first seen by this agent).
    pub since: Instant,
    pub since_wall: SystemTime,
    pub detail: String,
    /// Why the last read failed, while it fails.
    pub error: Option<String>,
    /// The last error ever seen, and when, even after the gate recovered.
    pub last_error: Option<(String, SystemTime)>,
    pub next_open: Option<SystemTime>,
    /// How many times it changed between open and closed.
    pub changes: u64,
    /// Read at least once.
    pub read: bool,
}

impl GateState {
    pub fn applies(&self, purpose: Purpose) -> bool {
        match purpose {
            Purpose::Upgrade => self.upgrade,
            Purpose::Pull => self.pull,
        }
    }

    /// How long it has been open; `None` when closed.
    pub fn open_for(&self, now: Instant) -> Option<Duration> {
        self.open.then(|| now.saturating_duration_since(self.since))
    }
}

/// A gate: its name and flags, and the signal behind it.
pub struct Gate {
    pub name: String,
    pub kind: &'static str,
    pub safety: bool,
    pub upgrade: bool,
    pub pull: bool,
    pub signal: Box<dyn Signal>,
}

impl Gate {
    /// The real signal for a configured gate.
    pub fn from_settings(s: &GateSettings) -> Gate {
        let signal: Box<dyn Signal> = match &s.kind {
            GateKind::File {
                path,
                open_when,
                max_age,
            } => Box::new(file::FileGate::new(
                path.clone(),
                open_when.clone(),
                *max_age,
            )),
            GateKind::Gpio {
                chip,
                line,
                open_high,
            } => Box::new(gpio::CdevGate::new(chip.clone(), line.clone(), *open_high)),
            GateKind::GpioSysfs {
                root,
                line,
                open_high,
            } => Box::new(gpio::SysfsGate::new(root.clone(), *line, *open_high)),
            GateKind::Command {
                argv,
                interval,
                timeout,
            } => Box::new(command::CommandGate::new(argv.clone(), *interval, *timeout)),
            GateKind::Window { windows, timezone } => {
                Box::new(window::WindowGate::new(windows.clone(), timezone.clone()))
            }
            GateKind::Can(c) => Box::new(can::CanGate::new((**c).clone())),
            GateKind::Value(v) => Box::new(value::ValueGate::new(v.clone())),
        };
        Gate {
            name: s.name.clone(),
            kind: s.kind.word(),
            safety: s.safety,
            upgrade: s.upgrade,
            pull: s.pull,
            signal,
        }
    }
}

/// Every configured gate with its last reading.
pub struct Gates {
    inner: Mutex<Vec<(Gate, GateState)>>,
    /// How each gate hears of changes, once `watch` ran (same order as `inner`).
    notices: Mutex<Vec<Notice>>,
    /// When every gate was last read (by `check`).
    last_check: Mutex<Option<Instant>>,
}

impl Gates {
    /// All gates start closed until first read: nothing is open before it has been seen open.
    pub fn new(gates: Vec<Gate>) -> Gates {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let inner = gates
            .into_iter()
            .map(|g| {
                let state = GateState {
                    name: g.name.clone(),
                    kind: g.kind,
                    safety: g.safety,
                    upgrade: g.upgrade,
                    pull: g.pull,
                    open: false,
                    since: now,
                    since_wall: wall,
                    detail: "not read yet".into(),
                    error: None,
                    last_error: None,
                    next_open: None,
                    changes: 0,
                    read: false,
                };
                (g, state)
            })
            .collect();
        Gates {
            inner: Mutex::new(inner),
            notices: Mutex::new(Vec::new()),
            last_check: Mutex::new(None),
        }
    }

    pub fn from_settings(settings: &[GateSettings]) -> Gates {
        Gates::new(settings.iter().map(Gate::from_settings).collect())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Gate, GateState)>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Reads every gate (a command gate may reuse its reading within its interval).
    pub fn check(&self) {
        let (now, wall) = (Instant::now(), SystemTime::now());
        for (gate, state) in self.lock().iter_mut() {
            read_into(gate, state, now, wall, false);
        }
        *self.last_check.lock().unwrap_or_else(|e| e.into_inner()) = Some(now);
    }

    /// The slow safety re-read, from a thread that is awake anyway (the poller): reads every
    /// gate when the last full read is `every` old or more (less `slack`, so a poll that comes
    /// slightly early does not push it a whole poll later). True when a gate changed.
    pub fn reread_if_due(&self, every: Duration, slack: Duration) -> bool {
        let last = *self.last_check.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|at| at.elapsed() + slack < every) {
            return false;
        }
        let before: u64 = self.lock().iter().map(|(_, s)| s.changes).sum();
        self.check();
        let after: u64 = self.lock().iter().map(|(_, s)| s.changes).sum();
        after != before
    }

    /// Re-reads afresh, now, every gate that applies to `purpose`, and returns the names of
    /// those that read closed and block: all of them, or with `force` only the safety gates.
    pub fn recheck(&self, purpose: Purpose, force: bool) -> Vec<String> {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let mut closed = Vec::new();
        for (gate, state) in self.lock().iter_mut() {
            if !state.applies(purpose) {
                continue;
            }
            read_into(gate, state, now, wall, true);
            if !state.open && (state.safety || !force) {
                closed.push(state.name.clone());
            }
        }
        closed
    }

    pub fn states(&self) -> Vec<GateState> {
        self.lock().iter().map(|(_, s)| s.clone()).collect()
    }

    /// Starts hearing of changes: each signal's own events, and one inotify thread for the
    /// files, all ringing `bell`. `fallback`: the period of a gate that can only be read
    /// periodically. Returns the inotify error, if any (then file gates rely on the re-read).
    pub fn watch(&self, bell: &Arc<Bell>, fallback: Duration) -> Result<(), String> {
        let mut files = Vec::new();
        let mut notices = Vec::new();
        for (gate, state) in self.lock().iter_mut() {
            let notice = gate.signal.notice(bell, fallback);
            if let Notice::File(path) = &notice {
                files.push(path.clone());
            }
            if let Notice::Periodic(why) = &notice {
                log::info!("gate {}: {why}", state.name);
            }
            notices.push(notice);
        }
        *self.notices.lock().unwrap_or_else(|e| e.into_inner()) = notices;
        if files.is_empty() {
            return Ok(());
        }
        let w = watch::FileWatch::new(files)?;
        let bell = bell.clone();
        std::thread::Builder::new()
            .name("inotify".into())
            .spawn(move || w.run(&bell))
            .map_err(|e| format!("cannot start the inotify thread: {e}"))?;
        Ok(())
    }

    /// How each gate learns of changes, by name, for status: "inotify on DIR", "edge events
    /// ...", "periodic read every 250ms: ...".
    pub fn notices(&self) -> Vec<(String, String)> {
        let notices = self
            .notices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        self.lock()
            .iter()
            .enumerate()
            .map(|(i, (g, s))| {
                let how = match notices.get(i) {
                    None => "read at every check".to_owned(),
                    Some(Notice::File(p)) => match watch::watch_dir(p) {
                        Some(d) => format!("inotify on {}", d.display()),
                        None => format!("inotify on the directory of {}", p.display()),
                    },
                    Some(Notice::Events(how) | Notice::Timed(how) | Notice::Periodic(how)) => {
                        how.clone()
                    }
                };
                (s.name.clone(), g.signal.how().unwrap_or(how))
            })
            .collect()
    }

    /// How long until some gate's reading may change with no event (see `Signal::next_change`).
    /// A gate never read yet is due now; an unwatched one (no `watch`) has no deadline here.
    pub fn next_change(&self, now: SystemTime) -> Option<Duration> {
        let watched = !self
            .notices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty();
        self.lock()
            .iter()
            .filter_map(|(g, s)| match (watched, s.read) {
                (_, false) => Some(Duration::ZERO),
                (false, true) => None,
                (true, true) => g.signal.next_change(now),
            })
            .min()
    }
}

fn read_into(gate: &mut Gate, s: &mut GateState, now: Instant, wall: SystemTime, fresh: bool) {
    let (open, detail, error) = match gate.signal.read(wall, fresh) {
        Ok(r) => (r.open, r.detail, None),
        Err(e) => (false, String::new(), Some(e)),
    };
    let first = !std::mem::replace(&mut s.read, true);
    if open != s.open || first {
        if open != s.open {
            s.since = now;
            s.since_wall = wall;
            s.changes += 1;
        }
        match (&error, open) {
            (Some(e), _) => log::warn!("gate {} closed: cannot read it: {e}", s.name),
            (None, true) => log::info!("gate {} open: {detail}", s.name),
            (None, false) => log::info!("gate {} closed: {detail}", s.name),
        }
    } else if error.is_some() && s.error.is_none() {
        // Closed before, and now also unreadable: say so once.
        log::warn!(
            "gate {} closed: cannot read it: {}",
            s.name,
            error.as_deref().unwrap_or_default()
        );
    }
    s.open = open;
    if let Some(e) = &error {
        s.last_error = Some((e.clone(), wall));
    }
    s.detail = if error.is_some() {
        "unreadable".into()
    } else {
        detail
    };
    s.error = error;
    s.next_open = if open {
        None
    } else {
        gate.signal.next_open(wall)
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// Answers from a list, shared so the test can count reads.
    struct Script(Vec<Result<bool, &'static str>>, Arc<AtomicUsize>);

    impl Signal for Script {
        fn read(&mut self, _: SystemTime, _: bool) -> Result<Reading, String> {
            let i = self.1.fetch_add(1, Ordering::SeqCst);
            match self.0[i.min(self.0.len() - 1)] {
                Ok(open) => Ok(Reading {
                    open,
                    detail: format!("read {i}"),
                }),
                Err(e) => Err(e.into()),
            }
        }
    }

    fn gate(name: &str, safety: bool, script: Vec<Result<bool, &'static str>>) -> Gate {
        Gate {
            name: name.into(),
            kind: "test",
            safety,
            upgrade: true,
            pull: false,
            signal: Box::new(Script(script, Arc::new(AtomicUsize::new(0)))),
        }
    }

    #[test]
    fn closed_until_read_and_errors_close() {
        let gates = Gates::new(vec![gate("a", true, vec![Ok(true), Err("gone"), Ok(true)])]);
        assert!(!gates.states()[0].open, "closed before the first read");
        gates.check();
        let s = &gates.states()[0];
        assert!(s.open && s.error.is_none() && s.changes == 1);
        gates.check();
        let s = &gates.states()[0];
        assert!(!s.open);
        assert_eq!(s.error.as_deref(), Some("gone"));
        gates.check();
        let s = &gates.states()[0];
        assert!(s.open && s.error.is_none());
        assert_eq!(s.last_error.as_ref().unwrap().0, "gone", "kept for status");
        assert_eq!(s.changes, 3);
    }

    #[test]
    fn recheck_reads_afresh_and_force_spares_only_convenience_gates() {
        let gates = Gates::new(vec![
            gate("stopped", true, vec![Ok(true), Ok(false)]),
            gate("night", false, vec![Ok(false)]),
        ]);
        gates.check();
        assert_eq!(gates.recheck(Purpose::Upgrade, true), vec!["stopped"]);
        assert_eq!(
            gates.recheck(Purpose::Upgrade, false),
            vec!["stopped", "night"]
        );
        assert!(
            gates.recheck(Purpose::Pull, false).is_empty(),
            "no pull gates"
        );
    }
}
