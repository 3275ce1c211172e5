//! How the CLI reaches the agent: TCP, a Unix socket.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use super::Error;

/// A byte stream whose socket timeouts can be set.
pub trait Transport: Read + Write {
    fn set_timeouts(&self, t: Option<Duration>) -> io::Result<()>;
}

impl Transport for TcpStream {
    fn set_timeouts(&self, t: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(t)?;
        self.set_write_timeout(t)
    }
}

impl Transport for UnixStream {
    fn set_timeouts(&self, t: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(t)?;
        self.set_write_timeout(t)
    }
}

/// How a client reaches its server.
pub trait Connector: Send + Sync {
    type Stream: Transport + Send;
    /// The `Host` header.
    fn host(&self) -> &str;
    fn connect(&self, timeout: Duration) -> Result<Self::Stream, Error>;
}

/// Plain TCP to `host:port` (`host` as in a URL: an IPv6 address in brackets).
pub struct Tcp {
    pub authority: String,
}

impl Connector for Tcp {
    type Stream = TcpStream;
    fn host(&self) -> &str {
        &self.authority
    }
    fn connect(&self, timeout: Duration) -> Result<TcpStream, Error> {
        tcp(&self.authority, 80, timeout)
    }
}

/// The agent's API on a Unix socket.
pub struct Unix(pub PathBuf);

impl Connector for Unix {
    type Stream = UnixStream;
    fn host(&self) -> &str {
        "localhost"
    }
    fn connect(&self, _: Duration) -> Result<UnixStream, Error> {
        UnixStream::connect(&self.0)
            .map_err(|e| Error::Connect(format!("{}: {e}", self.0.display())))
    }
}

/// The authority and the path prefix (empty or starting with `/`) of an `http://` base URL
/// such as `http://127.0.0.1:10267` or `http://host:port/prefix`.
pub fn split_http_base(base: &str) -> (&str, &str) {
    let rest = base.strip_prefix("http://").unwrap_or(base);
    match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    }
}

/// `host` and `port` of an authority (`host`, `host:port`, `[v6]`, `[v6]:port`).
pub(super) fn split_authority(authority: &str, default_port: u16) -> Option<(&str, u16)> {
    let (host, port) = match authority.strip_prefix('[') {
        Some(rest) => {
            let (h, after) = rest.split_once(']')?;
            (h, after.strip_prefix(':'))
        }
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => default_port,
    };
    (!host.is_empty()).then_some((host, port))
}

fn tcp(authority: &str, default_port: u16, timeout: Duration) -> Result<TcpStream, Error> {
    let (host, port) = split_authority(authority, default_port)
        .ok_or_else(|| Error::Connect(format!("{authority}: not host:port")))?;
    let addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| Error::Connect(format!("{authority}: {e}")))?;
    let mut last = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) if e.kind() == io::ErrorKind::TimedOut => Error::Timeout,
        Some(e) => Error::Connect(format!("{authority}: {e}")),
        None => Error::Connect(format!("{authority}: no address")),
    })
}
