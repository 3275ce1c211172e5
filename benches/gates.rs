//! `cargo bench --bench gates [-- [IDLE_SECONDS] [idle|latency]]`: what the gates cost, against the real agent
//! binary and a loopback upstream serving 110 real-shaped pods.
//!
//! 1. Latency from a file gate opening to the upstream receiving the upgrade call, over 20
//!    openings (`stable_for` 1 s; the gate tells by inotify, the loop sleeps until then).
//!    Target: at most `stable_for` plus 20 ms. Then what the intent written before each call
//!    costs, the record (`intent`) against a rewrite of `state.json`, interleaved on this disk.
//! 2. CPU of the idle daemon with three gates (a closed file gate, a sysfs GPIO line, a
//!    window), 110 pods of which 27 need upgrade, and a 5 s poll: utime + stime from
//!    `/proc/PID/stat` over 60 s (or IDLE_SECONDS), and wake-ups (context switches of all
//!    threads). Targets: at most 0.02% of one core; the wake-ups are the 5 s poll's (0.2/s).

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;

const PODS: usize = 110;
const OPENINGS: usize = 20;
const STABLE: Duration = Duration::from_secs(1);

fn main() {
    let idle_secs: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(60);
    // `-- idle` or `-- latency`: only that part.
    let only: Option<String> = std::env::args()
        .skip(1)
        .find(|a| a == "idle" || a == "latency");
    if only.as_deref() != Some("idle") {
        latency();
        intent();
    }
    if only.as_deref() != Some("latency") {
        idle(idle_secs);
    }
}

/// The upstream's pods and the upgrade calls it received.
struct Node {
    pods: Vec<Value>,
    calls: Vec<(String, Instant)>,
    /// The pod list as served, rendered again only after a change (YurtHub serves its cache).
    list: Option<Arc<Vec<u8>>>,
}

/// 110 pods cloned from the recorded fixtures under new names and uids; each DaemonSet pod gets
/// a DaemonSet of its own (as on a real node) and `PodNeedUpgrade=True`.
fn pods() -> Vec<Value> {
    let mut pods = common::fixture_pods(PODS);
    for (i, p) in pods.iter_mut().enumerate() {
        if p["metadata"]["ownerReferences"][0]["kind"] == "DaemonSet" {
            p["metadata"]["ownerReferences"][0]["uid"] =
                format!("00000000-0000-4000-9000-{i:012}").into();
            p["status"]["conditions"].as_array_mut().unwrap().push(json!({
                "type": "PodNeedUpgrade", "status": "True",
                "lastTransitionTime": "2026-11-25T10:00:00Z", "message": "controllerrevision: 7f9c8d6b5"
            }));
        }
    }
    pods
}

/// Serves the pods; an accepted upgrade replaces the pod at once with a Ready, current one. Two
/// workers, so that an upgrade call is taken (and its time noted) while the other one sends a
/// pod list to the poll.
fn serve(node: Arc<Mutex<Node>>) -> u16 {
    let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
    let port = server.server_addr().to_ip().unwrap().port();
    for _ in 0..2 {
        let (server, node) = (server.clone(), node.clone());
        thread::spawn(move || {
            for req in server.incoming_requests() {
                answer(req, &node);
            }
        });
    }
    port
}

fn answer(mut req: tiny_http::Request, node: &Mutex<Node>) {
    let at = Instant::now();
    let mut sink = Vec::new();
    let _ = std::io::Read::read_to_end(req.as_reader(), &mut sink);
    let url = req.url().to_owned();
    let mut guard = node.lock().unwrap();
    let n = &mut *guard;
    let (status, body) = if url == "/pods" {
        let pods = &n.pods;
        let list = n.list.get_or_insert_with(|| {
            let list =
                json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": pods});
            Arc::new(serde_json::to_vec(&list).unwrap())
        });
        (200, list.to_vec())
    } else if url.ends_with("/upgrade") {
        let name = url.split('/').nth(6).unwrap_or_default().to_owned();
        n.calls.push((name.clone(), at));
        n.list = None;
        if let Some(p) = n
            .pods
            .iter_mut()
            .find(|p| p["metadata"]["name"] == name.as_str())
        {
            p["metadata"]["name"] = format!("{name}-new").into();
            p["metadata"]["uid"] = format!("{}-new", p["metadata"]["uid"].as_str().unwrap()).into();
            p["status"]["conditions"]
                .as_array_mut()
                .unwrap()
                .retain(|c| c["type"] != "PodNeedUpgrade");
        }
        (
            200,
            format!("Start updating pod kube-system/{name}").into_bytes(),
        )
    } else {
        (404, b"404 page not found\n".to_vec())
    };
    drop(guard);
    let _ = req.respond(tiny_http::Response::from_data(body).with_status_code(status));
}

