//! The fleet's Lease slots and DaemonSet facts over the Kubernetes API (SPEC 6b), for any
//! client that can send one request (`Kube`): the apiserver upstream implements it with its
//! HTTPS client, the tests with ureq over rustls against the apiserver stand-in.
//!
//! `GET/POST/PUT /apis/coordination.k8s.io/v1/namespaces/{ns}/leases[/{name}]` (a GET of the
//! collection lists the namespace's Leases); a 409 is
//! `Conflict` (another node wrote first); a 404 on an update too (the Lease moved on: gone).

use std::io::BufRead;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::cache::{Change, SlotCache};
use super::lease::{Lease, LeaseError, Leases, DAEMONSET_LABEL};
use super::strategy::{MAX_UNAVAILABLE_ANNOTATION, STRATEGY_ANNOTATION};
use super::view::DaemonSetInfo;
use crate::upstream::apiserver::watch::{self, Backoff, Envelope};

/// One request: method, path (from `/apis/…`), JSON body; the status and body answered, or
/// why there was no answer.
pub trait Kube: Send + Sync {
    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<(u16, Vec<u8>), String>;

    /// A GET whose answer is read as it comes (a watch): the status and the body's reader.
    /// A client that cannot stream says so; the slot watch then fails and no slot is taken
    /// (fail closed).
    fn watch(&self, path: &str) -> Result<(u16, Box<dyn BufRead + Send>), String> {
        Err(format!("GET {path}: this client cannot watch"))
    }
}

impl<K: Kube + ?Sized> Kube for Arc<K> {
    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<(u16, Vec<u8>), String> {
        (**self).request(method, path, body)
    }
    fn watch(&self, path: &str) -> Result<(u16, Box<dyn BufRead + Send>), String> {
        (**self).watch(path)
    }
}

/// `Leases` over the Kubernetes API.
pub struct LeaseApi<K>(pub K);

/// A slot watch lasts this long before the server ends it and it is started again from the
/// last resourceVersion (one request per node per this, while it waits).
pub const WATCH_SECONDS: u64 = 300;

/// The label selector of a DaemonSet's slots, percent-encoded for a query.
pub fn selector(label: &str) -> String {
    crate::upstream::apiserver::query(&format!("{DAEMONSET_LABEL}={label}"))
}

/// How a slot watch ended.
enum End {
    /// The server ended it (timeoutSeconds), or the connection dropped: watch again from
    /// the last resourceVersion.
    Closed {
        got: bool,
    },
    /// 410 Gone: list again.
    Expired,
    Failed(String),
    /// 403 on the watch: the identity may list the Leases but not watch them (a manifest
    /// from before the watch).
    Forbidden,
    /// The node stopped waiting: nobody reads the cache any more.
    Unwanted,
}

/// Without the `watch` grant, the slots are listed again this often instead; the watch is
/// asked for again every `WATCH_SECONDS`.
pub const LIST_EVERY: Duration = Duration::from_secs(2);

