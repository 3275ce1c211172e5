//! The node's pods kept from a list and a watch: event parsing, the in-memory store, the
//! rendered `v1.PodList`, and the reconnect backoff.
//!
//! Each event is parsed by serde_json; the line reader around it is ours for a need no library
//! meets: a cap per event (`MAX_EVENT`), the over-long line skipped to its newline and the stream
//! kept. `BufRead::read_until` and serde_json's `StreamDeserializer` read a line or a value of any
//! size into memory; kube-runtime's watcher is a Kubernetes client on tokio (SPEC 9: neither).

use std::collections::BTreeMap;
use std::io::BufRead;
use std::time::Duration;

use serde_json::value::RawValue;
use serde_json::Value;

use super::revision::PodLabels;

/// One watch event line above this is skipped (logged), the last good state kept.
pub const MAX_EVENT: usize = 4 * 1024 * 1024;

/// A pod as kept: its JSON as the apiserver sent it, without `metadata.managedFields`, and
/// what the agent reads of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub uid: String,
    /// Compact JSON text, members in the apiserver's order: kept once, as text, never as a
    /// `Value` tree (a fifth of the memory), and never parsed into one on the way in (its many
    /// small allocations, freed around the kept text, fragmented the heap).
    pub json: Box<str>,
    /// The owning DaemonSet (namespace, name, uid) when the first owner is one.
    pub daemonset: Option<(String, String, String)>,
    pub labels: PodLabels,
}

pub type Key = (String, String);

/// What the agent reads of a pod's (or any object's) metadata; the rest stays text.
#[derive(serde::Deserialize)]
struct Head {
    metadata: Option<Meta>,
}

#[derive(serde::Deserialize)]
struct Meta {
    namespace: Option<String>,
    name: Option<String>,
    uid: Option<String>,
    #[serde(rename = "resourceVersion")]
    resource_version: Option<String>,
    labels: Option<Labels>,
    #[serde(rename = "ownerReferences")]
    owners: Option<Vec<Owner>>,
}

#[derive(serde::Deserialize)]
struct Labels {
    #[serde(rename = "pod-template-generation")]
    template_generation: Option<String>,
    #[serde(rename = "controller-revision-hash")]
    revision_hash: Option<String>,
}

#[derive(serde::Deserialize)]
struct Owner {
    kind: Option<String>,
    name: Option<String>,
    uid: Option<String>,
}

/// A pod's key, what is kept of it, and its resourceVersion.
pub fn entry(pod: &RawValue) -> Result<(Key, Entry, String), String> {
    entry_with(pod, &mut Vec::new())
}

/// `entry`, writing through `scratch`: a list reuses one buffer for all its pods, instead of
/// leaving a freed block the size of each pod (with managedFields) beside each kept one.
fn entry_with(pod: &RawValue, scratch: &mut Vec<u8>) -> Result<(Key, Entry, String), String> {
    let head: Head = serde_json::from_str(pod.get()).map_err(|e| format!("pod: {e}"))?;
    let m = head.metadata.ok_or("pod without metadata")?;
    let ns = m.namespace.ok_or("pod without metadata.namespace")?;
    let name = m.name.ok_or("pod without metadata.name")?;
    let uid = m.uid.ok_or("pod without metadata.uid")?;
    let daemonset = m
        .owners
        .and_then(|o| o.into_iter().next())
        .filter(|o| o.kind.as_deref() == Some("DaemonSet"))
        .and_then(|o| Some((ns.clone(), o.name?, o.uid?)));
    let labels = m.labels.map_or_else(PodLabels::default, |l| PodLabels {
        template_generation: l.template_generation,
        revision_hash: l.revision_hash,
    });
    scratch.clear();
    crate::snapshot::write_without_managed_fields(scratch, pod).map_err(|e| format!("pod: {e}"))?;
    let json = std::str::from_utf8(scratch).map_err(|e| format!("pod: {e}"))?;
    // Kept as text, a pod must still read as the snapshot reads each item (a duplicate `spec`,
    // say, which a tree would have folded away): one refused item would refuse every list
    // rendered from the store, and the snapshot would stay at the last good one for ever.
    serde_json::from_str::<crate::pod::Pod>(json).map_err(|e| format!("pod: {e}"))?;
    Ok((
        (ns, name),
        Entry {
            uid,
            // At its size (the buffer held managedFields too).
            json: Box::from(json),
            daemonset,
            labels,
        },
        m.resource_version.unwrap_or_default(),
    ))
}

