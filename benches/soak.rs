//! Soak: the release agent on the built-in simulator, with a token, under 4 keep-alive clients
//! that mix GET /pods, /v1/status, /metrics and hold PUT/DELETE for 10 minutes (or the seconds
//! given). Every 10 s it samples the agent's RSS, threads and open fds and prints the series; a
//! leak shows as a trend. Not a test: `cargo bench --bench soak [-- SECONDS]`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

mod common;

const TOKEN: &str = "soak-token";

/// One request on a keep-alive connection; returns the status.
fn call(
    conn: &mut BufReader<TcpStream>,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<u16> {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: soak\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.get_mut().write_all(head.as_bytes())?;
    let mut line = String::new();
    conn.read_line(&mut line)?;
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut len = 0;
    loop {
        line.clear();
        conn.read_line(&mut line)?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    std::io::copy(&mut conn.by_ref().take(len), &mut std::io::sink())?;
    Ok(status)
}

fn connect(port: u16) -> BufReader<TcpStream> {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    BufReader::new(s)
}

fn sample(pid: u32) -> (u64, usize, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let count = |d: &str| std::fs::read_dir(format!("/proc/{pid}/{d}")).map_or(0, |r| r.count());
    (rss, count("task"), count("fd"))
}

fn main() {
    let secs: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(600);
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let (mut agent, port) = common::start_agent_with(
        dir.path(),
        &format!("token_file = \"{}\"\n", token.display()),
        "[upstream]\nkind = \"sim\"\npoll_interval = \"1s\"\n",
    );
    let pid = agent.id();
    common::wait_listening(port);
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let (requests, failures) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (stop, requests, failures) = (stop.clone(), requests.clone(), failures.clone());
            thread::spawn(move || {
                let mut conn = connect(port);
                let hold = format!("/v1/holds/soak-{c}");
                let mix: [(&str, &str, &str); 5] = [
                    ("GET", "/pods", ""),
                    ("GET", "/v1/status", ""),
                    ("GET", "/metrics", ""),
                    ("PUT", &hold, r#"{"ttl":"5m","reason":"soak"}"#),
                    ("DELETE", &hold, ""),
                ];
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let (m, p, b) = mix[i % mix.len()];
                    i += 1;
                    match call(&mut conn, m, p, b) {
                        Ok(s) if (200..300).contains(&s) || s == 503 && p == "/pods" => {}
                        Ok(s) => {
                            eprintln!("{m} {p}: {s}");
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            eprintln!("{m} {p}: {e}; reconnecting");
                            failures.fetch_add(1, Ordering::Relaxed);
                            conn = connect(port);
                        }
                    }
                    requests.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    println!("soak: {secs} s, 4 keep-alive clients, agent pid {pid}");
    println!(
        "{:>6} {:>9} {:>8} {:>4} {:>10} {:>8}",
        "t_s", "rss_kib", "threads", "fds", "requests", "failed"
    );
    let mut next = started;
    loop {
        let (rss, threads, fds) = sample(pid);
        let t = started.elapsed().as_secs();
        println!(
            "{t:>6} {rss:>9} {threads:>8} {fds:>4} {:>10} {:>8}",
            requests.load(Ordering::Relaxed),
            failures.load(Ordering::Relaxed)
        );
        if t >= secs {
            break;
        }
        next += Duration::from_secs(10);
        thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let _ = agent.kill();
    let _ = agent.wait();
    let n = requests.load(Ordering::Relaxed);
    println!(
        "done: {n} requests ({:.0}/s), {} failed",
        n as f64 / started.elapsed().as_secs_f64(),
        failures.load(Ordering::Relaxed)
    );
    assert_eq!(failures.load(Ordering::Relaxed), 0, "some requests failed");
}
