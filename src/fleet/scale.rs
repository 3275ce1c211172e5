//! The fleet budget at scale, simulated (issue 24): N copies of the real `Fleet` (its budget
//! resolution, the slot watch's copy, turns in line, `take`, `maintain`, renewals, releases and
//! expiry by local observation) against an in-memory apiserver with real compare-and-swap and
//! delayed watch delivery (`Model`), on a virtual clock. No
//! processes, no sockets, no sleeping: one thread steps the nodes in the order of their next
//! wake-up. What a node does between the fleet's calls (its upgrade taking a while, failing,
//! the node dying) is the scenario's; what it asks of the apiserver is the real code's.
//!
//! Used by the tests below (small fleets, asserting the budget) and by
//! `cargo bench --bench fleet_scale` (the table of docs/performance.md).

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashSet, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::cache::{Change, SlotCache};
use super::lease::{Lease, LeaseError, Leases};
use super::run::Fleet;
use super::store::Versioned;
use super::view::{DaemonSetInfo, SlotView};

thread_local! {
    /// The virtual time elapsed since the simulation's start, on this thread.
    static NOW: Cell<Duration> = const { Cell::new(Duration::ZERO) };
}

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// The monotonic clock every simulated node reads (`Fleet::with_clock`).
pub fn virtual_now() -> Instant {
    base() + NOW.with(Cell::get)
}

fn set_now(ms: u64) {
    NOW.with(|n| n.set(Duration::from_millis(ms)));
}

/// A small seeded PRNG (SplitMix64): the same seed, the same run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Lognormal with the given median and shape `sigma` (Box–Muller): a tail to the right.
    pub fn lognormal(&mut self, median: Duration, sigma: f64) -> Duration {
        let u1 = self.unit().max(f64::MIN_POSITIVE);
        let u2 = self.unit();
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        median.mul_f64((sigma * z).exp())
    }
}

/// The apiserver in memory: the Lease store of `fleet::store` with its compare-and-swap, a
/// count of every request by virtual second, and the slot watch: each watching node's cache is
/// sent every change of a slot Lease after a modelled delay. Nodes are dealt round robin into
/// `DELAYS.len()` delay classes; the nodes of one class see the same stream at the same moments,
/// so they share one cache (what a node keeps of its own, its rank and its held slot, is its
/// own `Fleet`'s). A watch started counts as a request (a LIST and a WATCH: two), and so does
/// each renewal of it after `kube::WATCH_SECONDS`; the events it carries do not.
#[derive(Default)]
pub struct Model {
    store: RefCell<Versioned>,
    /// Requests by virtual second.
    pub per_second: RefCell<BTreeMap<u64, u64>>,
    pub lists: Cell<u64>,
    pub gets: Cell<u64>,
    pub writes: Cell<u64>,
    pub conflicts: Cell<u64>,
    /// Watches started or renewed.
    pub watches: Cell<u64>,
    /// Slot Leases with a holder now.
    pub held: Cell<u64>,
    /// One cache per delay class, with the changes on their way to it (due time, Lease).
    #[allow(clippy::type_complexity)]
    classes: RefCell<Vec<(Arc<SlotCache>, VecDeque<(u64, Lease)>)>>,
    dealt: Cell<usize>,
}

/// The watch delivery delays of the classes, in virtual ms: what a change takes from the
/// apiserver's answer to the writer to a watching node's cache.
pub const DELAYS: [u64; 8] = [40, 60, 80, 100, 130, 160, 200, 250];

fn now_ms() -> u64 {
    NOW.with(Cell::get).as_millis() as u64
}

