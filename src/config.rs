//! Configuration: the TOML file (SPEC section 4) read once at startup into typed `Settings`.
//!
//! The file is parsed into a generic table and walked section by section, so that every
//! problem is collected (not just the first) and each one names the file and the key.
//! Nothing downstream re-parses strings.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::{Table, Value};

pub const DEFAULT_PATH: &str = "/etc/yurt-ota/config.toml";
pub const DEFAULT_API: &str = "127.0.0.1:10290";

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub upstream: UpstreamSettings,
    pub api: ApiSettings,
    pub policy: PolicySettings,
    pub state: StateSettings,
    pub sim: SimSettings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamKind {
    Yurthub,
    Sim,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamSettings {
    pub kind: UpstreamKind,
    /// Base URL without a trailing slash, e.g. `http://127.0.0.1:10267`.
    pub url: String,
    pub poll_interval: Duration,
    /// Bounds each whole upstream call: connect, request and response body.
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Tcp(addr) => write!(f, "{addr}"),
            Listen::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApiSettings {
    pub listen: Listen,
    pub token_file: Option<PathBuf>,
    /// Connections served at once, each by its own thread; one more is answered 503.
    pub max_connections: usize,
    /// A connection idle, or stalled mid-request or mid-response, this long is closed.
    pub connection_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Manual,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnClosed {
    Reject,
    Queue,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PolicySettings {
    pub mode: Mode,
    pub on_closed: OnClosed,
    pub stable_for: Duration,
    pub max_concurrent: u32,
    pub ready_timeout: Duration,
    pub gate_check_interval: Duration,
    pub prepull: bool,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StateSettings {
    pub dir: PathBuf,
}

/// The simulator's pace (SPEC section 8); only read when the simulator runs.
#[derive(Debug, Clone, PartialEq)]
pub struct SimSettings {
    pub node_name: String,
    /// From an accepted upgrade until the replacement pod exists.
    pub recreate_delay: Duration,
    /// From the replacement pod's creation until it is Ready.
    pub ready_delay: Duration,
    /// From an imagepull request until `PodImageReady=True`.
    pub pull_delay: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            upstream: UpstreamSettings {
                kind: UpstreamKind::Yurthub,
                url: "http://127.0.0.1:10267".into(),
                poll_interval: Duration::from_secs(5),
                timeout: Duration::from_secs(5),
            },
            api: ApiSettings {
                listen: Listen::Tcp(DEFAULT_API.parse().expect("valid default")),
                token_file: None,
                max_connections: 32,
                connection_timeout: Duration::from_secs(30),
            },
            policy: PolicySettings {
                mode: Mode::Manual,
                on_closed: OnClosed::Reject,
                stable_for: Duration::from_secs(30),
                max_concurrent: 1,
                ready_timeout: Duration::from_secs(300),
                gate_check_interval: Duration::from_millis(250),
                prepull: true,
                include: Vec::new(),
                exclude: Vec::new(),
            },
            state: StateSettings {
                dir: PathBuf::from("/var/lib/yurt-ota"),
            },
            sim: SimSettings {
                node_name: "sim-node-1".into(),
                recreate_delay: Duration::from_secs(3),
                ready_delay: Duration::from_secs(4),
                pull_delay: Duration::from_secs(2),
            },
        }
    }
}

/// One problem in a config file, naming the file and the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}: `{}`: {}",
                self.file.display(),
                self.key,
                self.message
            )
        }
    }
}

