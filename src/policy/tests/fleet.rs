//! DaemonSet strategies and the fleet budget (SPEC 6b).

use super::*;

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
            min_ready: Duration::ZERO,
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
        held: 2,
        retry_ms: NOW_MS + 1500,
    };
    let c = with_ds(c, ars.clone(), Some(2), full);
    let want = Why::FleetBudget {
        budget: 2,
        held: 2,
        holders: vec!["node-a".into(), "node-b".into()],
    };
    assert_eq!(
        want.to_string(),
        "fleet budget: 2/2 slots held by node-a, node-b"
    );
    // A thousand slots: ten named; one free, this node waiting its turn for it (issue 24).
    let many = Why::FleetBudget {
        budget: 1000,
        held: 999,
        holders: vec!["node-a".into(), "998 more".into()],
    };
    assert_eq!(
        many.to_string(),
        "fleet budget: 999/1000 slots held by node-a, 998 more; a slot is free, and this node waits its turn in line"
    );
    cases.push((c, vec![(KN, false)], Some(want)));

    let mut c = case("budget full, retry time come: tried again", now);
    c.max_concurrent = 2;
    let full = SlotView::Full {
        holders: vec!["node-a".into()],
        held: 1,
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
        held: 1,
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

fn blocked(revision: Option<&str>) -> crate::state::Blocked {
    crate::state::Blocked {
        owner_uid: KP_OWNER.into(),
        daemonset: "kube-system/kube-proxy".into(),
        revision: revision.map(Into::into),
        pod: KP.into(),
        uid: "old-uid".into(),
        tripped_ms: NOW_MS - 60_000,
        reason: "no Ready replacement".into(),
    }
}

/// The breaker per DaemonSet and revision (SPEC 6): each row a blocked revision, what
/// kube-proxy (needing 7f9c8d6b5) does, and whether the block is lifted.
#[test]
fn the_breaker_is_per_daemonset_and_revision() {
    let now = Instant::now();
    type Row = (
        &'static str,
        Option<crate::state::Blocked>,
        bool,
        Vec<&'static str>,
        Option<&'static str>,
        bool,
    );
    let rows: Vec<Row> = vec![
        (
            "the revision kube-proxy needs failed: it waits, kindnet goes",
            Some(blocked(Some("7f9c8d6b5"))),
            false,
            vec![KN],
            Some("revision_failed"),
            false,
        ),
        (
            "an older revision failed: a newer one lifts the block and goes",
            Some(blocked(Some("6e8b7c5a4"))),
            false,
            vec![KN, KP],
            None,
            true,
        ),
        (
            "no revision named (YurtHub before v1.7): waits for a reset by hand",
            Some(blocked(None)),
            false,
            vec![KN],
            Some("revision_failed"),
            false,
        ),
        (
            "queued by hand: goes, as with the breaker",
            Some(blocked(Some("7f9c8d6b5"))),
            true,
            vec![KP, KN],
            None,
            false,
        ),
        ("nothing blocked", None, false, vec![KN, KP], None, false),
    ];
    for (name, b, queued, want, kp_why, lifted) in rows {
        let mut c = case(name, now);
        c.max_concurrent = 5;
        c.state.blocked.extend(b);
        if queued {
            c.state.queue.push(queued_kube_proxy(false));
        }
        let d = run(&c, now);
        assert_eq!(upgrades(&d), want, "{name}");
        assert_eq!(why(&d, KP).map(Why::word), kp_why, "{name}");
        let unblock = d.actions.iter().any(|a| {
            matches!(a, Action::Unblock { owner_uid, revision, newer }
                if owner_uid == KP_OWNER && revision.as_deref() == Some("6e8b7c5a4")
                    && newer.as_deref() == Some("7f9c8d6b5"))
        });
        assert_eq!(unblock, lifted, "{name}: {:?}", d.actions);
    }
}

/// SPEC 6b: a pod already unavailable is replaced without waiting for a free slot (it adds no
/// node down); an available one waits for the budget.
#[test]
fn an_unavailable_pod_is_replaced_without_a_free_slot() {
    use crate::fleet::{SlotView, Strategy};
    let now = Instant::now();
    let full = SlotView::Full {
        holders: vec!["node-a (failed revision 6e8b7c5a4)".into()],
        held: 1,
        retry_ms: NOW_MS + 1500,
    };
    for ready in [true, false] {
        let mut c = case("budget full", now);
        let p = c.pods.iter_mut().find(|p| p.key() == KP).unwrap();
        for cd in &mut p.status.conditions {
            if cd.kind == "Ready" {
                cd.status = if ready { "True" } else { "False" }.into();
            }
        }
        c.exclude = vec!["kube-system/kindnet-*".into()];
        let c = with_ds(
            c,
            Ok(Some(Strategy::AdvancedRollingUpdate)),
            Some(1),
            full.clone(),
        );
        let d = run(&c, now);
        let ups: Vec<(String, bool, bool)> = d
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Upgrade {
                    pod, slot, down, ..
                } => Some((pod.key(), slot.is_some(), *down)),
                _ => None,
            })
            .collect();
        if ready {
            assert!(ups.is_empty(), "{ups:?}");
            assert_eq!(
                why(&d, KP).map(|w| w.to_string()).as_deref(),
                Some("fleet budget: 1/1 slots held by node-a (failed revision 6e8b7c5a4)")
            );
        } else {
            assert_eq!(ups, vec![(KP.to_owned(), true, true)]);
        }
    }
}

