//! Request framing: the head, Content-Length, and the bytes of a response.

use std::io::{self, Write};

use super::*;

pub(super) struct Head {
    pub(super) method: String,
    pub(super) target: String,
    pub(super) minor: u8,
    pub(super) headers: Vec<(String, String)>,
    /// Bytes of `buf` the head took.
    pub(super) len: usize,
}

pub(super) struct Refusal(pub(super) u16, pub(super) &'static str, pub(super) String);

/// A parsed head's headers as owned (name, value) pairs; a value that is not UTF-8 is read
/// lossily. The local API's server and the apiserver stand-in both read heads this way.
pub fn owned_headers(headers: &[httparse::Header]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect()
}

/// Parses the request head at the start of `buf`; `Ok(None)` while it is incomplete.
pub(super) fn parse_head(buf: &[u8], max_head: usize) -> Result<Option<Head>, Refusal> {
    if !buf.is_empty() {
        let mut slots = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Request::new(&mut slots);
        match parsed.parse(buf) {
            Ok(httparse::Status::Complete(len)) => {
                return Ok(Some(Head {
                    method: parsed.method.unwrap_or_default().to_owned(),
                    target: parsed.path.unwrap_or_default().to_owned(),
                    minor: parsed.version.unwrap_or(1),
                    headers: owned_headers(parsed.headers),
                    len,
                }))
            }
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => {
                return Err(Refusal(
                    431,
                    "headers_too_large",
                    "more than 64 request headers".into(),
                ))
            }
            Err(e) => {
                return Err(Refusal(
                    400,
                    "bad_request",
                    format!("malformed HTTP request: {e}"),
                ))
            }
        }
    }
    if buf.len() >= max_head {
        return Err(Refusal(
            431,
            "headers_too_large",
            format!("request heads are limited to {} KiB", max_head / 1024),
        ));
    }
    Ok(None)
}

/// True if the client asked to close after this request (`close` in any Connection header's list).
pub(super) fn wants_close(req: &Request) -> bool {
    req.headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("Connection"))
        .flat_map(|(_, v)| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("close"))
}

/// Frames `data` as the server frames what a connection sends, request after request, with
/// the agent's caps, and panics where an invariant breaks. For the fuzz target `http_framing`.
#[doc(hidden)]
pub fn fuzz_framing(data: &[u8]) {
    let (max_head, max_body) = (super::MAX_REQUEST_HEAD, super::MAX_REQUEST_BODY);
    let mut buf = data;
    loop {
        // The server never holds more than `max_head` bytes while it waits for a head.
        let head = match parse_head(&buf[..buf.len().min(max_head)], max_head) {
            Ok(Some(head)) => head,
            Ok(None) => return assert!(buf.len() < max_head),
            Err(Refusal(status, ..)) => return assert!(matches!(status, 400 | 431)),
        };
        assert!(head.len > 0 && head.len <= buf.len().min(max_head));
        let req = Request {
            method: head.method,
            target: head.target,
            headers: head.headers,
            body: Vec::new(),
        };
        let _ = wants_close(&req);
        match body_length(&req, max_body) {
            Ok(n) => {
                assert!(n <= max_body);
                let Some(rest) = buf.get(head.len + n..) else {
                    return;
                };
                buf = rest;
            }
            Err(Refusal(status, ..)) => return assert!(matches!(status, 400 | 411 | 413)),
        }
    }
}

pub(super) fn body_length(req: &Request, max_body: usize) -> Result<usize, Refusal> {
    if req.header("Transfer-Encoding").is_some() {
        return Err(Refusal(
            411,
            "length_required",
            "send request bodies with Content-Length, not Transfer-Encoding".into(),
        ));
    }
    let mut lengths = req
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("Content-Length"));
    let Some((_, first)) = lengths.next() else {
        return Ok(0);
    };
    if lengths.any(|(_, v)| v != first) {
        return Err(Refusal(
            400,
            "bad_request",
            "conflicting Content-Length headers".into(),
        ));
    }
    // Digits only (no sign), as RFC 9110 has it; a number past u64 is merely too large.
    let digits = first.trim_matches([' ', '\t']);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Refusal(
            400,
            "bad_request",
            format!("invalid Content-Length {first:?}"),
        ));
    }
    let n: u64 = digits.parse().unwrap_or(u64::MAX);
    if n > max_body as u64 {
        return Err(Refusal(
            413,
            "payload_too_large",
            format!("request bodies are limited to {} KiB", max_body / 1024),
        ));
    }
    Ok(n as usize)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

pub(super) fn write_response(
    stream: &mut impl Write,
    resp: Response,
    close: bool,
) -> io::Result<()> {
    let body = resp.body.as_slice();
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
        resp.status,
        reason(resp.status),
        resp.content_type,
        body.len()
    );
    for (k, v) in &resp.headers {
        head.push_str(k);
        head.push_str(": ");
        head.push_str(v);
        head.push_str("\r\n");
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    if body.len() <= 16 * 1024 {
        let mut all = head.into_bytes();
        all.extend_from_slice(body);
        stream.write_all(&all)
    } else {
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)
    }
}
