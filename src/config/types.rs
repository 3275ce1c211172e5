//! The small value types of the file, each parsed by `FromStr` and written back by `Display`:
//! durations (`HumanDuration`, with a range per key), listen addresses (`Listen`), pod patterns
//! (`Pattern`); windows are `schedule::Window`. Also URLs, paths and the token file. Shared
//! by `validate` and `print`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use super::{Listen, Mode, OnClosed, UpstreamKind};

/// The API token from `api.token_file`: its content, trimmed, which must not be empty.
pub fn read_token(path: &Path) -> Result<String, String> {
    token_from_file(path).map_err(|e| format!("api.token_file {e}"))
}

pub(super) fn token_from_file(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read it: {e}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("{}: the file is empty", path.display()));
    }
    Ok(token.to_owned())
}

/// The accepted range of each duration key (docs/configuration.md lists them): short enough
/// to catch a typo such as "99999999999999999h", long enough for any real use.
pub(super) fn duration_range(key: &str) -> (Duration, Duration) {
    const MIN: Duration = Duration::from_millis(10);
    const MINUTE: u64 = 60;
    const HOUR: u64 = 3600;
    let gate = key.starts_with("gate[");
    let name = key.rsplit('.').next().unwrap_or(key);
    let max = match (gate, name) {
        (false, "poll_interval") => HOUR,
        (false, "timeout") => 10 * MINUTE,
        (false, "connection_timeout") => HOUR,
        (false, "stable_for") => 24 * HOUR,
        (false, "ready_timeout") => 24 * HOUR,
        (false, "max_defer") => 365 * 24 * HOUR,
        (false, "gate_check_interval") => MINUTE,
        (false, "gate_reread") => HOUR,
        (true, "max_age") => 7 * 24 * HOUR,
        (true, "interval") => HOUR,
        (true, "timeout") => 10 * MINUTE,
        // [sim] delays.
        _ => HOUR,
    };
    (MIN, Duration::from_secs(max))
}

pub(super) fn absolute_path(s: &str) -> Result<PathBuf, String> {
    if Path::new(s).is_absolute() {
        Ok(PathBuf::from(s))
    } else {
        Err(format!("{s:?} must be an absolute path"))
    }
}

pub(super) fn parse_kind(s: &str) -> Result<UpstreamKind, String> {
    match s {
        "yurthub" => Ok(UpstreamKind::Yurthub),
        "sim" => Ok(UpstreamKind::Sim),
        "apiserver" => Ok(UpstreamKind::Apiserver),
        other => Err(format!(
            "unknown kind {other:?}; expected \"yurthub\", \"apiserver\" or \"sim\""
        )),
    }
}

pub(super) fn parse_mode(s: &str) -> Result<Mode, String> {
    match s {
        "manual" => Ok(Mode::Manual),
        "auto" => Ok(Mode::Auto),
        other => Err(format!(
            "unknown mode {other:?}; expected \"manual\" or \"auto\""
        )),
    }
}

pub(super) fn parse_on_closed(s: &str) -> Result<OnClosed, String> {
    match s {
        "reject" => Ok(OnClosed::Reject),
        "queue" => Ok(OnClosed::Queue),
        other => Err(format!(
            "unknown value {other:?}; expected \"reject\" or \"queue\""
        )),
    }
}

pub(super) fn parse_url(s: &str) -> Result<String, String> {
    let rest = if let Some(rest) = s.strip_prefix("http://") {
        rest
    } else if s.starts_with("https://") {
        return Err(format!(
            "{s:?}: https is not supported by this version; YurtHub serves plain HTTP on loopback"
        ));
    } else {
        return Err(format!("{s:?} is not an http:// URL"));
    };
    check_authority(s, rest)?;
    Ok(s.trim_end_matches('/').to_owned())
}

/// The `host[:port]` after the scheme of URL `s`; a port must be in 1..=65535.
/// Ours: these are the file's rules. `http::Uri` (built for ureq) splits a URL but accepts
/// what they refuse, a userinfo (`user@host`) and port 0 (http 1.5, `uri/authority.rs`).
pub(super) fn check_authority(s: &str, rest: &str) -> Result<(), String> {
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() || authority.contains(['?', '#', '@', ' ']) {
        return Err(format!("{s:?} has no valid host[:port]"));
    }
    // The port, if any, after the host (an IPv6 host is bracketed and holds colons itself).
    let port = match authority.rsplit_once(':') {
        Some((host, _)) if !host.ends_with(']') && host.contains(':') => None,
        Some((_, port)) => Some(port),
        None => None,
    };
    if let Some(port) = port {
        match port.parse::<u16>() {
            Ok(p) if p > 0 => {}
            _ => {
                return Err(format!(
                    "{s:?}: the port {port:?} is not a number in 1..=65535"
                ))
            }
        }
    }
    Ok(())
}