/// Every problem found in one file.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Settings {
    /// Reads `path`. A missing file means all defaults only when `must_exist` is false (the
    /// default path); a path the operator named must exist.
    pub fn load(path: &Path, must_exist: bool) -> Result<Settings, ConfigErrors> {
        match std::fs::read_to_string(path) {
            Ok(text) => Settings::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => {
                Ok(Settings::default())
            }
            Err(e) => Err(ConfigErrors(vec![ConfigError {
                file: path.to_owned(),
                key: String::new(),
                message: format!("cannot read the file: {e}"),
            }])),
        }
    }

    /// Parses the text of a config file; `file` only names it in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Settings, ConfigErrors> {
        let mut r = Reader {
            file,
            errors: Vec::new(),
        };
        let root: Table = match text.parse() {
            Ok(t) => t,
            Err(e) => {
                // toml's message carries the line and column and names the offending key.
                r.error("", format!("invalid TOML: {}", e.to_string().trim_end()));
                return Err(ConfigErrors(r.errors));
            }
        };
        let mut s = Settings::default();
        for key in root.keys() {
            match key.as_str() {
                "upstream" | "api" | "policy" | "state" | "sim" => {}
                // Gates arrive with the gates issue; a gate the agent would silently ignore is
                // a safety signal that would not be honoured, so refuse it loudly.
                "gate" => r.error(
                    "gate",
                    "gates are not supported by this version of yurt-ota; remove the [[gate]] \
                     tables or install a version with gate support"
                        .into(),
                ),
                _ => r.error(key, "unknown section".into()),
            }
        }

        let t = r.section(
            &root,
            "upstream",
            &["kind", "url", "poll_interval", "timeout"],
        );
        if let Some(v) = r.parse(t, "upstream", "kind", parse_kind) {
            s.upstream.kind = v;
        }
        if let Some(v) = r.parse(t, "upstream", "url", parse_url) {
            s.upstream.url = v;
        }
        if let Some(v) = r.duration(t, "upstream", "poll_interval") {
            s.upstream.poll_interval = v;
        }
        if let Some(v) = r.duration(t, "upstream", "timeout") {
            s.upstream.timeout = v;
        }

        let t = r.section(
            &root,
            "api",
            &[
                "listen",
                "token_file",
                "max_connections",
                "connection_timeout",
            ],
        );
        if let Some(v) = r.parse(t, "api", "listen", parse_listen) {
            s.api.listen = v;
        }
        if let Some(v) = r.string(t, "api", "token_file") {
            s.api.token_file = (!v.is_empty()).then(|| PathBuf::from(v));
        }
        if let Some(v) = r.integer(t, "api", "max_connections", 1, 1024) {
            s.api.max_connections = v as usize;
        }
        if let Some(v) = r.duration(t, "api", "connection_timeout") {
            s.api.connection_timeout = v;
        }
        if let Listen::Tcp(addr) = s.api.listen {
            if !addr.ip().is_loopback() && s.api.token_file.is_none() {
                r.error(
                    "api.listen",
                    format!(
                        "{addr} is not a loopback address; set api.token_file so that only \
                         callers with the token can upgrade pods"
                    ),
                );
            }
        }

        let t = r.section(
            &root,
            "policy",
            &[
                "mode",
                "on_closed",
                "stable_for",
                "max_concurrent",
                "ready_timeout",
                "gate_check_interval",
                "prepull",
                "include",
                "exclude",
            ],
        );
        if let Some(v) = r.parse(t, "policy", "mode", parse_mode) {
            s.policy.mode = v;
        }
        if let Some(v) = r.parse(t, "policy", "on_closed", parse_on_closed) {
            s.policy.on_closed = v;
        }
        if let Some(v) = r.duration(t, "policy", "stable_for") {
            s.policy.stable_for = v;
        }
        if let Some(v) = r.integer(t, "policy", "max_concurrent", 1, 1000) {
            s.policy.max_concurrent = v as u32;
        }
        if let Some(v) = r.duration(t, "policy", "ready_timeout") {
            s.policy.ready_timeout = v;
        }
        if let Some(v) = r.duration(t, "policy", "gate_check_interval") {
            s.policy.gate_check_interval = v;
        }
        if let Some(v) = r.boolean(t, "policy", "prepull") {
            s.policy.prepull = v;
        }
        if let Some(v) = r.patterns(t, "policy", "include") {
            s.policy.include = v;
        }
        if let Some(v) = r.patterns(t, "policy", "exclude") {
            s.policy.exclude = v;
        }

        let t = r.section(&root, "state", &["dir"]);
        if let Some(v) = r.string(t, "state", "dir") {
            if Path::new(v).is_absolute() {
                s.state.dir = PathBuf::from(v);
            } else {
                r.error("state.dir", format!("{v:?} must be an absolute path"));
            }
        }

        let t = r.section(
            &root,
            "sim",
            &["node_name", "recreate_delay", "ready_delay", "pull_delay"],
        );
        if let Some(v) = r.parse(t, "sim", "node_name", |v| {
            crate::names::check_subdomain(v).map(|_| v.to_owned())
        }) {
            s.sim.node_name = v;
        }
        if let Some(v) = r.duration(t, "sim", "recreate_delay") {
            s.sim.recreate_delay = v;
        }
        if let Some(v) = r.duration(t, "sim", "ready_delay") {
            s.sim.ready_delay = v;
        }
        if let Some(v) = r.duration(t, "sim", "pull_delay") {
            s.sim.pull_delay = v;
        }

        if r.errors.is_empty() {
            Ok(s)
        } else {
            Err(ConfigErrors(r.errors))
        }
    }

    /// The effective settings as a TOML document, for `check-config`.
    pub fn to_toml(&self) -> String {
        let d = |d: Duration| format!("\"{}\"", format_duration(d));
        let list = |v: &[String]| {
            let items: Vec<String> = v.iter().map(|s| format!("{s:?}")).collect();
            format!("[{}]", items.join(", "))
        };
        let u = &self.upstream;
        let a = &self.api;
        let p = &self.policy;
        let sim = &self.sim;
        format!(
            "[upstream]\nkind = \"{}\"\nurl = {:?}\npoll_interval = {}\ntimeout = {}\n\n\
             [api]\nlisten = \"{}\"\ntoken_file = {:?}\nmax_connections = {}\nconnection_timeout = {}\n\n\
             [policy]\nmode = \"manual\"\non_closed = \"{}\"\nstable_for = {}\n\
             max_concurrent = {}\nready_timeout = {}\ngate_check_interval = {}\nprepull = {}\n\
             include = {}\nexclude = {}\n\n\
             [state]\ndir = {:?}\n\n\
             [sim]\nnode_name = {:?}\nrecreate_delay = {}\nready_delay = {}\npull_delay = {}\n",
            match u.kind {
                UpstreamKind::Yurthub => "yurthub",
                UpstreamKind::Sim => "sim",
            },
            u.url,
            d(u.poll_interval),
            d(u.timeout),
            a.listen,
            a.token_file
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            a.max_connections,
            d(a.connection_timeout),
            match p.on_closed {
                OnClosed::Reject => "reject",
                OnClosed::Queue => "queue",
            },
            d(p.stable_for),
            p.max_concurrent,
            d(p.ready_timeout),
            d(p.gate_check_interval),
            p.prepull,
            list(&p.include),
            list(&p.exclude),
            self.state.dir.display().to_string(),
            sim.node_name,
            d(sim.recreate_delay),
            d(sim.ready_delay),
            d(sim.pull_delay),
        )
    }
}