fn status(port: u16) -> Option<Value> {
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .proxy(None)
        .build()
        .new_agent();
    let mut r = agent
        .get(format!("http://127.0.0.1:{port}/v1/status"))
        .call()
        .ok()?;
    serde_json::from_slice(&r.body_mut().read_to_vec().ok()?).ok()
}

fn wait(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

fn latency() {
    let node = Arc::new(Mutex::new(Node {
        pods: pods(),
        calls: Vec::new(),
        list: None,
    }));
    let upstream = serve(node.clone());
    let dir = tempfile::tempdir().unwrap();
    let signal = dir.path().join("stopped");
    let (mut agent, port) = common::start_agent(
        dir.path(),
        &format!(
            "[upstream]\nurl = \"http://127.0.0.1:{upstream}\"\npoll_interval = \"500ms\"\n\
             [policy]\nmode = \"auto\"\nstable_for = \"{}ms\"\n\
             [[gate]]\nname = \"vehicle-stopped\"\nkind = \"file\"\npath = \"{}\"\nsafety = true\n",
            STABLE.as_millis(),
            signal.display()
        ),
    );
    let mut lat = Vec::new();
    for i in 0..OPENINGS {
        // Closed, seen closed, and the previous upgrade finished.
        let _ = std::fs::remove_file(&signal);
        wait("the gate closed and nothing in flight", || {
            status(port).is_some_and(|s| {
                s["gates"][0]["open"] == false
                    && s["in_flight"].as_array().is_some_and(|a| a.is_empty())
                    && s["snapshot"].is_object()
            })
        });
        // Open at a different phase of the 500 ms poll each time.
        thread::sleep(Duration::from_millis(300 + (i as u64 * 37) % 500));
        let opened = Instant::now();
        std::fs::write(&signal, "1").unwrap();
        wait("the upgrade call", || node.lock().unwrap().calls.len() > i);
        let at = node.lock().unwrap().calls[i].1;
        lat.push(at.duration_since(opened));
    }
    let _ = agent.kill();
    let _ = agent.wait();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    if std::env::var_os("YURT_OTA_BENCH_LOG").is_some() {
        let each: Vec<String> = lat.iter().map(|d| format!("{:.1}", ms(*d))).collect();
        println!("each opening, in order (ms): {}", each.join(" "));
    }
    lat.sort();
    println!(
        "gate open -> upgrade call received: {OPENINGS} openings, stable_for {} ms: min {:.1} ms, p50 {:.1} ms, max {:.1} ms; max over stable_for {:.1} ms (target <= 20 ms)",
        STABLE.as_millis(),
        ms(lat[0]),
        ms(lat[OPENINGS / 2]),
        ms(lat[OPENINGS - 1]),
        ms(lat[OPENINGS - 1]) - ms(STABLE)
    );
}

/// The intent before each upgrade call, made durable both ways in turn, 100 times each, in a
/// state directory next to the benchmark's: the record (`Store::intend`: one block written in
/// place, `fdatasync`) and a rewrite of `state.json` (`Store::commit`: temp file, fsync,
/// rename, fsync of the directory), as every intent was written before. Between two rounds the
/// state file takes the intent in and drops it (not timed), as after a call.
fn intent() {
    use yurt_ota::state::{InFlight, Store};
    const ROUNDS: usize = 100;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path());
    let entry = |i: usize| InFlight {
        namespace: "kube-system".into(),
        name: format!("kube-proxy-{i:05}"),
        uid: format!("00000000-0000-4000-8000-{i:012}"),
        owner_uid: "00000000-0000-4000-9000-000000000000".into(),
        started_ms: 1_764_201_600_000,
        accepted: false,
        revision: None,
        uncertain: false,
    };
    let (mut record, mut rewrite) = (Vec::new(), Vec::new());
    for i in 0..ROUNDS {
        let t = Instant::now();
        assert_eq!(store.intend(entry(i)), Ok(true));
        record.push(t.elapsed());
        store.update(|s| s.in_flight.clear());
        let t = Instant::now();
        store.commit(|s| s.in_flight.push(entry(i))).unwrap();
        rewrite.push(t.elapsed());
        store.update(|s| s.in_flight.clear());
    }
    for (what, mut d) in [
        ("intent record (pwrite, fdatasync)", record),
        (
            "state.json rewrite (temp, fsync, rename, fsync dir)",
            rewrite,
        ),
    ] {
        d.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "intent made durable, {what}, {ROUNDS} times: p50 {:.2} ms, p90 {:.2} ms, max {:.2} ms",
            ms(d[ROUNDS / 2]),
            ms(d[ROUNDS * 9 / 10]),
            ms(d[ROUNDS - 1])
        );
    }
}

