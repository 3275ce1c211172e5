//! A stop request that threads wait on without polling, tripped by SIGTERM or SIGINT.
//!
//! An idle daemon should not wake up to ask whether it is time to stop: the signal thread
//! blocks in signal-hook's iterator, and everything else waits on this condition variable.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::bell::Bell;

#[derive(Default)]
pub struct Shutdown {
    stopped: Mutex<bool>,
    cv: Condvar,
    /// Stopped too on a trigger: the decision loop sleeps on its bell, not here.
    bells: Mutex<Vec<Arc<Bell>>>,
}

impl Shutdown {
    pub fn new() -> Arc<Shutdown> {
        Arc::new(Shutdown::default())
    }

    pub fn trigger(&self) {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.cv.notify_all();
        for b in self.bells.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            b.stop();
        }
    }

    /// Stops `bell` on the trigger (at once if it already happened).
    pub fn stops(&self, bell: Arc<Bell>) {
        self.bells
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(bell.clone());
        if self.is_triggered() {
            bell.stop();
        }
    }

    pub fn is_triggered(&self) -> bool {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits up to `timeout`; true when a stop was requested.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let guard = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = self
            .cv
            .wait_timeout_while(guard, timeout, |stopped| !*stopped)
            .unwrap_or_else(|e| e.into_inner());
        *guard
    }

    /// Waits until a stop is requested.
    pub fn wait(&self) {
        let guard = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        drop(
            self.cv
                .wait_while(guard, |stopped| !*stopped)
                .unwrap_or_else(|e| e.into_inner()),
        );
    }

    /// Trips this on the first SIGTERM or SIGINT, from a thread that sleeps until one arrives.
    pub fn on_signals(self: &Arc<Shutdown>) -> std::io::Result<()> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
        let me = self.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                if let Some(sig) = signals.forever().next() {
                    log::info!("signal {sig}: stopping");
                    me.trigger();
                }
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn waiters_wake_on_trigger_not_on_a_tick() {
        let s = Shutdown::new();
        assert!(!s.wait_timeout(Duration::from_millis(10)));
        // Timed from before the spawn: the thread may start late under load.
        let started = Instant::now();
        let t = {
            let s = s.clone();
            std::thread::spawn(move || {
                s.wait();
                started.elapsed()
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        s.trigger();
        assert!(t.join().unwrap() >= Duration::from_millis(50));
        assert!(s.is_triggered() && s.wait_timeout(Duration::from_secs(10)));
    }
}
