//! The decision (SPEC sections 5 and 6), as a pure function: from the pods, the gate readings,
//! the persisted state, "now" and the settings, to the actions to take and, for every pod that
//! needs upgrade, why it is not upgraded yet. The loop in `agent` performs the actions.

use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use crate::config::{Mode, PolicySettings};
use crate::gate::{GateState, Purpose};
use crate::pod::{ImageState, Pod};
use crate::state::{from_unix_ms, Hold, State};

/// A replacement pod whose containers restarted this often is crash-looping.
pub const CRASH_LOOP_RESTARTS: u32 = 3;

/// The pod an action is about, with what identifies its replacement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub owner_uid: String,
}

impl Target {
    pub fn of(p: &Pod) -> Target {
        Target {
            namespace: p.metadata.namespace.clone(),
            name: p.metadata.name.clone(),
            uid: p.metadata.uid.clone(),
            owner_uid: p.owner().map(|o| o.uid.clone()).unwrap_or_default(),
        }
    }

    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Take a fleet slot of DaemonSet `slot` (its uid) if it has a budget, re-check the gates,
    /// then send the upgrade call.
    Upgrade {
        pod: Target,
        force: bool,
        slot: Option<String>,
    },
    /// Ask for the image pre-pull; `pull_key` says which revision, so it is asked once.
    Pull {
        pod: Target,
        pull_key: String,
    },
    /// The replacement is Ready and up to date.
    Finished {
        uid: String,
        replacement: String,
    },
    /// Not Ready in time, or crash-looping: trip the breaker.
    Failed {
        uid: String,
        reason: String,
    },
    Dequeue {
        uid: String,
        reason: String,
    },
    /// A parked pod's conditions changed: it may be tried again.
    Unpark {
        uid: String,
    },
    /// "Needs upgrade since" (`policy.max_defer`): start tracking these pods `(uid,
    /// namespace/name)` now, and forget these uids (no longer needing upgrade, or gone).
    TrackOutdated {
        add: Vec<(String, String)>,
        forget: Vec<String>,
    },
    /// A pod's deferral ran out (`policy.max_defer`): log it and record it, once.
    DeferralExpired {
        uid: String,
        key: String,
        since_ms: u64,
    },
}

/// Why a pod that needs upgrade is not being upgraded now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    Manual,
    NotIncluded,
    Excluded,
    InFlight,
    Parked(String),
    Backoff {
        retry_in: Duration,
        attempts: u32,
    },
    Breaker(String),
    PullGatesClosed(Vec<String>),
    /// Pre-pull asked for; waiting for `PodImageReady=True`.
    ImagePulling,
    /// `PodImageReady` exists and is not True for the current revision; YurtHub would refuse.
    ImageNotReady(String),
    /// Gates closed or holds active: `hold:NAME` for holds.
    Blocked(Vec<String>),
    NotStable(Duration),
    MaxConcurrent(u32),
    /// The state file cannot be written: no upgrade starts without its intent persisted.
    StateUnavailable(String),
    /// The DaemonSet's `apps.openyurt.io/update-strategy` is no value OpenYurt knows.
    UnknownStrategy(String),
    /// Every slot of the fleet budget is held by other nodes, named here.
    FleetBudget {
        budget: u32,
        holders: Vec<String>,
    },
    /// The fleet's slots cannot be read or taken (fail closed).
    FleetUnavailable(String),
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = |d: &Duration| d.as_secs_f64().ceil() as u64;
        match self {
            Why::Manual => write!(
                f,
                "manual mode: upgraded when an app or operator calls POST .../upgrade"
            ),
            Why::NotIncluded => write!(f, "not matched by policy.include"),
            Why::Excluded => write!(f, "matched by policy.exclude"),
            Why::InFlight => write!(
                f,
                "upgrade in flight: waiting for the replacement to be Ready"
            ),
            Why::Parked(d) => write!(
                f,
                "upstream refused it ({d}); waiting until its conditions change"
            ),
            Why::Backoff { retry_in, attempts } => write!(
                f,
                "upstream failed {attempts} time(s); retrying in {}s",
                secs(retry_in)
            ),
            Why::Breaker(r) => write!(
                f,
                "circuit breaker tripped ({r}); POST /v1/breaker/reset to resume"
            ),
            Why::PullGatesClosed(g) => write!(f, "image pre-pull waits for gate {}", g.join(", ")),
            Why::ImagePulling => write!(
                f,
                "image pre-pull requested; waiting for PodImageReady=True"
            ),
            Why::ImageNotReady(m) => write!(
                f,
                "image not ready ({m}); YurtHub refuses the upgrade until PodImageReady=True"
            ),
            Why::Blocked(b) => write!(f, "blocked by {}", b.join(", ")),
            Why::NotStable(d) => write!(
                f,
                "gates open but not yet stable for policy.stable_for: {}s left",
                secs(d)
            ),
            Why::MaxConcurrent(n) => write!(f, "policy.max_concurrent ({n}) upgrades in flight"),
            Why::StateUnavailable(e) => write!(
                f,
                "state cannot be written ({e}); upgrades pause until it can"
            ),
            Why::UnknownStrategy(v) => write!(
                f,
                "its DaemonSet's {} is {v:?}, no strategy OpenYurt knows; left alone",
                crate::fleet::strategy::STRATEGY_ANNOTATION
            ),
            Why::FleetBudget { budget, holders } => write!(
                f,
                "fleet budget: {}/{budget} slots held by {}",
                holders.len(),
                holders.join(", ")
            ),
            Why::FleetUnavailable(e) => write!(f, "fleet budget: {e}"),
        }
    }
}

impl Why {
    /// A stable word for scripts and dashboards.
    pub fn word(&self) -> &'static str {
        match self {
            Why::Manual => "manual",
            Why::NotIncluded => "not_included",
            Why::Excluded => "excluded",
            Why::InFlight => "in_flight",
            Why::Parked(_) => "parked",
            Why::Backoff { .. } => "backoff",
            Why::Breaker(_) => "breaker",
            Why::PullGatesClosed(_) => "pull_gate_closed",
            Why::ImagePulling => "image_pulling",
            Why::ImageNotReady(_) => "image_not_ready",
            Why::Blocked(_) => "blocked",
            Why::NotStable(_) => "not_stable",
            Why::MaxConcurrent(_) => "max_concurrent",
            Why::StateUnavailable(_) => "state_unavailable",
            Why::UnknownStrategy(_) => "unknown_strategy",
            Why::FleetBudget { .. } => "fleet_budget",
            Why::FleetUnavailable(_) => "fleet_unavailable",
        }
    }
}

/// What blocks an upgrade now, by the last readings (the moment of action re-reads).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Blockers {
    /// Closed gates, and `hold:NAME` for active holds.
    pub names: Vec<String>,
    /// All open, but not yet for `stable_for`: how long until they are.
    pub stable_in: Option<Duration>,
    /// With `stable_in`: the gates open for less than `stable_for`.
    pub settling: Vec<String>,
}

impl Blockers {
    pub fn clear(&self) -> bool {
        self.names.is_empty() && self.stable_in.is_none()
    }
}

