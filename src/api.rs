//! The local API (SPEC section 3): YurtHub-compatible routes for device apps, and the agent's
//! own routes. A blocking tiny_http server with a fixed number of worker threads.
//!
//! `route` maps a method and path to an `Endpoint`; `ApiError::reply` is the one place an error
//! becomes an HTTP response. A panic in one request is caught and answered with 500.

use std::borrow::Cow;
use std::io::{self, Read};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};
use tiny_http::{Header, Request, Response, Server, StatusCode};

use crate::agent::{Outcome, Shared};
use crate::config::Listen;
use crate::names;
use crate::pod::ImageState;
use crate::shutdown::Shutdown;
use crate::sim;
use crate::snapshot::Snapshot;
use crate::upstream::{excerpt, Relay, Upstream, UpstreamError};

/// Request bodies above this are refused with 413.
pub const MAX_REQUEST_BODY: u64 = 64 * 1024;

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
            Endpoint::Sim => "sim",
        }
    }

    fn allow(self) -> &'static str {
        match self {
            Endpoint::Upgrade | Endpoint::Imagepull => "POST",
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
}

/// The routing table. `Err` carries the endpoint (for metrics) when the path was known.
pub fn route<'a>(method: &str, path: &'a str) -> Result<Route<'a>, (Option<Endpoint>, ApiError)> {
    let parts: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    let (endpoint, pod) = match parts.as_slice() {
        ["pods"] => (Endpoint::Pods, None),
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
    Ok(Route { endpoint, pod })
}

/// An error this agent produces: `{"error": word, "message": sentence, ...extra}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub error: &'static str,
    pub message: String,
    pub extra: Option<Value>,
    pub allow: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: u16, error: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            error,
            message: message.into(),
            extra: None,
            allow: None,
        }
    }

    /// The one place an error becomes a response.
    fn reply(self) -> Reply {
        let mut body = json!({"error": self.error, "message": self.message});
        if let (Some(Value::Object(extra)), Value::Object(b)) = (self.extra, &mut body) {
            b.extend(extra);
        }
        let mut r = Reply::json(self.status, &body);
        if let Some(allow) = self.allow {
            r.headers.push(("Allow", allow.into()));
        }
        r
    }
}

enum Body {
    Bytes(Vec<u8>),
    /// The pre-rendered pod list, shared with the snapshot rather than copied.
    Snapshot(Arc<Snapshot>),
}

pub struct Reply {
    status: u16,
    content_type: Cow<'static, str>,
    headers: Vec<(&'static str, String)>,
    body: Body,
}

impl Reply {
    fn json(status: u16, v: &Value) -> Reply {
        Reply::bytes(status, JSON, v.to_string().into_bytes())
    }

    fn bytes(status: u16, content_type: impl Into<Cow<'static, str>>, body: Vec<u8>) -> Reply {
        Reply {
            status,
            content_type: content_type.into(),
            headers: Vec::new(),
            body: Body::Bytes(body),
        }
    }

    /// An upstream answer, verbatim.
    fn relay(r: Relay) -> Reply {
        let ct = r.content_type.map_or(Cow::Borrowed(TEXT), Cow::Owned);
        Reply::bytes(r.status, ct, r.body)
    }

    fn into_response(self) -> Response<BodyReader> {
        let mut headers = Vec::with_capacity(self.headers.len() + 1);
        headers.extend(Header::from_bytes(
            "Content-Type",
            self.content_type.as_bytes(),
        ));
        for (k, v) in &self.headers {
            headers.extend(Header::from_bytes(k.as_bytes(), v.as_bytes()));
        }
        let (reader, len) = match self.body {
            Body::Bytes(b) => {
                let len = b.len();
                (BodyReader::Bytes(io::Cursor::new(b)), len)
            }
            Body::Snapshot(s) => {
                let len = s.body.len();
                (BodyReader::Snapshot(s, 0), len)
            }
        };
        // The length is always known: send Content-Length, never chunked (tiny_http chunks
        // bodies over 32 KiB by default, which costs the client work for nothing).
        Response::new(StatusCode(self.status), headers, reader, Some(len), None)
            .with_chunked_threshold(usize::MAX)
    }
}

pub enum BodyReader {
    Bytes(io::Cursor<Vec<u8>>),
    Snapshot(Arc<Snapshot>, usize),
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            BodyReader::Bytes(c) => c.read(buf),
            BodyReader::Snapshot(s, pos) => {
                let rest = &s.body[*pos..];
                let n = rest.len().min(buf.len());
                buf[..n].copy_from_slice(&rest[..n]);
                *pos += n;
                Ok(n)
            }
        }
    }
}

