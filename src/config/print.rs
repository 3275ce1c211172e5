//! `check-config`'s printer: the effective settings as a TOML document that parses back to
//! the same settings.
//!
//! Each string and float is written by the toml crate's serializer (`q`, `float`), so that
//! quotes, backslashes, newlines, control characters and any unicode come out as TOML escapes
//! them. The layout around them stays ours, for what serializing a struct cannot give: the CAN
//! gates' resolved layouts as comments (toml writes none), every key written even when unset
//! (an empty string, which reads back as unset), and the keys in SPEC order.

use std::path::PathBuf;
use std::time::Duration;

use super::*;

/// A string as a TOML value, by the toml crate: its quoting and escapes.
fn q(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// A path as a TOML string.
fn qp(p: &std::path::Path) -> String {
    q(&p.display().to_string())
}

/// A float as a TOML value (`1.0`, `inf`, `nan`), by the toml crate.
fn float(x: f64) -> String {
    toml::Value::Float(x).to_string()
}

impl Settings {
    /// The effective settings as a TOML document, for `check-config`.
    pub fn to_toml(&self) -> String {
        let d = |d: Duration| format!("\"{}\"", HumanDuration(d));
        let list = |v: &[Pattern]| {
            let items: Vec<String> = v.iter().map(|s| q(&s.to_string())).collect();
            format!("[{}]", items.join(", "))
        };
        let u = &self.upstream;
        let a = &self.api;
        let p = &self.policy;
        let sim = &self.sim;
        format!(
            "[upstream]\nkind = \"{}\"\nurl = {}\npoll_interval = {}\ntimeout = {}\n{}\n\
             [api]\nlisten = {}\ntoken_file = {}\nmax_connections = {}\nconnection_timeout = {}\n\n\
             [policy]\nmode = \"{}\"\non_closed = \"{}\"\nstable_for = {}\n\
             max_concurrent = {}\nready_timeout = {}\nmax_defer = {}\ngate_check_interval = {}\ngate_reread = {}\nprepull = {}\n\
             include = {}\nexclude = {}\n\n\
             [state]\ndir = {}\n\n\
             [fleet]\nnamespace = {}\n\n\
             [sim]\nnode_name = {}\nrecreate_delay = {}\nready_delay = {}\npull_delay = {}\n",
            match u.kind {
                UpstreamKind::Yurthub => "yurthub",
                UpstreamKind::Sim => "sim",
                UpstreamKind::Apiserver => "apiserver",
            },
            q(&u.url),
            d(u.poll_interval),
            d(u.timeout),
            u.apiserver.as_ref().map(apiserver_toml).unwrap_or_default(),
            q(&a.listen.to_string()),
            q(&a.token_file
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()),
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
            p.max_defer.map_or("\"\"".into(), d),
            d(p.gate_check_interval),
            d(p.gate_reread),
            p.prepull,
            list(&p.include),
            list(&p.exclude),
            qp(&self.state.dir),
            q(&self.fleet.namespace),
            q(&sim.node_name),
            d(sim.recreate_delay),
            d(sim.ready_delay),
            d(sim.pull_delay),
        ) + &self.gates.iter().map(gate_toml).collect::<String>()
    }
}

fn gate_toml(g: &GateSettings) -> String {
    let d = |d: Duration| format!("\"{}\"", HumanDuration(d));
    let list = |v: &mut dyn Iterator<Item = String>| {
        format!("[{}]", v.map(|s| q(&s)).collect::<Vec<_>>().join(", "))
    };
    let applies = [("upgrade", g.upgrade), ("pull", g.pull)]
        .iter()
        .filter(|(_, on)| *on)
        .map(|(w, _)| w.to_string())
        .collect::<Vec<_>>();
    let mut out = format!(
        "\n[[gate]]\nname = {}\nkind = \"{}\"\nsafety = {}\napplies_to = {}\n",
        q(&g.name),
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
            out += &format!("path = {}\n", qp(path));
            out += &match open_when {
                FileOpen::Exists => "open_when = \"exists\"\n".to_owned(),
                FileOpen::Absent => "open_when = \"absent\"\n".to_owned(),
                FileOpen::Equals(v) => format!("open_when = \"equals\"\nvalue = {}\n", q(v)),
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
            out += &format!("chip = {}\n", qp(chip));
            out += &match line {
                GpioLine::Offset(n) => format!("line = {n}\n"),
                GpioLine::Name(n) => format!("line = {}\n", q(n)),
            };
            out += &format!("open_when = \"{}\"\n", level(*open_high));
        }
        GateKind::GpioSysfs {
            root,
            line,
            open_high,
        } => {
            out += &format!(
                "line = {line}\nopen_when = \"{}\"\nsysfs_root = {}\n",
                level(*open_high),
                qp(root)
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
                "windows = {}\ntimezone = {}\n",
                list(&mut windows.iter().map(|w| w.to_string())),
                q(timezone.as_deref().unwrap_or("local"))
            );
        }
        GateKind::Can(c) => out += &can_toml(c),
        GateKind::Value(v) => {
            out += &format!("path = {}\nscale = {}\n", qp(&v.path), float(v.scale));
            if let Some(f) = &v.scale_file {
                out += &format!("scale_file = {}\n", qp(f));
            }
            out += &format!("open_when = \"{}\"\n", v.open_when);
            if let Some(c) = &v.close_when {
                out += &format!("close_when = \"{c}\"\n");
            }
            out += &format!("interval = {}\n", d(v.interval));
        }
    }
    out
}

/// A CAN gate's keys as read, then its layout as resolved (from the DBC file or inline), as
/// comments: what the agent will match and decode.
fn can_toml(c: &CanGateSettings) -> String {
    use crate::can::FrameId;
    let s = &c.signal;
    let l = &s.layout;
    let mut out = format!("interface = {}\n", q(&c.interface));
    match &c.dbc {
        Some((path, message, signal)) => {
            out += &format!(
                "dbc = {}\nmessage = {}\nsignal = {}\n",
                qp(path),
                q(message),
                q(signal)
            );
        }
        None => {
            out += &match s.frame {
                FrameId::Exact { id, extended } => {
                    format!("id = 0x{id:X}\nextended = {extended}\n")
                }
                FrameId::Pgn { pgn, source } => {
                    format!("pgn = {pgn}\n")
                        + &source
                            .map(|s| format!("source = {s}\n"))
                            .unwrap_or_default()
                }
            };
            out += &format!(
                "start_bit = {}\nlength = {}\nbyte_order = \"{}\"\nsigned = {}\n\
                 factor = {}\noffset = {}\nunit = {}\n",
                l.start_bit,
                l.length,
                if l.big_endian { "big" } else { "little" },
                l.signed,
                float(l.factor),
                float(l.offset),
                q(&s.unit)
            );
        }
    }
    out += &format!(
        "j1939 = {}\nopen_when = \"{}\"\nmax_age = \"{}\"\n",
        s.j1939,
        s.open_when,
        HumanDuration(c.max_age)
    );
    out += &format!("# resolved: {}, {}", s.frame, l);
    if !s.unit.is_empty() {
        out += &format!(" {}", s.unit);
    }
    out += "\n";
    if !s.values.is_empty() {
        let v: Vec<String> = s
            .values
            .iter()
            .map(|(n, name)| format!("{n} {name}"))
            .collect();
        out += &format!("# values: {}\n", v.join(", "));
    }
    out
}

/// The apiserver keys of `[upstream]`, each written (empty when unset), so that the output
/// reads back to the same settings.
fn apiserver_toml(a: &ApiserverSettings) -> String {
    let path = |p: &Option<PathBuf>| {
        p.as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    };
    let (cert, key) = match &a.client_cert {
        Some((c, k)) => (c.display().to_string(), k.display().to_string()),
        None => Default::default(),
    };
    format!(
        "kubeconfig = {}\nserver = {}\nca_file = {}\ntoken_file = {}\n\
         client_cert = {}\nclient_key = {}\nnode_name = {}\ndetect = \"{}\"\n",
        q(&path(&a.kubeconfig)),
        q(a.server.as_deref().unwrap_or_default()),
        q(&path(&a.ca_file)),
        q(&path(&a.token_file)),
        q(&cert),
        q(&key),
        q(a.node_name.as_deref().unwrap_or_default()),
        a.detect,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apiserver_keys_are_printed_as_read() {
        let a = ApiserverSettings {
            kubeconfig: None,
            server: Some("https://10.0.0.1:6443".into()),
            ca_file: Some("/etc/yurt-ota/ca.crt".into()),
            token_file: None,
            client_cert: Some(("/c.crt".into(), "/c.key".into())),
            node_name: Some("edge-1".into()),
            detect: Detect::Revision,
        };
        let mut s = Settings::default();
        s.upstream.apiserver = Some(a);
        let text = s.to_toml();
        assert!(
            text.starts_with(
                "[upstream]\nkind = \"yurthub\"\nurl = \"http://127.0.0.1:10267\"\n\
                 poll_interval = \"5s\"\ntimeout = \"5s\"\nkubeconfig = \"\"\n\
                 server = \"https://10.0.0.1:6443\"\nca_file = \"/etc/yurt-ota/ca.crt\"\n\
                 token_file = \"\"\nclient_cert = \"/c.crt\"\nclient_key = \"/c.key\"\n\
                 node_name = \"edge-1\"\ndetect = \"revision\"\n\n[api]\n"
            ),
            "{text}"
        );
        // The keys parse back .
        let raw: toml::Table = text.parse().unwrap();
        assert_eq!(raw["upstream"].as_table().unwrap().len(), 12);
    }
}
