//! Requests as bytes: keep-alive, bodies, refusals, garbage, panics, Unix sockets.

use super::*;

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
        out.starts_with("HTTP/1.1 413 Payload Too Large\r\n") && out.contains("Connection: close"),
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
fn content_length_and_connection_are_read_as_rfc_9110_says() {
    let (port, stop, t) = server(LIMITS);
    for bad in ["+3", "-3", "3 3", "0x3", "", " "] {
        let out = exchange(
            port,
            format!("POST / HTTP/1.1\r\nContent-Length: {bad}\r\n\r\nabc").as_bytes(),
        );
        assert!(out.starts_with("HTTP/1.1 400"), "{bad:?}: {out}");
    }
    let out = exchange(
        port,
        b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\nabc",
    );
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    let out = exchange(
        port,
        b"POST / HTTP/1.1\r\nContent-Length:  3 \r\nConnection: close\r\n\r\nabc",
    );
    assert!(out.ends_with("POST / 3"), "{out}");
    // `close` anywhere in the list closes, without waiting for the idle timeout.
    for value in ["keep-alive, close", "Upgrade,CLOSE", "x,\tclose ,y"] {
        let started = Instant::now();
        let out = exchange(
            port,
            format!("GET / HTTP/1.1\r\nConnection: {value}\r\n\r\n").as_bytes(),
        );
        assert!(out.contains("Connection: close"), "{value}: {out}");
        assert!(started.elapsed() < Duration::from_millis(800), "{value}");
    }
    stop.trigger();
    t.join().unwrap();
}

#[test]
fn a_live_unix_socket_is_not_taken_over_and_shutdown_does_not_use_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api.sock");
    let first = Listener::unix(&path).unwrap();
    let err = Listener::unix(&path).err().unwrap();
    assert!(err.contains(path.to_str().unwrap()), "{err}");
    let stop = Shutdown::new();
    let st = stop.clone();
    let t = thread::spawn(move || serve(first, LIMITS, &st, &Echo));
    // Someone replaces the socket file: the first server still stops at once.
    std::fs::remove_file(&path).unwrap();
    let _other = UnixListener::bind(&path).unwrap();
    let started = Instant::now();
    stop.trigger();
    t.join().unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    // A socket file nobody listens on is replaced.
    drop(_other);
    let again = Listener::unix(&path).unwrap();
    assert!(UnixStream::connect(&path).is_ok());
    drop(again);
}
