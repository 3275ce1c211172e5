//! The upstreams' client against real loopback servers: what our own client taught us, kept.

use std::io::{BufRead, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;
use crate::upstream::{from_http, UpstreamError};

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na";

fn timeouts(ms: u64) -> Timeouts {
    Timeouts {
        connect: Duration::from_millis(ms),
        call: Duration::from_millis(ms),
        per_read: None,
        keep_idle: true,
    }
}

/// One request's head and Content-Length body; None when the client closed first.
fn read_request(s: &mut TcpStream) -> Option<String> {
    let mut got = Vec::new();
    let mut b = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).unwrap_or(0) == 0 {
            return None;
        }
        got.push(b[0]);
    }
    let head = String::from_utf8_lossy(&got).into_owned();
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length").then(|| v.trim())
        })
        .map_or(0, |n| n.parse::<usize>().unwrap());
    let mut body = vec![0; len];
    s.read_exact(&mut body).ok()?;
    Some(head + &String::from_utf8_lossy(&body))
}

/// A server that runs `serve` on each connection (its index, the stream) until `stop` is
/// set; the requests it read, all connections together.
struct Server {
    url: String,
    seen: Arc<Mutex<Vec<String>>>,
    conns: Arc<AtomicUsize>,
}

impl Server {
    fn start(serve: fn(usize, &mut TcpStream, &Mutex<Vec<String>>)) -> Server {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let conns = Arc::new(AtomicUsize::new(0));
        let (s2, c2) = (seen.clone(), conns.clone());
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                let n = c2.fetch_add(1, Ordering::SeqCst);
                let seen = s2.clone();
                std::thread::spawn(move || serve(n, &mut s, &seen));
            }
        });
        Server { url, seen, conns }
    }

    fn count(&self, method: &str) -> usize {
        let prefix = format!("{method} ");
        let seen = self.seen.lock().unwrap();
        seen.iter().filter(|r| r.starts_with(&prefix)).count()
    }
}

/// Reads requests and records them; answers a GET with keep-alive, and drops the connection
/// under any other request after reading it whole (the apiserver restarting mid-call).
fn drops_writes(_: usize, s: &mut TcpStream, seen: &Mutex<Vec<String>>) {
    while let Some(r) = read_request(s) {
        let get = r.starts_with("GET ");
        seen.lock().unwrap().push(r);
        if !get {
            return;
        }
        s.write_all(OK).unwrap();
    }
}

#[test]
fn a_delete_or_a_lease_write_is_never_sent_twice_and_may_have_been_sent() {
    for method in ["DELETE", "PUT", "POST"] {
        for pooled in [true, false] {
            let server = Server::start(drops_writes);
            let a = agent(None, timeouts(2000));
            if pooled {
                // A keep-alive connection in the pool: the write goes out on it.
                let mut r = send(&a, "GET", &format!("{}/x", server.url), &[], None).unwrap();
                assert_eq!(r.read_to_vec(10).unwrap(), b"a");
            }
            let url = format!("{}/apis/coordination.k8s.io/v1/leases/x", server.url);
            let e = match send(&a, method, &url, &[], Some(b"{}")) {
                Ok(r) => panic!("{method}: answered {}", r.status),
                Err(e) => from_http(e, UpstreamError::Io),
            };
            // Not "not connected": the server read it, and may have carried it out.
            assert!(
                !matches!(e, UpstreamError::Connect(_)),
                "{method} pooled={pooled}: {e:?}"
            );
            // Time for a resend to arrive, were there one.
            std::thread::sleep(Duration::from_millis(300));
            assert_eq!(server.count(method), 1, "{method} pooled={pooled}");
            assert_eq!(server.conns.load(Ordering::SeqCst), 1, "{method}");
        }
    }
}

/// Answers one request with keep-alive, then closes (a server's idle timeout).
fn one_then_close(_: usize, s: &mut TcpStream, seen: &Mutex<Vec<String>>) {
    if let Some(r) = read_request(s) {
        seen.lock().unwrap().push(r);
        s.write_all(OK).unwrap();
    }
}

/// The same on its first connection; on the next ones, reads the request and closes without
/// an answer (the apiserver restarting under it).
fn one_then_close_then_no_answer(n: usize, s: &mut TcpStream, seen: &Mutex<Vec<String>>) {
    if n == 0 {
        return one_then_close(n, s, seen);
    }
    if let Some(r) = read_request(s) {
        seen.lock().unwrap().push(r);
    }
}

