//! The local API under hostile clients (issue 23): the agent (`max_connections = 8`, the
//! built-in simulator) on loopback, legitimate clients of four shapes beside silent and
//! slowloris ones, in two phases: below the cap (legitimate clients only, 7 connections at
//! most) and at the cap (16 silent ones that reconnect when closed, and 4 slowloris ones,
//! besides). Every legitimate request must get an answer: 2xx, or 503 with `Retry-After`
//! when refused; one that gets none (a close, a reset, nothing in 10 s) is counted
//! `unanswered`. Every 5 s it prints the agent's RSS, threads and fds.
//!
//! Bounded: each phase runs SECONDS (default 60) or until 200,000 legitimate requests, and
//! only ever connects to 127.0.0.1. Not a test: `cargo bench --bench hostile [-- SECONDS]`
//! (`YURT_OTA_BIN=...` for another build of the agent). It fails if any request went
//! unanswered.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

mod common;

const MAX_REQUESTS: u64 = 200_000;

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    busy: AtomicU64,
    other: AtomicU64,
    unanswered: AtomicU64,
}

impl Tally {
    fn total(&self) -> u64 {
        [&self.ok, &self.busy, &self.other, &self.unanswered]
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// One request on a fresh connection, `Connection: close`.
    Fresh,
    /// One request, then `shutdown(SHUT_WR)`, as `nc -N` sends it.
    HalfClose,
    /// Three requests in one write, then a half-close every other time.
    Pipelined,
    /// Requests back to back on one kept-alive connection.
    KeepAlive,
}

fn put(name: &str, close: bool) -> String {
    let body = r#"{"ttl":"5m","reason":"hostile soak"}"#;
    format!(
        "PUT /v1/holds/{name} HTTP/1.1\r\nHost: soak\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n{}\r\n{body}",
        body.len(),
        if close { "Connection: close\r\n" } else { "" }
    )
}

fn delete(name: &str, close: bool) -> String {
    format!(
        "DELETE /v1/holds/{name} HTTP/1.1\r\nHost: soak\r\n{}\r\n",
        if close { "Connection: close\r\n" } else { "" }
    )
}

/// Reads one answer: its status, or None when none came (closed, reset, 10 s of nothing).
/// A 503 counts only with `Retry-After`.
fn answer(r: &mut BufReader<TcpStream>) -> Option<(u16, bool)> {
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let status: u16 = line.split(' ').nth(1)?.parse().ok()?;
    let (mut len, mut retry, mut close) = (0u64, false, false);
    loop {
        line.clear();
        r.read_line(&mut line).ok()?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':')?;
        match k.to_ascii_lowercase().as_str() {
            "content-length" => len = v.trim().parse().ok()?,
            "retry-after" => retry = true,
            "connection" => close = v.trim().eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
    std::io::copy(&mut r.by_ref().take(len), &mut std::io::sink()).ok()?;
    Some((if status == 503 && !retry { 0 } else { status }, close))
}

fn count(t: &Tally, got: Option<(u16, bool)>, what: &str) -> bool {
    match got {
        Some((200..=299, _)) => t.ok.fetch_add(1, Ordering::Relaxed),
        Some((503, _)) => t.busy.fetch_add(1, Ordering::Relaxed),
        Some((s, _)) => {
            eprintln!("{what}: answered {s}");
            t.other.fetch_add(1, Ordering::Relaxed)
        }
        None => {
            eprintln!("{what}: no answer");
            t.unanswered.fetch_add(1, Ordering::Relaxed)
        }
    };
    matches!(got, Some((_, false)))
}

fn connect(port: u16) -> Option<BufReader<TcpStream>> {
    let s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    Some(BufReader::new(s))
}

fn legitimate(port: u16, shape: Shape, id: usize, t: &Tally, stop: &AtomicBool) {
    let name = format!("soak-{shape:?}-{id}").to_ascii_lowercase();
    let mut kept: Option<BufReader<TcpStream>> = None;
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) && t.total() < MAX_REQUESTS {
        i += 1;
        match shape {
            Shape::Fresh | Shape::HalfClose => {
                let Some(mut c) = connect(port) else {
                    count(t, None, "connect");
                    continue;
                };
                let req = if i % 2 == 1 {
                    put(&name, shape == Shape::Fresh)
                } else {
                    delete(&name, shape == Shape::Fresh)
                };
                if c.get_mut().write_all(req.as_bytes()).is_err() {
                    count(t, None, "write");
                    continue;
                }
                if shape == Shape::HalfClose {
                    let _ = c.get_mut().shutdown(Shutdown::Write);
                }
                count(t, answer(&mut c), &format!("{shape:?}"));
            }
            Shape::Pipelined => {
                let Some(mut c) = connect(port) else {
                    count(t, None, "connect");
                    continue;
                };
                let half = i % 2 == 0;
                let reqs = format!(
                    "GET /v1/healthz HTTP/1.1\r\nHost: soak\r\n\r\n{}{}",
                    put(&name, false),
                    delete(&name, !half)
                );
                if c.get_mut().write_all(reqs.as_bytes()).is_err() {
                    count(t, None, "write");
                    continue;
                }
                if half {
                    let _ = c.get_mut().shutdown(Shutdown::Write);
                }
                for n in 0..3 {
                    let got = answer(&mut c);
                    count(t, got, &format!("pipelined {n} (half-closed: {half})"));
                    match got {
                        // Refused: the connection, and so the rest of its pipeline.
                        Some((503, _)) => {
                            let rest = 2 - n as u64;
                            t.busy.fetch_add(rest, Ordering::Relaxed);
                            break;
                        }
                        Some((_, false)) => {}
                        Some((_, true)) if n == 2 => {}
                        // Closed with requests of the pipeline never answered.
                        _ => {
                            for m in n + 1..3 {
                                count(t, None, &format!("pipelined {m} after a close"));
                            }
                            break;
                        }
                    }
                }
            }
            Shape::KeepAlive => {
                let mut c = match kept.take().or_else(|| connect(port)) {
                    Some(c) => c,
                    None => {
                        count(t, None, "connect");
                        continue;
                    }
                };
                let req = if i % 2 == 1 {
                    put(&name, false)
                } else {
                    delete(&name, false)
                };
                if c.get_mut().write_all(req.as_bytes()).is_err() {
                    count(t, None, "keep-alive write");
                    continue;
                }
                let got = answer(&mut c);
                let open = count(t, got, "keep-alive") && got.is_some_and(|(s, _)| s != 503);
                if open {
                    kept = Some(c);
                }
            }
        }
    }
}

/// Connects and says nothing until closed, then again.
fn silent(port: u16, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = s.read_to_end(&mut Vec::new());
        } else {
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Sends a head a byte every 300 ms, until closed (408 or evicted), then again.
fn slowloris(port: u16, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        for b in b"PUT /v1/holds/slow HTTP/1.1\r\nX-Slow: ".iter().cycle() {
            if stop.load(Ordering::Relaxed) || s.write_all(&[*b]).is_err() {
                break;
            }
            thread::sleep(Duration::from_millis(300));
        }
    }
}

fn sample(pid: u32) -> (u64, usize, usize) {
    let rss = common::status_kib(pid, "VmRSS");
    let count = |d: &str| std::fs::read_dir(format!("/proc/{pid}/{d}")).map_or(0, |r| r.count());
    (rss, count("task"), count("fd"))
}

/// One phase; returns its tally and the highest threads, fds and RSS seen.
fn phase(port: u16, pid: u32, secs: u64, hostile: bool) -> (Tally, (u64, usize, usize)) {
    let tally = Tally::default();
    let stop = AtomicBool::new(false);
    let mut peak = (0, 0, 0);
    let shapes = [
        (Shape::Fresh, 2),
        (Shape::HalfClose, 2),
        (Shape::Pipelined, 1),
        (Shape::KeepAlive, 2),
    ];
    let started = Instant::now();
    thread::scope(|s| {
        for (shape, n) in shapes {
            for id in 0..n {
                let (tally, stop) = (&tally, &stop);
                s.spawn(move || legitimate(port, shape, id, tally, stop));
            }
        }
        if hostile {
            for _ in 0..16 {
                s.spawn(|| silent(port, &stop));
            }
            for _ in 0..4 {
                s.spawn(|| slowloris(port, &stop));
            }
        }
        let mut next = started;
        while started.elapsed() < Duration::from_secs(secs) && tally.total() < MAX_REQUESTS {
            next += Duration::from_secs(5);
            thread::sleep(next.saturating_duration_since(Instant::now()));
            let (rss, threads, fds) = sample(pid);
            peak = (peak.0.max(rss), peak.1.max(threads), peak.2.max(fds));
            println!(
                "{:>5} {rss:>9} {threads:>8} {fds:>4} {:>9} {:>7} {:>6} {:>10}",
                started.elapsed().as_secs(),
                tally.ok.load(Ordering::Relaxed),
                tally.busy.load(Ordering::Relaxed),
                tally.other.load(Ordering::Relaxed),
                tally.unanswered.load(Ordering::Relaxed),
            );
        }
        stop.store(true, Ordering::Relaxed);
    });
    (tally, peak)
}

fn main() {
    let secs: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(60);
    let dir = tempfile::tempdir().unwrap();
    let (mut agent, port) = common::start_agent_with(
        dir.path(),
        "max_connections = 8\nconnection_timeout = \"5s\"\n",
        "[upstream]\nkind = \"sim\"\npoll_interval = \"1s\"\n",
    );
    let pid = agent.id();
    common::wait_listening(port);
    let mut failed = false;
    for (name, hostile) in [("below the cap", false), ("at the cap", true)] {
        println!("phase {name}: {secs} s, max_connections = 8, agent pid {pid}");
        println!(
            "{:>5} {:>9} {:>8} {:>4} {:>9} {:>7} {:>6} {:>10}",
            "t_s", "rss_kib", "threads", "fds", "answered", "busy", "other", "unanswered"
        );
        let (t, (rss, threads, fds)) = phase(port, pid, secs, hostile);
        let unanswered = t.unanswered.load(Ordering::Relaxed);
        println!(
            "{name}: {} legitimate requests: {} answered 2xx, {} refused 503 with Retry-After, \
             {} other, {unanswered} unanswered; peak {rss} KiB RSS, {threads} threads, {fds} fds",
            t.total(),
            t.ok.load(Ordering::Relaxed),
            t.busy.load(Ordering::Relaxed),
            t.other.load(Ordering::Relaxed),
        );
        failed |= unanswered > 0 || t.other.load(Ordering::Relaxed) > 0;
    }
    let _ = agent.kill();
    let _ = agent.wait();
    assert!(!failed, "some legitimate requests went unanswered");
}
