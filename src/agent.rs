//! The daemon: poll the upstream into a snapshot, read the gates, decide, act, persist; serve
//! the local API; stop on SIGTERM.
//!
//! `run` wires the real parts together; the pieces it joins (`Shared`, `Poller`, `Control`,
//! `Autopilot`, `api::Api`) take their effects as arguments so tests can drive them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use crate::api::{self, Api};
use crate::config::{PolicySettings, Settings, UpstreamKind};
use crate::gate::{Gates, Purpose};
use crate::metrics::{Gauges, Metrics};
use crate::policy::{self, Action, Decision, Target};
use crate::shutdown::Shutdown;
use crate::snapshot::{self, Snapshot};
use crate::state::{self, Backoff, Breaker, InFlight, Parked, Store};
use crate::systemd::Notifier;
use crate::upstream::{self, excerpt, Upstream, UpstreamError};

/// Backoff after a 5xx or no answer: 5 s, doubling, at most 5 minutes.
const BACKOFF_FIRST: Duration = Duration::from_secs(5);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// A failed imagepull is asked again after this.
pub const PULL_RETRY: Duration = Duration::from_secs(30);

/// How many upgrade outcomes `/v1/status` remembers.
const RECENT: usize = 10;

/// What the poller learns and the API serves.
pub struct Shared {
    snapshot: RwLock<Option<Arc<Snapshot>>>,
    health: Mutex<Health>,
    recent: Mutex<VecDeque<Outcome>>,
    pub metrics: Metrics,
    pub poll_interval: Duration,
}

#[derive(Default, Clone)]
pub struct Health {
    /// When the last poll ended, well or not: the poller is alive.
    pub last_attempt: Option<Instant>,
    pub last_success: Option<(Instant, SystemTime)>,
    pub last_error: Option<(UpstreamError, SystemTime)>,
    pub consecutive_failures: u64,
}

/// One upgrade call relayed to the upstream, for `/v1/status`.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub pod: String,
    pub at: SystemTime,
    /// Upstream status; 0 when it could not be reached.
    pub status: u16,
    pub detail: String,
}

impl Shared {
    pub fn new(poll_interval: Duration) -> Shared {
        Shared {
            snapshot: RwLock::new(None),
            health: Mutex::new(Health::default()),
            recent: Mutex::new(VecDeque::new()),
            metrics: Metrics::default(),
            poll_interval,
        }
    }

    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn health(&self) -> Health {
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Seconds since the last successful poll.
    pub fn snapshot_age(&self, now: Instant) -> Option<Duration> {
        self.health()
            .last_success
            .map(|(at, _)| now.saturating_duration_since(at))
    }

    /// `Ok` when a snapshot newer than three poll intervals exists; else the reason.
    pub fn readiness(&self, now: Instant) -> Result<(), String> {
        let h = self.health();
        let Some((at, _)) = h.last_success else {
            return Err(match h.last_error {
                Some((e, _)) => format!("no snapshot yet: the upstream {e}"),
                None => "no snapshot yet: the first poll has not finished".into(),
            });
        };
        let age = now.saturating_duration_since(at);
        if age > self.poll_interval * 3 {
            let why = h
                .last_error
                .map(|(e, _)| format!(": the upstream {e}"))
                .unwrap_or_default();
            return Err(format!(
                "snapshot is {:.0}s old, more than 3 poll intervals{why}",
                age.as_secs_f64()
            ));
        }
        Ok(())
    }

    pub fn record_outcome(&self, o: Outcome) {
        let mut r = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if r.len() == RECENT {
            r.pop_back();
        }
        r.push_front(o);
    }

    pub fn recent(&self) -> Vec<Outcome> {
        self.recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    pub fn gauges(&self, now: Instant) -> Gauges {
        let snap = self.snapshot();
        Gauges {
            snapshot_age: self.snapshot_age(now).map(|d| d.as_secs_f64()),
            pods: snap.as_ref().map_or(0, |s| s.pods.len()),
            pods_needing_upgrade: snap.as_ref().map_or(0, |s| s.needing_upgrade().count()),
            ready: self.readiness(now).is_ok(),
            ..Gauges::default()
        }
    }

    fn succeeded(&self, snapshot: Option<Snapshot>) -> (bool, u64) {
        if let Some(s) = snapshot {
            *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(s));
        }
        let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        let first = h.last_success.is_none();
        let failures = std::mem::take(&mut h.consecutive_failures);
        h.last_success = Some((Instant::now(), SystemTime::now()));
        h.last_attempt = Some(Instant::now());
        self.metrics.poll_ok();
        (first, failures)
    }

    fn failed(&self, e: UpstreamError) {
        self.metrics.poll_failed(e.kind());
        let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        h.consecutive_failures += 1;
        h.last_error = Some((e, SystemTime::now()));
        h.last_attempt = Some(Instant::now());
    }
}

/// Polls the upstream pod list into `Shared`, logging once per change of outcome.
pub struct Poller {
    upstream: Arc<dyn Upstream>,
    shared: Arc<Shared>,
    /// The last error logged, so a failing upstream logs once, not once per poll.
    last_logged: Option<String>,
    /// The pods needing upgrade last logged.
    last_outdated: Vec<String>,
    /// The duplicate uids last logged.
    last_duplicates: Vec<String>,
}

impl Poller {
    pub fn new(upstream: Arc<dyn Upstream>, shared: Arc<Shared>) -> Poller {
        Poller {
            upstream,
            shared,
            last_logged: None,
            last_outdated: Vec::new(),
            last_duplicates: Vec::new(),
        }
    }

