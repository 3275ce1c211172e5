//! Upgrade and imagepull with YurtHub's checks, order and answers (SPEC 2b): a fresh `GET`
//! of the pod, then `DELETE` with a uid precondition, or the `pods/status` patch.

use serde_json::Value;

use super::watch;
use super::{Apiserver, Detect, Inner};
use crate::upstream::{excerpt, Relay, UpstreamError};

impl Apiserver {
    /// `DELETE` with the uid read as precondition: a pod recreated under the same name since
    /// is never deleted (409, answered as YurtHub's 403).
    pub fn delete(&self, ns: &str, name: &str, uid: &str) -> Result<Relay, UpstreamError> {
        let i = &self.inner;
        let body = serde_json::json!({"kind":"DeleteOptions","apiVersion":"v1","preconditions":{"uid": uid}});
        // Not connected: the DELETE was not sent. Any other failure (no answer, a reset after
        // the request went out, a timeout) may follow a DELETE the apiserver carried out: an
        // error, which says so, never "disconnected" (issue 23, item 1).
        let resp = match i.request(
            &i.calls,
            "DELETE",
            &format!("/api/v1/namespaces/{ns}/pods/{name}"),
            Some(("application/json", body.to_string().into_bytes())),
        ) {
            Ok(r) => r,
            Err(UpstreamError::Connect(_)) => return Ok(disconnected()),
            Err(e) => return Err(e),
        };
        let (code, body) = Inner::read_all(resp)?;
        Ok(match code {
            200 | 202 => Relay {
                status: 200,
                content_type: Some("application/json".into()),
                body: format!("Start updating pod {ns}/{name}").into_bytes(),
            },
            404 => text(403, format!("Pre check update pod failed, pod {ns}/{name} (uid {uid}) is gone")),
            409 => text(
                403,
                format!("Pre check update pod failed, pod {ns}/{name} changed before the delete: it is no longer uid {uid}"),
            ),
            _ => {
                log::warn!("apiserver delete of {ns}/{name} answered {code}: {}", excerpt(&body));
                text(500, "Apply update failed")
            }
        })
    }

    /// `Upstream::pod_now`: a fresh GET (never the watch cache).
    pub(super) fn read_again(
        &self,
        ns: &str,
        name: &str,
        uid: &str,
    ) -> Result<crate::upstream::PodNow, UpstreamError> {
        use crate::upstream::PodNow;
        let (code, body) = self
            .inner
            .get(&format!("/api/v1/namespaces/{ns}/pods/{name}"))?;
        match code {
            404 => Ok(PodNow::Replaced),
            200 => {
                let pod: Value = serde_json::from_slice(&body)
                    .map_err(|e| UpstreamError::InvalidJson(e.to_string()))?;
                let same =
                    pod["metadata"]["uid"] == uid && pod["metadata"]["deletionTimestamp"].is_null();
                Ok(if same {
                    PodNow::Unchanged
                } else {
                    PodNow::Replaced
                })
            }
            code => Err(UpstreamError::Status {
                code,
                body: excerpt(&body),
            }),
        }
    }

