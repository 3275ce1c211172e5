//! A small blocking HTTP/1.1 server for the local API and the simulator.
//!
//! One thread per connection, at most `max_connections` of them; a thread whose connection has
//! ended waits for the next one (up to 4 wait, `workers.rs`) rather than ending. Every limit is enforced before
//! memory is committed: the request head is capped, a declared body over the cap is refused
//! without reading it, and an idle or stalled connection is closed after `timeout`. Responses
//! always carry Content-Length.
//!
//! A slow or silent client cannot lock others out:
//! - a request's head and body must arrive within `timeout`, at most [`REQUEST_DEADLINE`],
//!   counted from its first byte, however the bytes trickle in (408 after that);
//! - when every slot is taken, a new connection takes the thread and slot of one whose client
//!   has closed, else the slot of the one that has sent nothing
//!   since it was accepted the longest (silent or half-open), else of the one idle between
//!   keep-alive requests the longest, else of the one that has been sending its request (or
//!   receiving its answer) the longest; that one is closed (sent 503 `busy` first if silent or
//!   idle). One whose client's bytes wait unread is not silent and is not closed: a thread says
//!   it is reading before it takes a request's first byte. Only when none can be closed is the
//!   new one answered 503 `busy` with `Retry-After`;
//! - that refusal is written, and the connection drained and closed, by a thread of its own: the
//!   accept thread never waits on a client.
//!
//! (tiny_http, used before, allocates a buffer the size of a client's declared Content-Length
//! when a request is answered without its body being read, and keeps a thread per connection
//! with no bound and no idle timeout: one request could abort the daemon.)
//!
//! `stream.rs` the listener and the connection's stream (TCP or Unix); `slots.rs` the open
//! connections and which one gives up its slot; `serve.rs` the accept loop and one connection's
//! requests; `workers.rs` the threads waiting for a connection; `framing.rs` the request head,
//! Content-Length and the response bytes.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

pub mod client;
mod framing;
pub use framing::owned_headers;
mod serve;
mod slots;
mod stream;
mod workers;

pub use framing::fuzz_framing;
pub use serve::serve;
pub use stream::Listener;

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

/// The request caps of the agent's API and `yurt-ota sim`: bodies above this are refused with
/// 413.
pub const MAX_REQUEST_BODY: usize = 64 * 1024;
/// Request heads (request line and headers) above this are refused with 431.
pub const MAX_REQUEST_HEAD: usize = 16 * 1024;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub max_head: usize,
    pub max_body: usize,
    /// A connection idle, or stalled mid-request or mid-response, this long is closed; a
    /// request's head and body must also arrive within this (at most [`REQUEST_DEADLINE`]).
    pub timeout: Duration,
}

/// The longest a request's head and body may take to arrive, from its first byte.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests;