    pub fn poll_once(&mut self) {
        let result = self.upstream.list_pods().and_then(|raw| {
            let unchanged = self
                .shared
                .snapshot()
                .is_some_and(|s| s.source_hash == snapshot::hash(&raw));
            if unchanged {
                return Ok(None);
            }
            Snapshot::build(&raw)
                .map(Some)
                .map_err(|e| UpstreamError::InvalidJson(e.to_string()))
        });
        match result {
            Ok(snap) => {
                let changed = snap.is_some();
                let (first, failures) = self.shared.succeeded(snap);
                if self.last_logged.take().is_some() {
                    log::info!(
                        "upstream {} answers again after {failures} failed polls",
                        self.upstream.url()
                    );
                }
                if changed {
                    self.log_pods(first);
                }
            }
            Err(e) => {
                let msg = e.to_string();
                if self.last_logged.as_deref() != Some(msg.as_str()) {
                    let keep = if self.shared.snapshot().is_some() {
                        "; serving the last good pod list"
                    } else {
                        ""
                    };
                    log::warn!("polling {}/pods failed: {msg}{keep}", self.upstream.url());
                    self.last_logged = Some(msg);
                } else {
                    log::debug!("polling {}/pods failed again: {msg}", self.upstream.url());
                }
                self.shared.failed(e);
            }
        }
    }

    fn log_pods(&mut self, first: bool) {
        let Some(snap) = self.shared.snapshot() else {
            return;
        };
        let outdated: Vec<String> = snap
            .needing_upgrade_in_order()
            .into_iter()
            .map(|p| p.key())
            .collect();
        if first {
            log::info!(
                "first pod list: {} pods, {} need upgrade",
                snap.pods.len(),
                outdated.len()
            );
        }
        if snap.duplicates != self.last_duplicates {
            if !snap.duplicates.is_empty() {
                log::warn!(
                    "the upstream pod list has pods listed more than once (same uid); keeping the first of each, dropping {}",
                    snap.duplicates.join(", ")
                );
            }
            self.last_duplicates = snap.duplicates.clone();
        }
        if outdated != self.last_outdated {
            if outdated.is_empty() {
                log::info!("no pod needs upgrade");
            } else {
                log::info!("pods needing upgrade: {}", outdated.join(", "));
            }
            self.last_outdated = outdated;
        }
    }

    /// Polls every `interval` until `stop` is triggered.
    pub fn run(mut self, interval: Duration, stop: &Shutdown) {
        loop {
            let started = Instant::now();
            self.poll_once();
            let next = (started + interval).saturating_duration_since(Instant::now());
            if stop.wait_timeout(next) {
                return;
            }
        }
    }
}

/// What the decision loop and the API share besides the pod snapshot.
pub struct Control {
    pub gates: Gates,
    pub store: Store,
    pub policy: PolicySettings,
    /// Why `store` is memory only, when it is.
    pub store_error: Option<String>,
    /// False once the upstream answered 404 to an imagepull (YurtHub before v1.7).
    pub imagepull_supported: AtomicBool,
    /// Image pre-pulls asked for (`policy::pull_key`): accepted ones (`None`) are not asked
    /// again; failed ones are asked again after the `Instant`.
    pulls: Mutex<Vec<(String, Option<Instant>)>>,
}

impl Control {
    pub fn new(gates: Gates, store: Store, policy: PolicySettings) -> Control {
        Control {
            gates,
            store,
            policy,
            store_error: None,
            imagepull_supported: AtomicBool::new(true),
            pulls: Mutex::new(Vec::new()),
        }
    }

