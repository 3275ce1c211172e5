//! The daemon: poll the upstream into a snapshot, serve the local API, stop on SIGTERM.
//!
//! `run` wires the real parts together; the pieces it joins (`Shared`, `Poller`, `api::Api`)
//! take their effects as arguments so tests can drive them.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, RwLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use crate::api::{self, Api};
use crate::config::{Settings, UpstreamKind};
use crate::metrics::{Gauges, Metrics};
use crate::shutdown::Shutdown;
use crate::snapshot::{self, Snapshot};
use crate::upstream::{self, Upstream, UpstreamError};

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
        self.metrics.poll_ok();
        (first, failures)
    }

    fn failed(&self, e: UpstreamError) {
        self.metrics.poll_failed(e.kind());
        let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        h.consecutive_failures += 1;
        h.last_error = Some((e, SystemTime::now()));
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
}

impl Poller {
    pub fn new(upstream: Arc<dyn Upstream>, shared: Arc<Shared>) -> Poller {
        Poller {
            upstream,
            shared,
            last_logged: None,
            last_outdated: Vec::new(),
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
    let api = Api::new(shared.clone(), upstream.clone(), sim, token);

    let poller = {
        let (shared, stop, upstream) = (shared.clone(), stop.clone(), upstream.clone());
        let interval = settings.upstream.poll_interval;
        thread::Builder::new()
            .name("poll".into())
            .spawn(move || Poller::new(upstream, shared).run(interval, &stop))
            .map_err(|e| format!("cannot start the poll thread: {e}"))?
    };
    crate::http::serve(listener, api::limits(&settings.api), &stop, &api);
    let _ = poller.join();
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
