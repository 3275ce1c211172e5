//! The YurtHub routes (SPEC section 3): `GET /pods` from the snapshot, and the gated upgrade and
//! imagepull forwarded to the upstream with its answer relayed verbatim.

use std::borrow::Cow;
use std::time::{Instant, SystemTime};

use serde_json::json;

use super::{json_response, query_value, state_unavailable, Api, ApiError, Endpoint, JSON, TEXT};
use crate::config::OnClosed;
use crate::excerpt::excerpt;
use crate::gate::Purpose;
use crate::http::{Body, Response};
use crate::node_view::Outcome;
use crate::policy;
use crate::state::{unix_ms, Hold, Queued};
use crate::upstream::{Relay, UpstreamError};

impl Api {
    pub(super) fn pods(&self, now: Instant) -> Result<Response, ApiError> {
        let Some(snap) = self.shared.snapshot() else {
            let why = self.shared.readiness(now).err().unwrap_or_default();
            return Err(ApiError::new(
                503,
                "no_snapshot",
                format!("no pod list has been read from the upstream yet ({why})"),
            ));
        };
        let age = self.shared.snapshot_age(now).unwrap_or_default().as_secs();
        Ok(Response {
            status: 200,
            content_type: Cow::Borrowed(JSON),
            headers: vec![("X-Yurt-Ota-Snapshot-Age", age.to_string())],
            // The pre-rendered list, shared with the snapshot rather than copied.
            body: Body::Shared(snap),
        })
    }

    /// The gated upgrade (SPEC sections 3 and 5): forwarded only when the gates are open and
    /// stable and read open afresh now; else 409, or queued with `?when=idle`.
    pub(super) fn upgrade(&self, ns: &str, pod: &str, query: &str) -> Result<Response, ApiError> {
        let c = &self.control;
        let (now, wall) = (Instant::now(), SystemTime::now());
        // A pod past policy.max_defer is treated as forced (SPEC 6b).
        let deferred = || {
            c.policy.max_defer?;
            let snap = self.shared.snapshot()?;
            let p = snap
                .pods
                .iter()
                .find(|p| p.metadata.namespace == ns && p.metadata.name == pod)?;
            let over = |s: &crate::state::State| {
                policy::deferral_over(s, &p.metadata.uid, unix_ms(wall), c.policy.max_defer)
            };
            Some(c.store.read(over))
        };
        let force = query_value(query, "force") == Some("true") || deferred() == Some(true);
        let queue =
            query_value(query, "when") == Some("idle") || c.policy.on_closed == OnClosed::Queue;
        let gates = c.gates.states();
        let holds: Vec<Hold> = c
            .store
            .read(|s| s.active_holds(unix_ms(wall)).cloned().collect());
        let hold_refs: Vec<&Hold> = holds.iter().collect();
        let b = policy::blockers(&gates, &hold_refs, force, now, c.policy.stable_for);
        let blocked_by = if b.clear() {
            // The moment of action: every upgrade gate read afresh.
            let closed = c.gates.recheck(Purpose::Upgrade, force);
            if closed.is_empty() {
                return self.forward(Endpoint::Upgrade, ns, pod);
            }
            closed
        } else if b.names.is_empty() {
            b.settling.clone()
        } else {
            b.names.clone()
        };
        if queue {
            return self.enqueue(ns, pod, force, blocked_by);
        }
        let retry = policy::retry_after(&gates, &hold_refs, &b, wall, c.policy.stable_for);
        Err(gate_closed(ns, pod, blocked_by, retry, "upgrade"))
    }

    pub(super) fn enqueue(
        &self,
        ns: &str,
        pod: &str,
        force: bool,
        blocked_by: Vec<String>,
    ) -> Result<Response, ApiError> {
        let key = format!("{ns}/{pod}");
        let snap = self.shared.snapshot();
        let p = snap
            .as_ref()
            .and_then(|s| {
                s.pods
                    .iter()
                    .find(|p| p.metadata.namespace == ns && p.metadata.name == pod)
            })
            .ok_or_else(|| {
                ApiError::new(
                    404,
                    "pod_not_found",
                    format!("{key} is not in the node's pod list; it cannot be queued"),
                )
            })?;
        if !p.upgrade_offered() || p.is_deleting() {
            return Err(ApiError::new(409, "not_upgradable", format!("{key} does not need upgrade (PodNeedUpgrade is not True, or it is being deleted)")));
        }
        let uid = p.metadata.uid.clone();
        // Durable before the 202: the queue survives a restart.
        let (position, new) = self
            .control
            .store
            .commit(|s| {
                if let Some(i) = s.queue.iter().position(|q| q.uid == uid) {
                    // Asked again: a force from either request stands.
                    s.queue[i].force |= force;
                    return (i, false);
                }
                s.queue.push(Queued {
                    namespace: ns.to_owned(),
                    name: pod.to_owned(),
                    uid: uid.clone(),
                    at_ms: unix_ms(SystemTime::now()),
                    force,
                });
                s.event(
                    SystemTime::now(),
                    "queued",
                    Some(&key),
                    format!("waiting for {}", blocked_by.join(", ")),
                );
                (s.queue.len() - 1, true)
            })
            .map_err(state_unavailable)?;
        if new {
            log::info!(
                "{key} queued: upgraded when {} allow",
                blocked_by.join(", ")
            );
        }
        Ok(json_response(
            202,
            &json!({"queued": true, "pod": key, "uid": uid, "position": position, "force": force, "blocked_by": blocked_by}),
        ))
    }