    fn pulls(&self) -> std::sync::MutexGuard<'_, Vec<(String, Option<Instant>)>> {
        self.pulls.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records an imagepull answer: accepted, it is not asked again for that revision; failed
    /// (an upstream error, a 403 before the conditions settle, no answer), it is asked again
    /// after `PULL_RETRY`, so a passing failure cannot leave the pod waiting forever.
    pub fn pull_asked(&self, key: &str, accepted: bool) {
        let retry = (!accepted).then(|| Instant::now() + PULL_RETRY);
        let mut pulls = self.pulls();
        pulls.retain(|(k, _)| k != key);
        pulls.push((key.to_owned(), retry));
    }

    /// The decision on `pods` with the gates' last readings and the state now. The loop acts on
    /// it; `/v1/status` shows it.
    pub fn decide(&self, pods: Option<&[crate::pod::Pod]>) -> Decision {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let gates = self.gates.states();
        let pulls: Vec<String> = self
            .pulls()
            .iter()
            .filter(|(_, retry)| retry.is_none_or(|at| at > now))
            .map(|(k, _)| k.clone())
            .collect();
        let unavailable = self.store.unavailable();
        self.store.read(|s| {
            policy::decide(&policy::Inputs {
                pods,
                gates: &gates,
                state: s,
                now,
                now_ms: state::unix_ms(wall),
                settings: &self.policy,
                imagepull_supported: self.imagepull_supported.load(Ordering::Relaxed),
                pulls_requested: &pulls,
                state_unavailable: unavailable.as_deref(),
            })
        })
    }
}

/// The decision loop (SPEC section 6): every `gate_check_interval`, read the gates, decide on
/// the newest snapshot, and act.
pub struct Autopilot {
    upstream: Arc<dyn Upstream>,
    shared: Arc<Shared>,
    control: Arc<Control>,
    /// Each gate's change count at the last tick, to put its changes in the event log.
    seen_changes: Vec<u64>,
    notifier: Option<Arc<Notifier>>,
}

impl Autopilot {
    pub fn new(upstream: Arc<dyn Upstream>, shared: Arc<Shared>, control: Arc<Control>) -> Self {
        Autopilot {
            upstream,
            shared,
            control,
            seen_changes: Vec::new(),
            notifier: None,
        }
    }

    /// Reports `STATUS=` and pings the watchdog through `n` after each tick.
    pub fn with_notifier(mut self, n: Arc<Notifier>) -> Self {
        self.notifier = Some(n);
        self
    }

    /// Progress, for the watchdog: the poller ended a poll recently (a failed one counts; a
    /// hung one does not).
    fn poller_alive(&self) -> bool {
        let bound = self.shared.poll_interval * 3 + Duration::from_secs(30);
        self.shared
            .health()
            .last_attempt
            .is_some_and(|at| at.elapsed() < bound)
    }

    /// Gate changes go into the event log; written with the next state change, not each one.
    fn note_gate_changes(&mut self, wall: SystemTime) {
        let states = self.control.gates.states();
        self.seen_changes.resize(states.len(), 0);
        for (g, seen) in states.iter().zip(self.seen_changes.iter_mut()) {
            if g.changes != *seen {
                *seen = g.changes;
                let (kind, what) = if g.open {
                    ("gate_open", format!("gate {} open: {}", g.name, g.detail))
                } else {
                    let why = g.error.as_deref().unwrap_or(&g.detail);
                    ("gate_closed", format!("gate {} closed: {why}", g.name))
                };
                self.control.store.note(|s| s.event(wall, kind, None, what));
            }
        }
    }

