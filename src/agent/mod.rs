//! The loops: poll the upstream into the shared snapshot (`Poller`); read the gates, decide and
//! act (`Autopilot`); persist. They take their effects as arguments so tests can drive them;
//! `daemon::run` starts them.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::policy::{self, Action, Decision};
use crate::shutdown::Shutdown;
use crate::snapshot::Snapshot;
use crate::state;
use crate::systemd::Notifier;
use crate::upstream::Upstream;

mod act;
mod poll;
mod upgrade;

pub use crate::decider::{Decider, PULL_RETRY};
pub use crate::node_view::{Health, NodeView, Outcome};
pub use act::Actor;
pub use poll::Poller;

/// The longest the decision loop sleeps while the poller does the gates' slow re-read.
const REREAD_BACKSTOP: Duration = Duration::from_secs(3600);

/// The decision loop (SPEC section 6): read the gates, decide on the newest snapshot, act, and
/// sleep until the next deadline: a gate event, a new snapshot or state change (the bell), or
/// the earliest of a `stable_for` expiry, a hold expiry, a window edge or a file turning stale,
/// a backoff, ready or pull-retry deadline, the watchdog ping and the slow re-read.
pub struct Autopilot {
    actor: Actor,
    shared: Arc<NodeView>,
    control: Arc<Decider>,
    /// Each gate's change count at the last tick, to put its changes in the event log.
    seen_changes: Vec<u64>,
    notifier: Option<Arc<Notifier>>,
    /// The upstream timeout: a poll that runs longer (and some slack) is stuck.
    poll_timeout: Duration,
    /// The gates tell of their changes (`run` started their watches): the loop sleeps until a
    /// deadline, at most `policy.gate_reread`. Otherwise it reads them every `gate_check_interval`.
    watched: bool,
    /// The poller does the slow re-read (`Poller::with_reread`): this loop's own is only an
    /// hourly backstop for a stuck poller.
    reread_by_poller: bool,
    /// How long after its deadline the loop woke last (0 when woken early by the bell): with
    /// the time each step of an upgrade takes, logged at debug level.
    woke_late: Duration,
}

impl Autopilot {
    pub fn new(upstream: Arc<dyn Upstream>, shared: Arc<NodeView>, control: Arc<Decider>) -> Self {
        Autopilot {
            actor: Actor::new(upstream, shared.clone(), control.clone()),
            shared,
            control,
            seen_changes: Vec::new(),
            notifier: None,
            poll_timeout: Duration::from_secs(5),
            watched: false,
            reread_by_poller: false,
            woke_late: Duration::ZERO,
        }
    }

    /// The poller re-reads the gates every `policy.gate_reread` (its interval is no longer).
    pub fn reread_by_poller(mut self) -> Self {
        self.reread_by_poller = true;
        self
    }

    /// Reports `STATUS=` and pings the watchdog through `n` after each tick, while the poller
    /// makes progress: each poll ends within `poll_timeout` (the upstream timeout).
    pub fn with_notifier(mut self, n: Arc<Notifier>, poll_timeout: Duration) -> Self {
        self.notifier = Some(n);
        self.poll_timeout = poll_timeout;
        self
    }

