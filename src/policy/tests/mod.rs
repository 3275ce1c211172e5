use std::time::SystemTime;

use super::*;
use crate::config::{Mode, Settings};
use crate::pod::Condition;
use crate::state::{from_unix_ms, Hold};
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
        last_transition_time: String::new(),
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
    let patterns = |v: &[String]| v.iter().map(|p| p.parse().unwrap()).collect();
    s.include = patterns(&c.include);
    s.exclude = patterns(&c.exclude);
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
        revision: None,
        uncertain: false,
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
mod defer;
mod fleet;
mod flight;
mod table;
