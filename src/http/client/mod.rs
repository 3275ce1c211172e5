//! The CLI's small blocking HTTP/1.1 client: one call to the agent's local API over TCP or its
//! Unix socket, a fresh connection each. The upstreams (YurtHub, the kube-apiserver) use ureq
//! (`upstream::http`); this stays ours because ureq reaches a Unix socket only through its
//! `unversioned::transport` API, which may change in any 3.x release (Cargo.toml, `httparse`).
//! Since the upstreams' TLS connector uses that API too and pins ureq to `~3.5`, a Unix-socket
//! connector beside it would cost no further pin: this client could then go (not done).
//!
//! No proxy, no redirects (a 3xx is a status like any other), no compression. Interim answers
//! (`100 Continue`, `103 Early Hints`) before the final one are read past, as RFC 9110 15.2 asks. Every limit is
//! checked before memory is committed: the response head is at most [`MAX_HEAD`] bytes and
//! [`MAX_HEADERS`] headers, a chunk-size line at most [`MAX_CHUNK_LINE`], and a body read whole
//! is refused on its declared length before a byte of it is read. A call has one deadline for
//! the whole exchange: each socket read and write gets the time left as its timeout.

use std::io::{self, Write};
use std::time::{Duration, Instant};

mod body;
mod connect;
mod fuzz;

pub use body::Response;
use body::{head, Head};
pub use connect::{split_http_base, Connector, Tcp, Transport, Unix};
pub use fuzz::fuzz_response;

/// The response head (status line and headers), and the connection's read buffer.
pub const MAX_HEAD: usize = 16 * 1024;
pub const MAX_HEADERS: usize = 64;
/// A chunk-size line, extensions included.
pub const MAX_CHUNK_LINE: usize = 1024;
/// Interim (1xx) answers read before the final one; more is a server that never answers.
pub const MAX_INTERIM: usize = 16;
const USER_AGENT: &str = concat!("yurt-ota/", env!("CARGO_PKG_VERSION"));

#[derive(Debug)]
pub enum Error {
    /// No connection: refused, unreachable, a name that does not resolve.
    Connect(String),
    /// No complete answer before the call's deadline.
    Timeout,
    /// A body over the limit, declared or read.
    TooLarge,
    /// The connection broke mid-way.
    Io(io::Error),
    /// The answer is not HTTP/1.x as this client reads it.
    Protocol(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Connect(m) | Error::Protocol(m) => f.write_str(m),
            Error::Timeout => f.write_str("timed out"),
            Error::TooLarge => f.write_str("answer over the size limit"),
            Error::Io(e) => write!(f, "connection broke: {e}"),
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        if matches!(
            e.kind(),
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
        ) {
            return Error::Timeout;
        }
        if e.kind() == io::ErrorKind::InvalidData {
            return Error::Protocol(e.to_string());
        }
        Error::Io(e)
    }
}

fn bad(m: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, m.into())
}

/// One request. A `Content-Length` is sent with a body, and with an empty POST, PUT or PATCH.
pub struct Request<'a> {
    pub method: &'a str,
    /// Path and query.
    pub target: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: Option<&'a [u8]>,
}

/// A client of one server: a fresh connection each call.
pub struct Client<C: Connector> {
    connector: C,
    connect_timeout: Duration,
    limit: Option<Duration>,
}

impl<C: Connector> Client<C> {
    /// Each exchange, body included, must end within `limit` (None: only the connect is
    /// bounded).
    pub fn new(connector: C, connect_timeout: Duration, limit: Option<Duration>) -> Client<C> {
        Client {
            connector,
            connect_timeout,
            limit,
        }
    }

    /// Sends `req` and reads the answer's head.
    pub fn send(&self, req: &Request) -> Result<Response<C::Stream>, Error> {
        let breaks = |s: &str| s.contains(['\r', '\n']);
        if breaks(req.target) || req.headers.iter().any(|(k, v)| breaks(k) || breaks(v)) {
            return Err(Error::Protocol("a line break in the request's head".into()));
        }
        let deadline = self.limit.map(|d| Instant::now() + d);
        let connect = match deadline {
            Some(d) => self
                .connect_timeout
                .min(d.saturating_duration_since(Instant::now())),
            None => self.connect_timeout,
        };
        if connect.is_zero() {
            return Err(Error::Timeout);
        }
        let conn = Conn::new(self.connector.connect(connect)?);
        conn.exchange(self.connector.host(), req, deadline)
    }
}

