//! The bell the decision loop sleeps on: rung by a new snapshot, a gate event, a state change,
//! or a stop. Below `gate`, `state`, `shutdown` and the loops, which all ring it.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// What wakes the decision loop: a ring (something may have changed) or a stop.
#[derive(Default)]
pub struct Bell {
    state: Mutex<(bool, bool)>,
    cv: Condvar,
}

impl Bell {
    pub fn new() -> Arc<Bell> {
        Arc::new(Bell::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (bool, bool)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Something may have changed: wake the sleeper (or make its next wait return at once).
    pub fn ring(&self) {
        self.lock().0 = true;
        self.cv.notify_all();
    }

    /// Wakes the sleeper for good.
    pub fn stop(&self) {
        self.lock().1 = true;
        self.cv.notify_all();
    }

    /// Sleeps until rung, stopped or `timeout`; consumes a ring. True when stopped.
    pub fn wait(&self, timeout: Duration) -> bool {
        let guard = self.lock();
        let (mut guard, _) = self
            .cv
            .wait_timeout_while(guard, timeout, |(rung, stopped)| !*rung && !*stopped)
            .unwrap_or_else(|e| e.into_inner());
        guard.0 = false;
        guard.1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_bell_wakes_at_once_and_a_ring_is_not_lost() {
        let bell = Bell::new();
        bell.ring();
        let t = Instant::now();
        assert!(!bell.wait(Duration::from_secs(10)), "rung before the wait");
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(
            !bell.wait(Duration::from_millis(20)),
            "the ring was consumed"
        );
        bell.stop();
        assert!(bell.wait(Duration::from_secs(10)));
    }
}