    /// `Upstream::report_failure`: a core/v1 Event on the pod, `reason: UpgradeFailed`,
    /// `type: Warning`, naming the node, the revision and why (SPEC 6).
    pub(super) fn event(&self, f: &crate::upstream::Failure) -> Result<(), String> {
        let i = &self.inner;
        let node = i.node();
        let now = crate::state::rfc3339(std::time::SystemTime::now());
        let revision = f.revision.unwrap_or("(not named by the upstream)");
        let message = format!(
            "yurt-ota on node {node}: the upgrade of pod {}/{} to revision {revision} failed: {}; this node does not try that revision again by itself, and keeps its slot of the fleet budget until its pod is available",
            f.namespace, f.pod, f.reason
        );
        let ev = serde_json::json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": format!("{}.", f.pod), "namespace": f.namespace},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": f.namespace,
                               "name": f.pod, "uid": f.uid},
            "reason": "UpgradeFailed", "type": "Warning", "message": message,
            "source": {"component": "yurt-ota", "host": node},
            "reportingComponent": "yurt-ota", "reportingInstance": node,
            "firstTimestamp": now, "lastTimestamp": now,
            "count": 1,
        });
        let path = format!("/api/v1/namespaces/{}/events", f.namespace);
        let resp = i
            .request(
                &i.calls,
                "POST",
                &path,
                Some(("application/json", ev.to_string().into_bytes())),
            )
            .map_err(|e| format!("POST {path}: {e}"))?;
        let (code, body) = Inner::read_all(resp).map_err(|e| format!("POST {path}: {e}"))?;
        match code {
            200..=299 => Ok(()),
            _ => Err(format!("POST {path} answered {code}: {}", excerpt(&body))),
        }
    }

    /// `Upstream::upgrade`.
    pub(super) fn upgrade_pod(&self, ns: &str, name: &str) -> Result<Relay, UpstreamError> {
        let i = &self.inner;
        let pod = match i.fresh_pod(ns, name)? {
            Ok(p) => p,
            Err(answer) => return Ok(answer),
        };
        let uid = match precheck(&pod, ns, name, i.node()) {
            Ok(uid) => uid,
            Err(answer) => return Ok(answer),
        };
        self.delete(ns, name, &uid)
    }

    /// `Upstream::imagepull`.
    pub(super) fn imagepull_pod(&self, ns: &str, name: &str) -> Result<Relay, UpstreamError> {
        let i = &self.inner;
        if i.settings.detect == Detect::Revision {
            // No OpenYurt pre-pull controller: answer as a YurtHub before v1.7.
            return Ok(text(404, "404 page not found\n"));
        }
        let pod = match i.fresh_pod(ns, name)? {
            Ok(p) => p,
            Err(answer) => return Ok(answer),
        };
        let cond = pod["status"]["conditions"].as_array().and_then(|c| {
            c.iter()
                .find(|c| c["type"] == crate::pod::NEED_UPGRADE)
                .cloned()
        });
        let deleting = !pod["metadata"]["deletionTimestamp"].is_null();
        let Some(cond) = cond.filter(|c| c["status"] == "True" && !deleting) else {
            return Ok(text(403, format!("Failed to check pod status {ns}/{name}, error: Pod: {ns}/{name} update status is False, can not be updated")));
        };
        let message = cond["message"].as_str().unwrap_or_default();
        let patch = serde_json::json!({"status":{"conditions":[{
            "type": crate::pod::IMAGE_READY, "status": "False", "reason": "",
            "message": message,
            "lastTransitionTime": crate::state::rfc3339(std::time::SystemTime::now()),
        }]}});
        let path = format!("/api/v1/namespaces/{ns}/pods/{name}/status?fieldManager=yurt-ota");
        let resp = match i.request(
            &i.calls,
            "PATCH",
            &path,
            Some((
                "application/strategic-merge-patch+json",
                patch.to_string().into_bytes(),
            )),
        ) {
            Ok(r) => r,
            Err(_) => return Ok(disconnected()),
        };
        let (code, body) = Inner::read_all(resp)?;
        if code != 200 {
            log::warn!(
                "apiserver pods/status patch of {ns}/{name} answered {code}: {}",
                excerpt(&body)
            );
            return Ok(text(500, "Patch pod status for imagepull failed"));
        }
        Ok(Relay {
            status: 200,
            content_type: Some("application/json".into()),
            body: format!("Image pre-pull requested for pod {ns}/{name}").into_bytes(),
        })
    }
}

