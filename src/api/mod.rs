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
use crate::http::{self, Request, Response};
use crate::names;
use crate::shared::{Control, Shared};
use crate::sim;
use crate::upstream::Upstream;

pub use crate::listen::{bind, MAX_REQUEST_BODY, MAX_REQUEST_HEAD};

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
mod tests {
    use super::*;
    use crate::http::Body;
    use crate::upstream::{Relay, UpstreamError};
    use std::time::Duration;

    fn err(method: &str, path: &str) -> (Option<Endpoint>, u16, &'static str) {
        let (ep, e) = route(method, path).unwrap_err();
        (ep, e.status, e.error)
    }

    /// The paths and methods of docs/openapi.yaml, read as text: `  /path:` then
    /// `    get:` lines below it.
    fn documented_routes() -> Vec<(String, Vec<String>)> {
        let doc = include_str!("../../docs/openapi.yaml");
        let paths = doc.split("\npaths:\n").nth(1).expect("a paths: section");
        let mut routes: Vec<(String, Vec<String>)> = Vec::new();
        for line in paths.lines() {
            if let Some(p) = line.strip_prefix("  /").and_then(|l| l.strip_suffix(':')) {
                routes.push((format!("/{p}"), Vec::new()));
            } else if let Some(m) = line.strip_prefix("    ").and_then(|l| l.strip_suffix(':')) {
                if ["get", "put", "post", "delete", "patch", "head", "options"].contains(&m) {
                    let last = routes.last_mut().expect("a method under a path");
                    last.1.push(m.to_uppercase());
                }
            }
        }
        routes
    }

    #[test]
    fn the_openapi_document_matches_the_routing_table() {
        // Valid YAML first: schemathesis and client generators refuse a document that is not.
        let doc = include_str!("../../docs/openapi.yaml");
        let parsed = yaml_rust2::YamlLoader::load_from_str(doc).expect("docs/openapi.yaml is YAML");
        assert_eq!(parsed[0]["openapi"].as_str(), Some("3.0.3"));
        let routes = documented_routes();
        assert!(routes.len() >= 12, "{routes:?}");
        let mut covered = Vec::new();
        for (template, methods) in &routes {
            let path = template
                .replace("{ns}", "kube-system")
                .replace("{pod}", "kube-proxy-x2x7z")
                .replace("{name}", "navigation")
                .replace("{daemonset}", "kube-proxy");
            let endpoint = route(&methods[0], &path)
                .unwrap_or_else(|e| panic!("{} {template}: {e:?}", methods[0]))
                .endpoint;
            let mut allowed: Vec<&str> = endpoint.allow().split(", ").collect();
            allowed.sort_unstable();
            let mut documented: Vec<&str> = methods.iter().map(String::as_str).collect();
            documented.sort_unstable();
            assert_eq!(
                allowed, documented,
                "{template}: the document and Allow differ"
            );
            covered.push(endpoint);
        }
        for e in Endpoint::ALL {
            assert!(covered.contains(&e), "{e:?} is not in docs/openapi.yaml");
        }
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
