//! The answer: its head's framing, and its body decoded (Content-Length, chunked, to close).

use std::io::{self, BufRead, Read};

use super::{bad, Conn, Error, Transport, MAX_CHUNK_LINE, MAX_HEAD};

/// Status, headers, body framing.
pub(super) type Head = (u16, Vec<(String, String)>, Framing);

pub(super) fn head(
    method: &str,
    status: u16,
    headers: Vec<(String, String)>,
) -> Result<Head, Error> {
    // Interim 1xx answers were read past (`read_head`); a 101 is never final for this client
    // (it asks no protocol switch), and 600 and up are not HTTP.
    if !(200..=599).contains(&status) {
        return Err(Error::Protocol(format!(
            "answered with HTTP status {status}, which is not a valid final status (200 to 599)"
        )));
    }
    fn values<'a>(
        headers: &'a [(String, String)],
        name: &'a str,
    ) -> impl Iterator<Item = &'a str> + 'a {
        headers
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
    }
    let framing = if method == "HEAD" || status == 204 || status == 304 {
        Framing::Done
    } else if let Some(last) = values(&headers, "transfer-encoding").last() {
        if last.eq_ignore_ascii_case("chunked") {
            Framing::Chunked(Chunk::Size)
        } else {
            Framing::Close
        }
    } else {
        let mut length: Option<u64> = None;
        for v in values(&headers, "content-length") {
            let n = (!v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .then(|| v.parse::<u64>().ok())
                .flatten()
                .ok_or_else(|| Error::Protocol(format!("bad Content-Length {v:?}")))?;
            if length.is_some_and(|l| l != n) {
                return Err(Error::Protocol("two different Content-Lengths".into()));
            }
            length = Some(n);
        }
        match length {
            Some(0) => Framing::Done,
            Some(n) => Framing::Length(n),
            None => Framing::Close,
        }
    };
    Ok((status, headers, framing))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    Length(u64),
    Chunked(Chunk),
    /// Ends when the server closes.
    Close,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Chunk {
    Size,
    /// Bytes left of a chunk; at 0 its CRLF is next.
    Data(u64),
    Trailers(usize),
}

/// `Read` by way of the reader's own buffer (`BufRead`).
fn read_buffered(r: &mut impl BufRead, out: &mut [u8]) -> io::Result<usize> {
    let b = r.fill_buf()?;
    let n = b.len().min(out.len());
    out[..n].copy_from_slice(&b[..n]);
    r.consume(n);
    Ok(n)
}

impl<S: Transport> Read for Conn<S> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        read_buffered(self, out)
    }
}

impl<S: Transport> BufRead for Conn<S> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos == self.end {
            self.arm()?;
            let n = self.s.read(&mut self.buf)?;
            self.pos = 0;
            self.end = n;
        }
        Ok(&self.buf[self.pos..self.end])
    }
    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.end);
    }
}

impl<S: Transport> Conn<S> {
    /// One line without its CRLF (or LF), at most `max` bytes; an EOF before its end is an error.
    fn line(&mut self, max: usize, what: &str) -> io::Result<Vec<u8>> {
        let mut line = Vec::new();
        loop {
            let b = self.fill_buf()?;
            if b.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("connection closed in a {what}"),
                ));
            }
            let (part, found) = match b.iter().position(|&c| c == b'\n') {
                Some(i) => (&b[..i], true),
                None => (b, false),
            };
            if line.len() + part.len() > max {
                return Err(bad(format!("{what} over {max} bytes")));
            }
            line.extend_from_slice(part);
            let used = part.len() + usize::from(found);
            self.consume(used);
            if found {
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(line);
            }
        }
    }
}

/// A response: status and headers read, the body still on the connection. As `Read` and
/// `BufRead` it is the body, decoded.
pub struct Response<S: Transport> {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub(super) conn: Option<Conn<S>>,
    pub(super) framing: Framing,
}

impl<S: Transport> Response<S> {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn conn(&mut self) -> &mut Conn<S> {
        self.conn
            .as_mut()
            .expect("a response has its connection until dropped")
    }

    /// The whole body, refused when over `limit`: on its declared length before reading it,
    /// else once `limit` bytes have been read.
    pub fn read_to_vec(&mut self, limit: u64) -> Result<Vec<u8>, Error> {
        // Sized from the declared length: one block (mmapped when large, returned whole when
        // freed) instead of a doubling series of them left between other allocations.
        let mut body = match self.framing {
            Framing::Length(n) if n > limit => return Err(Error::TooLarge),
            Framing::Length(n) => Vec::with_capacity(n as usize),
            _ => Vec::new(),
        };
        loop {
            let b = self.fill_buf()?;
            if b.is_empty() {
                return Ok(body);
            }
            if (body.len() + b.len()) as u64 > limit {
                return Err(Error::TooLarge);
            }
            body.extend_from_slice(b);
            let n = b.len();
            self.consume(n);
        }
    }

    /// Steps the chunked decoder to the next data; the bytes left of it (0: the body ended).
    fn chunked(&mut self, mut c: Chunk) -> io::Result<u64> {
        loop {
            c = match c {
                Chunk::Data(0) => {
                    if !self.conn().line(2, "chunk's end")?.is_empty() {
                        return Err(bad("chunk longer than its size"));
                    }
                    Chunk::Size
                }
                Chunk::Data(n) => {
                    self.framing = Framing::Chunked(c);
                    return Ok(n);
                }
                Chunk::Size => {
                    let line = self.conn().line(MAX_CHUNK_LINE, "chunk-size line")?;
                    let size = line.split(|&b| b == b';').next().unwrap_or_default();
                    let size = size.trim_ascii();
                    let n = std::str::from_utf8(size)
                        .ok()
                        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit()))
                        .and_then(|s| u64::from_str_radix(s, 16).ok())
                        .ok_or_else(|| bad("bad chunk size"))?;
                    if n == 0 {
                        Chunk::Trailers(0)
                    } else {
                        Chunk::Data(n)
                    }
                }
                Chunk::Trailers(seen) => {
                    let left = MAX_HEAD.saturating_sub(seen);
                    let line = self.conn().line(left, "trailer")?;
                    if line.is_empty() {
                        self.framing = Framing::Done;
                        return Ok(0);
                    }
                    Chunk::Trailers(seen + line.len() + 2)
                }
            };
            self.framing = Framing::Chunked(c);
        }
    }
}

impl<S: Transport> BufRead for Response<S> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        let left = match self.framing {
            Framing::Done => return Ok(&[]),
            Framing::Length(0) => {
                self.framing = Framing::Done;
                return Ok(&[]);
            }
            Framing::Length(n) => n,
            Framing::Close => u64::MAX,
            Framing::Chunked(c) => match self.chunked(c)? {
                0 => return Ok(&[]),
                n => n,
            },
        };
        let close = self.framing == Framing::Close;
        let conn = self.conn.as_mut().expect("a response has its connection");
        let len = conn.fill_buf()?.len();
        if len == 0 {
            if close {
                self.framing = Framing::Done;
                return Ok(&[]);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before the end of the answer",
            ));
        }
        let n = (len as u64).min(left) as usize;
        Ok(&conn.buf[conn.pos..conn.pos + n])
    }

    fn consume(&mut self, n: usize) {
        self.conn().consume(n);
        let n = n as u64;
        match &mut self.framing {
            Framing::Length(left) | Framing::Chunked(Chunk::Data(left)) => {
                *left = left.saturating_sub(n)
            }
            _ => {}
        }
    }
}

impl<S: Transport> Read for Response<S> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        read_buffered(self, out)
    }
}
