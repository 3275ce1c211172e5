//! Configuration: the TOML file (SPEC section 4) read once at startup into typed `Settings`.
//!
//! Two steps, as in Zincati's `config/`: `raw` deserializes the file with serde into section
//! structs that refuse unknown keys and wrong types (each error with its line), then `validate`
//! turns them into `Settings` in one pass that collects every semantic error (bad duration,
//! relative path, unknown zone, duplicate gate name), each naming the file and the key.
//! Nothing downstream re-parses strings. `print` writes the effective settings back as TOML.

mod apiserver;
mod errors;
mod print;
mod raw;
mod types;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use apiserver::{ApiserverSettings, Detect};
pub use types::{read_token, HumanDuration, Pattern};

pub const DEFAULT_PATH: &str = "/etc/yurt-ota/config.toml";
pub const DEFAULT_API: &str = "127.0.0.1:10290";

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub upstream: UpstreamSettings,
    pub api: ApiSettings,
    pub policy: PolicySettings,
    pub state: StateSettings,
    pub sim: SimSettings,
    pub fleet: FleetSettings,
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
        windows: Vec<crate::schedule::Window>,
        /// `None`: the system's local time zone.
        timezone: Option<String>,
    },
    /// One signal on a SocketCAN interface (SPEC section 5), resolved from a DBC or inline.
    Can(Box<CanGateSettings>),
    /// A number read from a file (sysfs, procfs).
    Value(ValueGateSettings),
}

/// A `kind = "can"` gate: the interface, the signal resolved, and how fresh it must be.
#[derive(Debug, Clone, PartialEq)]
pub struct CanGateSettings {
    pub interface: String,
    /// Where the layout came from: the DBC file and its message and signal names; `None` for
    /// an inline layout.
    pub dbc: Option<(PathBuf, String, String)>,
    pub signal: crate::can::CanSignal,
    /// No frame of the signal within this long reads closed.
    pub max_age: Duration,
}

/// A `kind = "value"` gate: `path`'s number times `scale` (and the number in `scale_file`).
#[derive(Debug, Clone, PartialEq)]
pub struct ValueGateSettings {
    pub path: PathBuf,
    pub scale: f64,
    /// An IIO `in_voltage_scale`: read with each value and multiplied in.
    pub scale_file: Option<PathBuf>,
    pub open_when: crate::can::Compare,
    /// With it, an open gate stays open until this holds (hysteresis); without, it closes as
    /// soon as `open_when` stops holding.
    pub close_when: Option<crate::can::Compare>,
    pub interval: Duration,
}

impl GateKind {
    pub fn word(&self) -> &'static str {
        match self {
            GateKind::File { .. } => "file",
            GateKind::Gpio { .. } => "gpio",
            GateKind::GpioSysfs { .. } => "gpio-sysfs",
            GateKind::Command { .. } => "command",
            GateKind::Window { .. } => "window",
            GateKind::Can(_) => "can",
            GateKind::Value(_) => "value",
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
    Apiserver,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamSettings {
    pub kind: UpstreamKind,
    /// Base URL without a trailing slash, e.g. `http://127.0.0.1:10267`.
    pub url: String,
    pub poll_interval: Duration,
    /// Bounds each whole upstream call: connect, request and response body.
    pub timeout: Duration,
    /// The apiserver keys (SPEC section 2b), set only with `kind = "apiserver"`.
    pub apiserver: Option<ApiserverSettings>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Tcp(SocketAddr),
    Unix(PathBuf),
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
    /// A pod needing upgrade this long is treated as forced (SPEC 6b); `None`: never.
    pub max_defer: Option<Duration>,
    pub gate_check_interval: Duration,
    /// The slow safety re-read of every gate, in case an event was lost (events tell the
    /// agent of changes; this is the net under them).
    pub gate_reread: Duration,
    pub prepull: bool,
    pub include: Vec<Pattern>,
    pub exclude: Vec<Pattern>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StateSettings {
    pub dir: PathBuf,
}

/// The fleet budget's Leases (SPEC 6b), apiserver mode.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetSettings {
    /// The one namespace every slot Lease of the fleet lives in (the ServiceAccount's own, where
    /// packaging/kubernetes/rbac.yaml grants the Leases).
    pub namespace: String,
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
                apiserver: None,
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
                max_defer: None,
                gate_check_interval: Duration::from_millis(250),
                gate_reread: Duration::from_secs(30),
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
            fleet: FleetSettings {
                namespace: "yurt-ota".into(),
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
            Ok(text) => Settings::read(&text, path, true),
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
        Settings::read(text, file, false)
    }

    /// `read_files`: also check the files the settings name (the token file), as `run` reads
    /// them.
    fn read(text: &str, file: &Path, read_files: bool) -> Result<Settings, ConfigErrors> {
        let mut errors = errors::Errors::new(text, file);
        let raw = raw::read(text, &mut errors);
        let settings = raw.and_then(|raw| validate::settings(raw, &mut errors, read_files));
        match settings {
            Some(s) if errors.is_empty() => Ok(s),
            _ => Err(errors.into()),
        }
    }
}

#[cfg(test)]
mod tests;
