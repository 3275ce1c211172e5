//! The per-pod decision: in-flight upgrades, the queue, then every pod that needs upgrade.

use super::*;
use crate::config::Mode;
use crate::gate::Purpose;
use crate::pod::ImageState;
use crate::state::Hold;

pub(super) fn decide_now(i: &Inputs) -> Decision {
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
    // The DaemonSet revisions failing in this decision: blocked at once (SPEC 6).
    let mut failing: Vec<(&str, Option<&str>)> = Vec::new();
    for f in &i.state.in_flight {
        if !in_flight_uids.insert(&f.uid) {
            continue;
        }
        let old = crate::pod::Upgraded {
            uid: &f.uid,
            owner_uid: &f.owner_uid,
            name: &f.name,
        };
        // An upgrade that may or may not have been carried out: the pod is read again first.
        if f.uncertain {
            d.actions.push(Action::Recheck { uid: f.uid.clone() });
            continue;
        }
        // Finished once the replacement is available: Ready for the DaemonSet's
        // minReadySeconds (SPEC 6b); until then it may still fail.
        let min_ready = pods::min_ready(i.fleet, &f.owner_uid);
        if let Some(new) =
            crate::pod::replacement(pods, old).filter(|new| new.is_available(min_ready, i.now_ms))
        {
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
        if looping.is_some()
            || i.now_ms.saturating_sub(f.started_ms) > s.ready_timeout.as_millis() as u64
        {
            failing.push((f.owner_uid.as_str(), f.revision.as_deref()));
        }
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
                    crate::config::HumanDuration(s.ready_timeout)
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
    // Those that finished just now no longer count. The breaker for everything (an intent
    // record that cannot be trusted); and per DaemonSet, the revision that failed here (SPEC 6),
    // including those failing in this decision.
    let breaker = i.state.breaker.as_ref().map(|b| b.reason.clone());
    let blocked: HashMap<&str, &crate::state::Blocked> = i
        .state
        .blocked
        .iter()
        .map(|b| (b.owner_uid.as_str(), b))
        .collect();
    let mut unblocked: HashSet<&str> = HashSet::new();
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
        let owner = p.owner().map_or("", |o| o.uid.as_str());
        let revision = p.target_revision();
        if let Some((_, failed)) = failing.iter().find(|(o, _)| *o == owner) {
            if queued.is_none() && (failed.is_none() || *failed == revision) {
                wait(Why::RevisionFailed {
                    revision: failed.map(str::to_owned),
                    reason: "failed just now".into(),
                });
                continue;
            }
        }
        if let Some(b) = blocked.get(owner) {
            let same = b.revision.is_none() || b.revision.as_deref() == revision;
            if same && queued.is_none() {
                wait(Why::RevisionFailed {
                    revision: b.revision.clone(),
                    reason: b.reason.clone(),
                });
                continue;
            }
            if !same && unblocked.insert(owner) {
                d.actions.push(Action::Unblock {
                    owner_uid: owner.to_owned(),
                    revision: b.revision.clone(),
                    newer: revision.map(str::to_owned),
                });
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
        // attempt found none, wait for the retry. A pod already unavailable is replaced
        // without waiting for a free slot (SPEC 6b): it adds no unavailable node.
        let down = !p.is_available(pods::min_ready(i.fleet, owner), i.now_ms);
        let slot = match ds.filter(|ds| ds.budget.is_some()) {
            None => None,
            Some(ds) => {
                use crate::fleet::SlotView;
                match &ds.slots {
                    _ if down => p.owner().map(|o| o.uid.clone()),
                    SlotView::Full {
                        holders,
                        held,
                        retry_ms,
                    } if *retry_ms > i.now_ms => {
                        wait(Why::FleetBudget {
                            budget: ds.budget.unwrap_or_default(),
                            held: *held,
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
            down,
        });
    }
    d
}