    /// One cycle; returns how long to wait before the next.
    pub fn tick(&mut self) -> Duration {
        let c = self.control.clone();
        c.gates.check();
        // While the state cannot be written, try again (throttled by the store): the agent
        // resumes by itself once the disk has room or is writable again.
        c.store.recover(Instant::now());
        let wall = SystemTime::now();
        let now_ms = state::unix_ms(wall);
        self.note_gate_changes(wall);
        // Each store update writes the file: only when something is due.
        if c.store
            .read(|s| s.holds.iter().any(|h| h.expires_ms <= now_ms))
        {
            c.store.update(|s| {
                let expired: Vec<String> = s
                    .holds
                    .iter()
                    .filter(|h| h.expires_ms <= now_ms)
                    .map(|h| h.name.clone())
                    .collect();
                for name in expired {
                    s.holds.retain(|h| h.name != name);
                    log::info!("hold {name} expired");
                    s.event(wall, "hold_expired", None, format!("hold {name} expired"));
                }
            });
        }
        let snap = self.shared.snapshot();
        let decision = c.decide(snap.as_ref().map(|s| s.pods.as_slice()));
        for action in &decision.actions {
            self.act(action, snap.as_deref());
        }
        if let Some(snap) = &snap {
            let uids: std::collections::HashSet<&str> =
                snap.pods.iter().map(|p| p.metadata.uid.as_str()).collect();
            let present = |uid: &str| uids.contains(uid);
            c.pulls()
                .retain(|(k, _)| present(k.split('@').next().unwrap_or_default()));
            let stale = c.store.read(|s| {
                s.parked.iter().any(|p| !present(&p.uid))
                    || s.backoff.iter().any(|b| !present(&b.uid))
            });
            if stale {
                c.store.update(|s| {
                    s.parked.retain(|p| present(&p.uid));
                    s.backoff.retain(|b| present(&b.uid));
                });
            }
        }
        let mut next = decision
            .blockers
            .stable_in
            .map_or(c.policy.gate_check_interval, |d| {
                d.min(c.policy.gate_check_interval)
            });
        if let Some(n) = &self.notifier {
            n.status(&status_line(&decision, snap.as_deref(), &self.shared, &c));
            if self.poller_alive() {
                n.watchdog();
            }
            if let Some(period) = n.watchdog_period() {
                next = next.min(period / 4);
            }
        }
        next.max(Duration::from_millis(1))
    }

    fn act(&mut self, action: &Action, snap: Option<&Snapshot>) {
        let c = &self.control;
        let wall = SystemTime::now();
        match action {
            Action::Upgrade { pod, force } => self.upgrade(pod, *force, snap),
            Action::Pull { pod, pull_key } => {
                let closed = c.gates.recheck(Purpose::Pull, false);
                if !closed.is_empty() {
                    return;
                }
                let result = self.upstream.imagepull(&pod.namespace, &pod.name);
                self.shared
                    .metrics
                    .upstream_call("imagepull", result.as_ref().map_or(0, |r| r.status));
                match result {
                    Ok(r) if r.status == 404 => {
                        if c.imagepull_supported.swap(false, Ordering::Relaxed) {
                            log::info!(
                                "imagepull answered 404: the upstream predates pre-pull (YurtHub < v1.7); upgrading without it"
                            );
                        }
                    }
                    Ok(r) => {
                        let accepted = (200..300).contains(&r.status);
                        let (body, key) = (excerpt(&r.body), pod.key());
                        if accepted {
                            log::info!("imagepull {key}: upstream answered {} {body}", r.status);
                        } else {
                            log::warn!(
                                "imagepull {key}: upstream answered {} {body}; asking again in {}s",
                                r.status,
                                PULL_RETRY.as_secs()
                            );
                        }
                        c.pull_asked(pull_key, accepted);
                    }
                    Err(e) => {
                        log::warn!(
                            "imagepull {}: upstream {e}; asking again in {}s",
                            pod.key(),
                            PULL_RETRY.as_secs()
                        );
                        c.pull_asked(pull_key, false);
                    }
                }
            }
            Action::Finished { uid, replacement } => {
                self.shared.metrics.upgrade("succeeded");
                c.store.update(|s| {
                    if let Some(f) = take(&mut s.in_flight, |f| &f.uid == uid) {
                        let msg = format!(
                            "upgrade of {}/{} finished: {replacement} is Ready",
                            f.namespace, f.name
                        );
                        log::info!("{msg}");
                        let key = format!("{}/{}", f.namespace, f.name);
                        s.event(wall, "upgrade_finished", Some(&key), msg);
                    }
                });
            }
            Action::Failed { uid, reason } => {
                self.shared.metrics.upgrade("failed");
                c.store.update(|s| {
                    let f = take(&mut s.in_flight, |f| &f.uid == uid);
                    let key = f.map(|f| format!("{}/{}", f.namespace, f.name));
                    log::warn!(
                        "upgrade of {} failed: {reason}; circuit breaker tripped, automatic upgrades stop until POST /v1/breaker/reset",
                        key.as_deref().unwrap_or("?")
                    );
                    s.event(wall, "upgrade_failed", key.as_deref(), reason.clone());
                    s.breaker = Some(Breaker {
                        tripped_ms: state::unix_ms(wall),
                        reason: reason.clone(),
                    });
                    s.event(wall, "breaker_tripped", key.as_deref(), reason.clone());
                });
            }
            Action::Dequeue { uid, reason } => c.store.update(|s| {
                if let Some(q) = take(&mut s.queue, |q| &q.uid == uid) {
                    let key = format!("{}/{}", q.namespace, q.name);
                    log::info!("{key} left the queue: {reason}");
                    s.event(wall, "dequeued", Some(&key), reason.clone());
                }
            }),
            Action::Unpark { uid } => c.store.update(|s| s.parked.retain(|p| &p.uid != uid)),
        }
    }

