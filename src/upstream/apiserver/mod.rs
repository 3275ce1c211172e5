//! The kube-apiserver as upstream (SPEC 2b): the node's pods from a list and a watch, kept in
//! memory; upgrades with YurtHub's checks, order and answers; detect = "revision" computed here.
//!
//! The rest of the agent sees only `Upstream`: `list_pods()` renders the same `v1.PodList` as
//! YurtHub's `GET /pods` from memory (also while the apiserver is unreachable), and `upgrade` /
//! `imagepull` answer YurtHub's v1.7 status codes and plain-text bodies.

//!
//! Here: the settings, the shared state and `Upstream`. `client`: the HTTPS requests. `pods`:
//! list and watch of the node's pods. `daemonsets`: detect = revision. `upgrade`: YurtHub's
//! checks and answers.

mod client;
mod daemonsets;
pub mod kubeconfig;
mod pods;
pub mod revision;
pub mod tls;
mod upgrade;
pub mod watch;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use self::client::{Calls, Https};
use self::kubeconfig::{Auth, Source, Target};
use self::revision::DaemonSetView;
use self::tls::{Credential, Tls};
use self::watch::Store;
use super::{Relay, Upstream, UpstreamError};
use serde_json::Value;

pub use self::daemonsets::newest_owned;
pub use self::upgrade::precheck;

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
    /// Since when the node's pods have been over `watch::MAX_KEPT`, and the bytes they would
    /// take: the last good pods are served meanwhile, and `GET /pods` polls read `too_large`.
    pub over_limit: Option<(SystemTime, usize)>,
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
    /// The last failure of the pod list or watch, as it failed (for `GET /pods` before the
    /// first list: a 401 is not "cannot connect").
    failure: Option<UpstreamError>,
    daemonsets: HashMap<(String, String), Tracked>,
}

struct Inner {
    settings: Settings,
    url: String,
    /// Calls: one idle connection kept (a TLS handshake is costly on a device).
    calls: Https,
    /// Watches: a connection each.
    streams: Https,
    credential: Credential,
    shared: Mutex<Shared>,
}

pub struct Apiserver {
    inner: Arc<Inner>,
    /// The fleet budget's Lease slots, over the same HTTPS client (SPEC 6b).
    leases: crate::fleet::kube::LeaseApi<Calls>,
}

/// What `start` refuses before any request (no CA; a CA, certificate or key that cannot be
/// read or does not fit): `check-config` refuses the same.
pub fn check(settings: &Settings) -> Result<(), String> {
    tls_of(settings).map(|_| ())
}

fn tls_of(settings: &Settings) -> Result<Tls, String> {
    let ca = settings.target.ca.as_ref().ok_or_else(|| {
        "no CA for the apiserver: set certificate-authority(-data) in the kubeconfig, or upstream.ca_file (no public roots are trusted)".to_string()
    })?;
    let client = match &settings.target.auth {
        Auth::ClientCert { cert, key } => Some((cert, key)),
        _ => None,
    };
    Tls::new(ca, client)
}

/// Percent-encoding for a query value (a label selector, a resourceVersion).
pub fn query(s: &str) -> String {
    client::q(s)
}

/// Watches last this long before the server ends them (the kubelet draws 5 to 10 minutes).
const WATCH_SECONDS: u64 = 300;

impl Apiserver {
    /// Checks the TLS material and starts the watch thread.
    pub fn start(settings: Settings) -> Result<Apiserver, String> {
        let tls = tls_of(&settings)?;
        let credential = Credential::new(&settings.target.auth);
        let inner = Arc::new(Inner {
            url: settings.target.server.clone(),
            calls: Https {
                agent: crate::upstream::http::agent(
                    Some(tls.connector(&settings.target.server)?),
                    crate::upstream::http::Timeouts {
                        connect: settings.timeout,
                        call: settings.timeout,
                        per_read: None,
                        // A TLS handshake is costly on a device.
                        keep_idle: true,
                    },
                ),
                server: settings.target.server.clone(),
            },
            // A watch ends when the server ends it; one silent past that and a margin is dead.
            streams: Https {
                agent: crate::upstream::http::agent(
                    Some(tls.connector(&settings.target.server)?),
                    crate::upstream::http::Timeouts {
                        connect: settings.timeout,
                        call: Duration::from_secs(WATCH_SECONDS + 30),
                        per_read: Some(Duration::from_secs(WATCH_SECONDS + 30)),
                        // A connection each: a watch holds its own while it lasts.
                        keep_idle: false,
                    },
                ),
                server: settings.target.server.clone(),
            },
            credential,
            settings,
            shared: Mutex::new(Shared {
                store: Store::default(),
                listed: false,
                watch: WatchState::default(),
                failure: None,
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
        self.upgrade_pod(ns, name)
    }

    fn imagepull(&self, ns: &str, name: &str) -> Result<Relay, UpstreamError> {
        self.imagepull_pod(ns, name)
    }

    fn pod_now(
        &self,
        ns: &str,
        name: &str,
        uid: &str,
    ) -> Result<crate::upstream::PodNow, UpstreamError> {
        self.read_again(ns, name, uid)
    }

    fn report_failure(&self, failure: &crate::upstream::Failure) -> Result<(), String> {
        self.event(failure)
    }

    fn kind(&self) -> &'static str {
        "apiserver"
    }

    fn url(&self) -> &str {
        &self.inner.url
    }

    fn watch_state(&self) -> Option<Value> {
        let w = self.watch_state();
        let t = |t: Option<SystemTime>| t.map(crate::state::rfc3339);
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
            // Over 32 MiB of pods (issue 23): the last good pods are served meanwhile.
            "pods_over_limit": w.over_limit.map(|(since, bytes)| serde_json::json!({
                "since": crate::state::rfc3339(since),
                "bytes": bytes,
                "max_bytes": watch::MAX_KEPT,
            })),
            "daemonsets": daemonsets,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
