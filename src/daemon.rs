//! The wiring on top: bind the API, start the poll and decision threads, serve until the stop,
//! then join them. The parts it joins (`shared`, `agent`, `api`) do not know one another's
//! threads.

use std::sync::Arc;
use std::thread;
use std::time::Instant;

use crate::agent::{status_line, Autopilot, Poller};
use crate::api::{self, Api};
use crate::config::{Settings, UpstreamKind};
use crate::decider::Decider;
use crate::gate::Gates;
use crate::node_view::NodeView;
use crate::shutdown::Shutdown;
use crate::state::Store;
use crate::systemd::Notifier;
use crate::upstream::{self, Upstream};

/// The state store in `state.dir`. One that cannot be read or written (a read-only or full disk)
/// never stops the agent from serving and guarding: it reports itself unavailable, upgrades and
/// durable changes pause, and it retries until it can be written (`Store::recover`).
fn open_store(dir: &std::path::Path) -> (Store, Option<String>) {
    (Store::open(dir), None)
}

/// Runs the daemon until `stop` is triggered (by SIGTERM or SIGINT in `main`).
pub fn run(settings: Settings, stop: Arc<Shutdown>) -> Result<(), String> {
    let sim = (settings.upstream.kind == UpstreamKind::Sim)
        .then(|| Arc::new(crate::sim::Node::new(settings.sim.clone())));
    let upstream: Arc<dyn Upstream> = match &sim {
        Some(node) => Arc::new(upstream::sim::Sim::new(node.clone())),
        None => match (&settings.upstream.kind, &settings.upstream.apiserver) {
            (UpstreamKind::Apiserver, Some(a)) => {
                let a = upstream::apiserver::resolve(a, settings.upstream.timeout)?;
                Arc::new(upstream::apiserver::Apiserver::start(a)?)
            }
            _ => Arc::new(upstream::yurthub::Yurthub::new(
                &settings.upstream.url,
                settings.upstream.timeout,
            )),
        },
    };
    let token = match &settings.api.token_file {
        Some(path) => Some(api::read_token(path)?),
        None => None,
    };
    let shared = Arc::new(NodeView::new(settings.upstream.poll_interval));
    let listener = api::bind(&settings.api.listen)?;
    log::info!(
        "yurt-ota {} serving the OTA API on {}; upstream {} {} every {}",
        env!("CARGO_PKG_VERSION"),
        settings.api.listen,
        upstream.kind(),
        upstream.url(),
        crate::config::HumanDuration(settings.upstream.poll_interval)
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
            crate::config::HumanDuration(p.stable_for)
        ),
    }
    let (store, store_error) = open_store(&settings.state.dir);
    let mut control = Decider::new(
        Gates::from_settings(&settings.gates),
        store,
        settings.policy.clone(),
    );
    control.store_error = store_error;
    control.fleet = crate::fleet::Fleet::new(settings.policy.ready_timeout)
        .in_namespace(&settings.fleet.namespace);
    let control = Arc::new(control);
    let api = Api::new(
        shared.clone(),
        upstream.clone(),
        sim,
        token,
        control.clone(),
    );

    let notifier = Arc::new(Notifier::from_env());
    // The gates' slow re-read rides on the poll's wake-up when the poll comes often enough.
    let reread_by_poller = settings.upstream.poll_interval <= settings.policy.gate_reread;
    let poller = {
        let (shared, stop, upstream) = (shared.clone(), stop.clone(), upstream.clone());
        let (control, notifier) = (control.clone(), notifier.clone());
        let interval = settings.upstream.poll_interval;
        critical("poll", exit_on_panic, move || {
            // READY=1 once the API is bound (above) and the first poll has been tried; the
            // API already answers meanwhile (503 no_snapshot).
            let started = Instant::now();
            let mut poller = Poller::new(upstream, shared.clone());
            if reread_by_poller {
                poller = poller.with_reread(control.clone());
            }
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
        let poll_timeout = settings.upstream.timeout;
        critical("decide", exit_on_panic, move || {
            let autopilot =
                Autopilot::new(upstream, shared, control).with_notifier(notifier, poll_timeout);
            match reread_by_poller {
                true => autopilot.reread_by_poller().run(&stop),
                false => autopilot.run(&stop),
            }
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

/// Runs `f` on a thread named `name`; a panic in it calls `on_panic`. The poll and decision
/// threads are critical: an agent whose API answers while its loop is dead is half-alive and
/// upgrades nothing, so their panic ends the process and systemd restarts the whole agent.
fn critical(
    name: &'static str,
    on_panic: fn(&str),
    f: impl FnOnce() + Send + 'static,
) -> std::io::Result<thread::JoinHandle<()>> {
    thread::Builder::new().name(name.into()).spawn(move || {
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
            on_panic(name);
        }
    })
}

fn exit_on_panic(name: &str) {
    log::error!("the {name} thread panicked; exiting so that systemd restarts the agent");
    std::process::exit(70);
}

#[cfg(test)]
mod critical_tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static PANICKED: AtomicUsize = AtomicUsize::new(0);

    fn count(_: &str) {
        PANICKED.fetch_add(1, Ordering::SeqCst);
    }

    #[test]
    fn a_panic_in_a_critical_thread_is_not_swallowed() {
        critical("t1", count, || {}).unwrap().join().unwrap();
        assert_eq!(
            PANICKED.load(Ordering::SeqCst),
            0,
            "a clean return is no panic"
        );
        critical("t2", count, || panic!("boom"))
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(PANICKED.load(Ordering::SeqCst), 1);
    }
}