impl<K: Kube + Clone + 'static> LeaseApi<K> {
    /// LIST with the selector, then WATCH from its resourceVersion, until the cache is
    /// dropped by the fleet (checked at each event, bookmark and watch end).
    fn keep(&self, ns: &str, label: &str, cache: &Arc<SlotCache>) {
        let base = path(ns, None);
        let sel = selector(label);
        let list = format!("{base}?labelSelector={sel}");
        let mut backoff = Backoff::new();
        let mut need_list = true;
        let unwanted = |c: &Arc<SlotCache>| Arc::strong_count(c) == 1;
        let mut warned = false;
        // Refused the watch (403): listing every LIST_EVERY, the watch asked again only after
        // this (not at each list: a refused WATCH is a request too).
        let mut listing_until: Option<Instant> = None;
        let mut listed_at = Instant::now();
        while !unwanted(cache) {
            if need_list {
                let what = format!("GET {list}");
                let listed = match self.0.request("GET", &list, None) {
                    Ok((200, body)) => {
                        Lease::list_with_version(&body).map_err(|e| format!("{what}: {e}"))
                    }
                    Ok((status, body)) => Err(unexpected(&what, status, &body).to_string()),
                    Err(e) => Err(format!("{what}: {e}")),
                };
                match listed {
                    Ok((leases, rv)) => {
                        cache.replace(leases, rv);
                        need_list = false;
                        listed_at = Instant::now();
                    }
                    Err(e) => {
                        log::warn!("fleet slot watch: {e}; no slot is taken until it answers");
                        cache.set_error(Some(e));
                        std::thread::sleep(backoff.next_delay());
                        continue;
                    }
                }
            }
            if listing_until.is_some_and(|until| Instant::now() < until) {
                std::thread::sleep(LIST_EVERY);
                need_list = true;
                continue;
            }
            let p = format!(
                "{list}&resourceVersion={}&watch=1&allowWatchBookmarks=true&timeoutSeconds={WATCH_SECONDS}",
                crate::upstream::apiserver::query(&cache.rv())
            );
            let began = Instant::now();
            match self.stream(&p, cache) {
                End::Unwanted => return,
                End::Closed { got } if got || began.elapsed() >= Duration::from_secs(5) => {
                    backoff.reset();
                }
                End::Closed { .. } => std::thread::sleep(backoff.next_delay()),
                End::Expired => {
                    // Gone again straight after a list (a proxy or an apiserver whose watch
                    // cache lags): listed again after a backoff, not at once in a loop.
                    if listed_at.elapsed() < Duration::from_secs(5) {
                        std::thread::sleep(backoff.next_delay());
                    }
                    need_list = true;
                }
                End::Forbidden => {
                    // Listed every LIST_EVERY from here on (above), until the watch is asked again.
                    listing_until = Some(Instant::now() + Duration::from_secs(WATCH_SECONDS));
                    if !warned {
                        log::warn!("fleet slot watch: the apiserver refused to watch leases (403): waiting by listing the slots every {}s instead; grant `watch` on leases (packaging/kubernetes/rbac.yaml)", LIST_EVERY.as_secs());
                        warned = true;
                    }
                }
                End::Failed(e) => {
                    log::warn!("fleet slot watch: {e}; no slot is taken until it is back");
                    cache.set_error(Some(e));
                    std::thread::sleep(backoff.next_delay());
                    // What was missed while it was down: listed again.
                    need_list = true;
                }
            }
        }
    }

    fn stream(&self, p: &str, cache: &Arc<SlotCache>) -> End {
        let (status, mut r) = match self.0.watch(p) {
            Ok(x) => x,
            Err(e) => return End::Failed(format!("GET {p}: {e}")),
        };
        match status {
            200 => {}
            410 => return End::Expired,
            403 => return End::Forbidden,
            s => return End::Failed(format!("GET {p} answered {s}")),
        }
        let mut buf = Vec::new();
        let mut got = false;
        loop {
            if Arc::strong_count(cache) == 1 {
                return End::Unwanted;
            }
            match watch::read_line(&mut r, &mut buf) {
                Ok(Some(Ok(()))) => {}
                Ok(Some(Err(n))) => {
                    log::warn!("fleet slot watch: skipped an event of {n} bytes");
                    continue;
                }
                Ok(None) => return End::Closed { got },
                Err(e) => {
                    log::info!("fleet slot watch: the connection ended ({e}); watching again");
                    return End::Closed { got };
                }
            }
            if buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let lease = |obj: &serde_json::value::RawValue| Lease::from_json(obj.get().as_bytes());
            let change = match watch::parse_envelope(&buf) {
                Ok(Envelope::Upsert(obj)) => lease(obj).map(Change::Upsert),
                Ok(Envelope::Delete(obj)) => lease(obj).map(Change::Delete),
                Ok(Envelope::Bookmark(rv)) => {
                    cache.bookmark(rv);
                    got = true;
                    continue;
                }
                Ok(Envelope::Expired) => return End::Expired,
                Ok(Envelope::Error(m)) => return End::Failed(format!("ERROR event: {m}")),
                Err(e) => Err(e),
            };
            match change {
                Ok(c) => {
                    got = true;
                    cache.set_error(None);
                    cache.apply(c);
                }
                Err(e) => log::warn!(
                    "fleet slot watch: bad event ({e}): {}; keeping the last good state",
                    crate::upstream::excerpt(&buf)
                ),
            }
        }
    }
}

fn path(ns: &str, name: Option<&str>) -> String {
    let base = format!("/apis/coordination.k8s.io/v1/namespaces/{ns}/leases");
    match name {
        Some(n) => format!("{base}/{n}"),
        None => base,
    }
}

fn unexpected(what: &str, status: u16, body: &[u8]) -> LeaseError {
    LeaseError::Unavailable(format!(
        "{what} answered {status}: {}",
        crate::excerpt::excerpt(body)
    ))
}

