//! One pass from the raw sections to `Settings`, collecting every semantic error (bad value,
//! relative path, unknown zone, duplicate gate name), each naming the file, the key and its line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::errors::Errors;
use super::raw::{RawCommon, RawConfig, RawGate, RawLine};
use super::types::*;
use super::*;

/// The checks every section uses: each pushes what it refuses and gives back what it keeps.
impl Errors<'_> {
    /// `value` parsed by `f`, or the error reported at `key`.
    fn check<T>(
        &mut self,
        key: &str,
        value: Option<&str>,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match f(value?) {
            Ok(v) => Some(v),
            Err(message) => {
                self.push(key, message);
                None
            }
        }
    }

    /// A duration within the key's range (`duration_range`), so that no absurd value reaches
    /// the clock arithmetic of the loops.
    fn duration(&mut self, key: &str, value: &Option<String>) -> Option<Duration> {
        let (min, max) = duration_range(key);
        self.check(key, value.as_deref(), |s| {
            match s.parse::<HumanDuration>() {
                Ok(d) if d.0.is_zero() => Err(format!("{s:?} must be longer than zero")),
                Ok(d) if d.0 < min || d.0 > max => Err(format!(
                    "{s:?} is out of range {}..={}",
                    HumanDuration(min),
                    HumanDuration(max)
                )),
                other => other.map(|d| d.0),
            }
        })
    }

    fn integer(&mut self, key: &str, value: Option<i64>, min: i64, max: i64) -> Option<i64> {
        match value? {
            v if (min..=max).contains(&v) => Some(v),
            v => {
                self.push(key, format!("{v} is out of range {min}..={max}"));
                None
            }
        }
    }

    fn path(&mut self, key: &str, value: &Option<String>) -> Option<PathBuf> {
        self.check(key, value.as_deref(), absolute_path)
    }

    /// A list of `namespace/name-prefix*` patterns.
    fn patterns(&mut self, key: &str, value: Option<Vec<String>>) -> Option<Vec<Pattern>> {
        let items = value?;
        let mut out = Vec::with_capacity(items.len());
        for (i, p) in items.into_iter().enumerate() {
            match p.parse::<Pattern>() {
                Ok(p) => out.push(p),
                Err(msg) => self.push(&format!("{key}[{i}]"), msg),
            }
        }
        Some(out)
    }
}