#[derive(Debug, PartialEq)]
pub enum Event {
    Upsert(Key, Box<Entry>, String),
    Delete(Key, String),
    Bookmark(String),
    /// 410 Gone/Expired: the resourceVersion is too old; relist.
    Expired,
    Error(String),
}

/// One watch event line of any kind of object, the object left as text: the pod watch and the
/// fleet's slot Lease watch (`fleet::kube`) read their lines through this one parser.
#[derive(Debug)]
pub enum Envelope<'a> {
    /// ADDED or MODIFIED.
    Upsert(&'a RawValue),
    Delete(&'a RawValue),
    /// The resourceVersion a BOOKMARK carries.
    Bookmark(String),
    /// 410 Gone/Expired: the resourceVersion is too old; relist.
    Expired,
    Error(String),
}

/// Reads one event line's type and object.
pub fn parse_envelope(line: &[u8]) -> Result<Envelope<'_>, String> {
    #[derive(serde::Deserialize)]
    struct Line<'a> {
        #[serde(rename = "type")]
        kind: Option<String>,
        #[serde(borrow)]
        object: Option<&'a RawValue>,
    }
    let v: Line = serde_json::from_slice(line).map_err(|e| format!("not JSON: {e}"))?;
    let obj = v.object.ok_or("event without object")?;
    match v.kind.as_deref().unwrap_or_default() {
        "ADDED" | "MODIFIED" => Ok(Envelope::Upsert(obj)),
        "DELETED" => Ok(Envelope::Delete(obj)),
        "BOOKMARK" => {
            let head: Head = serde_json::from_str(obj.get()).map_err(|e| e.to_string())?;
            Ok(Envelope::Bookmark(
                head.metadata
                    .and_then(|m| m.resource_version)
                    .unwrap_or_default(),
            ))
        }
        "ERROR" => {
            let obj: Value = serde_json::from_str(obj.get()).map_err(|e| e.to_string())?;
            if obj["code"] == 410 {
                Ok(Envelope::Expired)
            } else {
                Ok(Envelope::Error(status_message(&obj)))
            }
        }
        other => Err(format!("unknown event type {other:?}")),
    }
}

pub fn parse_event(line: &[u8]) -> Result<Event, String> {
    Ok(match parse_envelope(line)? {
        Envelope::Upsert(obj) => {
            let (k, e, rv) = entry(obj)?;
            Event::Upsert(k, Box::new(e), rv)
        }
        Envelope::Delete(obj) => {
            let (k, _, rv) = entry(obj)?;
            Event::Delete(k, rv)
        }
        Envelope::Bookmark(rv) => Event::Bookmark(rv),
        Envelope::Expired => Event::Expired,
        Envelope::Error(m) => Event::Error(m),
    })
}

/// A `Status` object's message (or its code).
pub fn status_message(obj: &Value) -> String {
    match obj["message"].as_str() {
        Some(m) => m.to_owned(),
        None => format!("status {}", obj["code"]),
    }
}

/// The most pod text the store keeps: the bound on a YurtHub pod list (`upstream::MAX_BODY`,
/// 32 MiB), so that `GET /pods` serves no more in apiserver mode than in YurtHub mode.
pub const MAX_KEPT: usize = crate::upstream::MAX_BODY as usize;

/// A list or an event that would take the pods kept past [`MAX_KEPT`]; nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverLimit {
    /// The bytes of pod text it would have taken.
    pub bytes: usize,
}

impl std::fmt::Display for OverLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the node's pods would take {} KiB, over the {} MiB a pod list may take",
            self.bytes >> 10,
            MAX_KEPT >> 20
        )
    }
}

/// The node's pods, by namespace and name.
#[derive(Debug, Default)]
pub struct Store {
    pub pods: BTreeMap<Key, Entry>,
    /// The resourceVersion to watch from.
    pub rv: String,
    /// The pod text kept, each pod with the comma that separates it in a rendered list.
    pub bytes: usize,
}