fn parse(what: &str, body: &[u8]) -> Result<Lease, LeaseError> {
    Lease::from_json(body).map_err(|e| LeaseError::Unavailable(format!("{what}: {e}")))
}

impl<K: Kube + Clone + 'static> Leases for LeaseApi<K> {
    fn watch_slots(
        &self,
        namespace: &str,
        label: &str,
        clock: fn() -> Instant,
    ) -> Result<Arc<SlotCache>, LeaseError> {
        let cache = Arc::new(SlotCache::new(clock));
        let kept = cache.clone();
        let api = LeaseApi(self.0.clone());
        let (ns, label) = (namespace.to_owned(), label.to_owned());
        std::thread::Builder::new()
            .name("fleet-slot-watch".into())
            .spawn(move || api.keep(&ns, &label, &kept))
            .map_err(|e| LeaseError::Unavailable(format!("cannot start the slot watch: {e}")))?;
        Ok(cache)
    }

    fn list(&self, namespace: &str) -> Result<Vec<Lease>, LeaseError> {
        let p = path(namespace, None);
        let what = format!("GET {p}");
        match self.0.request("GET", &p, None) {
            Ok((200, body)) => Lease::list_from_json(&body)
                .map_err(|e| LeaseError::Unavailable(format!("{what}: {e}"))),
            Ok((status, body)) => Err(unexpected(&what, status, &body)),
            Err(e) => Err(LeaseError::Unavailable(format!("{what}: {e}"))),
        }
    }

    fn get(&self, namespace: &str, name: &str) -> Result<Option<Lease>, LeaseError> {
        let p = path(namespace, Some(name));
        let what = format!("GET {p}");
        match self.0.request("GET", &p, None) {
            Ok((200, body)) => parse(&what, &body).map(Some),
            Ok((404, _)) => Ok(None),
            Ok((status, body)) => Err(unexpected(&what, status, &body)),
            Err(e) => Err(LeaseError::Unavailable(format!("{what}: {e}"))),
        }
    }

    fn create(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        let p = path(&lease.namespace, None);
        let what = format!("POST {p}");
        let body = lease.to_json().to_string();
        match self.0.request("POST", &p, Some(body.as_bytes())) {
            Ok((200..=201, body)) => parse(&what, &body),
            Ok((409, _)) => Err(LeaseError::Conflict),
            Ok((status, body)) => Err(unexpected(&what, status, &body)),
            Err(e) => Err(LeaseError::Unavailable(format!("{what}: {e}"))),
        }
    }

    fn update(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        let p = path(&lease.namespace, Some(&lease.name));
        let what = format!("PUT {p}");
        let body = lease.to_json().to_string();
        match self.0.request("PUT", &p, Some(body.as_bytes())) {
            Ok((200..=201, body)) => parse(&what, &body),
            Ok((404 | 409, _)) => Err(LeaseError::Conflict),
            Ok((status, body)) => Err(unexpected(&what, status, &body)),
            Err(e) => Err(LeaseError::Unavailable(format!("{what}: {e}"))),
        }
    }
}

