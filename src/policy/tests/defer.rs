//! `policy.max_defer`: needing upgrade since, and what a deferral that ran out forces past.

use super::*;

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
