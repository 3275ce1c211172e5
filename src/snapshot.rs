//! The pod cache: what the poller fills and the API serves.
//!
//! A snapshot is built once per change of the upstream list: the typed pods for decisions, and
//! the `GET /pods` body pre-rendered as bytes, so serving it is a copy, never a re-serialization.
//! Pods are kept as received (key order and values untouched) except `metadata.managedFields`,
//! which no device app needs and which is a third of a pod's size.

use std::borrow::Cow;
use std::fmt;
use std::io::Write;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::pod::Pod;

#[derive(Debug)]
pub struct Snapshot {
    pub pods: Vec<Pod>,
    /// The `GET /pods` body.
    pub body: Vec<u8>,
    /// A hash of the upstream bytes it was built from, to skip rebuilding an unchanged list.
    pub source_hash: u64,
    /// `namespace/name (uid)` of the items dropped because an earlier item had the same uid.
    pub duplicates: Vec<String>,
}

/// The `GET /pods` body, so the API can send it straight from the shared snapshot.
impl AsRef<[u8]> for Snapshot {
    fn as_ref(&self) -> &[u8] {
        &self.body
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct InvalidList(pub String);

impl fmt::Display for InvalidList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a valid PodList: {}", self.0)
    }
}

#[derive(Deserialize)]
struct RawList<'a> {
    #[serde(default)]
    kind: Option<&'a str>,
    #[serde(borrow, default)]
    metadata: Option<&'a RawValue>,
    /// Required, though it may be `null` (an empty node). `deserialize_with` makes serde
    /// report a missing `items` instead of reading it as `None`.
    #[serde(borrow, deserialize_with = "present")]
    items: Option<Vec<&'a RawValue>>,
}

fn present<'de: 'a, 'a, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<&'a RawValue>>, D::Error> {
    Option::deserialize(d)
}

