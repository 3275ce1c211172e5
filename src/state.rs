//! What survives a restart (SPEC section 6): upgrades in flight, the queue, holds, the circuit
//! breaker, parked and backed-off pods, and a bounded event log, in one JSON file in
//! `state.dir`.
//!
//! Every change is written atomically: a temp file in the same directory, fsync, rename, fsync of
//! the directory. A file that cannot be parsed is set aside (renamed, never deleted) with a
//! warning, and the agent starts fresh rather than crash-looping on it.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The event log keeps this many, newest first.
pub const MAX_EVENTS: usize = 256;
const FILE: &str = "state.json";

/// Milliseconds since the Unix epoch: persisted times are wall-clock times.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub fn from_unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + std::time::Duration::from_millis(ms)
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct State {
    pub in_flight: Vec<InFlight>,
    pub queue: Vec<Queued>,
    pub holds: Vec<Hold>,
    pub breaker: Option<Breaker>,
    pub parked: Vec<Parked>,
    pub backoff: Vec<Backoff>,
    /// Newest first.
    pub events: VecDeque<Event>,
}

/// An upgrade call that was (or was about to be) sent: the pod is not called again while this
/// exists, across restarts too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InFlight {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The DaemonSet's uid: its next pod is the replacement.
    pub owner_uid: String,
    pub started_ms: u64,
    /// The upstream accepted the call (2xx). False while the call is under way.
    pub accepted: bool,
}

/// A pod an app or operator asked to upgrade when the gates allow (`?when=idle`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Queued {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub at_ms: u64,
    /// Asked with `?force=true`: holds and convenience gates do not apply.
    pub force: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hold {
    pub name: String,
    pub reason: String,
    pub created_ms: u64,
    pub expires_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Breaker {
    pub tripped_ms: u64,
    pub reason: String,
}

/// A pod the upstream refused (4xx): not tried again until its conditions change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Parked {
    pub uid: String,
    pub key: String,
    pub fingerprint: u64,
    pub detail: String,
}

/// A pod whose upgrade call failed with 5xx or no answer: retried after `retry_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Backoff {
    pub uid: String,
    pub key: String,
    pub attempts: u32,
    pub retry_ms: u64,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub at_ms: u64,
    /// A stable word: upgrade_started, upgrade_finished, upgrade_failed, gate_open, …
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    pub message: String,
}

impl State {
    pub fn event(&mut self, at: SystemTime, kind: &str, pod: Option<&str>, message: String) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_back();
        }
        self.events.push_front(Event {
            at_ms: unix_ms(at),
            kind: kind.to_owned(),
            pod: pod.map(str::to_owned),
            message,
        });
    }

    /// Holds that have not expired at `now_ms`.
    pub fn active_holds(&self, now_ms: u64) -> impl Iterator<Item = &Hold> {
        self.holds.iter().filter(move |h| h.expires_ms > now_ms)
    }
}

/// The state in memory and on disk.
pub struct Store {
    /// `None`: memory only (the directory could not be written; shown in status).
    path: Option<PathBuf>,
    state: Mutex<State>,
    /// Changed by `note` and not yet written.
    dirty: Mutex<bool>,
    /// The last write error, logged once per change.
    write_error: Mutex<Option<String>>,
    /// Rung after an update that changed the state: the decision loop sleeps on it.
    changed: std::sync::OnceLock<std::sync::Arc<crate::gate::Bell>>,
}

impl Store {
    /// Memory only: for tests, and for a `state.dir` that cannot be used.
    pub fn in_memory() -> Store {
        Store {
            path: None,
            state: Mutex::new(State::default()),
            dirty: Mutex::new(false),
            write_error: Mutex::new(None),
            changed: Default::default(),
        }
    }

