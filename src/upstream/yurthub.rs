//! YurtHub's OTA API over plain HTTP (SPEC section 2).

use std::time::Duration;

use ureq::Agent;

use super::{excerpt, Relay, Upstream, UpstreamError, MAX_BODY, MAX_RELAY_BODY};

pub struct Yurthub {
    base: String,
    agent: Agent,
}

impl Yurthub {
    /// `base` is `http://host:port` without a trailing slash; `timeout` bounds each whole call.
    pub fn new(base: &str, timeout: Duration) -> Yurthub {
        let agent = Agent::config_builder()
            .timeout_connect(Some(timeout))
            .timeout_global(Some(timeout))
            // Non-2xx is data to relay, not an error.
            .http_status_as_error(false)
            // YurtHub is on loopback: never send its traffic through an environment proxy.
            .proxy(None)
            .max_redirects(0)
            // A fresh connection per call: a pooled one left over from before a YurtHub restart
            // would fail the call, and the request path does not retry. On loopback a connect
            // costs microseconds.
            .max_idle_connections(0)
            .max_idle_connections_per_host(0)
            .user_agent(concat!("yurt-ota/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Yurthub {
            base: base.to_owned(),
            agent,
        }
    }

    /// An upgrade or imagepull. Its status is what matters: YurtHub may have started the
    /// upgrade whatever follows, so a body over `MAX_RELAY_BODY` is cut there and the status
    /// relayed, never turned into an error.
    fn post(&self, path: &str) -> Result<Relay, UpstreamError> {
        use std::io::Read;
        let resp = self.agent.post(format!("{}{path}", self.base)).send_empty();
        let mut resp = resp.map_err(map_error)?;
        let (status, content_type) = head(&resp)?;
        let mut body = Vec::new();
        resp.body_mut()
            .as_reader()
            .take(MAX_RELAY_BODY + 1)
            .read_to_end(&mut body)
            .map_err(|e| map_error(ureq::Error::Io(e)))?;
        if body.len() as u64 > MAX_RELAY_BODY {
            body.truncate(MAX_RELAY_BODY as usize);
            log::warn!(
                "{}{path} answered {status} with a body over {} KiB; relaying its first {} KiB",
                self.base,
                MAX_RELAY_BODY >> 10,
                MAX_RELAY_BODY >> 10
            );
        }
        Ok(Relay {
            status,
            content_type,
            body,
        })
    }
}

/// The status and content type, once the status is known to be one a client can be given.
fn head(resp: &ureq::http::Response<ureq::Body>) -> Result<(u16, Option<String>), UpstreamError> {
    let status = resp.status().as_u16();
    // The HTTP types accept 100 to 999; only a final status a client understands is relayed
    // (a 1xx is never final, 600 and up are not HTTP).
    if !(200..=599).contains(&status) {
        return Err(UpstreamError::Io(format!(
            "answered with HTTP status {status}, which is not a valid final status (200 to 599)"
        )));
    }
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok((status, content_type))
}

/// A `GET /pods` answer, refused whole when over `MAX_BODY`.
fn read(
    resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<Relay, UpstreamError> {
    let mut resp = resp.map_err(map_error)?;
    let (status, content_type) = head(&resp)?;
    // Refused on the declared length, before reading a byte of it: on a slow board, reading 32
    // MiB only to throw it away could outlast upstream.timeout.
    let declared = resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return Err(UpstreamError::TooLarge);
    }
    let body = resp
        .body_mut()
        .with_config()
        .limit(MAX_BODY)
        .read_to_vec()
        .map_err(map_error)?;
    Ok(Relay {
        status,
        content_type,
        body,
    })
}

fn map_error(e: ureq::Error) -> UpstreamError {
    super::from_ureq(e, UpstreamError::Io)
}

impl Upstream for Yurthub {
    fn list_pods(&self) -> Result<Vec<u8>, UpstreamError> {
        let relay = read(self.agent.get(format!("{}/pods", self.base)).call())?;
        if relay.status != 200 {
            return Err(UpstreamError::Status {
                code: relay.status,
                body: excerpt(&relay.body),
            });
        }
        Ok(relay.body)
    }

    fn upgrade(&self, namespace: &str, pod: &str) -> Result<Relay, UpstreamError> {
        self.post(&format!(
            "/openyurt.io/v1/namespaces/{namespace}/pods/{pod}/upgrade"
        ))
    }

    fn imagepull(&self, namespace: &str, pod: &str) -> Result<Relay, UpstreamError> {
        self.post(&format!(
            "/openyurt.io/v1/namespaces/{namespace}/pods/{pod}/imagepull"
        ))
    }

    fn kind(&self) -> &'static str {
        "yurthub"
    }

    fn url(&self) -> &str {
        &self.base
    }
}
