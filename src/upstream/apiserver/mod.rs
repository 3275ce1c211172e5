//! The kube-apiserver as upstream (SPEC 2b): the node's pods from a list and a watch, kept in
//! memory; upgrades with YurtHub's checks, order and answers; detect = "revision" computed here.
//!
//! The rest of the agent sees only `Upstream`: `list_pods()` renders the same `v1.PodList` as
//! YurtHub's `GET /pods` from memory (also while the apiserver is unreachable), and `upgrade` /
//! `imagepull` answer YurtHub's v1.7 status codes and plain-text bodies.

pub mod kubeconfig;
pub mod revision;
pub mod tls;
pub mod watch;

use std::collections::HashMap;
use std::io::BufReader;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use serde_json::Value;
use ureq::Agent;

use self::kubeconfig::{Auth, Source, Target};
use self::revision::{DaemonSetView, Decision};
use self::tls::{Credential, Tls};
use self::watch::{Backoff, Event, Store};
use super::{excerpt, Relay, Upstream, UpstreamError, MAX_BODY};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detect {
    /// `PodNeedUpgrade` comes from OpenYurt's controller.
    Openyurt,
    /// The agent compares revisions itself and synthesizes `PodNeedUpgrade`.
    Revision,
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// From a kubeconfig, or from `server`, `ca_file`, `token_file`, `client_cert`/`client_key`.
    pub target: Target,
    pub node_name: String,
    pub detect: Detect,
    /// Bounds each call but the watch.
    pub timeout: Duration,
}

impl Settings {
    /// The `[upstream]` keys without a kubeconfig.
    pub fn explicit(
        server: &str,
        ca_file: PathBuf,
        token_file: Option<PathBuf>,
        client: Option<(PathBuf, PathBuf)>,
    ) -> Result<Target, String> {
        let server =
            kubeconfig::check_server(server).map_err(|e| format!("upstream.server: {e}"))?;
        let auth = match (client, token_file) {
            (Some((c, k)), _) => Auth::ClientCert {
                cert: Source::File(c),
                key: Source::File(k),
            },
            (None, Some(t)) => Auth::TokenFile(t),
            (None, None) => Auth::None,
        };
        Ok(Target {
            server,
            ca: Some(Source::File(ca_file)),
            auth,
        })
    }

    /// For check-config: server, auth method, CA source; never a secret.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        vec![
            ("server", self.target.server.clone()),
            ("auth", self.target.auth.describe()),
            (
                "ca",
                self.target
                    .ca
                    .as_ref()
                    .map_or("none".into(), |c| c.describe("certificate-authority")),
            ),
            ("node", self.node_name.clone()),
            (
                "detect",
                match self.detect {
                    Detect::Openyurt => "openyurt".into(),
                    Detect::Revision => "revision".into(),
                },
            ),
        ]
    }
}

/// The validated `[upstream]` keys made into what the upstream needs: the kubeconfig read (its
/// errors name the key and the file), the node name defaulted to the host name.
pub fn resolve(
    a: &crate::config::ApiserverSettings,
    timeout: Duration,
) -> Result<Settings, String> {
    let target = match (&a.kubeconfig, &a.server) {
        (Some(path), _) => kubeconfig::load(path)?,
        (None, Some(server)) => {
            let ca = a.ca_file.clone().ok_or(
                "upstream.ca_file: required with upstream.server (no public roots are trusted)",
            )?;
            Settings::explicit(server, ca, a.token_file.clone(), a.client_cert.clone())?
        }
        (None, None) => {
            return Err(
                "upstream: a kubeconfig or a server is required for kind = \"apiserver\"".into(),
            )
        }
    };
    let node_name = match &a.node_name {
        Some(n) => n.clone(),
        None => host_name()?,
    };
    Ok(Settings {
        target,
        node_name,
        detect: match a.detect {
            crate::config::Detect::Openyurt => Detect::Openyurt,
            crate::config::Detect::Revision => Detect::Revision,
        },
        timeout,
    })
}

/// As the kubelet names its node: the host name, lower case.
fn host_name() -> Result<String, String> {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_err(|e| format!("upstream.node_name: unset and the host name is unreadable ({e})"))?;
    let name = raw.trim().to_ascii_lowercase();
    if name.is_empty() {
        return Err("upstream.node_name: unset and the host name is empty".into());
    }
    Ok(name)
}

/// The watch, for readiness and `/v1/status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchState {
    pub connected_since: Option<SystemTime>,
    pub last_event: Option<SystemTime>,
    pub relists: u64,
    pub reconnects: u64,
    pub last_error: Option<String>,
    /// Requests sent to the apiserver (lists, watches, gets), for the idle benchmark.
    pub requests: u64,
}

/// A DaemonSet with pods on this node (detect = revision).
#[derive(Debug, Clone, Default)]
pub struct Tracked {
    pub uid: String,
    pub view: Option<DaemonSetView>,
    /// Why its pods get no synthesized condition, for status.
    pub skip: Option<String>,
    /// Set while a thread watches it; cleared when its last pod left.
    pub watching: bool,
    /// Its uid, strategy and budget annotations and desiredNumberScheduled (SPEC 6b).
    pub info: Option<crate::fleet::DaemonSetInfo>,
}