    /// The imagepull: forwarded only when every pull gate reads open now.
    pub(super) fn imagepull(&self, ns: &str, pod: &str) -> Result<Response, ApiError> {
        let closed = self.control.gates.recheck(Purpose::Pull, false);
        if !closed.is_empty() {
            return Err(gate_closed(ns, pod, closed, None, "pull"));
        }
        self.forward(Endpoint::Imagepull, ns, pod)
    }

    /// Forwards an upgrade or imagepull upstream and relays the answer.
    pub(super) fn forward(
        &self,
        endpoint: Endpoint,
        ns: &str,
        pod: &str,
    ) -> Result<Response, ApiError> {
        let (call, result) = match endpoint {
            Endpoint::Upgrade => ("upgrade", self.upstream.upgrade(ns, pod)),
            _ => ("imagepull", self.upstream.imagepull(ns, pod)),
        };
        let key = format!("{ns}/{pod}");
        self.shared
            .metrics
            .upstream_call(call, result.as_ref().map_or(0, |r| r.status));
        match result {
            Ok(relay) => {
                log::info!(
                    "{call} {key}: upstream answered {} {}",
                    relay.status,
                    excerpt(&relay.body)
                );
                if call == "upgrade" {
                    let detail = format!("{} {}", relay.status, excerpt(&relay.body));
                    self.control.store.update(|s| {
                        s.event(
                            SystemTime::now(),
                            "upgrade_requested",
                            Some(&key),
                            format!("API upgrade forwarded; upstream answered {detail}"),
                        )
                    });
                    self.shared.record_outcome(Outcome {
                        pod: key,
                        at: SystemTime::now(),
                        status: relay.status,
                        detail: excerpt(&relay.body),
                    });
                }
                Ok(relayed(relay))
            }
            Err(e) => {
                log::warn!("{call} {key}: upstream {} {e}", self.upstream.url());
                if call == "upgrade" {
                    self.shared.record_outcome(Outcome {
                        pod: key.clone(),
                        at: SystemTime::now(),
                        status: 0,
                        detail: e.to_string(),
                    });
                }
                Err(match e {
                    UpstreamError::Timeout(_) => ApiError::new(
                        504,
                        "upstream_timeout",
                        format!("{} did not answer the {call} of {key} in time; it may have started, see GET /pods", self.upstream.url()),
                    ),
                    // Reached, and the connection broke before the answer (issue 23, item 1):
                    // the call may have been carried out; never "cannot reach".
                    e @ UpstreamError::Io(_) => ApiError::new(
                        504,
                        "upstream_no_answer",
                        format!("{} received the {call} of {key} and no valid answer came back ({e}): it may have started, see GET /pods before asking again", self.upstream.url()),
                    ),
                    e => ApiError::new(502, "upstream_unreachable", format!("cannot reach {} for the {call} of {key}: {e}", self.upstream.url())),
                })
            }
        }
    }
}

/// 409 `gate_closed`, naming what blocks, with `Retry-After` when it can be estimated.
fn gate_closed(
    ns: &str,
    pod: &str,
    blocked_by: Vec<String>,
    retry: Option<std::time::Duration>,
    call: &str,
) -> ApiError {
    // Only upgrades can be queued.
    let hint = if call == "upgrade" {
        " (add ?when=idle to queue it)"
    } else {
        ""
    };
    let mut e = ApiError::new(
        409,
        "gate_closed",
        format!(
            "the {call} of {ns}/{pod} is not allowed now: {}{hint}",
            blocked_by.join(", ")
        ),
    );
    let secs = retry.map(|d| d.as_secs_f64().ceil() as u64);
    e.extra = Some(json!({"blocked_by": blocked_by, "retry_after_seconds": secs}));
    e.retry_after = secs;
    e
}

/// An upstream answer, verbatim.
fn relayed(r: Relay) -> Response {
    let ct = r.content_type.map_or(Cow::Borrowed(TEXT), Cow::Owned);
    Response::new(r.status, ct, r.body)
}
