//! The upstreams' HTTP client: ureq 3, one `ureq::Agent` per upstream (YurtHub over TCP, the
//! kube-apiserver over rustls), configured as an edge agent needs it:
//!
//! - no proxy from the environment (`proxy(None)`: `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` are
//!   not read), no redirects followed (a 3xx is a status), no status turned into an error;
//! - the response head at most [`MAX_HEAD`] bytes (`max_response_header_size`); bodies read whole
//!   are refused over their limit, on the declared `Content-Length` before a byte is read
//!   ([`Response::read_to_vec`]), else once the limit is passed;
//! - at most one idle connection (`max_idle_connections(_per_host)(1)`, or none: YurtHub,
//!   on loopback, gets a fresh connection each call); watches read their stream under a
//!   per-read timeout (`timeout_per_read`) as well as the call's deadline, their head within
//!   the connect timeout;
//! - interim answers (`100 Continue`, `103 Early Hints`) read past by ureq-proto.
//!
//! **TLS is our connector**, not ureq's `TlsConfig`: [`TlsConnector`] wraps the
//! `rustls::ClientConfig` that `upstream::apiserver::tls` builds (ring's provider, only our CA,
//! the client certificate whose key was checked to fit at start) in ureq's
//! `unversioned::transport` API. `TlsConfig` cannot take a `ClientConfig`: it builds its own
//! (parsing the key again, and refusing a key that does not fit only at the first handshake),
//! verifies only the URL's host (the name comes from `tls.rs` here, where a kubeconfig
//! `tls-server-name` would set it), and its rustls feature turns on rustls' `logging`. Being
//! unversioned, that API may change in a 3.x release: ureq is pinned to `~3.5` in Cargo.toml. The handshake runs in the connector
//! under the connect timeout, so that a server certificate our CA does not vouch for is "not
//! connected": no request was sent.
//!
//! **No write is sent twice.** ureq 3.5 never resends a request: it probes a pooled connection
//! before reusing it (a server that closed it while idle is noticed and a fresh connection
//! made), and a request that fails after it went out is an error. Measured in the tests below
//! (a DELETE, a PUT and a POST on a connection the server drops after reading them: each
//! received once). Failures before a byte left (no TCP connection, a TLS refusal) are marked
//! [`NotSent`], which `upstream::from_http` maps to `UpstreamError::Connect` ("disconnected");
//! every other failure of a write may have been carried out, and is said so by the callers
//! (`agent::upgrade`'s "uncertain", the local API's 504 `upstream_no_answer`).

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use ureq::unversioned::resolver::DefaultResolver;
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, TcpConnector,
    Transport, TransportAdapter,
};

/// The response head (status line and headers).
pub const MAX_HEAD: usize = 16 * 1024;
const USER_AGENT: &str = concat!("yurt-ota/", env!("CARGO_PKG_VERSION"));

/// A failure before the request left: no connection, or the TLS handshake refused.
#[derive(Debug)]
pub struct NotSent(pub String);

impl fmt::Display for NotSent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotSent {}

fn not_sent(m: String) -> ureq::Error {
    ureq::Error::Other(Box::new(NotSent(m)))
}

/// How long a call may take.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// The TCP connect and the TLS handshake; for a watch, also its answer's head.
    pub connect: Duration,
    /// The whole exchange, body included.
    pub call: Duration,
    /// Each read of the answer (watches: a stream silent this long is dead).
    pub per_read: Option<Duration>,
    /// One idle connection kept for the next call (else a fresh one each call).
    pub keep_idle: bool,
}

/// An agent for one upstream: TCP, and TLS over it when `tls` is given.
pub fn agent(tls: Option<TlsConnector>, t: Timeouts) -> ureq::Agent {
    let mut config = ureq::Agent::config_builder()
        .proxy(None)
        .max_redirects(0)
        .max_redirects_will_error(false)
        .http_status_as_error(false)
        .max_response_header_size(MAX_HEAD)
        .max_idle_connections(usize::from(t.keep_idle))
        .max_idle_connections_per_host(usize::from(t.keep_idle))
        .user_agent(USER_AGENT)
        .timeout_connect(Some(t.connect))
        .timeout_global(Some(t.call))
        .timeout_per_read(t.per_read);
    if t.per_read.is_some() {
        // A watch: its answer's head comes within the connect timeout, its events as they come.
        config = config.timeout_recv_response(Some(t.connect));
    }
    let config = config.build();
    ureq::Agent::with_parts(
        config,
        Direct.chain(tls.unwrap_or_default()),
        DefaultResolver::default(),
    )
}