    /// Records the intent, re-reads the gates, and only then calls the upstream.
    fn upgrade(&mut self, pod: &Target, force: bool, snap: Option<&Snapshot>) {
        let c = &self.control;
        let key = pod.key();
        let started = SystemTime::now();
        // Persisted first: after a crash in the call, the restarted agent does not call again.
        // No call without it on disk, and never a second entry for one uid.
        let intent = c.store.commit(|s| {
            if s.in_flight.iter().any(|f| f.uid == pod.uid) {
                return false;
            }
            s.in_flight.push(InFlight {
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
                uid: pod.uid.clone(),
                owner_uid: pod.owner_uid.clone(),
                started_ms: state::unix_ms(started),
                accepted: false,
            });
            true
        });
        match intent {
            Ok(true) => {}
            Ok(false) => {
                log::warn!(
                    "not upgrading {key}: an upgrade of its uid {} is already in flight",
                    pod.uid
                );
                return;
            }
            Err(e) => {
                log::warn!("not upgrading {key}: the intent cannot be written first ({e}); upgrades pause until it can");
                return;
            }
        }
        // The moment of action (SPEC section 5): every upgrade gate read afresh, and holds.
        let mut closed = c.gates.recheck(Purpose::Upgrade, force);
        if !force {
            let now_ms = state::unix_ms(SystemTime::now());
            c.store.read(|s| {
                closed.extend(s.active_holds(now_ms).map(|h| format!("hold:{}", h.name)))
            });
        }
        if !closed.is_empty() {
            let msg = format!(
                "not upgrading {key}: {} closed at the moment of action",
                closed.join(", ")
            );
            log::info!("{msg}");
            c.store.update(|s| {
                s.in_flight.retain(|f| f.uid != pod.uid);
                s.event(SystemTime::now(), "upgrade_held_back", Some(&key), msg);
            });
            return;
        }
        let result = self.upstream.upgrade(&pod.namespace, &pod.name);
        let status = result.as_ref().map_or(0, |r| r.status);
        self.shared.metrics.upstream_call("upgrade", status);
        let detail = match &result {
            Ok(r) => format!("{} {}", r.status, excerpt(&r.body)),
            Err(e) => e.to_string(),
        };
        self.shared.record_outcome(Outcome {
            pod: key.clone(),
            at: SystemTime::now(),
            status,
            detail: detail.clone(),
        });
        let wall = SystemTime::now();
        match status {
            200..=299 => {
                self.shared.metrics.upgrade("started");
                log::info!("upgrade {key} started: upstream answered {detail}");
                c.store.update(|s| {
                    if let Some(f) = s.in_flight.iter_mut().find(|f| f.uid == pod.uid) {
                        f.accepted = true;
                    }
                    s.backoff.retain(|b| b.uid != pod.uid);
                    s.event(wall, "upgrade_started", Some(&key), detail);
                });
            }
            400..=499 => {
                self.shared.metrics.upgrade("refused");
                log::warn!("upgrade {key} refused: upstream answered {detail}; parked until its conditions change");
                let fingerprint = snap
                    .and_then(|s| s.pods.iter().find(|p| p.metadata.uid == pod.uid))
                    .map_or(0, policy::fingerprint);
                c.store.update(|s| {
                    s.in_flight.retain(|f| f.uid != pod.uid);
                    s.parked.retain(|p| p.uid != pod.uid);
                    s.parked.push(Parked {
                        uid: pod.uid.clone(),
                        key: key.clone(),
                        fingerprint,
                        detail: detail.clone(),
                    });
                    s.event(wall, "upgrade_refused", Some(&key), detail);
                });
            }
            _ => {
                self.shared.metrics.upgrade("error");
                c.store.update(|s| {
                    s.in_flight.retain(|f| f.uid != pod.uid);
                    let attempts = s
                        .backoff
                        .iter()
                        .find(|b| b.uid == pod.uid)
                        .map_or(0, |b| b.attempts)
                        + 1;
                    let wait = BACKOFF_FIRST
                        .saturating_mul(1 << (attempts - 1).min(16))
                        .min(BACKOFF_MAX);
                    log::warn!(
                        "upgrade {key} failed: {detail}; retrying in {}s (attempt {attempts})",
                        wait.as_secs()
                    );
                    s.backoff.retain(|b| b.uid != pod.uid);
                    s.backoff.push(Backoff {
                        uid: pod.uid.clone(),
                        key: key.clone(),
                        attempts,
                        retry_ms: state::unix_ms(wall + wait),
                        detail: detail.clone(),
                    });
                    s.event(wall, "upgrade_error", Some(&key), detail);
                });
            }
        }
    }

