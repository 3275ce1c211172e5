//! The state in memory and on disk: durable-or-error changes (`commit`, `intend`), best-effort
//! records (`update`, `note`), and what happens when the disk cannot be read or written.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use super::intent::{self, Read};
use super::{disk, unix_ms, Breaker, InFlight, State, FILE, MAX_FILE};

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
/// Two ways to change it: `commit` (for what a 2xx acknowledges) and `intend` (the intent written
/// before an upgrade call) are durable-or-error; `update` and `note` are best effort, for
/// records of what already happened, kept in memory and written with the next write that
/// succeeds.
pub struct Store {
    /// `None`: memory only (tests).
    path: Option<PathBuf>,
    inner: Mutex<Inner>,
    /// Rung after a change of the state: the decision loop sleeps on it.
    changed: std::sync::OnceLock<std::sync::Arc<crate::bell::Bell>>,
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
    /// The intent record, open for writing; `None` in memory, or when it cannot be opened
    /// (then intents go into the state file).
    intent: Option<intent::File>,
    /// `intent_seq` of the state file on disk: while it is below the state's, the record on
    /// disk is the only durable copy of an intent, and must not be overwritten.
    durable_seq: u64,
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
                intent: None,
                durable_seq: 0,
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
                intent: None,
                durable_seq: 0,
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
        match disk::read_capped(path, MAX_FILE) {
            Ok(None) => inner.loaded = true,
            Ok(Some(Ok(bytes))) => match serde_json::from_slice::<State>(&bytes) {
                Ok(s) => {
                    inner.state = s;
                    inner.loaded = true;
                }
                Err(e) => self.set_aside(inner, &format!("it is corrupt ({e})")),
            },
            Ok(Some(Err(len))) => self.set_aside(
                inner,
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
        if inner.loaded {
            inner.durable_seq = inner.state.intent_seq;
            self.load_intent(inner);
        }
    }

    /// Takes in an intent record newer than the state file, and opens the record for writing.
    /// A record that cannot be trusted is set aside and trips the breaker: an upgrade call may
    /// have been sent for a pod no longer known. One that cannot be read stops the load, as
    /// the state file's does.
    fn load_intent(&self, inner: &mut Inner) {
        let Some(path) = &self.path else { return };
        let path = path.with_file_name(intent::NAME);
        let fail = |inner: &mut Inner, e: String| {
            let e = format!("{}: {e}", path.display());
            if inner.error.as_deref() != Some(e.as_str()) {
                log::error!("{e}; automatic upgrades and changes through the API pause until it can be read");
            }
            inner.error = Some(e);
            inner.loaded = false;
        };
        let wall = SystemTime::now();
        match intent::read(&path) {
            Err(e) => return fail(inner, format!("cannot read it: {e}")),
            Ok(None | Some(Read::Empty)) => {}
            Ok(Some(Read::Valid(r))) if r.seq <= inner.state.intent_seq => {}
            Ok(Some(Read::Valid(r))) => {
                let s = &mut inner.state;
                if !s.in_flight.iter().any(|f| f.uid == r.entry.uid) {
                    let key = format!("{}/{}", r.entry.namespace, r.entry.name);
                    let msg = format!("the upgrade call for {key} may have been sent before the restart: tracked as in flight, not sent again");
                    log::warn!("{msg}");
                    s.event(wall, "intent_resumed", Some(&key), msg);
                    s.in_flight.push(InFlight {
                        accepted: false,
                        ..r.entry
                    });
                }
                s.intent_seq = r.seq;
                inner.dirty = true;
            }
            Ok(Some(Read::Corrupt(why))) => match disk::set_aside(&path) {
                Ok(aside) => {
                    let reason = format!(
                        "the upgrade intent record was unusable ({why}; kept as {}): an upgrade call may have been sent before the restart; check the node's pods, then POST /v1/breaker/reset",
                        aside.display()
                    );
                    log::warn!("{}: {reason}", path.display());
                    let s = &mut inner.state;
                    s.event(wall, "state_corrupt", None, reason.clone());
                    s.event(wall, "breaker_tripped", None, reason.clone());
                    s.breaker = Some(Breaker {
                        tripped_ms: unix_ms(wall),
                        reason,
                    });
                    inner.dirty = true;
                }
                Err(e) => {
                    return fail(
                        inner,
                        format!("unusable ({why}), and it cannot be set aside: {e}"),
                    )
                }
            },
        }
        inner.intent = match intent::File::open(&path) {
            Ok(f) => Some(f),
            Err(e) => {
                log::warn!(
                    "{}: cannot open it for writing ({e}); each upgrade intent is written into {FILE} instead",
                    path.display()
                );
                None
            }
        };
    }

    /// Renames an unusable file aside under a name never used before, and starts fresh.
    fn set_aside(&self, inner: &mut Inner, why: &str) {
        let Some(path) = &self.path else { return };
        match disk::set_aside(path) {
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
    pub fn ring_on_change(&self, bell: std::sync::Arc<crate::bell::Bell>) {
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
                inner.durable_seq = next.intent_seq;
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

    /// Durable or nothing, for the intent written before an upgrade call: records `entry` as in
    /// flight. `Ok(false)`: its uid is in flight already, and nothing changed.
    ///
    /// The fast way is the intent record alone (one block written in place and `fdatasync`);
    /// the state file takes it in with its next write. It is taken only while the record on
    /// disk is already in the state file (the previous intent is never overwritten before
    /// that) and the state file is writable; otherwise, or when the record cannot be written,
    /// the intent goes into the state file as any `commit`.
    pub fn intend(&self, entry: InFlight) -> Result<bool, Unavailable> {
        let mut inner = self.lock();
        if !inner.loaded {
            return Err(Unavailable(inner.error.clone().unwrap_or_default()));
        }
        if inner.state.in_flight.iter().any(|f| f.uid == entry.uid) {
            return Ok(false);
        }
        let seq = inner.state.intent_seq + 1;
        let absorbed = inner.error.is_none() && inner.durable_seq == inner.state.intent_seq;
        let block = intent::encode(seq, &entry);
        if let (true, Some(file), Some(block)) = (absorbed, &inner.intent, block) {
            match file.write(&block) {
                Ok(()) => {
                    inner.state.in_flight.push(entry);
                    inner.state.intent_seq = seq;
                    inner.dirty = true;
                    self.ring();
                    return Ok(true);
                }
                Err(e) => log::warn!(
                    "cannot write the intent record ({e}); writing the intent into {FILE} instead"
                ),
            }
        }
        drop(inner);
        self.commit(|s| {
            if s.in_flight.iter().any(|f| f.uid == entry.uid) {
                return false;
            }
            s.in_flight.push(entry);
            // A record of this attempt that reached the disk after all is taken in already.
            s.intent_seq = seq;
            true
        })
    }

    /// Writes, logging a failure once per change of error. Never writes over a file not read.
    fn persist(&self, inner: &mut Inner) {
        if !inner.loaded {
            return;
        }
        match self.write(&inner.state) {
            Ok(()) => {
                inner.durable_seq = inner.state.intent_seq;
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
        disk::replace(path, &bytes).map_err(|e| format!("writing {}: {e}", path.display()))
    }
}
