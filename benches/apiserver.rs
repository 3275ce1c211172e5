//! apiserver mode, idle: the requests the agent sends to the apiserver per hour, and its RSS
//! with 110 pods on the node. The release agent against the TLS stand-in on loopback.
//!
//!   cargo bench --bench apiserver                 # 120 s idle window
//!   YURT_OTA_BENCH_IDLE=330 cargo bench --bench apiserver   # past one watch renewal (300 s)
//!   YURT_OTA_BIN=target/x86_64-unknown-linux-musl/release/yurt-ota cargo bench --bench apiserver
//!                                                 # RSS of another build (the static musl one)

#[allow(dead_code)] // fixture_pods: the stand-in makes its own pods
mod common;

use std::time::{Duration, Instant};

use serde_json::Value;
use yurt_ota_apisim::apiserver::server::{self, Config};
use yurt_ota_apisim::apiserver::Options;

fn get(url: &str) -> Value {
    let mut r = ureq::get(url).call().unwrap();
    serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap()
}

fn requests(control: &str) -> (u64, Value) {
    let d = get(&format!("{control}/sim"));
    let total = d["requests"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    (total, d["requests"].clone())
}

fn rss_kib(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s.lines().find(|l| l.starts_with(key)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` lists benches; nothing to list.
    }
    let idle = std::env::var("YURT_OTA_BENCH_IDLE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120u64);
    let dir = tempfile::tempdir().unwrap();
    let h = server::start(Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        control: "127.0.0.1:0".parse().unwrap(),
        dir: dir.path().join("apisim"),
        token: None,
        sans: Vec::new(),
        bookmark_interval: Duration::from_secs(60),
        rbac: None,
        rsa_client: false,
        options: Options {
            nodes: vec!["edge-node-1".into()],
            filler: 99,
            ..Options::default()
        },
    })
    .unwrap();
    let (mut agent, port) = common::start_agent(
        dir.path(),
        &format!(
            "[upstream]\nkind = \"apiserver\"\nkubeconfig = \"{}\"\nnode_name = \"edge-node-1\"\ndetect = \"revision\"\npoll_interval = \"5s\"\n",
            h.files.kubeconfig.display()
        ),
    );
    let base = format!("http://127.0.0.1:{port}");
    let control = h.control_url();
    let start = Instant::now();
    let pods = loop {
        if let Ok(mut r) = ureq::get(format!("{base}/pods")).call() {
            let v: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
            let n = v["items"].as_array().map_or(0, Vec::len);
            let judged = v["items"].as_array().unwrap().iter().any(|p| {
                p["status"]["conditions"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["type"] == "PodNeedUpgrade"))
            });
            if n >= 110 && judged {
                break n;
            }
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no pod list");
        std::thread::sleep(Duration::from_millis(100));
    };
    println!(
        "pods on the node: {pods} (first full list with revisions after {:?})",
        start.elapsed()
    );
    // Settle, then count an idle window.
    std::thread::sleep(Duration::from_secs(5));
    let (r0, _) = requests(&control);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(idle));
    let (r1, by_kind) = requests(&control);
    let secs = t0.elapsed().as_secs_f64();
    let status = get(&format!("{base}/v1/status"));
    let w = &status["upstream"]["watch"];
    println!("startup requests (list, DaemonSets, revisions, watches): {r0}");
    println!(
        "idle: {} requests in {secs:.0} s = {:.0} per hour (watch renewals every 300 s; reconnects {}, relists {})",
        r1 - r0,
        (r1 - r0) as f64 * 3600.0 / secs,
        w["reconnects"],
        w["relists"]
    );
    println!("requests by kind since start: {by_kind}");
    let pid = agent.id();
    for _ in 0..20 {
        ureq::get(format!("{base}/pods"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_vec()
            .unwrap();
        ureq::get(format!("{base}/v1/status"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_vec()
            .unwrap();
    }
    println!(
        "agent RSS with {pods} pods: {} KiB now, {} KiB peak (VmHWM)",
        rss_kib(pid, "VmRSS:"),
        rss_kib(pid, "VmHWM:")
    );
    let _ = agent.kill();
    let _ = agent.wait();
}