#[test]
fn a_pooled_connection_the_server_closed_while_idle_is_not_used_for_a_delete() {
    for answered in [true, false] {
        let server = Server::start(if answered {
            one_then_close
        } else {
            one_then_close_then_no_answer
        });
        let a = agent(None, timeouts(2000));
        let url = format!("{}/api/v1/namespaces/ns/pods/p", server.url);
        let mut r = send(&a, "GET", &url, &[], None).unwrap();
        assert_eq!(r.read_to_vec(10).unwrap(), b"a");
        drop(r);
        // The server has closed the pooled connection by now.
        std::thread::sleep(Duration::from_millis(100));
        match send(&a, "DELETE", &url, &[], Some(b"{}")) {
            Ok(mut r) if answered => {
                assert_eq!((r.status, r.read_to_vec(10).unwrap()), (200, b"a".to_vec()))
            }
            Err(e) if !answered => {
                // Sent, and no answer: the caller is told it may have been carried out.
                let e = from_http(e, UpstreamError::Io);
                assert!(!matches!(e, UpstreamError::Connect(_)), "{e:?}");
            }
            Ok(r) => panic!("answered {}", r.status),
            Err(e) => panic!("{e}"),
        }
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(server.count("DELETE"), 1, "answered={answered}");
        // On a fresh connection, not on the one the server had closed.
        assert_eq!(server.conns.load(Ordering::SeqCst), 2);
    }
}

#[test]
fn no_connection_is_the_only_failure_read_as_not_sent() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", l.local_addr().unwrap());
    drop(l);
    let a = agent(None, timeouts(2000));
    let e = from_http(
        send(&a, "DELETE", &url, &[], None).err().unwrap(),
        UpstreamError::Io,
    );
    assert!(matches!(e, UpstreamError::Connect(_)), "{e:?}");
}

/// Run as a child of the test binary, with the proxy variables set (the environment is the
/// process's: set in the parent, it would reach every test running beside this one).
#[test]
fn proxy_variables_are_not_read() {
    if std::env::var_os("YURT_OTA_PROXY_CHILD").is_some() {
        let server = Server::start(drops_writes);
        let a = agent(None, timeouts(2000));
        let mut r = send(&a, "GET", &format!("{}/pods", server.url), &[], None).unwrap();
        assert_eq!(r.read_to_vec(10).unwrap(), b"a");
        return;
    }
    // A dead port: a call that went through the proxy would fail to connect.
    let dead = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "upstream::http::tests::proxy_variables_are_not_read",
        "--nocapture",
    ])
    .env("YURT_OTA_PROXY_CHILD", "1")
    .env_remove("NO_PROXY")
    .env_remove("no_proxy");
    for v in [
        "HTTPS_PROXY",
        "HTTP_PROXY",
        "ALL_PROXY",
        "https_proxy",
        "http_proxy",
        "all_proxy",
    ] {
        cmd.env(v, &proxy);
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "{text}");
}

/// Answers each connection with the raw bytes of `ANSWERS[n]` after reading a request, and
/// holds the connection open a while.
fn scripted(n: usize, s: &mut TcpStream, seen: &Mutex<Vec<String>>) {
    const HUGE_HEAD: usize = 0;
    if let Some(r) = read_request(s) {
        seen.lock().unwrap().push(r);
        match n {
            HUGE_HEAD => {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\n");
                let line = format!("X-Big: {}\r\n", "b".repeat(1000));
                for _ in 0..100 {
                    if s.write_all(line.as_bytes()).is_err() {
                        return;
                    }
                }
            }
            // Declares 1 GiB and sends none of it.
            1 => {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n");
            }
            // Chunked, endless.
            2 => {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
                let chunk = format!("400\r\n{}\r\n", "c".repeat(1024));
                for _ in 0..64 {
                    if s.write_all(chunk.as_bytes()).is_err() {
                        return;
                    }
                }
            }
            // Interim answers before the final one.
            _ => {
                let _ = s.write_all(
                    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n\
                      HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na",
                );
            }
        }
        std::thread::sleep(Duration::from_secs(3));
    }
}

#[test]
fn heads_and_bodies_are_bounded_and_interim_answers_read_past() {
    let server = Server::start(scripted);
    let a = agent(None, timeouts(2500));
    let get = || send(&a, "GET", &format!("{}/pods", server.url), &[], None);
    // A head over 16 KiB: a clear error, not a wait for the rest.
    let e = from_http(get().err().unwrap(), UpstreamError::Io);
    assert_eq!(e, UpstreamError::Io("answer head over 16 KiB".into()));
    // 1 GiB declared: refused on the declaration, before the timeout and without a byte read.
    let began = Instant::now();
    let e = get().unwrap().read_to_vec(1 << 20).err().unwrap();
    assert_eq!(from_http(e, UpstreamError::Io), UpstreamError::TooLarge);
    assert!(began.elapsed() < Duration::from_secs(1));
    // Not declared (chunked): refused once past the limit.
    let e = get().unwrap().read_to_vec(16 << 10).err().unwrap();
    assert_eq!(from_http(e, UpstreamError::Io), UpstreamError::TooLarge);
    // 100 Continue and 103 Early Hints, then the answer.
    let mut r = get().unwrap();
    assert_eq!((r.status, r.read_to_vec(10).unwrap()), (200, b"a".to_vec()));
}

