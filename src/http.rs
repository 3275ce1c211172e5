//! A small blocking HTTP/1.1 server for the local API and the simulator.
//!
//! One thread per connection, at most `max_connections` of them; a connection past the cap is
//! answered 503 and closed. Every limit is enforced before memory is committed: the request head
//! is capped, a declared body over the cap is refused without reading it, and an idle or stalled
//! connection is closed after `timeout`. Responses always carry Content-Length.
//!
//! (tiny_http, used before, allocates a buffer the size of a client's declared Content-Length
//! when a request is answered without its body being read, and keeps a thread per connection
//! with no bound and no idle timeout: one request could abort the daemon.)

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown as Both, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::shutdown::Shutdown;

/// A request whose head and body have been read in full.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub enum Body {
    Bytes(Vec<u8>),
    /// Bytes shared with something long-lived (the pre-rendered pod list): sent without a copy.
    Shared(Arc<dyn AsRef<[u8]> + Send + Sync>),
}

impl Body {
    fn as_slice(&self) -> &[u8] {
        match self {
            Body::Bytes(b) => b,
            Body::Shared(b) => (**b).as_ref(),
        }
    }
}

pub struct Response {
    pub status: u16,
    pub content_type: Cow<'static, str>,
    pub headers: Vec<(&'static str, String)>,
    pub body: Body,
}

impl Response {
    pub fn new(status: u16, content_type: impl Into<Cow<'static, str>>, body: Vec<u8>) -> Response {
        Response {
            status,
            content_type: content_type.into(),
            headers: Vec::new(),
            body: Body::Bytes(body),
        }
    }
}

/// What the server asks of the application.
pub trait Handler: Sync {
    fn handle(&self, req: Request) -> Response;
    /// The answer to a request the server itself refuses (malformed, too large, too many
    /// connections), so that it has the application's error shape.
    fn reject(&self, status: u16, error: &'static str, message: String) -> Response;
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub max_head: usize,
    pub max_body: usize,
    /// A connection idle, or stalled mid-request or mid-response, this long is closed.
    pub timeout: Duration,
}

pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        })
    }

    fn prepare(&self, timeout: Duration) -> io::Result<()> {
        match self {
            // Head and body go out in two writes; do not hold the second for an ACK.
            Stream::Tcp(s) => s
                .set_nodelay(true)
                .and_then(|_| s.set_write_timeout(Some(timeout))),
            Stream::Unix(s) => s.set_write_timeout(Some(timeout)),
        }?;
        self.set_read_timeout(timeout)
    }

    fn shutdown(&self, how: Both) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(how),
            Stream::Unix(s) => s.shutdown(how),
        }
    }

    fn set_read_timeout(&self, timeout: Duration) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(Some(timeout)),
            Stream::Unix(s) => s.set_read_timeout(Some(timeout)),
        }
    }

    fn shutdown_read(&self) {
        let _ = self.shutdown(Both::Read);
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Listener {
    fn accept(&self) -> io::Result<Stream> {
        match self {
            Listener::Tcp(l) => l.accept().map(|(s, _)| Stream::Tcp(s)),
            Listener::Unix(l, _) => l.accept().map(|(s, _)| Stream::Unix(s)),
        }
    }

    /// Connects to itself, to wake a thread blocked in `accept`.
    fn poke(&self) {
        match self {
            Listener::Tcp(l) => {
                if let Ok(addr) = l.local_addr() {
                    let _ = TcpStream::connect(addr);
                }
            }
            Listener::Unix(_, path) => {
                let _ = UnixStream::connect(path);
            }
        }
    }
}

/// Open connections, so that a stop can end their reads at once.
#[derive(Default)]
struct Open {
    next: AtomicU64,
    streams: Mutex<HashMap<u64, Stream>>,
}

impl Open {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Stream>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Removes a connection from `Open` however its thread ends.
struct Registered<'a>(&'a Open, u64);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0.lock().remove(&self.1);
    }
}