/// Walks the table, collecting errors instead of stopping at the first.
struct Reader<'f> {
    file: &'f Path,
    errors: Vec<ConfigError>,
}

impl Reader<'_> {
    fn error(&mut self, key: &str, message: String) {
        self.errors.push(ConfigError {
            file: self.file.to_owned(),
            key: key.to_owned(),
            message,
        });
    }

    /// The section `[name]` if present, after reporting keys that are not in `known`.
    fn section<'t>(&mut self, root: &'t Table, name: &str, known: &[&str]) -> Option<&'t Table> {
        match root.get(name)? {
            Value::Table(t) => {
                for key in t.keys() {
                    if !known.contains(&key.as_str()) {
                        self.error(
                            &format!("{name}.{key}"),
                            format!("unknown key; [{name}] takes {}", known.join(", ")),
                        );
                    }
                }
                Some(t)
            }
            other => {
                self.error(
                    name,
                    format!("expected a table [{name}], found {}", other.type_str()),
                );
                None
            }
        }
    }

    fn string<'t>(&mut self, t: Option<&'t Table>, sec: &str, key: &str) -> Option<&'t str> {
        match t?.get(key)? {
            Value::String(s) => Some(s),
            other => {
                let found = other.type_str();
                self.error(
                    &format!("{sec}.{key}"),
                    format!("expected a string, found {found}"),
                );
                None
            }
        }
    }

    fn parse<T>(
        &mut self,
        t: Option<&Table>,
        sec: &str,
        key: &str,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let raw = self.string(t, sec, key)?;
        match f(raw) {
            Ok(v) => Some(v),
            Err(msg) => {
                self.error(&format!("{sec}.{key}"), msg);
                None
            }
        }
    }

    fn duration(&mut self, t: Option<&Table>, sec: &str, key: &str) -> Option<Duration> {
        self.parse(t, sec, key, |s| match parse_duration(s) {
            Ok(d) if d.is_zero() => Err(format!("{s:?} must be longer than zero")),
            other => other,
        })
    }

    fn integer(
        &mut self,
        t: Option<&Table>,
        sec: &str,
        key: &str,
        min: i64,
        max: i64,
    ) -> Option<i64> {
        let name = format!("{sec}.{key}");
        match t?.get(key)? {
            Value::Integer(i) if (min..=max).contains(i) => Some(*i),
            Value::Integer(i) => {
                self.error(&name, format!("{i} is out of range {min}..={max}"));
                None
            }
            other => {
                let found = other.type_str();
                self.error(&name, format!("expected an integer, found {found}"));
                None
            }
        }
    }

    fn boolean(&mut self, t: Option<&Table>, sec: &str, key: &str) -> Option<bool> {
        match t?.get(key)? {
            Value::Boolean(b) => Some(*b),
            other => {
                let found = other.type_str();
                self.error(
                    &format!("{sec}.{key}"),
                    format!("expected true or false, found {found}"),
                );
                None
            }
        }
    }

    /// A list of `namespace/name-prefix*` patterns.
    fn patterns(&mut self, t: Option<&Table>, sec: &str, key: &str) -> Option<Vec<String>> {
        let name = format!("{sec}.{key}");
        let Value::Array(items) = t?.get(key)? else {
            self.error(&name, "expected a list of strings".into());
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item.as_str().map(check_pattern) {
                Some(Ok(())) => out.push(item.as_str().unwrap_or_default().to_owned()),
                Some(Err(msg)) => self.error(&format!("{name}[{i}]"), msg),
                None => self.error(&format!("{name}[{i}]"), "expected a string".into()),
            }
        }
        Some(out)
    }
}