/// `IP:port` or `unix:/absolute/path`; `Listen`'s `Display` is the inverse.
impl FromStr for Listen {
    type Err = String;

    fn from_str(s: &str) -> Result<Listen, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if !Path::new(path).is_absolute() {
                return Err(format!(
                    "{s:?}: the socket path must be absolute (unix:/run/yurt-ota/api.sock)"
                ));
            }
            return Ok(Listen::Unix(PathBuf::from(path)));
        }
        s.parse::<SocketAddr>()
            .map(Listen::Tcp)
            .map_err(|_| format!("{s:?} is not an IP:port (such as 127.0.0.1:10290) or unix:/path"))
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Tcp(addr) => write!(f, "{addr}"),
            Listen::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// A `namespace/name-prefix*` pattern of `policy.include`/`exclude`: each side exact, or a
/// prefix when it ends in `*`. `Display` gives the text back.
/// A prefix compare, not a glob: a glob crate (`globset`, `wildmatch`) would read `?`, `[..]`
/// and a `*` inside a name, which this pattern does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    namespace: String,
    name: String,
}

impl Pattern {
    pub fn matches(&self, namespace: &str, name: &str) -> bool {
        let side = |pat: &str, s: &str| match pat.strip_suffix('*') {
            Some(prefix) => s.starts_with(prefix),
            None => pat == s,
        };
        side(&self.namespace, namespace) && side(&self.name, name)
    }
}

impl FromStr for Pattern {
    type Err = String;

    fn from_str(p: &str) -> Result<Pattern, String> {
        let Some((ns, name)) = p.split_once('/') else {
            return Err(format!("{p:?} must look like \"namespace/name-prefix*\""));
        };
        let star_ok = |s: &str| !s.is_empty() && !s.trim_end_matches('*').contains('*');
        if !star_ok(ns) || !star_ok(name) {
            return Err(format!(
                "{p:?}: each side must be non-empty and may only end in '*'"
            ));
        }
        Ok(Pattern {
            namespace: ns.to_owned(),
            name: name.to_owned(),
        })
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A duration as the file writes it: `"250ms"`, `"30s"`, `"5m"`, `"1h"`, `"7d"` and sums such
/// as `"1m30s"`. `Display` is the inverse, in the largest unit that is exact.
///
/// Ours for a need the libraries do not meet: jiff's friendly format (already a dependency)
/// refuses days when parsing a `SignedDuration` ("parsing calendar units (days in this case) in
/// this context is not supported", jiff 1.0 docs), and `"7d"` is a common `policy.max_defer`;
/// parsed as a `Span` it passes, but jiff (and `humantime`) also read other forms (spaces, unit
/// words; in jiff fractions and signs), which would widen what a file may say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<HumanDuration, String> {
        let bad = || {
            format!(
                "{s:?} is not a duration; use a number and a unit: \"250ms\", \"30s\", \"5m\", \"1h\", \"7d\""
            )
        };
        let mut total = Duration::ZERO;
        let mut rest = s.trim();
        if rest.is_empty() {
            return Err(bad());
        }
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            if digits == 0 {
                return Err(bad());
            }
            let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let part = match &rest[..unit_len] {
                "ms" => Duration::from_millis(n),
                "s" => Duration::from_secs(n),
                "m" => Duration::from_secs(n.saturating_mul(60)),
                "h" => Duration::from_secs(n.saturating_mul(3600)),
                "d" => Duration::from_secs(n.saturating_mul(86_400)),
                _ => return Err(bad()),
            };
            total = total.saturating_add(part);
            rest = &rest[unit_len..];
        }
        Ok(HumanDuration(total))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms % 1000 != 0 {
            write!(f, "{ms}ms")
        } else if ms % 3_600_000 == 0 {
            write!(f, "{}h", ms / 3_600_000)
        } else if ms % 60_000 == 0 {
            write!(f, "{}m", ms / 60_000)
        } else {
            write!(f, "{}s", ms / 1000)
        }
    }
}