/// A connection and its read buffer.
pub struct Conn<S> {
    s: S,
    buf: Box<[u8]>,
    pos: usize,
    end: usize,
    deadline: Option<Instant>,
    /// Some byte of the current answer arrived.
    received: bool,
}

impl<S: Transport> Conn<S> {
    pub fn new(s: S) -> Conn<S> {
        Conn {
            s,
            buf: vec![0; MAX_HEAD].into_boxed_slice(),
            pos: 0,
            end: 0,
            deadline: None,
            received: false,
        }
    }

    /// The socket's timeouts set to the time left before the deadline.
    fn arm(&mut self) -> io::Result<()> {
        if let Some(d) = self.deadline {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            self.s.set_timeouts(Some(left))?;
        }
        Ok(())
    }

    /// Writes the request and reads the head.
    pub fn exchange(
        mut self,
        host: &str,
        req: &Request,
        deadline: Option<Instant>,
    ) -> Result<Response<S>, Error> {
        self.deadline = deadline;
        self.received = false;
        self.write_request(host, req)?;
        let (status, headers, framing) = self.read_head(req.method)?;
        Ok(Response {
            status,
            headers,
            conn: Some(self),
            framing,
        })
    }

    fn write_request(&mut self, host: &str, req: &Request) -> Result<(), Error> {
        let mut out = Vec::with_capacity(256 + req.body.map_or(0, <[u8]>::len));
        let _ = write!(
            out,
            "{} {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {USER_AGENT}\r\n",
            req.method, req.target
        );
        for (k, v) in req.headers {
            let _ = write!(out, "{k}: {v}\r\n");
        }
        match req.body {
            Some(b) => {
                let _ = write!(out, "Content-Length: {}\r\n", b.len());
            }
            None if matches!(req.method, "POST" | "PUT" | "PATCH") => {
                out.extend_from_slice(b"Content-Length: 0\r\n")
            }
            None => {}
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(req.body.unwrap_or_default());
        self.arm()?;
        self.s.write_all(&out)?;
        self.s.flush()?;
        Ok(())
    }

    /// Reads the final answer's head. Interim answers before it (`100 Continue`, `103 Early
    /// Hints`: RFC 9110 15.2) are read and set aside, at most [`MAX_INTERIM`] of them; `101`
    /// is final, and an error, since this client never asks to switch protocols.
    fn read_head(&mut self, method: &str) -> Result<Head, Error> {
        self.pos = 0;
        self.end = 0;
        let mut interim = 0;
        loop {
            let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut parsed = httparse::Response::new(&mut slots);
            match parsed.parse(&self.buf[..self.end]) {
                Ok(httparse::Status::Complete(len)) => {
                    let status = parsed.code.unwrap_or(0);
                    if (100..200).contains(&status) && status != 101 {
                        interim += 1;
                        if interim > MAX_INTERIM {
                            return Err(Error::Protocol(format!(
                                "more than {MAX_INTERIM} interim (1xx) answers before the final one"
                            )));
                        }
                        // What follows the interim head is the next head, already read in part.
                        self.buf.copy_within(len..self.end, 0);
                        self.end -= len;
                        continue;
                    }
                    let headers = crate::http::owned_headers(parsed.headers);
                    self.pos = len;
                    return head(method, status, headers);
                }
                Ok(httparse::Status::Partial) => {}
                Err(httparse::Error::TooManyHeaders) => {
                    return Err(Error::Protocol(format!(
                        "answer with more than {MAX_HEADERS} headers"
                    )))
                }
                Err(e) => return Err(Error::Protocol(format!("not an HTTP answer ({e})"))),
            }
            if self.end == self.buf.len() {
                return Err(Error::Protocol(format!(
                    "answer head over {} KiB",
                    MAX_HEAD >> 10
                )));
            }
            self.arm()?;
            let n = self.s.read(&mut self.buf[self.end..])?;
            if n == 0 {
                return Err(Error::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    if self.received {
                        "connection closed in the answer's head"
                    } else {
                        "connection closed before an answer"
                    },
                )));
            }
            self.received = true;
            self.end += n;
        }
    }
}

#[cfg(test)]
mod tests;
