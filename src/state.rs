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
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The event log keeps this many, newest first.
pub const MAX_EVENTS: usize = 256;
/// At most this many holds at once: each one is rewritten with every state change.
pub const MAX_HOLDS: usize = 64;
/// A hold's reason is at most this many bytes.
pub const MAX_REASON: usize = 1024;
/// A state file over this is set aside at start without being read whole, and a state that
/// would serialize larger is not written. Holds, queue, parked and backed-off pods of a node
/// (110 pods by default) and 256 events stay far below it.
pub const MAX_FILE: u64 = 4 << 20;
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
    /// Since when each pod has needed upgrade (`policy.max_defer`): one entry per uid, only
    /// for pods that need upgrade now, at most `MAX_OUTDATED`.
    pub outdated: Vec<Outdated>,
    /// Newest first.
    pub events: VecDeque<Event>,
}

/// At most this many "needs upgrade since" entries (a node runs 110 pods by default); past it,
/// new ones are not tracked (their deferral does not run) and this is logged.
pub const MAX_OUTDATED: usize = 2048;

/// A pod first seen needing upgrade at `since_ms`, by its uid: a replacement is a new pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outdated {
    pub uid: String,
    pub key: String,
    pub since_ms: u64,
    /// Its deferral ran out, and that was logged and put in the event log (once).
    #[serde(default)]
    pub expired: bool,
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

    /// Sets (or replaces) a hold. A new name past `MAX_HOLDS` active holds is refused with the
    /// reason. (Expired ones leave with the next tick, which logs them.)
    pub fn set_hold(&mut self, hold: Hold, now_ms: u64) -> Result<(), String> {
        self.holds.retain(|h| h.name != hold.name);
        if self.active_holds(now_ms).count() >= MAX_HOLDS {
            return Err(format!(
                "{MAX_HOLDS} holds are active, the most this agent keeps; release one (DELETE /v1/holds/NAME) or reuse a name"
            ));
        }
        self.holds.push(hold);
        Ok(())
    }
}

/// Why a change could not be made durable: the state file cannot be written (full or
/// read-only disk, a directory in the way) or was never read. Mutating API calls answer 503
/// `state_unavailable` with it; automatic upgrades pause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable(pub String);

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "state cannot be persisted: {}", self.0)
    }
}

/// The state in memory and on disk.
///
/// Two ways to change it: `commit` is durable-or-error (for what a 2xx acknowledges and for the
/// intent written before an upgrade call); `update` and `note` are best effort, for records of
/// what already happened, kept in memory and written with the next write that succeeds.
pub struct Store {
    /// `None`: memory only (tests).
    path: Option<PathBuf>,
    inner: Mutex<Inner>,
    /// Rung after a change of the state: the decision loop sleeps on it.
    changed: std::sync::OnceLock<std::sync::Arc<crate::gate::Bell>>,
}

struct Inner {
    state: State,
    /// Changed and not yet written.
    dirty: bool,
    /// The file was read (or did not exist). Until it is, nothing is written over it.
    loaded: bool,
    /// Why the state cannot be written now; `None` when the last write succeeded.
    error: Option<String>,
    /// The last recovery attempt, so a broken disk is retried at most every `RETRY_EVERY`.
    last_retry: Option<Instant>,
}

/// How often `recover` tries again while the state cannot be written.
pub const RETRY_EVERY: Duration = Duration::from_secs(1);

impl Store {
    /// Memory only: for tests.
    pub fn in_memory() -> Store {
        Store {
            path: None,
            inner: Mutex::new(Inner {
                state: State::default(),
                dirty: false,
                loaded: true,
                error: None,
                last_retry: None,
            }),
            changed: Default::default(),
        }
    }

