//! What both benchmarks start from: `n` real-shaped pods (the recorded fixture pods cloned under
//! new names and uids), and the release agent started on a free port.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

#[allow(dead_code)] // not every benchmark builds pods
pub fn fixture_pods(n: usize) -> Vec<Value> {
    let mut templates = Vec::new();
    for v in ["1.32", "1.33", "1.35", "1.36"] {
        let path = format!(
            "{}/tests/fixtures/kind-v{v}-kube-system-podlist.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let list: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        templates.extend(list["items"].as_array().unwrap().iter().cloned());
    }
    (0..n)
        .map(|i| {
            let mut p = templates[i % templates.len()].clone();
            let name = format!("{}-{i:03}", p["metadata"]["name"].as_str().unwrap());
            p["metadata"]["name"] = name.into();
            p["metadata"]["uid"] = format!("00000000-0000-4000-8000-{i:012}").into();
            p
        })
        .collect()
}

/// Starts the agent with `config` after an `[api]` on a free port and a `[state]` in `dir`;
/// returns the process and the port.
#[allow(dead_code)] // not every benchmark starts the agent this way
pub fn start_agent(dir: &Path, config: &str) -> (Child, u16) {
    start_agent_with(dir, "", config)
}

/// `start_agent`, with `api` (lines of TOML) added to its `[api]` table.
#[allow(dead_code)]
pub fn start_agent_with(dir: &Path, api: &str, config: &str) -> (Child, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = dir.join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[api]\nlisten = \"127.0.0.1:{port}\"\n{api}[state]\ndir = \"{}\"\n{config}",
            dir.join("state").display()
        ),
    )
    .unwrap();
    // YURT_OTA_BIN: another build of the agent (the static musl one, for memory figures).
    let bin = std::env::var("YURT_OTA_BIN").unwrap_or(env!("CARGO_BIN_EXE_yurt-ota").into());
    let child = Command::new(bin)
        .args(["run", "--config"])
        .arg(&cfg)
        .env("GLIBC_TUNABLES", glibc_tunables())
        // YURT_OTA_BENCH_LOG=debug: the agent's own timings of each step (on stderr).
        .env(
            "YURT_OTA_LOG",
            std::env::var("YURT_OTA_BENCH_LOG").unwrap_or("warn".into()),
        )
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    (child, port)
}

/// Waits until the agent started by `start_agent` accepts connections on `port` (10 s at most).
#[allow(dead_code)]
pub fn wait_listening(port: u16) {
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "the agent did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `GLIBC_TUNABLES` for the agent: this process's own when it has one (set it empty for glibc's
/// defaults), else the systemd unit's, so that the agent runs as it does on a device.
#[allow(dead_code)]
pub fn glibc_tunables() -> String {
    if let Ok(v) = std::env::var("GLIBC_TUNABLES") {
        return v;
    }
    let unit = include_str!("../packaging/yurt-ota.service");
    unit.lines()
        .find_map(|l| l.strip_prefix("Environment=GLIBC_TUNABLES="))
        .expect("packaging/yurt-ota.service sets GLIBC_TUNABLES")
        .to_owned()
}

/// The agent's `VmRSS` in KiB once it is back to `threads` threads (at most 5 s): the thread
/// of a connection a client just closed ends a moment later, and until then its stack and its
/// buffers count. Read at once, two readings taken after the same load differ by a thread or
/// two still ending (16 KiB of stack each, and their heap), which is not growth.
#[allow(dead_code)] // not every benchmark reads memory
pub fn settled_rss_kib(pid: u32, threads: usize) -> u64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while thread_count(pid) > threads && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    status_kib(pid, "VmRSS")
}

/// A `/proc/PID/status` figure in KiB: `VmRSS`, or its parts `RssAnon` (heap, stacks, the
/// process's own) and `RssFile` (the binary's and the shared libraries' pages, libc's shared
/// with every process that maps it).
#[allow(dead_code)]
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

/// With `YURT_OTA_BENCH_SMAPS=DIR`: a copy of the agent's `/proc/PID/smaps` as `DIR/LABEL.smaps`,
/// to see which mapping a reading's memory is in (heap, stacks, the binary's or libc's pages).
#[allow(dead_code)]
pub fn keep_smaps(pid: u32, label: &str) {
    if let Some(dir) = std::env::var_os("YURT_OTA_BENCH_SMAPS") {
        let smaps = std::fs::read(format!("/proc/{pid}/smaps")).unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(Path::new(&dir).join(format!("{label}.smaps")), smaps).unwrap();
    }
}

#[allow(dead_code)]
pub fn thread_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

/// `GET path` on a loopback port with `Connection: close`, sent in one write: the body of a
/// 200 answer; any other status is `NotFound`, a reply with no head end `InvalidData`.
#[allow(dead_code)] // not every benchmark fetches over HTTP
pub fn fetch(port: u16, path: &str) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or(std::io::ErrorKind::InvalidData)?;
    if !raw.starts_with(b"HTTP/1.1 200") {
        return Err(std::io::ErrorKind::NotFound.into());
    }
    Ok(raw[end + 4..].to_vec())
}