    /// Loads `dir/state.json`. A corrupt file is renamed aside and the agent starts fresh; a
    /// directory that cannot be created or written is an error the caller decides about.
    pub fn open(dir: &Path) -> Result<Store, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("state.dir {}: cannot create it: {e}", dir.display()))?;
        let path = dir.join(FILE);
        let mut state = State::default();
        match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<State>(&bytes) {
                Ok(s) => state = s,
                Err(e) => {
                    let aside = dir.join(format!(
                        "{FILE}.corrupt-{}",
                        unix_ms(SystemTime::now()) / 1000
                    ));
                    std::fs::rename(&path, &aside).map_err(|re| {
                        format!(
                            "{} is corrupt ({e}) and cannot be set aside: {re}",
                            path.display()
                        )
                    })?;
                    log::warn!(
                        "{} is corrupt ({e}); set aside as {} and starting with empty state",
                        path.display(),
                        aside.display()
                    );
                    state.event(
                        SystemTime::now(),
                        "state_corrupt",
                        None,
                        format!("state file was corrupt ({e}); kept as {}", aside.display()),
                    );
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: cannot read it: {e}", path.display())),
        }
        let store = Store {
            path: Some(path),
            state: Mutex::new(state),
            dirty: Mutex::new(false),
            write_error: Mutex::new(None),
            changed: Default::default(),
        };
        // Prove the directory is writable now, not at the first upgrade.
        let s = store.lock().clone();
        store
            .write(&s)
            .map_err(|e| format!("state.dir {}: {e}", dir.display()))?;
        Ok(store)
    }

    pub fn is_persistent(&self) -> bool {
        self.path.is_some()
    }

    pub fn write_error(&self) -> Option<String> {
        self.write_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of the state, to decide on without holding the lock.
    pub fn get(&self) -> State {
        self.lock().clone()
    }

    /// Changes the state without writing it: for frequent, low-value changes (gate events), so a
    /// flapping signal does not wear the flash. They reach the disk with the next `update` or
    /// `flush`.
    pub fn note(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.lock());
        *self.dirty.lock().unwrap_or_else(|e| e.into_inner()) = true;
    }

    /// Writes what `note` changed, if anything.
    pub fn flush(&self) {
        let guard = self.lock();
        if self.take_dirty() {
            self.persist(&guard);
        }
    }

    fn take_dirty(&self) -> bool {
        std::mem::take(&mut *self.dirty.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Reads the state under its lock, without a copy.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.lock())
    }

    /// Changes the state and, when it changed, writes it before returning.
    pub fn update<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut guard = self.lock();
        let before = guard.clone();
        let r = f(&mut guard);
        if self.take_dirty() || *guard != before {
            self.persist(&guard);
            if let Some(bell) = self.changed.get() {
                bell.ring();
            }
        }
        r
    }

    /// Rings `bell` after each update that changes the state (an API hold, queue, reset).
    pub fn ring_on_change(&self, bell: std::sync::Arc<crate::gate::Bell>) {
        let _ = self.changed.set(bell);
    }

    /// Writes, logging a failure once per change of error.
    fn persist(&self, state: &State) {
        let result = self.write(state);
        let mut last = self.write_error.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(()) => {
                if last.take().is_some() {
                    log::info!("state file written again");
                }
            }
            Err(e) => {
                if last.as_deref() != Some(e.as_str()) {
                    log::error!("cannot persist state: {e}; keeping it in memory");
                }
                *last = Some(e);
            }
        }
    }

    fn write(&self, state: &State) -> Result<(), String> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let dir = path.parent().unwrap_or(Path::new("/"));
        let tmp = dir.join(format!(".{FILE}.tmp"));
        let bytes = serde_json::to_vec(state).map_err(|e| e.to_string())?;
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            // The rename itself is durable once the directory is synced.
            std::fs::File::open(dir)?.sync_all()
        })();
        result.map_err(|e| format!("writing {}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_persist_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.update(|s| {
            s.holds.push(Hold {
                name: "nav".into(),
                reason: "navigation active".into(),
                created_ms: 1,
                expires_ms: 2,
            });
            s.event(SystemTime::now(), "hold_set", None, "nav".into());
        });
        let again = Store::open(dir.path()).unwrap().get();
        assert_eq!(again, store.get());
        assert_eq!(again.holds[0].name, "nav");
        // No temp file is left behind.
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["state.json"]);
    }

    #[test]
    fn noted_changes_wait_for_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.note(|s| s.event(SystemTime::now(), "gate_open", None, "a".into()));
        assert!(Store::open(dir.path()).unwrap().get().events.is_empty());
        store.flush();
        assert_eq!(Store::open(dir.path()).unwrap().get().events.len(), 1);
        store.note(|s| s.event(SystemTime::now(), "gate_closed", None, "b".into()));
        store.update(|s| s.breaker = None); // no change of its own, but the note is written
        assert_eq!(Store::open(dir.path()).unwrap().get().events.len(), 2);
    }

    #[test]
    fn a_corrupt_file_is_set_aside_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("state.json"), b"{\"in_flight\": [tru").unwrap();
        let store = Store::open(dir.path()).unwrap();
        let s = store.get();
        assert!(s.in_flight.is_empty());
        assert_eq!(s.events[0].kind, "state_corrupt");
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("state.json.corrupt-"))
            .collect();
        assert_eq!(aside.len(), 1);
        let kept = std::fs::read(dir.path().join(&aside[0])).unwrap();
        assert_eq!(
            kept, b"{\"in_flight\": [tru",
            "the bad bytes are kept as they were"
        );
    }

    #[test]
    fn the_event_log_is_bounded_newest_first() {
        let mut s = State::default();
        for i in 0..MAX_EVENTS + 10 {
            s.event(SystemTime::now(), "x", None, i.to_string());
        }
        assert_eq!(s.events.len(), MAX_EVENTS);
        assert_eq!(s.events[0].message, (MAX_EVENTS + 9).to_string());
    }

    #[test]
    fn an_unwritable_dir_is_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, "").unwrap();
        assert!(Store::open(&file).err().unwrap().contains("state.dir"));
    }
}