/// The raw file into `Settings`: defaults for what it leaves out, every error reported.
/// `read_files`: also read the files the settings name, as `run` will (the token file).
pub(super) fn settings(raw: RawConfig, e: &mut Errors, read_files: bool) -> Option<Settings> {
    let mut s = Settings::default();

    let u = raw.upstream.unwrap_or_default();
    if let Some(v) = e.check("upstream.kind", u.kind.as_deref(), parse_kind) {
        s.upstream.kind = v;
    }
    if let Some(v) = e.check("upstream.url", u.url.as_deref(), parse_url) {
        s.upstream.url = v;
    }
    if let Some(v) = e.duration("upstream.poll_interval", &u.poll_interval) {
        s.upstream.poll_interval = v;
    }
    if let Some(v) = e.duration("upstream.timeout", &u.timeout) {
        s.upstream.timeout = v;
    }
    s.upstream.apiserver = apiserver::settings(&u, e);

    let a = raw.api.unwrap_or_default();
    if let Some(v) = e.check("api.listen", a.listen.as_deref(), str::parse::<Listen>) {
        s.api.listen = v;
    }
    if let Some(v) = a.token_file {
        s.api.token_file = (!v.is_empty()).then(|| PathBuf::from(v));
    }
    // The token file as `run` reads it, so that check-config refuses what run would.
    if let Some(path) = s.api.token_file.as_deref().filter(|_| read_files) {
        if let Err(msg) = token_from_file(path) {
            e.push("api.token_file", msg);
        }
    }
    if let Some(v) = e.integer("api.max_connections", a.max_connections, 1, 1024) {
        s.api.max_connections = v as usize;
    }
    if let Some(v) = e.duration("api.connection_timeout", &a.connection_timeout) {
        s.api.connection_timeout = v;
    }
    if let Listen::Tcp(addr) = s.api.listen {
        if !addr.ip().is_loopback() && s.api.token_file.is_none() {
            e.push(
                "api.listen",
                format!(
                    "{addr} is not a loopback address; set api.token_file so that only \
                     callers with the token can upgrade pods"
                ),
            );
        }
    }

    let p = raw.policy.unwrap_or_default();
    if let Some(v) = e.check("policy.mode", p.mode.as_deref(), parse_mode) {
        s.policy.mode = v;
    }
    if let Some(v) = e.check("policy.on_closed", p.on_closed.as_deref(), parse_on_closed) {
        s.policy.on_closed = v;
    }
    if let Some(v) = e.duration("policy.stable_for", &p.stable_for) {
        s.policy.stable_for = v;
    }
    if let Some(v) = e.integer("policy.max_concurrent", p.max_concurrent, 1, 1000) {
        s.policy.max_concurrent = v as u32;
    }
    if let Some(v) = e.duration("policy.ready_timeout", &p.ready_timeout) {
        s.policy.ready_timeout = v;
    }
    // Empty or absent: no bound (the printer writes "" for that).
    let max_defer = p.max_defer.filter(|v| !v.trim().is_empty());
    if let Some(v) = e.duration("policy.max_defer", &max_defer) {
        s.policy.max_defer = Some(v);
    }
    if let Some(v) = e.duration("policy.gate_check_interval", &p.gate_check_interval) {
        s.policy.gate_check_interval = v;
    }
    if let Some(v) = e.duration("policy.gate_reread", &p.gate_reread) {
        s.policy.gate_reread = v;
    }
    if let Some(v) = p.prepull {
        s.policy.prepull = v;
    }
    if let Some(v) = e.patterns("policy.include", p.include) {
        s.policy.include = v;
    }
    if let Some(v) = e.patterns("policy.exclude", p.exclude) {
        s.policy.exclude = v;
    }

    if let Some(v) = e.path("state.dir", &raw.state.unwrap_or_default().dir) {
        s.state.dir = v;
    }

    let fleet = raw.fleet.unwrap_or_default();
    if let Some(v) = e.check("fleet.namespace", fleet.namespace.as_deref(), |v| {
        crate::names::check_label(v).map(|_| v.to_owned())
    }) {
        s.fleet.namespace = v;
    }

    let sim = raw.sim.unwrap_or_default();
    if let Some(v) = e.check("sim.node_name", sim.node_name.as_deref(), |v| {
        crate::names::check_subdomain(v).map(|_| v.to_owned())
    }) {
        s.sim.node_name = v;
    }
    if let Some(v) = e.duration("sim.recreate_delay", &sim.recreate_delay) {
        s.sim.recreate_delay = v;
    }
    if let Some(v) = e.duration("sim.ready_delay", &sim.ready_delay) {
        s.sim.ready_delay = v;
    }
    if let Some(v) = e.duration("sim.pull_delay", &sim.pull_delay) {
        s.sim.pull_delay = v;
    }

    for (i, g) in raw.gates.into_iter().enumerate() {
        let Some(g) = g.and_then(|g| gate(&format!("gate[{i}]"), g, e)) else {
            continue;
        };
        if s.gates.iter().any(|o| o.name == g.name) {
            e.push(
                &format!("gate[{i}].name"),
                format!("{:?} is the name of an earlier gate", g.name),
            );
            continue;
        }
        s.gates.push(g);
    }
    Some(s)
}

