use super::types::*;
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
    assert_eq!(s.policy.include, vec!["edge-apps/*".parse().unwrap()]);
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
            errs.len() == 1 && errs[0].contains("`upstream.url`") && errs[0].contains("1..=65535"),
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
    let text = include_str!("../../packaging/config.toml");
    assert_eq!(
        parse(text).unwrap(),
        Settings::default(),
        "as shipped: defaults"
    );
    // Uncomment every `# [section]` and `# key = value` line.
    let is_key = |k: &str| !k.is_empty() && k.bytes().all(|c| c.is_ascii_lowercase() || c == b'_');
    let uncommented: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| l.starts_with('[') || l.split_once(" = ").is_some_and(|(k, _)| is_key(k)))
        .collect();
    let uncommented = uncommented.join("\n");
    let s = parse(&uncommented).unwrap_or_else(|e| panic!("{e:#?}\n{uncommented}"));
    let kinds: Vec<&str> = s.gates.iter().map(|g| g.kind.word()).collect();
    assert_eq!(
        kinds,
        [
            "file",
            "gpio",
            "gpio-sysfs",
            "command",
            "window",
            "can",
            "value"
        ]
    );
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
        assert_eq!(text.parse(), Ok(HumanDuration(d)), "{text}");
        assert_eq!(HumanDuration(d).to_string(), text.replace("1m30s", "90s"));
    }
    assert_eq!(HumanDuration(Duration::from_secs(90)).to_string(), "90s");
    for bad in ["", "5", "s", "5x", "-1s", "1.5s", "5 s"] {
        assert!(bad.parse::<HumanDuration>().is_err(), "{bad:?}");
    }
}

/// Each value type reads what it writes: the printer of `check-config` relies on it.
#[test]
fn listen_pattern_and_window_round_trip() {
    for text in ["127.0.0.1:10290", "[::1]:80", "unix:/run/yurt-ota/api.sock"] {
        assert_eq!(text.parse::<Listen>().unwrap().to_string(), text);
    }
    assert!("unix:api.sock".parse::<Listen>().is_err());
    for text in ["kube-system/kube-proxy*", "edge-*/*", "a/b"] {
        assert_eq!(text.parse::<Pattern>().unwrap().to_string(), text);
    }
    for bad in ["kube-proxy", "/x", "a/", "a*b/c", "a/*b"] {
        assert!(bad.parse::<Pattern>().is_err(), "{bad:?}");
    }
    let p: Pattern = "kube-system/kube-proxy*".parse().unwrap();
    assert!(p.matches("kube-system", "kube-proxy-hsdvx"));
    assert!(!p.matches("kube-system", "kindnet-4pxt7"));
    assert!(!p.matches("kube-systemx", "kube-proxy"));
    let w: crate::schedule::Window = "Mon-Fri 01:00-05:00".parse().unwrap();
    assert_eq!(w.to_string().parse::<crate::schedule::Window>(), Ok(w));
    let text = "[policy]\ninclude = [\"kube-system/*\"]\nexclude = [\"a/b*\"]\n\n\
                [[gate]]\nname = \"night\"\nkind = \"window\"\nwindows = [\"Sat-Sun 00:00-24:00\"]\n";
    let s = parse(text).unwrap();
    assert_eq!(parse(&s.to_toml()).unwrap(), s, "{}", s.to_toml());
}

#[test]
fn effective_settings_parse_back_to_themselves() {
    let s = Settings::default();
    let text = s.to_toml();
    assert_eq!(parse(&text).unwrap(), s, "{text}");
}

#[test]
fn max_defer_is_off_by_default_takes_days_and_has_bounds() {
    assert_eq!(parse("").unwrap().policy.max_defer, None);
    assert_eq!(
        parse("[policy]\nmax_defer = \"\"\n")
            .unwrap()
            .policy
            .max_defer,
        None
    );
    let s = parse("[policy]\nmax_defer = \"7d\"\n").unwrap();
    assert_eq!(s.policy.max_defer, Some(Duration::from_secs(7 * 86_400)));
    // Printed and read back the same, set or not.
    assert_eq!(parse(&s.to_toml()).unwrap(), s);
    let off = Settings::default();
    assert_eq!(parse(&off.to_toml()).unwrap(), off);
    assert_eq!(
        parse("[policy]\nmax_defer = \"366d\"\n").unwrap_err(),
        vec!["/etc/yurt-ota/config.toml: `policy.max_defer`: \"366d\" is out of range 10ms..=8760h (line 2, column 1)"]
    );
    assert!(parse("[policy]\nmax_defer = \"soon\"\n").unwrap_err()[0].contains("policy.max_defer"));
}