/// SPEC 6b: the slots this node keeps: an upgrade in flight, or its pod not available (not
/// Ready, Ready for less than minReadySeconds, or missing), whatever the revision.
#[test]
fn a_slot_is_kept_while_the_pod_is_unavailable() {
    use crate::fleet::{SlotView, Strategy};
    let now = Instant::now();
    let set_ready = |c: &mut Case, status: &str, since: &str| {
        let p = c.pods.iter_mut().find(|p| p.key() == KP).unwrap();
        for cd in &mut p.status.conditions {
            if cd.kind == "Ready" {
                cd.status = status.into();
                cd.last_transition_time = since.into();
            }
        }
    };
    // NOW_MS is 2027-01-15T08:00:00Z.
    type Row = (&'static str, &'static str, &'static str, u64, bool, bool);
    let rows: Vec<Row> = vec![
        (
            "Ready: none",
            "True",
            "2027-01-15T07:00:00Z",
            0,
            false,
            false,
        ),
        (
            "not Ready (a failed upgrade): kept",
            "False",
            "2027-01-15T07:00:00Z",
            0,
            false,
            true,
        ),
        (
            "in flight, Ready: kept",
            "True",
            "2027-01-15T07:00:00Z",
            0,
            true,
            true,
        ),
        (
            "Ready 5 s, minReadySeconds 10: kept",
            "True",
            "2027-01-15T07:59:55Z",
            10,
            false,
            true,
        ),
        (
            "Ready 10 s, minReadySeconds 10: none",
            "True",
            "2027-01-15T07:59:50Z",
            10,
            false,
            false,
        ),
        ("the pod missing: kept", "", "", 0, false, true),
    ];
    for (name, status, since, min_ready, in_flight_now, kept) in rows {
        let mut c = case(name, now);
        if status.is_empty() {
            c.pods.retain(|p| p.key() != KP);
        } else {
            set_ready(&mut c, status, since);
        }
        if in_flight_now {
            c.state
                .in_flight
                .push(in_flight("old-uid", KP_OWNER, NOW_MS - 1000));
        }
        let mut c = with_ds(
            c,
            Ok(Some(Strategy::AdvancedRollingUpdate)),
            Some(1),
            SlotView::Unknown,
        );
        c.fleet.get_mut(KP_OWNER).unwrap().min_ready = Duration::from_secs(min_ready);
        let needed = crate::policy::slots_needed(&c.pods, &c.state, &c.fleet, NOW_MS);
        assert_eq!(needed.contains(KP_OWNER), kept, "{name}");
    }
    // A list read before the DELETE still shows the pod a failed upgrade deleted: it is not
    // this node's available pod.
    let mut c = case("the failed upgrade's old pod, still listed", now);
    set_ready(&mut c, "True", "2027-01-15T07:00:00Z");
    c.state.blocked.push(crate::state::Blocked {
        uid: KP_UID.into(),
        ..blocked(Some("7f9c8d6b5"))
    });
    let c = with_ds(
        c,
        Ok(Some(Strategy::AdvancedRollingUpdate)),
        Some(1),
        SlotView::Unknown,
    );
    assert!(crate::policy::slots_needed(&c.pods, &c.state, &c.fleet, NOW_MS).contains(KP_OWNER));
    // The same while in flight (an upgrade that may have started, read on a stale list).
    let mut c = case("the in-flight upgrade's old pod, still listed", now);
    c.state
        .in_flight
        .push(in_flight(KP_UID, "other-ds", NOW_MS - 1000));
    let c = with_ds(
        c,
        Ok(Some(Strategy::AdvancedRollingUpdate)),
        Some(1),
        SlotView::Unknown,
    );
    assert!(crate::policy::slots_needed(&c.pods, &c.state, &c.fleet, NOW_MS).contains(KP_OWNER));
    // A DaemonSet without a budget keeps none.
    let mut c = case("no budget", now);
    set_ready(&mut c, "False", "");
    let c = with_ds(c, Ok(Some(Strategy::Ota)), None, SlotView::Unknown);
    assert!(crate::policy::slots_needed(&c.pods, &c.state, &c.fleet, NOW_MS).is_empty());
}

/// minReadySeconds: a replacement Ready for less than it has not finished the upgrade (the
/// slot is not given away); crash-looping then, it fails.
#[test]
fn an_upgrade_finishes_once_the_replacement_is_available() {
    use crate::fleet::{SlotView, Strategy};
    let now = Instant::now();
    for (since, restarts, want) in [
        ("2027-01-15T07:59:55Z", 0, "none"),
        ("2027-01-15T07:59:50Z", 0, "finished"),
        ("2027-01-15T07:59:55Z", 3, "failed"),
    ] {
        let mut c = case("replaced", now);
        let p = c.pods.iter_mut().find(|p| p.key() == KP).unwrap();
        p.metadata.uid = "new-uid".into();
        p.status.conditions.retain(|c| c.kind != "PodNeedUpgrade");
        for cd in &mut p.status.conditions {
            if cd.kind == "Ready" {
                cd.status = "True".into();
                cd.last_transition_time = since.into();
            }
        }
        p.status.container_statuses[0].restart_count = restarts;
        c.state
            .in_flight
            .push(in_flight(KP_UID, KP_OWNER, NOW_MS - 20_000));
        let mut c = with_ds(
            c,
            Ok(Some(Strategy::AdvancedRollingUpdate)),
            Some(1),
            SlotView::Unknown,
        );
        c.fleet.get_mut(KP_OWNER).unwrap().min_ready = Duration::from_secs(10);
        let d = run(&c, now);
        let got = d
            .actions
            .iter()
            .find_map(|a| match a {
                Action::Finished { .. } => Some("finished"),
                Action::Failed { .. } => Some("failed"),
                _ => None,
            })
            .unwrap_or("none");
        assert_eq!(got, want, "Ready since {since}, {restarts} restarts");
        if want == "none" {
            assert_eq!(
                d.next_look,
                Some(Duration::from_millis(5_001)),
                "looks again when available"
            );
        }
    }
}