    /// How long the poller has been stuck (a poll past its timeout, or none started when due);
    /// `None` while it makes progress.
    fn poller_stuck(&self) -> Option<Duration> {
        let h = self.shared.health();
        crate::systemd::poller_stuck(
            h.poll_started,
            h.last_attempt,
            Instant::now(),
            self.shared.poll_interval,
            self.poll_timeout,
        )
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
        let woke = Instant::now();
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
        self.actor.fleet_tick();
        let snap = self.shared.snapshot();
        let decision = c.decide(snap.as_ref().map(|s| s.pods.as_slice()));
        for action in &decision.actions {
            if let Action::Upgrade { pod, .. } = action {
                log::debug!(
                    "upgrade {} decided {:.2} ms after waking, {:.2} ms after the deadline",
                    pod.key(),
                    woke.elapsed().as_secs_f64() * 1000.0,
                    self.woke_late.as_secs_f64() * 1000.0
                );
            }
            self.actor.act(action, snap.as_deref());
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
        let now = Instant::now();
        // After acting, look again soon: an action changes what the next decision sees (a pull
        // asked for, an upgrade started) in ways no event reports.
        let mut next = if self.watched && decision.actions.is_empty() {
            if self.reread_by_poller {
                // Only a backstop, and rare: every 2 min it was a wake-up of its own in an idle
                // minute, on top of the 12 polls. The poller's re-read is late by one poll at
                // most (a poll ends within `upstream.timeout`), and with a watchdog this loop
                // wakes, and reads every gate, at each ping anyway.
                (c.policy.gate_reread * 4).max(REREAD_BACKSTOP)
            } else {
                c.policy.gate_reread
            }
        } else {
            c.policy.gate_check_interval
        };
        // Halfway through `stable_for`, with pods waiting on it, what is pending (the gate's
        // opening, at least) is written: a state file that cannot be written is found now, and
        // the upgrade waits (SPEC 6), rather than after a call whose intent went into its own
        // record (`state::intent`). At most one write per half `stable_for`, off the path from
        // the gates turning stable to the call.
        if let Some(left) = (decision.blockers.stable_in).filter(|_| !decision.waiting.is_empty()) {
            let half = c.policy.stable_for / 2;
            match left.checked_sub(half).filter(|d| !d.is_zero()) {
                Some(until_half) => next = next.min(until_half),
                None => c.store.flush(),
            }
        }
        let pull_retry = (c.pulls().iter())
            .filter_map(|(_, at)| at.map(|at| at.saturating_duration_since(now)))
            .min();
        // While the state cannot be written, `recover` is tried again at its pace.
        let recover = c.store.unavailable().map(|_| state::RETRY_EVERY);
        for d in [
            decision.next_look,
            c.gates.next_change(wall),
            pull_retry,
            recover,
            // A held slot renewed in time, whatever else the loop waits for (SPEC 6b).
            c.fleet.next_renewal(),
        ]
        .into_iter()
        .flatten()
        {
            next = next.min(d);
        }
        if let Some(n) = &self.notifier {
            n.status(&status_line(&decision, snap.as_deref(), &self.shared, &c));
            match self.poller_stuck() {
                None => n.watchdog(),
                Some(stuck) => n.watchdog_trigger(&format!(
                    "the poller has made no progress for {:.0}s",
                    stuck.as_secs_f64()
                )),
            }
            // It pings when half a period passed since the last ping: a third keeps it on time.
            if let Some(period) = n.watchdog_period() {
                next = next.min(period / 3);
            }
        }
        next.max(Duration::from_millis(1))
    }

    /// Starts the gates' watches, then loops until `stop`, asleep between deadlines.
    pub fn run(mut self, stop: &Shutdown) {
        let bell = self.shared.bell.clone();
        stop.stops(bell.clone());
        self.control.store.ring_on_change(bell.clone());
        match (self.control.gates).watch(&bell, self.control.policy.gate_check_interval) {
            Ok(()) => self.watched = true,
            Err(e) => log::warn!(
                "{e}: gates are read every {} instead",
                crate::config::HumanDuration(self.control.policy.gate_check_interval)
            ),
        }
        loop {
            let next = self.tick();
            let due = Instant::now() + next;
            if bell.wait(next) || stop.is_triggered() {
                self.control.store.flush();
                return;
            }
            self.woke_late = Instant::now().saturating_duration_since(due);
        }
    }
}

/// The one-line `STATUS=` for systemd: what the agent is doing and, if waiting, on what.
pub fn status_line(
    d: &Decision,
    snap: Option<&Snapshot>,
    shared: &NodeView,
    c: &Decider,
) -> String {
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

#[cfg(test)]
mod deadline_tests {
    use super::*;
    use crate::config::Settings;
    use crate::gate::Gates;
    use crate::state::{Backoff, Hold, Store};
    use crate::upstream::testing::Fake;

    /// Idle, the loop sleeps until the earliest deadline the policy names (a backoff, then a
    /// hold's expiry), else until the slow re-read; never on a fixed tick.
    #[test]
    fn the_loop_sleeps_until_the_next_deadline() {
        let settings = Settings::default();
        let control = Arc::new(Decider::new(
            Gates::new(Vec::new()),
            Store::in_memory(),
            settings.policy.clone(),
        ));
        let now_ms = state::unix_ms(SystemTime::now());
        let hold = |ms| Hold {
            name: "driving".into(),
            reason: String::new(),
            created_ms: now_ms,
            expires_ms: now_ms + ms,
        };
        control.store.update(|s| {
            s.holds.push(hold(10_000));
            s.backoff.push(Backoff {
                uid: "u".into(),
                key: "ns/p".into(),
                attempts: 1,
                retry_ms: now_ms + 3_000,
                detail: String::new(),
            });
        });
        let shared = Arc::new(NodeView::new(Duration::from_secs(5)));
        let mut a = Autopilot::new(Arc::new(Fake::default()), shared, control.clone());
        a.watched = true;
        let near = |d: Duration, want: u64| {
            let want = Duration::from_secs(want);
            assert!(
                d <= want && d + Duration::from_secs(1) > want,
                "{d:?}, want {want:?}"
            );
        };
        near(a.tick(), 3);
        control.store.update(|s| s.backoff.clear());
        near(a.tick(), 10);
        control.store.update(|s| s.holds.clear());
        assert_eq!(a.tick(), settings.policy.gate_reread);

        // With the poller re-reading the gates, an idle loop sleeps until its next deadline
        // (a hold's expiry), and without one for an hour: not every 4 re-read periods.
        let mut a = a.reread_by_poller();
        control.store.update(|s| s.holds.push(hold(300_000)));
        near(a.tick(), 300);
        control.store.update(|s| s.holds.clear());
        assert_eq!(a.tick(), REREAD_BACKSTOP);
    }
}