    /// Loads `dir/state.json` and proves the directory writable. A corrupt file, or one over
    /// `MAX_FILE`, is set aside and the agent starts fresh. A directory that cannot be read or
    /// written does not stop the agent: the store is then unavailable (`unavailable()` says
    /// why), keeps retrying through `recover`, and serves what it has in memory.
    pub fn open(dir: &Path) -> Store {
        let store = Store {
            path: Some(dir.join(FILE)),
            inner: Mutex::new(Inner {
                state: State::default(),
                dirty: false,
                loaded: false,
                error: None,
                last_retry: None,
            }),
            changed: Default::default(),
        };
        let mut inner = store.lock();
        store.load(&mut inner);
        if inner.loaded {
            // Prove the directory is writable now, not at the first upgrade.
            inner.dirty = true;
            store.persist(&mut inner);
        }
        drop(inner);
        store
    }

    /// Reads the file into `inner`, or records why it cannot.
    fn load(&self, inner: &mut Inner) {
        let Some(path) = &self.path else { return };
        let dir = path.parent().unwrap_or(Path::new("/"));
        match read_capped(path) {
            Ok(None) => inner.loaded = true,
            Ok(Some(Ok(bytes))) => match serde_json::from_slice::<State>(&bytes) {
                Ok(s) => {
                    inner.state = s;
                    inner.loaded = true;
                }
                Err(e) => self.set_aside(inner, dir, &format!("it is corrupt ({e})")),
            },
            Ok(Some(Err(len))) => self.set_aside(
                inner,
                dir,
                &format!("it is {len} bytes, over the {} KiB cap", MAX_FILE >> 10),
            ),
            Err(e) => {
                let e = format!("{}: cannot read it: {e}", path.display());
                if inner.error.as_deref() != Some(e.as_str()) {
                    log::error!("{e}; automatic upgrades and changes through the API pause until it can be read");
                }
                inner.error = Some(e);
            }
        }
    }

    /// Renames an unusable file aside under a name never used before, and starts fresh.
    fn set_aside(&self, inner: &mut Inner, dir: &Path, why: &str) {
        let Some(path) = &self.path else { return };
        match set_aside(path, dir) {
            Ok(aside) => {
                log::warn!(
                    "{}: {why}; set aside as {} and starting with empty state",
                    path.display(),
                    aside.display()
                );
                inner.state = State::default();
                inner.state.event(
                    SystemTime::now(),
                    "state_corrupt",
                    None,
                    format!("state file unusable: {why}; kept as {}", aside.display()),
                );
                inner.loaded = true;
                inner.dirty = true;
            }
            Err(e) => {
                let e = format!("{}: {why}, and it cannot be set aside: {e}", path.display());
                if inner.error.as_deref() != Some(e.as_str()) {
                    log::error!("{e}");
                }
                inner.error = Some(e);
            }
        }
    }

    pub fn is_persistent(&self) -> bool {
        self.path.is_some()
    }

    /// Why the state cannot be persisted now, if it cannot.
    pub fn unavailable(&self) -> Option<String> {
        self.lock().error.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of the state, to decide on without holding the lock.
    pub fn get(&self) -> State {
        self.lock().state.clone()
    }

    /// Changes the state without writing it: for frequent, low-value changes (gate events), so a
    /// flapping signal does not wear the flash. They reach the disk with the next write.
    pub fn note(&self, f: impl FnOnce(&mut State)) {
        let mut inner = self.lock();
        f(&mut inner.state);
        inner.dirty = true;
    }

    /// Writes what `note` changed (or an earlier write could not), if anything.
    pub fn flush(&self) {
        let mut inner = self.lock();
        if inner.dirty || inner.error.is_some() {
            self.persist(&mut inner);
        }
    }

    /// While the state cannot be written, tries again (at most every `RETRY_EVERY`): reads the
    /// file if it never could, then writes. Returns whether the state is writable now.
    pub fn recover(&self, now: Instant) -> bool {
        let mut inner = self.lock();
        if inner.error.is_none() {
            return true;
        }
        if inner
            .last_retry
            .is_some_and(|t| now.saturating_duration_since(t) < RETRY_EVERY)
        {
            return false;
        }
        inner.last_retry = Some(now);
        if !inner.loaded {
            self.load(&mut inner);
            if !inner.loaded {
                return false;
            }
        }
        self.persist(&mut inner);
        inner.error.is_none()
    }

    /// Reads the state under its lock, without a copy.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.lock().state)
    }

