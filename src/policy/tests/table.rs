use super::*;

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