/// The facts of a `apps/v1` DaemonSet the fleet logic needs; `None` without a uid or name.
pub fn daemonset_info(ds: &Value) -> Option<DaemonSetInfo> {
    let meta = &ds["metadata"];
    let ann = &meta["annotations"];
    let text = |v: &Value| v.as_str().map(str::to_owned);
    Some(DaemonSetInfo {
        uid: text(&meta["uid"])?,
        namespace: text(&meta["namespace"]).unwrap_or_default(),
        name: text(&meta["name"])?,
        strategy: text(&ann[STRATEGY_ANNOTATION]),
        max_unavailable: text(&ann[MAX_UNAVAILABLE_ANNOTATION]),
        desired_number_scheduled: ds["status"]["desiredNumberScheduled"]
            .as_u64()
            .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX)),
        min_ready_seconds: ds["spec"]["minReadySeconds"]
            .as_u64()
            .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// (answers to give, requests seen)
    type Script = (Vec<(u16, String)>, Vec<String>);

    /// Answers from a script, recording each request.
    struct Scripted(Mutex<Script>);

    impl Kube for Scripted {
        fn request(&self, m: &str, p: &str, _: Option<&[u8]>) -> Result<(u16, Vec<u8>), String> {
            let mut g = self.0.lock().unwrap();
            g.1.push(format!("{m} {p}"));
            if g.0.is_empty() {
                return Err("connection refused".into());
            }
            let (s, b) = g.0.remove(0);
            Ok((s, b.into_bytes()))
        }
        fn watch(&self, p: &str) -> Result<(u16, Box<dyn BufRead + Send>), String> {
            let (s, b) = self.request("WATCH", p, None)?;
            Ok((s, Box::new(std::io::Cursor::new(b))))
        }
    }

    #[test]
    fn statuses_map_to_lease_outcomes() {
        let lease = Lease {
            namespace: "fleet".into(),
            name: "fleet.gw.0".into(),
            resource_version: "7".into(),
            holder: Some("node-a".into()),
            lease_duration_seconds: 310,
            acquire_time: None,
            renew_time: None,
            lease_transitions: 0,
            failed: None,
            daemonset: Some("fleet.gw".into()),
            takes: Some(super::super::lease::Takes {
                revision: "rev-2".into(),
                count: 3,
            }),
        };
        let body = lease.to_json().to_string();
        let api = LeaseApi(Arc::new(Scripted(Mutex::new((
            vec![
                (200, body.clone()),
                (404, String::new()),
                (409, String::new()),
                (404, String::new()),
                (403, "{\"reason\":\"Forbidden\"}".into()),
                (200, "not json".into()),
            ],
            Vec::new(),
        )))));
        assert_eq!(api.get("fleet", "fleet.gw.0").unwrap(), Some(lease.clone()));
        assert_eq!(api.get("fleet", "fleet.gw.0").unwrap(), None);
        assert_eq!(api.create(&lease), Err(LeaseError::Conflict));
        assert_eq!(
            api.update(&lease),
            Err(LeaseError::Conflict),
            "gone: moved on"
        );
        assert!(matches!(api.update(&lease), Err(LeaseError::Unavailable(e)) if e.contains("403")));
        assert!(matches!(
            api.get("fleet", "x"),
            Err(LeaseError::Unavailable(_))
        ));
        assert!(
            matches!(api.get("fleet", "x"), Err(LeaseError::Unavailable(e)) if e.contains("refused"))
        );
        let list = LeaseApi(Arc::new(Scripted(Mutex::new((
            vec![
                (
                    200,
                    format!("{{\"kind\":\"LeaseList\",\"items\":[{body}]}}"),
                ),
                (403, String::new()),
            ],
            Vec::new(),
        )))));
        assert_eq!(list.list("fleet").unwrap(), vec![lease.clone()]);
        assert!(matches!(list.list("fleet"), Err(LeaseError::Unavailable(e)) if e.contains("403")));
        assert_eq!(
            list.0 .0.lock().unwrap().1[0],
            "GET /apis/coordination.k8s.io/v1/namespaces/fleet/leases"
        );
        assert_eq!(
            api.0 .0.lock().unwrap().1[..5],
            [
                "GET /apis/coordination.k8s.io/v1/namespaces/fleet/leases/fleet.gw.0",
                "GET /apis/coordination.k8s.io/v1/namespaces/fleet/leases/fleet.gw.0",
                "POST /apis/coordination.k8s.io/v1/namespaces/fleet/leases",
                "PUT /apis/coordination.k8s.io/v1/namespaces/fleet/leases/fleet.gw.0",
                "PUT /apis/coordination.k8s.io/v1/namespaces/fleet/leases/fleet.gw.0",
            ]
        );
    }

    #[test]
    fn the_slot_watch_lists_by_label_then_watches_rewatches_and_relists_on_410() {
        let lease = |rv: &str, holder: Option<&str>| {
            Lease {
                namespace: "fleet".into(),
                name: "edge.gw.0".into(),
                resource_version: rv.into(),
                holder: holder.map(Into::into),
                lease_duration_seconds: 70,
                daemonset: Some("edge.gw".into()),
                ..Lease::default()
            }
            .to_json()
        };
        let ev =
            |t: &str, obj: Value| format!("{}\n", serde_json::json!({"type": t, "object": obj}));
        let list = |rv: &str, l: Value| {
            format!("{{\"kind\":\"LeaseList\",\"metadata\":{{\"resourceVersion\":\"{rv}\"}},\"items\":[{l}]}}")
        };
        let bookmark = serde_json::json!({"kind": "Lease", "metadata": {"resourceVersion": "12"}});
        let gone = serde_json::json!({"kind": "Status", "code": 410, "message": "too old"});
        let script = vec![
            (200, list("10", lease("10", Some("node-a")))),
            // A watch: the holder renews, a bookmark, then a garbage line, then the server ends it.
            (
                200,
                ev("MODIFIED", lease("11", Some("node-a")))
                    + &ev("BOOKMARK", bookmark)
                    + "not json\n",
            ),
            // Watched again from 12: expired.
            (200, ev("ERROR", gone)),
            // Listed again: released meanwhile.
            (200, list("20", lease("20", None))),
            // Watched from 20: ended at once, with nothing in it (backed off, then tried again).
            (200, String::new()),
        ];
        let api = LeaseApi(Arc::new(Scripted(Mutex::new((script, Vec::new())))));
        let cache = api.watch_slots("fleet", "edge.gw", Instant::now).unwrap();
        // Until the watch from the re-list's resourceVersion was made (its answer is empty:
        // the thread then backs off before trying again).
        let deadline = Instant::now() + Duration::from_secs(10);
        while api.0 .0.lock().unwrap().1.len() < 5 {
            assert!(
                Instant::now() < deadline,
                "{:?}",
                api.0 .0.lock().unwrap().1
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let look = cache.look("edge.gw", 1, "node-b", Duration::ZERO);
        assert!(
            matches!(look, super::super::cache::Look::Free { .. }),
            "{look:?}"
        );
        let seen = api.0 .0.lock().unwrap().1.clone();
        let base = "/apis/coordination.k8s.io/v1/namespaces/fleet/leases?labelSelector=yurt-ota.io%2Fdaemonset%3Dedge.gw";
        let watch = |rv: &str| {
            format!("WATCH {base}&resourceVersion={rv}&watch=1&allowWatchBookmarks=true&timeoutSeconds={WATCH_SECONDS}")
        };
        assert_eq!(
            seen[..5],
            [
                format!("GET {base}"),
                watch("10"),
                watch("12"),
                format!("GET {base}"),
                watch("20")
            ]
        );
        assert_eq!(cache.rv(), "20");
        // Dropped by the fleet: the thread ends at its next look (here: the script ran out).
        drop(cache);
    }

    #[test]
    fn a_refused_watch_is_not_asked_again_at_each_list() {
        let list =
            "{\"kind\":\"LeaseList\",\"metadata\":{\"resourceVersion\":\"10\"},\"items\":[]}";
        let script = vec![
            (200, list.to_owned()),
            (403, "{\"reason\":\"Forbidden\"}".to_owned()),
            (200, list.to_owned()),
            (200, list.to_owned()),
        ];
        let api = LeaseApi(Arc::new(Scripted(Mutex::new((script, Vec::new())))));
        let cache = api.watch_slots("fleet", "edge.gw", Instant::now).unwrap();
        // Two lists, LIST_EVERY apart, after the refusal.
        let deadline = Instant::now() + LIST_EVERY * 2 + Duration::from_secs(10);
        while api.0 .0.lock().unwrap().1.len() < 4 {
            assert!(
                Instant::now() < deadline,
                "{:?}",
                api.0 .0.lock().unwrap().1
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let seen: Vec<String> = (api.0 .0.lock().unwrap().1.iter())
            .map(|r| {
                r.split_once('?')
                    .map_or(r.as_str(), |(verb, _)| verb)
                    .to_owned()
            })
            .collect();
        let get = "GET /apis/coordination.k8s.io/v1/namespaces/fleet/leases";
        let watch = "WATCH /apis/coordination.k8s.io/v1/namespaces/fleet/leases";
        assert_eq!(
            seen[..4],
            [get, watch, get, get],
            "no WATCH between the lists"
        );
        assert!(matches!(
            cache.look("edge.gw", 1, "node-b", Duration::ZERO),
            super::super::cache::Look::Free { .. }
        ));
        drop(cache);
    }

    #[test]
    fn daemonset_facts_are_read_from_the_object() {
        let ds = serde_json::json!({
            "metadata": {"name": "gw", "namespace": "fleet", "uid": "u1",
                "annotations": {"apps.openyurt.io/update-strategy": "AdvancedRollingUpdate",
                                "apps.openyurt.io/max-unavailable": "2"}},
            "spec": {"minReadySeconds": 7},
            "status": {"desiredNumberScheduled": 5}
        });
        assert_eq!(
            daemonset_info(&ds),
            Some(DaemonSetInfo {
                uid: "u1".into(),
                namespace: "fleet".into(),
                name: "gw".into(),
                strategy: Some("AdvancedRollingUpdate".into()),
                max_unavailable: Some("2".into()),
                desired_number_scheduled: 5,
                min_ready_seconds: 7,
            })
        );
        assert_eq!(daemonset_info(&serde_json::json!({"metadata": {}})), None);
    }
}
