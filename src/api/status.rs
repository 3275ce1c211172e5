//! `GET /v1/status` and `GET /v1/readyz`: what the agent knows, decides and waits on.

use std::time::{Instant, SystemTime};

use serde_json::{json, Value};

use super::holds::hold_json;
use super::{json_response, Api, ApiError};
use crate::config::Mode;
use crate::http::Response;
use crate::pod::ImageState;
use crate::state::{self, from_unix_ms, unix_ms};

impl Api {
    /// `GET /v1/readyz`: 200 while the snapshot is fresh, else 503 with the reason.
    pub(super) fn readyz(&self, now: Instant) -> Result<Response, ApiError> {
        match self.shared.readiness(now) {
            Ok(()) => {
                let mut body = json!({"ready": true});
                if let Some(w) = self.upstream.watch_state() {
                    body["watch"] = w;
                }
                Ok(json_response(200, &body))
            }
            Err(why) => Err(ApiError::new(503, "not_ready", why)),
        }
    }

    pub(super) fn status(&self, now: Instant) -> Value {
        let c = &self.control;
        let h = self.shared.health();
        let snap = self.shared.snapshot();
        let ready = self.shared.readiness(now);
        let wall = SystemTime::now();
        let decision = c.decide(snap.as_ref().map(|s| s.pods.as_slice()));
        let st = c.store.get();
        let unavailable = c.store.unavailable();
        let iso = |ms: u64| state::rfc3339(from_unix_ms(ms));
        // One map, not a scan of the list per pod: linear in the pods (issue 9: seconds for
        // 20,000; benches/status.rs).
        let by_key: std::collections::HashMap<String, &crate::pod::Pod> = snap
            .as_ref()
            .map(|s| s.pods.iter().map(|p| (p.key(), p)).collect())
            .unwrap_or_default();
        let fleet = c.fleet.view();
        let since: std::collections::HashMap<&str, &crate::state::Outdated> =
            st.outdated.iter().map(|o| (o.uid.as_str(), o)).collect();
        let pods: Vec<Value> = decision
            .waiting
            .iter()
            .map(|(key, why, queued)| {
                let p = by_key.get(key).copied();
                let image = p.map(|p| match p.image_state() {
                    ImageState::NotRequested => "not_requested",
                    ImageState::Pending => "pending",
                    ImageState::Ready => "ready",
                });
                let (ns, name) = key.split_once('/').unwrap_or_default();
                let since = p.and_then(|p| since.get(p.metadata.uid.as_str()).copied());
                json!({
                    "namespace": ns,
                    "name": name,
                    "uid": p.map(|p| &p.metadata.uid),
                    "owner": p.and_then(|p| p.owner()).map(|o| format!("{}/{}", o.kind, o.name)),
                    "target_revision": p.and_then(|p| p.target_revision()),
                    "image": image,
                    "queued": queued,
                    "why_not_yet": why.to_string(),
                    "why_word": why.word(),
                    "strategy": p.and_then(|p| p.owner()).and_then(|o| fleet.get(&o.uid)).and_then(|ds| ds.strategy_word()),
                    "needs_upgrade_since": since.map(|o| iso(o.since_ms)),
                    // policy.max_defer: when holds and non-safety gates stop blocking it.
                    "forced_from": since.zip(c.policy.max_defer).map(|(o, m)| iso(o.since_ms + m.as_millis() as u64)),
                    "deferral_expired": since.is_some_and(|o| o.expired),
                })
            })
            .collect();
        let gates: Vec<Value> = c
            .gates
            .states()
            .iter()
            .zip(self.control.gates.notices())
            .map(|(g, (_, watch))| {
                let applies: Vec<&str> = [("upgrade", g.upgrade), ("pull", g.pull)]
                    .iter()
                    .filter(|a| a.1)
                    .map(|a| a.0)
                    .collect();
                json!({
                    "name": g.name,
                    "kind": g.kind,
                    "safety": g.safety,
                    "applies_to": applies,
                    "open": g.open,
                    "since": state::rfc3339(g.since_wall),
                    "for_seconds": now.saturating_duration_since(g.since).as_secs(),
                    "detail": g.detail,
                    "error": g.error,
                    "last_error": g.last_error.as_ref().map(|(e, t)| json!({"message": e, "at": state::rfc3339(*t)})),
                    "next_open": g.next_open.map(state::rfc3339),
                    "watch": watch,
                })
            })
            .collect();
        let now_ms = unix_ms(wall);
        let recent: Vec<Value> = self
            .shared
            .recent()
            .iter()
            .map(|o| json!({"pod": o.pod, "at": state::rfc3339(o.at), "status": o.status, "detail": o.detail}))
            .collect();
        let b = &decision.blockers;
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "mode": match c.policy.mode { Mode::Manual => "manual", Mode::Auto => "auto" },
            "ready": ready.is_ok(),
            "not_ready_reason": ready.err(),
            "gates": gates,
            "upgrade_gates_open": b.names.is_empty(),
            "upgrade_gates_stable": b.clear(),
            "blocked_by": b.names,
            "stable_in_seconds": b.stable_in.map(|d| d.as_secs_f64().ceil() as u64),
            "stable_for": crate::config::HumanDuration(c.policy.stable_for).to_string(),
            "holds": st.active_holds(now_ms).map(hold_json).collect::<Vec<_>>(),
            "breaker": match &st.breaker {
                Some(br) => json!({"tripped": true, "since": iso(br.tripped_ms), "reason": br.reason}),
                None => json!({"tripped": false}),
            },
            "blocked_revisions": st.blocked.iter().map(|b| json!({
                "daemonset": b.daemonset, "revision": b.revision, "pod": b.pod,
                "since": iso(b.tripped_ms), "reason": b.reason,
            })).collect::<Vec<_>>(),
            "in_flight": st.in_flight.iter().map(|f| json!({
                "pod": format!("{}/{}", f.namespace, f.name), "uid": f.uid, "started": iso(f.started_ms),
                "accepted": f.accepted, "may_have_started": f.uncertain, "revision": f.revision,
                "ready_deadline": iso(f.started_ms + c.policy.ready_timeout.as_millis() as u64),
            })).collect::<Vec<_>>(),
            "queue": st.queue.iter().map(|q| json!({
                "pod": format!("{}/{}", q.namespace, q.name), "uid": q.uid, "since": iso(q.at_ms), "force": q.force,
            })).collect::<Vec<_>>(),
            "state": {
                "persistent": c.store.is_persistent(),
                "writable": unavailable.is_none(),
                "error": c.store_error.clone().or(unavailable),
            },
            "upstream": {
                "kind": self.upstream.kind(),
                "url": self.upstream.url(),
                "last_success": h.last_success.map(|(_, t)| state::rfc3339(t)),
                "last_error": h.last_error.map(|(e, t)| json!({"kind": e.kind(), "message": e.to_string(), "at": state::rfc3339(t)})),
                "consecutive_failures": h.consecutive_failures,
                "imagepull_supported": c.imagepull_supported.load(std::sync::atomic::Ordering::Relaxed),
                "watch": self.upstream.watch_state(),
            },
            "snapshot": snap.as_ref().map(|s| json!({
                "pods": s.pods.len(),
                "age_seconds": self.shared.snapshot_age(now).map(|d| d.as_secs()),
            })),
            "pods_needing_upgrade": pods,
            "fleet": fleet_json(&fleet),
            "recent_upgrades": recent,
        })
    }
}

