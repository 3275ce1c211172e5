use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown as Both, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::*;
use crate::shutdown::Shutdown;

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

mod framing;
mod slots;
