//! Connection threads that outlive their connection: a thread whose client has gone waits for
//! the next accepted connection instead of ending, up to [`KEPT`] of them at once.
//!
//! Why: a thread per connection costs more than the `mmap` of its stack. Each start and end
//! allocates in the accepting thread's heap and frees from another (glibc's thread vector,
//! the standard library's thread handle and closure), and with glibc those blocks, interleaved
//! with long-lived ones, slowly raise the heap's high-water mark: a few KiB more resident per
//! 100,000 requests on fresh connections, none over kept-alive ones (docs/performance.md "Resident memory on the local API").
//! A waiting thread costs nothing while idle: it sleeps on a condition variable without a
//! timeout, so it never wakes the CPU (issue 13), and holds only the stack it already touched.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};

/// How many threads may wait for a connection at once; one more ends when its connection does.
/// Four covers the local clients a device has at once (apps, the CLI, a metrics scraper).
pub(super) const KEPT: usize = 4;

/// A thread counted as waiting by [`Workers::back`], to wait with [`Workers::wait`].
#[must_use]
pub(super) struct Waiting(());

/// Accepted connections waiting for a thread, and the threads waiting for a connection.
pub(super) struct Workers<J> {
    state: Mutex<State<J>>,
    ready: Condvar,
}

struct State<J> {
    /// Threads waiting in [`Workers::next`] that no queued job is meant for yet.
    idle: usize,
    queue: VecDeque<J>,
    closed: bool,
}

impl<J> Workers<J> {
    pub(super) fn new() -> Self {
        Workers {
            state: Mutex::new(State {
                idle: 0,
                // Never more than the threads waiting for a job.
                queue: VecDeque::with_capacity(KEPT),
                closed: false,
            }),
            ready: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<J>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands `job` to a waiting thread; gives it back when none waits (start one for it then).
    pub(super) fn hand(&self, job: J) -> Option<J> {
        let mut s = self.lock();
        if s.idle == 0 || s.closed {
            return Some(job);
        }
        // Every queued job has its own waiting thread: `idle` counts the unclaimed ones.
        s.idle -= 1;
        s.queue.push_back(job);
        drop(s);
        self.ready.notify_one();
        None
    }

    /// Called by a thread whose connection has ended: the next job, or `None` when this thread
    /// should end (enough threads wait already, or serving has stopped).
    #[cfg(test)]
    pub(super) fn next(&self) -> Option<J> {
        self.back().and_then(|w| self.wait(w))
    }

    /// The first half of [`Workers::next`]: counts the calling thread as waiting from now on
    /// (a job handed from now on is meant for it), or `None` if it should end. Lets a caller
    /// make that one step with whatever else it must do at the same moment.
    pub(super) fn back(&self) -> Option<Waiting> {
        let mut s = self.lock();
        if s.closed || s.idle >= KEPT {
            return None;
        }
        s.idle += 1;
        Some(Waiting(()))
    }

    /// The second half of [`Workers::next`]: waits for a job.
    pub(super) fn wait(&self, _: Waiting) -> Option<J> {
        let mut s = self.lock();
        loop {
            // A job queued by `hand` already took one off `idle` for us.
            if let Some(job) = s.queue.pop_front() {
                return Some(job);
            }
            if s.closed {
                s.idle -= 1;
                return None;
            }
            s = self.ready.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Ends every waiting thread; jobs still queued are dropped (their connections closed).
    pub(super) fn close(&self) {
        let mut s = self.lock();
        s.closed = true;
        // The threads those jobs were meant for are unclaimed again, and end as the others do.
        s.idle += s.queue.len();
        s.queue.clear();
        drop(s);
        self.ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::thread;
    use std::time::Duration;

    /// Waits until `n` threads wait unclaimed in `next`.
    fn wait_idle(w: &Workers<u32>, n: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while w.lock().idle < n {
            assert!(std::time::Instant::now() < deadline, "threads did not wait");
            thread::yield_now();
        }
    }

    #[test]
    fn a_job_goes_to_a_waiting_thread_and_none_is_lost() {
        let w = Workers::<u32>::new();
        assert_eq!(w.hand(1), Some(1), "no thread waits yet");
        let (tx, rx) = mpsc::channel();
        thread::scope(|s| {
            for _ in 0..3 {
                let tx = tx.clone();
                let w = &w;
                s.spawn(move || {
                    while let Some(j) = w.next() {
                        tx.send(j).unwrap();
                    }
                });
            }
            wait_idle(&w, 3);
            let mut handed = 0;
            let mut sent = Vec::new();
            for j in 0..200u32 {
                match w.hand(j) {
                    None => handed += 1,
                    Some(j) => sent.push(j),
                }
                if j % 7 == 0 {
                    thread::sleep(Duration::from_millis(1));
                }
            }
            let mut got: Vec<u32> = (0..handed).map(|_| rx.recv().unwrap()).collect();
            got.sort_unstable();
            got.dedup();
            assert_eq!(got.len(), handed, "each handed job arrives once");
            assert!(handed >= 3, "the three waiting threads took jobs");
            assert_eq!(handed + sent.len(), 200);
            w.close();
        });
        assert!(rx.try_recv().is_err(), "nothing arrives after close");
    }

    #[test]
    fn a_job_queued_at_close_is_dropped_and_its_thread_ends() {
        // A waiting thread claimed by `hand` that wakes only after `close` finds no job: it must
        // end without miscounting (an underflow panics in a debug build). Repeated, because
        // which of the two it sees first is up to the scheduler.
        for _ in 0..200 {
            let w = Workers::<u32>::new();
            thread::scope(|s| {
                let waiter = s.spawn(|| w.next());
                wait_idle(&w, 1);
                assert_eq!(w.hand(7), None);
                w.close();
                let got = waiter.join().expect("the waiting thread ended cleanly");
                assert!(matches!(got, None | Some(7)));
            });
            assert_eq!(w.lock().idle, 0);
            assert!(w.lock().queue.is_empty());
        }
    }

    #[test]
    fn at_most_kept_threads_wait() {
        let w = Workers::<u32>::new();
        thread::scope(|s| {
            let ended: Vec<_> = (0..KEPT + 2)
                .map(|_| s.spawn(|| w.next().is_none()))
                .collect();
            // The two over KEPT return at once; the others wait until close.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while ended.iter().filter(|h| h.is_finished()).count() < 2 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "threads over KEPT did not end"
                );
                thread::sleep(Duration::from_millis(5));
            }
            assert_eq!(w.lock().idle, KEPT);
            w.close();
            assert!(ended.into_iter().all(|h| h.join().unwrap()));
        });
        assert_eq!(w.hand(9), Some(9), "a closed pool takes nothing");
    }
}
