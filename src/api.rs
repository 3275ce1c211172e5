//! The local API (SPEC section 3): YurtHub-compatible routes for device apps, and the agent's
//! own routes, served by the small blocking server in `http`.
//!
//! `route` maps a method and path to an `Endpoint`; `ApiError::reply` is the one place an error
//! becomes an HTTP response. A panic in one request is caught and answered with 500.

use std::borrow::Cow;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use serde_json::{json, Value};

use crate::agent::{Control, Outcome, Shared};
use crate::config::{ApiSettings, Listen, Mode, OnClosed};
use crate::gate::Purpose;
use crate::http::{self, Body, Request, Response};
use crate::names;
use crate::pod::ImageState;
use crate::policy;
use crate::sim;
use crate::state::{self, from_unix_ms, unix_ms, Hold, Queued};
use crate::upstream::{excerpt, Relay, Upstream, UpstreamError};

/// A hold lasts at most this long: an app that crashed holding one cannot block forever.
pub const MAX_HOLD_TTL: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// Request bodies above this are refused with 413.
pub const MAX_REQUEST_BODY: usize = 64 * 1024;
/// Request heads (request line and headers) above this are refused with 431.
pub const MAX_REQUEST_HEAD: usize = 16 * 1024;

const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";

/// What a path names, before its method is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Pods,
    Upgrade,
    Imagepull,
    Healthz,
    Readyz,
    Status,
    Metrics,
    Holds,
    Hold,
    BreakerReset,
    Events,
    /// `/sim/...`, when the upstream is the in-process simulator.
    Sim,
}

impl Endpoint {
    /// The metrics label: a route template, never the raw path.
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Pods => "pods",
            Endpoint::Upgrade => "upgrade",
            Endpoint::Imagepull => "imagepull",
            Endpoint::Healthz => "healthz",
            Endpoint::Readyz => "readyz",
            Endpoint::Status => "status",
            Endpoint::Metrics => "metrics",
            Endpoint::Holds => "holds",
            Endpoint::Hold => "hold",
            Endpoint::BreakerReset => "breaker_reset",
            Endpoint::Events => "events",
            Endpoint::Sim => "sim",
        }
    }

    fn allow(self) -> &'static str {
        match self {
            Endpoint::Upgrade | Endpoint::Imagepull | Endpoint::BreakerReset => "POST",
            Endpoint::Hold => "GET, PUT, DELETE",
            Endpoint::Sim => "GET, POST",
            _ => "GET",
        }
    }
}

/// A route with its parameters, checked: method allowed and names valid.
#[derive(Debug, PartialEq, Eq)]
pub struct Route<'a> {
    pub endpoint: Endpoint,
    /// `(namespace, pod)` for upgrade and imagepull.
    pub pod: Option<(&'a str, &'a str)>,
    /// The hold's name for `/v1/holds/{name}`.
    pub hold: Option<&'a str>,
}

/// The routing table. `Err` carries the endpoint (for metrics) when the path was known.
pub fn route<'a>(method: &str, path: &'a str) -> Result<Route<'a>, (Option<Endpoint>, ApiError)> {
    let parts: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    let mut hold = None;
    let (endpoint, pod) = match parts.as_slice() {
        ["pods"] => (Endpoint::Pods, None),
        ["v1", "holds"] => (Endpoint::Holds, None),
        ["v1", "holds", name] => {
            hold = Some(*name);
            (Endpoint::Hold, None)
        }
        ["v1", "breaker", "reset"] => (Endpoint::BreakerReset, None),
        ["v1", "events"] => (Endpoint::Events, None),
        ["openyurt.io", "v1", "namespaces", ns, "pods", pod, "upgrade"] => {
            (Endpoint::Upgrade, Some((*ns, *pod)))
        }
        ["openyurt.io", "v1", "namespaces", ns, "pods", pod, "imagepull"] => {
            (Endpoint::Imagepull, Some((*ns, *pod)))
        }
        ["v1", "healthz"] => (Endpoint::Healthz, None),
        ["v1", "readyz"] => (Endpoint::Readyz, None),
        ["v1", "status"] => (Endpoint::Status, None),
        ["metrics"] => (Endpoint::Metrics, None),
        ["sim", ..] => (Endpoint::Sim, None),
        _ => {
            return Err((
                None,
                ApiError::new(
                    404,
                    "not_found",
                    format!("no route {path}; see /v1/status for what this agent serves"),
                ),
            ))
        }
    };
    if !endpoint.allow().split(", ").any(|m| m == method) {
        let e = ApiError::new(
            405,
            "method_not_allowed",
            format!("{path} takes {}, not {method}", endpoint.allow()),
        );
        return Err((
            Some(endpoint),
            ApiError {
                allow: Some(endpoint.allow()),
                ..e
            },
        ));
    }
    if let Some((ns, pod)) = pod {
        let bad = names::check_label(ns)
            .map_err(|e| format!("namespace {e}"))
            .and_then(|_| names::check_subdomain(pod).map_err(|e| format!("pod name {e}")));
        if let Err(message) = bad {
            return Err((Some(endpoint), ApiError::new(400, "invalid_name", message)));
        }
    }
    if let Some(name) = hold {
        if let Err(message) = names::check_plain(name).map_err(|e| format!("hold name {e}")) {
            return Err((Some(endpoint), ApiError::new(400, "invalid_name", message)));
        }
    }
    Ok(Route {
        endpoint,
        pod,
        hold,
    })
}