impl Model {
    fn count(&self, kind: &Cell<u64>) {
        kind.set(kind.get() + 1);
        let sec = NOW.with(Cell::get).as_secs();
        *self.per_second.borrow_mut().entry(sec).or_default() += 1;
    }
    fn conflict(&self) -> LeaseError {
        self.conflicts.set(self.conflicts.get() + 1);
        LeaseError::Conflict
    }
    /// The Leases held now, by holder.
    pub fn holders(&self) -> Vec<String> {
        let g = self.store.borrow();
        g.leases.values().filter_map(|l| l.holder.clone()).collect()
    }
    /// A watch renewed after its timeout: one request.
    pub fn renew_watch(&self) {
        self.count(&self.watches);
    }
    /// Counts the held Leases, then sends a stored Lease on its way to every class.
    fn changed(&self, was_held: bool, l: &Lease) {
        let held = self.held.get() + u64::from(l.holder.is_some());
        self.held.set(held - u64::from(was_held));
        let now = now_ms();
        for (i, (_, q)) in self.classes.borrow_mut().iter_mut().enumerate() {
            q.push_back((now + DELAYS[i], l.clone()));
        }
    }
    /// Delivers every change due by now.
    pub fn deliver(&self) {
        let now = now_ms();
        for (cache, q) in self.classes.borrow_mut().iter_mut() {
            while q.front().is_some_and(|(at, _)| *at <= now) {
                let (_, l) = q.pop_front().expect("just seen");
                cache.apply(Change::Upsert(l));
            }
        }
    }
}

impl Leases for Model {
    fn list(&self, ns: &str) -> Result<Vec<Lease>, LeaseError> {
        self.count(&self.lists);
        Ok(self.store.borrow().list(ns, None))
    }
    fn get(&self, ns: &str, name: &str) -> Result<Option<Lease>, LeaseError> {
        self.count(&self.gets);
        Ok(self.store.borrow().get(ns, name))
    }
    fn create(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        self.count(&self.writes);
        let stored = self
            .store
            .borrow_mut()
            .create(lease)
            .map_err(|_| self.conflict())?;
        self.changed(false, &stored);
        Ok(stored)
    }
    fn update(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        self.count(&self.writes);
        let was_held = (self.store.borrow())
            .get(&lease.namespace, &lease.name)
            .is_some_and(|l| l.holder.is_some());
        let stored = self
            .store
            .borrow_mut()
            .update(lease)
            .map_err(|_| self.conflict())?;
        self.changed(was_held, &stored);
        Ok(stored)
    }
    fn watch_slots(
        &self,
        ns: &str,
        label: &str,
        clock: fn() -> Instant,
    ) -> Result<Arc<SlotCache>, LeaseError> {
        self.count(&self.lists);
        self.count(&self.watches);
        let mut classes = self.classes.borrow_mut();
        if classes.is_empty() {
            // The simulation has one DaemonSet: one stream, delivered at each class's pace.
            let g = self.store.borrow();
            for _ in DELAYS {
                let c = Arc::new(SlotCache::new(clock));
                c.replace(g.list(ns, Some(label)), g.rv.to_string());
                classes.push((c, VecDeque::new()));
            }
        }
        let i = self.dealt.get() % DELAYS.len();
        self.dealt.set(self.dealt.get() + 1);
        Ok(classes[i].0.clone())
    }
}

/// One run's fleet and faults.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub nodes: u32,
    /// `apps.openyurt.io/max-unavailable`, e.g. `10%`.
    pub max_unavailable: String,
    /// The median upgrade time (image pull, restart, Ready for minReadySeconds).
    pub median_upgrade: Duration,
    /// The lognormal's shape: 0.5 gives a p99 about 3.2 times the median.
    pub sigma: f64,
    /// Fraction of nodes NotReady for the whole rollout: their agent does not run.
    pub not_ready: f64,
    /// Fraction of nodes that die during their upgrade, holding a slot they never renew.
    pub die: f64,
    /// Wall clocks are off by up to this, either way (uniform per node).
    pub skew: Duration,
    /// Every upgrade fails (the new pod never gets Ready): the slots stay held.
    pub broken: bool,
    /// `policy.ready_timeout`: the lease is this plus `LEASE_MARGIN`.
    pub ready_timeout: Duration,
    pub seed: u64,
    /// Virtual time after which the run stops (a broken release never ends).
    pub horizon: Duration,
}

