//! `cargo bench --bench api`: latency and throughput of `GET /pods` with 110 real-shaped pods,
//! against the real agent binary and, in the same run, a bare tiny_http server serving the same
//! bytes; then the agent's own memory (`RssAnon`) after the first poll, 10,000 and 100,000
//! requests. It exits non-zero when the memory target is broken (docs/performance.md, "Memory
//! of the agent"), so that CI, which runs it, fails.
//!
//! Clients are 4 threads, each with one keep-alive connection and a minimal HTTP/1.1 reader, so
//! that the client costs as little as possible and both servers see the same load.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;

const PODS: usize = 110;
const CLIENTS: usize = 4;
const REQUESTS: usize = 10_000;
const WARMUP: usize = 400;
/// Target: `RssAnon` after 100,000 requests, in KiB (2 MiB).
const ANON_MAX_KIB: u64 = 2048;
/// Target: `RssAnon` flat from 10,000 to 100,000 requests, within this many KiB: the stack of
/// a fifth connection thread that a reconnecting client started (12 KiB) and one more page.
const ANON_GROWTH_KIB: u64 = 16;

fn main() {
    let list = pod_list();
    let upstream = serve(list.clone(), 1, false);
    let dir = tempfile::tempdir().unwrap();
    let (mut agent, api_port) = common::start_agent(
        dir.path(),
        &format!("[upstream]\nurl = \"http://127.0.0.1:{upstream}\"\n"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        if let Ok(b) = common::fetch(api_port, "/pods") {
            break b;
        }
        assert!(Instant::now() < deadline, "the agent did not serve /pods");
        thread::sleep(Duration::from_millis(50));
    };
    let served: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(served["items"].as_array().unwrap().len(), PODS);
    // The poll thread, the decision loop, the API's accept and refusal threads, …: the count
    // to come back to after each load, with at most one connection thread per client: the
    // agent keeps up to 4 of them waiting for the next connection, and ends the others.
    let threads = common::thread_count(agent.id());
    let rss_idle = common::settled_rss_kib(agent.id(), threads);
    let threads = threads + CLIENTS;
    common::keep_smaps(agent.id(), "first-poll");
    let rss_idle_parts = parts(agent.id());

    let bare = serve(body.clone(), 4, false);
    let bare_nodelay = serve(body.clone(), 4, true);
    let a = load(api_port, body.len());
    let b = load(bare_nodelay, body.len());
    let c = load(bare, body.len());
    let rss = common::settled_rss_kib(agent.id(), threads);
    common::keep_smaps(agent.id(), "10k");
    let rss_parts = parts(agent.id());
    // Memory stays flat: 90,000 more requests, the same 4 clients.
    for _ in 0..9 {
        load(api_port, body.len());
    }
    let rss_100k = common::settled_rss_kib(agent.id(), threads);
    common::keep_smaps(agent.id(), "100k");
    let rss_100k_parts = parts(agent.id());
    // YURT_OTA_BENCH_MORE=N: N more rounds of 10,000, to tell a high-water mark reached once
    // from growth that goes on.
    let more: usize = std::env::var("YURT_OTA_BENCH_MORE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if more > 0 {
        for _ in 0..more {
            load(api_port, body.len());
        }
        let rss_more = common::settled_rss_kib(agent.id(), threads);
        common::keep_smaps(agent.id(), "more");
        let (anon, file) = parts(agent.id());
        println!(
            "after {} more requests: RssAnon {anon} KiB (VmRSS {rss_more}, RssFile {file} KiB)",
            more * REQUESTS
        );
    }
    let _ = agent.kill();
    let _ = agent.wait();
    let (anon_10k, anon_100k) = (rss_parts.0, rss_100k_parts.0);

    println!("GET /pods: {PODS} pods, {} bytes upstream, {} bytes served; {CLIENTS} clients x {} requests each", list.len(), body.len(), REQUESTS / CLIENTS);
    println!("| server | p50 | p99 | max | throughput |");
    println!("|---|---|---|---|---|");
    for (name, r) in [
        ("yurt-ota", &a),
        ("bare tiny_http, TCP_NODELAY listener", &b),
        ("bare tiny_http, defaults", &c),
    ] {
        println!(
            "| {name} | {:.0} µs | {:.0} µs | {:.0} µs | {:.0} req/s |",
            r.p50, r.p99, r.max, r.rps
        );
    }
    println!(
        "throughput ratio yurt-ota / bare (same socket options): {:.2} (target >= 0.80); / bare with defaults: {:.2}; yurt-ota p50 {:.0} µs (target < 1000)",
        a.rps / b.rps,
        a.rps / c.rps,
        a.p50
    );
    println!(
        "agent RssAnon ({}, GLIBC_TUNABLES={:?}): {} KiB after the first poll, {anon_10k} KiB after {REQUESTS} requests, {anon_100k} KiB after {} (targets: <= {ANON_MAX_KIB} KiB, at most +{ANON_GROWTH_KIB} KiB from 10,000 on)",
        std::env::var("YURT_OTA_BIN").unwrap_or("this build".into()),
        common::glibc_tunables(),
        rss_idle_parts.0,
        REQUESTS * 10
    );
    println!(
        "  for reference, VmRSS {rss_idle} / {rss} / {rss_100k} KiB, of which file pages (RssFile: the binary, shared libraries) {} / {} / {} KiB",
        rss_idle_parts.1, rss_parts.1, rss_100k_parts.1
    );
    let mut broken = Vec::new();
    if anon_100k > ANON_MAX_KIB {
        broken.push(format!(
            "RssAnon after 100,000 requests is {anon_100k} KiB, over {ANON_MAX_KIB} KiB"
        ));
    }
    if anon_100k > anon_10k + ANON_GROWTH_KIB {
        broken.push(format!(
            "RssAnon grew by {} KiB from 10,000 to 100,000 requests, more than {ANON_GROWTH_KIB} KiB",
            anon_100k - anon_10k
        ));
    }
    if !broken.is_empty() {
        for b in &broken {
            eprintln!("memory target broken: {b}");
        }
        std::process::exit(1);
    }
}

/// `RssAnon` and `RssFile` of `pid`, in KiB.
fn parts(pid: u32) -> (u64, u64) {
    (
        common::status_kib(pid, "RssAnon"),
        common::status_kib(pid, "RssFile"),
    )
}

struct Result {
    p50: f64,
    p99: f64,
    max: f64,
    rps: f64,
}

fn load(port: u16, expect_len: usize) -> Result {
    let run = |n: usize| {
        let started = Instant::now();
        let handles: Vec<_> = (0..CLIENTS)
            .map(|_| {
                thread::spawn(move || {
                    let mut c = Conn::new(port);
                    (0..n)
                        .map(|_| {
                            let t = Instant::now();
                            let len = c.get();
                            assert_eq!(len, expect_len);
                            t.elapsed().as_secs_f64() * 1e6
                        })
                        .collect::<Vec<f64>>()
                })
            })
            .collect();
        let lat: Vec<f64> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        (lat, started.elapsed())
    };
    run(WARMUP / CLIENTS);
    let (mut lat, took) = run(REQUESTS / CLIENTS);
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    Result {
        p50: pct(0.50),
        p99: pct(0.99),
        max: lat[lat.len() - 1],
        rps: lat.len() as f64 / took.as_secs_f64(),
    }
}

/// One keep-alive connection with a minimal HTTP/1.1 reader.
struct Conn {
    r: BufReader<TcpStream>,
    buf: Vec<u8>,
}

impl Conn {
    fn new(port: u16) -> Conn {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_nodelay(true).unwrap();
        Conn {
            r: BufReader::with_capacity(256 * 1024, s),
            buf: Vec::new(),
        }
    }

    fn get(&mut self) -> usize {
        self.r
            .get_mut()
            .write_all(b"GET /pods HTTP/1.1\r\nHost: bench\r\n\r\n")
            .unwrap();
        let mut len = None;
        let mut line = String::new();
        loop {
            line.clear();
            self.r.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if line.starts_with("HTTP/1.1 ") {
                assert!(line.starts_with("HTTP/1.1 200"), "{line}");
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = Some(v.trim().parse::<usize>().unwrap());
            }
        }
        let len = len.expect("Content-Length");
        self.buf.resize(len, 0);
        self.r.read_exact(&mut self.buf).unwrap();
        len
    }
}

/// A bare tiny_http server answering every request with `body`, with `workers` threads;
/// `nodelay` sets TCP_NODELAY on its listener as the agent does.
fn serve(body: Vec<u8>, workers: usize, nodelay: bool) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    socket2::SockRef::from(&listener)
        .set_tcp_nodelay(nodelay)
        .unwrap();
    let server = Arc::new(tiny_http::Server::from_listener(listener, None).unwrap());
    let port = server.server_addr().to_ip().unwrap().port();
    let body = Arc::new(body);
    for _ in 0..workers {
        let (server, body) = (server.clone(), body.clone());
        thread::spawn(move || {
            for req in server.incoming_requests() {
                let header =
                    tiny_http::Header::from_bytes("Content-Type", "application/json").unwrap();
                // Same framing as the agent: Content-Length, not chunked.
                let resp = tiny_http::Response::from_data(body.as_slice())
                    .with_header(header)
                    .with_chunked_threshold(usize::MAX);
                let _ = req.respond(resp);
            }
        });
    }
    port
}

/// 110 pods from the recorded fixtures, cloned under new names and uids.
fn pod_list() -> Vec<u8> {
    let items = common::fixture_pods(PODS);
    serde_json::to_vec(&serde_json::json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items})).unwrap()
}
