//! Helpers for driving the real `yurt-ota` binary: a config in a temp dir, the agent process,
//! a scripted upstream HTTP server on loopback, and a small HTTP client.

use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_yurt-ota");

pub fn fixture(version: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/kind-v{version}-kube-system-podlist.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// A real fixture list with `PodNeedUpgrade=True` (v1.7 message form) on the named pods.
pub fn fixture_needing_upgrade(version: &str, name_prefixes: &[&str]) -> Vec<u8> {
    let mut list: Value = serde_json::from_slice(&fixture(version)).unwrap();
    for pod in list["items"].as_array_mut().unwrap() {
        let name = pod["metadata"]["name"].as_str().unwrap().to_owned();
        if name_prefixes.iter().any(|p| name.starts_with(p)) {
            pod["status"]["conditions"].as_array_mut().unwrap().push(serde_json::json!({
                "type": "PodNeedUpgrade", "status": "True", "lastProbeTime": null,
                "lastTransitionTime": "2026-11-25T10:00:00Z", "message": "controllerrevision: 7f9c8d6b5"
            }));
        }
    }
    serde_json::to_vec(&list).unwrap()
}

/// Runs the binary with `args`: its exit code, stdout and stderr.
pub fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `f` holds, at most `timeout`: a bound on waiting, never a measure. Under qemu (any
/// target but x86_64 here) it is three times as long, as emulated code runs several times slower.
pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let timeout = if cfg!(target_arch = "x86_64") {
        timeout
    } else {
        timeout * 3
    };
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}

pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub fn request(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Reply {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .proxy(None)
        .allow_non_standard_methods(true)
        .build()
        .new_agent();
    let req = ureq::http::Request::builder().method(method).uri(url);
    let req = headers.iter().fold(req, |r, (k, v)| r.header(*k, *v));
    let mut resp = agent
        .run(req.body(body.unwrap_or_default().to_vec()).unwrap())
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status().as_u16();
    let headers: Vec<(String, String)> = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
        .collect();
    let content_type = headers
        .iter()
        .find(|(k, _)| k == "content-type")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let body = resp
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()
        .unwrap();
    Reply {
        status,
        content_type,
        headers,
        body,
    }
}

pub fn get(url: &str) -> Reply {
    request("GET", url, &[], None)
}

pub fn post(url: &str) -> Reply {
    request("POST", url, &[], None)
}

/// The agent process, killed on drop.
pub struct Agent {
    pub child: Child,
    pub base: String,
    pub dir: tempfile::TempDir,
}

impl Agent {
    /// Starts `yurt-ota run` with `extra` TOML appended to an `[api]` section on a free port, and
    /// waits for its API to answer.
    pub fn start(extra: &str) -> Agent {
        let port = free_port();
        Agent::start_with(
            &format!("[api]\nlisten = \"127.0.0.1:{port}\"\n{extra}"),
            &format!("http://127.0.0.1:{port}"),
        )
    }

    pub fn start_with(config: &str, base: &str) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        Agent::start_in(config, base, dir)
    }

    /// Starts the agent with its files in `dir`: the config, the log, and (unless the config
    /// says otherwise) the state directory `dir/state`, so a restart can find them again.
    pub fn start_in(config: &str, base: &str, dir: tempfile::TempDir) -> Agent {
        Agent::start_env(config, base, dir, &[])
    }

    /// As `start_in`, with extra environment variables for the agent.
    pub fn start_env(
        config: &str,
        base: &str,
        dir: tempfile::TempDir,
        env: &[(&str, &str)],
    ) -> Agent {
        let path = dir.path().join("config.toml");
        let mut config = config.to_owned();
        if !config.contains("[state]") {
            config += &format!(
                "\n[state]\ndir = \"{}\"\n",
                dir.path().join("state").display()
            );
        }
        std::fs::write(&path, config).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("agent.log"))
            .unwrap();
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(&path)
            .env("YURT_OTA_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut agent = Agent {
            child,
            base: base.to_owned(),
            dir,
        };
        if base.starts_with("http") {
            let url = format!("{base}/v1/healthz");
            let child = &mut agent.child;
            wait_for("the agent's API", Duration::from_secs(10), || {
                assert!(
                    child.try_wait().unwrap().is_none(),
                    "the agent exited early"
                );
                std::net::TcpStream::connect(
                    url.trim_start_matches("http://").split('/').next().unwrap(),
                )
                .is_ok()
            });
        }
        agent
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    pub fn metric(&self, line_prefix: &str) -> f64 {
        let text = get(&self.url("/metrics")).text();
        text.lines()
            .find_map(|l| {
                l.strip_prefix(line_prefix)
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(0.0)
    }

    /// Runs a CLI subcommand against this agent.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .args(["--api", &self.base])
            .output()
            .unwrap()
    }

    /// Sends SIGTERM and returns the agent's exit status, which must come within 5 s.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let kill = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        let mut code = None;
        wait_for("exit after SIGTERM", Duration::from_secs(5), || {
            code = self.child.try_wait().unwrap();
            code.is_some()
        });
        code.unwrap()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process killed when the test ends, passing or not.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What the scripted upstream answers to `GET /pods`.
#[derive(Clone)]
pub enum Pods {
    /// With a Content-Length.
    Serve(Vec<u8>),
    /// Chunked, with no declared length (as Go's net/http sends a large JSON body).
    ServeChunked(Vec<u8>),
    Status(u16, &'static str),
    /// Accept the request and never answer.
    Hang,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub at: Instant,
}

pub struct Script {
    pub pods: Pods,
    /// Answers to POSTs, `(status, content type, body)`, used in order; the last one repeats.
    pub answers: Vec<(u16, &'static str, String)>,
    pub calls: Vec<Call>,
}

/// A YurtHub stand-in on loopback whose answers a test sets.
pub struct Upstream {
    pub port: u16,
    pub script: Arc<Mutex<Script>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Upstream {
    pub fn start(pods: Pods) -> Upstream {
        Upstream::start_on(
            free_port(),
            Arc::new(Mutex::new(Script {
                pods,
                answers: Vec::new(),
                calls: Vec::new(),
            })),
        )
    }

    /// Listens on `port` (again, after `stop`), with the same script.
    pub fn start_on(port: u16, script: Arc<Mutex<Script>>) -> Upstream {
        let mut server = None;
        wait_for("the upstream port", Duration::from_secs(5), || {
            server = tiny_http::Server::http(("127.0.0.1", port)).ok();
            server.is_some()
        });
        let server = server.unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (script.clone(), stop.clone());
        let thread = thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let Ok(Some(mut req)) = server.recv_timeout(Duration::from_millis(20)) else {
                    continue;
                };
                let mut sink = Vec::new();
                let _ = req.as_reader().read_to_end(&mut sink);
                let mut script = s.lock().unwrap();
                script.calls.push(Call {
                    method: req.method().to_string(),
                    path: req.url().to_owned(),
                    at: Instant::now(),
                });
                let mut chunked = false;
                let (status, ct, body): (u16, &str, Vec<u8>) = if req.url() == "/pods" {
                    match script.pods.clone() {
                        Pods::Serve(b) => (200, "application/json", b),
                        Pods::ServeChunked(b) => {
                            chunked = true;
                            (200, "application/json", b)
                        }
                        Pods::Status(code, text) => {
                            (code, "text/plain; charset=utf-8", text.as_bytes().to_vec())
                        }
                        Pods::Hang => {
                            drop(script);
                            thread::spawn(move || {
                                thread::sleep(Duration::from_secs(5));
                                drop(req);
                            });
                            continue;
                        }
                    }
                } else {
                    let a = if script.answers.len() > 1 {
                        script.answers.remove(0)
                    } else {
                        script.answers.first().cloned().unwrap_or((
                            404,
                            "text/plain; charset=utf-8",
                            "404 page not found\n".into(),
                        ))
                    };
                    (a.0, a.1, a.2.into_bytes())
                };
                drop(script);
                let header = tiny_http::Header::from_bytes("Content-Type", ct).unwrap();
                let _ = req.respond(
                    tiny_http::Response::from_data(body)
                        .with_status_code(status)
                        .with_header(header)
                        .with_chunked_threshold(if chunked { 0 } else { usize::MAX }),
                );
            }
        });
        Upstream {
            port,
            script,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn set_pods(&self, pods: Pods) {
        self.script.lock().unwrap().pods = pods;
    }

    pub fn answer(&self, answers: Vec<(u16, &'static str, String)>) {
        self.script.lock().unwrap().answers = answers;
    }

    pub fn calls(&self, method: &str) -> Vec<Call> {
        self.script
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|c| c.method == method)
            .cloned()
            .collect()
    }

    /// Closes the listening socket: the agent now gets "connection refused".
    pub fn stop(mut self) -> (u16, Arc<Mutex<Script>>) {
        self.halt();
        (self.port, self.script.clone())
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.halt();
    }
}

pub fn config_for(upstream: &str, poll: &str, timeout: &str) -> String {
    format!(
        "[upstream]\nurl = \"{upstream}\"\npoll_interval = \"{poll}\"\ntimeout = \"{timeout}\"\n"
    )
}

/// A ureq agent over rustls with the apiserver stand-in's CA as the only root (and a client
/// certificate, PEM cert and key, when given); statuses are answers, not errors.
pub fn apisim_agent(ca_pem: &str, client_cert: Option<(&str, &str)>) -> ureq::Agent {
    use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig, TlsProvider};
    let ca = Certificate::from_pem(ca_pem.as_bytes()).unwrap();
    let mut tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .root_certs(RootCerts::Specific(Arc::new(vec![ca])));
    if let Some((cert, key)) = client_cert {
        let cert = Certificate::from_pem(cert.as_bytes()).unwrap();
        let key = PrivateKey::from_pem(key.as_bytes()).unwrap();
        tls = tls.client_cert(Some(ClientCert::new_with_certs(&[cert], key)));
    }
    ureq::Agent::config_builder()
        .tls_config(tls.build())
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

/// A client of the apiserver stand-in: its CA, its URL and its bearer token.
pub struct ApiClient {
    pub agent: ureq::Agent,
    pub base: String,
    pub token: String,
}

impl ApiClient {
    pub fn new(h: &yurt_ota_apisim::apiserver::server::Handle) -> ApiClient {
        ApiClient {
            agent: apisim_agent(&h.ca_pem, None),
            base: h.url(),
            token: h.token(),
        }
    }

    /// The same with the admin token (`system:masters`): what an operator or a controller
    /// does, past the agent's RBAC.
    pub fn admin(h: &yurt_ota_apisim::apiserver::server::Handle) -> ApiClient {
        ApiClient {
            token: h.admin_token(),
            ..ApiClient::new(h)
        }
    }

    pub fn auth(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// One request (`path` from `/api…`), the body sent as `content_type`.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Option<&[u8]>,
    ) -> Result<(u16, Vec<u8>), String> {
        let url = format!("{}{path}", self.base);
        let auth = self.auth();
        let r = match (method, body) {
            ("GET", None) => self.agent.get(&url).header("Authorization", &auth).call(),
            (_, None) => return Err(format!("{method} without a body")),
            (m, Some(b)) => {
                let builder = match m {
                    "POST" => self.agent.post(&url),
                    "PUT" => self.agent.put(&url),
                    "PATCH" => self.agent.patch(&url),
                    "DELETE" => return self.delete_with(&url, content_type, b),
                    _ => return Err(format!("no {m}")),
                };
                builder
                    .header("Authorization", &auth)
                    .header("Content-Type", content_type)
                    .send(b)
            }
        };
        let mut r = r.map_err(|e| e.to_string())?;
        let status = r.status().as_u16();
        let body = r.body_mut().read_to_vec().map_err(|e| e.to_string())?;
        Ok((status, body))
    }

    fn delete_with(&self, url: &str, ct: &str, b: &[u8]) -> Result<(u16, Vec<u8>), String> {
        let mut r = self
            .agent
            .delete(url)
            .header("Authorization", self.auth())
            .header("Content-Type", ct)
            .force_send_body()
            .send(b)
            .map_err(|e| e.to_string())?;
        let status = r.status().as_u16();
        Ok((
            status,
            r.body_mut().read_to_vec().map_err(|e| e.to_string())?,
        ))
    }

    /// `GET path` as JSON.
    pub fn get(&self, path: &str) -> (u16, Value) {
        let (s, body) = self.call("GET", path, "", None).unwrap();
        (s, serde_json::from_slice(&body).unwrap())
    }
}

impl Agent {
    /// A raw TCP connection to the agent's API, for tests that write bytes themselves.
    pub fn connect(&self) -> std::net::TcpStream {
        std::net::TcpStream::connect(self.base.strip_prefix("http://").unwrap()).unwrap()
    }

    /// The `pod` of each event of `kind` among the last `limit` events, oldest first.
    pub fn event_pods(&self, kind: &str, limit: usize) -> Vec<String> {
        let events = get(&self.url(&format!("/v1/events?limit={limit}"))).json();
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == kind)
            .map(|e| e["pod"].as_str().unwrap().to_string())
            .collect()
    }

    /// Asserts the agent's log holds `needle` exactly once.
    #[track_caller]
    pub fn assert_logged_once(&self, needle: &str) {
        let log = self.log();
        assert_eq!(
            log.matches(needle).count(),
            1,
            "{needle:?} logged once:\n{log}"
        );
    }
}

/// The apiserver stand-in on loopback (free ports), its files in a new temporary directory,
/// with `options` and a bookmark every `bookmark`; `edit` changes the rest before it starts.
pub fn apisim_start(
    bookmark: Duration,
    options: yurt_ota_apisim::apiserver::Options,
    edit: impl FnOnce(&mut yurt_ota_apisim::apiserver::server::Config),
) -> (
    yurt_ota_apisim::apiserver::server::Handle,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = yurt_ota_apisim::apiserver::server::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        control: "127.0.0.1:0".parse().unwrap(),
        dir: dir.path().to_owned(),
        token: None,
        sans: Vec::new(),
        bookmark_interval: bookmark,
        rbac: None,
        rsa_client: false,
        options,
    };
    edit(&mut cfg);
    (yurt_ota_apisim::apiserver::server::start(cfg).unwrap(), dir)
}

/// Nodes edge-node-1..=`n`.
pub fn apisim_nodes(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("edge-node-{i}")).collect()
}