impl Scenario {
    /// N nodes, budget 10 %, median upgrade 60 s, with the faults of issue 24.
    pub fn faulty(nodes: u32, seed: u64) -> Scenario {
        Scenario {
            nodes,
            max_unavailable: "10%".into(),
            median_upgrade: Duration::from_secs(60),
            sigma: 0.5,
            not_ready: 0.01,
            die: 0.005,
            skew: Duration::from_secs(300),
            broken: false,
            ready_timeout: Duration::from_secs(300),
            seed,
            horizon: Duration::from_secs(6 * 3600),
        }
    }
}

/// What a run came to.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub nodes: u32,
    pub budget: u32,
    /// Nodes that ran an agent (not NotReady).
    pub live: u32,
    pub upgraded: u32,
    /// Upgrades started (a slot taken).
    pub started: u32,
    pub died: u32,
    /// The most nodes down at once through the rollout: upgrading, failed, or dead mid-upgrade
    /// while its slot was not yet expired to the others.
    pub peak_down: u32,
    /// The most slots held at once in the store.
    pub peak_held: u32,
    /// From the start to the last upgrade done (the horizon for a broken release).
    pub rollout: Duration,
    /// ceil(nodes to upgrade / budget) × the median upgrade time.
    pub ideal: Duration,
    /// What no scheduler can beat with this run's upgrade times: their sum over the budget,
    /// or the longest one.
    pub bound: Duration,
    /// The same upgrades run back to back on `budget` slots in node order, with no delay of
    /// any kind between one ending and the next starting: what a perfect slot handover gives.
    pub greedy: Duration,
    pub requests: u64,
    pub lists: u64,
    /// Slot watches started or renewed.
    pub watches: u64,
    pub peak_rps: u64,
    pub mean_rps: f64,
    pub conflicts: u64,
    pub taken: u64,
}

