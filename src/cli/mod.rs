//! The command line (SPEC section 7): the daemon, `check-config`, `sim`, and the operator
//! subcommands, which are clients of the local API. Exit codes: 0 ok, 1 failure, 2 usage.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lexopt::Arg::{Long, Short, Value as Positional};
use lexopt::ValueExt;
use serde_json::Value;

use crate::config::{self, Listen, Settings};
use crate::names::escape_controls;
use crate::shutdown::Shutdown;

mod client;
mod lists;
mod status;

use client::{Answer, Client};
use lists::{list, pods};
use status::status;

pub const USAGE: &str = "\
yurt-ota: decides when OpenYurt OTA upgrades happen on this node

Usage:
  yurt-ota run [--config PATH] [--sim]     run the agent (--sim: on the built-in simulator)
  yurt-ota check-config [--config PATH]    validate and print the effective configuration
  yurt-ota replay --can-log LOG [--config PATH] [--until SECONDS] [--json]
                                           run the CAN gates over a `candump -l` log: when
                                           each opened and closed, when an upgrade could start
  yurt-ota sim [--listen ADDR] [--config PATH]
                                           serve a simulated YurtHub (default 127.0.0.1:10267)
  yurt-ota status [--json]                 the agent's view: upstream, pods needing upgrade
  yurt-ota pods [--needs-upgrade] [--json] the node's pods
  yurt-ota upgrade NS/POD [--when-idle] [--force] [--wait] [--timeout 5m] [--json]
                                           upgrade one pod now if the gates allow (--when-idle:
                                           queue it until they do; --force: skip holds and
                                           windows, never a safety gate; --wait: until its
                                           replacement is Ready)
  yurt-ota imagepull NS/POD [--json]       ask the node to pre-pull the pod's new images
  yurt-ota hold NAME --ttl 30m [--reason TEXT] [--json]
                                           hold off upgrades until released or expired
  yurt-ota release NAME                    release a hold
  yurt-ota holds [--json]                  the active holds
  yurt-ota events [--limit N] [--json]     the recent decisions, newest first
  yurt-ota reset-breaker                   resume automatic upgrades after the breaker tripped
  yurt-ota --version | help

Client options (status, pods, upgrade, imagepull, hold, release, holds, events, reset-breaker):
  --api URL          the agent: http://127.0.0.1:10290 or unix:/path (default: api.listen
                     from the config file)
  --config PATH      config file to read api.listen and api.token_file from
                     (default /etc/yurt-ota/config.toml)
  --token-file PATH  bearer token for the calls that change something

Exit codes: 0 ok, 1 operational failure, 2 usage error.
Logging: YURT_OTA_LOG=debug|info|warn (default info).";

/// Why a command failed, and so its exit code.
#[derive(Debug)]
pub enum Failure {
    /// The command line is wrong: exit 2.
    Usage(String),
    /// The command could not do its job: exit 1.
    Failed(String),
}

impl Failure {
    pub fn exit_code(&self) -> i32 {
        match self {
            Failure::Usage(_) => 2,
            Failure::Failed(_) => 1,
        }
    }
}

impl From<lexopt::Error> for Failure {
    fn from(e: lexopt::Error) -> Failure {
        Failure::Usage(e.to_string())
    }
}

enum Command {
    Run {
        config: Option<PathBuf>,
        sim: bool,
    },
    CheckConfig {
        config: Option<PathBuf>,
    },
    Replay {
        config: Option<PathBuf>,
        log: PathBuf,
        until: Option<f64>,
    },
    Sim {
        config: Option<PathBuf>,
        listen: Option<String>,
    },
    Status,
    Pods {
        needs_upgrade: bool,
    },
    Upgrade {
        pod: (String, String),
        wait: bool,
        timeout: Duration,
        when_idle: bool,
        force: bool,
    },
    Imagepull {
        pod: (String, String),
    },
    Hold {
        name: String,
        ttl: String,
        reason: String,
    },
    Release {
        name: String,
    },
    Holds,
    Events {
        limit: usize,
    },
    ResetBreaker,
    Version,
    Help,
}

#[derive(Default)]
struct ClientOpts {
    api: Option<String>,
    config: Option<PathBuf>,
    token_file: Option<PathBuf>,
    json: bool,
}

