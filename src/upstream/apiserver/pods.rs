//! The node's pods: list, then watch, for ever (SPEC 2b), and the `v1.PodList` rendered from
//! what the watch keeps.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::client::q;
use super::watch::{self, Backoff, Event, OverLimit};
use super::{Detect, Inner, WATCH_SECONDS};
use crate::upstream::{excerpt, UpstreamError};

enum WatchEnd {
    /// The server closed the stream (timeoutSeconds): re-watch from the last resourceVersion.
    Closed,
    /// The connection under it ended without its TLS close or was reset (a proxy's idle
    /// timeout, an apiserver restarting: routine): re-watch from the last resourceVersion,
    /// counted as a reconnect.
    Dropped,
    Expired,
    Failed(UpstreamError),
    /// An event would take the pods kept past `watch::MAX_KEPT`; the last good state is kept.
    OverLimit(OverLimit),
}

/// What a person should know of a non-200 answer to the pod list or watch: the server was
/// reached, and what its answer most likely means.
fn status_error(what: &str, code: u16, body: &[u8]) -> UpstreamError {
    let hint = match code {
        401 => "; the apiserver was reached and refused the credential: check the kubeconfig's token or client certificate (expired? rotated?)",
        403 => "; the apiserver was reached and the identity may not list and watch pods: see packaging/kubernetes/rbac.yaml",
        300..=399 => "; redirected: the server URL is not the apiserver's (a proxy or login page answers there); set upstream.server, or the kubeconfig's cluster server, to the apiserver itself",
        _ => "",
    };
    UpstreamError::Status {
        code,
        body: format!("{what} answered {code}: {}{hint}", excerpt(body)),
    }
}

/// True for a watch stream that ended without its end: no TLS close_notify, or a reset. Routine
/// when a proxy or load balancer times the connection out or the apiserver restarts.
fn routine_drop(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
    )
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
                                if s.watch.over_limit.take().is_some() {
                                    log::info!(
                                        "apiserver pod list: the node's pods are within {} MiB again ({} KiB)",
                                        watch::MAX_KEPT >> 20,
                                        s.store.bytes >> 10
                                    );
                                }
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
                    Ok((code, body)) => self.failed(status_error("pod list", code, &body)),
                    // Over 32 MiB: as in YurtHub mode, refused and the last good pods kept.
                    Err(UpstreamError::TooLarge) => {
                        let mut s = self.lock();
                        if s.listed && s.watch.over_limit.is_none() {
                            s.watch.over_limit = Some((SystemTime::now(), watch::MAX_KEPT));
                        }
                        drop(s);
                        self.failed(UpstreamError::TooLarge)
                    }
                    Err(e) => self.failed(e),
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
                // Ended after a while: re-watch at once from the last version.
                (end @ (WatchEnd::Closed | WatchEnd::Dropped), got)
                    if got || began.elapsed() >= Duration::from_secs(5) =>
                {
                    if matches!(end, WatchEnd::Dropped) {
                        self.lock().watch.reconnects += 1;
                    }
                    backoff.reset();
                }
                // Closed at once with nothing in it (a proxy, a restarting apiserver): back off,
                // or the loop would spin.
                (WatchEnd::Closed | WatchEnd::Dropped, _) => {
                    std::thread::sleep(backoff.next_delay());
                    self.lock().watch.reconnects += 1;
                }
                (WatchEnd::Expired, _) => {
                    log::info!(
                        "apiserver watch: resourceVersion {rv} expired (410); listing again"
                    );
                    need_list = true;
                }
                (WatchEnd::OverLimit(over), _) => {
                    {
                        let mut s = self.lock();
                        if s.watch.over_limit.is_none() {
                            log::warn!(
                                "apiserver pod watch: {over}; serving the last good pods (of resourceVersion {}) and listing again",
                                s.store.rv
                            );
                            s.watch.over_limit = Some((SystemTime::now(), over.bytes));
                        }
                        s.watch.last_error = Some(format!("pod watch: {over}"));
                    }
                    std::thread::sleep(backoff.next_delay());
                    need_list = true;
                }
                (WatchEnd::Failed(e), got_events) => {
                    if got_events {
                        backoff.reset();
                    }
                    self.failed(e);
                    let d = backoff.next_delay();
                    std::thread::sleep(d);
                    self.lock().watch.reconnects += 1;
                }
            }
        }
    }

    fn failed(&self, e: UpstreamError) {
        let mut s = self.lock();
        let text = e.to_string();
        if s.watch.last_error.as_deref() != Some(&text) {
            log::warn!("apiserver {}: {text}", self.url);
        }
        s.watch.connected_since = None;
        s.watch.last_error = Some(text);
        s.failure = Some(e);
    }

    fn watch(self: &Arc<Self>, path: &str) -> (WatchEnd, bool) {
        let resp = match self.request(&self.streams, "GET", path, None) {
            Ok(r) => r,
            Err(e) => return (WatchEnd::Failed(e), false),
        };
        match resp.status {
            200 => {}
            410 => return (WatchEnd::Expired, false),
            code => {
                let body = Self::read_all(resp).map(|r| r.1).unwrap_or_default();
                return (
                    WatchEnd::Failed(status_error("pod watch", code, &body)),
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
                Err(e) if routine_drop(&e) => {
                    // Routine, and rustls' words for it carry a URL to its manual: not a
                    // warning, and not those words.
                    log::info!(
                        "apiserver pod watch: the connection ended ({:?}); watching again from resourceVersion {}",
                        e.kind(),
                        self.lock().store.rv
                    );
                    return (WatchEnd::Dropped, got);
                }
                Err(e) => {
                    let e = UpstreamError::Io(format!("pod watch: stream broke: {e}"));
                    return (WatchEnd::Failed(e), got);
                }
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
                Event::Error(m) => {
                    let e = UpstreamError::Io(format!("pod watch: ERROR event: {m}"));
                    return (WatchEnd::Failed(e), got);
                }
                ev => {
                    let mut s = self.lock();
                    s.watch.last_event = Some(SystemTime::now());
                    let upsert_ds = match &ev {
                        Event::Upsert(_, e, _) => e.daemonset.clone(),
                        _ => None,
                    };
                    let changed = match s.store.apply(ev) {
                        Ok(changed) => changed,
                        Err(over) => return (WatchEnd::OverLimit(over), got),
                    };
                    if changed {
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
            // What failed, as it failed: a 401 is not "cannot connect" (issue 23).
            return Err(s.failure.clone().unwrap_or_else(|| {
                UpstreamError::Connect("no pod list from the apiserver yet".into())
            }));
        }
        // As a YurtHub pod list over 32 MiB is: refused, and the snapshot served is the last
        // good one (the agent's, which this store's state also still is).
        if s.watch.over_limit.is_some() {
            return Err(UpstreamError::TooLarge);
        }
        Ok(match self.settings.detect {
            Detect::Openyurt => s.store.render(|_| None),
            Detect::Revision => s.store.render(|e| self.decision(&s, e)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_401_or_302_on_the_pod_list_names_the_cause_not_the_connection() {
        // Issue 23 item 9 (the 401 end to end: tests/integration/apiserver.rs).
        let e = status_error("pod list", 401, b"Unauthorized");
        assert_eq!(e.kind(), "status");
        let m = e.to_string();
        assert!(
            m.contains("refused the credential") && m.contains("401"),
            "{m}"
        );
        let e = status_error("pod list", 302, b"<html>login</html>");
        assert_eq!(e.kind(), "status");
        assert!(e.to_string().contains("redirected"), "{e}");
        assert!(!e.to_string().contains("cannot connect"), "{e}");
    }
}
