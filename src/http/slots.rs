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

/// One open connection: a clone of its stream (to end it from outside), what it is doing, and
/// since when (milliseconds from the server's start).
pub(super) struct Slot {
    pub(super) stream: Stream,
    pub(super) state: AtomicU8,
    pub(super) since: AtomicU64,
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
    /// Moves from `from` to `to`; false if the connection was evicted meanwhile.
    pub(super) fn set(&self, from: u8, to: u8) -> bool {
        self.slot.since.store(self.open.now(), Ordering::Relaxed);
        self.slot
            .state
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

/// Closes the open connection a new one should replace, if any: the one that has sent nothing
/// for the longest since it was accepted, else the one idle between requests the longest, else
/// the one reading its request or writing its answer the longest. Never one inside a handler.
/// The caller holds the lock, so the chosen one stays in the map until it is shut down.
pub(super) fn evict(map: &HashMap<u64, Arc<Slot>>) -> bool {
    for _ in 0..4 {
        let victim = map
            .values()
            .filter_map(|s| {
                let state = s.state.load(Ordering::Acquire);
                (state < HANDLING).then(|| (state.min(READING), s.since.load(Ordering::Relaxed), s))
            })
            .min_by_key(|&(rank, since, _)| (rank, since));
        let Some((_, _, slot)) = victim else {
            return false;
        };
        let state = slot.state.load(Ordering::Acquire);
        if state < HANDLING
            && slot
                .state
                .compare_exchange(state, EVICTED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            let _ = slot.stream.shutdown(Both::Both);
            return true;
        }
    }
    false
}

/// Removes a connection from `Open` however its thread ends.
pub(super) struct Registered<'a>(pub(super) &'a Open, pub(super) u64);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0.lock().remove(&self.1);
    }
}
