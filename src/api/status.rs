//! `GET /v1/status` and `GET /v1/readyz`: what the agent knows, decides and waits on.

use std::time::{Instant, SystemTime};

use serde_json::{json, Value};

use super::holds::hold_json;
use super::{json_response, Api, ApiError};
use crate::config::Mode;
use crate::http::Response;
use crate::pod::ImageState;
use crate::sim;
use crate::state::{from_unix_ms, unix_ms};

impl Api {
    /// `GET /v1/readyz`: 200 while the snapshot is fresh, else 503 with the reason.
    pub(super) fn readyz(&self, now: Instant) -> Result<Response, ApiError> {
        match self.shared.readiness(now) {
            Ok(()) => Ok(json_response(200, &json!({"ready": true}))),
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
        let iso = |ms: u64| sim::rfc3339(from_unix_ms(ms));
        // One map, not a scan of the list per pod: linear in the pods (issue 9: seconds for
        // 20,000; benches/status.rs).
        let by_key: std::collections::HashMap<String, &crate::pod::Pod> = snap
            .as_ref()
            .map(|s| s.pods.iter().map(|p| (p.key(), p)).collect())
            .unwrap_or_default();
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
                    "since": sim::rfc3339(g.since_wall),
                    "for_seconds": now.saturating_duration_since(g.since).as_secs(),
                    "detail": g.detail,
                    "error": g.error,
                    "last_error": g.last_error.as_ref().map(|(e, t)| json!({"message": e, "at": sim::rfc3339(*t)})),
                    "next_open": g.next_open.map(sim::rfc3339),
                    "watch": watch,
                })
            })
            .collect();
        let now_ms = unix_ms(wall);
        let recent: Vec<Value> = self
            .shared
            .recent()
            .iter()
            .map(|o| json!({"pod": o.pod, "at": sim::rfc3339(o.at), "status": o.status, "detail": o.detail}))
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
            "stable_for": crate::config::format_duration(c.policy.stable_for),
            "holds": st.active_holds(now_ms).map(hold_json).collect::<Vec<_>>(),
            "breaker": match &st.breaker {
                Some(br) => json!({"tripped": true, "since": iso(br.tripped_ms), "reason": br.reason}),
                None => json!({"tripped": false}),
            },
            "in_flight": st.in_flight.iter().map(|f| json!({
                "pod": format!("{}/{}", f.namespace, f.name), "uid": f.uid, "started": iso(f.started_ms),
                "accepted": f.accepted,
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
                "last_success": h.last_success.map(|(_, t)| sim::rfc3339(t)),
                "last_error": h.last_error.map(|(e, t)| json!({"kind": e.kind(), "message": e.to_string(), "at": sim::rfc3339(t)})),
                "consecutive_failures": h.consecutive_failures,
                "imagepull_supported": c.imagepull_supported.load(std::sync::atomic::Ordering::Relaxed),
            },
            "snapshot": snap.as_ref().map(|s| json!({
                "pods": s.pods.len(),
                "age_seconds": self.shared.snapshot_age(now).map(|d| d.as_secs()),
            })),
            "pods_needing_upgrade": pods,
            "recent_upgrades": recent,
        })
    }
}
