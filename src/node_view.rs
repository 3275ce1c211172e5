//! What the poller learns and the API serves: the pod snapshot, the upstream's health, the
//! recent upgrade outcomes, the metrics, and the bell the decision loop sleeps on.
//!
//! Below both `agent` (the loops that write it) and `api` (which serves it); it imports neither.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use crate::metrics::{Gauges, Metrics};
use crate::snapshot::Snapshot;
use crate::upstream::UpstreamError;

/// How many upgrade outcomes `/v1/status` remembers.
const RECENT: usize = 10;

/// What the poller learns and the API serves.
pub struct NodeView {
    snapshot: RwLock<Option<Arc<Snapshot>>>,
    health: Mutex<Health>,
    recent: Mutex<VecDeque<Outcome>>,
    pub metrics: Metrics,
    pub poll_interval: Duration,
    /// What the decision loop sleeps on: rung by a new snapshot, a gate event, a state change.
    pub bell: Arc<crate::bell::Bell>,
}

#[derive(Default, Clone)]
pub struct Health {
    /// When the last poll ended, well or not: the poller is alive.
    pub last_attempt: Option<Instant>,
    /// When the last poll started (after `last_attempt` while one runs), for the watchdog.
    pub poll_started: Option<Instant>,
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

impl NodeView {
    pub fn new(poll_interval: Duration) -> NodeView {
        NodeView {
            snapshot: RwLock::new(None),
            health: Mutex::new(Health::default()),
            recent: Mutex::new(VecDeque::new()),
            metrics: Metrics::default(),
            poll_interval,
            bell: crate::bell::Bell::new(),
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

    /// A poll starts now.
    pub(crate) fn polling(&self) {
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .poll_started = Some(Instant::now());
    }

    pub(crate) fn succeeded(&self, snapshot: Option<Snapshot>) -> (bool, u64) {
        if let Some(s) = snapshot {
            *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(s));
            self.bell.ring();
        }
        let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        let first = h.last_success.is_none();
        let failures = std::mem::take(&mut h.consecutive_failures);
        h.last_success = Some((Instant::now(), SystemTime::now()));
        h.last_attempt = Some(Instant::now());
        self.metrics.poll_ok();
        (first, failures)
    }

    pub(crate) fn failed(&self, e: UpstreamError) {
        self.metrics.poll_failed(e.kind());
        let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        h.consecutive_failures += 1;
        h.last_error = Some((e, SystemTime::now()));
        h.last_attempt = Some(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_a_snapshot_newer_than_three_intervals() {
        let shared = NodeView::new(Duration::from_secs(5));
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
