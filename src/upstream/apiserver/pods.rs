//! The node's pods: list, then watch, for ever (SPEC 2b), and the `v1.PodList` rendered from
//! what the watch keeps.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::client::q;
use super::watch::{self, Backoff, Event};
use super::{Detect, Inner, WATCH_SECONDS};
use crate::upstream::{excerpt, UpstreamError};

enum WatchEnd {
    /// The server closed the stream (timeoutSeconds): re-watch from the last resourceVersion.
    Closed,
    Expired,
    Failed(String),
}

impl Inner {
    /// List, then watch, for ever; the state is in `shared`.
    pub(super) fn pods_loop(self: Arc<Self>) {
        let mut backoff = Backoff::new();
        let mut need_list = true;
        let selector = q(&format!("spec.nodeName={}", self.node()));
        loop {
            if need_list {
                match self.get(&format!("/api/v1/pods?fieldSelector={selector}")) {
                    Ok((200, body)) => {
                        let mut s = self.lock();
                        match s.store.replace(&body) {
                            Ok(()) => {
                                if s.listed {
                                    s.watch.relists += 1;
                                }
                                s.listed = true;
                                drop(s);
                                need_list = false;
                                self.track_daemonsets();
                            }
                            Err(e) => {
                                log::warn!("apiserver pod list: {e}; keeping the last good pods");
                                s.watch.last_error = Some(e);
                            }
                        }
                    }
                    Ok((code, body)) => {
                        self.failed(format!("pod list answered {code}: {}", excerpt(&body)))
                    }
                    Err(e) => self.failed(format!("pod list: {e}")),
                }
                if need_list {
                    std::thread::sleep(backoff.next_delay());
                    continue;
                }
            }
            let rv = self.lock().store.rv.clone();
            let path = format!(
                "/api/v1/pods?fieldSelector={selector}&resourceVersion={}&watch=1&allowWatchBookmarks=true&timeoutSeconds={WATCH_SECONDS}",
                q(&rv)
            );
            let began = std::time::Instant::now();
            match self.watch(&path) {
                // Ended by the server after a while: re-watch at once from the last version.
                (WatchEnd::Closed, got) if got || began.elapsed() >= Duration::from_secs(5) => {
                    backoff.reset();
                }
                // Closed at once with nothing in it (a proxy, a restarting apiserver): back off,
                // or the loop would spin.
                (WatchEnd::Closed, _) => {
                    std::thread::sleep(backoff.next_delay());
                    self.lock().watch.reconnects += 1;
                }
                (WatchEnd::Expired, _) => {
                    log::info!(
                        "apiserver watch: resourceVersion {rv} expired (410); listing again"
                    );
                    need_list = true;
                }
                (WatchEnd::Failed(e), got_events) => {
                    if got_events {
                        backoff.reset();
                    }
                    self.failed(format!("pod watch: {e}"));
                    let d = backoff.next_delay();
                    std::thread::sleep(d);
                    self.lock().watch.reconnects += 1;
                }
            }
        }
    }

    fn failed(&self, e: String) {
        let mut s = self.lock();
        if s.watch.last_error.as_deref() != Some(&e) {
            log::warn!("apiserver {}: {e}", self.url);
        }
        s.watch.connected_since = None;
        s.watch.last_error = Some(e);
    }

    fn watch(self: &Arc<Self>, path: &str) -> (WatchEnd, bool) {
        let resp = match self.request(&self.streams, "GET", path, None) {
            Ok(r) => r,
            Err(e) => return (WatchEnd::Failed(e.to_string()), false),
        };
        match resp.status {
            200 => {}
            410 => return (WatchEnd::Expired, false),
            code => {
                let body = Self::read_all(resp).map(|r| r.1).unwrap_or_default();
                return (
                    WatchEnd::Failed(format!("answered {code}: {}", excerpt(&body))),
                    false,
                );
            }
        }
        {
            let mut s = self.lock();
            s.watch.connected_since = Some(SystemTime::now());
            s.watch.last_error = None;
        }
        let mut r = resp;
        let mut buf = Vec::new();
        let mut got = false;
        loop {
            let line = match watch::read_line(&mut r, &mut buf) {
                Ok(Some(l)) => l,
                Ok(None) => return (WatchEnd::Closed, got),
                Err(e) => return (WatchEnd::Failed(format!("stream broke: {e}")), got),
            };
            if let Err(n) = line {
                log::warn!("apiserver watch: skipped an event of {n} bytes (over {} MiB); keeping the last good state", watch::MAX_EVENT >> 20);
                continue;
            }
            if buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let ev = match watch::parse_event(&buf) {
                Ok(ev) => ev,
                Err(e) => {
                    log::warn!(
                        "apiserver watch: bad event ({e}): {}; keeping the last good state",
                        excerpt(&buf)
                    );
                    continue;
                }
            };
            got = true;
            match ev {
                Event::Expired => return (WatchEnd::Expired, got),
                Event::Error(m) => return (WatchEnd::Failed(format!("ERROR event: {m}")), got),
                ev => {
                    let mut s = self.lock();
                    s.watch.last_event = Some(SystemTime::now());
                    let upsert_ds = match &ev {
                        Event::Upsert(_, e, _) => e.daemonset.clone(),
                        _ => None,
                    };
                    if s.store.apply(ev) {
                        let new_ds = upsert_ds.is_some_and(|d| {
                            !s.daemonsets.get(&(d.0, d.1)).is_some_and(|t| t.watching)
                        });
                        drop(s);
                        if new_ds {
                            self.track_daemonsets();
                        }
                    }
                }
            }
        }
    }

    /// The `v1.PodList` as `GET /pods` serves it, rendered at each call from the store: the
    /// pods are kept once, as text; a cached copy would be a second (and the snapshot's body
    /// a third) of about 5 KB a pod.
    pub(super) fn rendered(&self) -> Result<Vec<u8>, UpstreamError> {
        let s = self.lock();
        if !s.listed {
            return Err(UpstreamError::Connect(
                s.watch
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "no pod list from the apiserver yet".into()),
            ));
        }
        Ok(match self.settings.detect {
            Detect::Openyurt => s.store.render(|_| None),
            Detect::Revision => s.store.render(|e| self.decision(&s, e)),
        })
    }
}