/// Serves `listener` until `stop` is triggered; then stops accepting, lets each connection finish
/// the request it is handling, closes the rest, and returns.
pub fn serve(listener: Listener, limits: Limits, stop: &Shutdown, handler: &dyn Handler) {
    let open = Open::default();
    thread::scope(|s| {
        let (open, listener) = (&open, &listener);
        s.spawn(move || {
            stop.wait();
            // Wake the accept below, then end every idle read.
            listener.poke();
            for stream in open.lock().values() {
                stream.shutdown_read();
            }
        });
        loop {
            let stream = match listener.accept() {
                Ok(st) => st,
                Err(e) => {
                    if stop.is_triggered() {
                        break;
                    }
                    // Out of file descriptors, say: wait rather than spin.
                    log::warn!("API accept failed: {e}");
                    thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            if stop.is_triggered() {
                break;
            }
            if let Err(e) = stream.prepare(limits.timeout) {
                log::debug!("dropping a connection: {e}");
                continue;
            }
            let id = open.next.fetch_add(1, Ordering::Relaxed);
            {
                let mut map = open.lock();
                if map.len() >= limits.max_connections {
                    drop(map);
                    let mut stream = stream;
                    let r = handler.reject(
                        503,
                        "busy",
                        format!(
                            "the agent serves at most {} connections at once; retry",
                            limits.max_connections
                        ),
                    );
                    // Briefly: this is the accept thread.
                    refuse(&mut stream, r, Duration::from_millis(100));
                    continue;
                }
                match stream.try_clone() {
                    Ok(clone) => map.insert(id, clone),
                    Err(_) => continue,
                };
            }
            let spawned = thread::Builder::new()
                .name("api-conn".into())
                .stack_size(256 * 1024)
                .spawn_scoped(s, move || {
                    let _registered = Registered(open, id);
                    // A panic ends this connection only; left to unwind, `thread::scope` would
                    // re-raise it when serving ends.
                    if catch_unwind(AssertUnwindSafe(|| connection(stream, limits, handler)))
                        .is_err()
                    {
                        log::error!("a connection's handler panicked; connection closed");
                    }
                });
            if let Err(e) = spawned {
                log::warn!("cannot start a connection thread: {e}");
                open.lock().remove(&id);
            }
        }
        // Registration happens only in this loop, so every connection is in `open` now, also
        // one accepted while the thread above was ending the others.
        for stream in open.lock().values() {
            stream.shutdown_read();
        }
    });
}

/// Serves one connection's requests in order until it closes, errs or times out.
fn connection(mut stream: Stream, limits: Limits, handler: &dyn Handler) {
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    loop {
        let head = match read_head(&mut stream, &mut buf, limits.max_head) {
            Ok(Some(h)) => h,
            Ok(None) => return,
            Err(Refusal(status, error, message)) => {
                refuse(&mut stream, handler.reject(status, error, message), LINGER);
                return;
            }
        };
        let Head {
            method,
            target,
            minor,
            headers,
            len,
        } = head;
        let mut req = Request {
            method,
            target,
            headers,
            body: Vec::new(),
        };
        let close = minor == 0
            || req
                .header("Connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let body_len = match body_length(&req, limits.max_body) {
            Ok(n) => n,
            Err(Refusal(status, error, message)) => {
                // The body is not read, so the connection cannot be reused.
                refuse(&mut stream, handler.reject(status, error, message), LINGER);
                return;
            }
        };
        buf.drain(..len);
        if body_len > buf.len()
            && req
                .header("Expect")
                .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
            && stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_err()
        {
            return;
        }
        while buf.len() < body_len {
            let mut chunk = [0u8; 8192];
            let want = (body_len - buf.len()).min(chunk.len());
            match stream.read(&mut chunk[..want]) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        req.body = buf.drain(..body_len).collect();
        let resp = handler.handle(req);
        if write_response(&mut stream, resp, close).is_err() || close {
            return;
        }
    }
}

/// How long a refused connection is drained before it is closed.
const LINGER: Duration = Duration::from_secs(2);

/// Sends a refusal and closes without destroying it. Closing a socket with unread input makes
/// the kernel send a reset, which can discard the answer before a client that is still
/// sending its body reads it; so stop writing, then read and discard what still arrives,
/// with a fixed buffer and within fixed bounds, before closing.
fn refuse(stream: &mut Stream, resp: Response, max_wait: Duration) {
    const MAX_DRAIN: usize = 1 << 20;
    if write_response(stream, resp, true).is_err() {
        return;
    }
    let _ = stream
        .shutdown(Both::Write)
        .and_then(|_| stream.set_read_timeout(max_wait));
    let started = std::time::Instant::now();
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    while drained < MAX_DRAIN && started.elapsed() < max_wait {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

struct Head {
    method: String,
    target: String,
    minor: u8,
    headers: Vec<(String, String)>,
    /// Bytes of `buf` the head took.
    len: usize,
}

struct Refusal(u16, &'static str, String);

/// Reads until `buf` holds a complete request head. `Ok(None)`: the peer closed or went quiet.
fn read_head(
    stream: &mut Stream,
    buf: &mut Vec<u8>,
    max_head: usize,
) -> Result<Option<Head>, Refusal> {
    loop {
        if !buf.is_empty() {
            let mut slots = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Request::new(&mut slots);
            match parsed.parse(buf) {
                Ok(httparse::Status::Complete(len)) => {
                    return Ok(Some(Head {
                        method: parsed.method.unwrap_or_default().to_owned(),
                        target: parsed.path.unwrap_or_default().to_owned(),
                        minor: parsed.version.unwrap_or(1),
                        headers: parsed
                            .headers
                            .iter()
                            .map(|h| {
                                (
                                    h.name.to_owned(),
                                    String::from_utf8_lossy(h.value).into_owned(),
                                )
                            })
                            .collect(),
                        len,
                    }))
                }
                Ok(httparse::Status::Partial) => {}
                Err(httparse::Error::TooManyHeaders) => {
                    return Err(Refusal(
                        431,
                        "headers_too_large",
                        "more than 64 request headers".into(),
                    ))
                }
                Err(e) => {
                    return Err(Refusal(
                        400,
                        "bad_request",
                        format!("malformed HTTP request: {e}"),
                    ))
                }
            }
        }
        if buf.len() >= max_head {
            return Err(Refusal(
                431,
                "headers_too_large",
                format!("request heads are limited to {} KiB", max_head / 1024),
            ));
        }
        let mut chunk = [0u8; 4096];
        let want = (max_head - buf.len()).min(chunk.len());
        match stream.read(&mut chunk[..want]) {
            Ok(0) => return Ok(None),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            // Idle past the timeout (or stopped): close quietly.
            Err(_) => return Ok(None),
        }
    }
}

fn body_length(req: &Request, max_body: usize) -> Result<usize, Refusal> {
    if req.header("Transfer-Encoding").is_some() {
        return Err(Refusal(
            411,
            "length_required",
            "send request bodies with Content-Length, not Transfer-Encoding".into(),
        ));
    }
    let mut lengths = req
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("Content-Length"));
    let Some((_, first)) = lengths.next() else {
        return Ok(0);
    };
    if lengths.any(|(_, v)| v != first) {
        return Err(Refusal(
            400,
            "bad_request",
            "conflicting Content-Length headers".into(),
        ));
    }
    let n: u64 = first.trim().parse().map_err(|_| {
        Refusal(
            400,
            "bad_request",
            format!("invalid Content-Length {first:?}"),
        )
    })?;
    if n > max_body as u64 {
        return Err(Refusal(
            413,
            "payload_too_large",
            format!("request bodies are limited to {} KiB", max_body / 1024),
        ));
    }
    Ok(n as usize)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

fn write_response(stream: &mut Stream, resp: Response, close: bool) -> io::Result<()> {
    let body = resp.body.as_slice();
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
        resp.status,
        reason(resp.status),
        resp.content_type,
        body.len()
    );
    for (k, v) in &resp.headers {
        head.push_str(k);
        head.push_str(": ");
        head.push_str(v);
        head.push_str("\r\n");
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    if body.len() <= 16 * 1024 {
        let mut all = head.into_bytes();
        all.extend_from_slice(body);
        stream.write_all(&all)
    } else {
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;

    struct Echo;

    impl Handler for Echo {
        fn handle(&self, req: Request) -> Response {
            let text = format!("{} {} {}", req.method, req.target, req.body.len());
            Response::new(200, "text/plain", text.into_bytes())
        }
        fn reject(&self, status: u16, error: &'static str, _: String) -> Response {
            Response::new(status, "text/plain", error.as_bytes().to_vec())
        }
    }

    fn server(limits: Limits) -> (u16, Arc<Shutdown>, thread::JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let stop = Shutdown::new();
        let st = stop.clone();
        let t = thread::spawn(move || serve(Listener::Tcp(l), limits, &st, &Echo));
        (port, stop, t)
    }

    /// Room for the lingering threads of earlier connections in a test, which end a moment
    /// after each client closes (under CPU load, a cap of 2 was hit by sequential exchanges).
    /// The cap itself is tested with a cap of 2.
    const LIMITS: Limits = Limits {
        max_connections: 8,
        max_head: 1024,
        max_body: 100,
        timeout: Duration::from_secs(1),
    };

    /// Sends raw bytes, returns everything the server sent before closing.
    fn exchange(port: u16, raw: &[u8]) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(raw).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    #[test]
    fn keep_alive_pipelining_and_bodies() {
        let (port, stop, t) = server(LIMITS);
        let out = exchange(port, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b?q=1 HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /c HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 3, "{out}");
        assert!(
            out.contains("GET /a 0") && out.contains("POST /b?q=1 5") && out.contains("GET /c 0"),
            "{out}"
        );
        assert!(out.ends_with("GET /c 0"));
        stop.trigger();
        t.join().unwrap();
    }

    #[test]
    fn refusals_never_read_or_allocate_the_declared_body() {
        let (port, stop, t) = server(LIMITS);
        let out = exchange(
            port,
            b"POST / HTTP/1.1\r\nContent-Length: 100000000000\r\n\r\nabc",
        );
        assert!(
            out.starts_with("HTTP/1.1 413 Payload Too Large\r\n")
                && out.contains("Connection: close"),
            "{out}"
        );
        let out = exchange(
            port,
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        );
        assert!(out.starts_with("HTTP/1.1 411"), "{out}");
        let out = exchange(
            port,
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        );
        assert!(out.starts_with("HTTP/1.1 400"), "{out}");
        let out = exchange(port, b"GARBAGE\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 400"), "{out}");
        let out = exchange(
            port,
            format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(2000)).as_bytes(),
        );
        assert!(out.starts_with("HTTP/1.1 431"), "{out}");
        let out = exchange(
            port,
            b"POST / HTTP/1.1\r\nContent-Length: 100\r\nExpect: 100-continue\r\n\r\n",
        );
        assert!(out.starts_with("HTTP/1.1 100 Continue\r\n\r\n"), "{out}");
        let out = exchange(port, b"GET /old HTTP/1.0\r\n\r\n");
        assert!(
            out.contains("Connection: close") && out.ends_with("GET /old 0"),
            "{out}"
        );
        stop.trigger();
        t.join().unwrap();
    }

    #[test]
    fn random_bytes_never_stop_the_server() {
        let (port, stop, t) = server(LIMITS);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let prefixes: [&[u8]; 4] = [
            b"",
            b"GET / HTTP/1.1\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: ",
            b"GET /",
        ];
        for i in 0..200 {
            let mut raw = prefixes[i % prefixes.len()].to_vec();
            let len = (next() % 300) as usize;
            raw.extend((0..len).map(|_| match next() % 8 {
                0 => b'\r',
                1 => b'\n',
                2 => b':',
                _ => (next() % 256) as u8,
            }));
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            let _ = s.write_all(&raw);
            let _ = s.shutdown(Both::Write);
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out);
            assert!(
                out.is_empty() || out.starts_with(b"HTTP/1.1 "),
                "{:?}",
                String::from_utf8_lossy(&out)
            );
        }
        assert!(
            exchange(port, b"GET /ok HTTP/1.1\r\nConnection: close\r\n\r\n").ends_with("GET /ok 0")
        );
        stop.trigger();
        t.join().unwrap();
    }

    struct Panics;

    impl Handler for Panics {
        fn handle(&self, req: Request) -> Response {
            assert!(req.target != "/panic", "handler exploded");
            Response::new(200, "text/plain", b"fine".to_vec())
        }
        fn reject(&self, status: u16, _: &'static str, _: String) -> Response {
            Response::new(status, "text/plain", Vec::new())
        }
    }

    #[test]
    fn a_panicking_handler_ends_one_connection_not_the_server() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let stop = Shutdown::new();
        let st = stop.clone();
        let t = thread::spawn(move || serve(Listener::Tcp(l), LIMITS, &st, &Panics));
        assert_eq!(exchange(port, b"GET /panic HTTP/1.1\r\n\r\n"), "");
        assert!(exchange(port, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").ends_with("fine"));
        stop.trigger();
        assert!(t.join().is_ok(), "serve returns normally");
    }

    #[test]
    fn a_client_still_sending_its_body_receives_the_413() {
        let (port, stop, t) = server(LIMITS);
        for _ in 0..20 {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let body = vec![b'x'; 256 * 1024];
            s.write_all(
                format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes(),
            )
            .unwrap();
            s.write_all(&body).unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            assert!(out.starts_with("HTTP/1.1 413 "), "{out}");
        }
        stop.trigger();
        t.join().unwrap();
    }

    #[test]
    fn connections_past_the_cap_get_503_and_stop_frees_the_rest() {
        let (port, stop, t) = server(Limits {
            max_connections: 2,
            ..LIMITS
        });
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
            let mut r = io::BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            assert!(line.starts_with("HTTP/1.1 200"));
            held.push(s);
        }
        let out = exchange(port, b"GET / HTTP/1.1\r\n\r\n");
        assert!(
            out.starts_with("HTTP/1.1 503") && out.contains("busy"),
            "{out}"
        );
        // The freed slot is taken again (its thread ends a moment after the client closes).
        drop(held.pop());
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let out = exchange(port, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
            if out.starts_with("HTTP/1.1 200") {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{out}");
            thread::sleep(Duration::from_millis(20));
        }
        // A stop returns promptly although a client still holds an idle keep-alive connection.
        let started = std::time::Instant::now();
        stop.trigger();
        t.join().unwrap();
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