impl Report {
    pub fn per_upgraded(&self) -> f64 {
        self.requests as f64 / f64::from(self.upgraded.max(1))
    }
    pub fn conflicts_per_take(&self) -> f64 {
        self.conflicts as f64 / self.taken.max(1) as f64
    }
    pub fn ratio(&self) -> f64 {
        self.rollout.as_secs_f64() / self.ideal.as_secs_f64().max(1e-9)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    NotReady,
    Waiting,
    Upgrading {
        done_ms: u64,
    },
    Failed,
    /// Died holding a slot; the slot is held in the store until others see it expire.
    Dead,
    Done,
}

struct Node {
    name: String,
    fleet: Fleet,
    phase: Phase,
    /// This node's wall clock minus true time, in ms.
    skew_ms: i64,
    dies: bool,
    upgrade: Duration,
}

const UID: &str = "ds-uid";
/// The revision being rolled out.
const REVISION: &str = "rev-2";
const NAMESPACE: &str = "yurt-ota";
/// The wall clock at the simulation's start (2026-12-06).
const EPOCH_S: u64 = 1_796_515_200;

fn wall(t_ms: u64, skew_ms: i64) -> SystemTime {
    let ms = (EPOCH_S * 1000 + t_ms) as i64 + skew_ms;
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

/// Runs `s` to its end: every live node upgraded, or the horizon.
pub fn run(s: &Scenario) -> Report {
    set_now(0);
    let mut rng = Rng::new(s.seed);
    let model = Model::default();
    let info = DaemonSetInfo {
        uid: UID.into(),
        namespace: "edge".into(),
        name: "app".into(),
        strategy: Some("AdvancedRollingUpdate".into()),
        max_unavailable: Some(s.max_unavailable.clone()),
        desired_number_scheduled: s.nodes,
        min_ready_seconds: 0,
    };
    let mut nodes: Vec<Node> = (0..s.nodes)
        .map(|i| {
            let fleet = Fleet::new(s.ready_timeout)
                .in_namespace(NAMESPACE)
                .with_clock(virtual_now);
            fleet.refresh(vec![info.clone()]);
            let not_ready = rng.unit() < s.not_ready;
            let skew = s.skew.as_millis() as i64;
            Node {
                name: format!("node-{i:05}"),
                fleet,
                phase: if not_ready {
                    Phase::NotReady
                } else {
                    Phase::Waiting
                },
                skew_ms: if skew == 0 {
                    0
                } else {
                    (rng.next_u64() % (2 * skew as u64 + 1)) as i64 - skew
                },
                dies: rng.unit() < s.die,
                upgrade: rng.lognormal(s.median_upgrade, s.sigma),
            }
        })
        .collect();
    let budget = nodes[0]
        .fleet
        .view()
        .get(UID)
        .and_then(|v| v.budget)
        .unwrap_or(1);
    let live = nodes.iter().filter(|n| n.phase != Phase::NotReady).count() as u32;
    // Every agent starts within 10 s of the new revision (its next pod list).
    let mut wake: Vec<u64> = vec![u64::MAX; nodes.len()];
    let mut queue: BinaryHeap<Reverse<(u64, u32)>> = BinaryHeap::new();
    for (i, n) in nodes.iter().enumerate() {
        if n.phase == Phase::Waiting {
            wake[i] = rng.next_u64() % 10_000;
            queue.push(Reverse((wake[i], i as u32)));
        }
    }
    let horizon_ms = s.horizon.as_millis() as u64;
    let mut report = Report {
        nodes: s.nodes,
        budget,
        live,
        ..Report::default()
    };
    let mut down: u32 = 0;
    let mut dead_holding: Vec<(u64, String)> = Vec::new();
    let mut last_done = 0u64;
    let empty = HashSet::new();
    let needed: HashSet<String> = [UID.to_owned()].into();
    let mut resumed = vec![false; nodes.len()];
    let mut renewals: BinaryHeap<Reverse<(u64, u32)>> = BinaryHeap::new();
    let mut renewing = vec![false; nodes.len()];
    let renew_ms = super::kube::WATCH_SECONDS * 1000;
    while let Some(Reverse((t, i))) = queue.pop() {
        let i = i as usize;
        if t != wake[i] {
            continue; // superseded
        }
        if t > horizon_ms {
            break;
        }
        set_now(t);
        model.deliver();
        // Each watch is renewed after its timeout while the node still waits on it.
        while renewals.peek().is_some_and(|Reverse((at, _))| *at <= t) {
            let Reverse((at, j)) = renewals.pop().expect("just seen");
            if nodes[j as usize].fleet.watching(UID) {
                model.renew_watch();
                renewals.push(Reverse((at + renew_ms, j)));
            } else {
                renewing[j as usize] = false;
            }
        }
        let n = &mut nodes[i];
        let now = wall(t, n.skew_ms);
        let io = Some((&model as &dyn Leases, n.name.as_str()));
        let next = match n.phase {
            Phase::Waiting => {
                if !resumed[i] {
                    // The first tick after a start looks for a slot held from before.
                    resumed[i] = true;
                    n.fleet.maintain(io, Some(&empty), now);
                }
                match n.fleet.take(io, UID, Some(REVISION), now) {
                    Ok(()) => {
                        report.started += 1;
                        report.taken += 1;
                        down += 1;
                        if n.dies {
                            n.phase = Phase::Dead;
                            report.died += 1;
                            // Down for good; counted as down while its slot still stands.
                            let ttl = n.fleet.lease_duration() + super::run::SKEW;
                            dead_holding.push((t + ttl.as_millis() as u64, n.name.clone()));
                            None
                        } else {
                            n.phase = Phase::Upgrading {
                                done_ms: t + n.upgrade.as_millis() as u64,
                            };
                            Some(t + 1000)
                        }
                    }
                    Err(_) => {
                        let retry = match n.fleet.view().get(UID).map(|v| v.slots.clone()) {
                            Some(SlotView::Full { retry_ms, .. })
                            | Some(SlotView::Unavailable { retry_ms, .. }) => retry_ms,
                            _ => crate::state::unix_ms(now) + 2000,
                        };
                        let wait = retry.saturating_sub(crate::state::unix_ms(now)).max(1);
                        Some(t + wait)
                    }
                }
            }
            Phase::Upgrading { done_ms } if t >= done_ms && !s.broken => {
                // Ready: the next tick releases the slot (the pod is available).
                n.fleet.maintain(io, Some(&empty), now);
                n.phase = Phase::Done;
                report.upgraded += 1;
                down -= 1;
                last_done = t;
                None
            }
            Phase::Upgrading { done_ms } if t >= done_ms => {
                n.fleet.note_failed(UID, Some("broken"));
                n.phase = Phase::Failed;
                n.fleet.maintain(io, Some(&needed), now);
                Some(t + renewal_ms(&n.fleet))
            }
            Phase::Upgrading { done_ms } => {
                n.fleet.maintain(io, Some(&needed), now);
                Some(done_ms.min(t + renewal_ms(&n.fleet)))
            }
            Phase::Failed => {
                n.fleet.maintain(io, Some(&needed), now);
                Some(t + renewal_ms(&n.fleet))
            }
            Phase::NotReady | Phase::Dead | Phase::Done => None,
        };
        if !renewing[i] && n.fleet.watching(UID) {
            renewing[i] = true;
            renewals.push(Reverse((t + renew_ms, i as u32)));
        }
        if let Some(next) = next {
            wake[i] = next;
            queue.push(Reverse((next, i as u32)));
        } else {
            wake[i] = u64::MAX;
        }
        // A dead node's slot stops counting once it has been free to take for long enough
        // (others see it expired); it is then its DaemonSet controller's unavailable node.
        if dead_holding.iter().any(|(until, _)| *until <= t) {
            let holders: HashSet<String> = model.holders().into_iter().collect();
            dead_holding.retain(|(until, name)| {
                let keep = *until > t || holders.contains(name);
                if !keep {
                    down -= 1;
                }
                keep
            });
        }
        report.peak_down = report.peak_down.max(down);
        report.peak_held = report.peak_held.max(model.held.get() as u32);
        if !s.broken && report.upgraded + report.died == live {
            break;
        }
    }
    let end = if s.broken {
        horizon_ms
    } else {
        last_done.max(1)
    };
    let todo = live - report.died;
    report.rollout = Duration::from_millis(end);
    report.ideal = s.median_upgrade * todo.div_ceil(budget);
    let work: Vec<Duration> = nodes
        .iter()
        .filter(|n| n.phase == Phase::Done)
        .map(|n| n.upgrade)
        .collect();
    let sum: Duration = work.iter().sum();
    report.bound = (sum / budget).max(work.iter().copied().max().unwrap_or_default());
    report.greedy = greedy(&work, budget);
    let secs = model.per_second.borrow();
    report.requests = secs.values().sum();
    report.peak_rps = secs.values().copied().max().unwrap_or(0);
    report.mean_rps = report.requests as f64 / report.rollout.as_secs_f64().max(1.0);
    report.lists = model.lists.get();
    report.watches = model.watches.get();
    report.conflicts = model.conflicts.get();
    report
}

/// The makespan of `work` on `slots` slots, each job taken by the first slot free.
fn greedy(work: &[Duration], slots: u32) -> Duration {
    let mut free: BinaryHeap<Reverse<Duration>> =
        (0..slots.max(1)).map(|_| Reverse(Duration::ZERO)).collect();
    let mut end = Duration::ZERO;
    for w in work {
        let Reverse(at) = free.pop().expect("a slot");
        end = end.max(at + *w);
        free.push(Reverse(at + *w));
    }
    end
}

fn renewal_ms(f: &Fleet) -> u64 {
    f.next_renewal()
        .unwrap_or(f.lease_duration() / 3)
        .as_millis()
        .max(1) as u64
}

/// The table's header and one row per report, as docs/performance.md shows them.
pub fn table(reports: &[Report]) -> String {
    let mut out = String::from(
        "| nodes | budget | peak down | rollout / ideal | rollout / bound | rollout / perfect handover | req/s peak | req/s mean | req per upgraded node | LISTs | watches | 409 per take |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in reports {
        out += &format!(
            "| {} | {} | {} | {:.0} s / {:.0} s = {:.2}× | {:.2}× | {:.2}× | {} | {:.1} | {:.1} | {} | {} | {:.2} |\n",
            r.nodes,
            r.budget,
            r.peak_down,
            r.rollout.as_secs_f64(),
            r.ideal.as_secs_f64(),
            r.ratio(),
            r.rollout.as_secs_f64() / r.bound.as_secs_f64().max(1e-9),
            r.rollout.as_secs_f64() / r.greedy.as_secs_f64().max(1e-9),
            r.peak_rps,
            r.mean_rps,
            r.per_upgraded(),
            r.lists,
            r.watches,
            r.conflicts_per_take(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hundred_nodes_with_faults_never_exceed_the_budget() {
        for seed in 1..=3 {
            let r = run(&Scenario::faulty(100, seed));
            assert_eq!(r.budget, 10);
            assert!(r.peak_down <= r.budget, "{r:?}");
            assert!(r.peak_held <= r.budget, "{r:?}");
            assert_eq!(r.upgraded + r.died, r.live, "{r:?}");
            assert!(r.upgraded > 0);
            assert!(r.conflicts_per_take() <= 2.0, "{r:?}");
        }
    }

    /// Issue 24: waiting costs no request per second; a take costs few 409s.
    #[test]
    fn waiting_costs_a_handful_of_requests_per_upgrade_not_one_per_second() {
        for seed in 1..=3 {
            let r = run(&Scenario::faulty(100, seed));
            assert!(r.per_upgraded() <= 10.0, "{r:?}");
            // A LIST for each node's watch and one after its start: none per second of waiting.
            assert!(r.lists <= 2 * u64::from(r.nodes), "{r:?}");
            assert!(r.conflicts_per_take() <= 1.0, "{r:?}");
        }
    }

    #[test]
    fn a_broken_release_stops_at_the_budget() {
        let s = Scenario {
            broken: true,
            horizon: Duration::from_secs(1800),
            ..Scenario::faulty(100, 7)
        };
        let r = run(&s);
        assert_eq!(r.upgraded, 0, "{r:?}");
        // A node that died holding a slot frees it once expired: one more may start for it.
        assert_eq!(r.started, r.budget + r.died, "{r:?}");
        assert_eq!(r.peak_held, r.budget, "{r:?}");
    }

    #[test]
    fn clock_skew_alone_frees_no_live_slot() {
        let s = Scenario {
            skew: Duration::from_secs(3600),
            die: 0.0,
            ..Scenario::faulty(100, 11)
        };
        let r = run(&s);
        assert!(r.peak_held <= r.budget && r.peak_down <= r.budget, "{r:?}");
        assert_eq!(r.upgraded, r.live, "{r:?}");
    }

    #[test]
    fn the_lognormal_has_its_median() {
        let mut rng = Rng::new(3);
        let mut v: Vec<Duration> = (0..10_001)
            .map(|_| rng.lognormal(Duration::from_secs(60), 0.5))
            .collect();
        v.sort();
        let median = v[5000].as_secs_f64();
        assert!((55.0..65.0).contains(&median), "{median}");
        assert!(v[9900].as_secs_f64() > 2.0 * median, "a tail to the right");
    }
}