/// The request-handling side of the agent.
pub struct Api {
    shared: Arc<Shared>,
    upstream: Arc<dyn Upstream>,
    sim: Option<Arc<sim::Node>>,
    token: Option<String>,
    mode: &'static str,
}

impl Api {
    pub fn new(
        shared: Arc<Shared>,
        upstream: Arc<dyn Upstream>,
        sim: Option<Arc<sim::Node>>,
        token: Option<String>,
    ) -> Api {
        Api {
            shared,
            upstream,
            sim,
            token,
            mode: "manual",
        }
    }

    /// Answers one request; never panics out, never leaves it unanswered.
    pub fn handle(&self, mut req: Request) {
        let (label, reply) = match catch_unwind(AssertUnwindSafe(|| self.dispatch(&mut req))) {
            Ok((label, Ok(reply))) => (label, reply),
            Ok((label, Err(e))) => (label, e.reply()),
            Err(_) => {
                log::error!(
                    "request {} {} panicked; answered 500",
                    req.method(),
                    req.url()
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
        self.shared.metrics.request(label, reply.status);
        if let Err(e) = req.respond(reply.into_response()) {
            log::debug!("could not send a response: {e}");
        }
    }

    fn dispatch(&self, req: &mut Request) -> (&'static str, Result<Reply, ApiError>) {
        let method = req.method().as_str().to_owned();
        let url = req.url().to_owned();
        let (path, query) = url.split_once('?').unwrap_or((&url, ""));
        let route = match route(&method, path) {
            Ok(r) => r,
            Err((endpoint, e)) => return (endpoint.map_or("unknown", Endpoint::name), Err(e)),
        };
        let label = route.endpoint.name();
        (label, self.serve(route, &method, path, query, req))
    }

    fn serve(
        &self,
        route: Route,
        method: &str,
        path: &str,
        query: &str,
        req: &mut Request,
    ) -> Result<Reply, ApiError> {
        if method != "GET" {
            self.authorize(req)?;
        }
        read_body(req)?;
        let now = Instant::now();
        match route.endpoint {
            Endpoint::Pods => self.pods(now),
            Endpoint::Upgrade | Endpoint::Imagepull => {
                let (ns, pod) = route.pod.expect("pod routes carry a pod");
                self.forward(route.endpoint, ns, pod, query)
            }
            Endpoint::Healthz => Ok(Reply::bytes(200, TEXT, b"ok".to_vec())),
            Endpoint::Readyz => match self.shared.readiness(now) {
                Ok(()) => Ok(Reply::json(200, &json!({"ready": true}))),
                Err(why) => Err(ApiError::new(503, "not_ready", why)),
            },
            Endpoint::Status => Ok(Reply::json(200, &self.status(now))),
            Endpoint::Metrics => Ok(Reply::bytes(
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                self.shared
                    .metrics
                    .render(&self.shared.gauges(now))
                    .into_bytes(),
            )),
            Endpoint::Sim => match &self.sim {
                Some(node) => {
                    let a = node.handle(now, method, &format!("{path}?{query}"));
                    Ok(Reply::bytes(a.status, a.content_type, a.body))
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
            .headers()
            .iter()
            .find(|h| h.field.equiv("Authorization"))
            .and_then(|h| h.value.as_str().strip_prefix("Bearer "));
        match given {
            Some(g) if constant_time_eq(g.trim().as_bytes(), token.as_bytes()) => Ok(()),
            _ => Err(ApiError::new(
                401,
                "unauthorized",
                "this call needs the header Authorization: Bearer <token from api.token_file>",
            )),
        }
    }

    fn pods(&self, now: Instant) -> Result<Reply, ApiError> {
        let Some(snap) = self.shared.snapshot() else {
            let why = self.shared.readiness(now).err().unwrap_or_default();
            return Err(ApiError::new(
                503,
                "no_snapshot",
                format!("no pod list has been read from the upstream yet ({why})"),
            ));
        };
        let age = self.shared.snapshot_age(now).unwrap_or_default().as_secs();
        Ok(Reply {
            status: 200,
            content_type: Cow::Borrowed(JSON),
            headers: vec![("X-Yurt-Ota-Snapshot-Age", age.to_string())],
            body: Body::Snapshot(snap),
        })
    }

    /// Upgrade or imagepull. The place where gates are checked before forwarding.
    fn forward(
        &self,
        endpoint: Endpoint,
        ns: &str,
        pod: &str,
        _query: &str,
    ) -> Result<Reply, ApiError> {
        // This build has no gates or holds (SPEC section 5: with none configured, upgrades are
        // always allowed), so every call is forwarded at once.
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
                    self.shared.record_outcome(Outcome {
                        pod: key,
                        at: SystemTime::now(),
                        status: relay.status,
                        detail: excerpt(&relay.body),
                    });
                }
                Ok(Reply::relay(relay))
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
        let h = self.shared.health();
        let snap = self.shared.snapshot();
        let ready = self.shared.readiness(now);
        let mut outdated: Vec<&crate::pod::Pod> =
            snap.iter().flat_map(|s| s.needing_upgrade()).collect();
        // The order automatic upgrades will take: namespace, then name.
        outdated.sort_by(|a, b| {
            (&a.metadata.namespace, &a.metadata.name)
                .cmp(&(&b.metadata.namespace, &b.metadata.name))
        });
        let pods: Vec<Value> = outdated
            .into_iter()
            .map(|p| {
                let image = match p.image_state() {
                    ImageState::NotRequested => "not_requested",
                    ImageState::Pending => "pending",
                    ImageState::Ready => "ready",
                };
                let why = match p.image_state() {
                    ImageState::Pending => "image pre-pull not finished: YurtHub refuses the upgrade until PodImageReady=True",
                    _ => "manual mode: upgraded only when an app or operator calls POST .../upgrade",
                };
                json!({
                    "namespace": p.metadata.namespace,
                    "name": p.metadata.name,
                    "uid": p.metadata.uid,
                    "owner": p.owner().map(|o| format!("{}/{}", o.kind, o.name)),
                    "target_revision": p.target_revision(),
                    "image": image,
                    "why_not_yet": why,
                })
            })
            .collect();
        let recent: Vec<Value> = self
            .shared
            .recent()
            .iter()
            .map(|o| json!({"pod": o.pod, "at": sim::rfc3339(o.at), "status": o.status, "detail": o.detail}))
            .collect();
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "mode": self.mode,
            "ready": ready.is_ok(),
            "not_ready_reason": ready.err(),
            "gates": [],
            "upgrade_gates_open": true,
            "upstream": {
                "kind": self.upstream.kind(),
                "url": self.upstream.url(),
                "last_success": h.last_success.map(|(_, t)| sim::rfc3339(t)),
                "last_error": h.last_error.map(|(e, t)| json!({"kind": e.kind(), "message": e.to_string(), "at": sim::rfc3339(t)})),
                "consecutive_failures": h.consecutive_failures,
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

/// Reads and discards a request body, refusing one over the cap (the OTA routes ignore bodies,
/// as YurtHub does, but a client must not be able to make the agent read without limit).
fn read_body(req: &mut Request) -> Result<(), ApiError> {
    let too_large = || {
        ApiError::new(
            413,
            "payload_too_large",
            format!(
                "request bodies are limited to {} KiB",
                MAX_REQUEST_BODY / 1024
            ),
        )
    };
    if req
        .body_length()
        .is_some_and(|n| n as u64 > MAX_REQUEST_BODY)
    {
        return Err(too_large());
    }
    let n = io::copy(
        &mut req.as_reader().take(MAX_REQUEST_BODY + 1),
        &mut io::sink(),
    )
    .map_err(|e| {
        ApiError::new(
            400,
            "bad_request",
            format!("could not read the request body: {e}"),
        )
    })?;
    if n > MAX_REQUEST_BODY {
        return Err(too_large());
    }
    Ok(())
}

/// Compares without an early exit, so the time taken does not tell how much of a guess matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads the bearer token; an empty or unreadable file is an error naming the key.
pub fn read_token(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("api.token_file {}: cannot read it: {e}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!(
            "api.token_file {}: the file is empty",
            path.display()
        ));
    }
    Ok(token.to_owned())
}

/// Binds the API socket. A stale Unix socket from an earlier run is replaced.
///
/// Socket options are set on the listener because tiny_http gives no access to the sockets it
/// accepts, and Linux copies them to every accepted socket: `TCP_NODELAY` (tiny_http does not
/// set it, and the last segment of a large response would wait for a delayed ACK) and the
/// read and write timeouts (`timeout`), so that a client that leaks connections or stops
/// reading cannot hold a thread forever.
pub fn bind(listen: &Listen, timeout: Duration) -> Result<Server, String> {
    let fail = |e: &dyn std::fmt::Display| {
        format!("cannot listen on {listen} (api.listen): {e}; is another yurt-ota running?")
    };
    let set = |sock: socket2::SockRef| -> io::Result<()> {
        sock.set_read_timeout(Some(timeout))?;
        sock.set_write_timeout(Some(timeout))
    };
    let listener: tiny_http::Listener = match listen {
        Listen::Tcp(addr) => {
            let l = std::net::TcpListener::bind(addr).map_err(|e| fail(&e))?;
            let sock = socket2::SockRef::from(&l);
            sock.set_tcp_nodelay(true)
                .and_then(|_| set(sock))
                .map_err(|e| fail(&e))?;
            l.into()
        }
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
            let l = std::os::unix::net::UnixListener::bind(path).map_err(|e| fail(&e))?;
            set(socket2::SockRef::from(&l)).map_err(|e| fail(&e))?;
            l.into()
        }
    };
    Server::from_listener(listener, None).map_err(|e| fail(&e))
}

/// Runs `workers` threads that take requests from `server` until `stop` is triggered, then
/// lets them finish the requests already queued. Idle workers block; nothing polls.
pub fn serve(
    server: Server,
    workers: usize,
    stop: &Shutdown,
    handle: impl Fn(Request) + Send + Sync,
) {
    let workers = workers.max(1);
    thread::scope(|s| {
        for i in 0..workers {
            let (server, handle) = (&server, &handle);
            let spawned = thread::Builder::new()
                .name(format!("api-{i}"))
                .spawn_scoped(s, move || loop {
                    match server.recv() {
                        Ok(req) => handle(req),
                        // `unblock` below: this worker is done.
                        Err(_) if stop.is_triggered() => return,
                        Err(e) => {
                            log::warn!("API listener: {e}");
                            thread::sleep(Duration::from_millis(100));
                        }
                    }
                });
            if let Err(e) = spawned {
                log::error!("cannot start API worker {i}: {e}");
            }
        }
        stop.wait();
        for _ in 0..workers {
            server.unblock();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let Body::Bytes(b) = r.body else { panic!() };
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
        let shared = Arc::new(Shared::new(Duration::from_secs(5)));
        let api = Api::new(shared.clone(), Arc::new(Panicking), None, None);
        let req = |method, path: &str| {
            tiny_http::TestRequest::new()
                .with_method(method)
                .with_path(path)
                .into()
        };
        api.handle(req(
            tiny_http::Method::Post,
            "/openyurt.io/v1/namespaces/a/pods/b/upgrade",
        ));
        api.handle(req(
            tiny_http::Method::Post,
            "/openyurt.io/v1/namespaces/a/pods/b/imagepull",
        ));
        api.handle(req(tiny_http::Method::Get, "/pods"));
        let m = shared.metrics.render(&shared.gauges(Instant::now()));
        for line in [
            "yurt_ota_api_requests_total{route=\"panic\",code=\"500\"} 1",
            "yurt_ota_api_requests_total{route=\"imagepull\",code=\"200\"} 1",
            "yurt_ota_api_requests_total{route=\"pods\",code=\"503\"} 1",
        ] {
            assert!(m.lines().any(|l| l == line), "{line} in {m}");
        }
    }

    /// `bind` relies on Linux copying these options from the listener to accepted sockets.
    #[test]
    fn accepted_sockets_inherit_the_listener_options() {
        const T: Duration = Duration::from_secs(30);
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let sock = socket2::SockRef::from(&l);
        sock.set_tcp_nodelay(true).unwrap();
        sock.set_read_timeout(Some(T)).unwrap();
        sock.set_write_timeout(Some(T)).unwrap();
        let _client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (accepted, _) = l.accept().unwrap();
        assert!(accepted.nodelay().unwrap());
        assert_eq!(accepted.read_timeout().unwrap(), Some(T));
        assert_eq!(accepted.write_timeout().unwrap(), Some(T));
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