/// Parses the arguments and runs the command; returns the process exit code.
pub fn main(args: Vec<OsString>, stop: Arc<Shutdown>) -> i32 {
    let result = parse(args).and_then(|(cmd, opts)| execute(cmd, opts, stop));
    match result {
        Ok(()) => 0,
        Err(f) => {
            match &f {
                Failure::Usage(m) => eprintln!("yurt-ota: {m}\nRun 'yurt-ota help' for usage."),
                Failure::Failed(m) => eprintln!("yurt-ota: {m}"),
            }
            f.exit_code()
        }
    }
}

fn parse(args: Vec<OsString>) -> Result<(Command, ClientOpts), Failure> {
    let mut p = lexopt::Parser::from_args(args);
    let mut opts = ClientOpts::default();
    let sub = match p.next()? {
        Some(Long("version") | Short('V')) => return Ok((Command::Version, opts)),
        Some(Long("help") | Short('h')) => return Ok((Command::Help, opts)),
        Some(Positional(v)) => v.string()?,
        Some(other) => return Err(other.unexpected().into()),
        None => return Err(Failure::Usage("no command given".into())),
    };
    let mut positional: Vec<String> = Vec::new();
    let (mut sim, mut needs_upgrade, mut wait) = (false, false, false);
    let (mut when_idle, mut force) = (false, false);
    let (mut ttl, mut reason) = (None, String::new());
    let mut limit = 50;
    let mut listen = None;
    let (mut can_log, mut until) = (None, None);
    let mut timeout = Duration::from_secs(300);
    while let Some(arg) = p.next()? {
        match arg {
            Long("config") | Short('c') => opts.config = Some(p.value()?.into()),
            Long("sim") if sub == "run" => sim = true,
            Long("listen") if sub == "sim" => listen = Some(p.value()?.string()?),
            Long("needs-upgrade") if sub == "pods" => needs_upgrade = true,
            Long("wait") if sub == "upgrade" => wait = true,
            Long("when-idle") if sub == "upgrade" => when_idle = true,
            Long("force") if sub == "upgrade" => force = true,
            Long("ttl") if sub == "hold" => {
                let v = p.value()?.string()?;
                v.parse::<config::HumanDuration>()
                    .map_err(|e| Failure::Usage(format!("--ttl: {e}")))?;
                ttl = Some(v);
            }
            Long("reason") if sub == "hold" => reason = p.value()?.string()?,
            Long("limit") if sub == "events" => {
                let v = p.value()?.string()?;
                limit = v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    Failure::Usage(format!("--limit {v:?}: give a whole number above 0"))
                })?;
            }
            Long("timeout") if sub == "upgrade" => {
                let v = p.value()?.string()?;
                timeout = (v.parse().map(|config::HumanDuration(d)| d))
                    .map_err(|e| Failure::Usage(format!("--timeout: {e}")))?;
            }
            Long("can-log") if sub == "replay" => can_log = Some(PathBuf::from(p.value()?)),
            Long("until") if sub == "replay" => {
                let v = p.value()?.string()?;
                until = Some(v.parse::<f64>().ok().filter(|s| *s >= 0.0).ok_or_else(|| {
                    Failure::Usage(format!("--until {v:?}: give seconds from the log's start"))
                })?);
            }
            Long("api") => opts.api = Some(p.value()?.string()?),
            Long("token-file") => opts.token_file = Some(p.value()?.into()),
            Long("json") => opts.json = true,
            Long("help") | Short('h') => return Ok((Command::Help, opts)),
            Positional(v) => positional.push(v.string()?),
            other => return Err(other.unexpected().into()),
        }
    }
    let takes_pod = matches!(sub.as_str(), "upgrade" | "imagepull");
    let takes_name = matches!(sub.as_str(), "hold" | "release");
    let want = usize::from(takes_pod || takes_name);
    if positional.len() != want {
        return Err(Failure::Usage(match want {
            0 => format!(
                "'{sub}' takes no argument {:?}",
                positional.first().map(String::as_str).unwrap_or_default()
            ),
            _ if takes_name => format!("'{sub}' takes one hold NAME"),
            _ => format!("'{sub}' takes one NAMESPACE/POD"),
        }));
    }
    let pod = || parse_pod(&positional[0]);
    let cmd = match sub.as_str() {
        "run" => Command::Run {
            config: opts.config.clone(),
            sim,
        },
        "check-config" => Command::CheckConfig {
            config: opts.config.clone(),
        },
        "replay" => Command::Replay {
            config: opts.config.clone(),
            log: can_log.ok_or_else(|| {
                Failure::Usage("'replay' needs --can-log LOG (a `candump -l` file)".into())
            })?,
            until,
        },
        "sim" => Command::Sim {
            config: opts.config.clone(),
            listen,
        },
        "status" => Command::Status,
        "pods" => Command::Pods { needs_upgrade },
        "upgrade" => Command::Upgrade {
            pod: pod()?,
            wait,
            timeout,
            when_idle,
            force,
        },
        "imagepull" => Command::Imagepull { pod: pod()? },
        "hold" => Command::Hold {
            name: positional[0].clone(),
            ttl: ttl.ok_or_else(|| {
                Failure::Usage("'hold' needs --ttl: a hold always expires (e.g. --ttl 30m)".into())
            })?,
            reason,
        },
        "release" => Command::Release {
            name: positional[0].clone(),
        },
        "holds" => Command::Holds,
        "events" => Command::Events { limit },
        "reset-breaker" => Command::ResetBreaker,
        "help" => Command::Help,
        "version" => Command::Version,
        other => return Err(Failure::Usage(format!("unknown command {other:?}"))),
    };
    Ok((cmd, opts))
}