/// The value of `key` in a query string, if present.
fn query_value<'q>(query: &'q str, key: &str) -> Option<&'q str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// An error this agent produces: `{"error": word, "message": sentence, ...extra}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub error: &'static str,
    pub message: String,
    pub extra: Option<Value>,
    pub allow: Option<&'static str>,
    /// Seconds, for a `Retry-After` header.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: u16, error: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            error,
            message: message.into(),
            extra: None,
            allow: None,
            retry_after: None,
        }
    }

    /// The one place an error becomes a response.
    fn reply(self) -> Response {
        let mut body = json!({"error": self.error, "message": self.message});
        if let (Some(Value::Object(extra)), Value::Object(b)) = (self.extra, &mut body) {
            b.extend(extra);
        }
        let mut r = json_response(self.status, &body);
        if let Some(allow) = self.allow {
            r.headers.push(("Allow", allow.into()));
        }
        if let Some(secs) = self.retry_after {
            r.headers.push(("Retry-After", secs.to_string()));
        }
        r
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

fn hold_json(h: &Hold) -> Value {
    json!({
        "name": h.name,
        "reason": h.reason,
        "created": sim::rfc3339(from_unix_ms(h.created_ms)),
        "expires": sim::rfc3339(from_unix_ms(h.expires_ms)),
    })
}

fn json_response(status: u16, v: &Value) -> Response {
    Response::new(status, JSON, v.to_string().into_bytes())
}

/// An upstream answer, verbatim.
fn relayed(r: Relay) -> Response {
    let ct = r.content_type.map_or(Cow::Borrowed(TEXT), Cow::Owned);
    Response::new(r.status, ct, r.body)
}

/// The request-handling side of the agent.
pub struct Api {
    shared: Arc<Shared>,
    upstream: Arc<dyn Upstream>,
    sim: Option<Arc<sim::Node>>,
    token: Option<String>,
    control: Arc<Control>,
}

impl Api {
    pub fn new(
        shared: Arc<Shared>,
        upstream: Arc<dyn Upstream>,
        sim: Option<Arc<sim::Node>>,
        token: Option<String>,
        control: Arc<Control>,
    ) -> Api {
        Api {
            shared,
            upstream,
            sim,
            token,
            control,
        }
    }

    fn dispatch(&self, req: &Request) -> (&'static str, Result<Response, ApiError>) {
        let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
        let route = match route(&req.method, path) {
            Ok(r) => r,
            Err((endpoint, e)) => return (endpoint.map_or("unknown", Endpoint::name), Err(e)),
        };
        let label = route.endpoint.name();
        (label, self.serve(route, req, path, query))
    }

    fn serve(
        &self,
        route: Route,
        req: &Request,
        path: &str,
        query: &str,
    ) -> Result<Response, ApiError> {
        if req.method != "GET" {
            self.authorize(req)?;
        }
        let now = Instant::now();
        match route.endpoint {
            Endpoint::Pods => self.pods(now),
            Endpoint::Upgrade => {
                let (ns, pod) = route.pod.expect("pod routes carry a pod");
                self.upgrade(ns, pod, query)
            }
            Endpoint::Imagepull => {
                let (ns, pod) = route.pod.expect("pod routes carry a pod");
                let closed = self.control.gates.recheck(Purpose::Pull, false);
                if !closed.is_empty() {
                    return Err(gate_closed(ns, pod, closed, None, "pull"));
                }
                self.forward(route.endpoint, ns, pod)
            }
            Endpoint::Holds => Ok(json_response(200, &json!({"holds": self.holds()}))),
            Endpoint::Hold => {
                let name = route.hold.expect("hold routes carry a name");
                self.hold(&req.method, name, &req.body)
            }
            Endpoint::BreakerReset => {
                let was = self.control.store.update(|s| {
                    let was = s.breaker.take();
                    if let Some(b) = &was {
                        log::info!("circuit breaker reset by the API (was: {})", b.reason);
                        s.event(
                            SystemTime::now(),
                            "breaker_reset",
                            None,
                            format!("reset by the API; it had tripped: {}", b.reason),
                        );
                    }
                    was
                });
                Ok(json_response(
                    200,
                    &json!({"tripped": false, "was_tripped": was.is_some(), "reason": was.map(|b| b.reason)}),
                ))
            }
            Endpoint::Events => {
                let limit = match query_value(query, "limit") {
                    None => 50,
                    Some(v) => v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                        ApiError::new(
                            400,
                            "invalid_limit",
                            format!(
                                "limit={v:?}: give a whole number from 1 to {}",
                                state::MAX_EVENTS
                            ),
                        )
                    })?,
                };
                let events: Vec<Value> = self.control.store.read(|s| {
                    s.events
                        .iter()
                        .take(limit)
                        .map(|e| json!({"at": sim::rfc3339(from_unix_ms(e.at_ms)), "kind": e.kind, "pod": e.pod, "message": e.message}))
                        .collect()
                });
                Ok(json_response(200, &json!({"events": events})))
            }
            Endpoint::Healthz => Ok(Response::new(200, TEXT, b"ok".to_vec())),
            Endpoint::Readyz => match self.shared.readiness(now) {
                Ok(()) => Ok(json_response(200, &json!({"ready": true}))),
                Err(why) => Err(ApiError::new(503, "not_ready", why)),
            },
            Endpoint::Status => Ok(json_response(200, &self.status(now))),
            Endpoint::Metrics => Ok(Response::new(
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                self.shared.metrics.render(&self.gauges(now)).into_bytes(),
            )),
            Endpoint::Sim => match &self.sim {
                Some(node) => {
                    let a = node.handle(now, &req.method, &format!("{path}?{query}"));
                    Ok(Response::new(a.status, a.content_type, a.body))
                }
                None => Err(ApiError::new(
                    404,
                    "not_found",
                    "the /sim routes exist only with upstream.kind = \"sim\"",
                )),
            },
        }
    }

    fn authorize(&self, req: &Request) -> Result<(), ApiError> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        let given = req
            .header("Authorization")
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(g) if constant_time_eq(g.trim().as_bytes(), token.as_bytes()) => Ok(()),
            _ => Err(ApiError::new(
                401,
                "unauthorized",
                "this call needs the header Authorization: Bearer <token from api.token_file>",
            )),
        }
    }

    fn pods(&self, now: Instant) -> Result<Response, ApiError> {
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
    fn upgrade(&self, ns: &str, pod: &str, query: &str) -> Result<Response, ApiError> {
        let c = &self.control;
        let force = query_value(query, "force") == Some("true");
        let queue =
            query_value(query, "when") == Some("idle") || c.policy.on_closed == OnClosed::Queue;
        let (now, wall) = (Instant::now(), SystemTime::now());
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

    fn enqueue(
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
        let position = self.control.store.update(|s| {
            if let Some(i) = s.queue.iter().position(|q| q.uid == uid) {
                // Asked again: a force from either request stands.
                s.queue[i].force |= force;
                return i;
            }
            s.queue.push(Queued {
                namespace: ns.to_owned(),
                name: pod.to_owned(),
                uid: uid.clone(),
                at_ms: unix_ms(SystemTime::now()),
                force,
            });
            log::info!(
                "{key} queued: upgraded when {} allow",
                blocked_by.join(", ")
            );
            s.event(
                SystemTime::now(),
                "queued",
                Some(&key),
                format!("waiting for {}", blocked_by.join(", ")),
            );
            s.queue.len() - 1
        });
        Ok(json_response(
            202,
            &json!({"queued": true, "pod": key, "uid": uid, "position": position, "force": force, "blocked_by": blocked_by}),
        ))
    }

    fn holds(&self) -> Vec<Value> {
        let now_ms = unix_ms(SystemTime::now());
        self.control
            .store
            .read(|s| s.active_holds(now_ms).map(hold_json).collect())
    }

    fn hold(&self, method: &str, name: &str, body: &[u8]) -> Result<Response, ApiError> {
        let now = SystemTime::now();
        let now_ms = unix_ms(now);
        match method {
            "GET" => {
                let h = self
                    .control
                    .store
                    .read(|s| s.active_holds(now_ms).find(|h| h.name == name).cloned());
                h.map(|h| json_response(200, &hold_json(&h)))
                    .ok_or_else(|| {
                        ApiError::new(404, "not_found", format!("no active hold {name:?}"))
                    })
            }
            "DELETE" => {
                let existed = self.control.store.update(|s| {
                    let before = s.holds.len();
                    s.holds.retain(|h| h.name != name);
                    let existed = s.holds.len() != before;
                    if existed {
                        log::info!("hold {name} released");
                        s.event(now, "hold_released", None, format!("hold {name} released"));
                    }
                    existed
                });
                if existed {
                    Ok(Response::new(204, TEXT, Vec::new()))
                } else {
                    Err(ApiError::new(404, "not_found", format!("no hold {name:?}")))
                }
            }
            _ => {
                let bad = |m: String| ApiError::new(400, "invalid_hold", m);
                let v: Value = serde_json::from_slice(body).map_err(|e| {
                    bad(format!("the body must be JSON like {{\"ttl\":\"30m\",\"reason\":\"navigation active\"}}: {e}"))
                })?;
                let ttl = v.get("ttl").and_then(Value::as_str).ok_or_else(|| {
                    bad("\"ttl\" is required, e.g. \"30m\": a hold always expires".into())
                })?;
                let ttl =
                    crate::config::parse_duration(ttl).map_err(|e| bad(format!("ttl: {e}")))?;
                if ttl.is_zero() || ttl > MAX_HOLD_TTL {
                    return Err(bad(format!(
                        "ttl must be more than zero and at most {}",
                        crate::config::format_duration(MAX_HOLD_TTL)
                    )));
                }
                let reason = match v.get("reason") {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(r)) if r.len() <= 1024 => r.clone(),
                    Some(_) => {
                        return Err(bad(
                            "\"reason\" must be a string of at most 1024 bytes".into()
                        ))
                    }
                };
                let hold = Hold {
                    name: name.to_owned(),
                    reason,
                    created_ms: now_ms,
                    expires_ms: now_ms + ttl.as_millis() as u64,
                };
                self.control.store.update(|s| {
                    s.holds.retain(|h| h.name != name);
                    s.holds.push(hold.clone());
                    let msg = format!(
                        "hold {name} set for {} ({})",
                        crate::config::format_duration(ttl),
                        hold.reason
                    );
                    log::info!("{msg}");
                    s.event(now, "hold_set", None, msg);
                });
                Ok(json_response(200, &hold_json(&hold)))
            }
        }
    }

    fn gauges(&self, now: Instant) -> crate::metrics::Gauges {
        let c = &self.control;
        let now_ms = unix_ms(SystemTime::now());
        let (holds, breaker, in_flight, queued) = c.store.read(|s| {
            (
                s.active_holds(now_ms).count(),
                s.breaker.is_some(),
                s.in_flight.len(),
                s.queue.len(),
            )
        });
        let gates = c.gates.states();
        let open = gates.iter().all(|g| !g.upgrade || g.open) && holds == 0;
        crate::metrics::Gauges {
            gates: gates
                .into_iter()
                .map(|g| crate::metrics::GateGauge {
                    name: g.name,
                    safety: g.safety,
                    open: g.open,
                    changes: g.changes,
                })
                .collect(),
            upgrade_gates_open: open,
            holds,
            breaker_tripped: breaker,
            in_flight,
            queued,
            ..self.shared.gauges(now)
        }
    }

    /// Forwards an upgrade or imagepull upstream and relays the answer.
    fn forward(&self, endpoint: Endpoint, ns: &str, pod: &str) -> Result<Response, ApiError> {
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
                        format!("{} did not answer the {call} of {key} in time; it may or may not have started, see GET /pods", self.upstream.url()),
                    ),
                    e => ApiError::new(502, "upstream_unreachable", format!("cannot reach {} for the {call} of {key}: {e}", self.upstream.url())),
                })
            }
        }
    }

    fn status(&self, now: Instant) -> Value {
        let c = &self.control;
        let h = self.shared.health();
        let snap = self.shared.snapshot();
        let ready = self.shared.readiness(now);
        let wall = SystemTime::now();
        let decision = c.decide(snap.as_ref().map(|s| s.pods.as_slice()));
        let st = c.store.get();
        let iso = |ms: u64| sim::rfc3339(from_unix_ms(ms));
        let pods: Vec<Value> = decision
            .waiting
            .iter()
            .map(|(key, why, queued)| {
                let p = snap
                    .as_ref()
                    .and_then(|s| s.pods.iter().find(|p| p.key() == *key));
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
            .map(|g| {
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
                "error": c.store_error.clone().or_else(|| c.store.write_error()),
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

/// Compares without an early exit, so the time taken does not tell how much of a guess matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads the bearer token; config checks it the same way at load.
pub use crate::config::read_token;

impl http::Handler for Api {
    /// Answers one request; a panic inside is answered 500 and the server carries on.
    fn handle(&self, req: Request) -> Response {
        let (label, resp) = match catch_unwind(AssertUnwindSafe(|| self.dispatch(&req))) {
            Ok((label, Ok(resp))) => (label, resp),
            Ok((label, Err(e))) => (label, e.reply()),
            Err(_) => {
                log::error!(
                    "request {} {} panicked; answered 500",
                    req.method,
                    req.target
                );
                (
                    "panic",
                    ApiError::new(
                        500,
                        "internal",
                        "the agent failed on this request; see its log",
                    )
                    .reply(),
                )
            }
        };
        self.shared.metrics.request(label, resp.status);
        resp
    }

    fn reject(&self, status: u16, error: &'static str, message: String) -> Response {
        self.shared.metrics.request("http", status);
        ApiError::new(status, error, message).reply()
    }
}

/// The server's limits from the settings.
pub fn limits(api: &ApiSettings) -> http::Limits {
    http::Limits {
        max_connections: api.max_connections,
        max_head: MAX_REQUEST_HEAD,
        max_body: MAX_REQUEST_BODY,
        timeout: api.connection_timeout,
    }
}

/// Binds the API socket. A stale Unix socket from an earlier run is replaced.
pub fn bind(listen: &Listen) -> Result<http::Listener, String> {
    let fail = |e: std::io::Error| {
        format!("cannot listen on {listen} (api.listen): {e}; is another yurt-ota running?")
    };
    match listen {
        Listen::Tcp(addr) => std::net::TcpListener::bind(addr)
            .map(http::Listener::Tcp)
            .map_err(fail),
        Listen::Unix(path) => {
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            if std::fs::symlink_metadata(path).is_ok_and(|m| {
                use std::os::unix::fs::FileTypeExt;
                m.file_type().is_socket()
            }) {
                let _ = std::fs::remove_file(path);
            }
            let l = std::os::unix::net::UnixListener::bind(path).map_err(fail)?;
            // Read and write for the service's user and group, whatever the umask: device apps
            // reach the socket by joining the group (the unit sets UMask=0027).
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(fail)?;
            Ok(http::Listener::Unix(l, path.clone()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn err(method: &str, path: &str) -> (Option<Endpoint>, u16, &'static str) {
        let (ep, e) = route(method, path).unwrap_err();
        (ep, e.status, e.error)
    }

    #[test]
    fn routing_table() {
        assert_eq!(route("GET", "/pods").unwrap().endpoint, Endpoint::Pods);
        let r = route(
            "POST",
            "/openyurt.io/v1/namespaces/kube-system/pods/etcd-v1.36-control-plane/upgrade",
        )
        .unwrap();
        assert_eq!(
            (r.endpoint, r.pod),
            (
                Endpoint::Upgrade,
                Some(("kube-system", "etcd-v1.36-control-plane"))
            )
        );
        assert_eq!(
            route("POST", "/openyurt.io/v1/namespaces/a/pods/b/imagepull")
                .unwrap()
                .endpoint,
            Endpoint::Imagepull
        );
        for (path, ep) in [
            ("/v1/healthz", Endpoint::Healthz),
            ("/v1/readyz", Endpoint::Readyz),
            ("/v1/status", Endpoint::Status),
            ("/metrics", Endpoint::Metrics),
        ] {
            assert_eq!(route("GET", path).unwrap().endpoint, ep);
        }
        assert_eq!(err("GET", "/nope"), (None, 404, "not_found"));
        assert_eq!(err("GET", "/pods/"), (None, 404, "not_found"));
        assert_eq!(
            err("GET", "/openyurt.io/v1/namespaces/a/pods/b/delete"),
            (None, 404, "not_found")
        );
        assert_eq!(
            err("POST", "/pods"),
            (Some(Endpoint::Pods), 405, "method_not_allowed")
        );
        let (_, e) = route("GET", "/openyurt.io/v1/namespaces/a/pods/b/upgrade").unwrap_err();
        assert_eq!((e.status, e.allow), (405, Some("POST")));
        for bad in [
            "/openyurt.io/v1/namespaces/Kube/pods/b/upgrade",
            "/openyurt.io/v1/namespaces/a/pods/B_1/upgrade",
            "/openyurt.io/v1/namespaces/a.b/pods/b/upgrade",
            "/openyurt.io/v1/namespaces/a/pods/%2e%2e/upgrade",
            "/openyurt.io/v1/namespaces//pods/b/upgrade",
        ] {
            assert_eq!(
                err("POST", bad),
                (Some(Endpoint::Upgrade), 400, "invalid_name"),
                "{bad}"
            );
        }
    }

    #[test]
    fn error_bodies_have_the_documented_shape() {
        let mut e = ApiError::new(409, "gate_closed", "closed");
        e.extra = Some(json!({"blocked_by": ["vehicle-stopped"]}));
        let r = e.reply();
        let Body::Bytes(b) = r.body else {
            panic!("an error body is bytes")
        };
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(
            v,
            json!({"error": "gate_closed", "message": "closed", "blocked_by": ["vehicle-stopped"]})
        );
        assert_eq!(r.content_type, JSON);
    }

    /// An upstream whose upgrade call panics, to prove one request cannot take the server down.
    struct Panicking;

    impl Upstream for Panicking {
        fn list_pods(&self) -> Result<Vec<u8>, UpstreamError> {
            Err(UpstreamError::Connect("test".into()))
        }
        fn upgrade(&self, _: &str, _: &str) -> Result<Relay, UpstreamError> {
            panic!("upgrade exploded")
        }
        fn imagepull(&self, _: &str, _: &str) -> Result<Relay, UpstreamError> {
            Ok(Relay {
                status: 200,
                content_type: None,
                body: b"pulled".to_vec(),
            })
        }
        fn kind(&self) -> &'static str {
            "test"
        }
        fn url(&self) -> &str {
            "test://"
        }
    }

    #[test]
    fn a_panicking_request_is_answered_500_and_the_next_one_served() {
        use crate::http::Handler;
        let shared = Arc::new(Shared::new(Duration::from_secs(5)));
        let control = Arc::new(Control::new(
            crate::gate::Gates::new(Vec::new()),
            crate::state::Store::in_memory(),
            crate::config::Settings::default().policy,
        ));
        let api = Api::new(shared.clone(), Arc::new(Panicking), None, None, control);
        let req = |method: &str, target: &str| Request {
            method: method.into(),
            target: target.into(),
            headers: Vec::new(),
            body: Vec::new(),
        };
        let r = api.handle(req("POST", "/openyurt.io/v1/namespaces/a/pods/b/upgrade"));
        assert_eq!(r.status, 500);
        let r = api.handle(req("POST", "/openyurt.io/v1/namespaces/a/pods/b/imagepull"));
        assert_eq!(r.status, 200);
        let r = api.handle(req("GET", "/pods"));
        assert_eq!(r.status, 503);
        let m = shared.metrics.render(&api.gauges(Instant::now()));
        assert!(
            m.lines()
                .any(|l| l == "yurt_ota_api_requests_total{route=\"panic\",code=\"500\"} 1"),
            "{m}"
        );
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