/// The upgrade gates and holds (SPEC section 5). With `force`, only safety gates count, and
/// holds do not.
pub fn blockers(
    gates: &[GateState],
    holds: &[&Hold],
    force: bool,
    now: Instant,
    stable_for: Duration,
) -> Blockers {
    let relevant = || {
        gates
            .iter()
            .filter(move |g| g.applies(Purpose::Upgrade) && (g.safety || !force))
    };
    let mut names: Vec<String> = relevant()
        .filter(|g| !g.open)
        .map(|g| g.name.clone())
        .collect();
    if !force {
        names.extend(holds.iter().map(|h| format!("hold:{}", h.name)));
    }
    let (stable_in, settling) = if names.is_empty() {
        let young = |g: &&GateState| g.open_for(now).is_some_and(|d| d < stable_for);
        let stable_in = relevant()
            .filter_map(|g| g.open_for(now))
            .min()
            .and_then(|open_for| stable_for.checked_sub(open_for))
            .filter(|left| !left.is_zero());
        (
            stable_in,
            relevant().filter(young).map(|g| g.name.clone()).collect(),
        )
    } else {
        (None, Vec::new())
    };
    Blockers {
        names,
        stable_in,
        settling,
    }
}

/// When the blockers may clear, where every one of them can be estimated: a window's next
/// opening, a hold's expiry, the rest of `stable_for`. For `Retry-After`.
pub fn retry_after(
    gates: &[GateState],
    holds: &[&Hold],
    b: &Blockers,
    now: SystemTime,
    stable_for: Duration,
) -> Option<Duration> {
    if let Some(left) = b.stable_in {
        return Some(left);
    }
    let mut longest = Duration::ZERO;
    for name in &b.names {
        let until = if let Some(hold) = name.strip_prefix("hold:") {
            let h = holds.iter().find(|h| h.name == hold)?;
            from_unix_ms(h.expires_ms).duration_since(now).ok()?
        } else {
            let g = gates.iter().find(|g| &g.name == name)?;
            g.next_open?.duration_since(now).ok()? + stable_for
        };
        longest = longest.max(until);
    }
    (!longest.is_zero()).then_some(longest)
}

/// Whether the pod `uid` has needed upgrade for `policy.max_defer` (SPEC 6b): then it is
/// treated as forced, by the API as by automatic mode.
pub fn deferral_over(state: &State, uid: &str, now_ms: u64, max_defer: Option<Duration>) -> bool {
    max_defer.is_some_and(|max| {
        state
            .outdated
            .iter()
            .any(|o| o.uid == uid && now_ms.saturating_sub(o.since_ms) >= max.as_millis() as u64)
    })
}

/// `namespace/name-prefix*` patterns (validated by config): each side exact, or a prefix when it
/// ends in `*`.
pub fn matches(pattern: &str, p: &Pod) -> bool {
    let Some((ns, name)) = pattern.split_once('/') else {
        return false;
    };
    let side = |pat: &str, s: &str| match pat.strip_suffix('*') {
        Some(prefix) => s.starts_with(prefix),
        None => pat == s,
    };
    side(ns, &p.metadata.namespace) && side(name, &p.metadata.name)
}

/// Identifies a pod's conditions, to tell when a parked pod's situation changed. FNV-1a, so the
/// value persisted in the state file means the same in the next version.
pub fn fingerprint(p: &Pod) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for c in &p.status.conditions {
        for part in [&c.kind, &c.status, &c.reason, &c.message] {
            for b in part.bytes().chain([0xff]) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
    }
    h
}

/// The pre-pull asked for a pod at a revision: asked once.
pub fn pull_key(p: &Pod) -> String {
    format!(
        "{}@{}",
        p.metadata.uid,
        p.target_revision().unwrap_or_default()
    )
}

pub struct Inputs<'a> {
    /// `None` before the first successful poll.
    pub pods: Option<&'a [Pod]>,
    pub gates: &'a [GateState],
    pub state: &'a State,
    pub now: Instant,
    pub now_ms: u64,
    pub settings: &'a PolicySettings,
    /// False once the upstream answered 404 to an imagepull (YurtHub before v1.7).
    pub imagepull_supported: bool,
    /// `pull_key`s already asked for.
    pub pulls_requested: &'a [String],
    /// Why the state cannot be written, when it cannot (`Store::unavailable`): upgrades pause.
    pub state_unavailable: Option<&'a str>,
    /// The DaemonSets' strategies, budgets and slots, by uid (SPEC 6b); empty with YurtHub.
    pub fleet: &'a crate::fleet::FleetView,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    pub actions: Vec<Action>,
    /// `(namespace/name, why, queued)` for every pod needing upgrade that is not acted on.
    pub waiting: Vec<(String, Why, bool)>,
    /// The upgrade gates without force, for status.
    pub blockers: Blockers,
    /// When this decision may change with no new input (no gate event, snapshot or API call):
    /// the gates turn stable, a hold expires, a backoff ends, an upgrade reaches
    /// `ready_timeout`. `None`: only new input changes it. The loop sleeps until then.
    pub next_look: Option<Duration>,
}

/// Linear in the pods: every lookup by uid goes through a map built once per call (a node list
/// of 20,000 pods made the nested scans take seconds).
pub fn decide(i: &Inputs) -> Decision {
    let mut d = decide_now(i);
    d.next_look = next_look(i, &d);
    d
}

/// The earliest moment at which `decide` on the same inputs would answer differently.
fn next_look(i: &Inputs, d: &Decision) -> Option<Duration> {
    let after = |ms: u64| (ms > i.now_ms).then(|| Duration::from_millis(ms - i.now_ms));
    let ready = i.settings.ready_timeout.as_millis() as u64;
    let holds = i.state.holds.iter().filter_map(|h| after(h.expires_ms));
    let backoff = i.state.backoff.iter().filter_map(|b| after(b.retry_ms));
    // Failed once strictly past ready_timeout: just after it.
    let timeouts = (i.state.in_flight.iter()).filter_map(|f| after(f.started_ms + ready + 1));
    // Per pod: a forced pod (queued with force, or past max_defer) has its own stability,
    // counted over the safety gates only.
    let waiting = d.waiting.iter().filter_map(|(_, why, _)| match why {
        Why::NotStable(left) => Some(*left),
        Why::Backoff { retry_in, .. } => Some(*retry_in),
        _ => None,
    });
    // The moment a pod's deferral runs out (`policy.max_defer`): holds stop blocking it.
    let deferrals = i.settings.max_defer.into_iter().flat_map(|max| {
        let max = max.as_millis() as u64;
        (i.state.outdated.iter()).filter_map(move |o| after(o.since_ms.saturating_add(max)))
    });
    // A fleet slot tried again.
    let slots = i.fleet.values().filter_map(|ds| match &ds.slots {
        crate::fleet::SlotView::Full { retry_ms, .. }
        | crate::fleet::SlotView::Unavailable { retry_ms, .. } => after(*retry_ms),
        _ => None,
    });
    (d.blockers.stable_in.into_iter())
        .chain(holds)
        .chain(backoff)
        .chain(timeouts)
        .chain(waiting)
        .chain(deferrals)
        .chain(slots)
        .min()
}

