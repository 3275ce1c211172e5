//! Where pods come from and where upgrades go: YurtHub's OTA API, or the in-process simulator.
//!
//! Non-2xx answers to upgrade and imagepull are data (`Relay`), passed to the device app
//! verbatim; only transport failures are errors. There are no retries on the request path.

use std::fmt;

pub use crate::excerpt::excerpt;

pub mod apiserver;
pub mod http;
pub mod sim;
#[cfg(test)]
pub mod testing;
pub mod yurthub;

/// Upstream bodies above this are refused (a YurtHub pod list for 110 pods is about 1 MiB).
pub const MAX_BODY: u64 = 32 * 1024 * 1024;
/// Upgrade and imagepull answers are relayed up to this (YurtHub's are one line); the rest is
/// cut, the status kept.
pub const MAX_RELAY_BODY: u64 = 64 * 1024;

/// An upstream answer to relay: status, content type and body as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relay {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamError {
    /// Could not connect (refused, no route, DNS).
    Connect(String),
    Timeout(String),
    /// `GET /pods` answered something other than 200.
    Status {
        code: u16,
        body: String,
    },
    TooLarge,
    /// The list arrived but is not a valid PodList.
    InvalidJson(String),
    /// The connection broke mid-way, or the answer was not HTTP.
    Io(String),
}

impl UpstreamError {
    /// A stable word for metrics labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Connect(_) => "connect",
            UpstreamError::Timeout(_) => "timeout",
            UpstreamError::Status { .. } => "status",
            UpstreamError::TooLarge => "too_large",
            UpstreamError::InvalidJson(_) => "invalid_json",
            UpstreamError::Io(_) => "io",
        }
    }

    pub const KINDS: [&'static str; 6] = [
        "connect",
        "timeout",
        "status",
        "too_large",
        "invalid_json",
        "io",
    ];
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamError::Connect(e) => write!(f, "cannot connect: {e}"),
            UpstreamError::Timeout(e) => write!(f, "timed out: {e}"),
            UpstreamError::Status { code, body } => write!(f, "answered {code}: {body}"),
            UpstreamError::TooLarge => write!(f, "answer larger than {} MiB", MAX_BODY >> 20),
            UpstreamError::InvalidJson(e) => write!(f, "{e}"),
            UpstreamError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// A pod as read again after an upgrade call that may or may not have been carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodNow {
    /// Gone, being deleted, or another pod under its name: the upgrade is under way.
    Replaced,
    /// Still there, same uid, not being deleted: the call did not happen.
    Unchanged,
}

/// A failed upgrade, told to the cluster (SPEC 6: a Kubernetes Event `UpgradeFailed`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure<'a> {
    pub namespace: &'a str,
    /// The pod upgraded, and its uid.
    pub pod: &'a str,
    pub uid: &'a str,
    pub revision: Option<&'a str>,
    pub reason: &'a str,
}

pub trait Upstream: Send + Sync {
    /// The body of a 200 answer to `GET /pods`.
    fn list_pods(&self) -> Result<Vec<u8>, UpstreamError>;
    fn upgrade(&self, namespace: &str, pod: &str) -> Result<Relay, UpstreamError>;
    fn imagepull(&self, namespace: &str, pod: &str) -> Result<Relay, UpstreamError>;
    /// `yurthub`, `sim`: for status and metrics.
    fn kind(&self) -> &'static str;
    /// Where it is, for status and error messages.
    fn url(&self) -> &str;
    /// The DaemonSets owning this node's pods, with their strategy and budget annotations
    /// (SPEC 6b). Empty by default: with YurtHub, OpenYurt's cloud controller carries the
    /// strategies out, and every pod follows `policy.mode`.
    fn daemonsets(&self) -> Vec<crate::fleet::DaemonSetInfo> {
        Vec::new()
    }
    /// The fleet's Lease slots and this node's name (`holderIdentity`), where the upstream
    /// can reach them; `None` by default. A DaemonSet with a budget and no Leases upgrades
    /// nothing (fail closed).
    fn leases(&self) -> crate::fleet::run::Io<'_> {
        None
    }
    /// Reads pod `ns/name` (uid `uid`) again, fresh, after an upgrade call that may have
    /// been carried out. By default from `list_pods` (YurtHub answers it from the hub).
    fn pod_now(&self, ns: &str, name: &str, uid: &str) -> Result<PodNow, UpstreamError> {
        let body = self.list_pods()?;
        let snap = crate::snapshot::Snapshot::build(&body)
            .map_err(|e| UpstreamError::InvalidJson(e.to_string()))?;
        let same = snap.pods.iter().any(|p| {
            p.metadata.namespace == ns
                && p.metadata.name == name
                && p.metadata.uid == uid
                && !p.is_deleting()
        });
        Ok(if same {
            PodNow::Unchanged
        } else {
            PodNow::Replaced
        })
    }
    /// Tells the cluster that an upgrade failed, where there is one to tell (apiserver mode:
    /// an Event); `Ok` by default.
    fn report_failure(&self, _failure: &Failure) -> Result<(), String> {
        Ok(())
    }
    /// Upstream-specific state for readiness and `/v1/status` (the apiserver's watch); None
    /// for upstreams that are polled.
    fn watch_state(&self) -> Option<serde_json::Value> {
        None
    }
}

/// A client failure as an `UpstreamError`; `other` names what neither timeouts, size, connection
/// nor I/O covers (answers that are not HTTP as ureq reads it), which the two HTTP upstreams
/// read differently. Only a failure before the request left ([`http::NotSent`], a TLS refusal)
/// is `Connect`: everything else may follow a request the server acted on.
pub(crate) fn from_http(e: ureq::Error, other: fn(String) -> UpstreamError) -> UpstreamError {
    use ureq::Error;
    // Which timer fired is noise; the same outage must read the same each poll.
    let timeout = || UpstreamError::Timeout("no complete answer within upstream.timeout".into());
    match e {
        Error::Timeout(_) => timeout(),
        Error::BodyExceedsLimit(_) => UpstreamError::TooLarge,
        Error::HostNotFound => UpstreamError::Connect("host not found".into()),
        Error::ConnectionFailed => UpstreamError::Connect("no connection".into()),
        Error::LargeResponseHeader(_, max) => other(format!("answer head over {} KiB", max >> 10)),
        Error::Other(b) => match b.downcast::<http::NotSent>() {
            Ok(n) => UpstreamError::Connect(n.0),
            Err(b) => other(b.to_string()),
        },
        Error::Io(io) => match io.kind() {
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => timeout(),
            // A client certificate refused (TLS 1.3 says so after the handshake): the server
            // read no request.
            _ => match http::tls_error(&io) {
                Some(m) => UpstreamError::Connect(m),
                None => UpstreamError::Io(format!("connection broke: {io}")),
            },
        },
        e => other(e.to_string()),
    }
}
