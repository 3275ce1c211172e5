//! A watch on the wire: chunked JSON lines (the events, BOOKMARKs, a 410 `ERROR` once the
//! history was compacted past the watcher), until its timeout, the stand-in's stop, a
//! compaction, or the peer leaving.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use super::server::{audit_id, http_date, lock, Shared, Tls};
use super::store::{bookmark_line, status};
use super::Watch;

fn chunk(tls: &mut Tls, data: &[u8]) -> io::Result<()> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    tls.write_all(&out)?;
    tls.flush()
}

fn expired_line(from: u64, compacted: u64) -> Vec<u8> {
    let s = status(
        410,
        "Expired",
        &format!("too old resource version: {from} ({compacted})"),
        None,
    );
    format!("{{\"type\":\"ERROR\",\"object\":{s}}}\n").into_bytes()
}

/// Streams a watch until its timeout, the stand-in's stop, a compaction, or the peer leaving.
/// `true` when it ended cleanly (the connection can carry the next request).
pub(super) fn stream(s: &Shared, tls: &mut Tls, w: &Watch) -> io::Result<bool> {
    let head = format!(
        "HTTP/1.1 200 OK\r\nAudit-Id: {}\r\nCache-Control: no-cache, private\r\nContent-Type: application/json\r\n\
         Date: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        audit_id(),
        http_date()
    );
    tls.write_all(head.as_bytes())?;
    let deadline = Instant::now() + w.timeout;
    let (mut pos, epoch) = match w.from {
        None => {
            let (lines, rv, epoch) = s.cluster.initial(w);
            for l in &lines {
                chunk(tls, l)?;
            }
            if w.initial_events && w.bookmarks {
                chunk(tls, &bookmark_line(w.res, rv, true))?;
            }
            (rv, epoch)
        }
        Some(from) => {
            let (_, _, expired, epoch) = s.cluster.events_after(w, from);
            if expired {
                chunk(tls, &expired_line(from, s.cluster.compacted()))?;
                return end(tls);
            }
            (from, epoch)
        }
    };
    let mut next_bookmark = Instant::now() + s.bookmark_interval;
    // The apiserver's cacher sends a bookmark 2 s before a watch's timeout, so that a client
    // re-watches from a fresh resourceVersion (`cacher.go`, the watcher's bookmark time).
    let mut last_bookmark = if w.bookmarks {
        deadline.checked_sub(Duration::from_secs(2))
    } else {
        None
    };
    loop {
        if s.stop.is_triggered() || *lock(&s.down) {
            return Ok(false);
        }
        let now = Instant::now();
        if now >= deadline {
            return end(tls);
        }
        let (lines, rv, expired, e) = s.cluster.events_after(w, pos);
        if expired || e != epoch {
            chunk(tls, &expired_line(pos, s.cluster.compacted()))?;
            return end(tls);
        }
        for l in &lines {
            chunk(tls, l)?;
        }
        pos = rv;
        let last_due = last_bookmark.is_some_and(|t| now >= t);
        if w.bookmarks && (now >= next_bookmark || last_due) {
            chunk(tls, &bookmark_line(w.res, pos, false))?;
            next_bookmark = now + s.bookmark_interval;
            if last_due {
                last_bookmark = None;
            }
        }
        let mut until = if w.bookmarks {
            deadline.min(next_bookmark)
        } else {
            deadline
        };
        if let Some(t) = last_bookmark {
            until = until.min(t);
        }
        s.cluster
            .wait(pos, epoch, until.saturating_duration_since(Instant::now()));
    }
}

fn end(tls: &mut Tls) -> io::Result<bool> {
    tls.write_all(b"0\r\n\r\n")?;
    tls.flush()?;
    Ok(true)
}
