//! `yurt-ota-apisim`: the kube-apiserver stand-in (SPEC 2b), a test-support binary kept out of
//! the device binary. Writes a CA, a token, a client certificate and kubeconfigs to `--dir`,
//! serves HTTPS on `--listen`, and the `/sim/...` controls on `--control` (plain HTTP).
#![forbid(unsafe_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use yurt_ota::shutdown::Shutdown;
use yurt_ota_apisim::apiserver::server::{self, Config};
use yurt_ota_apisim::apiserver::Options;

const USAGE: &str = "\
usage: yurt-ota-apisim --dir DIR [--listen ADDR] [--control ADDR] [--nodes N]
                       [--node-prefix NAME] [--filler N] [--openyurt] [--token TOKEN] [--san HOST]...
                       [--grace MS] [--recreate MS] [--ready MS] [--observe MS] [--pull MS]
                       [--bookmark-every MS] [--history N] [--rbac FILE] [--rsa-client]

A kube-apiserver stand-in for yurt-ota's apiserver mode, with no cluster.
  --dir DIR        write ca.crt, token, client.crt/.key, kubeconfig, kubeconfig-token-file,
                   kubeconfig-cert, kubeconfig-admin, admin-token, server and control (the
                   URLs) here. The token is the ServiceAccount yurt-ota/yurt-ota's, the client
                   certificate is in the group yurt-ota:nodes; the admin token is
                   system:masters'
  --rsa-client     also an RSA client certificate in the same group, its key in PKCS#1 as
                   kubeadm writes them: client-rsa.crt, client-rsa.key, kubeconfig-rsa
  --rbac FILE      the RBAC manifest enforced (default: the shipped
                   packaging/kubernetes/rbac.yaml); a request it does not grant is 403
  --listen ADDR    HTTPS address (default 127.0.0.1:6443)
  --control ADDR   plain-HTTP control address (default 127.0.0.1:0; see DIR/control)
  --san HOST       also a name or address in the server certificate (repeatable); the first
                   is the kubeconfig's server host (for agents on other machines or VMs)
  --nodes N        nodes edge-node-1..N (default 1), one pod per DaemonSet each
  --openyurt       also play OpenYurt's controller (PodNeedUpgrade, image pre-pull)
Controls (POST): /sim/rollout/NS/DS[?broken=1|?flaky=1] (pods never Ready, or Ready then
  crashing), /sim/rollout/NS/DS/undo, /sim/annotate/NS/DS?key=K&value=V,
  /sim/min-ready/NS/DS?seconds=N, /sim/drop-watches, /sim/fail?count=N&code=C,
  /sim/reset-after-delete?count=N (DELETE carried out, answer lost), /sim/down, /sim/up,
  /sim/compact, /sim/rotate-token; GET /sim shows the state, request counts and each
  DaemonSet's peakUnavailable, GET /sim/history?since=N every pod DELETE, DaemonSet pod Ready
  or crash, Lease write and Event created, with its time.
";

fn main() {
    let filter = std::env::var("YURT_OTA_LOG").unwrap_or_else(|_| "info".to_owned());
    env_logger::Builder::new()
        .parse_filters(&filter)
        .format(|buf, record| writeln!(buf, "{}: {}", record.level(), record.args()))
        .init();
    match run() {
        Ok(()) => {}
        Err(e) => {
            eprintln!("yurt-ota-apisim: {e}");
            std::process::exit(2);
        }
    }
}

fn run() -> Result<(), String> {
    use lexopt::prelude::*;
    let mut dir: Option<PathBuf> = None;
    let mut cfg = Config {
        listen: "127.0.0.1:6443".parse().expect("address"),
        control: "127.0.0.1:0".parse().expect("address"),
        dir: PathBuf::new(),
        token: None,
        sans: Vec::new(),
        bookmark_interval: Duration::from_secs(60),
        rbac: None,
        rsa_client: false,
        options: Options::default(),
    };
    let (mut nodes, mut prefix) = (1usize, "edge-node".to_owned());
    let mut p = lexopt::Parser::from_env();
    let e = |e: lexopt::Error| e.to_string();
    let ms = |p: &mut lexopt::Parser| -> Result<Duration, String> {
        Ok(Duration::from_millis(
            p.value().map_err(e)?.parse().map_err(e)?,
        ))
    };
    while let Some(arg) = p.next().map_err(e)? {
        match arg {
            Long("dir") => dir = Some(p.value().map_err(e)?.into()),
            Long("listen") => {
                cfg.listen = p.value().map_err(e)?.parse::<SocketAddr>().map_err(e)?
            }
            Long("control") => {
                cfg.control = p.value().map_err(e)?.parse::<SocketAddr>().map_err(e)?
            }
            Long("nodes") => nodes = p.value().map_err(e)?.parse().map_err(e)?,
            Long("node-prefix") => prefix = p.value().map_err(e)?.string().map_err(e)?,
            Long("filler") => cfg.options.filler = p.value().map_err(e)?.parse().map_err(e)?,
            Long("history") => cfg.options.history = p.value().map_err(e)?.parse().map_err(e)?,
            Long("openyurt") => cfg.options.openyurt = true,
            Long("rsa-client") => cfg.rsa_client = true,
            Long("san") => cfg.sans.push(p.value().map_err(e)?.string().map_err(e)?),
            Long("token") => cfg.token = Some(p.value().map_err(e)?.string().map_err(e)?),
            Long("grace") => cfg.options.grace = ms(&mut p)?,
            Long("recreate") => cfg.options.recreate_delay = ms(&mut p)?,
            Long("ready") => cfg.options.ready_delay = ms(&mut p)?,
            Long("observe") => cfg.options.observe_delay = ms(&mut p)?,
            Long("pull") => cfg.options.pull_delay = ms(&mut p)?,
            Long("bookmark-every") => cfg.bookmark_interval = ms(&mut p)?,
            Long("rbac") => {
                let path = PathBuf::from(p.value().map_err(e)?);
                cfg.rbac = Some(
                    std::fs::read_to_string(&path)
                        .map_err(|e| format!("--rbac {}: {e}", path.display()))?,
                );
            }
            Short('h') | Long("help") => {
                print!("{USAGE}");
                return Ok(());
            }
            _ => return Err(format!("{}\n{USAGE}", arg.unexpected())),
        }
    }
    cfg.dir = dir.ok_or_else(|| format!("--dir is required\n{USAGE}"))?;
    if nodes == 0 {
        return Err("--nodes must be at least 1".into());
    }
    cfg.options.nodes = (1..=nodes).map(|i| format!("{prefix}-{i}")).collect();
    let stop = Shutdown::new();
    stop.on_signals()
        .map_err(|e| format!("cannot handle SIGTERM/SIGINT: {e}"))?;
    let handle = server::start(cfg)?;
    log::info!(
        "kube-apiserver stand-in on {} (nodes {}); controls on {}; kubeconfig {}",
        handle.url(),
        handle.cluster().options().nodes.join(", "),
        handle.control_url(),
        handle.files.kubeconfig.display()
    );
    handle.wait(&stop);
    Ok(())
}