    pub fn run(mut self, stop: &Shutdown) {
        loop {
            let next = self.tick();
            if stop.wait_timeout(next) {
                self.control.store.flush();
                return;
            }
        }
    }
}

/// The one-line `STATUS=` for systemd: what the agent is doing and, if waiting, on what.
pub fn status_line(d: &Decision, snap: Option<&Snapshot>, shared: &Shared, c: &Control) -> String {
    let health = shared.health();
    let Some(snap) = snap else {
        return match health.last_error {
            Some((e, _)) => format!("no pod list yet: upstream {e}"),
            None => "waiting for the first pod list".into(),
        };
    };
    let (in_flight, breaker) = c.store.read(|s| {
        (
            s.in_flight
                .iter()
                .map(|f| format!("{}/{}", f.namespace, f.name))
                .collect::<Vec<_>>(),
            s.breaker.as_ref().map(|b| b.reason.clone()),
        )
    });
    let waiting = d.waiting.len()
        + d.actions
            .iter()
            .filter(|a| matches!(a, Action::Upgrade { .. }))
            .count();
    let needing = snap.needing_upgrade().count().max(waiting);
    let mut line = match needing {
        0 => "no pod needs upgrade".to_owned(),
        1 => "1 pod needs upgrade".to_owned(),
        n => format!("{n} pods need upgrade"),
    };
    if !in_flight.is_empty() {
        line += &format!("; upgrading {}", in_flight.join(", "));
    }
    let blocked = |names: &[String]| {
        names
            .iter()
            .map(|n| match n.strip_prefix("hold:") {
                Some(h) => format!("hold {h}"),
                None => format!("gate {n} closed"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let other = d.waiting.iter().find(|w| {
        !matches!(
            w.1,
            policy::Why::InFlight | policy::Why::MaxConcurrent(_) | policy::Why::Manual
        )
    });
    if let Some(reason) = breaker {
        line += &format!("; breaker tripped: {reason}");
    } else if needing > 0 && !d.blockers.names.is_empty() {
        // The gates first: what an operator most often waits on.
        line += &format!("; waiting: {}", blocked(&d.blockers.names));
    } else if let Some((_, why, _)) = other {
        line += &format!("; waiting: {why}");
    } else if needing > 0 && c.policy.mode == crate::config::Mode::Manual && in_flight.is_empty() {
        line += "; manual mode";
    }
    if let Some((e, _)) = health
        .last_error
        .filter(|_| health.consecutive_failures > 0)
    {
        line += &format!("; upstream failing ({})", e.kind());
    }
    line
}

/// Removes and returns the first element matching `f`.
fn take<T>(v: &mut Vec<T>, f: impl Fn(&T) -> bool) -> Option<T> {
    let i = v.iter().position(f)?;
    Some(v.remove(i))
}

/// The state store in `state.dir`; memory only (with the reason) when it cannot be used, so a
/// read-only or full disk never stops the agent from serving and guarding.
fn open_store(dir: &std::path::Path) -> (Store, Option<String>) {
    (Store::open(dir), None)
}

/// Runs the daemon until `stop` is triggered (by SIGTERM or SIGINT in `main`).
pub fn run(settings: Settings, stop: Arc<Shutdown>) -> Result<(), String> {
    let sim = (settings.upstream.kind == UpstreamKind::Sim)
        .then(|| Arc::new(crate::sim::Node::new(settings.sim.clone())));
    let upstream: Arc<dyn Upstream> = match &sim {
        Some(node) => Arc::new(upstream::sim::Sim::new(node.clone())),
        None => Arc::new(upstream::yurthub::Yurthub::new(
            &settings.upstream.url,
            settings.upstream.timeout,
        )),
    };
    let token = match &settings.api.token_file {
        Some(path) => Some(api::read_token(path)?),
        None => None,
    };
    let shared = Arc::new(Shared::new(settings.upstream.poll_interval));
    let listener = api::bind(&settings.api.listen)?;
    log::info!(
        "yurt-ota {} serving the OTA API on {}; upstream {} {} every {}",
        env!("CARGO_PKG_VERSION"),
        settings.api.listen,
        upstream.kind(),
        upstream.url(),
        crate::config::format_duration(settings.upstream.poll_interval)
    );
    let p = &settings.policy;
    let gate_names: Vec<&str> = settings.gates.iter().map(|g| g.name.as_str()).collect();
    match (p.mode, gate_names.is_empty()) {
        (crate::config::Mode::Auto, true) => log::warn!(
            "automatic mode with no gates: every outdated DaemonSet pod is upgraded as soon as it needs it"
        ),
        (mode, _) => log::info!(
            "{} mode; gates: {}; stable_for {}",
            if mode == crate::config::Mode::Auto { "automatic" } else { "manual" },
            if gate_names.is_empty() { "none".to_owned() } else { gate_names.join(", ") },
            crate::config::format_duration(p.stable_for)
        ),
    }
    let (store, store_error) = open_store(&settings.state.dir);
    let control = Arc::new(Control {
        store_error,
        ..Control::new(
            Gates::from_settings(&settings.gates),
            store,
            settings.policy.clone(),
        )
    });
    let api = Api::new(
        shared.clone(),
        upstream.clone(),
        sim,
        token,
        control.clone(),
    );

    let notifier = Arc::new(Notifier::from_env());
    let poller = {
        let (shared, stop, upstream) = (shared.clone(), stop.clone(), upstream.clone());
        let (control, notifier) = (control.clone(), notifier.clone());
        let interval = settings.upstream.poll_interval;
        thread::Builder::new()
            .name("poll".into())
            .spawn(move || {
                // READY=1 once the API is bound (above) and the first poll has been tried; the
                // API already answers meanwhile (503 no_snapshot).
                let started = Instant::now();
                let mut poller = Poller::new(upstream, shared.clone());
                poller.poll_once();
                let snap = shared.snapshot();
                let pods = snap.as_ref().map(|s| s.pods.as_slice());
                notifier.ready(&status_line(
                    &control.decide(pods),
                    snap.as_deref(),
                    &shared,
                    &control,
                ));
                let next = (started + interval).saturating_duration_since(Instant::now());
                if !stop.wait_timeout(next) {
                    poller.run(interval, &stop)
                }
            })
            .map_err(|e| format!("cannot start the poll thread: {e}"))?
    };
    let autopilot = {
        let (shared, stop, upstream) = (shared.clone(), stop.clone(), upstream.clone());
        let notifier = notifier.clone();
        thread::Builder::new()
            .name("decide".into())
            .spawn(move || {
                Autopilot::new(upstream, shared, control)
                    .with_notifier(notifier)
                    .run(&stop)
            })
            .map_err(|e| format!("cannot start the decision thread: {e}"))?
    };
    crate::http::serve(listener, api::limits(&settings.api), &stop, &api);
    notifier.stopping();
    let _ = poller.join();
    let _ = autopilot.join();
    if let crate::config::Listen::Unix(path) = &settings.api.listen {
        let _ = std::fs::remove_file(path);
    }
    log::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::fixture;
    use crate::upstream::Relay;

    /// An upstream whose pod list a test sets.
    struct Fixed(Mutex<Result<Vec<u8>, UpstreamError>>);

    impl Upstream for Fixed {
        fn list_pods(&self) -> Result<Vec<u8>, UpstreamError> {
            self.0.lock().unwrap().clone()
        }
        fn upgrade(&self, _: &str, _: &str) -> Result<Relay, UpstreamError> {
            unreachable!("the poller never upgrades")
        }
        fn imagepull(&self, _: &str, _: &str) -> Result<Relay, UpstreamError> {
            unreachable!("the poller never pulls")
        }
        fn kind(&self) -> &'static str {
            "test"
        }
        fn url(&self) -> &str {
            "test://"
        }
    }

    #[test]
    fn the_snapshot_is_rebuilt_once_per_change_not_per_poll() {
        let upstream = Arc::new(Fixed(Mutex::new(Ok(fixture("1.33")))));
        let shared = Arc::new(Shared::new(Duration::from_secs(5)));
        let mut poller = Poller::new(upstream.clone(), shared.clone());
        poller.poll_once();
        let first = shared.snapshot().unwrap();
        let first_success = shared.health().last_success.unwrap().0;
        poller.poll_once();
        assert!(
            Arc::ptr_eq(&first, &shared.snapshot().unwrap()),
            "same bytes: same snapshot"
        );
        assert!(
            shared.health().last_success.unwrap().0 > first_success,
            "but the poll counts as a success"
        );

        *upstream.0.lock().unwrap() = Err(UpstreamError::Connect("refused".into()));
        poller.poll_once();
        assert!(
            Arc::ptr_eq(&first, &shared.snapshot().unwrap()),
            "a failure keeps the last good one"
        );
        assert_eq!(shared.health().consecutive_failures, 1);

        *upstream.0.lock().unwrap() = Ok(fixture("1.36"));
        poller.poll_once();
        let next = shared.snapshot().unwrap();
        assert!(!Arc::ptr_eq(&first, &next));
        assert!(next
            .pods
            .iter()
            .any(|p| p.spec.node_name == "v1.36-control-plane"));
        assert_eq!(shared.health().consecutive_failures, 0);
    }

    /// Regression: a failed imagepull used to be remembered as asked, so the pod waited for a
    /// pre-pull that never came; now only an accepted one is, and a failed one is asked again.
    #[test]
    fn a_failed_imagepull_is_asked_again_an_accepted_one_is_not() {
        let mut policy = Settings::default().policy;
        policy.mode = crate::config::Mode::Auto;
        let c = Control::new(
            crate::gate::Gates::new(Vec::new()),
            Store::in_memory(),
            policy,
        );
        let mut pods = Snapshot::build(&fixture("1.36")).unwrap().pods;
        pods.retain(|p| p.metadata.name.starts_with("kindnet"));
        pods[0].status.conditions.push(crate::pod::Condition {
            kind: "PodNeedUpgrade".into(),
            status: "True".into(),
            reason: String::new(),
            message: "controllerrevision: 7f9c8d6b5".into(),
        });
        let key = policy::pull_key(&pods[0]);
        let pulls = |c: &Control| {
            c.decide(Some(&pods))
                .actions
                .iter()
                .filter(|a| matches!(a, Action::Pull { .. }))
                .count()
        };
        assert_eq!(pulls(&c), 1, "not asked yet");
        c.pull_asked(&key, false);
        assert_eq!(pulls(&c), 0, "failed: not again before PULL_RETRY");
        c.pulls()[0].1 = Some(Instant::now() - Duration::from_secs(1));
        assert_eq!(pulls(&c), 1, "failed, PULL_RETRY over: asked again");
        c.pull_asked(&key, true);
        assert_eq!(pulls(&c), 0, "accepted: not again");
        assert_eq!(c.pulls().len(), 1);
    }

    #[test]
    fn readiness_needs_a_snapshot_newer_than_three_intervals() {
        let shared = Shared::new(Duration::from_secs(5));
        let now = Instant::now();
        assert!(shared
            .readiness(now)
            .unwrap_err()
            .contains("first poll has not finished"));
        shared.succeeded(None);
        assert!(shared.readiness(Instant::now()).is_ok());
        let later = Instant::now() + Duration::from_secs(16);
        assert!(shared
            .readiness(later)
            .unwrap_err()
            .contains("more than 3 poll intervals"));
    }
}