    /// Best effort: changes the state in memory and, when it changed, writes it before
    /// returning. A failed write keeps the change in memory for the next write that succeeds,
    /// and makes the store unavailable until then. For records of what already happened.
    pub fn update<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut inner = self.lock();
        let before = inner.state.clone();
        let r = f(&mut inner.state);
        if inner.state != before {
            inner.dirty = true;
            self.ring();
        }
        if inner.dirty {
            self.persist(&mut inner);
        }
        r
    }

    /// Rings `bell` after each change of the state (an API hold, queue, breaker reset).
    pub fn ring_on_change(&self, bell: std::sync::Arc<crate::gate::Bell>) {
        let _ = self.changed.set(bell);
    }

    fn ring(&self) {
        if let Some(bell) = self.changed.get() {
            bell.ring();
        }
    }

    /// Durable or nothing: applies `f` to a copy, writes the copy, and only then makes it the
    /// state. When the write fails (or the file was never read) the state is unchanged and the
    /// caller must not acknowledge or act: a 2xx means durable.
    pub fn commit<R>(&self, f: impl FnOnce(&mut State) -> R) -> Result<R, Unavailable> {
        let mut inner = self.lock();
        if !inner.loaded {
            let why = inner.error.clone().unwrap_or_default();
            return Err(Unavailable(why));
        }
        let mut next = inner.state.clone();
        let r = f(&mut next);
        if next == inner.state && !inner.dirty && inner.error.is_none() {
            return Ok(r);
        }
        match self.write(&next) {
            Ok(()) => {
                if inner.state != next {
                    self.ring();
                }
                inner.state = next;
                inner.dirty = false;
                if inner.error.take().is_some() {
                    log::info!("state file written again; automatic upgrades resume");
                }
                Ok(r)
            }
            Err(e) => {
                if inner.error.as_deref() != Some(e.as_str()) {
                    log::error!("cannot persist state: {e}; automatic upgrades and changes through the API pause until it can");
                }
                inner.error = Some(e.clone());
                Err(Unavailable(e))
            }
        }
    }

    /// Writes, logging a failure once per change of error. Never writes over a file not read.
    fn persist(&self, inner: &mut Inner) {
        if !inner.loaded {
            return;
        }
        match self.write(&inner.state) {
            Ok(()) => {
                inner.dirty = false;
                if inner.error.take().is_some() {
                    log::info!("state file written again; automatic upgrades resume");
                }
            }
            Err(e) => {
                if inner.error.as_deref() != Some(e.as_str()) {
                    log::error!("cannot persist state: {e}; keeping it in memory; automatic upgrades and changes through the API pause until it can be written");
                }
                inner.error = Some(e);
            }
        }
    }

    fn write(&self, state: &State) -> Result<(), String> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let dir = path.parent().unwrap_or(Path::new("/"));
        let bytes = serde_json::to_vec(state).map_err(|e| e.to_string())?;
        if bytes.len() as u64 > MAX_FILE {
            // A file over the cap would be set aside at the next start: never write one.
            return Err(format!(
                "writing {}: the state would be {} bytes, over the {} KiB cap",
                path.display(),
                bytes.len(),
                MAX_FILE >> 10
            ));
        }
        let tmp = dir.join(format!(".{FILE}.tmp"));
        let result = (|| {
            std::fs::create_dir_all(dir)?;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            // The rename itself is durable once the directory is synced.
            std::fs::File::open(dir)?.sync_all()
        })();
        if result.is_err() {
            // A partial temp file on a full disk takes the room the next try needs.
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(|e| format!("writing {}: {e}", path.display()))
    }
}