impl Inner {
    /// A fresh read of the pod, as YurtHub does (never the watch cache); with detect =
    /// revision, the synthesized condition added from the DaemonSet state.
    fn fresh_pod(&self, ns: &str, name: &str) -> Result<Result<Value, Relay>, UpstreamError> {
        let (code, body) = match self.get(&format!("/api/v1/namespaces/{ns}/pods/{name}")) {
            Ok(r) => r,
            Err(_) => return Ok(Err(disconnected())),
        };
        if code != 200 {
            let msg = serde_json::from_slice::<Value>(&body)
                .map(|v| watch::status_message(&v))
                .unwrap_or_else(|_| excerpt(&body));
            return Ok(Err(text(500, format!("Get pod failed, {msg}"))));
        }
        let mut pod: Value =
            serde_json::from_slice(&body).map_err(|e| UpstreamError::InvalidJson(e.to_string()))?;
        if self.settings.detect == Detect::Revision {
            if let Ok((_, e, _)) =
                watch::entry(&serde_json::value::to_raw_value(&pod).expect("a Value"))
            {
                let s = self.lock();
                match self.decision(&s, &e) {
                    Some((needs, hash)) => watch::set_condition(&mut pod, needs, &hash),
                    None => {
                        // Not handled: no condition may be trusted.
                        if let Some(c) = pod["status"]["conditions"].as_array_mut() {
                            c.retain(|c| c["type"] != crate::pod::NEED_UPGRADE);
                        }
                    }
                }
            }
        }
        Ok(Ok(pod))
    }
}

fn text(status: u16, body: impl Into<String>) -> Relay {
    Relay {
        status,
        content_type: Some("text/plain; charset=utf-8".into()),
        body: body.into().into_bytes(),
    }
}

fn disconnected() -> Relay {
    text(
        503,
        "OTA upgrade is not allowed when node is disconnected to cloud",
    )
}