/// What a pod takes of [`MAX_KEPT`].
fn size(e: &Entry) -> usize {
    e.json.len() + 1
}

impl Store {
    /// A `v1.PodList` answer replaces everything; one whose pods would be over [`MAX_KEPT`]
    /// changes nothing.
    pub fn replace(&mut self, list: &[u8]) -> Result<(), String> {
        /// Items stay text until each is read on its own: a 110-pod list as one `Value` tree
        /// would be several MiB at once.
        #[derive(serde::Deserialize)]
        struct List<'a> {
            kind: Option<String>,
            metadata: Option<Value>,
            #[serde(borrow)]
            items: Option<Vec<&'a serde_json::value::RawValue>>,
        }
        let v: List =
            serde_json::from_slice(list).map_err(|e| format!("pod list is not JSON: {e}"))?;
        if v.kind.as_deref() != Some("PodList") {
            return Err("not a PodList".into());
        }
        let rv = v
            .metadata
            .as_ref()
            .and_then(|m| m["resourceVersion"].as_str())
            .unwrap_or_default()
            .to_owned();
        let mut pods = BTreeMap::new();
        let mut scratch = Vec::new();
        let mut bytes = 0;
        for item in v.items.unwrap_or_default() {
            let (k, e, _) =
                entry_with(item, &mut scratch).map_err(|e| format!("pod list item: {e}"))?;
            bytes += size(&e);
            if let Some(old) = pods.insert(k, e) {
                bytes -= size(&old);
            }
            if bytes > MAX_KEPT {
                return Err(OverLimit { bytes }.to_string());
            }
        }
        self.pods = pods;
        self.rv = rv;
        self.bytes = bytes;
        Ok(())
    }

    /// Applies one event; true when the pods changed. An event that would take the pods past
    /// [`MAX_KEPT`] changes nothing, its resourceVersion included (so that the state stays
    /// the one of a resourceVersion: the last good one).
    pub fn apply(&mut self, ev: Event) -> Result<bool, OverLimit> {
        Ok(match ev {
            Event::Upsert(k, e, rv) => {
                let bytes = self.bytes + size(&e) - self.pods.get(&k).map_or(0, size);
                if bytes > MAX_KEPT {
                    return Err(OverLimit { bytes });
                }
                self.set_rv(rv);
                self.bytes = bytes;
                let changed = self.pods.get(&k) != Some(&e);
                self.pods.insert(k, *e);
                changed
            }
            Event::Delete(k, rv) => {
                self.set_rv(rv);
                let gone = self.pods.remove(&k);
                self.bytes -= gone.as_ref().map_or(0, size);
                gone.is_some()
            }
            Event::Bookmark(rv) => {
                self.set_rv(rv);
                false
            }
            Event::Expired | Event::Error(_) => false,
        })
    }

    fn set_rv(&mut self, rv: String) {
        if !rv.is_empty() {
            self.rv = rv;
        }
    }

    /// The `v1.PodList` served as `GET /pods`; `condition` adds `PodNeedUpgrade` to a pod
    /// (detect = revision).
    pub fn render(&self, condition: impl Fn(&Entry) -> Option<(bool, String)>) -> Vec<u8> {
        // Its size, or nearly (a synthesized condition adds ~150 bytes): no doubling past it.
        let size = self
            .pods
            .values()
            .map(|e| e.json.len() + 200)
            .sum::<usize>();
        let mut out = Vec::with_capacity(size + 128);
        out.extend_from_slice(
            br#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"#,
        );
        serde_json::to_writer(&mut out, &self.rv).expect("string to vec");
        out.extend_from_slice(br#"},"items":["#);
        for (i, e) in self.pods.values().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            match condition(e) {
                None => out.extend_from_slice(e.json.as_bytes()),
                Some((needs, hash)) => {
                    let mut pod: Value = serde_json::from_str(&e.json).expect("stored as JSON");
                    set_condition(&mut pod, needs, &hash);
                    serde_json::to_writer(&mut out, &pod).expect("value to vec")
                }
            }
        }
        out.extend_from_slice(b"]}");
        out
    }
}