pub fn hash(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

impl Snapshot {
    /// Validates and renders an upstream `GET /pods` body. Anything that is not a `v1.PodList`
    /// of pods with at least a name is refused as a whole; the caller keeps its last good one.
    pub fn build(raw: &[u8]) -> Result<Snapshot, InvalidList> {
        let list: RawList = serde_json::from_slice(raw).map_err(|e| InvalidList(e.to_string()))?;
        if let Some(kind) = list.kind {
            if kind != "PodList" {
                return Err(InvalidList(format!("kind is {kind:?}")));
            }
        }
        let items = list.items.unwrap_or_default();
        let mut pods: Vec<Pod> = Vec::with_capacity(items.len());
        // A uid is one pod: a list that carries it twice (seen upstream) would make two upgrade
        // calls for it. The first is kept, in the typed pods and in the served body alike.
        let mut uids = std::collections::HashSet::with_capacity(items.len());
        let mut duplicates = Vec::new();
        let mut body = Vec::with_capacity(raw.len() / 2);
        body.extend_from_slice(br#"{"kind":"PodList","apiVersion":"v1","metadata":"#);
        body.extend_from_slice(list.metadata.map_or("{}", |m| m.get()).as_bytes());
        body.extend_from_slice(br#","items":["#);
        for (i, item) in items.iter().enumerate() {
            let pod: Pod = serde_json::from_str(item.get())
                .map_err(|e| InvalidList(format!("items[{i}]: {e}")))?;
            if !pod.metadata.uid.is_empty() && !uids.insert(pod.metadata.uid.clone()) {
                duplicates.push(format!("{} ({})", pod.key(), pod.metadata.uid));
                continue;
            }
            if !pods.is_empty() {
                body.push(b',');
            }
            write_without_managed_fields(&mut body, item)
                .map_err(|e| InvalidList(format!("items[{i}]: {e}")))?;
            pods.push(pod);
        }
        body.extend_from_slice(b"]}");
        Ok(Snapshot {
            pods,
            body,
            source_hash: hash(raw),
            duplicates,
        })
    }

    pub fn needing_upgrade(&self) -> impl Iterator<Item = &Pod> {
        self.pods.iter().filter(|p| p.needs_upgrade())
    }

    /// The pods needing upgrade, in the order automatic upgrades take them.
    pub fn needing_upgrade_in_order(&self) -> Vec<&Pod> {
        let mut pods: Vec<&Pod> = self.needing_upgrade().collect();
        pods.sort_by(|a, b| crate::pod::upgrade_order(a, b));
        pods
    }
}

/// A JSON object's members in their original order, values left as raw text.
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Members<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Members<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Members<'a>, M::Error> {
                let mut out = Vec::new();
                while let Some(key) = map.next_key::<Key<'a>>()? {
                    out.push((key.0, map.next_value::<&'a RawValue>()?));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// A key borrowed from the input, or owned when it had escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Key<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

fn write_object(
    out: &mut Vec<u8>,
    members: &[(Cow<str>, &RawValue)],
    mut each: impl FnMut(&mut Vec<u8>, &str, &RawValue) -> serde_json::Result<()>,
) -> serde_json::Result<()> {
    out.push(b'{');
    for (i, (k, v)) in members.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut *out, k.as_ref())?;
        out.push(b':');
        each(out, k, v)?;
    }
    out.push(b'}');
    Ok(())
}

/// Copies one pod, member by member, leaving out `metadata.managedFields`.
pub(crate) fn write_without_managed_fields(
    out: &mut Vec<u8>,
    pod: &RawValue,
) -> serde_json::Result<()> {
    let top: Members = serde_json::from_str(pod.get())?;
    write_object(out, &top.0, |out, key, value| {
        if key != "metadata" {
            return out
                .write_all(value.get().as_bytes())
                .map_err(serde_json::Error::io);
        }
        let meta: Members = serde_json::from_str(value.get())?;
        let kept: Vec<_> = meta
            .0
            .into_iter()
            .filter(|(k, _)| k != "managedFields")
            .collect();
        write_object(out, &kept, |out, _, v| {
            out.write_all(v.get().as_bytes())
                .map_err(serde_json::Error::io)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{fixture, VERSIONS};
    use serde_json::Value;

    #[test]
    fn fixture_lists_render_as_received_without_managed_fields() {
        for v in VERSIONS {
            let raw = fixture(v);
            let snap = Snapshot::build(&raw).unwrap();
            assert_eq!(snap.pods.len(), 8);
            let mut want: Value = serde_json::from_slice(&raw).unwrap();
            for item in want["items"].as_array_mut().unwrap() {
                item["metadata"]
                    .as_object_mut()
                    .unwrap()
                    .remove("managedFields")
                    .unwrap();
            }
            let got: Value = serde_json::from_slice(&snap.body).unwrap();
            assert_eq!(got, want, "v{v}");
            assert!(snap.body.len() < raw.len() * 2 / 3, "managedFields dropped");
            // Key order is kept: the first pod's keys come out as they went in.
            let text = String::from_utf8(snap.body.clone()).unwrap();
            let (m, s) = (
                text.find("\"metadata\":{\"name\"").unwrap(),
                text.find("\"spec\":").unwrap(),
            );
            assert!(m < s);
        }
    }

    #[test]
    fn null_items_is_an_empty_node() {
        let snap =
            Snapshot::build(br#"{"kind":"PodList","apiVersion":"v1","metadata":{},"items":null}"#)
                .unwrap();
        assert!(snap.pods.is_empty());
        let v: Value = serde_json::from_slice(&snap.body).unwrap();
        assert_eq!(v["items"], Value::Array(vec![]));
    }

    #[test]
    fn garbage_is_refused() {
        for bad in [
            &b"<html>502 Bad Gateway</html>"[..],
            b"",
            b"[]",
            b"{}",
            br#"{"kind":"Status","items":[]}"#,
            br#"{"kind":"PodList","items":[{"metadata":{}}]}"#,
            br#"{"kind":"PodList","items":[42]}"#,
            br#"{"kind":"PodList","items":[{"metadata":{"name":"a"}}]"#,
        ] {
            assert!(
                Snapshot::build(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// Regression (issue 9, item 4): a list with the same uid twice gave two upgrade calls.
    #[test]
    fn a_uid_listed_twice_is_one_pod() {
        let raw = br#"{"kind":"PodList","items":[
            {"metadata":{"name":"a","namespace":"n","uid":"u1"}},
            {"metadata":{"name":"b","namespace":"n","uid":"u2"}},
            {"metadata":{"name":"a-again","namespace":"n","uid":"u1"}},
            {"metadata":{"name":"x","namespace":"n"}},
            {"metadata":{"name":"y","namespace":"n"}}]}"#;
        let snap = Snapshot::build(raw).unwrap();
        let names: Vec<_> = snap.pods.iter().map(|p| p.metadata.name.as_str()).collect();
        assert_eq!(
            names,
            ["a", "b", "x", "y"],
            "pods without a uid are not merged"
        );
        assert_eq!(snap.duplicates, ["n/a-again (u1)"]);
        let v: Value = serde_json::from_slice(&snap.body).unwrap();
        assert_eq!(v["items"].as_array().unwrap().len(), 4);
    }

    #[test]
    fn escaped_keys_and_values_survive() {
        let raw = br#"{"kind":"PodList","items":[{"metadata":{"name":"a","annotations":{"x\"y":"\u00e9\n"},"managedFields":[]},"odd\\key":1}]}"#;
        let snap = Snapshot::build(raw).unwrap();
        let v: Value = serde_json::from_slice(&snap.body).unwrap();
        assert_eq!(v["items"][0]["metadata"]["annotations"]["x\"y"], "é\n");
        assert_eq!(v["items"][0]["odd\\key"], 1);
        assert!(v["items"][0]["metadata"].get("managedFields").is_none());
    }
}
