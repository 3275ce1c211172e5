//! YurtHub v1.7's wire over the model: `GET /pods`, `/v1/healthz`, and the OTA `upgrade` and
//! `imagepull` calls with YurtHub's own pre-checks and plain-text answers.

use std::time::Instant;

use super::model::{Model, Owner, SimPod};
use super::{Answer, JSON};

/// Answers one YurtHub route; `parts` is the path split on `/`.
pub(super) fn handle(m: &mut Model, now: Instant, method: &str, parts: &[&str]) -> Answer {
    let post = method == "POST";
    match parts {
        ["pods"] if method == "GET" => Answer {
            status: 200,
            content_type: JSON,
            body: m.pod_list(),
        },
        ["v1", "healthz"] if method == "GET" => Answer::text(200, "OK"),
        ["openyurt.io", "v1", "namespaces", ns, "pods", pod, "upgrade"] if post => {
            upgrade(m, now, ns, pod)
        }
        ["openyurt.io", "v1", "namespaces", ns, "pods", pod, "imagepull"] if post => {
            imagepull(m, now, ns, pod)
        }
        // gorilla/mux: a known path with another method is a bare 405.
        ["pods"] | ["v1", "healthz"] => Answer::text(405, ""),
        ["openyurt.io", "v1", "namespaces", _, "pods", _, "upgrade" | "imagepull"] => {
            Answer::text(405, "")
        }
        _ => Answer::text(404, "404 page not found\n"),
    }
}

/// What YurtHub checks before either OTA call: the cloud is reachable, the pod exists, and its
/// own status allows the call (else 403 with `status_error`'s sentence).
fn checked<'m>(
    m: &'m Model,
    ns: &str,
    name: &str,
    status_error: impl FnOnce(String) -> String,
) -> Result<&'m SimPod, Answer> {
    if !m.connected() {
        return Err(Answer::text(
            503,
            "OTA upgrade is not allowed when node is disconnected to cloud",
        ));
    }
    let p = m
        .pod(ns, name)
        .ok_or_else(|| Answer::text(500, format!("Get pod failed, pods \"{name}\" not found")))?;
    p.check_status()
        .map_err(|e| Answer::text(403, status_error(e)))?;
    Ok(p)
}

fn upgrade(m: &mut Model, now: Instant, ns: &str, pod: &str) -> Answer {
    let p = match checked(m, ns, pod, |e| {
        format!("Pre check update pod failed, Failed to check pod {ns}/{pod} status, error: {e}")
    }) {
        Ok(p) => p,
        Err(answer) => return answer,
    };
    if let Some((hash, pulled)) = &p.image {
        let want = match p.owner {
            Owner::DaemonSet(d) => m.daemonsets()[d].current_hash(),
            _ => String::new(),
        };
        if !pulled || *hash != want {
            let reason = if *pulled { "PullImageSuccess" } else { "" };
            return Answer::text(
                403,
                format!(
                    "Pre check update pod failed, Failed to check pod {ns}/{pod} image ready, error: \
                     Pod: {ns}/{pod} image is not ready, reason: {reason}, message: controllerrevision: {hash}"
                ),
            );
        }
    }
    match p.owner {
        Owner::DaemonSet(_) => {}
        // The sim has no YurtStaticSet configmaps.
        Owner::Node => return Answer::text(403, "Configmap for static pod does not exist"),
        Owner::ReplicaSet => {
            return Answer::text(400, "Not support ota upgrade pod type ReplicaSet")
        }
    }
    let uid = p.uid.clone();
    match m.delete_pod(now, ns, pod, Some(&uid)) {
        Ok(()) => Answer::ok_text(format!("Start updating pod {ns}/{pod}")),
        // Unreachable under the lock: the pod was just found with this uid.
        Err(e) => Answer::text(500, format!("Delete pod failed: {e:?}")),
    }
}

fn imagepull(m: &mut Model, now: Instant, ns: &str, pod: &str) -> Answer {
    if let Err(answer) = checked(m, ns, pod, |e| {
        format!("Failed to check pod status {ns}/{pod}, error: {e}")
    }) {
        return answer;
    }
    match m.request_image(now, ns, pod) {
        Some(_) => Answer::ok_text(format!("Image pre-pull requested for pod {ns}/{pod}")),
        None => Answer::text(500, "Patch pod status for imagepull failed"),
    }
}
