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
