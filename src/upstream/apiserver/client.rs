//! The HTTPS client: each request with the credential's header, bodies read to a limit, the
//! errors mapped; one request for `fleet::kube`.

use std::sync::{Arc, MutexGuard};

use super::{Inner, Shared};
use crate::http::client::{Client, Request, Response, Tls, TlsStream};
use crate::upstream::{UpstreamError, MAX_BODY};

pub(super) type Https = Client<Tls>;

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

/// Percent-encoding for a query value.
pub(super) fn q(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
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
    ) -> Result<Response<TlsStream>, UpstreamError> {
        self.lock().watch.requests += 1;
        let auth = self.credential.header().map_err(UpstreamError::Connect)?;
        let mut headers = vec![("Accept", "application/json")];
        if let Some(a) = &auth {
            headers.push(("Authorization", a));
        }
        if let Some((ct, _)) = &body {
            headers.push(("Content-Type", ct));
        }
        let req = Request {
            method,
            target: path,
            headers: &headers,
            body: body.as_ref().map(|(_, b)| &b[..]),
        };
        client.send(&req).map_err(map_error)
    }

    pub(super) fn read_all(mut resp: Response<TlsStream>) -> Result<(u16, Vec<u8>), UpstreamError> {
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

pub(super) fn map_error(e: crate::http::client::Error) -> UpstreamError {
    // A certificate the CA does not vouch for, a refused client certificate: no connection.
    crate::upstream::from_http(e, UpstreamError::Connect)
}