/// One request; a `Content-Length: 0` goes with an empty POST, PUT or PATCH.
pub fn send(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Response, ureq::Error> {
    let mut b = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = match body {
        Some(body) => agent.run(b.body(body)?)?,
        None if matches!(method, "POST" | "PUT" | "PATCH") => agent.run(b.body(&[][..])?)?,
        None => agent.run(b.body(())?)?,
    };
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let status = resp.status().as_u16();
    // A 101 is never final for us (we ask no protocol switch), and 600 and up are not HTTP:
    // only a final status a client understands is relayed.
    if !(200..=599).contains(&status) {
        return Err(ureq::Error::Other(
            format!("answered with HTTP status {status}, which is not a valid final status (200 to 599)").into(),
        ));
    }
    let body = resp.into_body();
    let length = body.content_length();
    Ok(Response {
        status,
        content_type,
        length,
        body: BufReader::new(body.into_with_config().reader()),
    })
}

/// An answer: its status, and its body as `Read` and `BufRead`.
pub struct Response {
    pub status: u16,
    pub content_type: Option<String>,
    /// The declared `Content-Length`.
    length: Option<u64>,
    body: BufReader<ureq::BodyReader<'static>>,
}

impl Response {
    /// The whole body, refused when over `limit`: on its declared length before reading it
    /// (on a slow board, reading 32 MiB only to throw it away could outlast the timeout), else
    /// once `limit` bytes have been read.
    pub fn read_to_vec(&mut self, limit: u64) -> Result<Vec<u8>, ureq::Error> {
        let mut body = match self.length {
            Some(n) if n > limit => return Err(ureq::Error::BodyExceedsLimit(limit)),
            Some(n) => Vec::with_capacity(n as usize),
            None => Vec::new(),
        };
        (&mut self.body).take(limit + 1).read_to_end(&mut body)?;
        if body.len() as u64 > limit {
            return Err(ureq::Error::BodyExceedsLimit(limit));
        }
        Ok(body)
    }
}

impl Read for Response {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.body.read(out)
    }
}

impl BufRead for Response {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.body.fill_buf()
    }
    fn consume(&mut self, n: usize) {
        self.body.consume(n)
    }
}

/// TCP, with a failure to connect marked [`NotSent`] (a connect timeout stays a timeout).
#[derive(Debug)]
struct Direct;

impl Connector for Direct {
    type Out = Box<dyn Transport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<()>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        TcpConnector::default()
            .connect(details, chained)
            .map(|t| t.map(Transport::boxed))
            .map_err(|e| match e {
                ureq::Error::Timeout(t) => ureq::Error::Timeout(t),
                e => not_sent(format!("{}: {e}", authority(details))),
            })
    }
}

fn authority(details: &ConnectionDetails) -> String {
    details
        .uri
        .authority()
        .map_or_else(String::new, |a| a.to_string())
}

/// TLS with our rustls configuration, the server verified as `name`. Without a configuration
/// (YurtHub) it passes the TCP connection through, and an `https://` URL is refused by ureq.
#[derive(Default)]
pub struct TlsConnector(Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>);

impl TlsConnector {
    pub fn new(config: Arc<rustls::ClientConfig>, name: ServerName<'static>) -> TlsConnector {
        TlsConnector(Some((config, name)))
    }
}

impl fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TlsConnector")
            .field(&self.0.as_ref().map(|(_, n)| n))
            .finish()
    }
}

impl<In: Transport> Connector<In> for TlsConnector {
    type Out = Either<In, TlsTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let Some(transport) = chained else {
            return Ok(None);
        };
        let Some((config, name)) = &self.0 else {
            return Ok(Some(Either::A(transport)));
        };
        if !details.needs_tls() || transport.is_tls() {
            return Ok(Some(Either::A(transport)));
        }
        let mut conn = rustls::ClientConnection::new(config.clone(), name.clone())
            .map_err(|e| not_sent(format!("TLS: {e}")))?;
        let mut sock = TransportAdapter::new(transport.boxed(), details.current_time.clone());
        sock.set_timeout(details.timeout);
        // The handshake here, under the connect timeout: a refusal is "not connected".
        while conn.is_handshaking() {
            conn.complete_io(&mut sock).map_err(|e| {
                let e = ureq::Error::from(e);
                match e {
                    ureq::Error::Timeout(_) => e,
                    ureq::Error::Io(io) => not_sent(match tls_error(&io) {
                        Some(m) => m,
                        None => format!("{}: TLS handshake: {io}", authority(details)),
                    }),
                    e => not_sent(format!("{}: TLS handshake: {e}", authority(details))),
                }
            })?;
        }
        let buffers = LazyBuffers::new(
            details.config.input_buffer_size(),
            details.config.output_buffer_size(),
        );
        Ok(Some(Either::B(TlsTransport {
            buffers,
            stream: rustls::StreamOwned::new(conn, sock),
        })))
    }
}

/// What a rustls refusal inside an I/O error says, worded for a person.
pub fn tls_error(e: &io::Error) -> Option<String> {
    let tls = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    Some(match tls {
        rustls::Error::InvalidCertificate(c) => {
            format!("TLS: server certificate not trusted ({c:?})")
        }
        t => format!("TLS: {t}"),
    })
}

pub struct TlsTransport {
    buffers: LazyBuffers,
    stream: rustls::StreamOwned<rustls::ClientConnection, TransportAdapter>,
}

impl fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTransport").finish()
    }
}

impl Transport for TlsTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.stream.sock.set_timeout(timeout);
        let output = &self.buffers.output()[..amount];
        self.stream.write_all(output)?;
        self.stream.flush()?;
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.stream.sock.set_timeout(timeout);
        let input = self.buffers.input_append_buf();
        let n = self.stream.read(input)?;
        self.buffers.input_appended(n);
        Ok(n > 0)
    }

    fn is_open(&mut self) -> bool {
        self.stream.sock.get_mut().is_open()
    }

    fn is_tls(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests;