struct Shared {
    store: Store,
    listed: bool,
    watch: WatchState,
    daemonsets: HashMap<(String, String), Tracked>,
}

struct Inner {
    settings: Settings,
    url: String,
    calls: Agent,
    streams: Agent,
    credential: Credential,
    shared: Mutex<Shared>,
}

pub struct Apiserver {
    inner: Arc<Inner>,
    /// The fleet budget's Lease slots, over the same HTTPS client (SPEC 6b).
    leases: crate::fleet::kube::LeaseApi<Calls>,
}

/// One request over the calls client, for `fleet::kube`.
struct Calls(Arc<Inner>);

impl crate::fleet::kube::Kube for Calls {
    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<(u16, Vec<u8>), String> {
        let i = &self.0;
        let body = body.map(|b| ("application/json", b.to_vec()));
        let resp = i
            .request(&i.calls, method, path, body)
            .map_err(|e| e.to_string())?;
        Inner::read_all(resp).map_err(|e| e.to_string())
    }
}

/// Watches last this long before the server ends them (the kubelet draws 5 to 10 minutes).
const WATCH_SECONDS: u64 = 300;

impl Apiserver {
    /// Checks the TLS material and starts the watch thread.
    pub fn start(settings: Settings) -> Result<Apiserver, String> {
        let ca = settings.target.ca.as_ref().ok_or_else(|| {
            "no CA for the apiserver: set certificate-authority(-data) in the kubeconfig, or upstream.ca_file (no public roots are trusted)".to_string()
        })?;
        let client = match &settings.target.auth {
            Auth::ClientCert { cert, key } => Some((cert, key)),
            _ => None,
        };
        let tls = Tls::new(ca, client)?;
        let credential = Credential::new(&settings.target.auth);
        let inner = Arc::new(Inner {
            url: settings.target.server.clone(),
            calls: tls.agent(settings.timeout, Some(settings.timeout)),
            streams: tls.agent(
                settings.timeout,
                Some(Duration::from_secs(WATCH_SECONDS + 30)),
            ),
            credential,
            settings,
            shared: Mutex::new(Shared {
                store: Store::default(),
                listed: false,
                watch: WatchState::default(),
                daemonsets: HashMap::new(),
            }),
        });
        let bg = inner.clone();
        std::thread::Builder::new()
            .name("apiserver-watch".into())
            .spawn(move || bg.pods_loop())
            .map_err(|e| format!("cannot start the watch thread: {e}"))?;
        // The first poll finds the first list when the apiserver answers within the timeout,
        // instead of logging a failure at every start.
        let deadline = std::time::Instant::now() + inner.settings.timeout;
        while !inner.lock().listed && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let leases = crate::fleet::kube::LeaseApi(Calls(inner.clone()));
        Ok(Apiserver { inner, leases })
    }

    /// `DELETE` with the uid read as precondition: a pod recreated under the same name since
    /// is never deleted (409, answered as YurtHub's 403).
    pub fn delete(&self, ns: &str, name: &str, uid: &str) -> Result<Relay, UpstreamError> {
        let i = &self.inner;
        let body = serde_json::json!({"kind":"DeleteOptions","apiVersion":"v1","preconditions":{"uid": uid}});
        let resp = match i.request(
            &i.calls,
            "DELETE",
            &format!("/api/v1/namespaces/{ns}/pods/{name}"),
            Some(("application/json", body.to_string().into_bytes())),
        ) {
            Ok(r) => r,
            Err(_) => return Ok(disconnected()),
        };
        let (code, body) = Inner::read_all(resp)?;
        Ok(match code {
            200 | 202 => Relay {
                status: 200,
                content_type: Some("application/json".into()),
                body: format!("Start updating pod {ns}/{name}").into_bytes(),
            },
            404 => text(403, format!("Pre check update pod failed, pod {ns}/{name} (uid {uid}) is gone")),
            409 => text(
                403,
                format!("Pre check update pod failed, pod {ns}/{name} changed before the delete: it is no longer uid {uid}"),
            ),
            _ => {
                log::warn!("apiserver delete of {ns}/{name} answered {code}: {}", excerpt(&body));
                text(500, "Apply update failed")
            }
        })
    }

    pub fn watch_state(&self) -> WatchState {
        self.inner.lock().watch.clone()
    }

