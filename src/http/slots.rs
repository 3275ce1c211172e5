//! The open connections, what each is doing, and which gives up its slot when they run out.

use std::collections::HashMap;
use std::net::Shutdown as Both;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::stream::Stream;

/// What a connection is doing, for the choice of which to close when slots run out.
/// Accepted, not a byte received yet (a silent or half-open client is here).
pub(super) const NEW: u8 = 0;
/// Between requests on a keep-alive connection.
pub(super) const IDLE: u8 = 1;
pub(super) const READING: u8 = 2;
pub(super) const WRITING: u8 = 3;
pub(super) const HANDLING: u8 = 4;
pub(super) const EVICTED: u8 = 5;
/// Done, or sure to end at its thread's next look: its thread is on its way to another.
pub(super) const ENDED: u8 = 6;
/// Its client has closed (or half-closed) and every byte it sent has been read: its thread
/// answers what it already holds (a pipelined request, one read a moment before the close
/// was seen), sees the close at its next read, and goes on to the connection handed to it.
pub(super) const FINISHING: u8 = 7;

/// One open connection: a clone of its stream (to end it from outside), what it is doing, and
/// since when (milliseconds from the server's start).
pub(super) struct Slot {
    pub(super) stream: Stream,
    pub(super) state: AtomicU8,
    pub(super) since: AtomicU64,
    /// A connection accepted for this one's thread to serve next ([`hand_to_ending`]).
    pub(super) successor: Mutex<Option<Job>>,
}

impl Slot {
    /// A slot for `stream`, in `state` since `since` (milliseconds from the server's start).
    pub(super) fn new(stream: Stream, state: u8, since: u64) -> Arc<Slot> {
        Arc::new(Slot {
            stream,
            state: AtomicU8::new(state),
            since: AtomicU64::new(since),
            successor: Mutex::new(None),
        })
    }
}

/// An accepted connection, for a thread to serve.
pub(super) struct Job {
    pub(super) stream: Stream,
    pub(super) id: u64,
    pub(super) slot: Arc<Slot>,
}

/// Open connections, so that a stop can end their reads at once and a new client can take the
/// slot of an idle or slow one.
pub(super) struct Open {
    pub(super) next: AtomicU64,
    pub(super) epoch: Instant,
    pub(super) slots: Mutex<HashMap<u64, Arc<Slot>>>,
}

impl Open {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

/// A connection's handle on its own slot.
pub(super) struct Tracker<'a> {
    pub(super) open: &'a Open,
    pub(super) slot: Arc<Slot>,
}

impl Tracker<'_> {
    /// Moves from `from` to `to`; false if the connection was evicted or told to end after
    /// its answer meanwhile. A connection [`FINISHING`] stays so, and goes on: what it holds
    /// is requests its client sent before closing, each owed an answer.
    pub(super) fn set(&self, from: u8, to: u8) -> bool {
        self.slot.since.store(self.open.now(), Ordering::Relaxed);
        match self
            .slot
            .state
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) | Err(FINISHING) => true,
            Err(_) => false,
        }
    }
}

/// Closes the open connection a new one should replace, if any: the one that has sent nothing
/// for the longest since it was accepted, else the one idle between requests the longest, else
/// the one reading its request, or stalled writing its answer, the longest. One whose client's
/// bytes wait unread in the socket is neither silent nor idle: with a whole request head there,
/// its thread about to read it, it is as good as inside its handler and is not closed; with
/// part of one, it ranks with those reading ([`evictable`]). Never one inside a
/// handler, nor one writing its answer to a client that reads it: closing that one would lose
/// the answer to a request that has had its effect (an upgrade started, a hold taken); it
/// gives way after its answer instead ([`hand_to_ending`] with `full`). A write waiting for
/// room is a client that does not read, and is closed.
/// A silent or idle one closed is first sent `answer` (the 503 `busy`, with `Retry-After`):
/// a client that was about to send its request reads why, rather than a bare close.
/// The caller holds the lock, so the chosen one stays in the map until it is shut down.
pub(super) fn evict(map: &HashMap<u64, Arc<Slot>>, answer: &[u8]) -> bool {
    for _ in 0..4 {
        let victim = map
            .values()
            .filter_map(|s| {
                let (rank, _) = evictable(s)?;
                Some((rank, s.since.load(Ordering::Relaxed), s))
            })
            .min_by_key(|&(rank, since, _)| (rank, since));
        let Some((_, _, slot)) = victim else {
            return false;
        };
        if let Some((_, state)) = evictable(slot) {
            if slot
                .state
                .compare_exchange(state, EVICTED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                if matches!(state, NEW | IDLE) {
                    slot.stream.send_now(answer);
                }
                let _ = slot.stream.shutdown(Both::Both);
                return true;
            }
        }
    }
    false
}

