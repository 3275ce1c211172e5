//! The client's answer reading for the fuzz target `http_response`.

use std::io;
use std::time::Duration;

use super::{Conn, Error, Request, Transport};

/// An answer in memory, handed out `step` bytes a read; what is written is dropped.
struct Mem<'a> {
    data: &'a [u8],
    step: usize,
}

impl io::Read for Mem<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.data.len().min(self.step).min(out.len());
        out[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

impl io::Write for Mem<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for Mem<'_> {
    fn set_timeouts(&self, _: Option<Duration>) -> io::Result<()> {
        Ok(())
    }
}

/// Status and body of `data` read as an answer to a GET, `step` bytes a read.
fn read(data: &[u8], step: usize, limit: u64) -> Result<(u16, Vec<u8>), String> {
    let req = Request {
        method: "GET",
        target: "/",
        headers: &[],
        body: None,
    };
    let conn = Conn::new(Mem { data, step });
    let mut resp = conn.exchange("h", &req, None).map_err(|e| kind(&e))?;
    let body = resp.read_to_vec(limit).map_err(|e| kind(&e))?;
    assert!(body.len() as u64 <= limit);
    Ok((resp.status, body))
}

fn kind(e: &Error) -> String {
    match e {
        Error::Io(io) => format!("io {:?}", io.kind()),
        e => e.to_string(),
    }
}

/// Reads `data[1..]` as an answer whole and again `data[0]` bytes a read: no panic, a body
/// within the limit, and the same status, body or error either way.
#[doc(hidden)]
pub fn fuzz_response(data: &[u8]) {
    let Some((&step, data)) = data.split_first() else {
        return;
    };
    let limit = 4096;
    let whole = read(data, usize::MAX, limit);
    let split = read(data, usize::from(step.max(1)), limit);
    assert_eq!(whole, split);
}
