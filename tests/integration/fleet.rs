//! The fleet budget's Lease slots over real HTTPS against the apiserver stand-in (its Lease
//! store with resourceVersion compare-and-swap): `fleet::kube::LeaseApi` with ureq over rustls
//! as the request client, several nodes racing, and a holder that dies.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use yurt_ota::fleet::kube::{Kube, LeaseApi};
use yurt_ota::fleet::{Observed, SlotOutcome, Slots};
use yurt_ota_apisim::apiserver::server::Handle;
use yurt_ota_apisim::apiserver::Options;

use crate::util::{apisim_nodes, apisim_start, ApiClient};

fn start() -> (Handle, tempfile::TempDir) {
    let options = Options {
        nodes: apisim_nodes(5),
        ..Options::default()
    };
    apisim_start(Duration::from_millis(300), options, |_| {})
}

/// The request client: `ApiClient` (ureq over rustls, the stand-in's CA as the only root,
/// its token).
struct Https(ApiClient);

impl Https {
    fn new(h: &Handle) -> Https {
        Https(ApiClient::new(h))
    }
}

impl Kube for Https {
    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<(u16, Vec<u8>), String> {
        self.0.call(method, path, "application/json", body)
    }
}

#[test]
fn five_nodes_racing_over_https_never_hold_more_than_the_budget() {
    let (h, _d) = start();
    let active = AtomicU32::new(0);
    let most = AtomicU32::new(0);
    let rounds = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for i in 1..=5 {
            let (h, active, most, rounds) = (&h, &active, &most, &rounds);
            s.spawn(move || {
                let node = format!("edge-node-{i}");
                let api = LeaseApi(std::sync::Arc::new(Https::new(h)));
                let observed = Observed::default();
                let slots = Slots {
                    leases: &api,
                    holder: &node,
                    duration: Duration::from_secs(30),
                    margin: Duration::from_secs(1),
                    observed: &observed,
                    label: None,
                    revision: None,
                };
                for _ in 0..2 {
                    let deadline = Instant::now() + Duration::from_secs(30);
                    let mut slot = loop {
                        match slots.acquire("yurt-ota", "edge-apps.gw", 2, SystemTime::now()) {
                            Ok(SlotOutcome::Taken(slot)) => break slot,
                            Ok(SlotOutcome::Full { holders }) => assert!(holders.len() <= 2),
                            Err(e) => panic!("{node}: {e}"),
                        }
                        assert!(Instant::now() < deadline, "{node} never got a slot");
                        std::thread::sleep(Duration::from_millis(20));
                    };
                    // Between taking and releasing: the "upgrade", renewed once.
                    let n = active.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(n, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(60));
                    slots.renew(&mut slot, SystemTime::now()).unwrap();
                    std::thread::sleep(Duration::from_millis(60));
                    active.fetch_sub(1, Ordering::SeqCst);
                    slots.release(&slot).unwrap();
                    rounds.lock().unwrap().push(node.clone());
                }
            });
        }
    });
    assert_eq!(
        rounds.lock().unwrap().len(),
        10,
        "every node upgraded twice"
    );
    let most = most.load(Ordering::SeqCst);
    assert!(most <= 2, "{most} nodes held a slot at once");
    assert_eq!(most, 2, "the budget was used, not serialized");
    // All released: nobody holds a slot now.
    let api = LeaseApi(std::sync::Arc::new(Https::new(&h)));
    use yurt_ota::fleet::Leases;
    for i in 0..2 {
        let l = api
            .get("yurt-ota", &format!("edge-apps.gw.{i}"))
            .unwrap()
            .unwrap();
        assert_eq!(l.holder, None, "{l:?}");
    }
}

#[test]
fn a_holder_that_dies_frees_its_slot_at_lease_expiry_plus_margin() {
    let (h, _d) = start();
    let api = LeaseApi(std::sync::Arc::new(Https::new(&h)));
    let (seen_1, seen_2) = (Observed::default(), Observed::default());
    let slots = |node| Slots {
        leases: &api,
        holder: node,
        duration: Duration::from_secs(2),
        margin: Duration::from_secs(1),
        observed: if node == "edge-node-1" {
            &seen_1
        } else {
            &seen_2
        },
        label: None,
        revision: None,
    };
    let taken = Instant::now();
    assert!(matches!(
        slots("edge-node-1").acquire("yurt-ota", "edge-apps.gw", 1, SystemTime::now()),
        Ok(SlotOutcome::Taken(_))
    ));
    // edge-node-1 is killed: it never renews nor releases. edge-node-2 waits for expiry.
    let got = loop {
        match slots("edge-node-2").acquire("yurt-ota", "edge-apps.gw", 1, SystemTime::now()) {
            Ok(SlotOutcome::Taken(slot)) => break slot,
            Ok(SlotOutcome::Full { holders }) => assert_eq!(holders, ["edge-node-1"]),
            Err(e) => panic!("{e}"),
        }
        assert!(taken.elapsed() < Duration::from_secs(10), "never freed");
        std::thread::sleep(Duration::from_millis(50));
    };
    let waited = taken.elapsed();
    assert!(
        waited >= Duration::from_millis(2900),
        "taken over before expiry + margin: {waited:?}"
    );
    assert_eq!(got.lease.holder.as_deref(), Some("edge-node-2"));
    assert_eq!(got.lease.lease_transitions, 1);
}
