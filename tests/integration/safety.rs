//! The safety rule (SPEC section 5), in process: the real decision loop and the real YurtHub
//! client against the scripted node on loopback, with gate signals that the test scripts read by
//! read. No upgrade call may leave while a safety gate reads closed, including a gate that
//! closes between the decision and the call.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use yurt_ota::agent::{Autopilot, Decider, NodeView, Poller};
use yurt_ota::config::{Mode, Settings};
use yurt_ota::gate::{Gate, Gates, Reading, Signal};
use yurt_ota::state::Store;
use yurt_ota::upstream::{yurthub::Yurthub, Relay, Upstream, UpstreamError};

use crate::node::Node;

/// Open for reads before the `nth`, closed from the `nth` on (1-based), and it says what it
/// last read.
struct ClosesOnRead {
    nth: usize,
    reads: Arc<AtomicUsize>,
    last_open: Arc<AtomicBool>,
}

impl Signal for ClosesOnRead {
    fn read(&mut self, _: SystemTime, _: bool) -> Result<Reading, String> {
        let n = self.reads.fetch_add(1, Ordering::SeqCst) + 1;
        let open = n < self.nth;
        self.last_open.store(open, Ordering::SeqCst);
        Ok(Reading {
            open,
            detail: format!("read {n}"),
        })
    }
}

/// Open on every routine read; closed from the first fresh read on, which is the re-read at
/// the moment of action: the gate closes between the decision and the call.
struct ClosesAtAction {
    closed: bool,
    last_open: Arc<AtomicBool>,
}

impl Signal for ClosesAtAction {
    fn read(&mut self, _: SystemTime, fresh: bool) -> Result<Reading, String> {
        self.closed |= fresh;
        self.last_open.store(!self.closed, Ordering::SeqCst);
        Ok(Reading {
            open: !self.closed,
            detail: String::new(),
        })
    }
}

/// Pseudo-random flapping (a fixed LCG seed), sticky enough to be open for several reads.
struct Flaps {
    seed: u64,
    last_open: Arc<AtomicBool>,
}

impl Signal for Flaps {
    fn read(&mut self, _: SystemTime, _: bool) -> Result<Reading, String> {
        self.seed = self
            .seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let r = (self.seed >> 33) % 10;
        // Flip with probability 0.3.
        let open = if r < 3 {
            !self.last_open.load(Ordering::SeqCst)
        } else {
            self.last_open.load(Ordering::SeqCst)
        };
        self.last_open.store(open, Ordering::SeqCst);
        Ok(Reading {
            open,
            detail: String::new(),
        })
    }
}

/// The real client, plus a check at the instant of each upgrade call: what did the safety
/// signal say at its last read?
struct Watched {
    inner: Yurthub,
    last_open: Arc<AtomicBool>,
    violations: Mutex<Vec<String>>,
    calls: AtomicUsize,
}

impl Upstream for Watched {
    fn list_pods(&self) -> Result<Vec<u8>, UpstreamError> {
        self.inner.list_pods()
    }
    fn upgrade(&self, ns: &str, pod: &str) -> Result<Relay, UpstreamError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if !self.last_open.load(Ordering::SeqCst) {
            self.violations
                .lock()
                .unwrap()
                .push(format!("{ns}/{pod} sent while the safety gate read closed"));
        }
        self.inner.upgrade(ns, pod)
    }
    fn imagepull(&self, ns: &str, pod: &str) -> Result<Relay, UpstreamError> {
        self.inner.imagepull(ns, pod)
    }
    fn kind(&self) -> &'static str {
        "watched"
    }
    fn url(&self) -> &str {
        self.inner.url()
    }
}

fn parts(
    signal: Box<dyn Signal>,
    node: &Node,
    last_open: Arc<AtomicBool>,
) -> (Arc<Watched>, Arc<NodeView>, Arc<Decider>) {
    let upstream = Arc::new(Watched {
        inner: Yurthub::new(&node.url(), Duration::from_secs(2)),
        last_open,
        violations: Mutex::new(Vec::new()),
        calls: AtomicUsize::new(0),
    });
    let shared = Arc::new(NodeView::new(Duration::from_secs(5)));
    let mut policy = Settings::default().policy;
    policy.mode = Mode::Auto;
    policy.stable_for = Duration::from_millis(5);
    policy.prepull = false;
    let gates = Gates::new(vec![Gate {
        name: "vehicle-stopped".into(),
        kind: "test",
        safety: true,
        upgrade: true,
        pull: false,
        signal,
    }]);
    let control = Arc::new(Decider::new(gates, Store::in_memory(), policy));
    (upstream, shared, control)
}