fn parse_kind(s: &str) -> Result<UpstreamKind, String> {
    match s {
        "yurthub" => Ok(UpstreamKind::Yurthub),
        "sim" => Ok(UpstreamKind::Sim),
        "apiserver" => {
            Err("\"apiserver\" is not supported by this version; use \"yurthub\" or \"sim\"".into())
        }
        other => Err(format!(
            "unknown kind {other:?}; expected \"yurthub\" or \"sim\""
        )),
    }
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    match s {
        "manual" => Ok(Mode::Manual),
        // Refused rather than accepted and ignored: an operator who asks for automatic
        // upgrades must not get an agent that silently never upgrades.
        "auto" => {
            Err("\"auto\" is not supported by this version (it needs gates); use \"manual\"".into())
        }
        other => Err(format!("unknown mode {other:?}; expected \"manual\"")),
    }
}

fn parse_on_closed(s: &str) -> Result<OnClosed, String> {
    match s {
        "reject" => Ok(OnClosed::Reject),
        "queue" => Ok(OnClosed::Queue),
        other => Err(format!(
            "unknown value {other:?}; expected \"reject\" or \"queue\""
        )),
    }
}

fn parse_url(s: &str) -> Result<String, String> {
    let rest = if let Some(rest) = s.strip_prefix("http://") {
        rest
    } else if s.starts_with("https://") {
        return Err(format!(
            "{s:?}: https is not supported by this version; YurtHub serves plain HTTP on loopback"
        ));
    } else {
        return Err(format!("{s:?} is not an http:// URL"));
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() || authority.contains(['?', '#', '@', ' ']) {
        return Err(format!("{s:?} has no valid host[:port]"));
    }
    Ok(s.trim_end_matches('/').to_owned())
}

fn parse_listen(s: &str) -> Result<Listen, String> {
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

fn check_pattern(p: &str) -> Result<(), String> {
    let Some((ns, name)) = p.split_once('/') else {
        return Err(format!("{p:?} must look like \"namespace/name-prefix*\""));
    };
    let star_ok = |s: &str| !s.is_empty() && !s.trim_end_matches('*').contains('*');
    if !star_ok(ns) || !star_ok(name) {
        return Err(format!(
            "{p:?}: each side must be non-empty and may only end in '*'"
        ));
    }
    Ok(())
}

/// Parses `"250ms"`, `"30s"`, `"5m"`, `"1h"` and sums such as `"1m30s"`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "{s:?} is not a duration; use a number and a unit: \"250ms\", \"30s\", \"5m\", \"1h\""
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
            _ => return Err(bad()),
        };
        total = total.saturating_add(part);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// The inverse of `parse_duration`, in the largest unit that is exact.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 != 0 {
        format!("{ms}ms")
    } else if ms % 3_600_000 == 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms % 60_000 == 0 {
        format!("{}m", ms / 60_000)
    } else {
        format!("{}s", ms / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Settings, Vec<String>> {
        Settings::parse(text, Path::new("/etc/yurt-ota/config.toml"))
            .map_err(|e| e.0.iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(parse("").unwrap(), Settings::default());
    }

    #[test]
    fn full_file_is_read() {
        let s = parse(
            r#"
            [upstream]
            kind = "sim"
            url = "http://127.0.0.1:10999/"
            poll_interval = "1m30s"
            timeout = "250ms"
            [api]
            listen = "unix:/run/yurt-ota/api.sock"
            token_file = "/etc/yurt-ota/token"
            max_connections = 2
            [policy]
            on_closed = "queue"
            stable_for = "10s"
            max_concurrent = 2
            include = ["edge-apps/*"]
            exclude = ["kube-system/kube-proxy*"]
            prepull = false
            [state]
            dir = "/tmp/state"
            [sim]
            ready_delay = "100ms"
            "#,
        )
        .unwrap();
        assert_eq!(s.upstream.kind, UpstreamKind::Sim);
        assert_eq!(s.upstream.url, "http://127.0.0.1:10999");
        assert_eq!(s.upstream.poll_interval, Duration::from_secs(90));
        assert_eq!(s.upstream.timeout, Duration::from_millis(250));
        assert_eq!(s.api.listen, Listen::Unix("/run/yurt-ota/api.sock".into()));
        assert_eq!(
            s.api.token_file.as_deref(),
            Some(Path::new("/etc/yurt-ota/token"))
        );
        assert_eq!(s.api.max_connections, 2);
        assert_eq!(s.policy.on_closed, OnClosed::Queue);
        assert_eq!(s.policy.max_concurrent, 2);
        assert_eq!(s.policy.include, vec!["edge-apps/*"]);
        assert!(!s.policy.prepull);
        assert_eq!(s.state.dir, PathBuf::from("/tmp/state"));
        assert_eq!(s.sim.ready_delay, Duration::from_millis(100));
    }

    #[test]
    fn every_error_names_file_and_key() {
        let errs = parse(
            r#"
            colour = "blue"
            [upstream]
            kind = "kubelet"
            poll_interval = "5 parsecs"
            timeout = 5
            bogus = 1
            [api]
            listen = "localhost"
            max_connections = 0
            [policy]
            mode = "auto"
            stable_for = "0s"
            include = ["no-slash"]
            [state]
            dir = "relative/dir"
            "#,
        )
        .unwrap_err();
        let want = [
            "`colour`: unknown section",
            "`upstream.bogus`: unknown key",
            "`upstream.kind`: unknown kind \"kubelet\"",
            "`upstream.poll_interval`: \"5 parsecs\" is not a duration",
            "`upstream.timeout`: expected a string, found integer",
            "`api.listen`: \"localhost\" is not an IP:port",
            "`api.max_connections`: 0 is out of range",
            "`policy.mode`: \"auto\" is not supported",
            "`policy.stable_for`: \"0s\" must be longer than zero",
            "`policy.include[0]`: \"no-slash\" must look like",
            "`state.dir`: \"relative/dir\" must be an absolute path",
        ];
        for w in want {
            assert!(
                errs.iter()
                    .any(|e| e.contains(w) && e.starts_with("/etc/yurt-ota/config.toml: ")),
                "missing {w:?} in {errs:#?}"
            );
        }
        assert_eq!(errs.len(), want.len(), "{errs:#?}");
    }

    #[test]
    fn non_loopback_listen_needs_a_token() {
        let errs = parse("[api]\nlisten = \"0.0.0.0:10290\"\n").unwrap_err();
        assert!(
            errs[0].contains("`api.listen`: 0.0.0.0:10290 is not a loopback"),
            "{errs:?}"
        );
        parse("[api]\nlisten = \"0.0.0.0:10290\"\ntoken_file = \"/etc/t\"\n").unwrap();
        parse("[api]\nlisten = \"[::1]:10290\"\n").unwrap();
    }

    #[test]
    fn gates_are_refused_until_supported() {
        let errs = parse("[[gate]]\nname = \"x\"\nkind = \"file\"\n").unwrap_err();
        assert!(
            errs[0].contains("`gate`: gates are not supported"),
            "{errs:?}"
        );
    }

    #[test]
    fn invalid_toml_says_where() {
        let errs = parse("[upstream\nkind = 1").unwrap_err();
        assert!(
            errs[0].starts_with("/etc/yurt-ota/config.toml: invalid TOML:"),
            "{errs:?}"
        );
        assert!(errs[0].contains("line 1"), "{errs:?}");
    }

    #[test]
    fn urls() {
        assert!(parse_url("https://x")
            .unwrap_err()
            .contains("https is not supported"));
        assert!(parse_url("ftp://x").is_err());
        assert!(parse_url("http://").is_err());
        assert_eq!(
            parse_url("http://127.0.0.1:10267/").unwrap(),
            "http://127.0.0.1:10267"
        );
    }

    #[test]
    fn durations_round_trip() {
        for (text, d) in [
            ("250ms", Duration::from_millis(250)),
            ("30s", Duration::from_secs(30)),
            ("5m", Duration::from_secs(300)),
            ("2h", Duration::from_secs(7200)),
            ("1m30s", Duration::from_secs(90)),
        ] {
            assert_eq!(parse_duration(text).unwrap(), d, "{text}");
        }
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        for bad in ["", "5", "s", "5x", "-1s", "1.5s", "5 s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn effective_settings_parse_back_to_themselves() {
        let s = Settings::default();
        let text = s.to_toml();
        assert_eq!(parse(&text).unwrap(), s, "{text}");
    }
}