/// `kind` is read by serde (`GateTag`), each error at its line and column; the rest of a gate
/// of an unknown kind is still read.
#[test]
fn gate_kinds_are_read_by_serde_at_their_line() {
    let err = |text: &str| parse(text).unwrap_err();
    assert_eq!(
        err("[[gate]]\nname = \"a\"\nkind = 5\n"),
        ["/etc/yurt-ota/config.toml: `gate[0].kind`: expected a string, found integer (line 3, column 8)"]
    );
    assert_eq!(
        err("[[gate]]\nkind = {file = 1}\n"),
        ["/etc/yurt-ota/config.toml: `gate[0].kind`: expected a string, found table (line 2, column 8)"]
    );
    assert_eq!(
        err("[[gate]]\nname = \"a\"\n"),
        ["/etc/yurt-ota/config.toml: `gate[0].kind`: required: file, gpio, gpio-sysfs, command, window, can or value (line 1, column 1)"]
    );
    assert_eq!(
        err("[[gate]]\nname = \"a\"\nkind = \"smoke\"\nsafety = 3\n"),
        [
            "/etc/yurt-ota/config.toml: `gate[0].kind`: unknown kind \"smoke\"; expected file, gpio, gpio-sysfs, command, window, can or value (line 3, column 8)",
            "/etc/yurt-ota/config.toml: `gate[0].safety`: expected true or false, found integer (line 4, column 10)",
        ]
    );
    // The keys of another kind, each refused by that kind's struct, at its own line.
    assert_eq!(
        err("[[gate]]\nkind = \"gpio\"\nname = \"a\"\nchip = \"/dev/gpiochip0\"\nline = 3\n\
             path = \"/x\"\nargv = [\"/bin/true\"]\n"),
        [
            "/etc/yurt-ota/config.toml: `gate[0].path`: unknown key for a \"gpio\" gate; it takes name, safety, applies_to, chip, line, open_when (line 6, column 1)",
            "/etc/yurt-ota/config.toml: `gate[0].argv`: unknown key for a \"gpio\" gate; it takes name, safety, applies_to, chip, line, open_when (line 7, column 1)",
        ]
    );
}