fn decide_now(i: &Inputs) -> Decision {
    use std::collections::{HashMap, HashSet};
    let mut d = Decision::default();
    let holds: Vec<&Hold> = i.state.active_holds(i.now_ms).collect();
    let s = i.settings;
    d.blockers = blockers(i.gates, &holds, false, i.now, s.stable_for);
    let Some(pods) = i.pods else {
        return d;
    };

    // Upgrades in flight: finished, failed, or still going. One entry per uid, even from a state
    // file written by an older version.
    let mut in_flight_uids: HashSet<&str> = HashSet::new();
    let mut ended = 0u32;
    for f in &i.state.in_flight {
        if !in_flight_uids.insert(&f.uid) {
            continue;
        }
        let old = crate::pod::Upgraded {
            uid: &f.uid,
            owner_uid: &f.owner_uid,
            name: &f.name,
        };
        if let Some(new) = crate::pod::replacement(pods, old) {
            d.actions.push(Action::Finished {
                uid: f.uid.clone(),
                replacement: new.key(),
            });
            ended += 1;
            continue;
        }
        let looping = pods
            .iter()
            .find(|p| old.succeeded_by(p) && p.restarts() >= CRASH_LOOP_RESTARTS);
        if let Some(p) = looping {
            d.actions.push(Action::Failed {
                uid: f.uid.clone(),
                reason: format!("replacement {} restarted {} times", p.key(), p.restarts()),
            });
        } else if i.now_ms.saturating_sub(f.started_ms) > s.ready_timeout.as_millis() as u64 {
            d.actions.push(Action::Failed {
                uid: f.uid.clone(),
                reason: format!(
                    "no Ready replacement for {}/{} within policy.ready_timeout ({})",
                    f.namespace,
                    f.name,
                    crate::config::format_duration(s.ready_timeout)
                ),
            });
        }
    }

    // "Needs upgrade since", per uid: a pod past `max_defer` is treated as forced (SPEC 6b).
    let since: HashMap<&str, &crate::state::Outdated> = i
        .state
        .outdated
        .iter()
        .map(|o| (o.uid.as_str(), o))
        .collect();
    let deferral_over = |p: &Pod| {
        let max = s.max_defer?;
        let o = since.get(p.metadata.uid.as_str())?;
        (i.now_ms.saturating_sub(o.since_ms) >= max.as_millis() as u64).then_some(*o)
    };
    {
        // Tracked only with `max_defer` set: without it nothing reads it, and the state file
        // is not rewritten for it.
        let needing: HashSet<&str> = pods
            .iter()
            .filter(|p| s.max_defer.is_some() && p.needs_upgrade())
            .map(|p| p.metadata.uid.as_str())
            .collect();
        let mut add = Vec::new();
        let mut room = crate::state::MAX_OUTDATED.saturating_sub(since.len());
        let mut added: HashSet<&str> = HashSet::new();
        for p in pods
            .iter()
            .filter(|p| s.max_defer.is_some() && p.needs_upgrade())
        {
            let uid = p.metadata.uid.as_str();
            if since.contains_key(uid) || room == 0 || !added.insert(uid) {
                continue;
            }
            room -= 1;
            add.push((uid.to_owned(), p.key()));
        }
        let forget: Vec<String> = i
            .state
            .outdated
            .iter()
            .filter(|o| !needing.contains(o.uid.as_str()))
            .map(|o| o.uid.clone())
            .collect();
        if !add.is_empty() || !forget.is_empty() {
            d.actions.push(Action::TrackOutdated { add, forget });
        }
        let mut told: HashSet<&str> = HashSet::new();
        for p in pods.iter().filter(|p| p.needs_upgrade()) {
            if let Some(o) = deferral_over(p).filter(|o| !o.expired) {
                if told.insert(&o.uid) {
                    d.actions.push(Action::DeferralExpired {
                        uid: o.uid.clone(),
                        key: p.key(),
                        since_ms: o.since_ms,
                    });
                }
            }
        }
    }

    // The candidates: the queue first (in order asked), then, in auto mode, the rest in stable
    // order.
    // The first pod of each uid (the snapshot already drops duplicates; this holds for any list).
    let mut by_uid: HashMap<&str, &Pod> = HashMap::with_capacity(pods.len());
    for p in pods {
        by_uid.entry(&p.metadata.uid).or_insert(p);
    }
    let queued_uids: HashSet<&str> = i.state.queue.iter().map(|q| q.uid.as_str()).collect();
    let parked: HashMap<&str, &crate::state::Parked> =
        i.state.parked.iter().map(|p| (p.uid.as_str(), p)).collect();
    let backoff: HashMap<&str, &crate::state::Backoff> = i
        .state
        .backoff
        .iter()
        .map(|b| (b.uid.as_str(), b))
        .collect();
    let mut candidates: Vec<(&Pod, Option<bool>)> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for q in &i.state.queue {
        if !seen.insert(&q.uid) {
            continue;
        }
        match by_uid.get(q.uid.as_str()).copied() {
            None => d.actions.push(Action::Dequeue {
                uid: q.uid.clone(),
                reason: "the pod is gone".into(),
            }),
            Some(p) if !p.upgrade_offered() || p.is_deleting() => d.actions.push(Action::Dequeue {
                uid: q.uid.clone(),
                reason: "the pod no longer needs upgrade".into(),
            }),
            Some(p) => candidates.push((p, Some(q.force))),
        }
    }
    let mut outdated: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.needs_upgrade() && !queued_uids.contains(p.metadata.uid.as_str()))
        .filter(|p| seen.insert(&p.metadata.uid))
        .collect();
    outdated.sort_by(|a, b| crate::pod::upgrade_order(a, b));
    let ds_of = |p: &Pod| p.owner().and_then(|o| i.fleet.get(&o.uid));
    for p in outdated {
        // An AdvancedRollingUpdate DaemonSet's pods go as in auto mode (SPEC 6b).
        let rolling = ds_of(p).is_some_and(|ds| {
            ds.strategy == Ok(Some(crate::fleet::Strategy::AdvancedRollingUpdate))
        });
        let why = if let Some(Err(v)) = ds_of(p).map(|ds| &ds.strategy) {
            Some(Why::UnknownStrategy(v.clone()))
        } else if s.mode == Mode::Manual && !rolling {
            Some(Why::Manual)
        } else if !s.include.is_empty() && !s.include.iter().any(|pat| matches(pat, p)) {
            Some(Why::NotIncluded)
        } else if s.exclude.iter().any(|pat| matches(pat, p)) {
            Some(Why::Excluded)
        } else {
            None
        };
        match why {
            Some(why) if !in_flight_uids.contains(p.metadata.uid.as_str()) => {
                d.waiting.push((p.key(), why, false))
            }
            _ => candidates.push((p, None)),
        }
    }

    let pull_blockers: Vec<String> = i
        .gates
        .iter()
        .filter(|g| g.applies(Purpose::Pull) && !g.open)
        .map(|g| g.name.clone())
        .collect();
    // Those that finished just now no longer count. A failure trips the breaker as it is acted
    // on: no automatic upgrade starts beside it.
    let breaker = i
        .state
        .breaker
        .as_ref()
        .map(|b| b.reason.clone())
        .or_else(|| {
            d.actions.iter().find_map(|a| match a {
                Action::Failed { reason, .. } => Some(reason.clone()),
                _ => None,
            })
        });
    let mut in_flight = (in_flight_uids.len() as u32).saturating_sub(ended);
    for (p, queued) in candidates {
        let uid = &p.metadata.uid;
        let force = queued == Some(true) || deferral_over(p).is_some();
        let mut wait = |why: Why| d.waiting.push((p.key(), why, queued.is_some()));
        if in_flight_uids.contains(uid.as_str()) {
            wait(Why::InFlight);
            continue;
        }
        let ds = ds_of(p);
        if let Some(Err(v)) = ds.map(|ds| &ds.strategy) {
            wait(Why::UnknownStrategy(v.clone()));
            continue;
        }
        if let Some(pk) = parked.get(uid.as_str()) {
            if pk.fingerprint == fingerprint(p) {
                wait(Why::Parked(pk.detail.clone()));
                continue;
            }
            d.actions.push(Action::Unpark { uid: uid.clone() });
        }
        if let Some(b) = backoff.get(uid.as_str()) {
            if b.retry_ms > i.now_ms {
                wait(Why::Backoff {
                    retry_in: Duration::from_millis(b.retry_ms - i.now_ms),
                    attempts: b.attempts,
                });
                continue;
            }
        }
        if queued.is_none() {
            if let Some(reason) = &breaker {
                wait(Why::Breaker(reason.clone()));
                continue;
            }
        }
        match p.image_state() {
            ImageState::Pending => {
                let c = p.condition(crate::pod::IMAGE_READY);
                let m = c.map_or(String::new(), |c| {
                    format!("{}: {}", c.reason, c.message)
                        .trim_matches([' ', ':'])
                        .to_owned()
                });
                wait(Why::ImageNotReady(m));
                continue;
            }
            // Asked for with `prepull`, and always when the pod was pulled for an older revision:
            // YurtHub refuses the upgrade until the current one is pulled.
            ImageState::NotRequested
                if i.imagepull_supported
                    && (p.image_pull_outdated() || (queued.is_none() && s.prepull)) =>
            {
                let key = pull_key(p);
                if !i.pulls_requested.contains(&key) {
                    if !pull_blockers.is_empty() {
                        wait(Why::PullGatesClosed(pull_blockers.clone()));
                        continue;
                    }
                    d.actions.push(Action::Pull {
                        pod: Target::of(p),
                        pull_key: key,
                    });
                }
                wait(Why::ImagePulling);
                continue;
            }
            _ => {}
        }
        if let Some(e) = i.state_unavailable {
            wait(Why::StateUnavailable(e.to_owned()));
            continue;
        }
        let b = if force {
            blockers(i.gates, &holds, true, i.now, s.stable_for)
        } else {
            d.blockers.clone()
        };
        if !b.names.is_empty() {
            wait(Why::Blocked(b.names));
            continue;
        }
        if let Some(left) = b.stable_in {
            wait(Why::NotStable(left));
            continue;
        }
        if in_flight >= s.max_concurrent {
            wait(Why::MaxConcurrent(s.max_concurrent));
            continue;
        }
        // The fleet budget: the act step takes a slot before the re-read; while the last
        // attempt found none, wait for the retry.
        let slot = match ds.filter(|ds| ds.budget.is_some()) {
            None => None,
            Some(ds) => {
                use crate::fleet::SlotView;
                match &ds.slots {
                    SlotView::Full { holders, retry_ms } if *retry_ms > i.now_ms => {
                        wait(Why::FleetBudget {
                            budget: ds.budget.unwrap_or_default(),
                            holders: holders.clone(),
                        });
                        continue;
                    }
                    SlotView::Unavailable { error, retry_ms } if *retry_ms > i.now_ms => {
                        wait(Why::FleetUnavailable(error.clone()));
                        continue;
                    }
                    _ => p.owner().map(|o| o.uid.clone()),
                }
            }
        };
        in_flight += 1;
        d.actions.push(Action::Upgrade {
            pod: Target::of(p),
            force,
            slot,
        });
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use crate::pod::Condition;
    use crate::state::{Backoff, Breaker, InFlight, Parked, Queued};
    use crate::testing::fixture;

    const KP: &str = "kube-system/kube-proxy-hsdvx";
    const KN: &str = "kube-system/kindnet-4pxt7";
    const KP_UID: &str = "25835dbf-21bb-4b20-bbd2-c5491d8362eb";
    const KN_UID: &str = "a69231e3-187c-41e3-b626-722e701fb78c";

    fn cond(kind: &str, status: &str, reason: &str, message: &str) -> Condition {
        Condition {
            kind: kind.into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
        }
    }

    /// The recorded v1.36 pods, with both DaemonSet pods (kindnet, kube-proxy) outdated.
    fn pods() -> Vec<Pod> {
        let snap = crate::snapshot::Snapshot::build(&fixture("1.36")).unwrap();
        let mut pods = snap.pods;
        for p in &mut pods {
            if p.owner().is_some_and(|o| o.kind == "DaemonSet") {
                p.status.conditions.push(cond(
                    "PodNeedUpgrade",
                    "True",
                    "",
                    "controllerrevision: 7f9c8d6b5",
                ));
            }
        }
        pods
    }

    fn gate(name: &str, safety: bool, open_for: Option<u64>, now: Instant) -> GateState {
        GateState {
            name: name.into(),
            kind: "file",
            safety,
            upgrade: true,
            pull: false,
            open: open_for.is_some(),
            since: now - Duration::from_secs(open_for.unwrap_or(5)),
            since_wall: SystemTime::now(),
            detail: String::new(),
            error: None,
            last_error: None,
            next_open: None,
            changes: 1,
            read: true,
        }
    }

    struct Case {
        name: &'static str,
        mode: Mode,
        pods: Vec<Pod>,
        gates: Vec<GateState>,
        state: State,
        prepull: bool,
        imagepull_supported: bool,
        pulls: Vec<String>,
        max_concurrent: u32,
        include: Vec<String>,
        exclude: Vec<String>,
        state_unavailable: Option<&'static str>,
        max_defer: Option<Duration>,
        fleet: crate::fleet::FleetView,
    }

    fn case(name: &'static str, now: Instant) -> Case {
        Case {
            name,
            mode: Mode::Auto,
            pods: pods(),
            gates: vec![gate("stopped", true, Some(60), now)],
            state: State::default(),
            prepull: false,
            imagepull_supported: true,
            pulls: Vec::new(),
            max_concurrent: 1,
            include: Vec::new(),
            exclude: Vec::new(),
            state_unavailable: None,
            max_defer: None,
            fleet: crate::fleet::FleetView::new(),
        }
    }

    const NOW_MS: u64 = 1_800_000_000_000;

    fn run(c: &Case, now: Instant) -> Decision {
        let mut s = Settings::default().policy;
        s.mode = c.mode;
        s.prepull = c.prepull;
        s.max_concurrent = c.max_concurrent;
        s.include = c.include.clone();
        s.exclude = c.exclude.clone();
        s.stable_for = Duration::from_secs(30);
        s.ready_timeout = Duration::from_secs(300);
        s.max_defer = c.max_defer;
        decide(&Inputs {
            pods: Some(&c.pods),
            gates: &c.gates,
            state: &c.state,
            now,
            now_ms: NOW_MS,
            settings: &s,
            imagepull_supported: c.imagepull_supported,
            pulls_requested: &c.pulls,
            state_unavailable: c.state_unavailable,
            fleet: &c.fleet,
        })
    }

    fn upgrades(d: &Decision) -> Vec<String> {
        d.actions
            .iter()
            .filter_map(|a| match a {
                Action::Upgrade { pod, .. } => Some(pod.key()),
                _ => None,
            })
            .collect()
    }

    fn why<'d>(d: &'d Decision, key: &str) -> Option<&'d Why> {
        d.waiting.iter().find(|w| w.0 == key).map(|w| &w.1)
    }

    fn in_flight(uid: &str, owner: &str, started_ms: u64) -> InFlight {
        InFlight {
            namespace: "kube-system".into(),
            name: "x".into(),
            uid: uid.into(),
            owner_uid: owner.into(),
            started_ms,
            accepted: true,
        }
    }

    fn queued_kube_proxy(force: bool) -> Queued {
        Queued {
            namespace: "kube-system".into(),
            name: "kube-proxy-hsdvx".into(),
            uid: KP_UID.into(),
            at_ms: 0,
            force,
        }
    }

    /// Each row: a situation, the upgrades it starts, and the reason given for kube-proxy.
    #[test]
    fn table() {
        let now = Instant::now();
        let kp_owner = "5b09aa5c-a098-4dd2-ad37-b7226b561ac0";
        let mut cases: Vec<(Case, Vec<&str>, Option<Why>)> = Vec::new();

        let c = case("open and stable: the first in order (kindnet) goes", now);
        cases.push((c, vec![KN], Some(Why::MaxConcurrent(1))));

        let mut c = case("max_concurrent 2: both", now);
        c.max_concurrent = 2;
        cases.push((c, vec![KN, KP], None));

        let mut c = case("manual mode: nothing by itself", now);
        c.mode = Mode::Manual;
        cases.push((c, vec![], Some(Why::Manual)));

        let mut c = case("a closed gate blocks", now);
        c.gates = vec![gate("stopped", true, None, now)];
        cases.push((c, vec![], Some(Why::Blocked(vec!["stopped".into()]))));

        let mut c = case("open 10s of 30s: not stable", now);
        c.gates = vec![gate("stopped", true, Some(10), now)];
        cases.push((c, vec![], Some(Why::NotStable(Duration::from_secs(20)))));

        let mut c = case("stability counts from the gate that opened last", now);
        c.gates = vec![
            gate("stopped", true, Some(600), now),
            gate("night", false, Some(5), now),
        ];
        cases.push((c, vec![], Some(Why::NotStable(Duration::from_secs(25)))));

        let mut c = case("no gates at all: allowed at once", now);
        c.gates = vec![];
        c.max_concurrent = 2;
        cases.push((c, vec![KN, KP], None));

        let mut c = case("an active hold blocks", now);
        c.state.holds.push(Hold {
            name: "nav".into(),
            reason: "navigation".into(),
            created_ms: 0,
            expires_ms: NOW_MS + 1,
        });
        cases.push((c, vec![], Some(Why::Blocked(vec!["hold:nav".into()]))));

        let mut c = case("an expired hold does not", now);
        c.state.holds.push(Hold {
            name: "nav".into(),
            reason: "navigation".into(),
            created_ms: 0,
            expires_ms: NOW_MS,
        });
        cases.push((c, vec![KN], Some(Why::MaxConcurrent(1))));

        let mut c = case("breaker tripped: automatic upgrades stop", now);
        c.state.breaker = Some(Breaker {
            tripped_ms: 0,
            reason: "timeout".into(),
        });
        cases.push((c, vec![], Some(Why::Breaker("timeout".into()))));

        let mut c = case("one in flight fills max_concurrent", now);
        c.state
            .in_flight
            .push(in_flight("old-uid", "some-ds", NOW_MS - 1000));
        cases.push((c, vec![], Some(Why::MaxConcurrent(1))));

        let mut c = case("a pod in flight is not called again", now);
        c.max_concurrent = 5;
        c.state
            .in_flight
            .push(in_flight(KP_UID, kp_owner, NOW_MS - 1000));
        cases.push((c, vec![KN], Some(Why::InFlight)));

        let mut c = case("include narrows", now);
        c.include = vec!["kube-system/kube-proxy*".into()];
        cases.push((c, vec![KP], None));

        let mut c = case("exclude removes", now);
        c.exclude = vec!["kube-system/kube-proxy*".into()];
        c.max_concurrent = 2;
        cases.push((c, vec![KN], Some(Why::Excluded)));

        let mut c = case("include that does not match", now);
        c.include = vec!["edge-apps/*".into()];
        cases.push((c, vec![], Some(Why::NotIncluded)));

        let mut c = case("parked with unchanged conditions: waits", now);
        let kp = c.pods.iter().find(|p| p.key() == KP).unwrap();
        c.state.parked.push(Parked {
            uid: KP_UID.into(),
            key: KP.into(),
            fingerprint: fingerprint(kp),
            detail: "403".into(),
        });
        c.max_concurrent = 2;
        cases.push((c, vec![KN], Some(Why::Parked("403".into()))));

        let mut c = case("parked, conditions changed: unparked and upgraded", now);
        c.state.parked.push(Parked {
            uid: KP_UID.into(),
            key: KP.into(),
            fingerprint: 1,
            detail: "403".into(),
        });
        c.max_concurrent = 2;
        cases.push((c, vec![KN, KP], None));

        let mut c = case("backoff not over: waits", now);
        c.state.backoff.push(Backoff {
            uid: KP_UID.into(),
            key: KP.into(),
            attempts: 2,
            retry_ms: NOW_MS + 10_000,
            detail: "500".into(),
        });
        c.max_concurrent = 2;
        cases.push((
            c,
            vec![KN],
            Some(Why::Backoff {
                retry_in: Duration::from_secs(10),
                attempts: 2,
            }),
        ));

        let mut c = case("backoff over: tried again", now);
        c.state.backoff.push(Backoff {
            uid: KP_UID.into(),
            key: KP.into(),
            attempts: 2,
            retry_ms: NOW_MS,
            detail: "500".into(),
        });
        c.max_concurrent = 2;
        cases.push((c, vec![KN, KP], None));

        let mut c = case("prepull: images are asked for, not upgraded yet", now);
        c.prepull = true;
        cases.push((c, vec![], Some(Why::ImagePulling)));

        let mut c = case("prepull unsupported (404): upgrade without", now);
        c.prepull = true;
        c.imagepull_supported = false;
        cases.push((c, vec![KN], Some(Why::MaxConcurrent(1))));

        let pulled = |pods: &mut Vec<Pod>, revision: &str| {
            for p in pods {
                p.status.conditions.push(cond(
                    "PodImageReady",
                    "True",
                    "PullImageSuccess",
                    &format!("controllerrevision: {revision}"),
                ));
            }
        };
        let mut c = case("image ready: upgraded", now);
        c.prepull = true;
        pulled(&mut c.pods, "7f9c8d6b5");
        cases.push((c, vec![KN], Some(Why::MaxConcurrent(1))));

        // Regression (issue 9, item 2): read as "pending" forever, never asked again.
        let mut c = case(
            "image pulled for an older revision, prepull off: asked again",
            now,
        );
        pulled(&mut c.pods, "0ld");
        cases.push((c, vec![], Some(Why::ImagePulling)));

        let mut c = case("the pull for this revision failed: not ready", now);
        for p in &mut c.pods {
            p.status.conditions.push(cond(
                "PodImageReady",
                "False",
                "PullImageFail",
                "controllerrevision: 7f9c8d6b5",
            ));
        }
        cases.push((
            c,
            vec![],
            Some(Why::ImageNotReady(
                "PullImageFail: controllerrevision: 7f9c8d6b5".into(),
            )),
        ));

        let mut c = case("state cannot be written: upgrades pause", now);
        c.state_unavailable = Some("disk full");
        c.max_concurrent = 2;
        cases.push((c, vec![], Some(Why::StateUnavailable("disk full".into()))));

        let mut c = case("state cannot be written: queued ones pause too", now);
        c.mode = Mode::Manual;
        c.state_unavailable = Some("disk full");
        c.state.queue.push(queued_kube_proxy(true));
        cases.push((c, vec![], Some(Why::StateUnavailable("disk full".into()))));

        // Regression (issue 9, item 4): the same uid twice gave two upgrade calls.
        let mut c = case("a pod listed twice is upgraded once", now);
        c.max_concurrent = 5;
        c.gates = vec![];
        let twice = c.pods.iter().find(|p| p.key() == KP).unwrap().clone();
        c.pods.push(twice);
        c.state.queue.push(queued_kube_proxy(false));
        c.state.queue.push(queued_kube_proxy(false));
        cases.push((c, vec![KP, KN], None));

        let mut c = case("queued in manual mode: upgraded when the gates allow", now);
        c.mode = Mode::Manual;
        c.state.queue.push(queued_kube_proxy(false));
        cases.push((c, vec![KP], None));

        let mut c = case("queued, gate closed: waits, listed as queued", now);
        c.mode = Mode::Manual;
        c.gates = vec![gate("stopped", true, None, now)];
        c.state.queue.push(queued_kube_proxy(true));
        cases.push((c, vec![], Some(Why::Blocked(vec!["stopped".into()]))));

        let mut c = case(
            "queued with force: a closed convenience gate is skipped",
            now,
        );
        c.mode = Mode::Manual;
        c.gates = vec![
            gate("stopped", true, Some(60), now),
            gate("night", false, None, now),
        ];
        c.state.holds.push(Hold {
            name: "nav".into(),
            reason: String::new(),
            created_ms: 0,
            expires_ms: NOW_MS + 1,
        });
        c.state.queue.push(queued_kube_proxy(true));
        cases.push((c, vec![KP], None));

        for (c, want, kp_why) in cases {
            let d = run(&c, now);
            assert_eq!(upgrades(&d), want, "{}: {:?}", c.name, d);
            assert_eq!(why(&d, KP), kp_why.as_ref(), "{}: {:?}", c.name, d.waiting);
        }
    }

    #[test]
    fn prepull_asks_once_per_revision_and_waits_for_pull_gates() {
        let now = Instant::now();
        let mut c = case("prepull", now);
        c.prepull = true;
        let d = run(&c, now);
        let pulls: Vec<_> = d
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Pull { pod, pull_key } => Some((pod.key(), pull_key.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(
            pulls,
            vec![
                (KN.to_owned(), format!("{KN_UID}@7f9c8d6b5")),
                (KP.to_owned(), format!("{KP_UID}@7f9c8d6b5"))
            ]
        );
        c.pulls = pulls.into_iter().map(|p| p.1).collect();
        let d = run(&c, now);
        assert!(d.actions.is_empty(), "asked once: {:?}", d.actions);

        let mut c = case("pull gate", now);
        c.prepull = true;
        let mut g = gate("metered-link", false, None, now);
        g.upgrade = false;
        g.pull = true;
        c.gates.push(g);
        let d = run(&c, now);
        assert!(d.actions.is_empty());
        assert_eq!(
            why(&d, KP),
            Some(&Why::PullGatesClosed(vec!["metered-link".into()]))
        );
    }

    #[test]
    fn in_flight_upgrades_finish_fail_or_time_out() {
        let now = Instant::now();
        let owner = "5b09aa5c-a098-4dd2-ad37-b7226b561ac0";
        let replaced = |ready: bool, restarts: u32| {
            let mut pods = pods();
            let p = pods.iter_mut().find(|p| p.key() == KP).unwrap();
            p.metadata.uid = "new-uid".into();
            p.metadata.name = "kube-proxy-n3w".into();
            p.status.conditions.retain(|c| c.kind != "PodNeedUpgrade");
            for c in &mut p.status.conditions {
                if c.kind == "Ready" {
                    c.status = if ready { "True" } else { "False" }.into();
                }
            }
            p.status.container_statuses[0].restart_count = restarts;
            pods
        };
        for (name, pods, started, want) in [
            ("old pod still there", pods(), NOW_MS - 1000, None),
            (
                "replacement Ready",
                replaced(true, 0),
                NOW_MS - 1000,
                Some(Action::Finished {
                    uid: KP_UID.into(),
                    replacement: "kube-system/kube-proxy-n3w".into(),
                }),
            ),
            (
                "replacement not Ready yet",
                replaced(false, 1),
                NOW_MS - 1000,
                None,
            ),
            (
                "replacement crash-looping",
                replaced(false, 3),
                NOW_MS - 1000,
                Some(Action::Failed {
                    uid: KP_UID.into(),
                    reason: "replacement kube-system/kube-proxy-n3w restarted 3 times".into(),
                }),
            ),
            (
                "not Ready within ready_timeout",
                replaced(false, 0),
                NOW_MS - 301_000,
                Some(Action::Failed {
                    uid: KP_UID.into(),
                    reason:
                        "no Ready replacement for kube-system/x within policy.ready_timeout (5m)"
                            .into(),
                }),
            ),
        ] {
            let mut c = case("in flight", now);
            c.pods = pods;
            c.max_concurrent = 5;
            c.state.in_flight.push(in_flight(KP_UID, owner, started));
            let d = run(&c, now);
            let tracked: Vec<_> = d
                .actions
                .iter()
                .filter(|a| matches!(a, Action::Finished { .. } | Action::Failed { .. }))
                .cloned()
                .collect();
            assert_eq!(tracked, want.into_iter().collect::<Vec<_>>(), "{name}");
        }
    }

    /// Regression (issue 9, item 3): a replacement that already needed the next revision never
    /// "finished"; the entry stayed, blocked every other pod and tripped the breaker.
    #[test]
    fn a_ready_replacement_finishes_whatever_revision_it_needs_next() {
        let now = Instant::now();
        let owner = "5b09aa5c-a098-4dd2-ad37-b7226b561ac0";
        let mut c = case("replacement outdated", now);
        let p = c.pods.iter_mut().find(|p| p.key() == KP).unwrap();
        p.metadata.uid = "new-uid".into();
        p.metadata.name = "kube-proxy-n3w".into();
        for cd in &mut p.status.conditions {
            if cd.kind == "PodNeedUpgrade" {
                cd.message = "controllerrevision: 8a0d9e7c6".into();
            }
        }
        c.state
            .in_flight
            .push(in_flight(KP_UID, owner, NOW_MS - 1000));
        let d = run(&c, now);
        assert!(d.actions.contains(&Action::Finished {
            uid: KP_UID.into(),
            replacement: "kube-system/kube-proxy-n3w".into(),
        }));
        // The slot is free again at once: the next pod in order goes (max_concurrent 1).
        assert_eq!(upgrades(&d), vec![KN]);
        // And the replacement itself is a new pod needing upgrade, handled afresh.
        c.state.in_flight.clear();
        c.max_concurrent = 2;
        assert_eq!(
            upgrades(&run(&c, now)),
            vec![KN.to_owned(), "kube-system/kube-proxy-n3w".to_owned()]
        );
    }

    #[test]
    fn no_automatic_upgrade_starts_beside_a_failure_that_trips_the_breaker() {
        let now = Instant::now();
        let mut c = case("a timeout and free slots", now);
        c.max_concurrent = 5;
        c.state
            .in_flight
            .push(in_flight("gone-uid", "some-ds", NOW_MS - 301_000));
        let d = run(&c, now);
        assert!(d
            .actions
            .iter()
            .any(|a| matches!(a, Action::Failed { uid, .. } if uid == "gone-uid")));
        assert_eq!(upgrades(&d), Vec::<String>::new());
        assert_eq!(why(&d, KP).map(Why::word), Some("breaker"));
    }

    #[test]
    fn the_queue_drops_pods_that_are_gone_or_done() {
        let now = Instant::now();
        let mut c = case("queue", now);
        c.mode = Mode::Manual;
        for uid in ["gone-uid", "f78db027-d69e-485e-9a9e-a6dc7493b6d7"] {
            c.state.queue.push(Queued {
                namespace: "kube-system".into(),
                name: "x".into(),
                uid: uid.into(),
                at_ms: 0,
                force: false,
            });
        }
        let d = run(&c, now);
        let reasons: Vec<_> = d
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Dequeue { reason, .. } => Some(reason.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(
            reasons,
            vec!["the pod is gone", "the pod no longer needs upgrade"]
        );
    }

    #[test]
    fn retry_after_estimates_only_what_it_can() {
        let now = Instant::now();
        // Whole milliseconds, as persisted hold expiries are.
        let wall = from_unix_ms(crate::state::unix_ms(SystemTime::now()));
        let stable = Duration::from_secs(30);
        let mut night = gate("night", false, None, now);
        night.next_open = Some(wall + Duration::from_secs(600));
        let stopped = gate("stopped", true, None, now);
        let hold = Hold {
            name: "nav".into(),
            reason: String::new(),
            created_ms: 0,
            expires_ms: crate::state::unix_ms(wall) + 900_000,
        };
        let est = |gates: &[GateState], holds: &[&Hold]| {
            let b = blockers(gates, holds, false, now, stable);
            retry_after(gates, holds, &b, wall, stable)
        };
        assert_eq!(est(&[night.clone()], &[]), Some(Duration::from_secs(630)));
        assert_eq!(
            est(&[night.clone()], &[&hold]),
            Some(Duration::from_secs(900))
        );
        assert_eq!(est(&[night, stopped], &[]), None, "a file gate: unknown");
        assert_eq!(
            est(&[gate("stopped", true, Some(10), now)], &[]),
            Some(Duration::from_secs(20))
        );
    }

    const DAY_MS: u64 = 86_400_000;

    /// Both DaemonSet pods needing upgrade since `ago_ms`, a hold, and `max_defer` 7 days.
    fn deferred(name: &'static str, ago_ms: u64, now: Instant) -> Case {
        let mut c = case(name, now);
        c.max_defer = Some(Duration::from_millis(7 * DAY_MS));
        c.max_concurrent = 2;
        for (uid, key) in [(KN_UID, KN), (KP_UID, KP)] {
            c.state.outdated.push(crate::state::Outdated {
                uid: uid.into(),
                key: key.into(),
                since_ms: NOW_MS - ago_ms,
                expired: false,
            });
        }
        c.state.holds.push(Hold {
            name: "nav".into(),
            reason: "renewed forever".into(),
            created_ms: 0,
            expires_ms: u64::MAX,
        });
        c
    }

    /// Each row: a situation with `max_defer`, the upgrades it starts, kube-proxy's reason.
    #[test]
    fn max_defer_forces_past_holds_and_convenience_gates_never_safety_gates() {
        let now = Instant::now();
        let mut cases: Vec<(Case, Vec<&str>, Option<Why>)> = Vec::new();

        let c = deferred("needing upgrade 1 day of 7: the hold blocks", DAY_MS, now);
        cases.push((c, vec![], Some(Why::Blocked(vec!["hold:nav".into()]))));

        let c = deferred(
            "needing upgrade 8 days of 7: the hold no longer blocks",
            8 * DAY_MS,
            now,
        );
        cases.push((c, vec![KN, KP], None));

        let c = deferred("exactly 7 days: over", 7 * DAY_MS, now);
        cases.push((c, vec![KN, KP], None));

        let mut c = deferred(
            "over, a convenience gate closed: not blocking",
            8 * DAY_MS,
            now,
        );
        c.gates.push(gate("night", false, None, now));
        cases.push((c, vec![KN, KP], None));

        let mut c = deferred(
            "over, the safety gate closed: still blocks",
            8 * DAY_MS,
            now,
        );
        c.gates = vec![
            gate("stopped", true, None, now),
            gate("night", false, None, now),
        ];
        cases.push((c, vec![], Some(Why::Blocked(vec!["stopped".into()]))));

        let mut c = deferred(
            "over, safety gate open but not stable: waits",
            8 * DAY_MS,
            now,
        );
        c.gates = vec![gate("stopped", true, Some(10), now)];
        cases.push((c, vec![], Some(Why::NotStable(Duration::from_secs(20)))));

        let mut c = deferred(
            "no max_defer: the hold blocks however long",
            300 * DAY_MS,
            now,
        );
        c.max_defer = None;
        cases.push((c, vec![], Some(Why::Blocked(vec!["hold:nav".into()]))));

        let mut c = deferred(
            "over, manual mode: still only API calls and the queue",
            8 * DAY_MS,
            now,
        );
        c.mode = Mode::Manual;
        cases.push((c, vec![], Some(Why::Manual)));

        let mut c = deferred(
            "over, queued without force in manual mode: forced",
            8 * DAY_MS,
            now,
        );
        c.mode = Mode::Manual;
        c.state.queue.push(queued_kube_proxy(false));
        cases.push((c, vec![KP], None));

        for (c, want, kp_why) in cases {
            let d = run(&c, now);
            assert_eq!(upgrades(&d), want, "{}: {:?}", c.name, d);
            assert_eq!(why(&d, KP), kp_why.as_ref(), "{}: {:?}", c.name, d.waiting);
            // Forced upgrades are sent as forced: the moment of action skips holds as well.
            for a in &d.actions {
                if let Action::Upgrade { force, .. } = a {
                    assert!(*force, "{}", c.name);
                }
            }
        }
    }

    #[test]
    fn needing_upgrade_is_tracked_per_uid_and_its_expiry_told_once() {
        let now = Instant::now();
        let track = |d: &Decision| {
            d.actions.iter().find_map(|a| match a {
                Action::TrackOutdated { add, forget } => Some((add.clone(), forget.clone())),
                _ => None,
            })
        };
        let told = |d: &Decision| {
            d.actions
                .iter()
                .filter_map(|a| match a {
                    Action::DeferralExpired { key, .. } => Some(key.clone()),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        // Nothing tracked yet: both start now.
        let mut c = case("fresh", now);
        c.max_defer = Some(Duration::from_millis(7 * DAY_MS));
        let (add, forget) = track(&run(&c, now)).unwrap();
        assert_eq!(
            add,
            vec![(KN_UID.into(), KN.into()), (KP_UID.into(), KP.into())]
        );
        assert!(forget.is_empty());
        // Tracked, and a pod that is gone: only that one is forgotten.
        let mut c = deferred("tracked", 8 * DAY_MS, now);
        c.state.outdated.push(crate::state::Outdated {
            uid: "gone".into(),
            key: "kube-system/gone".into(),
            since_ms: 0,
            expired: true,
        });
        let d = run(&c, now);
        assert_eq!(track(&d), Some((vec![], vec!["gone".to_owned()])));
        assert_eq!(told(&d), vec![KN.to_owned(), KP.to_owned()]);
        // Told once: not again once recorded.
        for o in &mut c.state.outdated {
            o.expired = true;
        }
        assert!(told(&run(&c, now)).is_empty());
        // Not over: not told.
        assert!(told(&run(&deferred("young", DAY_MS, now), now)).is_empty());
    }

    const KP_OWNER: &str = "5b09aa5c-a098-4dd2-ad37-b7226b561ac0";

    /// kube-proxy's DaemonSet with `strategy`, a budget of `budget` and `slots` as last seen.
    fn with_ds(
        mut c: Case,
        strategy: Result<Option<crate::fleet::Strategy>, String>,
        budget: Option<u32>,
        slots: crate::fleet::SlotView,
    ) -> Case {
        c.fleet.insert(
            KP_OWNER.into(),
            crate::fleet::DaemonSetView {
                namespace: "kube-system".into(),
                name: "kube-proxy".into(),
                strategy,
                budget,
                slots,
            },
        );
        c
    }

    /// Each row: a DaemonSet strategy and fleet budget situation, the upgrades it starts (with
    /// the slot asked for), and kube-proxy's reason.
    #[test]
    fn strategies_and_the_fleet_budget() {
        use crate::fleet::{SlotView, Strategy};
        let now = Instant::now();
        let ars = Ok(Some(Strategy::AdvancedRollingUpdate));
        // (situation, upgrades as (pod, with a slot), kube-proxy's reason)
        type Row = (Case, Vec<(&'static str, bool)>, Option<Why>);
        let mut cases: Vec<Row> = Vec::new();

        let mut c = case(
            "manual mode, AdvancedRollingUpdate: its pod goes alone",
            now,
        );
        c.mode = Mode::Manual;
        let c = with_ds(c, ars.clone(), None, SlotView::Unknown);
        cases.push((c, vec![(KP, false)], None));

        let mut c = case("manual mode, OTA: as today", now);
        c.mode = Mode::Manual;
        let c = with_ds(c, Ok(Some(Strategy::Ota)), None, SlotView::Unknown);
        cases.push((c, vec![], Some(Why::Manual)));

        let mut c = case("AdvancedRollingUpdate: a closed gate still blocks", now);
        c.mode = Mode::Manual;
        c.gates = vec![gate("stopped", true, None, now)];
        let c = with_ds(c, ars.clone(), None, SlotView::Unknown);
        cases.push((c, vec![], Some(Why::Blocked(vec!["stopped".into()]))));

        let mut c = case("AdvancedRollingUpdate: a hold still blocks", now);
        c.mode = Mode::Manual;
        c.state.holds.push(Hold {
            name: "nav".into(),
            reason: String::new(),
            created_ms: 0,
            expires_ms: NOW_MS + 1,
        });
        let c = with_ds(c, ars.clone(), None, SlotView::Unknown);
        cases.push((c, vec![], Some(Why::Blocked(vec!["hold:nav".into()]))));

        let mut c = case("an unknown strategy: left alone, in auto mode too", now);
        c.max_concurrent = 2;
        let c = with_ds(c, Err("Rolling".into()), None, SlotView::Unknown);
        cases.push((
            c,
            vec![(KN, false)],
            Some(Why::UnknownStrategy("Rolling".into())),
        ));

        let mut c = case("an unknown strategy in manual mode: says so", now);
        c.mode = Mode::Manual;
        let c = with_ds(c, Err("Rolling".into()), None, SlotView::Unknown);
        cases.push((c, vec![], Some(Why::UnknownStrategy("Rolling".into()))));

        let mut c = case("an unknown strategy: queued, still left alone", now);
        c.mode = Mode::Manual;
        c.state.queue.push(queued_kube_proxy(true));
        let c = with_ds(c, Err("x".into()), None, SlotView::Unknown);
        cases.push((c, vec![], Some(Why::UnknownStrategy("x".into()))));

        let mut c = case("a budget, slots not tried: upgrade asks for a slot", now);
        c.max_concurrent = 2;
        let c = with_ds(c, ars.clone(), Some(2), SlotView::Unknown);
        cases.push((c, vec![(KN, false), (KP, true)], None));

        let mut c = case("budget full: waits, naming the holders", now);
        c.max_concurrent = 2;
        let full = SlotView::Full {
            holders: vec!["node-a".into(), "node-b".into()],
            retry_ms: NOW_MS + 1500,
        };
        let c = with_ds(c, ars.clone(), Some(2), full);
        let want = Why::FleetBudget {
            budget: 2,
            holders: vec!["node-a".into(), "node-b".into()],
        };
        assert_eq!(
            want.to_string(),
            "fleet budget: 2/2 slots held by node-a, node-b"
        );
        cases.push((c, vec![(KN, false)], Some(want)));

        let mut c = case("budget full, retry time come: tried again", now);
        c.max_concurrent = 2;
        let full = SlotView::Full {
            holders: vec!["node-a".into()],
            retry_ms: NOW_MS,
        };
        let c = with_ds(c, ars.clone(), Some(1), full);
        cases.push((c, vec![(KN, false), (KP, true)], None));

        let mut c = case("slots unreadable: fail closed until the retry", now);
        c.max_concurrent = 2;
        let down = SlotView::Unavailable {
            error: "refused".into(),
            retry_ms: NOW_MS + 10,
        };
        let c = with_ds(c, ars.clone(), Some(1), down);
        cases.push((
            c,
            vec![(KN, false)],
            Some(Why::FleetUnavailable("refused".into())),
        ));

        let mut c = case(
            "budget full and a gate closed: the gate is named first",
            now,
        );
        c.gates = vec![gate("stopped", true, None, now)];
        let full = SlotView::Full {
            holders: vec!["node-a".into()],
            retry_ms: NOW_MS + 1500,
        };
        let c = with_ds(c, ars.clone(), Some(1), full);
        cases.push((c, vec![], Some(Why::Blocked(vec!["stopped".into()]))));

        let mut c = case("OTA with a budget, in auto mode: asks for a slot too", now);
        c.max_concurrent = 2;
        let c = with_ds(c, Ok(Some(Strategy::Ota)), Some(1), SlotView::Unknown);
        cases.push((c, vec![(KN, false), (KP, true)], None));

        for (c, want, kp_why) in cases {
            let d = run(&c, now);
            let got: Vec<(String, bool)> = d
                .actions
                .iter()
                .filter_map(|a| match a {
                    Action::Upgrade { pod, slot, .. } => {
                        assert!(slot.as_deref().is_none_or(|s| s == pod.owner_uid));
                        Some((pod.key(), slot.is_some()))
                    }
                    _ => None,
                })
                .collect();
            let want: Vec<(String, bool)> = want.into_iter().map(|(k, s)| (k.into(), s)).collect();
            assert_eq!(got, want, "{}: {:?}", c.name, d);
            assert_eq!(why(&d, KP), kp_why.as_ref(), "{}: {:?}", c.name, d.waiting);
        }
    }
}
