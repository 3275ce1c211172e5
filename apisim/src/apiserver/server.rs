//! The stand-in on sockets: HTTPS (rustls) for the Kubernetes API, with bearer-token and
//! client-certificate authentication and chunked watches; plain HTTP on loopback for the
//! `/sim/...` controls (rollout, undo, drop watches, fail requests, down/up, compaction).

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::net::{Shutdown as Both, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, SystemTime};

use rustls::{ServerConfig, ServerConnection, StreamOwned};

use super::store::status;
use super::{tls, Cluster, Options, Reply};
use yurt_ota::http;
use yurt_ota::shutdown::Shutdown;

/// How to start the stand-in.
#[derive(Debug, Clone)]
pub struct Config {
    /// HTTPS address of the Kubernetes API (port 0: any free port).
    pub listen: SocketAddr,
    /// Plain-HTTP loopback address of the `/sim/...` controls.
    pub control: SocketAddr,
    /// Where the CA, token, client certificate and kubeconfigs are written.
    pub dir: PathBuf,
    /// The bearer token; default: generated.
    pub token: Option<String>,
    /// More names or addresses for the server certificate; the first one is the kubeconfig's
    /// server host (default: the listen address, 127.0.0.1 when it is unspecified).
    pub sans: Vec<String>,
    /// BOOKMARK events on watches that allow them, this often.
    pub bookmark_interval: Duration,
    /// The RBAC manifest enforced (its text); `None`: the shipped
    /// `packaging/kubernetes/rbac.yaml`.
    pub rbac: Option<String>,
    /// Also an RSA client certificate and its PKCS#1 key, as kubeadm writes them:
    /// `client-rsa.crt`, `client-rsa.key` and `kubeconfig-rsa` (a 2048-bit key: slower start).
    pub rsa_client: bool,
    pub options: Options,
}

/// The identity the bearer token and the generated client certificate stand for: the agent's
/// ServiceAccount, and a node certificate in the manifest's group `yurt-ota:nodes`.
pub const SERVICE_ACCOUNT: (&str, &str) = ("yurt-ota", "yurt-ota");
pub const NODE_GROUP: &str = "yurt-ota:nodes";
/// The user of the admin token (`system:masters`: allowed everything, as kubeadm's admin.conf).
pub const ADMIN_USER: &str = "kubernetes-admin";

const MAX_CONNECTIONS: usize = 512;
const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 1024 * 1024;

pub(super) struct Shared {
    pub(super) cluster: Arc<Cluster>,
    tls: Arc<ServerConfig>,
    /// The CA's judgement of a client certificate (the handshake accepts any).
    client_ca: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    pub(super) token: Mutex<String>,
    admin_token: String,
    rbac: super::rbac::Rbac,
    /// The manifest's objects, to enforce beside those applied with kubectl.
    rbac_docs: Vec<serde_json::Value>,

    pub(super) dir: PathBuf,
    pub(super) addr: SocketAddr,
    pub(super) bookmark_interval: Duration,
    /// The next N API requests fail with this status.
    pub(super) fail: Mutex<(u32, u16)>,
    /// The next N pod DELETEs are carried out, then their connection is reset before the
    /// answer (`POST /sim/reset-after-delete?count=N`): a flaky uplink that loses the answer.
    pub(super) reset_after_delete: Mutex<u32>,
    pub(super) down: Mutex<bool>,
    up: Condvar,
    /// Open API connections (all, and those streaming a watch), to cut them.
    conns: Mutex<HashMap<u64, (TcpStream, bool)>>,
    next_conn: AtomicU64,
    pub(super) requests: Mutex<BTreeMap<String, u64>>,
    pub(super) stop: Arc<Shutdown>,
    stopped: AtomicBool,
}

/// The Lease requests the stand-in answered, by verb: a list, a watch established (each
/// `?watch=1`, however long it then streams), a get, a create, an update, a delete, and the
/// 409s among them (`conflicts`: an update of a version moved on, a create of a name taken).
/// Requests refused by RBAC (403) or by `/sim/fail` are not in them. Every namespace counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeaseRequests {
    pub list: u64,
    pub watch: u64,
    pub get: u64,
    pub create: u64,
    pub update: u64,
    pub delete: u64,
    pub conflicts: u64,
}