/// The file's bytes; `None` when there is none; `Err(len)` when it is over `MAX_FILE`, found
/// without reading it whole.
fn read_capped(path: &Path) -> std::io::Result<Option<Result<Vec<u8>, u64>>> {
    use std::io::Read;
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    if len > MAX_FILE {
        return Ok(Some(Err(len)));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    // Bounded even when the file grows after the length was read.
    f.take(MAX_FILE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE {
        return Ok(Some(Err(bytes.len() as u64)));
    }
    Ok(Some(Ok(bytes)))
}

/// Renames `path` to `state.json.corrupt-<unix ms>-<n>`, the first such name not taken: two
/// files set aside in the same millisecond, or a clock set back, never overwrite each other.
fn set_aside(path: &Path, dir: &Path) -> Result<PathBuf, String> {
    let ms = unix_ms(SystemTime::now());
    for n in 0..1000 {
        let aside = dir.join(format!("{FILE}.corrupt-{ms}-{n}"));
        // One agent owns a state directory, so "absent now" holds until the rename.
        if std::fs::symlink_metadata(&aside).is_ok() {
            continue;
        }
        return std::fs::rename(path, &aside)
            .map(|()| aside)
            .map_err(|e| e.to_string());
    }
    Err("no free name for it".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_persist_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path());
        store.update(|s| {
            s.holds.push(Hold {
                name: "nav".into(),
                reason: "navigation active".into(),
                created_ms: 1,
                expires_ms: 2,
            });
            s.event(SystemTime::now(), "hold_set", None, "nav".into());
        });
        let again = Store::open(dir.path()).get();
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
        let store = Store::open(dir.path());
        store.note(|s| s.event(SystemTime::now(), "gate_open", None, "a".into()));
        assert!(Store::open(dir.path()).get().events.is_empty());
        store.flush();
        assert_eq!(Store::open(dir.path()).get().events.len(), 1);
        store.note(|s| s.event(SystemTime::now(), "gate_closed", None, "b".into()));
        store.update(|s| s.breaker = None); // no change of its own, but the note is written
        assert_eq!(Store::open(dir.path()).get().events.len(), 2);
    }

    #[test]
    fn a_corrupt_file_is_set_aside_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("state.json"), b"{\"in_flight\": [tru").unwrap();
        let store = Store::open(dir.path());
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
    fn a_dir_that_cannot_be_created_makes_the_store_unavailable_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, "").unwrap();
        let store = Store::open(&file);
        assert!(store.unavailable().unwrap().contains("not-a-dir"));
        assert!(store.commit(|s| s.breaker = None).is_err());
        // It comes back once the path can be used.
        std::fs::remove_file(&file).unwrap();
        assert!(store.recover(Instant::now()));
        assert!(file.join("state.json").exists());
    }

    fn hold(name: &str) -> Hold {
        Hold {
            name: name.into(),
            reason: String::new(),
            created_ms: 0,
            expires_ms: u64::MAX,
        }
    }

    /// Regression (issue 9, item 7): on a full disk, hold PUTs were answered 200 and lost at the
    /// restart. `commit` is durable or changes nothing.
    #[test]
    fn a_full_disk_loses_nothing_acknowledged_and_recovers_by_itself() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path());
        store.commit(|s| s.holds.push(hold("a"))).unwrap();
        // The rename onto state.json fails while a directory is in its way, as a write fails
        // on a full disk; this works as root too.
        let file = dir.path().join("state.json");
        std::fs::remove_file(&file).unwrap();
        std::fs::create_dir(&file).unwrap();
        std::fs::write(file.join("x"), "").unwrap();
        let e = store.commit(|s| s.holds.push(hold("b"))).unwrap_err();
        assert!(e.0.contains("state.json"), "{e}");
        assert_eq!(store.get().holds.len(), 1, "not acknowledged: not kept");
        assert!(store.unavailable().is_some());
        // Best-effort records stay in memory for later.
        store.update(|s| s.event(SystemTime::now(), "upgrade_finished", None, "x".into()));
        assert_eq!(store.get().events.len(), 1);
        let now = Instant::now();
        assert!(!store.recover(now));
        std::fs::remove_dir_all(&file).unwrap();
        assert!(!store.recover(now), "not retried before RETRY_EVERY");
        assert!(store.recover(now + RETRY_EVERY));
        assert!(store.unavailable().is_none());
        let again = Store::open(dir.path()).get();
        assert_eq!(again.holds, vec![hold("a")]);
        assert_eq!(
            again.events.len(),
            1,
            "the record kept in memory was written"
        );
        // No temp file is left behind after the failures.
        assert!(!dir.path().join(".state.json.tmp").exists());
    }

    #[test]
    fn a_file_that_cannot_be_read_is_never_written_over() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("state.json");
        std::fs::create_dir(&file).unwrap();
        let store = Store::open(dir.path());
        assert!(store.unavailable().unwrap().contains("cannot read it"));
        assert!(store.commit(|s| s.holds.push(hold("a"))).is_err());
        store.update(|s| s.breaker = None);
        assert!(file.is_dir(), "left as it was");
        std::fs::remove_dir(&file).unwrap();
        std::fs::write(
            &file,
            serde_json::to_vec(&State {
                holds: vec![hold("old")],
                ..State::default()
            })
            .unwrap(),
        )
        .unwrap();
        assert!(store.recover(Instant::now()));
        assert_eq!(
            store.get().holds,
            vec![hold("old")],
            "read once it could be"
        );
    }

    /// Regression (issue 9, item 8): a 100 MB state file was read whole at start.
    #[test]
    fn a_state_file_over_the_cap_is_set_aside_without_reading_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("state.json");
        // Sparse: its length is over the cap, its bytes are never read.
        std::fs::File::create(&file)
            .unwrap()
            .set_len(MAX_FILE + 1)
            .unwrap();
        let store = Store::open(dir.path());
        assert!(store.unavailable().is_none());
        let s = store.get();
        assert_eq!(s.events[0].kind, "state_corrupt");
        assert!(
            s.events[0].message.contains("over the"),
            "{}",
            s.events[0].message
        );
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains(".corrupt-"))
            .collect();
        assert_eq!(aside.len(), 1);
        assert_eq!(std::fs::metadata(&aside[0]).unwrap().len(), MAX_FILE + 1);
    }

    #[test]
    fn a_state_over_the_cap_is_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path());
        let big = "x".repeat(MAX_FILE as usize);
        assert!(store
            .commit(|s| s.event(SystemTime::now(), "x", None, big))
            .unwrap_err()
            .0
            .contains("cap"));
        assert!(store.get().events.is_empty());
    }

    /// Regression (issue 9, item 10): corrupt files set aside in the same second overwrote
    /// each other.
    #[test]
    fn corrupt_files_set_aside_at_once_keep_distinct_names() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..3 {
            std::fs::write(dir.path().join("state.json"), format!("corrupt {i}")).unwrap();
            Store::open(dir.path());
            // The fresh state written by `open` is what the next round corrupts.
        }
        let mut kept: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains(".corrupt-"))
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect();
        kept.sort();
        assert_eq!(kept, vec!["corrupt 0", "corrupt 1", "corrupt 2"]);
    }

    /// Regression (issue 9, item 8): 10,000 holds made an 11 MB state file.
    #[test]
    fn holds_are_capped_and_a_name_can_be_reused() {
        let mut s = State::default();
        for i in 0..MAX_HOLDS {
            s.set_hold(hold(&format!("h{i}")), 0).unwrap();
        }
        assert!(s.set_hold(hold("one-more"), 0).unwrap_err().contains("64"));
        s.set_hold(hold("h3"), 0).unwrap();
        assert_eq!(s.holds.len(), MAX_HOLDS);
        // Expired holds do not count.
        s.holds[0].expires_ms = 5;
        s.set_hold(hold("one-more"), 10).unwrap();
    }
}