/// One gate; `None` (after reporting) if anything in it is wrong.
fn gate(sec: &str, g: RawGate, e: &mut Errors) -> Option<GateSettings> {
    let errors_before = e.len();
    let key = |k: &str| format!("{sec}.{k}");
    let common = match &g {
        RawGate::File(g) => g.common(),
        RawGate::Gpio(g) => g.common(),
        RawGate::GpioSysfs(g) => g.common(),
        RawGate::Command(g) => g.common(),
        RawGate::Window(g) => g.common(),
        RawGate::Can(g) => g.common(),
        RawGate::Value(g) => g.common(),
    };
    let RawCommon {
        name,
        safety,
        applies_to,
    } = common;
    let name = match name {
        None => {
            e.push(&key("name"), "required: every gate needs a name".into());
            None
        }
        Some(n) => e.check(&key("name"), Some(&n), |v| {
            crate::names::check_plain(v).map(|_| v.to_owned())
        }),
    };
    let (mut upgrade, mut pull) = (true, false);
    if let Some(list) = applies_to {
        (upgrade, pull) = (false, false);
        for (j, a) in list.iter().enumerate() {
            match a.as_str() {
                "upgrade" => upgrade = true,
                "pull" => pull = true,
                other => e.push(
                    &format!("{sec}.applies_to[{j}]"),
                    format!("{other:?}: expected \"upgrade\" or \"pull\""),
                ),
            }
        }
        if list.is_empty() {
            e.push(
                &key("applies_to"),
                "must name \"upgrade\", \"pull\" or both".into(),
            );
        }
    }
    let required = |e: &mut Errors, k: &str, present: bool| {
        if !present {
            e.push(&key(k), "required for this kind of gate".into());
        }
    };
    let level = |e: &mut Errors, v: Option<&str>| match v {
        None | Some("high") => Some(true),
        Some("low") => Some(false),
        Some(other) => {
            e.push(
                &key("open_when"),
                format!("{other:?}: expected \"high\" or \"low\""),
            );
            None
        }
    };
    let kind = match g {
        RawGate::File(f) => {
            required(e, "path", f.path.is_some());
            let path = e.path(&key("path"), &f.path);
            let open_when = match (f.open_when.as_deref().unwrap_or("exists"), f.value) {
                ("exists", None) => Some(FileOpen::Exists),
                ("absent", None) => Some(FileOpen::Absent),
                ("equals", Some(v)) => Some(FileOpen::Equals(v.trim().to_owned())),
                ("equals", None) => {
                    required(e, "value", false);
                    None
                }
                ("exists" | "absent", Some(_)) => {
                    e.push(
                        &key("value"),
                        "only used with open_when = \"equals\"".into(),
                    );
                    None
                }
                (other, _) => {
                    e.push(
                        &key("open_when"),
                        format!("{other:?}: expected \"exists\", \"absent\" or \"equals\""),
                    );
                    None
                }
            };
            let max_age = e.duration(&key("max_age"), &f.max_age);
            Some(GateKind::File {
                path: path?,
                open_when: open_when?,
                max_age,
            })
        }
        RawGate::Gpio(g) => {
            required(e, "chip", g.chip.is_some());
            required(e, "line", g.line.is_some());
            let chip = e.path(&key("chip"), &g.chip);
            let line = match g.line {
                Some(RawLine::Offset(n)) if (0..=u32::MAX as i64).contains(&n) => {
                    Some(GpioLine::Offset(n as u32))
                }
                Some(RawLine::Name(s)) if !s.is_empty() => Some(GpioLine::Name(s)),
                Some(_) => {
                    e.push(
                        &key("line"),
                        "expected a line offset (17) or a line name (\"PARK_BRAKE\")".into(),
                    );
                    None
                }
                None => None,
            };
            let open_high = level(e, g.open_when.as_deref());
            Some(GateKind::Gpio {
                chip: chip?,
                line: line?,
                open_high: open_high?,
            })
        }
        RawGate::GpioSysfs(g) => {
            required(e, "line", g.line.is_some());
            let line = e.integer(&key("line"), g.line, 0, 65535);
            let root = match &g.sysfs_root {
                Some(_) => e.path(&key("sysfs_root"), &g.sysfs_root),
                None => Some(PathBuf::from("/sys/class/gpio")),
            };
            let open_high = level(e, g.open_when.as_deref());
            Some(GateKind::GpioSysfs {
                root: root?,
                line: line? as u32,
                open_high: open_high?,
            })
        }
        RawGate::Command(c) => {
            required(e, "argv", c.argv.is_some());
            if let Some(argv) = &c.argv {
                match argv.first() {
                    None => e.push(
                        &key("argv"),
                        "must name a program: [\"/usr/lib/yurt-ota/idle-check\"]".into(),
                    ),
                    Some(p) if !Path::new(p).is_absolute() => e.push(
                        &key("argv[0]"),
                        format!("{p:?} must be an absolute path (no shell, no PATH search)"),
                    ),
                    _ => {}
                }
            }
            let interval = e.duration(&key("interval"), &c.interval);
            let timeout = e.duration(&key("timeout"), &c.timeout);
            Some(GateKind::Command {
                argv: c.argv?,
                interval: interval.unwrap_or(Duration::from_secs(10)),
                timeout: timeout.unwrap_or(Duration::from_secs(2)),
            })
        }
        RawGate::Window(w) => {
            required(e, "windows", w.windows.is_some());
            let mut windows = Vec::new();
            for (j, text) in w.windows.iter().flatten().enumerate() {
                match text.parse::<crate::schedule::Window>() {
                    Ok(w) => windows.push(w),
                    Err(msg) => e.push(&format!("{sec}.windows[{j}]"), msg),
                }
            }
            if w.windows.as_ref().is_some_and(|t| t.is_empty()) {
                e.push(&key("windows"), "must hold at least one window".into());
            }
            let timezone = match w.timezone.as_deref() {
                None | Some("local") => None,
                Some(name) => match crate::schedule::zone(Some(name)) {
                    Ok(_) => Some(name.to_owned()),
                    Err(msg) => {
                        e.push(&key("timezone"), msg);
                        None
                    }
                },
            };
            Some(GateKind::Window { windows, timezone })
        }
        RawGate::Can(c) => can_gate(sec, c, e).map(|c| GateKind::Can(Box::new(c))),
        RawGate::Value(v) => {
            required(e, "path", v.path.is_some());
            required(e, "open_when", v.open_when.is_some());
            let path = e.path(&key("path"), &v.path);
            let scale_file = match &v.scale_file {
                Some(_) => Some(e.path(&key("scale_file"), &v.scale_file)?),
                None => None,
            };
            let scale = v.scale.map_or(1.0, |n| n.get());
            if scale == 0.0 || !scale.is_finite() {
                e.push(&key("scale"), "must be a non-zero number".into());
            }
            let compare = |e: &mut Errors, k: &str, t: &Option<String>| {
                e.check(&key(k), t.as_deref(), str::parse::<crate::can::Compare>)
            };
            let open_when = compare(e, "open_when", &v.open_when);
            let close_when = compare(e, "close_when", &v.close_when);
            let interval = e.duration(&key("interval"), &v.interval);
            Some(GateKind::Value(ValueGateSettings {
                path: path?,
                scale,
                scale_file,
                open_when: open_when?,
                close_when,
                interval: interval.unwrap_or(Duration::from_secs(5)),
            }))
        }
    };
    if e.len() != errors_before {
        return None;
    }
    Some(GateSettings {
        name: name?,
        safety: safety.unwrap_or(false),
        upgrade,
        pull,
        kind: kind?,
    })
}