impl LeaseRequests {
    /// From the request counters (`Handle::requests`).
    pub fn of(requests: &BTreeMap<String, u64>) -> LeaseRequests {
        let n = |k: &str| requests.get(k).copied().unwrap_or(0);
        LeaseRequests {
            list: n("list leases"),
            watch: n("watch leases"),
            get: n("get leases"),
            create: n("create leases"),
            update: n("update leases"),
            delete: n("delete leases"),
            conflicts: ["create", "update", "delete", "get"]
                .iter()
                .map(|v| n(&format!("conflict {v} leases")))
                .sum(),
        }
    }
    /// Every Lease request (conflicts are among them already).
    pub fn total(&self) -> u64 {
        self.list + self.watch + self.get + self.create + self.update + self.delete
    }
    /// What was counted after `earlier`: the requests of a window.
    pub fn since(&self, earlier: &LeaseRequests) -> LeaseRequests {
        LeaseRequests {
            list: self.list.saturating_sub(earlier.list),
            watch: self.watch.saturating_sub(earlier.watch),
            get: self.get.saturating_sub(earlier.get),
            create: self.create.saturating_sub(earlier.create),
            update: self.update.saturating_sub(earlier.update),
            delete: self.delete.saturating_sub(earlier.delete),
            conflicts: self.conflicts.saturating_sub(earlier.conflicts),
        }
    }
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"list": self.list, "watch": self.watch, "get": self.get,
                           "create": self.create, "update": self.update, "delete": self.delete,
                           "conflicts": self.conflicts, "total": self.total()})
    }
}

