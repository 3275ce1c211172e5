//! The accept loop and the requests of one connection.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::Shutdown as Both;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, TrySendError};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use super::framing::{body_length, parse_head, wants_close, write_response, Head, Refusal};
use super::slots::*;
use super::stream::Stream;
use super::workers::{Workers, KEPT};
use super::*;
use crate::shutdown::Shutdown;

/// Serves `listener` until `stop` is triggered; then stops accepting, lets each connection finish
/// the request it is handling, closes the rest, and returns.
pub fn serve(listener: Listener, limits: Limits, stop: &Shutdown, handler: &dyn Handler) {
    let open = Open {
        next: AtomicU64::new(0),
        epoch: Instant::now(),
        // Sized once for the connections open at once, and those ending alongside, so that
        // the table is not grown (moved to a larger block) in the middle of a long run.
        slots: Mutex::new(HashMap::with_capacity(
            limits.max_connections.min(64) + KEPT,
        )),
    };
    // Refused connections, answered and drained by one thread so accept never waits on them;
    // when it is behind, further ones are closed unanswered.
    let (refusals, refused) = mpsc::sync_channel::<Stream>(32);
    let workers = Workers::new();
    // The 503 sent to a silent or idle connection as it is closed for a new one.
    let busy_bytes = {
        let r = busy(handler, limits);
        let mut b = Vec::new();
        let _ = write_response(&mut b, r, true);
        b
    };
    thread::scope(|s| {
        let (open, listener, workers) = (&open, &listener, &workers);
        s.spawn(move || {
            stop.wait();
            // Wake the accept below, then end every idle read.
            listener.wake();
            for slot in open.lock().values() {
                slot.stream.shutdown_read();
            }
        });
        s.spawn(move || {
            for mut stream in refused {
                refuse(
                    &mut stream,
                    busy(handler, limits),
                    Duration::from_millis(100),
                );
            }
        });
        loop {
            let stream = match listener.accept() {
                Ok(st) => st,
                Err(e) => {
                    if stop.is_triggered() {
                        break;
                    }
                    // Out of file descriptors, say: wait rather than spin.
                    log::warn!("API accept failed: {e}");
                    thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            if stop.is_triggered() {
                break;
            }
            if let Err(e) = stream.prepare(limits.timeout) {
                log::debug!("dropping a connection: {e}");
                continue;
            }
            let id = open.next.fetch_add(1, Ordering::Relaxed);
            let job = {
                let mut map = open.lock();
                let live = map
                    .values()
                    .filter(|s| s.state.load(Ordering::Acquire) < EVICTED)
                    .count();
                let Ok(clone) = stream.try_clone() else {
                    drop(map);
                    refuse_at_once(stream, busy(handler, limits));
                    continue;
                };
                let slot = Slot::new(clone, NEW, open.now());
                let job = Job {
                    stream,
                    id,
                    slot: slot.clone(),
                };
                // Every slot taken: first a connection whose client has gone gives its slot
                // and thread (nobody is closed), else one is closed ([`evict`]), else one
                // writing its answer to a client that reads it ends after it and hands its
                // thread over, else (none such, and none went idle meanwhile) the new one is
                // refused, with an answer.
                let job = match live >= limits.max_connections {
                    false => job,
                    true => match hand_to_ending(&map, job, false) {
                        None => {
                            map.insert(id, slot);
                            continue;
                        }
                        Some(job) if evict(&map, &busy_bytes) => job,
                        Some(job) => match hand_to_ending(&map, job, true) {
                            None => {
                                map.insert(id, slot);
                                continue;
                            }
                            Some(job) if evict(&map, &busy_bytes) => job,
                            Some(job) => {
                                drop(map);
                                if let Err(TrySendError::Full(stream)) =
                                    refusals.try_send(job.stream)
                                {
                                    refuse_at_once(stream, busy(handler, limits));
                                }
                                continue;
                            }
                        },
                    },
                };
                map.insert(id, slot);
                // To a waiting thread, else to one about to be free; under the lock under which
                // a thread that is done looks for a successor and else starts to wait, so that
                // a thread between the two is never missed.
                match workers
                    .hand(job)
                    .and_then(|job| hand_to_ending(&map, job, false))
                {
                    Some(job) => job,
                    None => continue,
                }
            };
            let spawned = thread::Builder::new()
                .name("api-conn".into())
                .stack_size(256 * 1024)
                .spawn_scoped(s, move || {
                    let mut job = Some(job);
                    while let Some(j) = job {
                        job = serve_one(j, open, limits, handler, workers);
                    }
                });
            if let Err(e) = spawned {
                log::warn!("cannot start a connection thread: {e}");
                // Answered through the slot's copy of the stream: never a bare close.
                let slot = open.lock().remove(&id);
                if let Some(stream) = slot.and_then(|s| s.stream.try_clone().ok()) {
                    refuse_at_once(stream, busy(handler, limits));
                }
            }
        }
        // Threads waiting for a connection end; the others end with theirs.
        workers.close();
        drop(refusals);
        // Registration happens only in this loop, so every connection is in `open` now, also
        // one accepted while the thread above was ending the others.
        for slot in open.lock().values() {
            slot.stream.shutdown_read();
        }
    });
}

/// The answer to a connection refused because every slot is busy: 503 with `Retry-After`.
fn busy(handler: &dyn Handler, limits: Limits) -> Response {
    let mut r = handler.reject(
        503,
        "busy",
        format!(
            "the agent serves at most {} connections at once; retry",
            limits.max_connections
        ),
    );
    r.headers.push(("Retry-After", "1".into()));
    r
}

/// Refuses `stream` from the accept thread, when the refusal thread is behind: the answer
/// goes into the empty send buffer of a fresh connection (no wait), what the client already
/// sent is read off without waiting (closing on unread bytes would send a reset, which can
/// discard the answer), then it is closed. Never a bare close.
fn refuse_at_once(mut stream: Stream, resp: Response) {
    if write_response(&mut stream, resp, true).is_err() {
        return;
    }
    let _ = stream.shutdown(Both::Write);
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    while drained < 64 * 1024 && stream.has_waiting() {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

/// Serves `job`'s connection, forgets it, and waits for the next one: the connection handed
/// to this thread meanwhile, else the next one accepted. `None`: this thread should end.
fn serve_one(
    job: Job,
    open: &Open,
    limits: Limits,
    handler: &dyn Handler,
    workers: &Workers<Job>,
) -> Option<Job> {
    let Job { stream, id, slot } = job;
    let tracker = Tracker { open, slot };
    // A panic ends this connection only; left to unwind, `thread::scope` would re-raise it when
    // serving ends.
    if catch_unwind(AssertUnwindSafe(|| {
        connection(stream, limits, handler, &tracker)
    }))
    .is_err()
    {
        log::error!("a connection's handler panicked; connection closed");
    }
    // The stream is closed. Until the lock below, a new connection may be handed to this
    // thread (`hand_to_ending`); from then on, it goes to this thread as one that waits.
    let slot = tracker.slot;
    slot.state.store(ENDED, Ordering::Release);
    let waiting = {
        let mut map = open.lock();
        map.remove(&id);
        let successor = slot
            .successor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if successor.is_some() {
            return successor;
        }
        workers.back()
    };
    drop(slot);
    workers.wait(waiting?)
}

/// Serves one connection's requests in order until it closes, errs, times out or is evicted.
pub(super) fn connection(
    mut stream: Stream,
    limits: Limits,
    handler: &dyn Handler,
    slot: &Tracker,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let budget = limits.timeout.min(REQUEST_DEADLINE);
    let mut waiting = NEW;
    loop {
        // Idle until the next request's first byte, which stays in the socket until this
        // connection says it is reading: a request read while it still looked silent or idle
        // was lost when it was evicted or handed on as ending (issue 23). Its whole head and
        // body then have `budget`.
        if buf.is_empty() && !stream.wait_readable() {
            return;
        }
        if waiting != READING && !slot.set(waiting, READING) {
            return;
        }
        let deadline = Some(Instant::now() + budget);
        let head = loop {
            match parse_head(&buf, limits.max_head) {
                Ok(Some(h)) => break h,
                Ok(None) => {}
                Err(Refusal(status, error, message)) => {
                    refuse(&mut stream, handler.reject(status, error, message), LINGER);
                    return;
                }
            }
            match read_some(
                &mut stream,
                &mut buf,
                limits.max_head,
                deadline,
                limits.timeout,
            ) {
                Got::Data => {}
                Got::Closed => return,
                Got::Late => return late(&mut stream, handler),
            }
        };
        let Head {
            method,
            target,
            minor,
            headers,
            len,
        } = head;
        let mut req = Request {
            method,
            target,
            headers,
            body: Vec::new(),
        };
        let close = minor == 0 || wants_close(&req);
        let body_len = match body_length(&req, limits.max_body) {
            Ok(n) => n,
            Err(Refusal(status, error, message)) => {
                // The body is not read, so the connection cannot be reused.
                refuse(&mut stream, handler.reject(status, error, message), LINGER);
                return;
            }
        };
        buf.drain(..len);
        if body_len > buf.len()
            && req
                .header("Expect")
                .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
            && stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_err()
        {
            return;
        }
        while buf.len() < body_len {
            match read_some(&mut stream, &mut buf, body_len, deadline, limits.timeout) {
                Got::Data => {}
                Got::Closed => return,
                Got::Late => return late(&mut stream, handler),
            }
        }
        req.body = buf.drain(..body_len).collect();
        if !slot.set(READING, HANDLING) {
            return;
        }
        let resp = handler.handle(req);
        if !slot.set(HANDLING, WRITING) {
            return;
        }
        // A pipelined request already held goes on being read: never idle (closable as
        // such) while it holds one.
        waiting = if buf.is_empty() { IDLE } else { READING };
        if write_response(&mut stream, resp, close).is_err() || close || !slot.set(WRITING, waiting)
        {
            return;
        }
        let _ = stream.set_read_timeout(limits.timeout);
    }
}

enum Got {
    Data,
    /// The peer closed, went quiet past the timeout, or the connection was ended from outside.
    Closed,
    /// The request's deadline passed.
    Late,
}

/// Reads once into `buf`, up to `cap` bytes in all, waiting at most until `deadline`.
fn read_some(
    stream: &mut Stream,
    buf: &mut Vec<u8>,
    cap: usize,
    deadline: Option<Instant>,
    timeout: Duration,
) -> Got {
    if let Some(d) = deadline {
        let left = d.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Got::Late;
        }
        let _ = stream.set_read_timeout(left.min(timeout));
    }
    // Straight into `buf`, which grows as a request needs: a kept connection thread then holds
    // no 8 KiB read buffer on its stack (resident for as long as the thread waits).
    if buf.capacity() - buf.len() < 512 {
        buf.reserve(1024);
    }
    let start = buf.len();
    let room = (buf.capacity() - start)
        .min(cap.saturating_sub(start))
        .clamp(1, 64 * 1024);
    buf.resize(start + room, 0);
    let read = stream.read(&mut buf[start..]);
    buf.truncate(start + *read.as_ref().unwrap_or(&0));
    match read {
        Ok(0) => Got::Closed,
        Ok(_) => Got::Data,
        Err(_) if deadline.is_some_and(|d| Instant::now() >= d) => Got::Late,
        Err(_) => Got::Closed,
    }
}

/// Answers a request that did not arrive in time with 408 and closes, without waiting on a
/// client that is this slow.
fn late(stream: &mut Stream, handler: &dyn Handler) {
    let r = handler.reject(
        408,
        "request_timeout",
        format!(
            "a request's head and body must arrive within {} s",
            REQUEST_DEADLINE.as_secs()
        ),
    );
    let _ = write_response(stream, r, true);
}

/// How long a refused connection is drained before it is closed.
const LINGER: Duration = Duration::from_secs(2);

/// Sends a refusal and closes without destroying it. Closing a socket with unread input makes
/// the kernel send a reset, which can discard the answer before a client that is still
/// sending its body reads it; so stop writing, then read and discard what still arrives,
/// with a fixed buffer and within fixed bounds, before closing.
fn refuse(stream: &mut Stream, resp: Response, max_wait: Duration) {
    const MAX_DRAIN: usize = 1 << 20;
    if write_response(stream, resp, true).is_err() {
        return;
    }
    let _ = stream
        .shutdown(Both::Write)
        .and_then(|_| stream.set_read_timeout(max_wait));
    let started = std::time::Instant::now();
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    while drained < MAX_DRAIN && started.elapsed() < max_wait {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}
