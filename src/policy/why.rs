//! Why a pod is not upgraded yet, and what blocks upgrades now (SPEC section 5).

use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use crate::gate::{GateState, Purpose};
use crate::state::{from_unix_ms, Hold, State};

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
    /// This revision of the pod's DaemonSet failed on this node (SPEC 6): not tried again by
    /// itself; a newer revision clears it.
    RevisionFailed {
        revision: Option<String>,
        reason: String,
    },
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
        /// Slots held by others (`SlotView::Full`).
        held: u32,
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
            Why::RevisionFailed { revision: Some(r), reason } => write!(
                f,
                "revision {r} of its DaemonSet failed on this node ({reason}); waiting for a newer revision (or POST /v1/breaker/reset)"
            ),
            Why::RevisionFailed { revision: None, reason } => write!(
                f,
                "an upgrade of its DaemonSet failed on this node ({reason}); the upstream names no revision, so POST /v1/breaker/reset resumes it"
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
            Why::FleetBudget {
                budget,
                held,
                holders,
            } => {
                write!(f, "fleet budget: {held}/{budget} slots held")?;
                if !holders.is_empty() {
                    write!(f, " by {}", holders.join(", "))?;
                }
                if held < budget {
                    f.write_str("; a slot is free, and this node waits its turn in line")?;
                }
                Ok(())
            }
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
            Why::RevisionFailed { .. } => "revision_failed",
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