#[test]
fn one_idle_connection_is_kept() {
    // Two requests at once on two connections: answered only once both arrived.
    fn held(n: usize, s: &mut TcpStream, seen: &Mutex<Vec<String>>) {
        let mut first = true;
        while let Some(r) = read_request(s) {
            seen.lock().unwrap().push(r);
            if first && n < 2 {
                while seen.lock().unwrap().len() < 2 {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            first = false;
            s.write_all(OK).unwrap();
        }
        // The client closed this one.
        seen.lock().unwrap().push(format!("closed {n}"));
    }
    let server = Server::start(held);
    let a = agent(None, timeouts(3000));
    let url = format!("{}/pods", server.url);
    let both: Vec<_> = (0..2)
        .map(|_| {
            let (a, url) = (a.clone(), url.clone());
            std::thread::spawn(move || send(&a, "GET", &url, &[], None)?.read_to_vec(10))
        })
        .collect();
    for h in both {
        assert_eq!(h.join().unwrap().unwrap(), b"a");
    }
    // Of the two idle connections, one was closed at once.
    let deadline = Instant::now() + Duration::from_secs(2);
    while server
        .seen
        .lock()
        .unwrap()
        .iter()
        .all(|r| !r.starts_with("closed"))
    {
        assert!(Instant::now() < deadline, "no connection closed");
        std::thread::sleep(Duration::from_millis(10));
    }
    for _ in 0..3 {
        assert_eq!(
            send(&a, "GET", &url, &[], None)
                .unwrap()
                .read_to_vec(10)
                .unwrap(),
            b"a"
        );
    }
    assert_eq!(
        server.conns.load(Ordering::SeqCst),
        2,
        "the kept one reused"
    );
    let closed = server
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.starts_with("closed"))
        .count();
    assert_eq!(closed, 1);
}

#[test]
fn a_redirect_is_a_status_and_requests_say_who_sends_them() {
    fn redirect(_: usize, s: &mut TcpStream, seen: &Mutex<Vec<String>>) {
        while let Some(r) = read_request(s) {
            seen.lock().unwrap().push(r);
            s.write_all(b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n")
                .unwrap();
        }
    }
    let server = Server::start(redirect);
    let a = agent(None, timeouts(2000));
    let r = send(&a, "POST", &format!("{}/upgrade", server.url), &[], None).unwrap();
    assert_eq!(r.status, 302);
    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "not followed: {seen:?}");
    let head = seen[0].to_ascii_lowercase();
    assert!(head.starts_with("post /upgrade http/1.1"), "{head}");
    assert!(head.contains("user-agent: yurt-ota/"), "{head}");
    assert!(head.contains("content-length: 0"), "{head}");
}

#[test]
fn a_watch_reads_its_stream_under_a_per_read_timeout() {
    // Events every 100 ms for 600 ms, then silence.
    fn trickle(_: usize, s: &mut TcpStream, seen: &Mutex<Vec<String>>) {
        if let Some(r) = read_request(s) {
            seen.lock().unwrap().push(r);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
            for _ in 0..6 {
                let _ = s.write_all(b"2\r\ne\n\r\n");
                std::thread::sleep(Duration::from_millis(100));
            }
            std::thread::sleep(Duration::from_secs(5));
        }
    }
    let server = Server::start(trickle);
    let a = agent(
        None,
        Timeouts {
            connect: Duration::from_secs(2),
            call: Duration::from_secs(10),
            per_read: Some(Duration::from_millis(400)),
            keep_idle: false,
        },
    );
    let mut r = send(&a, "GET", &format!("{}/watch", server.url), &[], None).unwrap();
    let began = Instant::now();
    let mut events = 0;
    let mut line = String::new();
    let e = loop {
        line.clear();
        match r.read_line(&mut line) {
            Ok(0) => panic!("ended"),
            Ok(_) => events += 1,
            Err(e) => break e,
        }
    };
    // Each event came within the per-read timeout, the stream as a whole lasting longer;
    // the silence after them ended it, well before the call's deadline.
    assert_eq!(events, 6);
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "{:?}",
        began.elapsed()
    );
    assert!(
        matches!(
            from_http(e.into(), UpstreamError::Io),
            UpstreamError::Timeout(_)
        ),
        "not a timeout"
    );
}
