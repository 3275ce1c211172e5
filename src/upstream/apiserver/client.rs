//! The HTTPS client: each request with the credential's header, bodies read to a limit, the
//! errors mapped; one request for `fleet::kube`.

use std::sync::{Arc, MutexGuard};

use super::{Inner, Shared};
use crate::upstream::http::{self, Response};
use crate::upstream::{UpstreamError, MAX_BODY};

/// A ureq agent to the apiserver (`upstream::http`: our rustls configuration, no proxy, no
/// redirects, one idle connection), and the server's `https://host:port`.
pub(super) struct Https {
    pub(super) agent: ureq::Agent,
    pub(super) server: String,
}

/// One request over the calls client, for `fleet::kube`.
#[derive(Clone)]
pub(super) struct Calls(pub(super) Arc<Inner>);

impl crate::fleet::kube::Kube for Calls {
    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<(u16, Vec<u8>), String> {
        let i = &self.0;
        let body = body.map(|b| ("application/json", b.to_vec()));
        let resp = i
            .request(&i.calls, method, path, body)
            .map_err(|e| e.to_string())?;
        Inner::read_all(resp).map_err(|e| e.to_string())
    }

    /// A watch over the streams client (no read limit but the watch's own timeout).
    fn watch(&self, path: &str) -> Result<(u16, Box<dyn std::io::BufRead + Send>), String> {
        let i = &self.0;
        let resp = i
            .request(&i.streams, "GET", path, None)
            .map_err(|e| e.to_string())?;
        Ok((resp.status, Box::new(resp)))
    }
}

/// Everything but RFC 3986's unreserved characters (`A-Z a-z 0-9 - . _ ~`) is encoded.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encoding for a query value (the `percent-encoding` crate).
pub(super) fn q(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, QUERY_VALUE).to_string()
}

impl Inner {
    pub(super) fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn request(
        &self,
        client: &Https,
        method: &str,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Response, UpstreamError> {
        self.lock().watch.requests += 1;
        let auth = self.credential.header().map_err(UpstreamError::Connect)?;
        let mut headers = vec![("Accept", "application/json")];
        if let Some(a) = &auth {
            headers.push(("Authorization", a));
        }
        if let Some((ct, _)) = &body {
            headers.push(("Content-Type", ct));
        }
        let url = format!("{}{path}", client.server);
        http::send(
            &client.agent,
            method,
            &url,
            &headers,
            body.as_ref().map(|(_, b)| &b[..]),
        )
        .map_err(map_error)
    }

    pub(super) fn read_all(mut resp: Response) -> Result<(u16, Vec<u8>), UpstreamError> {
        let body = resp.read_to_vec(MAX_BODY).map_err(map_error)?;
        Ok((resp.status, body))
    }

    pub(super) fn get(&self, path: &str) -> Result<(u16, Vec<u8>), UpstreamError> {
        Self::read_all(self.request(&self.calls, "GET", path, None)?)
    }

    pub(super) fn node(&self) -> &str {
        &self.settings.node_name
    }
}

pub(super) fn map_error(e: ureq::Error) -> UpstreamError {
    // A certificate the CA does not vouch for, a refused client certificate: no connection
    // (`from_http`). An answer that is not HTTP came after the request went out: it may have
    // been carried out, so not `Connect` ("disconnected").
    crate::upstream::from_http(e, UpstreamError::Io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// The same encoding as the hand-written one it replaced: unreserved characters kept, every
    /// other byte (UTF-8 included) as `%XX` in upper case.
    #[test]
    fn query_values_keep_only_unreserved_characters() {
        assert_eq!(q("spec.nodeName=edge-1"), "spec.nodeName%3Dedge-1");
        assert_eq!(q("app=a,tier~x_y"), "app%3Da%2Ctier~x_y");
        assert_eq!(q("a b/ü?&#+"), "a%20b%2F%C3%BC%3F%26%23%2B");
        assert_eq!(q("123456"), "123456");
    }

    /// A server that reads one request and answers something that is not HTTP.
    fn garbage_server() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut got = Vec::new();
            let mut b = [0u8; 1];
            while !got.ends_with(b"\r\n\r\n{}") && s.read(&mut b).unwrap_or(0) == 1 {
                got.push(b[0]);
            }
            let _ = s.write_all(b"this is not HTTP\r\n\r\n");
        });
        url
    }

    /// The apiserver read the DELETE: an answer it garbled is not "not connected", which the
    /// upgrade would answer as YurtHub's 503 "disconnected" (the DELETE not sent).
    #[test]
    fn a_delete_answered_with_garbage_may_have_been_carried_out() {
        let url = garbage_server();
        let t = std::time::Duration::from_secs(2);
        let agent = http::agent(
            None,
            http::Timeouts {
                connect: t,
                call: t,
                per_read: None,
                keep_idle: true,
            },
        );
        let e = http::send(
            &agent,
            "DELETE",
            &format!("{url}/api/v1/namespaces/ns/pods/p"),
            &[],
            Some(b"{}"),
        )
        .err()
        .unwrap();
        let e = map_error(e);
        assert!(!matches!(e, UpstreamError::Connect(_)), "{e:?}");
    }
}