/// Runs the loop for about 30 ticks.
fn run_ticks(upstream: &Arc<Watched>, shared: &Arc<NodeView>, control: &Arc<Decider>) {
    Poller::new(upstream.clone(), shared.clone()).poll_once();
    let mut pilot = Autopilot::new(upstream.clone(), shared.clone(), control.clone());
    for _ in 0..30 {
        std::thread::sleep(pilot.tick().min(Duration::from_millis(2)));
    }
}

#[test]
fn a_gate_that_closes_between_the_decision_and_the_call_stops_the_call() {
    let node = Node::start(Duration::from_millis(10), true);
    let last_open = Arc::new(AtomicBool::new(false));
    let signal = ClosesAtAction {
        closed: false,
        last_open: last_open.clone(),
    };
    let (upstream, shared, control) = parts(Box::new(signal), &node, last_open);
    run_ticks(&upstream, &shared, &control);
    assert_eq!(upstream.calls.load(Ordering::SeqCst), 0);
    assert!(node.upgraded().is_empty());
    let state = control.store.get();
    let held: Vec<_> = state
        .events
        .iter()
        .filter(|e| e.kind == "upgrade_held_back")
        .collect();
    assert_eq!(held.len(), 1, "{:?}", state.events);
    assert!(held[0]
        .message
        .contains("vehicle-stopped closed at the moment of action"));
    assert!(state.in_flight.is_empty(), "the intent is withdrawn");

    // A gate that closes on its Nth read, whichever read that is: never a call after it.
    for nth in 1..=8 {
        let node = Node::start(Duration::from_millis(10), true);
        let last_open = Arc::new(AtomicBool::new(false));
        let signal = ClosesOnRead {
            nth,
            reads: Arc::new(AtomicUsize::new(0)),
            last_open: last_open.clone(),
        };
        let (upstream, shared, control) = parts(Box::new(signal), &node, last_open);
        run_ticks(&upstream, &shared, &control);
        let v = upstream.violations.lock().unwrap();
        assert!(v.is_empty(), "nth={nth}: {v:?}");
        assert!(upstream.calls.load(Ordering::SeqCst) <= 1, "nth={nth}");
    }

    // The same loop with a gate that never closes does upgrade: the test can fail.
    let node = Node::start(Duration::from_millis(10), true);
    let last_open = Arc::new(AtomicBool::new(false));
    let signal = ClosesOnRead {
        nth: usize::MAX,
        reads: Arc::new(AtomicUsize::new(0)),
        last_open: last_open.clone(),
    };
    let (upstream, shared, control) = parts(Box::new(signal), &node, last_open);
    run_ticks(&upstream, &shared, &control);
    assert!(upstream.calls.load(Ordering::SeqCst) >= 1);
    assert!(upstream.violations.lock().unwrap().is_empty());
}

#[test]
fn no_upgrade_call_leaves_while_a_flapping_safety_gate_reads_closed() {
    let mut total = 0;
    for seed in 1..=20u64 {
        // Each run on a node with all three pods outdated.
        let node = Node::start(Duration::from_millis(1), true);
        let last_open = Arc::new(AtomicBool::new(false));
        let signal = Flaps {
            seed,
            last_open: last_open.clone(),
        };
        let (upstream, shared, control) = parts(Box::new(signal), &node, last_open);
        let mut poller = Poller::new(upstream.clone(), shared.clone());
        let mut pilot = Autopilot::new(upstream.clone(), shared, control);
        for i in 0..200 {
            if i % 10 == 0 {
                poller.poll_once();
            }
            pilot.tick();
            std::thread::sleep(Duration::from_micros(1500));
        }
        let v = upstream.violations.lock().unwrap();
        assert!(v.is_empty(), "seed {seed}: {v:?}");
        total += upstream.calls.load(Ordering::SeqCst);
    }
    // Calls were made while it read open: the check had something to check.
    assert!(total > 0, "no upgrade call at all in 20 runs");
}