fn parse_pod(s: &str) -> Result<(String, String), Failure> {
    let (ns, pod) = s.split_once('/').ok_or_else(|| {
        Failure::Usage(format!(
            "{s:?}: give the pod as NAMESPACE/POD, e.g. kube-system/kube-proxy-x7k2p"
        ))
    })?;
    crate::names::check_label(ns).map_err(|e| Failure::Usage(format!("namespace {e}")))?;
    crate::names::check_subdomain(pod).map_err(|e| Failure::Usage(format!("pod name {e}")))?;
    Ok((ns.to_owned(), pod.to_owned()))
}

fn load_settings(path: Option<&Path>) -> Result<Settings, Failure> {
    let (path, must_exist) = match path {
        Some(p) => (p, true),
        None => (Path::new(config::DEFAULT_PATH), false),
    };
    Settings::load(path, must_exist)
        .map_err(|e| Failure::Failed(format!("invalid configuration:\n{e}")))
}

fn execute(cmd: Command, opts: ClientOpts, stop: Arc<Shutdown>) -> Result<(), Failure> {
    match cmd {
        Command::Version => {
            println!("yurt-ota {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Help => {
            println!("{USAGE}");
            Ok(())
        }
        Command::CheckConfig { config } => {
            let settings = load_settings(config.as_deref())?;
            print!("{}", settings.to_toml());
            if let Some(a) = &settings.upstream.apiserver {
                let a = crate::upstream::apiserver::resolve(a, settings.upstream.timeout)
                    .map_err(Failure::Failed)?;
                crate::upstream::apiserver::check(&a).map_err(Failure::Failed)?;
                println!("\n# the apiserver, as resolved (no secret is printed)");
                for (k, v) in a.describe() {
                    println!("# {k}: {v}");
                }
            }
            // What a GPIO gate needs from the system (the config itself is valid either way).
            for g in &settings.gates {
                if let config::GateKind::Gpio { chip, .. } = &g.kind {
                    if let Some(p) = crate::systemd::gpio_chip_problem(chip, "yurt-ota") {
                        eprintln!("warning: gate {}: {p}", g.name);
                    }
                }
                if let config::GateKind::Can(c) = &g.kind {
                    let sys = Path::new("/sys/class/net").join(&c.interface);
                    if !sys.exists() {
                        eprintln!(
                            "warning: gate {}: no network interface {} here (yet): the gate \
                             reads closed until it exists",
                            g.name, c.interface
                        );
                    }
                }
            }
            Ok(())
        }
        Command::Replay { config, log, until } => replay(config.as_deref(), &log, until, opts.json),
        Command::Run { config, sim } => {
            let mut settings = load_settings(config.as_deref())?;
            // A simulated node is new at every start (new uids), so its agent's state is too:
            // a temporary state.dir, removed at exit, unless the config names one. This also
            // keeps a try-out on a laptop out of /var/lib/yurt-ota, and works without root.
            let mut scratch = None;
            if sim {
                settings.upstream.kind = config::UpstreamKind::Sim;
                if settings.state.dir == Settings::default().state.dir {
                    let dir =
                        std::env::temp_dir().join(format!("yurt-ota-sim-{}", std::process::id()));
                    settings.state.dir = dir.clone();
                    scratch = Some(dir);
                }
            }
            let result = crate::daemon::run(settings, stop).map_err(Failure::Failed);
            if let Some(dir) = scratch {
                let _ = std::fs::remove_dir_all(dir);
            }
            result
        }
        Command::Sim { config, listen } => {
            let settings = load_settings(config.as_deref())?;
            let listen = listen.as_deref().unwrap_or("127.0.0.1:10267");
            let listen = listen
                .parse()
                .map(Listen::Tcp)
                .map_err(|_| Failure::Usage(format!("--listen {listen:?} is not an IP:port")))?;
            crate::sim::server::run(crate::sim::Node::new(settings.sim), &listen, &stop)
                .map_err(Failure::Failed)
        }
        Command::Status => status(&Client::new(&opts)?, opts.json),
        Command::Pods { needs_upgrade } => pods(&Client::new(&opts)?, needs_upgrade, opts.json),
        Command::Upgrade {
            pod,
            wait,
            timeout,
            when_idle,
            force,
        } => {
            let mut query = Vec::new();
            if when_idle {
                query.push("when=idle");
            }
            if force {
                query.push("force=true");
            }
            let query = if query.is_empty() {
                String::new()
            } else {
                format!("?{}", query.join("&"))
            };
            upgrade(&Client::new(&opts)?, &pod, &query, wait, timeout, opts.json)
        }
        Command::Imagepull { pod: (ns, name) } => {
            let client = Client::new(&opts)?;
            let a = client.call(
                "POST",
                &format!("/openyurt.io/v1/namespaces/{ns}/pods/{name}/imagepull"),
            )?;
            report("imagepull", &a, opts.json)
        }
        Command::Hold { name, ttl, reason } => {
            let body = serde_json::json!({"ttl": ttl, "reason": reason}).to_string();
            let a = Client::new(&opts)?.send("PUT", &format!("/v1/holds/{name}"), Some(&body))?;
            if !opts.json && a.status == 200 {
                let v = a.json()?;
                println!(
                    "hold {name} set until {}",
                    v["expires"].as_str().unwrap_or("?")
                );
                return Ok(());
            }
            report("hold", &a, opts.json)
        }
        Command::Release { name } => {
            let a = Client::new(&opts)?.send("DELETE", &format!("/v1/holds/{name}"), None)?;
            if a.status == 204 {
                println!("hold {name} released");
                return Ok(());
            }
            report("release", &a, opts.json)
        }
        Command::Holds => list(
            &Client::new(&opts)?,
            "/v1/holds",
            "holds",
            &[
                ("NAME", "name"),
                ("EXPIRES", "expires"),
                ("REASON", "reason"),
            ],
            opts.json,
        ),
        Command::Events { limit } => list(
            &Client::new(&opts)?,
            &format!("/v1/events?limit={limit}"),
            "events",
            &[
                ("AT", "at"),
                ("EVENT", "kind"),
                ("POD", "pod"),
                ("MESSAGE", "message"),
            ],
            opts.json,
        ),
        Command::ResetBreaker => {
            let a = Client::new(&opts)?.call("POST", "/v1/breaker/reset")?;
            if a.status == 200 && !opts.json {
                let v = a.json()?;
                match v["reason"].as_str() {
                    Some(r) => println!("breaker reset (it had tripped: {})", escape_controls(r)),
                    None => println!("the breaker was not tripped"),
                }
                return Ok(());
            }
            report("reset-breaker", &a, opts.json)
        }
    }
}

/// `yurt-ota replay`: the configuration's CAN gates over a recorded drive.
fn replay(
    config: Option<&Path>,
    log: &Path,
    until: Option<f64>,
    json: bool,
) -> Result<(), Failure> {
    use crate::gate::can::replay;
    let settings = load_settings(config)?;
    if !settings
        .gates
        .iter()
        .any(|g| matches!(g.kind, config::GateKind::Can(_)))
    {
        return Err(Failure::Failed(format!(
            "{}: no CAN gate (kind = \"can\") to replay",
            config.unwrap_or(Path::new(config::DEFAULT_PATH)).display()
        )));
    }
    let file =
        std::fs::File::open(log).map_err(|e| Failure::Failed(format!("{}: {e}", log.display())))?;
    let name = log.display().to_string();
    let records =
        replay::read_log(&name, std::io::BufReader::new(file)).map_err(Failure::Failed)?;
    let r = replay::replay(&settings, &records, until);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&r).map_err(|e| Failure::Failed(e.to_string()))?
        );
    } else {
        print!("{}", r.render(&name));
    }
    Ok(())
}

