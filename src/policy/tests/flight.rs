//! Upgrades in flight, the pre-pull, the queue and the breaker.

use super::*;

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
                reason: "no Ready replacement for kube-system/x within policy.ready_timeout (5m)"
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

/// SPEC 6: a failure blocks that revision of that DaemonSet, at once; other DaemonSets go on.
#[test]
fn a_failure_blocks_its_daemonset_revision_and_no_other() {
    let now = Instant::now();
    let owner = "5b09aa5c-a098-4dd2-ad37-b7226b561ac0";
    let mut c = case("a timeout and free slots", now);
    c.max_concurrent = 5;
    // kube-proxy's pod, the replacement, never became Ready.
    let p = c.pods.iter_mut().find(|p| p.key() == KP).unwrap();
    for cd in &mut p.status.conditions {
        if cd.kind == "Ready" {
            cd.status = "False".into();
        }
    }
    let mut f = in_flight("gone-uid", owner, NOW_MS - 301_000);
    f.revision = Some("7f9c8d6b5".into());
    c.state.in_flight.push(f);
    let d = run(&c, now);
    assert!(d
        .actions
        .iter()
        .any(|a| matches!(a, Action::Failed { uid, .. } if uid == "gone-uid")));
    assert_eq!(upgrades(&d), vec![KN], "kindnet's DaemonSet goes on");
    assert_eq!(why(&d, KP).map(Why::word), Some("revision_failed"));
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