/// Per DaemonSet with a fleet budget: its slots as this node last saw them (SPEC 6b).
fn fleet_json(fleet: &crate::fleet::FleetView) -> Value {
    use crate::fleet::SlotView;
    let mut out: Vec<Value> = fleet
        .values()
        .filter_map(|ds| {
            let budget = ds.budget?;
            let (state, holders, error) = match &ds.slots {
                SlotView::Unknown => ("unknown", Vec::new(), None),
                SlotView::Held { .. } => ("held", Vec::new(), None),
                SlotView::Full { holders, .. } => ("full", holders.clone(), None),
                SlotView::Unavailable { error, .. } => ("unavailable", Vec::new(), Some(error)),
            };
            Some(json!({
                "daemonset": format!("{}/{}", ds.namespace, ds.name),
                "strategy": ds.strategy_word(),
                "budget": budget,
                "slots": state,
                "held_slot": match ds.slots { SlotView::Held { index } => Some(index), _ => None },
                "other_holders": holders,
                "error": error,
            }))
        })
        .collect();
    out.sort_by(|a, b| a["daemonset"].as_str().cmp(&b["daemonset"].as_str()));
    Value::Array(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decider::Decider;
    use crate::fleet::DaemonSetInfo;
    use crate::node_view::NodeView;
    use crate::upstream::{Relay, Upstream, UpstreamError};
    use std::sync::Arc;
    use std::time::Duration;

    struct Idle;

    impl Upstream for Idle {
        fn list_pods(&self) -> Result<Vec<u8>, UpstreamError> {
            unreachable!()
        }
        fn upgrade(&self, _: &str, _: &str) -> Result<Relay, UpstreamError> {
            unreachable!()
        }
        fn imagepull(&self, _: &str, _: &str) -> Result<Relay, UpstreamError> {
            unreachable!()
        }
        fn kind(&self) -> &'static str {
            "test"
        }
        fn url(&self) -> &str {
            "test://"
        }
    }

    #[test]
    fn status_shows_each_pods_strategy_and_the_fleet_budget() {
        let shared = Arc::new(NodeView::new(Duration::from_secs(5)));
        let mut snap = crate::snapshot::Snapshot::build(&crate::testing::fixture("1.36")).unwrap();
        let mut owners = std::collections::HashMap::new();
        for p in &mut snap.pods {
            if let Some(o) = p.owner().filter(|o| o.kind == "DaemonSet") {
                owners.insert(o.name.clone(), o.uid.clone());
                p.status.conditions.push(crate::pod::Condition {
                    kind: "PodNeedUpgrade".into(),
                    status: "True".into(),
                    reason: String::new(),
                    message: "controllerrevision: 7f9c8d6b5".into(),
                    ..Default::default()
                });
            }
        }
        shared.succeeded(Some(snap));
        let mut policy = crate::config::Settings::default().policy;
        policy.prepull = false;
        let control = Decider::new(
            crate::gate::Gates::new(Vec::new()),
            crate::state::Store::in_memory(),
            policy,
        );
        // A hold keeps the AdvancedRollingUpdate pod waiting, so it is listed.
        control.store.update(|s| {
            s.holds.push(crate::state::Hold {
                name: "nav".into(),
                reason: String::new(),
                created_ms: 0,
                expires_ms: u64::MAX,
            })
        });
        let ds = |name: &str, strategy: &str| DaemonSetInfo {
            uid: owners[name].clone(),
            namespace: "kube-system".into(),
            name: name.into(),
            strategy: Some(strategy.into()),
            max_unavailable: Some("2".into()),
            desired_number_scheduled: 5,
            min_ready_seconds: 0,
        };
        control
            .fleet
            .refresh(vec![ds("kube-proxy", "auto"), ds("kindnet", "Rolling")]);
        let api = Api::new(shared, Arc::new(Idle), None, None, Arc::new(control));
        let st = api.status(Instant::now());
        let pod = |prefix: &str| {
            st["pods_needing_upgrade"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"].as_str().unwrap().starts_with(prefix))
                .cloned()
                .unwrap()
        };
        assert_eq!(pod("kube-proxy")["strategy"], "AdvancedRollingUpdate");
        assert_eq!(
            pod("kube-proxy")["why_word"],
            "blocked",
            "manual mode, yet not `manual`"
        );
        assert_eq!(pod("kindnet")["strategy"], "unknown: Rolling");
        assert_eq!(pod("kindnet")["why_word"], "unknown_strategy");
        assert_eq!(
            st["fleet"],
            json!([{"daemonset": "kube-system/kube-proxy", "strategy": "AdvancedRollingUpdate",
                    "budget": 2, "slots": "unknown", "held_slot": null, "other_holders": [],
                    "error": null}])
        );
    }
}