fn report(call: &str, a: &Answer, json: bool) -> Result<(), Failure> {
    let ok = (200..300).contains(&a.status);
    if json {
        let body = a.json().unwrap_or_else(|_| Value::String(a.text()));
        println!("{}", serde_json::json!({"status": a.status, "body": body}));
    } else if ok {
        println!("{}", escape_controls(&a.text()));
    }
    if ok {
        Ok(())
    } else {
        Err(Failure::Failed(format!(
            "{call} refused ({}): {}",
            a.status,
            a.message()
        )))
    }
}

fn upgrade(
    client: &Client,
    (ns, name): &(String, String),
    query: &str,
    wait: bool,
    timeout: Duration,
    json: bool,
) -> Result<(), Failure> {
    // Learn the pod's uid and owner before it is deleted, to recognise its replacement.
    let before = if wait {
        let snap = client.pods()?;
        let p = snap
            .pods
            .iter()
            .find(|p| p.metadata.namespace == *ns && p.metadata.name == *name)
            .ok_or_else(|| {
                Failure::Failed(format!(
                    "{ns}/{name} is not in the agent's pod list; check `yurt-ota pods`"
                ))
            })?;
        let owner = p.owner().map(|o| o.uid.clone()).unwrap_or_default();
        Some((p.metadata.uid.clone(), owner))
    } else {
        None
    };
    let a = client.call(
        "POST",
        &format!("/openyurt.io/v1/namespaces/{ns}/pods/{name}/upgrade{query}"),
    )?;
    if a.status == 202 && !json {
        let v = a.json()?;
        let blocked: Vec<&str> = v["blocked_by"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        println!(
            "{ns}/{name} queued: upgraded when {} allow",
            blocked.join(", ")
        );
    } else {
        report("upgrade", &a, json)?;
    }
    let Some((uid, owner)) = before else {
        return Ok(());
    };
    let deadline = Instant::now() + timeout;
    eprintln!(
        "waiting up to {} for the replacement of {ns}/{name} to be Ready…",
        config::HumanDuration(timeout)
    );
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        let snap = client.pods()?;
        let old = crate::pod::Upgraded {
            uid: &uid,
            owner_uid: &owner,
            name,
        };
        if let Some(new) = crate::pod::replacement(&snap.pods, old) {
            eprintln!("upgraded: {} is Ready", new.key());
            return Ok(());
        }
    }
    Err(Failure::Failed(format!(
        "{ns}/{name}: no Ready replacement after {}",
        config::HumanDuration(timeout)
    )))
}

