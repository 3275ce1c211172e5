//! YurtHub's OTA API over plain HTTP (SPEC section 2).

use std::io::Read;
use std::time::Duration;

use super::http::{self, Response, Timeouts};
use super::{excerpt, Relay, Upstream, UpstreamError, MAX_BODY, MAX_RELAY_BODY};

pub struct Yurthub {
    base: String,
    agent: ureq::Agent,
}

impl Yurthub {
    /// `base` is `http://host:port` without a trailing slash; `timeout` bounds each whole call.
    /// YurtHub is on loopback: no environment proxy, no redirects (`upstream::http`).
    pub fn new(base: &str, timeout: Duration) -> Yurthub {
        Yurthub {
            base: base.to_owned(),
            // A fresh connection per call (no pool): a pooled one left over from before a
            // YurtHub restart could fail an upgrade call, which is never retried. On loopback a
            // connect costs microseconds.
            agent: http::agent(
                None,
                Timeouts {
                    connect: timeout,
                    call: timeout,
                    per_read: None,
                    keep_idle: false,
                },
            ),
        }
    }

    fn call(&self, method: &str, path: &str) -> Result<Response, UpstreamError> {
        let url = format!("{}{path}", self.base);
        http::send(&self.agent, method, &url, &[], None).map_err(map_error)
    }

    /// An upgrade or imagepull. Its status is what matters: YurtHub may have started the
    /// upgrade whatever follows, so a body over `MAX_RELAY_BODY` is cut there and the status
    /// relayed, never turned into an error.
    fn post(&self, path: &str) -> Result<Relay, UpstreamError> {
        let mut resp = self.call("POST", path)?;
        let (status, content_type) = (resp.status, resp.content_type.clone());
        let mut body = Vec::new();
        (&mut resp)
            .take(MAX_RELAY_BODY + 1)
            .read_to_end(&mut body)
            .map_err(|e| map_error(e.into()))?;
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

/// A `GET /pods` answer, refused whole when over `MAX_BODY` (on its declared length before
/// reading a byte of it).
fn read(mut resp: Response) -> Result<Relay, UpstreamError> {
    let body = resp.read_to_vec(MAX_BODY).map_err(map_error)?;
    Ok(Relay {
        status: resp.status,
        content_type: resp.content_type.take(),
        body,
    })
}

fn map_error(e: ureq::Error) -> UpstreamError {
    super::from_http(e, UpstreamError::Io)
}

impl Upstream for Yurthub {
    fn list_pods(&self) -> Result<Vec<u8>, UpstreamError> {
        let relay = read(self.call("GET", "/pods")?)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;

    /// A hub on loopback answering each of its connections with one of `answers`, after
    /// reading the request head.
    fn hub(answers: Vec<&'static str>) -> (String, std::thread::JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        let h = std::thread::spawn(move || {
            for a in answers {
                let (mut s, _) = l.accept().unwrap();
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && s.read(&mut b).unwrap_or(0) == 1 {
                    head.push(b[0]);
                }
                s.write_all(a.as_bytes()).unwrap();
            }
        });
        (base, h)
    }

    #[test]
    fn a_poll_and_an_upgrade_answered_after_a_1xx_are_not_failures() {
        // Issue 23 item 8: the poll failed on a 100 Continue, and an upgrade the hub accepted
        // after a 103 Early Hints was reported to the device app as `502 ... cannot reach`.
        let (base, h) = hub(vec![
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{\"a\":\"b\"}",
            "HTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\n\
             HTTP/1.1 200 OK\r\nContent-Length: 27\r\n\r\nStart updating pod ns/pod-1",
        ]);
        let hub = Yurthub::new(&base, Duration::from_secs(2));
        assert_eq!(hub.list_pods().unwrap(), b"{\"a\":\"b\"}");
        let relay = hub.upgrade("ns", "pod-1").unwrap();
        assert_eq!(
            (relay.status, relay.body.as_slice()),
            (200, &b"Start updating pod ns/pod-1"[..])
        );
        h.join().unwrap();
    }
}