/// The state of a connection [`evict`] may close, or `None` if it may not be closed now.
/// With it, the rank it is closed in: silent first, then idle, then reading (a connection whose
/// client has sent part of a head that its thread has not read yet ranks with those reading:
/// it may be a slowloris, and its thread may lag behind under load).
fn evictable(s: &Slot) -> Option<(u8, u8)> {
    let state = s.state.load(Ordering::Acquire);
    let rank = match state {
        NEW | IDLE if !s.stream.has_waiting() => state,
        // A whole request waits: as good as inside its handler.
        NEW | IDLE if s.stream.has_whole_head(PEEK_HEAD) => return None,
        NEW | IDLE | READING => READING,
        WRITING if !s.stream.has_room() => READING,
        _ => return None,
    };
    Some((rank, state))
}

/// How much of a waiting head [`evictable`] looks at for its blank line: the local API's
/// limit on a request head (`MAX_REQUEST_HEAD`); a longer one is refused 431 anyway.
const PEEK_HEAD: usize = 16 * 1024;

/// Gives `job` to the thread of an open connection that is about to end, instead of to a thread
/// of its own: a client that reconnects (closes, then connects again at once) is often accepted
/// before its old connection's thread has seen the close. That thread takes it when it looks,
/// as its connection ends ([`Slot::successor`]). A connection is about to end if it is done
/// ([`ENDED`]), or if its client has closed and sent nothing unread
/// ([`Stream::has_ended`](super::stream::Stream::has_ended); it is then [`FINISHING`]: its
/// thread still answers the requests it holds, sent before the close) while its thread
/// - waits for the next request (or the first): its read under way sees the close at once;
/// - or writes an answer, and no write waits for room
///   ([`Stream::has_room`](super::stream::Stream::has_room)): the client read the answer and
///   closed before the thread, done writing, ran again (a reset or a failed write ends it as
///   fast). A client that half-closed and reads slowly keeps a write waiting: not that one.
///
/// With `full` (every slot taken and none could be closed: [`evict`]), a connection writing
/// its answer to a client that reads it is made to end after that answer, and `job` waits
/// for its thread: the answer is whole, and the cap holds.
///
/// Gives `job` back if there is none. The caller holds the lock, the same under which a
/// thread looks for its successor.
pub(super) fn hand_to_ending(map: &HashMap<u64, Arc<Slot>>, job: Job, full: bool) -> Option<Job> {
    for (&id, s) in map {
        let mut successor = s.successor.lock().unwrap_or_else(|e| e.into_inner());
        if id == job.id || successor.is_some() {
            continue;
        }
        let state = s.state.load(Ordering::Acquire);
        let ending = match state {
            ENDED => true,
            // Its thread now ends however it wakes, and no eviction picks it; unless it has
            // seen the close already, and says so meanwhile.
            NEW | IDLE | WRITING => {
                let closed = s.stream.has_ended();
                let to = if closed { FINISHING } else { ENDED };
                (closed || full && state == WRITING)
                    && (state != WRITING || s.stream.has_room())
                    && matches!(
                        s.state
                            .compare_exchange(state, to, Ordering::AcqRel, Ordering::Acquire),
                        Ok(_) | Err(ENDED)
                    )
            }
            _ => false,
        };
        if ending {
            *successor = Some(job);
            return None;
        }
    }
    Some(job)
}