#[cfg(test)]
mod tests {
    use super::status::table;
    use super::*;

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn usage_errors_exit_2() {
        for bad in [
            &[][..],
            &["frobnicate"],
            &["upgrade"],
            &["upgrade", "no-slash"],
            &["upgrade", "Bad/x"],
            &["pods", "--wait"],
            &["upgrade", "a/b", "--timeout", "soon"],
            &["status", "extra"],
        ] {
            let err = parse(args(bad))
                .err()
                .unwrap_or_else(|| panic!("{bad:?} parsed"));
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn commands_parse() {
        let (cmd, opts) = parse(args(&[
            "upgrade",
            "kube-system/kube-proxy-abc",
            "--wait",
            "--timeout",
            "2m",
            "--api",
            "unix:/run/a.sock",
        ]))
        .unwrap();
        assert!(
            matches!(cmd, Command::Upgrade { wait: true, timeout, .. } if timeout == Duration::from_secs(120))
        );
        assert_eq!(opts.api.as_deref(), Some("unix:/run/a.sock"));
        assert!(matches!(
            parse(args(&["run", "--sim"])).unwrap().0,
            Command::Run { sim: true, .. }
        ));
        assert!(matches!(
            parse(args(&["--version"])).unwrap().0,
            Command::Version
        ));
    }

    #[test]
    fn tables_align() {
        let t = table(&["A", "LONGER"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "A    LONGER\nxyz  1\n");
    }

    #[test]
    fn tables_measure_wide_characters_in_columns_and_escape_controls() {
        // "停車" is two characters, four columns wide on a terminal.
        let t = table(
            &["GATE", "STATE"],
            &[
                vec!["停車".into(), "open".into()],
                vec!["a\nb".into(), "closed".into()],
            ],
        );
        assert_eq!(t, "GATE  STATE\n停車  open\na\\nb  closed\n");
    }
}