fn idle(secs: u64) {
    let node = Arc::new(Mutex::new(Node {
        pods: pods(),
        calls: Vec::new(),
        list: None,
    }));
    let outdated = node
        .lock()
        .unwrap()
        .pods
        .iter()
        .filter(|p| p["metadata"]["ownerReferences"][0]["kind"] == "DaemonSet")
        .count();
    let upstream = serve(node.clone());
    let dir = tempfile::tempdir().unwrap();
    let gpio = dir.path().join("gpio");
    std::fs::create_dir_all(gpio.join("gpio17")).unwrap();
    std::fs::write(gpio.join("gpio17/value"), "1\n").unwrap();
    let (mut agent, port) = common::start_agent(
        dir.path(),
        &format!(
            "[upstream]\nurl = \"http://127.0.0.1:{upstream}\"\npoll_interval = \"5s\"\n\
             [policy]\nmode = \"auto\"\n\
             [[gate]]\nname = \"vehicle-stopped\"\nkind = \"file\"\npath = \"{}\"\nsafety = true\n\
             [[gate]]\nname = \"park-brake\"\nkind = \"gpio-sysfs\"\nline = 17\nsysfs_root = \"{}\"\n\
             [[gate]]\nname = \"night\"\nkind = \"window\"\nwindows = [\"Mon-Fri 01:00-05:00\", \"Sat-Sun 00:00-24:00\"]\ntimezone = \"Europe/Berlin\"\n",
            dir.path().join("stopped").display(),
            gpio.display()
        ),
    );
    wait("the first snapshot", || {
        status(port).is_some_and(|s| s["snapshot"].is_object())
    });
    thread::sleep(Duration::from_secs(2));
    let pid = agent.id();
    let ticks = || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        // After the command name in parentheses: field 14 utime, 15 stime (1-based).
        let rest = stat.rsplit_once(')').unwrap().1;
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        f[11] + f[12]
    };
    let hz = String::from_utf8(
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .parse::<f64>()
    .unwrap();
    // Context switches per thread name, summed: which thread wakes.
    let per_thread = || -> std::collections::BTreeMap<String, u64> {
        let mut m = std::collections::BTreeMap::new();
        for t in std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .flatten()
        {
            let Ok(status) = std::fs::read_to_string(t.path().join("status")) else {
                continue;
            };
            let name = status.lines().next().unwrap_or_default();
            let n: u64 = status
                .lines()
                .filter(|l| l.contains("ctxt_switches"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum();
            *m.entry(name.trim_start_matches("Name:").trim().to_owned())
                .or_default() += n;
        }
        m
    };
    let switches = || -> u64 { per_thread().values().sum() };
    let (t0, s0, p0) = (ticks(), switches(), per_thread());
    let started = Instant::now();
    thread::sleep(Duration::from_secs(secs));
    let used = (ticks() - t0) as f64 / hz;
    let woke = switches() - s0;
    let by_thread: Vec<String> = per_thread()
        .iter()
        .map(|(k, v)| format!("{k} {}", v - p0.get(k).copied().unwrap_or(0)))
        .collect();
    let wall = started.elapsed().as_secs_f64();
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS"))
        .unwrap_or_default()
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count();
    let calls = node.lock().unwrap().calls.len();
    let _ = agent.kill();
    let _ = agent.wait();
    assert_eq!(calls, 0, "the file gate is closed: no upgrade may happen");
    println!(
        "idle, 3 gates (file closed, gpio-sysfs, window), {PODS} pods ({outdated} need upgrade), 5 s poll, {secs} s: {:.2} s CPU = {:.4}% of one core (target <= 0.02%); {woke} context switches = {:.3}/s ({}); {threads} threads, VmRSS {rss} kB",
        used,
        used / wall * 100.0,
        woke as f64 / wall,
        by_thread.join(", ")
    );
}