/// A CAN gate: the interface, the signal by name from a DBC or inline, `open_when` against its
/// value table, `max_age`. The DBC file is read here, so that a signal it does not have is
/// refused by name before the agent runs.
fn can_gate(sec: &str, c: super::raw::RawCanGate, e: &mut Errors) -> Option<CanGateSettings> {
    use crate::can::{CanSignal, FrameId, OpenWhen};
    let key = |k: &str| format!("{sec}.{k}");
    let before = e.len();
    let interface = match c.interface.as_deref() {
        None => {
            let msg = "required: the SocketCAN interface, such as \"can0\"";
            e.push(&key("interface"), msg.into());
            None
        }
        Some(i) if i.is_empty() || i.len() > 15 || i.contains(['/', ' ', '\0']) => {
            let msg = format!("{i:?} is not a network interface name");
            e.push(&key("interface"), msg);
            None
        }
        Some(i) => Some(i.to_owned()),
    };
    if c.open_when.is_none() {
        e.push(&key("open_when"), "required for this kind of gate".into());
    }
    let max_age = e
        .duration(&key("max_age"), &c.max_age)
        .unwrap_or(Duration::from_secs(1));
    let resolved = match &c.dbc {
        Some(_) => dbc_signal(sec, &c, e),
        None => inline_signal(sec, &c, e),
    }?;
    let open_when = match OpenWhen::parse(c.open_when.as_deref()?, &resolved.values) {
        Ok(o) => o,
        Err(msg) => {
            e.push(&key("open_when"), msg);
            return None;
        }
    };
    let j1939 = c
        .j1939
        .unwrap_or(matches!(resolved.frame, FrameId::Pgn { .. }));
    if e.len() != before {
        return None;
    }
    Some(CanGateSettings {
        interface: interface?,
        dbc: resolved.dbc,
        signal: CanSignal {
            name: resolved.name,
            frame: resolved.frame,
            layout: resolved.layout,
            unit: resolved.unit,
            values: resolved.values,
            j1939,
            open_when,
        },
        max_age,
    })
}