/// A running stand-in; dropped or `stop()`ped, it ends its threads.
pub struct Handle {
    pub addr: SocketAddr,
    pub control: SocketAddr,
    pub files: tls::Written,
    pub ca_pem: String,
    pub client_cert_pem: String,
    pub client_key_pem: String,
    url: String,
    shared: Arc<Shared>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Handle {
    /// The server URL written to the kubeconfigs.
    pub fn url(&self) -> String {
        self.url.clone()
    }
    pub fn control_url(&self) -> String {
        format!("http://{}", self.control)
    }
    pub fn cluster(&self) -> &Cluster {
        &self.shared.cluster
    }
    /// Every request counted so far, by `<verb> <resource>` (`list leases`, `watch pods`),
    /// `conflict <verb> <resource>` for a 409, `forbidden …` for a 403, `failed <code>`.
    pub fn requests(&self) -> BTreeMap<String, u64> {
        lock(&self.shared.requests).clone()
    }
    /// The Lease requests counted so far (`GET /sim` shows the same as `leaseRequests`).
    pub fn lease_requests(&self) -> LeaseRequests {
        LeaseRequests::of(&self.requests())
    }
    /// The admin token (`system:masters`), for what a cluster operator does with kubectl.
    pub fn admin_token(&self) -> String {
        self.shared.admin_token.clone()
    }
    pub fn token(&self) -> String {
        self.shared
            .token
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
    pub fn stop(&mut self) {
        if self.shared.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        self.shared.stop.trigger();
        set_down(&self.shared, false);
        let _ = TcpStream::connect(self.addr);
        cut(&self.shared, false);
        self.shared.cluster.wake();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
    /// Blocks until `stop` is triggered from elsewhere (a signal).
    pub fn wait(mut self, stop: &Shutdown) {
        stop.wait();
        self.stop();
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn start(cfg: Config) -> Result<Handle, String> {
    let listener = TcpListener::bind(cfg.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", cfg.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let control = TcpListener::bind(cfg.control)
        .map_err(|e| format!("cannot listen on {}: {e}", cfg.control))?;
    let control_addr = control.local_addr().map_err(|e| e.to_string())?;
    let mut hosts = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if !addr.ip().is_unspecified() && !addr.ip().is_loopback() {
        hosts.push(addr.ip().to_string());
    }
    hosts.extend(cfg.sans.iter().cloned());
    let token = cfg.token.clone().unwrap_or_else(new_token);
    let rbac_docs = yurt_ota::yaml::parse_all(cfg.rbac.as_deref().unwrap_or(super::rbac::SHIPPED))
        .map_err(|e| format!("RBAC manifest: {e}"))?;
    let rbac = super::rbac::Rbac::from_docs(&rbac_docs)?;
    let admin_token = new_token();
    let creds = tls::generate_with(&hosts, token.clone(), cfg.rsa_client)?;
    let url = match (cfg.sans.first(), addr.ip().is_unspecified()) {
        (Some(host), _) if host.contains(':') => format!("https://[{host}]:{}", addr.port()),
        (Some(host), _) => format!("https://{host}:{}", addr.port()),
        (None, true) => format!("https://127.0.0.1:{}", addr.port()),
        (None, false) => format!("https://{addr}"),
    };
    let files = tls::write(&cfg.dir, &url, &creds, &admin_token)?;
    tls::write_atomic(
        &cfg.dir.join("control"),
        format!("http://{control_addr}").as_bytes(),
    )?;
    let (server_tls, client_ca) = tls::server_config(&creds)?;
    let shared = Arc::new(Shared {
        cluster: Arc::new(Cluster::new(cfg.options.clone())),
        tls: server_tls,
        client_ca,
        token: Mutex::new(token),
        admin_token,
        rbac,
        rbac_docs,
        dir: cfg.dir.clone(),
        addr,
        bookmark_interval: cfg.bookmark_interval,
        fail: Mutex::new((0, 500)),
        reset_after_delete: Mutex::new(0),
        down: Mutex::new(false),
        up: Condvar::new(),
        conns: Mutex::new(HashMap::new()),
        next_conn: AtomicU64::new(0),
        requests: Mutex::new(BTreeMap::new()),
        stop: Shutdown::new(),
        stopped: AtomicBool::new(false),
    });
    let mut threads = Vec::new();
    let s = shared.clone();
    threads.push(thread::spawn(move || accept_loop(&s, listener)));
    let s = shared.clone();
    threads.push(thread::spawn(move || s.cluster.run_timers(&s.stop)));
    let s = shared.clone();
    threads.push(thread::spawn(move || {
        let limits = http::Limits {
            max_connections: 16,
            max_head: 16 * 1024,
            max_body: 16 * 1024,
            timeout: Duration::from_secs(10),
        };
        let stop = s.stop.clone();
        http::serve(
            http::Listener::Tcp(control),
            limits,
            &stop,
            &super::control::Control(s),
        );
    }));
    Ok(Handle {
        addr,
        control: control_addr,
        files,
        ca_pem: creds.ca_pem,
        client_cert_pem: creds.client_cert_pem,
        client_key_pem: creds.client_key_pem,
        url,
        shared,
        threads,
    })
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// 32 hex digits from /dev/urandom (the clock if it cannot be read).
pub(super) fn new_token() -> String {
    let mut b = [0u8; 16];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_err()
    {
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        b = t.to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A uuid-looking Audit-Id per response, as the apiserver sends.
pub(super) fn audit_id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("00000000-0000-4000-8000-{n:012x}")
}

fn accept_loop(s: &Arc<Shared>, mut listener: TcpListener) {
    loop {
        let conn = listener.accept();
        if s.stop.is_triggered() {
            return;
        }
        if *lock(&s.down) {
            drop(listener);
            let mut down = lock(&s.down);
            while *down && !s.stop.is_triggered() {
                down = s.up.wait(down).unwrap_or_else(|e| e.into_inner());
            }
            drop(down);
            if s.stop.is_triggered() {
                return;
            }
            listener = loop {
                match TcpListener::bind(s.addr) {
                    Ok(l) => break l,
                    Err(e) => {
                        log::warn!("apisim: cannot listen again on {}: {e}", s.addr);
                        if s.stop.wait_timeout(Duration::from_millis(100)) {
                            return;
                        }
                    }
                }
            };
            continue;
        }
        let Ok((tcp, _)) = conn else {
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        if lock(&s.conns).len() >= MAX_CONNECTIONS {
            continue;
        }
        let id = s.next_conn.fetch_add(1, Ordering::Relaxed);
        if let Ok(clone) = tcp.try_clone() {
            lock(&s.conns).insert(id, (clone, false));
        }
        let s = s.clone();
        thread::spawn(move || {
            let _ = serve_conn(&s, id, tcp);
            lock(&s.conns).remove(&id);
        });
    }
}

pub(super) fn set_down(s: &Shared, down: bool) {
    *lock(&s.down) = down;
    s.up.notify_all();
    if down {
        // Wake the accept so that it closes the listener, and cut every connection.
        let _ = TcpStream::connect(s.addr);
        cut(s, false);
    }
}

/// Cuts open API connections (only watches, or all): the peer sees the stream end mid-way.
pub(super) fn cut(s: &Shared, watches_only: bool) -> usize {
    let conns = lock(&s.conns);
    let mut n = 0;
    for (tcp, watching) in conns.values() {
        if *watching || !watches_only {
            let _ = tcp.shutdown(Both::Both);
            n += 1;
        }
    }
    drop(conns);
    s.cluster.wake();
    n
}

struct Head {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub(super) type Tls = StreamOwned<ServerConnection, TcpStream>;

/// Reads one request head and body; `None` at a clean end of the connection.
fn read_request(tls: &mut Tls, buf: &mut Vec<u8>) -> io::Result<Option<(Head, Vec<u8>)>> {
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_owned());
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        if let httparse::Status::Complete(n) = req.parse(buf).map_err(|e| bad(&e.to_string()))? {
            let head = Head {
                method: req.method.unwrap_or_default().to_owned(),
                target: req.path.unwrap_or_default().to_owned(),
                headers: yurt_ota::http::owned_headers(req.headers),
            };
            buf.drain(..n);
            let len: usize = head
                .header("content-length")
                .map_or(Ok(0), |v| v.trim().parse())
                .map_err(|_| bad("bad Content-Length"))?;
            if len > MAX_BODY {
                return Err(bad("body too large"));
            }
            while buf.len() < len {
                let mut chunk = [0u8; 16 * 1024];
                let r = tls.read(&mut chunk)?;
                if r == 0 {
                    return Err(bad("body cut short"));
                }
                buf.extend_from_slice(&chunk[..r]);
            }
            let body = buf.drain(..len).collect();
            return Ok(Some((head, body)));
        }
        if buf.len() > MAX_HEAD {
            return Err(bad("request head too large"));
        }
        let mut chunk = [0u8; 16 * 1024];
        let r = match tls.read(&mut chunk) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && buf.is_empty() => {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        if r == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(bad("request cut short"))
            };
        }
        buf.extend_from_slice(&chunk[..r]);
    }
}

pub(super) fn http_date() -> String {
    // RFC 3339 is close enough for a Date header the agent never parses.
    yurt_ota::state::rfc3339(SystemTime::now())
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        410 => "Gone",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

fn write_full(
    tls: &mut Tls,
    status: u16,
    content_type: &str,
    body: &[u8],
    extra: &str,
) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} {}\r\nAudit-Id: {}\r\nCache-Control: no-cache, private\r\nContent-Type: {content_type}\r\n\
         Date: {}\r\n{extra}Content-Length: {}\r\n\r\n",
        reason(status),
        audit_id(),
        http_date(),
        body.len()
    );
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    tls.write_all(&out)?;
    tls.flush()
}

fn serve_conn(s: &Shared, id: u64, tcp: TcpStream) -> io::Result<()> {
    tcp.set_read_timeout(Some(Duration::from_secs(120)))?;
    tcp.set_write_timeout(Some(Duration::from_secs(30)))?;
    tcp.set_nodelay(true)?;
    let conn = ServerConnection::new(s.tls.clone()).map_err(io::Error::other)?;
    let mut tls = StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    let cert_user = tls
        .conn
        .peer_certificates()
        .filter(|chain| tls::verified(&*s.client_ca, chain))
        .and_then(|chain| chain.first())
        .and_then(|c| super::rbac::User::from_certificate(c.as_ref()));
    let mut buf = Vec::new();
    while let Some((head, body)) = read_request(&mut tls, &mut buf)? {
        if *lock(&s.down) || s.stop.is_triggered() {
            return Ok(());
        }
        let Some(user) = authenticate(s, &head, cert_user.as_ref()) else {
            count(s, "401");
            let b = status(401, "Unauthorized", "Unauthorized", None).to_string();
            write_full(&mut tls, 401, "application/json", b.as_bytes(), "")?;
            continue;
        };
        let attrs = super::rbac::Request::of(&head.method, &head.target);
        if let Some(r) = attrs.as_ref().filter(|r| !allowed(s, &user, r)) {
            let b = super::rbac::forbidden(&user, r);
            log::warn!("apisim: 403 {}", b["message"].as_str().unwrap_or_default());
            count(
                s,
                &format!("forbidden {} {}", r.verb, r.full_resource_name()),
            );
            let b = b.to_string();
            write_full(&mut tls, 403, "application/json", b.as_bytes(), "")?;
            continue;
        }
        {
            let mut f = lock(&s.fail);
            if f.0 > 0 {
                f.0 -= 1;
                let code = f.1;
                drop(f);
                count(s, &format!("failed {code}"));
                let (reason, message, extra) = match code {
                    410 => (
                        "Expired",
                        "The resourceVersion for the provided list is too old.",
                        "",
                    ),
                    429 => (
                        "TooManyRequests",
                        "Too many requests, please try again later.",
                        "Retry-After: 1\r\n",
                    ),
                    503 => (
                        "ServiceUnavailable",
                        "the server is currently unable to handle the request",
                        "",
                    ),
                    _ => (
                        "InternalError",
                        "Internal error occurred: simulated failure (yurt-ota-apisim)",
                        "",
                    ),
                };
                let b = status(code, reason, message, None).to_string();
                write_full(&mut tls, code, "application/json", b.as_bytes(), extra)?;
                continue;
            }
        }
        if let Some(reply) = token_request(s, &head) {
            count(s, "create serviceaccounts/token");
            write_full(
                &mut tls,
                reply.0,
                "application/json",
                reply.1.as_bytes(),
                "",
            )?;
            continue;
        }
        let ct = head.header("content-type").unwrap_or_default().to_owned();
        match s.cluster.handle(&head.method, &head.target, &ct, &body) {
            Reply::Full {
                status,
                content_type,
                body,
            } => {
                let v = verb(&head, false);
                count(s, &v);
                if status == 409 {
                    count(s, &format!("conflict {v}"));
                }
                if head.method == "POST" {
                    after_create(s, &head, status, &body);
                }
                if head.method == "DELETE" && verb(&head, false) == "delete pods" {
                    let mut left = lock(&s.reset_after_delete);
                    if *left > 0 {
                        *left -= 1;
                        drop(left);
                        count(s, "reset after delete");
                        // Carried out; the answer never leaves: RST, not FIN.
                        let _ = rustix::net::sockopt::set_socket_linger(
                            &tls.sock,
                            Some(Duration::ZERO),
                        );
                        return Ok(());
                    }
                }
                write_full(&mut tls, status, content_type, &body, "")?;
            }
            Reply::Watch(w) => {
                count(s, &verb(&head, true));
                if let Some(c) = lock(&s.conns).get_mut(&id) {
                    c.1 = true;
                }
                // Ended by its timeout or an ERROR: the connection serves on, as the
                // apiserver's does; cut or stopped: closed.
                if !super::watch::stream(s, &mut tls, &w)? {
                    return Ok(());
                }
                if let Some(c) = lock(&s.conns).get_mut(&id) {
                    c.1 = false;
                }
            }
        }
        if head
            .header("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("close"))
        {
            return Ok(());
        }
    }
    Ok(())
}

/// RBAC: the manifest's, and what was applied since (kubectl apply).
fn allowed(s: &Shared, user: &super::rbac::User, r: &super::rbac::Request) -> bool {
    let applied = s.cluster.rbac_objects();
    if applied.is_empty() {
        return s.rbac.allows(user, Some(r));
    }
    let docs: Vec<serde_json::Value> = s.rbac_docs.iter().cloned().chain(applied).collect();
    super::rbac::Rbac::from_docs(&docs).is_ok_and(|rbac| rbac.allows(user, Some(r)))
}

/// `kubectl create token yurt-ota -n yurt-ota`: a TokenRequest answered with the
/// ServiceAccount's one token (the stand-in issues no JWTs; the duration asked is echoed).
fn token_request(s: &Shared, head: &Head) -> Option<(u16, String)> {
    let path = head.target.split('?').next().unwrap_or_default();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let ["api", "v1", "namespaces", ns, "serviceaccounts", name, "token"] = parts.as_slice() else {
        return None;
    };
    if head.method != "POST" {
        return None;
    }
    if (*ns, *name) != SERVICE_ACCOUNT {
        let b = status(
            404,
            "NotFound",
            &format!("serviceaccounts \"{name}\" not found"),
            None,
        );
        return Some((404, b.to_string()));
    }
    let expires = yurt_ota::state::rfc3339(SystemTime::now() + Duration::from_secs(3600));
    let b = serde_json::json!({"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"audiences": ["https://kubernetes.default.svc"], "expirationSeconds": 3600},
        "status": {"token": lock(&s.token).clone(), "expirationTimestamp": expires}});
    Some((201, b.to_string()))
}

/// The token controller: a Secret created for the agent's ServiceAccount gets its token.
fn after_create(s: &Shared, head: &Head, status: u16, body: &[u8]) {
    if status != 201 || !head.target.contains("/secrets") {
        return;
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return;
    };
    let (ns, name) = (
        v["metadata"]["namespace"].as_str().unwrap_or_default(),
        v["metadata"]["name"].as_str().unwrap_or_default(),
    );
    let token = lock(&s.token).clone();
    s.cluster.fill_token(ns, name, SERVICE_ACCOUNT, &token);
}

/// Who a request is: the bearer token's (the ServiceAccount, or the admin), else the client
/// certificate's (client-go sends both when both are set; the apiserver tries the
/// certificate first).
fn authenticate(
    s: &Shared,
    head: &Head,
    cert_user: Option<&super::rbac::User>,
) -> Option<super::rbac::User> {
    if let Some(u) = cert_user {
        return Some(u.clone());
    }
    let token = head
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))?
        .trim();
    if token == lock(&s.token).as_str() {
        let (ns, name) = SERVICE_ACCOUNT;
        return Some(super::rbac::User::service_account(ns, name));
    }
    (token == s.admin_token).then(|| super::rbac::User {
        name: ADMIN_USER.into(),
        groups: vec!["system:masters".into(), "system:authenticated".into()],
    })
}

/// `list pods`, `watch pods`, `delete pods`, ... for the request counters (a watch refused
/// before it streams, e.g. for a malformed selector, is still a `watch`).
fn verb(head: &Head, watch: bool) -> String {
    let (path, query) = head.target.split_once('?').unwrap_or((&head.target, ""));
    let watch =
        watch || super::query_value(query, "watch").is_some_and(|w| w == "1" || w == "true");
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let plurals = ["pods", "daemonsets", "controllerrevisions", "leases"];
    let Some(i) = parts.iter().rposition(|p| plurals.contains(p)) else {
        return format!("{} {path}", head.method.to_lowercase());
    };
    let named = i + 1 < parts.len();
    let sub = if i + 2 < parts.len() { "/status" } else { "" };
    let v = match (head.method.as_str(), named) {
        _ if watch => "watch",
        ("GET", false) => "list",
        ("GET", true) => "get",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        (m, _) => return format!("{} {}{sub}", m.to_lowercase(), parts[i]),
    };
    format!("{v} {}{sub}", parts[i])
}

fn count(s: &Shared, key: &str) {
    *lock(&s.requests).entry(key.to_owned()).or_default() += 1;
}
