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
    /// `[[gate]]` tables, in file order.
    pub gates: Vec<GateSettings>,
}

/// One `[[gate]]`: a local signal that must read open before an upgrade (SPEC section 5).
#[derive(Debug, Clone, PartialEq)]
pub struct GateSettings {
    pub name: String,
    /// Never skipped, not even by `?force=true`.
    pub safety: bool,
    /// Checked before upgrades (the default).
    pub upgrade: bool,
    /// Checked before image pre-pulls.
    pub pull: bool,
    pub kind: GateKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum GateKind {
    File {
        path: PathBuf,
        open_when: FileOpen,
        /// A signal file whose mtime is older than this reads closed.
        max_age: Option<Duration>,
    },
    Gpio {
        chip: PathBuf,
        line: GpioLine,
        open_high: bool,
    },
    GpioSysfs {
        /// `/sys/class/gpio` normally; a test points it at a fake tree.
        root: PathBuf,
        line: u32,
        open_high: bool,
    },
    Command {
        argv: Vec<String>,
        interval: Duration,
        timeout: Duration,
    },
    Window {
        windows: Vec<crate::gate::window::Window>,
        /// `None`: the system's local time zone.
        timezone: Option<String>,
    },
}

impl GateKind {
    pub fn word(&self) -> &'static str {
        match self {
            GateKind::File { .. } => "file",
            GateKind::Gpio { .. } => "gpio",
            GateKind::GpioSysfs { .. } => "gpio-sysfs",
            GateKind::Command { .. } => "command",
            GateKind::Window { .. } => "window",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileOpen {
    Exists,
    Absent,
    /// The file's content, trimmed, equals this.
    Equals(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpioLine {
    Offset(u32),
    Name(String),
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
    /// Only API calls (and the queue they fill) upgrade.
    Manual,
    /// The agent upgrades outdated pods by itself when the gates allow (SPEC section 6).
    Auto,
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
            gates: Vec::new(),
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
            Ok(text) => {
                let s = Settings::parse(&text, path)?;
                // The token file as `run` reads it, so that check-config refuses what run would.
                if let Some(token) = &s.api.token_file {
                    if let Err(message) = token_from_file(token) {
                        return Err(ConfigErrors(vec![ConfigError {
                            file: path.to_owned(),
                            key: "api.token_file".into(),
                            message,
                        }]));
                    }
                }
                Ok(s)
            }
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
                "upstream" | "api" | "policy" | "state" | "sim" | "gate" => {}
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

        s.gates = r.gates(&root);

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
             [policy]\nmode = \"{}\"\non_closed = \"{}\"\nstable_for = {}\n\
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
            match p.mode {
                Mode::Manual => "manual",
                Mode::Auto => "auto",
            },
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
        ) + &self.gates.iter().map(gate_toml).collect::<String>()
    }
}

fn gate_toml(g: &GateSettings) -> String {
    let d = |d: Duration| format!("\"{}\"", format_duration(d));
    let list = |v: &mut dyn Iterator<Item = String>| {
        format!(
            "[{}]",
            v.map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ")
        )
    };
    let applies = [("upgrade", g.upgrade), ("pull", g.pull)]
        .iter()
        .filter(|(_, on)| *on)
        .map(|(w, _)| w.to_string())
        .collect::<Vec<_>>();
    let mut out = format!(
        "\n[[gate]]\nname = {:?}\nkind = \"{}\"\nsafety = {}\napplies_to = {}\n",
        g.name,
        g.kind.word(),
        g.safety,
        list(&mut applies.into_iter())
    );
    let level = |high: bool| if high { "high" } else { "low" };
    match &g.kind {
        GateKind::File {
            path,
            open_when,
            max_age,
        } => {
            out += &format!("path = {:?}\n", path.display().to_string());
            out += &match open_when {
                FileOpen::Exists => "open_when = \"exists\"\n".to_owned(),
                FileOpen::Absent => "open_when = \"absent\"\n".to_owned(),
                FileOpen::Equals(v) => format!("open_when = \"equals\"\nvalue = {v:?}\n"),
            };
            if let Some(m) = max_age {
                out += &format!("max_age = {}\n", d(*m));
            }
        }
        GateKind::Gpio {
            chip,
            line,
            open_high,
        } => {
            out += &format!("chip = {:?}\n", chip.display().to_string());
            out += &match line {
                GpioLine::Offset(n) => format!("line = {n}\n"),
                GpioLine::Name(n) => format!("line = {n:?}\n"),
            };
            out += &format!("open_when = \"{}\"\n", level(*open_high));
        }
        GateKind::GpioSysfs {
            root,
            line,
            open_high,
        } => {
            out += &format!(
                "line = {line}\nopen_when = \"{}\"\nsysfs_root = {:?}\n",
                level(*open_high),
                root.display().to_string()
            );
        }
        GateKind::Command {
            argv,
            interval,
            timeout,
        } => {
            out += &format!(
                "argv = {}\ninterval = {}\ntimeout = {}\n",
                list(&mut argv.iter().cloned()),
                d(*interval),
                d(*timeout)
            );
        }
        GateKind::Window { windows, timezone } => {
            out += &format!(
                "windows = {}\ntimezone = {:?}\n",
                list(&mut windows.iter().map(|w| w.to_string())),
                timezone.as_deref().unwrap_or("local")
            );
        }
    }
    out
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

    /// A duration within the key's range (`duration_range`), so that no absurd value reaches
    /// the clock arithmetic of the loops.
    fn duration(&mut self, t: Option<&Table>, sec: &str, key: &str) -> Option<Duration> {
        let (min, max) = duration_range(sec, key);
        self.parse(t, sec, key, |s| match parse_duration(s) {
            Ok(d) if d.is_zero() => Err(format!("{s:?} must be longer than zero")),
            Ok(d) if d < min || d > max => Err(format!(
                "{s:?} is out of range {}..={}",
                format_duration(min),
                format_duration(max)
            )),
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
        let items = self.strings(t, sec, key)?;
        let mut out = Vec::with_capacity(items.len());
        for (i, p) in items.into_iter().enumerate() {
            match check_pattern(&p) {
                Ok(()) => out.push(p),
                Err(msg) => self.error(&format!("{sec}.{key}[{i}]"), msg),
            }
        }
        Some(out)
    }
}

impl Reader<'_> {
    /// The `[[gate]]` array of tables.
    fn gates(&mut self, root: &Table) -> Vec<GateSettings> {
        let Some(v) = root.get("gate") else {
            return Vec::new();
        };
        let Value::Array(items) = v else {
            self.error("gate", "expected [[gate]] tables".into());
            return Vec::new();
        };
        let mut out: Vec<GateSettings> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let Value::Table(t) = item else {
                self.error(&format!("gate[{i}]"), "expected a table".into());
                continue;
            };
            if let Some(g) = self.gate(t, i) {
                if out.iter().any(|o| o.name == g.name) {
                    let key = format!("gate[{i}].name");
                    self.error(&key, format!("{:?} is the name of an earlier gate", g.name));
                    continue;
                }
                out.push(g);
            }
        }
        out
    }

    fn gate(&mut self, t: &Table, i: usize) -> Option<GateSettings> {
        let sec = format!("gate[{i}]");
        let t = Some(t);
        let errors_before = self.errors.len();
        let name = self.parse(t, &sec, "name", |v| {
            crate::names::check_plain(v).map(|_| v.to_owned())
        });
        if name.is_none() && t.and_then(|t| t.get("name")).is_none() {
            self.error(
                &format!("{sec}.name"),
                "required: every gate needs a name".into(),
            );
        }
        let kind = self.string(t, &sec, "kind");
        if kind.is_none() && t.and_then(|t| t.get("kind")).is_none() {
            self.error(
                &format!("{sec}.kind"),
                "required: file, gpio, gpio-sysfs, command or window".into(),
            );
        }
        let common = ["name", "kind", "safety", "applies_to"];
        let specific: &[&str] = match kind.unwrap_or_default() {
            "file" => &["path", "open_when", "value", "max_age"],
            "gpio" => &["chip", "line", "open_when"],
            "gpio-sysfs" => &["line", "open_when", "sysfs_root"],
            "command" => &["argv", "interval", "timeout"],
            "window" => &["windows", "timezone"],
            "" => &[],
            other => {
                self.error(
                    &format!("{sec}.kind"),
                    format!(
                        "unknown kind {other:?}; expected file, gpio, gpio-sysfs, command or window"
                    ),
                );
                &[]
            }
        };
        if let Some(t) = t {
            for key in t.keys() {
                if !common.contains(&key.as_str()) && !specific.contains(&key.as_str()) {
                    let takes = common.iter().chain(specific).copied().collect::<Vec<_>>();
                    self.error(
                        &format!("{sec}.{key}"),
                        format!(
                            "unknown key for a {:?} gate; it takes {}",
                            kind.unwrap_or("?"),
                            takes.join(", ")
                        ),
                    );
                }
            }
        }
        let safety = self.boolean(t, &sec, "safety").unwrap_or(false);
        let (mut upgrade, mut pull) = (true, false);
        if let Some(list) = self.strings(t, &sec, "applies_to") {
            (upgrade, pull) = (false, false);
            for (j, a) in list.iter().enumerate() {
                match a.as_str() {
                    "upgrade" => upgrade = true,
                    "pull" => pull = true,
                    other => self.error(
                        &format!("{sec}.applies_to[{j}]"),
                        format!("{other:?}: expected \"upgrade\" or \"pull\""),
                    ),
                }
            }
            if list.is_empty() {
                self.error(
                    &format!("{sec}.applies_to"),
                    "must name \"upgrade\", \"pull\" or both".into(),
                );
            }
        }
        let required = |r: &mut Self, key: &str| {
            if t.and_then(|t| t.get(key)).is_none() {
                r.error(
                    &format!("{sec}.{key}"),
                    "required for this kind of gate".into(),
                );
            }
        };
        let kind = match kind? {
            "file" => {
                required(self, "path");
                let path = self.parse(t, &sec, "path", absolute_path);
                let open_when = self.string(t, &sec, "open_when").unwrap_or("exists");
                let value = self.string(t, &sec, "value");
                let open_when = match (open_when, value) {
                    ("exists", None) => Some(FileOpen::Exists),
                    ("absent", None) => Some(FileOpen::Absent),
                    ("equals", Some(v)) => Some(FileOpen::Equals(v.trim().to_owned())),
                    ("equals", None) => {
                        required(self, "value");
                        None
                    }
                    ("exists" | "absent", Some(_)) => {
                        self.error(
                            &format!("{sec}.value"),
                            "only used with open_when = \"equals\"".into(),
                        );
                        None
                    }
                    (other, _) => {
                        self.error(
                            &format!("{sec}.open_when"),
                            format!("{other:?}: expected \"exists\", \"absent\" or \"equals\""),
                        );
                        None
                    }
                };
                let max_age = self.duration(t, &sec, "max_age");
                GateKind::File {
                    path: path?,
                    open_when: open_when?,
                    max_age,
                }
            }
            "gpio" => {
                required(self, "chip");
                required(self, "line");
                let chip = self.parse(t, &sec, "chip", absolute_path);
                let line = match t.and_then(|t| t.get("line")) {
                    Some(Value::Integer(n)) if (0..=u32::MAX as i64).contains(n) => {
                        Some(GpioLine::Offset(*n as u32))
                    }
                    Some(Value::String(s)) if !s.is_empty() => Some(GpioLine::Name(s.clone())),
                    Some(_) => {
                        self.error(
                            &format!("{sec}.line"),
                            "expected a line offset (17) or a line name (\"PARK_BRAKE\")".into(),
                        );
                        None
                    }
                    None => None,
                };
                let open_high = self.level(t, &sec);
                GateKind::Gpio {
                    chip: chip?,
                    line: line?,
                    open_high: open_high?,
                }
            }
            "gpio-sysfs" => {
                required(self, "line");
                let line = self.integer(t, &sec, "line", 0, 65535);
                let root = match t.and_then(|t| t.get("sysfs_root")) {
                    Some(_) => self.parse(t, &sec, "sysfs_root", absolute_path),
                    None => Some(PathBuf::from("/sys/class/gpio")),
                };
                let open_high = self.level(t, &sec);
                GateKind::GpioSysfs {
                    root: root?,
                    line: line? as u32,
                    open_high: open_high?,
                }
            }
            "command" => {
                required(self, "argv");
                let argv = self.strings(t, &sec, "argv");
                if let Some(argv) = &argv {
                    match argv.first() {
                        None => self.error(
                            &format!("{sec}.argv"),
                            "must name a program: [\"/usr/lib/yurt-ota/idle-check\"]".into(),
                        ),
                        Some(p) if !Path::new(p).is_absolute() => self.error(
                            &format!("{sec}.argv[0]"),
                            format!("{p:?} must be an absolute path (no shell, no PATH search)"),
                        ),
                        _ => {}
                    }
                }
                let interval = self.duration(t, &sec, "interval");
                let timeout = self.duration(t, &sec, "timeout");
                GateKind::Command {
                    argv: argv?,
                    interval: interval.unwrap_or(Duration::from_secs(10)),
                    timeout: timeout.unwrap_or(Duration::from_secs(2)),
                }
            }
            "window" => {
                required(self, "windows");
                let mut windows = Vec::new();
                let texts = self.strings(t, &sec, "windows");
                for (j, w) in texts.iter().flatten().enumerate() {
                    match crate::gate::window::Window::parse(w) {
                        Ok(w) => windows.push(w),
                        Err(e) => self.error(&format!("{sec}.windows[{j}]"), e),
                    }
                }
                if texts.is_some_and(|t| t.is_empty()) {
                    self.error(
                        &format!("{sec}.windows"),
                        "must hold at least one window".into(),
                    );
                }
                let timezone = match self.string(t, &sec, "timezone") {
                    None | Some("local") => None,
                    Some(name) => match crate::gate::window::zone(Some(name)) {
                        Ok(_) => Some(name.to_owned()),
                        Err(e) => {
                            self.error(&format!("{sec}.timezone"), e);
                            None
                        }
                    },
                };
                GateKind::Window { windows, timezone }
            }
            _ => return None,
        };
        if self.errors.len() != errors_before {
            return None;
        }
        Some(GateSettings {
            name: name?,
            safety,
            upgrade,
            pull,
            kind,
        })
    }

    /// `open_when = "high" | "low"` for GPIO gates; high by default.
    fn level(&mut self, t: Option<&Table>, sec: &str) -> Option<bool> {
        match self.string(t, sec, "open_when") {
            None | Some("high") => Some(true),
            Some("low") => Some(false),
            Some(other) => {
                self.error(
                    &format!("{sec}.open_when"),
                    format!("{other:?}: expected \"high\" or \"low\""),
                );
                None
            }
        }
    }

    fn strings(&mut self, t: Option<&Table>, sec: &str, key: &str) -> Option<Vec<String>> {
        let name = format!("{sec}.{key}");
        let Value::Array(items) = t?.get(key)? else {
            self.error(&name, "expected a list of strings".into());
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item.as_str() {
                Some(s) => out.push(s.to_owned()),
                None => self.error(&format!("{name}[{i}]"), "expected a string".into()),
            }
        }
        Some(out)
    }
}

/// The API token from `api.token_file`: its content, trimmed, which must not be empty.
pub fn read_token(path: &Path) -> Result<String, String> {
    token_from_file(path).map_err(|e| format!("api.token_file {e}"))
}

fn token_from_file(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read it: {e}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("{}: the file is empty", path.display()));
    }
    Ok(token.to_owned())
}

/// The accepted range of each duration key (README "Configuration" lists them): short enough
/// to catch a typo such as "99999999999999999h", long enough for any real use.
fn duration_range(sec: &str, key: &str) -> (Duration, Duration) {
    const MIN: Duration = Duration::from_millis(10);
    const MINUTE: u64 = 60;
    const HOUR: u64 = 3600;
    let max = match (sec.starts_with("gate["), key) {
        (false, "poll_interval") => HOUR,
        (false, "timeout") => 10 * MINUTE,
        (false, "connection_timeout") => HOUR,
        (false, "stable_for") => 24 * HOUR,
        (false, "ready_timeout") => 24 * HOUR,
        (false, "gate_check_interval") => MINUTE,
        (true, "max_age") => 7 * 24 * HOUR,
        (true, "interval") => HOUR,
        (true, "timeout") => 10 * MINUTE,
        // [sim] delays.
        _ => HOUR,
    };
    (MIN, Duration::from_secs(max))
}

fn absolute_path(s: &str) -> Result<PathBuf, String> {
    if Path::new(s).is_absolute() {
        Ok(PathBuf::from(s))
    } else {
        Err(format!("{s:?} must be an absolute path"))
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
        "auto" => Ok(Mode::Auto),
        other => Err(format!(
            "unknown mode {other:?}; expected \"manual\" or \"auto\""
        )),
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
            mode = "sometimes"
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
            "`policy.mode`: unknown mode \"sometimes\"",
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
    fn a_url_port_out_of_range_is_refused() {
        for url in [
            "http://127.0.0.1:99999",
            "http://127.0.0.1:0",
            "http://127.0.0.1:",
            "http://[::1]:65536",
            "http://host:http",
        ] {
            let errs = parse(&format!("[upstream]\nurl = {url:?}\n")).unwrap_err();
            assert!(
                errs.len() == 1
                    && errs[0].contains("`upstream.url`")
                    && errs[0].contains("1..=65535"),
                "{url}: {errs:?}"
            );
        }
        for url in [
            "http://127.0.0.1:65535",
            "http://[::1]:80",
            "http://[::1]",
            "http://hub",
        ] {
            assert_eq!(
                parse(&format!("[upstream]\nurl = {url:?}\n"))
                    .unwrap()
                    .upstream
                    .url,
                url
            );
        }
    }

    #[test]
    fn an_absurd_duration_is_a_config_error_not_a_panic() {
        let errs = parse(
            "[upstream]\npoll_interval = \"99999999999999999h\"\n\
             [policy]\ngate_check_interval = \"5ms\"\nstable_for = \"25h\"\n\
             [[gate]]\nname = \"g\"\nkind = \"command\"\nargv = [\"/bin/true\"]\ntimeout = \"11m\"\n",
        )
        .unwrap_err();
        let want = [
            "`upstream.poll_interval`: \"99999999999999999h\" is out of range 10ms..=1h",
            "`policy.gate_check_interval`: \"5ms\" is out of range 10ms..=1m",
            "`policy.stable_for`: \"25h\" is out of range 10ms..=24h",
            "`gate[0].timeout`: \"11m\" is out of range 10ms..=10m",
        ];
        assert_eq!(errs.len(), want.len(), "{errs:#?}");
        for w in want {
            assert!(
                errs.iter().any(|e| e.contains(w)),
                "missing {w:?} in {errs:#?}"
            );
        }
        // The ends of each range are accepted.
        let s = parse("[upstream]\npoll_interval = \"1h\"\ntimeout = \"10ms\"\n").unwrap();
        assert_eq!(s.upstream.poll_interval, Duration::from_secs(3600));
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
    fn gates_of_every_kind_are_read() {
        let s = parse(
            r#"
            [policy]
            mode = "auto"
            [[gate]]
            name = "vehicle-stopped"
            kind = "file"
            path = "/run/vehicle/stopped"
            open_when = "equals"
            value = "1"
            max_age = "10s"
            safety = true
            applies_to = ["upgrade", "pull"]
            [[gate]]
            name = "park-brake"
            kind = "gpio"
            chip = "/dev/gpiochip0"
            line = "PARK_BRAKE"
            open_when = "low"
            [[gate]]
            name = "old-bsp"
            kind = "gpio-sysfs"
            line = 17
            [[gate]]
            name = "night"
            kind = "window"
            windows = ["Mon-Fri 01:00-05:00", "Sat-Sun 00:00-24:00"]
            timezone = "Europe/Berlin"
            [[gate]]
            name = "idle-check"
            kind = "command"
            argv = ["/usr/lib/yurt-ota/idle-check", "--quiet"]
            "#,
        )
        .unwrap();
        assert_eq!(s.policy.mode, Mode::Auto);
        assert_eq!(s.gates.len(), 5);
        let g = &s.gates[0];
        assert!(g.safety && g.upgrade && g.pull);
        assert_eq!(
            g.kind,
            GateKind::File {
                path: "/run/vehicle/stopped".into(),
                open_when: FileOpen::Equals("1".into()),
                max_age: Some(Duration::from_secs(10)),
            }
        );
        assert_eq!(
            s.gates[1].kind,
            GateKind::Gpio {
                chip: "/dev/gpiochip0".into(),
                line: GpioLine::Name("PARK_BRAKE".into()),
                open_high: false
            }
        );
        assert!(!s.gates[1].safety && s.gates[1].upgrade && !s.gates[1].pull);
        assert_eq!(
            s.gates[2].kind,
            GateKind::GpioSysfs {
                root: "/sys/class/gpio".into(),
                line: 17,
                open_high: true
            }
        );
        assert_eq!(
            s.gates[4].kind,
            GateKind::Command {
                argv: vec!["/usr/lib/yurt-ota/idle-check".into(), "--quiet".into()],
                interval: Duration::from_secs(10),
                timeout: Duration::from_secs(2),
            }
        );
        // check-config's output reads back to the same settings.
        assert_eq!(parse(&s.to_toml()).unwrap(), s, "{}", s.to_toml());
    }

    #[test]
    fn bad_gates_name_the_key() {
        let errs = parse(
            r#"
            [[gate]]
            kind = "file"
            path = "relative"
            [[gate]]
            name = "a"
            kind = "gpio"
            chip = "/dev/gpiochip0"
            line = 1.5
            open_when = "up"
            [[gate]]
            name = "a"
            kind = "command"
            argv = ["idle-check"]
            [[gate]]
            name = "w"
            kind = "window"
            windows = ["Mon-Fri 1-5"]
            timezone = "Mars/Base"
            colour = "red"
            [[gate]]
            name = "x"
            kind = "smoke"
            [[gate]]
            name = "f"
            kind = "file"
            path = "/run/x"
            open_when = "equals"
            applies_to = ["reboot"]
            "#,
        )
        .unwrap_err();
        let want = [
            "`gate[0].name`: required",
            "`gate[0].path`: \"relative\" must be an absolute path",
            "`gate[1].line`: expected a line offset",
            "`gate[1].open_when`: \"up\": expected \"high\" or \"low\"",
            "`gate[2].argv[0]`: \"idle-check\" must be an absolute path",
            "`gate[3].colour`: unknown key for a \"window\" gate",
            "`gate[3].windows[0]`: \"Mon-Fri 1-5\"",
            "`gate[3].timezone`: \"Mars/Base\" is not a time zone",
            "`gate[4].kind`: unknown kind \"smoke\"",
            "`gate[5].applies_to[0]`: \"reboot\"",
            "`gate[5].value`: required",
        ];
        for w in want {
            assert!(
                errs.iter().any(|e| e.contains(w)),
                "missing {w:?} in {errs:#?}"
            );
        }
        assert_eq!(errs.len(), want.len(), "{errs:#?}");
        // Two gates with one name: the second is refused.
        let errs = parse(
            "[[gate]]\nname = \"a\"\nkind = \"file\"\npath = \"/a\"\n\
             [[gate]]\nname = \"a\"\nkind = \"file\"\npath = \"/b\"\n",
        )
        .unwrap_err();
        assert!(errs[0].contains("`gate[1].name`: \"a\" is the name of an earlier gate"));
    }

    #[test]
    fn the_packaged_conffile_shows_every_key_with_its_default() {
        let text = include_str!("../packaging/config.toml");
        assert_eq!(
            parse(text).unwrap(),
            Settings::default(),
            "as shipped: defaults"
        );
        // Uncomment every `# [section]` and `# key = value` line.
        let is_key =
            |k: &str| !k.is_empty() && k.bytes().all(|c| c.is_ascii_lowercase() || c == b'_');
        let uncommented: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| l.starts_with('[') || l.split_once(" = ").is_some_and(|(k, _)| is_key(k)))
            .collect();
        let uncommented = uncommented.join("\n");
        let s = parse(&uncommented).unwrap_or_else(|e| panic!("{e:#?}\n{uncommented}"));
        let kinds: Vec<&str> = s.gates.iter().map(|g| g.kind.word()).collect();
        assert_eq!(kinds, ["file", "gpio", "gpio-sysfs", "command", "window"]);
        // Uncommented, the values are the defaults (but for the gates, which have none).
        assert_eq!(
            Settings {
                gates: Vec::new(),
                ..s
            },
            Settings::default()
        );
        let mut section = String::new();
        for line in Settings::default().to_toml().lines() {
            if line.starts_with('[') {
                section = line.to_owned();
                assert!(uncommented.contains(line), "{line} missing");
            } else if let Some((key, _)) = line.split_once(" = ") {
                let body = &uncommented[uncommented.find(&section).unwrap() + section.len()..];
                let body = &body[..body.find("\n[").unwrap_or(body.len())];
                assert!(
                    body.contains(&format!("\n{key} = ")),
                    "{section} {key} missing"
                );
            }
        }
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