/// YurtHub's checks on a fresh pod, in its order; Err is the answer to give.
pub fn precheck(pod: &Value, ns: &str, name: &str, node: &str) -> Result<String, Relay> {
    let status_err = |e: String| {
        Err(text(
            403,
            format!(
                "Pre check update pod failed, Failed to check pod {ns}/{name} status, error: {e}"
            ),
        ))
    };
    if !pod["metadata"]["deletionTimestamp"].is_null() {
        return status_err(format!("Pod {ns}/{name} is deleting, can not be updated"));
    }
    if pod["spec"]["nodeName"].as_str() != Some(node) {
        return status_err(format!("Pod: {ns}/{name} is not on node {node}"));
    }
    let conditions = pod["status"]["conditions"].as_array();
    let cond = |kind: &str| conditions.and_then(|c| c.iter().find(|c| c["type"] == kind));
    if cond(crate::pod::NEED_UPGRADE).is_none_or(|c| c["status"] != "True") {
        return status_err(format!(
            "Pod: {ns}/{name} update status is False, can not be updated"
        ));
    }
    if let Some(img) = cond(crate::pod::IMAGE_READY) {
        let want = cond(crate::pod::NEED_UPGRADE)
            .and_then(|c| c["message"].as_str())
            .unwrap_or_default();
        let have = img["message"].as_str().unwrap_or_default();
        if img["status"] != "True" || have != want {
            return Err(text(
                403,
                format!(
                    "Pre check update pod failed, Failed to check pod {ns}/{name} image ready, error: Pod: {ns}/{name} image is not ready, reason: {}, message: {have}",
                    img["reason"].as_str().unwrap_or_default()
                ),
            ));
        }
    }
    let Some(owner) = pod["metadata"]["ownerReferences"]
        .as_array()
        .and_then(|o| o.first())
    else {
        return Err(text(400, "Pod has no owner references"));
    };
    let kind = owner["kind"].as_str().unwrap_or_default();
    if kind == "Node" {
        // YurtHub upgrades static pods through OpenYurt's YurtStaticSet, whose ConfigMap a
        // cluster without OpenYurt does not have: YurtHub's answer for that case.
        return Err(text(403, "Configmap for static pod does not exist"));
    }
    if kind != "DaemonSet" {
        return Err(text(
            400,
            format!("Not support ota upgrade pod type {kind}"),
        ));
    }
    Ok(pod["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LIST: &str = include_str!("../../../tests/fixtures/kind-v1.36-kube-system-podlist.json");

    /// kube-proxy's pod from the recorded list, with `PodNeedUpgrade` as given.
    fn kube_proxy(need: Option<&str>) -> (Value, String, String) {
        let list: Value = serde_json::from_str(LIST).unwrap();
        let mut pod = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| {
                p["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .starts_with("kube-proxy")
            })
            .unwrap()
            .clone();
        if let Some(status) = need {
            watch::set_condition(&mut pod, status == "True", "abc");
        }
        let name = pod["metadata"]["name"].as_str().unwrap().to_owned();
        let node = pod["spec"]["nodeName"].as_str().unwrap().to_owned();
        (pod, name, node)
    }

    fn answer(r: Result<String, Relay>) -> (u16, String) {
        match r {
            Ok(uid) => (200, uid),
            Err(r) => (r.status, String::from_utf8(r.body).unwrap()),
        }
    }

    #[test]
    fn precheck_answers_as_yurthub_in_its_order() {
        let (pod, name, node) = kube_proxy(Some("True"));
        let uid = pod["metadata"]["uid"].as_str().unwrap().to_owned();
        assert_eq!(
            answer(precheck(&pod, "kube-system", &name, &node)),
            (200, uid)
        );

        let (mut deleting, ..) = kube_proxy(Some("True"));
        deleting["metadata"]["deletionTimestamp"] = json!("2026-06-15T05:00:00Z");
        // Deleting comes before every other check, even on another node.
        let (code, body) = answer(precheck(&deleting, "kube-system", &name, "other-node"));
        assert_eq!(code, 403);
        assert_eq!(body, format!("Pre check update pod failed, Failed to check pod kube-system/{name} status, error: Pod kube-system/{name} is deleting, can not be updated"));

        let (code, body) = answer(precheck(&pod, "kube-system", &name, "other-node"));
        assert_eq!(code, 403);
        assert!(body.ends_with("is not on node other-node"), "{body}");

        for need in [None, Some("False")] {
            let (p, ..) = kube_proxy(need);
            let (code, body) = answer(precheck(&p, "kube-system", &name, &node));
            assert_eq!(code, 403);
            assert!(
                body.ends_with("update status is False, can not be updated"),
                "{body}"
            );
        }

        let (mut pulling, ..) = kube_proxy(Some("True"));
        pulling["status"]["conditions"].as_array_mut().unwrap().push(json!({
            "type": "PodImageReady", "status": "False", "reason": "", "message": "controllerrevision: abc"}));
        let (code, body) = answer(precheck(&pulling, "kube-system", &name, &node));
        assert_eq!(code, 403);
        assert_eq!(body, format!("Pre check update pod failed, Failed to check pod kube-system/{name} image ready, error: Pod: kube-system/{name} image is not ready, reason: , message: controllerrevision: abc"));
        // Pulled for the target revision: allowed.
        pulling["status"]["conditions"]
            .as_array_mut()
            .unwrap()
            .last_mut()
            .unwrap()["status"] = json!("True");
        assert_eq!(
            answer(precheck(&pulling, "kube-system", &name, &node)).0,
            200
        );

        let (mut orphan, ..) = kube_proxy(Some("True"));
        orphan["metadata"]["ownerReferences"] = json!([]);
        assert_eq!(
            answer(precheck(&orphan, "kube-system", &name, &node)),
            (400, "Pod has no owner references".into())
        );
        orphan["metadata"]["ownerReferences"] = json!([{"kind": "Node", "name": "n", "uid": "u"}]);
        assert_eq!(
            answer(precheck(&orphan, "kube-system", &name, &node)),
            (403, "Configmap for static pod does not exist".into())
        );
        orphan["metadata"]["ownerReferences"] =
            json!([{"kind": "ReplicaSet", "name": "x", "uid": "u"}]);
        assert_eq!(
            answer(precheck(&orphan, "kube-system", &name, &node)),
            (400, "Not support ota upgrade pod type ReplicaSet".into())
        );
    }
}
