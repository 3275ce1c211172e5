//! The local API (SPEC section 3): YurtHub-compatible routes for device apps, and the agent's
//! own routes, served by the small blocking server in `http`.
//!
//! `route` maps a method and path to an `Endpoint`; `ApiError::reply` is the one place an error
//! becomes an HTTP response. A panic in one request is caught and answered with 500.
//!
//! The handlers live by resource, each an `impl Api` returning `Result<Response, ApiError>`:
//! `yurthub` (pods, upgrade, imagepull), `holds` (holds, breaker reset), `status` (status,
//! readyz), `metrics`, `events`. `serve` below is the routing table from endpoint to handler.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

use crate::config::ApiSettings;
use crate::decider::Decider;
use crate::http::{self, Request, Response};
use crate::names;
use crate::node_view::NodeView;
use crate::sim;
use crate::upstream::Upstream;

pub use crate::http::{MAX_REQUEST_BODY, MAX_REQUEST_HEAD};
pub use crate::listen::bind;

mod events;
mod holds;
mod metrics;
mod status;
mod yurthub;

pub use holds::MAX_HOLD_TTL;

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
    /// `GET /sim`, when the upstream is the in-process simulator.
    Sim,
    /// `POST /sim/rollout/{ns}/{daemonset}`, `/sim/connect`, `/sim/disconnect`, likewise.
    SimControl,
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
            Endpoint::Sim | Endpoint::SimControl => "sim",
        }
    }

    /// Every endpoint, for the check that docs/openapi.yaml documents each one.
    pub const ALL: [Endpoint; 13] = [
        Endpoint::Pods,
        Endpoint::Upgrade,
        Endpoint::Imagepull,
        Endpoint::Healthz,
        Endpoint::Readyz,
        Endpoint::Status,
        Endpoint::Metrics,
        Endpoint::Holds,
        Endpoint::Hold,
        Endpoint::BreakerReset,
        Endpoint::Events,
        Endpoint::Sim,
        Endpoint::SimControl,
    ];

    fn allow(self) -> &'static str {
        match self {
            Endpoint::Upgrade
            | Endpoint::Imagepull
            | Endpoint::BreakerReset
            | Endpoint::SimControl => "POST",
            Endpoint::Hold => "GET, PUT, DELETE",
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
        ["sim"] => (Endpoint::Sim, None),
        ["sim", "rollout", _, _] | ["sim", "connect" | "disconnect"] => {
            (Endpoint::SimControl, None)
        }
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

/// 503 `state_unavailable`: the change was not made, because it could not be made durable (a 2xx
/// means durable).
fn state_unavailable(e: crate::state::Unavailable) -> ApiError {
    let mut err = ApiError::new(
        503,
        "state_unavailable",
        format!("{e}; nothing was changed. Try again once state.dir can be written (GET /v1/status shows it)"),
    );
    err.retry_after = Some(5);
    err
}

fn json_response(status: u16, v: &Value) -> Response {
    Response::new(status, JSON, v.to_string().into_bytes())
}

/// The request-handling side of the agent.
pub struct Api {
    shared: Arc<NodeView>,
    upstream: Arc<dyn Upstream>,
    sim: Option<Arc<sim::Node>>,
    token: Option<String>,
    control: Arc<Decider>,
}

impl Api {
    pub fn new(
        shared: Arc<NodeView>,
        upstream: Arc<dyn Upstream>,
        sim: Option<Arc<sim::Node>>,
        token: Option<String>,
        control: Arc<Decider>,
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
                self.imagepull(ns, pod)
            }
            Endpoint::Holds => Ok(json_response(200, &json!({"holds": self.holds()}))),
            Endpoint::Hold => {
                let name = route.hold.expect("hold routes carry a name");
                self.hold(&req.method, name, &req.body)
            }
            Endpoint::BreakerReset => self.breaker_reset(),
            Endpoint::Events => self.events(query),
            Endpoint::Healthz => Ok(Response::new(200, TEXT, b"ok".to_vec())),
            Endpoint::Readyz => self.readyz(now),
            Endpoint::Status => Ok(json_response(200, &self.status(now))),
            Endpoint::Metrics => Ok(self.metrics(now)),
            Endpoint::Sim | Endpoint::SimControl => match &self.sim {
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
            // RFC 7235: the scheme is case-insensitive.
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("Bearer"))
            .map(|(_, token)| token);
        match given {
            Some(g) if constant_time_eq(g.trim().as_bytes(), token.as_bytes()) => Ok(()),
            _ => Err(ApiError::new(
                401,
                "unauthorized",
                "this call needs the header Authorization: Bearer <token from api.token_file>",
            )),
        }
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

#[cfg(test)]
mod tests;