/// A CAN gate's signal as resolved, from its DBC file or its inline keys.
struct Resolved {
    dbc: Option<(PathBuf, String, String)>,
    name: String,
    frame: crate::can::FrameId,
    layout: crate::can::Layout,
    unit: String,
    values: crate::can::ValueTable,
}

/// `dbc`, `message`, `signal`: the layout from the file; inline layout keys are refused.
fn dbc_signal(sec: &str, c: &super::raw::RawCanGate, e: &mut Errors) -> Option<Resolved> {
    use crate::can::dbc::{resolve, DbcKey};
    let key = |k: &str| format!("{sec}.{k}");
    let inline = [
        ("id", c.id.is_some()),
        ("extended", c.extended.is_some()),
        ("pgn", c.pgn.is_some()),
        ("source", c.source.is_some()),
        ("start_bit", c.start_bit.is_some()),
        ("length", c.length.is_some()),
        ("byte_order", c.byte_order.is_some()),
        ("signed", c.signed.is_some()),
        ("factor", c.factor.is_some()),
        ("offset", c.offset.is_some()),
        ("unit", c.unit.is_some()),
    ];
    for (k, _) in inline.iter().filter(|(_, set)| *set) {
        let msg = "not with `dbc`: the DBC file gives the signal's layout";
        e.push(&key(k), msg.into());
    }
    for (k, set) in [
        ("message", c.message.is_some()),
        ("signal", c.signal.is_some()),
    ] {
        if !set {
            e.push(&key(k), "required with `dbc`".into());
        }
    }
    let path = e.path(&key("dbc"), &c.dbc)?;
    let (message, signal) = (c.message.clone()?, c.signal.clone()?);
    match resolve(&path, &message, &signal) {
        Ok(d) => Some(Resolved {
            name: format!("{message}.{signal}"),
            dbc: Some((path, message, signal)),
            frame: d.frame,
            layout: d.layout,
            unit: d.unit,
            values: d.values,
        }),
        Err((k, msg)) => {
            let k = match k {
                DbcKey::Dbc => "dbc",
                DbcKey::Message => "message",
                DbcKey::Signal => "signal",
            };
            e.push(&key(k), msg);
            None
        }
    }
}