/// Sets `PodNeedUpgrade` as OpenYurt's controller does (v1.7 message).
pub fn set_condition(pod: &mut Value, needs: bool, hash: &str) {
    let cond = serde_json::json!({
        "type": crate::pod::NEED_UPGRADE,
        "status": if needs { "True" } else { "False" },
        "lastProbeTime": null,
        "lastTransitionTime": null,
        "message": format!("{}{hash}", crate::pod::REVISION_PREFIX),
    });
    if !pod["status"].is_object() {
        pod["status"] = serde_json::json!({});
    }
    let status = &mut pod["status"];
    if !status["conditions"].is_array() {
        status["conditions"] = serde_json::json!([]);
    }
    let list = status["conditions"].as_array_mut().expect("made an array");
    list.retain(|c| c["type"] != crate::pod::NEED_UPGRADE);
    list.push(cond);
}

/// Reads one line up to `MAX_EVENT`. Ok(None) at the end of the stream; an over-long line is
/// consumed up to its newline and reported as Err(length).
pub fn read_line(
    r: &mut impl BufRead,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<Result<(), usize>>> {
    buf.clear();
    let mut skipped = 0usize;
    loop {
        let chunk = r.fill_buf()?;
        if chunk.is_empty() {
            return Ok(if buf.is_empty() && skipped == 0 {
                None
            } else if skipped > 0 {
                Some(Err(skipped))
            } else {
                Some(Ok(()))
            });
        }
        let (part, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (&chunk[..i], i + 1),
            None => (chunk, chunk.len()),
        };
        let found = done != chunk.len() || chunk.last() == Some(&b'\n');
        if skipped > 0 || buf.len() + part.len() > MAX_EVENT {
            skipped += buf.len() + part.len();
            buf.clear();
        } else {
            buf.extend_from_slice(part);
        }
        r.consume(done);
        if found {
            return Ok(Some(if skipped > 0 { Err(skipped) } else { Ok(()) }));
        }
    }
}

/// Reconnect delays: 1 s doubling to 60 s, each drawn between half and all of it, so that a
/// fleet whose apiserver comes back does not reconnect in step.
///
/// backon's delay iterator: its jitter adds up to the delay itself, so half the nominal delay,
/// doubled and capped at half the cap, then jittered, draws from [d/2, d) ("equal jitter").
/// Each agent's generator is seeded from the OS (fastrand under backon's `std`).
#[derive(Debug)]
pub struct Backoff {
    delays: backon::ExponentialBackoff,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

impl Backoff {
    pub const FIRST: Duration = Duration::from_secs(1);
    pub const CAP: Duration = Duration::from_secs(60);

    pub fn new() -> Backoff {
        use backon::BackoffBuilder;
        let delays = backon::ExponentialBuilder::new()
            .with_min_delay(Self::FIRST / 2)
            .with_max_delay(Self::CAP / 2)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build();
        Backoff { delays }
    }

    pub fn reset(&mut self) {
        *self = Self::new();
    }

    pub fn next_delay(&mut self) -> Duration {
        // Without a limit of times the iterator does not end; the cap if it ever did.
        self.delays.next().unwrap_or(Self::CAP).min(Self::CAP)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = include_str!(
        "../../../tests/fixtures/kind-v1.36-kube-system-pods-watch-initial-events.jsonl"
    );
    const LIST: &str = include_str!("../../../tests/fixtures/kind-v1.36-kube-system-podlist.json");

    #[test]
    fn the_recorded_stream_builds_the_same_pods_as_the_list() {
        let mut from_watch = Store::default();
        let mut r = std::io::BufReader::new(STREAM.as_bytes());
        let mut buf = Vec::new();
        let mut bookmarks = 0;
        while let Some(line) = read_line(&mut r, &mut buf).unwrap() {
            line.unwrap();
            let ev = parse_event(&buf).unwrap();
            if matches!(ev, Event::Bookmark(_)) {
                bookmarks += 1;
            }
            from_watch.apply(ev).unwrap();
        }
        assert_eq!(bookmarks, 1);
        assert_eq!(from_watch.rv, "550");
        assert_eq!(from_watch.pods.len(), 8);
        let mut from_list = Store::default();
        from_list.replace(LIST.as_bytes()).unwrap();
        let names = |s: &Store| s.pods.keys().cloned().collect::<Vec<_>>();
        assert_eq!(names(&from_watch).len(), names(&from_list).len());
        let ds: Vec<_> = from_watch
            .pods
            .values()
            .filter_map(|e| e.daemonset.as_ref())
            .map(|d| d.1.clone())
            .collect();
        assert_eq!(ds, ["kindnet", "kube-proxy"]);
        // Rendered list: the shape the snapshot reads, without managedFields.
        let rendered = from_watch.render(|_| None);
        let snap = crate::snapshot::Snapshot::build(&rendered).unwrap();
        assert_eq!(snap.pods.len(), 8);
        assert!(!String::from_utf8_lossy(&rendered).contains("managedFields"));
    }

    #[test]
    fn pods_are_kept_as_sent_without_managed_fields() {
        let mut s = Store::default();
        s.replace(LIST.as_bytes()).unwrap();
        let list: Value = serde_json::from_str(LIST).unwrap();
        for item in list["items"].as_array().unwrap() {
            let mut want = item.clone();
            want["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("managedFields")
                .unwrap();
            let m = &item["metadata"];
            let key = (
                m["namespace"].as_str().unwrap().to_owned(),
                m["name"].as_str().unwrap().to_owned(),
            );
            let e = &s.pods[&key];
            assert_eq!(serde_json::from_str::<Value>(&e.json).unwrap(), want);
            // The apiserver's member order, not sorted (`name` before `creationTimestamp`).
            assert!(
                e.json.starts_with(r#"{"metadata":{"name":"#),
                "{}",
                &e.json[..40]
            );
            assert_eq!(e.uid, m["uid"].as_str().unwrap());
        }
    }

    #[test]
    fn a_pod_the_snapshot_would_refuse_is_refused_at_the_store() {
        // Found by fuzz/fuzz_targets/watch_stream.rs: kept as text, a pod with `spec` twice
        // made every rendered list one that `Snapshot::build` refuses.
        let pod = r#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"p","namespace":"n","uid":"u","resourceVersion":"7"},"spec":{},"spec":{}}"#;
        let line = format!(r#"{{"type":"ADDED","object":{pod}}}"#);
        let err = parse_event(line.as_bytes()).unwrap_err();
        assert!(err.contains("duplicate field `spec`"), "{err}");
        let list =
            format!(r#"{{"kind":"PodList","apiVersion":"v1","metadata":{{}},"items":[{pod}]}}"#);
        let mut store = Store::default();
        assert!(store.replace(list.as_bytes()).is_err());
        // Once only: the same pod is kept and renders as the snapshot reads it.
        let once = pod.replacen(r#","spec":{}"#, "", 1);
        let mut store = Store::default();
        let list =
            format!(r#"{{"kind":"PodList","apiVersion":"v1","metadata":{{}},"items":[{once}]}}"#);
        store.replace(list.as_bytes()).unwrap();
        crate::snapshot::Snapshot::build(&store.render(|_| None)).unwrap();
    }

    #[test]
    fn modified_deleted_and_errors() {
        let mut s = Store::default();
        s.replace(LIST.as_bytes()).unwrap();
        let first: Value = serde_json::from_str(&s.pods.values().next().unwrap().json).unwrap();
        let mut modified = first.clone();
        modified["metadata"]["resourceVersion"] = "900".into();
        modified["metadata"]["labels"]["x"] = "y".into();
        let line = serde_json::json!({"type":"MODIFIED","object":modified}).to_string();
        assert!(s.apply(parse_event(line.as_bytes()).unwrap()).unwrap());
        assert_eq!(s.rv, "900");
        let line = serde_json::json!({"type":"DELETED","object":modified}).to_string();
        assert!(s.apply(parse_event(line.as_bytes()).unwrap()).unwrap());
        assert_eq!(s.pods.len(), 7);
        let expired = br#"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"too old resource version: 1 (550)","reason":"Expired","code":410}}"#;
        assert_eq!(parse_event(expired).unwrap(), Event::Expired);
        let other = br#"{"type":"ERROR","object":{"kind":"Status","status":"Failure","message":"internal error","code":500}}"#;
        assert_eq!(
            parse_event(other).unwrap(),
            Event::Error("internal error".into())
        );
        assert!(parse_event(b"{garbage").is_err());
        assert!(parse_event(br#"{"type":"ADDED","object":{"metadata":{}}}"#).is_err());
        assert_eq!(s.pods.len(), 7, "garbage changes nothing");
    }

    #[test]
    fn events_past_32_mib_of_pods_change_nothing_and_deletes_make_room() {
        // Issue 23 item 4: every pod the watch sent was kept, without bound.
        let mut s = Store::default();
        s.replace(LIST.as_bytes()).unwrap();
        let start = s.bytes;
        assert_eq!(
            start,
            s.pods.values().map(|e| e.json.len() + 1).sum::<usize>()
        );
        let mut pod: Value = serde_json::from_str(&s.pods.values().next().unwrap().json).unwrap();
        pod["metadata"]["annotations"]["pad"] = "x".repeat(3 << 20).into();
        let event = |pod: &Value, i: usize, kind: &str| {
            let mut pod = pod.clone();
            pod["metadata"]["name"] = format!("big-{i}").into();
            pod["metadata"]["resourceVersion"] = format!("{}", 1000 + i).into();
            let line = serde_json::json!({"type": kind, "object": pod}).to_string();
            parse_event(line.as_bytes()).unwrap()
        };
        let mut i = 0;
        let over = loop {
            match s.apply(event(&pod, i, "ADDED")) {
                Ok(changed) => assert!(changed),
                Err(over) => break over,
            }
            i += 1;
            assert!(i < 20, "no bound");
        };
        assert!(over.bytes > MAX_KEPT && s.bytes <= MAX_KEPT, "{over:?}");
        assert_eq!(s.pods.len(), 8 + i);
        assert_eq!(s.rv, format!("{}", 1000 + i - 1), "the last good version");
        assert!(s.render(|_| None).len() <= MAX_KEPT + 1024);
        // A pod deleted makes room for the next.
        s.apply(event(&pod, 0, "DELETED")).unwrap();
        s.apply(event(&pod, i, "ADDED")).unwrap();
        assert_eq!(s.pods.len(), 8 + i);
    }

    #[test]
    fn oversized_line_is_skipped_and_the_next_read() {
        let mut data = vec![b'x'; MAX_EVENT + 10];
        data.extend_from_slice(b"\n{\"a\":1}\n");
        let mut r = std::io::BufReader::with_capacity(8192, &data[..]);
        let mut buf = Vec::new();
        assert_eq!(
            read_line(&mut r, &mut buf).unwrap(),
            Some(Err(MAX_EVENT + 10))
        );
        assert_eq!(read_line(&mut r, &mut buf).unwrap(), Some(Ok(())));
        assert_eq!(buf, b"{\"a\":1}");
        assert_eq!(read_line(&mut r, &mut buf).unwrap(), None);
    }

    #[test]
    fn condition_is_synthesized_once() {
        let mut s = Store::default();
        s.replace(LIST.as_bytes()).unwrap();
        let once = s.render(|e| e.daemonset.as_ref().map(|_| (true, "abc".into())));
        let snap = crate::snapshot::Snapshot::build(&once).unwrap();
        assert_eq!(snap.needing_upgrade().count(), 2);
        let mut pod: Value = serde_json::from_str(&s.pods.values().next().unwrap().json).unwrap();
        set_condition(&mut pod, true, "a");
        set_condition(&mut pod, false, "b");
        let c: Vec<_> = pod["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["type"] == "PodNeedUpgrade")
            .collect();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0]["message"], "controllerrevision: b");
    }

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter() {
        let mut b = Backoff::new();
        let delays: Vec<Duration> = (0..10).map(|_| b.next_delay()).collect();
        for (i, d) in delays.iter().enumerate() {
            let full = (Backoff::FIRST * 2u32.pow(i as u32)).min(Backoff::CAP);
            assert!(*d >= full / 2 && *d <= full, "{i}: {d:?}");
        }
        b.reset();
        assert!(b.next_delay() <= Backoff::FIRST);
        // Agents started together do not reconnect in step: each draws its own.
        let fifth: std::collections::BTreeSet<Duration> = (0..20)
            .map(|_| {
                let mut b = Backoff::new();
                (0..5).map(|_| b.next_delay()).last().expect("five")
            })
            .collect();
        assert!(fifth.len() > 10, "{fifth:?}");
    }
}