/// Every bad CAN gate key is refused with its key, and what to write instead.
#[test]
fn can_gate_errors_name_their_key() {
    let dbc = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/can/vehicle.dbc")
        .display()
        .to_string();
    let base = "[[gate]]\nname = \"g\"\nkind = \"can\"\n";
    let inline = "interface = \"can0\"\nstart_bit = 0\nlength = 8\nopen_when = \"< 1\"\n";
    let cases: &[(String, &str, &str)] = &[
        (
            "start_bit = 0\nlength = 8\nid = 1\nopen_when = \"< 1\"\n".into(),
            "`gate[0].interface`",
            "required",
        ),
        (format!("{inline}id = 1\npgn = 65265\n"), "`gate[0].pgn`", "not both"),
        (format!("{inline}pgn = 0xEA05\n"), "`gate[0].pgn`", "use 0xEA00"),
        (format!("{inline}id = 0x800\nextended = false\n"), "`gate[0].id`", "out of range"),
        (format!("{inline}id = 1\nsource = 3\n"), "`gate[0].source`", "only with `pgn`"),
        (format!("{inline}id = 1\nbyte_order = \"motorola\"\n"), "`gate[0].byte_order`", "\"big\""),
        (
            "interface = \"can0\"\nid = 1\nstart_bit = 60\nlength = 16\nopen_when = \"< 1\"\n".into(),
            "`gate[0].length`",
            "8-byte frame",
        ),
        (format!("{inline}id = 1\nfactor = \"x\"\n"), "`gate[0].factor`", "expected a number"),
        (format!("{inline}id = 1\nbitrate = 250000\n"), "`gate[0].bitrate`", "unknown key for a \"can\" gate"),
        (format!("{inline}id = 1\nopen_when2 = 1\n"), "`gate[0].open_when2`", "unknown key"),
        (
            format!("interface = \"can0\"\ndbc = {dbc:?}\nmessage = \"CCVS1\"\nsignal = \"ParkingBrakeSwitch\"\nopen_when = \"== Parked\"\n"),
            "`gate[0].open_when`",
            "not in the signal's value table (NotSet, Set, Error, NotAvailable)",
        ),
        (
            format!("interface = \"can0\"\ndbc = {dbc:?}\nmessage = \"CCVS9\"\nsignal = \"X\"\nopen_when = \"< 1\"\n"),
            "`gate[0].message`",
            "no message \"CCVS9\"",
        ),
        (
            format!("interface = \"can0\"\ndbc = {dbc:?}\nmessage = \"CCVS1\"\nsignal = \"ParkingBrakeSwitch\"\nstart_bit = 3\nopen_when = \"== Set\"\n"),
            "`gate[0].start_bit`",
            "not with `dbc`",
        ),
        (
            format!("interface = \"can0\"\ndbc = {dbc:?}\nsignal = \"X\"\nopen_when = \"< 1\"\n"),
            "`gate[0].message`",
            "required with `dbc`",
        ),
        (
            "interface = \"can0\"\ndbc = \"/nonexistent.dbc\"\nmessage = \"A\"\nsignal = \"B\"\nopen_when = \"< 1\"\n".into(),
            "`gate[0].dbc`",
            "/nonexistent.dbc",
        ),
    ];
    for (keys, key, says) in cases {
        let errs = parse(&format!("{base}{keys}")).unwrap_err();
        assert!(
            errs.iter().any(|e| e.contains(key) && e.contains(says)),
            "{keys}: want {key} saying {says:?}, got {errs:#?}"
        );
    }
}

#[test]
fn fleet_namespace_is_read_and_checked() {
    assert_eq!(parse("").unwrap().fleet.namespace, "yurt-ota");
    let s = parse("[fleet]\nnamespace = \"edge-ota\"\n").unwrap();
    assert_eq!(s.fleet.namespace, "edge-ota");
    let e = parse("[fleet]\nnamespace = \"Edge.OTA\"\n").unwrap_err();
    assert!(
        e.len() == 1 && e[0].contains("fleet.namespace") && e[0].contains("config.toml"),
        "{e:?}"
    );
    assert!(parse("[fleet]\nname = \"x\"\n").unwrap_err()[0].contains("fleet"));
}

/// check-config prints strings with TOML's escapes (the toml crate's serializer): quotes,
/// backslashes, newlines, control characters and unicode that Rust's `{:?}` writes as `\u{..}`
/// (a combining accent, ESC) read back to the same settings.
#[test]
fn printed_strings_with_quotes_backslashes_unicode_and_newlines_read_back() {
    let text = r#"
[api]
token_file = "/etc/yurt-ota/tök \"en\"\\x"

[state]
dir = "/var/lib/yurt-ota/e\u0301\ttab"

[[gate]]
name = "idle"
kind = "command"
argv = ["/bin/sh", "-c", "echo \"a\\b\"\nprintf '\u001B[0m' # ✓ 日本", "'single' \"\"\" '''"]

[[gate]]
name = "door"
kind = "file"
path = "/run/dö\"or\\\n"
open_when = "equals"
value = "open\r\n\u007F"
"#;
    let s = parse(text).unwrap();
    let GateKind::Command { argv, .. } = &s.gates[0].kind else {
        panic!("{:?}", s.gates[0])
    };
    assert!(argv[2].contains("\u{1b}[0m' # ✓ 日本") && argv[2].contains('\n'));
    let printed = s.to_toml();
    assert_eq!(parse(&printed).unwrap(), s, "{printed}");
}