/// `id` (or `pgn` and `source`) and the layout keys.
fn inline_signal(sec: &str, c: &super::raw::RawCanGate, e: &mut Errors) -> Option<Resolved> {
    use crate::can::{check_pgn, FrameId, Layout};
    let key = |k: &str| format!("{sec}.{k}");
    for (k, set) in [
        ("message", c.message.is_some()),
        ("signal", c.signal.is_some()),
    ] {
        if set {
            let msg = "only with `dbc`; an inline signal gives `id` or `pgn` and its bits";
            e.push(&key(k), msg.into());
        }
    }
    let frame = match (c.id, c.pgn) {
        (Some(_), Some(_)) => {
            e.push(&key("pgn"), "give either `id` or `pgn`, not both".into());
            None
        }
        (None, None) => {
            let msg = "required: `id` (or `pgn` for J1939), or `dbc` with `message` and `signal`";
            e.push(&key("id"), msg.into());
            None
        }
        (Some(id), None) => {
            let extended = c.extended.unwrap_or(id > 0x7FF);
            let max = if extended { 0x1FFF_FFFF } else { 0x7FF };
            if c.source.is_some() {
                e.push(&key("source"), "only with `pgn`".into());
            }
            e.integer(&key("id"), Some(id), 0, max)
                .map(|id| FrameId::Exact {
                    id: id as u32,
                    extended,
                })
        }
        (None, Some(pgn)) => {
            if c.extended.is_some() {
                let msg = "not with `pgn`: J1939 ids are 29-bit";
                e.push(&key("extended"), msg.into());
            }
            let source = match c.source {
                Some(_) => Some(e.integer(&key("source"), c.source, 0, 253)? as u8),
                None => None,
            };
            let checked = u32::try_from(pgn)
                .map_err(|_| format!("{pgn} is not a PGN"))
                .and_then(|p| check_pgn(p).map(|_| p));
            match checked {
                Ok(pgn) => Some(FrameId::Pgn { pgn, source }),
                Err(msg) => {
                    e.push(&key("pgn"), msg);
                    None
                }
            }
        }
    };
    for (k, set) in [
        ("start_bit", c.start_bit.is_some()),
        ("length", c.length.is_some()),
    ] {
        if !set {
            e.push(&key(k), "required for an inline signal".into());
        }
    }
    let start_bit = e.integer(&key("start_bit"), c.start_bit, 0, 63);
    let length = e.integer(&key("length"), c.length, 1, 64);
    let big_endian = match c.byte_order.as_deref() {
        None | Some("little") => Some(false),
        Some("big") => Some(true),
        Some(other) => {
            let msg = format!("{other:?}: expected \"little\" (Intel) or \"big\" (Motorola)");
            e.push(&key("byte_order"), msg);
            None
        }
    };
    let layout = Layout {
        start_bit: start_bit? as u16,
        length: length? as u16,
        big_endian: big_endian?,
        signed: c.signed.unwrap_or(false),
        factor: c.factor.map_or(1.0, |n| n.get()),
        offset: c.offset.map_or(0.0, |n| n.get()),
    };
    if let Err(msg) = layout.check() {
        e.push(&key("length"), msg);
        return None;
    }
    let frame = frame?;
    let name = match &frame {
        FrameId::Exact { id, .. } => format!("0x{id:X} bits {}", layout.describe_bits()),
        FrameId::Pgn { pgn, .. } => format!("PGN {pgn} bits {}", layout.describe_bits()),
    };
    Some(Resolved {
        dbc: None,
        name,
        frame,
        layout,
        unit: c.unit.clone().unwrap_or_default(),
        values: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_give_their_line_and_come_in_file_order() {
        let text = "[upstream]\nkind = \"kubelet\"\ntimeout = 5\n\n[[gate]]\nname = \"g\"\n\
                    kind = \"file\"\npath = \"relative\"\ncolour = 1\n";
        let errs: Vec<String> = Settings::parse(text, Path::new("c.toml"))
            .unwrap_err()
            .0
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(
            errs,
            [
                "c.toml: `upstream.kind`: unknown kind \"kubelet\"; expected \"yurthub\", \"apiserver\" or \"sim\" (line 2, column 1)",
                "c.toml: `upstream.timeout`: expected a string, found integer (line 3, column 11)",
                "c.toml: `gate[0].path`: \"relative\" must be an absolute path (line 8, column 1)",
                "c.toml: `gate[0].colour`: unknown key for a \"file\" gate; it takes name, safety, applies_to, path, open_when, value, max_age (line 9, column 1)",
            ]
        );
    }
}