    pub fn daemonsets(&self) -> Vec<((String, String), Tracked)> {
        let s = self.inner.lock();
        let mut v: Vec<_> = s
            .daemonsets
            .iter()
            .map(|(k, t)| (k.clone(), t.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

/// Percent-encoding for a query value.
fn q(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// How a DaemonSet watch ended.
enum DsWatchEnd {
    /// Watch again from this resourceVersion.
    Renew(String),
    /// Read the DaemonSet afresh first.
    Reread,
    /// Its last pod left this node.
    Untracked,
}

enum WatchEnd {
    /// The server closed the stream (timeoutSeconds): re-watch from the last resourceVersion.
    Closed,
    Expired,
    Failed(String),
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn request(
        &self,
        agent: &Agent,
        method: &str,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<ureq::http::Response<ureq::Body>, UpstreamError> {
        self.lock().watch.requests += 1;
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.url))
            .header("Accept", "application/json");
        if let Some(h) = self.credential.header().map_err(UpstreamError::Connect)? {
            req = req.header("Authorization", h);
        }
        let resp = match body {
            Some((ct, b)) => agent.run(
                req.header("Content-Type", ct)
                    .body(b)
                    .expect("valid request"),
            ),
            None => agent.run(req.body(()).expect("valid request")),
        };
        resp.map_err(map_error)
    }

    fn read_all(resp: ureq::http::Response<ureq::Body>) -> Result<(u16, Vec<u8>), UpstreamError> {
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .into_with_config()
            .limit(MAX_BODY)
            .read_to_vec()
            .map_err(map_error)?;
        Ok((status, body))
    }

    fn get(&self, path: &str) -> Result<(u16, Vec<u8>), UpstreamError> {
        Self::read_all(self.request(&self.calls, "GET", path, None)?)
    }

    fn node(&self) -> &str {
        &self.settings.node_name
    }

    /// List, then watch, for ever; the state is in `shared`.
    fn pods_loop(self: Arc<Self>) {
        let mut backoff = Backoff::new();
        let mut need_list = true;
        let selector = q(&format!("spec.nodeName={}", self.node()));
        loop {
            if need_list {
                match self.get(&format!("/api/v1/pods?fieldSelector={selector}")) {
                    Ok((200, body)) => {
                        let mut s = self.lock();
                        match s.store.replace(&body) {
                            Ok(()) => {
                                if s.listed {
                                    s.watch.relists += 1;
                                }
                                s.listed = true;
                                drop(s);
                                need_list = false;
                                self.track_daemonsets();
                            }
                            Err(e) => {
                                log::warn!("apiserver pod list: {e}; keeping the last good pods");
                                s.watch.last_error = Some(e);
                            }
                        }
                    }
                    Ok((code, body)) => {
                        self.failed(format!("pod list answered {code}: {}", excerpt(&body)))
                    }
                    Err(e) => self.failed(format!("pod list: {e}")),
                }
                if need_list {
                    std::thread::sleep(backoff.next_delay());
                    continue;
                }
            }
            let rv = self.lock().store.rv.clone();
            let path = format!(
                "/api/v1/pods?fieldSelector={selector}&resourceVersion={}&watch=1&allowWatchBookmarks=true&timeoutSeconds={WATCH_SECONDS}",
                q(&rv)
            );
            let began = std::time::Instant::now();
            match self.watch(&path) {
                // Ended by the server after a while: re-watch at once from the last version.
                (WatchEnd::Closed, got) if got || began.elapsed() >= Duration::from_secs(5) => {
                    backoff.reset();
                }
                // Closed at once with nothing in it (a proxy, a restarting apiserver): back off,
                // or the loop would spin.
                (WatchEnd::Closed, _) => {
                    std::thread::sleep(backoff.next_delay());
                    self.lock().watch.reconnects += 1;
                }
                (WatchEnd::Expired, _) => {
                    log::info!(
                        "apiserver watch: resourceVersion {rv} expired (410); listing again"
                    );
                    need_list = true;
                }
                (WatchEnd::Failed(e), got_events) => {
                    if got_events {
                        backoff.reset();
                    }
                    self.failed(format!("pod watch: {e}"));
                    let d = backoff.next_delay();
                    std::thread::sleep(d);
                    self.lock().watch.reconnects += 1;
                }
            }
        }
    }

    fn failed(&self, e: String) {
        let mut s = self.lock();
        if s.watch.last_error.as_deref() != Some(&e) {
            log::warn!("apiserver {}: {e}", self.url);
        }
        s.watch.connected_since = None;
        s.watch.last_error = Some(e);
    }

    fn watch(self: &Arc<Self>, path: &str) -> (WatchEnd, bool) {
        let resp = match self.request(&self.streams, "GET", path, None) {
            Ok(r) => r,
            Err(e) => return (WatchEnd::Failed(e.to_string()), false),
        };
        match resp.status().as_u16() {
            200 => {}
            410 => return (WatchEnd::Expired, false),
            code => {
                let body = Self::read_all(resp).map(|r| r.1).unwrap_or_default();
                return (
                    WatchEnd::Failed(format!("answered {code}: {}", excerpt(&body))),
                    false,
                );
            }
        }
        {
            let mut s = self.lock();
            s.watch.connected_since = Some(SystemTime::now());
            s.watch.last_error = None;
        }
        let mut r = BufReader::with_capacity(16 * 1024, resp.into_body().into_reader());
        let mut buf = Vec::new();
        let mut got = false;
        loop {
            let line = match watch::read_line(&mut r, &mut buf) {
                Ok(Some(l)) => l,
                Ok(None) => return (WatchEnd::Closed, got),
                Err(e) => return (WatchEnd::Failed(format!("stream broke: {e}")), got),
            };
            if let Err(n) = line {
                log::warn!("apiserver watch: skipped an event of {n} bytes (over {} MiB); keeping the last good state", watch::MAX_EVENT >> 20);
                continue;
            }
            if buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let ev = match watch::parse_event(&buf) {
                Ok(ev) => ev,
                Err(e) => {
                    log::warn!(
                        "apiserver watch: bad event ({e}): {}; keeping the last good state",
                        excerpt(&buf)
                    );
                    continue;
                }
            };
            got = true;
            match ev {
                Event::Expired => return (WatchEnd::Expired, got),
                Event::Error(m) => return (WatchEnd::Failed(format!("ERROR event: {m}")), got),
                ev => {
                    let mut s = self.lock();
                    s.watch.last_event = Some(SystemTime::now());
                    let upsert_ds = match &ev {
                        Event::Upsert(_, e, _) => e.daemonset.clone(),
                        _ => None,
                    };
                    if s.store.apply(ev) {
                        let new_ds = upsert_ds.is_some_and(|d| {
                            !s.daemonsets.get(&(d.0, d.1)).is_some_and(|t| t.watching)
                        });
                        drop(s);
                        if new_ds {
                            self.track_daemonsets();
                        }
                    }
                }
            }
        }
    }

    /// detect = revision: a thread per DaemonSet with pods on this node; untracked ones stop.
    fn track_daemonsets(self: &Arc<Self>) {
        if self.settings.detect != Detect::Revision {
            return;
        }
        let mut s = self.lock();
        let wanted: HashMap<(String, String), String> = s
            .store
            .pods
            .values()
            .filter_map(|e| e.daemonset.clone())
            .map(|(ns, n, uid)| ((ns, n), uid))
            .collect();
        s.daemonsets.retain(|k, t| {
            let keep = wanted.contains_key(k);
            if !keep {
                t.watching = false;
            }
            keep
        });
        for (k, uid) in wanted {
            let t = s.daemonsets.entry(k.clone()).or_default();
            t.uid = uid;
            if !t.watching {
                t.watching = true;
                let me = self.clone();
                let name = format!("ds-{}", k.1);
                if let Err(e) = std::thread::Builder::new()
                    .name(name)
                    .spawn(move || me.daemonset_loop(k))
                {
                    log::error!("cannot start a DaemonSet watch thread: {e}");
                }
            }
        }
    }

    fn still_tracked(&self, k: &(String, String)) -> bool {
        self.lock().daemonsets.get(k).is_some_and(|t| t.watching)
    }

    /// Reads the DaemonSet (and its ControllerRevisions when its generation moved), then
    /// watches it by name; a change of generation or annotations re-reads, nothing is polled.
    /// A watch that ends (its `timeoutSeconds`, a broken stream, no connection) is renewed from
    /// the last resourceVersion seen, bookmarks included, as the kubelet's reflector does: the
    /// DaemonSet is read again only after a 410, a refusal, `DELETED` or an `ERROR` event.
    fn daemonset_loop(self: Arc<Self>, k: (String, String)) {
        let mut backoff = Backoff::new();
        let mut last_gen: Option<(i64, i64)> = None;
        // Where to watch from; None: read the DaemonSet first.
        let mut from: Option<String> = None;
        while self.still_tracked(&k) {
            let rv = match from.take() {
                Some(rv) => rv,
                None => match self.read_daemonset(&k, &mut last_gen) {
                    Ok(rv) => rv,
                    Err(e) => {
                        self.set_skip(&k, None, Some(e));
                        std::thread::sleep(backoff.next_delay());
                        continue;
                    }
                },
            };
            let began = std::time::Instant::now();
            from = match self.watch_daemonset(&k, rv, &mut last_gen) {
                DsWatchEnd::Renew(rv) => Some(rv),
                DsWatchEnd::Reread => None,
                DsWatchEnd::Untracked => return,
            };
            // A watch that ended at once (an error, a proxy) is not re-opened in a tight loop.
            if began.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(backoff.next_delay());
            } else {
                backoff.reset();
            }
        }
    }

    /// `GET` of the DaemonSet, applied; its resourceVersion to watch from.
    fn read_daemonset(
        &self,
        k: &(String, String),
        last_gen: &mut Option<(i64, i64)>,
    ) -> Result<String, String> {
        let (ns, name) = (&k.0, &k.1);
        let ds = match self.get(&format!("/apis/apps/v1/namespaces/{ns}/daemonsets/{name}")) {
            Ok((200, body)) => serde_json::from_slice::<Value>(&body).map_err(|e| e.to_string()),
            Ok((code, body)) => Err(format!("answered {code}: {}", excerpt(&body))),
            Err(e) => Err(e.to_string()),
        }
        .map_err(|e| format!("cannot read DaemonSet {ns}/{name}: {e}"))?;
        self.update_daemonset(k, &ds, last_gen)?;
        Ok(ds["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    /// One watch of the DaemonSet by name from `rv`, applying what it sends.
    fn watch_daemonset(
        &self,
        k: &(String, String),
        mut rv: String,
        last_gen: &mut Option<(i64, i64)>,
    ) -> DsWatchEnd {
        let (ns, name) = (&k.0, &k.1);
        let path = format!(
            "/apis/apps/v1/namespaces/{ns}/daemonsets?fieldSelector={}&resourceVersion={}&watch=1&allowWatchBookmarks=true&timeoutSeconds={WATCH_SECONDS}",
            q(&format!("metadata.name={name}")),
            q(&rv)
        );
        let resp = match self.request(&self.streams, "GET", &path, None) {
            Ok(r) if r.status() == 200 => r,
            // An answer: 410 (too old), or a refusal the GET will name in status.
            Ok(_) => return DsWatchEnd::Reread,
            // No answer (the apiserver down): try the same watch again.
            Err(_) => return DsWatchEnd::Renew(rv),
        };
        let mut r = BufReader::with_capacity(4 * 1024, resp.into_body().into_reader());
        let mut buf = Vec::new();
        // Ended by the server or broken: renew from what was seen.
        while let Ok(Some(line)) = watch::read_line(&mut r, &mut buf) {
            if !self.still_tracked(k) {
                return DsWatchEnd::Untracked;
            }
            // An event over `MAX_EVENT` or not JSON is skipped, as in the pod watch.
            let Some(mut ev) = line
                .ok()
                .and_then(|()| serde_json::from_slice::<Value>(&buf).ok())
            else {
                continue;
            };
            let obj = ev["object"].take();
            match ev["type"].as_str() {
                Some("MODIFIED" | "ADDED") => {
                    if let Err(e) = self.update_daemonset(k, &obj, last_gen) {
                        self.set_skip(k, None, Some(e));
                        return DsWatchEnd::Reread;
                    }
                }
                Some("BOOKMARK") => {}
                _ => return DsWatchEnd::Reread, // DELETED, ERROR (410 among them)
            }
            if let Some(v) = obj["metadata"]["resourceVersion"].as_str() {
                rv = v.to_owned();
            }
        }
        DsWatchEnd::Renew(rv)
    }

    fn set_skip(&self, k: &(String, String), view: Option<DaemonSetView>, skip: Option<String>) {
        let mut s = self.lock();
        if let Some(t) = s.daemonsets.get_mut(k) {
            if view.is_some() {
                t.view = view;
            }
            t.skip = skip;
        }
    }

    fn update_daemonset(
        &self,
        k: &(String, String),
        ds: &Value,
        last_gen: &mut Option<(i64, i64)>,
    ) -> Result<(), String> {
        let gen = ds["metadata"]["generation"].as_i64().unwrap_or(0);
        let observed = ds["status"]["observedGeneration"].as_i64().unwrap_or(0);
        let ann = &ds["metadata"]["annotations"];
        let mut view = DaemonSetView {
            generation: gen,
            observed_generation: observed,
            strategy: ds["spec"]["updateStrategy"]["type"]
                .as_str()
                .unwrap_or("RollingUpdate")
                .to_owned(),
            ota_annotation: ann["apps.openyurt.io/update-strategy"]
                .as_str()
                .map(str::to_owned),
            template_generation: ann["deprecated.daemonset.template.generation"]
                .as_str()
                .map(str::to_owned),
            newest_hash: None,
        };
        let info = crate::fleet::kube::daemonset_info(ds);
        if let Some(t) = self.lock().daemonsets.get_mut(k) {
            t.info = info;
        }
        let old = self.lock().daemonsets.get(k).and_then(|t| t.view.clone());
        let relevant =
            view.strategy == "OnDelete" && view.ota_annotation.is_some() && observed >= gen;
        if relevant {
            if *last_gen == Some((gen, observed)) {
                view.newest_hash = old.and_then(|o| o.newest_hash);
            } else {
                view.newest_hash = self.newest_revision(k, ds)?;
                *last_gen = Some((gen, observed));
            }
        }
        let skip = match revision::decide(&view, &Default::default()) {
            Decision::Skip(s) => Some(s.to_string()),
            Decision::Condition { .. } => None,
        };
        self.set_skip(k, Some(view), skip);
        Ok(())
    }

    /// The hash of the owned ControllerRevision with the highest `.revision`.
    fn newest_revision(&self, k: &(String, String), ds: &Value) -> Result<Option<String>, String> {
        let uid = ds["metadata"]["uid"].as_str().unwrap_or_default();
        let selector: Vec<String> = ds["spec"]["selector"]["matchLabels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some(format!("{k}={}", v.as_str()?)))
                    .collect()
            })
            .unwrap_or_default();
        let path = format!(
            "/apis/apps/v1/namespaces/{}/controllerrevisions?labelSelector={}",
            k.0,
            q(&selector.join(","))
        );
        let list: Value = match self.get(&path) {
            Ok((200, body)) => serde_json::from_slice(&body)
                .map_err(|e| format!("ControllerRevision list: {e}"))?,
            Ok((code, body)) => {
                return Err(format!(
                    "ControllerRevision list answered {code}: {}",
                    excerpt(&body)
                ))
            }
            Err(e) => return Err(format!("ControllerRevision list: {e}")),
        };
        Ok(newest_owned(&list, uid))
    }

    fn decision(&self, s: &Shared, e: &watch::Entry) -> Option<(bool, String)> {
        let (ns, name, uid) = e.daemonset.as_ref()?;
        let t = s.daemonsets.get(&(ns.clone(), name.clone()))?;
        if &t.uid != uid {
            return None;
        }
        match revision::decide(t.view.as_ref()?, &e.labels) {
            Decision::Condition { needs, hash } => Some((needs, hash)),
            Decision::Skip(_) => None,
        }
    }

    /// The `v1.PodList` as `GET /pods` serves it, rendered at each call from the store: the
    /// pods are kept once, as text; a cached copy would be a second (and the snapshot's body
    /// a third) of about 5 KB a pod.
    fn rendered(&self) -> Result<Vec<u8>, UpstreamError> {
        let s = self.lock();
        if !s.listed {
            return Err(UpstreamError::Connect(
                s.watch
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "no pod list from the apiserver yet".into()),
            ));
        }
        Ok(match self.settings.detect {
            Detect::Openyurt => s.store.render(|_| None),
            Detect::Revision => s.store.render(|e| self.decision(&s, e)),
        })
    }

    /// A fresh read of the pod, as YurtHub does (never the watch cache); with detect =
    /// revision, the synthesized condition added from the DaemonSet state.
    fn fresh_pod(&self, ns: &str, name: &str) -> Result<Result<Value, Relay>, UpstreamError> {
        let (code, body) = match self.get(&format!("/api/v1/namespaces/{ns}/pods/{name}")) {
            Ok(r) => r,
            Err(_) => return Ok(Err(disconnected())),
        };
        if code != 200 {
            let msg = serde_json::from_slice::<Value>(&body)
                .map(|v| watch::status_message(&v))
                .unwrap_or_else(|_| excerpt(&body));
            return Ok(Err(text(500, format!("Get pod failed, {msg}"))));
        }
        let mut pod: Value =
            serde_json::from_slice(&body).map_err(|e| UpstreamError::InvalidJson(e.to_string()))?;
        if self.settings.detect == Detect::Revision {
            if let Ok((_, e)) = watch::entry(pod.clone()) {
                let s = self.lock();
                match self.decision(&s, &e) {
                    Some((needs, hash)) => watch::set_condition(&mut pod, needs, &hash),
                    None => {
                        // Not handled: no condition may be trusted.
                        if let Some(c) = pod["status"]["conditions"].as_array_mut() {
                            c.retain(|c| c["type"] != crate::pod::NEED_UPGRADE);
                        }
                    }
                }
            }
        }
        Ok(Ok(pod))
    }
}

/// The hash of the ControllerRevision owned by `uid` with the highest `.revision`.
pub fn newest_owned(list: &Value, uid: &str) -> Option<String> {
    list["items"]
        .as_array()?
        .iter()
        .filter(|cr| {
            cr["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|o| o.iter().any(|o| o["uid"] == uid))
        })
        .max_by_key(|cr| cr["revision"].as_i64().unwrap_or(0))
        .and_then(|cr| {
            let m = &cr["metadata"];
            m["labels"]["controller-revision-hash"]
                .as_str()
                .map(str::to_owned)
                .or_else(|| {
                    m["name"]
                        .as_str()
                        .and_then(|n| n.rsplit('-').next())
                        .map(str::to_owned)
                })
        })
}

fn text(status: u16, body: impl Into<String>) -> Relay {
    Relay {
        status,
        content_type: Some("text/plain; charset=utf-8".into()),
        body: body.into().into_bytes(),
    }
}

fn disconnected() -> Relay {
    text(
        503,
        "OTA upgrade is not allowed when node is disconnected to cloud",
    )
}

/// YurtHub's checks on a fresh pod, in its order; Err is the answer to give.
pub fn precheck(pod: &Value, ns: &str, name: &str, node: &str) -> Result<String, Relay> {
    let status_err = |e: String| {
        Err(text(
            403,
            format!(
                "Pre check update pod failed, Failed to check pod {ns}/{name} status, error: {e}"
            ),
        ))
    };
    if !pod["metadata"]["deletionTimestamp"].is_null() {
        return status_err(format!("Pod {ns}/{name} is deleting, can not be updated"));
    }
    if pod["spec"]["nodeName"].as_str() != Some(node) {
        return status_err(format!("Pod: {ns}/{name} is not on node {node}"));
    }
    let conditions = pod["status"]["conditions"].as_array();
    let cond = |kind: &str| conditions.and_then(|c| c.iter().find(|c| c["type"] == kind));
    if cond(crate::pod::NEED_UPGRADE).is_none_or(|c| c["status"] != "True") {
        return status_err(format!(
            "Pod: {ns}/{name} update status is False, can not be updated"
        ));
    }
    if let Some(img) = cond(crate::pod::IMAGE_READY) {
        let want = cond(crate::pod::NEED_UPGRADE)
            .and_then(|c| c["message"].as_str())
            .unwrap_or_default();
        let have = img["message"].as_str().unwrap_or_default();
        if img["status"] != "True" || have != want {
            return Err(text(
                403,
                format!(
                    "Pre check update pod failed, Failed to check pod {ns}/{name} image ready, error: Pod: {ns}/{name} image is not ready, reason: {}, message: {have}",
                    img["reason"].as_str().unwrap_or_default()
                ),
            ));
        }
    }
    let Some(owner) = pod["metadata"]["ownerReferences"]
        .as_array()
        .and_then(|o| o.first())
    else {
        return Err(text(400, "Pod has no owner references"));
    };
    let kind = owner["kind"].as_str().unwrap_or_default();
    if kind == "Node" {
        // YurtHub upgrades static pods through OpenYurt's YurtStaticSet, whose ConfigMap a
        // cluster without OpenYurt does not have: YurtHub's answer for that case.
        return Err(text(403, "Configmap for static pod does not exist"));
    }
    if kind != "DaemonSet" {
        return Err(text(
            400,
            format!("Not support ota upgrade pod type {kind}"),
        ));
    }
    Ok(pod["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

impl Upstream for Apiserver {
    /// detect = revision only: with detect = openyurt, OpenYurt's controller carries the
    /// strategies out (and no DaemonSet is read).
    fn daemonsets(&self) -> Vec<crate::fleet::DaemonSetInfo> {
        let s = self.inner.lock();
        s.daemonsets
            .values()
            .filter(|t| t.watching)
            .filter_map(|t| t.info.clone())
            .collect()
    }

    fn leases(&self) -> crate::fleet::run::Io<'_> {
        Some((&self.leases, self.inner.node()))
    }

    fn list_pods(&self) -> Result<Vec<u8>, UpstreamError> {
        self.inner.rendered()
    }

    fn upgrade(&self, ns: &str, name: &str) -> Result<Relay, UpstreamError> {
        let i = &self.inner;
        let pod = match i.fresh_pod(ns, name)? {
            Ok(p) => p,
            Err(answer) => return Ok(answer),
        };
        let uid = match precheck(&pod, ns, name, i.node()) {
            Ok(uid) => uid,
            Err(answer) => return Ok(answer),
        };
        self.delete(ns, name, &uid)
    }

    fn imagepull(&self, ns: &str, name: &str) -> Result<Relay, UpstreamError> {
        let i = &self.inner;
        if i.settings.detect == Detect::Revision {
            // No OpenYurt pre-pull controller: answer as a YurtHub before v1.7.
            return Ok(text(404, "404 page not found\n"));
        }
        let pod = match i.fresh_pod(ns, name)? {
            Ok(p) => p,
            Err(answer) => return Ok(answer),
        };
        let cond = pod["status"]["conditions"].as_array().and_then(|c| {
            c.iter()
                .find(|c| c["type"] == crate::pod::NEED_UPGRADE)
                .cloned()
        });
        let deleting = !pod["metadata"]["deletionTimestamp"].is_null();
        let Some(cond) = cond.filter(|c| c["status"] == "True" && !deleting) else {
            return Ok(text(403, format!("Failed to check pod status {ns}/{name}, error: Pod: {ns}/{name} update status is False, can not be updated")));
        };
        let message = cond["message"].as_str().unwrap_or_default();
        let patch = serde_json::json!({"status":{"conditions":[{
            "type": crate::pod::IMAGE_READY, "status": "False", "reason": "",
            "message": message,
            "lastTransitionTime": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        }]}});
        let path = format!("/api/v1/namespaces/{ns}/pods/{name}/status?fieldManager=yurt-ota");
        let resp = match i.request(
            &i.calls,
            "PATCH",
            &path,
            Some((
                "application/strategic-merge-patch+json",
                patch.to_string().into_bytes(),
            )),
        ) {
            Ok(r) => r,
            Err(_) => return Ok(disconnected()),
        };
        let (code, body) = Inner::read_all(resp)?;
        if code != 200 {
            log::warn!(
                "apiserver pods/status patch of {ns}/{name} answered {code}: {}",
                excerpt(&body)
            );
            return Ok(text(500, "Patch pod status for imagepull failed"));
        }
        Ok(Relay {
            status: 200,
            content_type: Some("application/json".into()),
            body: format!("Image pre-pull requested for pod {ns}/{name}").into_bytes(),
        })
    }

    fn kind(&self) -> &'static str {
        "apiserver"
    }

    fn url(&self) -> &str {
        &self.inner.url
    }

    fn watch_state(&self) -> Option<Value> {
        let w = self.watch_state();
        let t = |t: Option<SystemTime>| t.map(crate::sim::rfc3339);
        let daemonsets: Vec<Value> = self
            .daemonsets()
            .into_iter()
            .map(|((ns, name), d)| {
                serde_json::json!({
                    "daemonset": format!("{ns}/{name}"),
                    "handled": d.skip.is_none() && d.view.is_some(),
                    "why_not": d.skip,
                    "revision": d.view.and_then(|v| v.newest_hash),
                })
            })
            .collect();
        Some(serde_json::json!({
            "node": self.inner.settings.node_name,
            "detect": match self.inner.settings.detect { Detect::Openyurt => "openyurt", Detect::Revision => "revision" },
            "connected": w.connected_since.is_some(),
            "connected_since": t(w.connected_since),
            "last_event": t(w.last_event),
            "relists": w.relists,
            "reconnects": w.reconnects,
            "requests": w.requests,
            "last_error": w.last_error,
            "daemonsets": daemonsets,
        }))
    }
}

fn map_error(e: ureq::Error) -> UpstreamError {
    // A certificate the CA does not vouch for, a refused client certificate: no connection.
    super::from_ureq(e, UpstreamError::Connect)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LIST: &str = include_str!("../../../tests/fixtures/kind-v1.36-kube-system-podlist.json");

    /// kube-proxy's pod from the recorded list, with `PodNeedUpgrade` as given.
    fn kube_proxy(need: Option<&str>) -> (Value, String, String) {
        let list: Value = serde_json::from_str(LIST).unwrap();
        let mut pod = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| {
                p["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .starts_with("kube-proxy")
            })
            .unwrap()
            .clone();
        if let Some(status) = need {
            watch::set_condition(&mut pod, status == "True", "abc");
        }
        let name = pod["metadata"]["name"].as_str().unwrap().to_owned();
        let node = pod["spec"]["nodeName"].as_str().unwrap().to_owned();
        (pod, name, node)
    }

    fn answer(r: Result<String, Relay>) -> (u16, String) {
        match r {
            Ok(uid) => (200, uid),
            Err(r) => (r.status, String::from_utf8(r.body).unwrap()),
        }
    }

    #[test]
    fn precheck_answers_as_yurthub_in_its_order() {
        let (pod, name, node) = kube_proxy(Some("True"));
        let uid = pod["metadata"]["uid"].as_str().unwrap().to_owned();
        assert_eq!(
            answer(precheck(&pod, "kube-system", &name, &node)),
            (200, uid)
        );

        let (mut deleting, ..) = kube_proxy(Some("True"));
        deleting["metadata"]["deletionTimestamp"] = json!("2026-06-15T05:00:00Z");
        // Deleting comes before every other check, even on another node.
        let (code, body) = answer(precheck(&deleting, "kube-system", &name, "other-node"));
        assert_eq!(code, 403);
        assert_eq!(body, format!("Pre check update pod failed, Failed to check pod kube-system/{name} status, error: Pod kube-system/{name} is deleting, can not be updated"));

        let (code, body) = answer(precheck(&pod, "kube-system", &name, "other-node"));
        assert_eq!(code, 403);
        assert!(body.ends_with("is not on node other-node"), "{body}");

        for need in [None, Some("False")] {
            let (p, ..) = kube_proxy(need);
            let (code, body) = answer(precheck(&p, "kube-system", &name, &node));
            assert_eq!(code, 403);
            assert!(
                body.ends_with("update status is False, can not be updated"),
                "{body}"
            );
        }

        let (mut pulling, ..) = kube_proxy(Some("True"));
        pulling["status"]["conditions"].as_array_mut().unwrap().push(json!({
            "type": "PodImageReady", "status": "False", "reason": "", "message": "controllerrevision: abc"}));
        let (code, body) = answer(precheck(&pulling, "kube-system", &name, &node));
        assert_eq!(code, 403);
        assert_eq!(body, format!("Pre check update pod failed, Failed to check pod kube-system/{name} image ready, error: Pod: kube-system/{name} image is not ready, reason: , message: controllerrevision: abc"));
        // Pulled for the target revision: allowed.
        pulling["status"]["conditions"]
            .as_array_mut()
            .unwrap()
            .last_mut()
            .unwrap()["status"] = json!("True");
        assert_eq!(
            answer(precheck(&pulling, "kube-system", &name, &node)).0,
            200
        );

        let (mut orphan, ..) = kube_proxy(Some("True"));
        orphan["metadata"]["ownerReferences"] = json!([]);
        assert_eq!(
            answer(precheck(&orphan, "kube-system", &name, &node)),
            (400, "Pod has no owner references".into())
        );
        orphan["metadata"]["ownerReferences"] = json!([{"kind": "Node", "name": "n", "uid": "u"}]);
        assert_eq!(
            answer(precheck(&orphan, "kube-system", &name, &node)),
            (403, "Configmap for static pod does not exist".into())
        );
        orphan["metadata"]["ownerReferences"] =
            json!([{"kind": "ReplicaSet", "name": "x", "uid": "u"}]);
        assert_eq!(
            answer(precheck(&orphan, "kube-system", &name, &node)),
            (400, "Not support ota upgrade pod type ReplicaSet".into())
        );
    }

    #[test]
    fn newest_owned_revision_is_the_highest_revision_of_the_owner() {
        let cr = |name: &str, rev: i64, owner: &str| {
            json!({"metadata": {"name": name, "labels": {"controller-revision-hash": name.rsplit('-').next().unwrap()},
                   "ownerReferences": [{"kind": "DaemonSet", "uid": owner}]}, "revision": rev})
        };
        let list = json!({"kind": "ControllerRevisionList", "items": [
            cr("cam-5b6c", 1, "ds-1"), cr("cam-7d9f", 2, "ds-1"), cr("cam-aaaa", 9, "other"),
        ]});
        assert_eq!(newest_owned(&list, "ds-1").as_deref(), Some("7d9f"));
        // `rollout undo`: the old revision is re-numbered as the newest.
        let undone = json!({"items": [cr("cam-5b6c", 3, "ds-1"), cr("cam-7d9f", 2, "ds-1")]});
        assert_eq!(newest_owned(&undone, "ds-1").as_deref(), Some("5b6c"));
        assert_eq!(newest_owned(&json!({"items": []}), "ds-1"), None);
    }

    #[test]
    fn explicit_settings_and_describe_hide_secrets() {
        let t = Settings::explicit(
            "https://10.0.0.1:6443/",
            "/etc/yurt-ota/ca.crt".into(),
            Some("/etc/yurt-ota/token".into()),
            None,
        )
        .unwrap();
        assert_eq!(t.server, "https://10.0.0.1:6443");
        let s = Settings {
            target: Target {
                auth: Auth::Token("s3cr3t".into()),
                ..t
            },
            node_name: "edge-1".into(),
            detect: Detect::Revision,
            timeout: Duration::from_secs(5),
        };
        let d = format!("{:?}", s.describe());
        assert!(
            d.contains("https://10.0.0.1:6443")
                && d.contains("file /etc/yurt-ota/ca.crt")
                && d.contains("bearer token")
        );
        assert!(!d.contains("s3cr3t"));
        assert!(
            Settings::explicit("http://10.0.0.1", "/ca".into(), None, None)
                .unwrap_err()
                .contains("upstream.server")
        );
    }
}
