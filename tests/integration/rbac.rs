//! The shipped RBAC manifest (packaging/kubernetes/rbac.yaml) against the agent's calls (issue
//! 20): the stand-in enforces it, so with the manifest as shipped real agents upgrade their pods
//! under a budget of one with no call refused (one waits for the other's slot, watching the
//! slot Leases: issue 24), and tell the cluster of a failed one; with each grant removed in
//! turn, an agent makes that very call and the stand-in refuses it 403, named here by verb and
//! resource.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use yurt_ota_apisim::apiserver::rbac::SHIPPED;
use yurt_ota_apisim::apiserver::Options;

use crate::util::*;

/// The stand-in's record of pod DELETEs, Readies and Lease writes.
fn history(h: &yurt_ota_apisim::apiserver::server::Handle) -> Vec<Value> {
    get(&format!("{}/sim/history", h.control_url()))
        .json()
        .as_array()
        .unwrap()
        .clone()
}

/// Every (verb, resource) the manifest grants, with where: (document, rule, verb index).
fn grants(docs: &[Value]) -> Vec<(String, (usize, usize, usize))> {
    let mut out = Vec::new();
    for (d, doc) in docs.iter().enumerate() {
        let Some(rules) = doc["rules"].as_array() else {
            continue;
        };
        for (r, rule) in rules.iter().enumerate() {
            for res in rule["resources"].as_array().unwrap() {
                for (v, verb) in rule["verbs"].as_array().unwrap().iter().enumerate() {
                    let name = format!("{} {}", verb.as_str().unwrap(), res.as_str().unwrap());
                    assert_eq!(
                        rule["resources"].as_array().unwrap().len(),
                        1,
                        "one resource a rule, so that a verb can be taken away alone"
                    );
                    out.push((name, (d, r, v)));
                }
            }
        }
    }
    out
}

/// The manifest without one verb of one rule, as YAML (JSON documents).
fn without(docs: &[Value], (d, r, v): (usize, usize, usize)) -> String {
    let mut docs = docs.to_vec();
    docs[d]["rules"][r]["verbs"]
        .as_array_mut()
        .unwrap()
        .remove(v);
    docs.iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// The stand-in's count of requests refused as `forbidden <verb> <resource>`.
fn forbidden(h: &yurt_ota_apisim::apiserver::server::Handle) -> Vec<String> {
    let sim = get(&format!("{}/sim", h.control_url())).json();
    sim["requests"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.starts_with("forbidden "))
        .cloned()
        .collect()
}

fn options(nodes: usize) -> Options {
    Options {
        nodes: apisim_nodes(nodes),
        grace: Duration::from_millis(100),
        recreate_delay: Duration::from_millis(200),
        ready_delay: Duration::from_millis(1500),
        observe_delay: Duration::from_millis(100),
        ..Options::default()
    }
}

/// The budgeted path (detect = revision), two nodes and a budget of one: pods listed and
/// watched, the DaemonSet and its revisions read, a slot taken, the pod read and deleted, the
/// slot renewed and released; the other node waits for it meanwhile (it lists the slot Leases
/// and watches them). The slot's Lease is touched by someone else once taken, so its holder's
/// next write meets a 409 and reads the Lease again. Returns when `done` says so or both nodes
/// upgraded; whether the slot ended released.
fn budgeted(manifest: Option<String>, done: &dyn Fn(&[String]) -> bool) -> (Vec<String>, bool) {
    let (h, d) = apisim_start(Duration::from_millis(300), options(2), |c| {
        c.rbac = manifest
    });
    post(&format!(
        "{}/sim/annotate/edge-apps/telemetry-agent?key=apps.openyurt.io/max-unavailable&value=1",
        h.control_url()
    ));
    let agents: Vec<Agent> = (1..=2)
        .map(|i| {
            Agent::start(&format!(
                "[upstream]\nkind = \"apiserver\"\nkubeconfig = \"{}\"\nnode_name = \"edge-node-{i}\"\n\
                 detect = \"revision\"\n[policy]\nstable_for = \"200ms\"\ngate_check_interval = \"50ms\"\n\
                 prepull = false\n",
                d.path().join("kubeconfig").display()
            ))
        })
        .collect();
    let admin = ApiClient::admin(&h);
    let slot =
        "/apis/coordination.k8s.io/v1/namespaces/yurt-ota/leases/edge-apps.telemetry-agent.0";
    let start = Instant::now();
    let mut rolled = false;
    let mut touched = false;
    let mut released = false;
    while start.elapsed() < Duration::from_secs(60) {
        let refused = forbidden(&h);
        if done(&refused) {
            return (refused, false);
        }
        if !rolled && start.elapsed() > Duration::from_secs(2) {
            post(&format!(
                "{}/sim/rollout/edge-apps/telemetry-agent",
                h.control_url()
            ));
            rolled = true;
        }
        let (s, lease) = admin.get(slot);
        if s == 200 && !touched && lease["spec"]["holderIdentity"].is_string() {
            let mut l = lease.clone();
            l["metadata"]["annotations"]["touched"] = json!("by-the-test");
            let (s, _) = admin
                .call(
                    "PUT",
                    slot,
                    "application/json",
                    Some(l.to_string().as_bytes()),
                )
                .unwrap();
            assert_eq!(s, 200);
            touched = true;
        }
        if touched && s == 200 && lease["spec"]["holderIdentity"].is_null() {
            released = true;
            let upgraded = history(&h)
                .iter()
                .filter(|e| e["event"] == "ready" && e["daemonset"] == "edge-apps/telemetry-agent")
                .count();
            if upgraded == 2 {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(agents);
    (forbidden(&h), released)
}

/// A broken release (detect = revision, automatic mode): the replacement never becomes Ready,
/// the upgrade fails at `ready_timeout`, and the agent tells the cluster with an `UpgradeFailed`
/// Event on the pod. Returns when `done` says so or the Event was recorded; whether it was.
fn failed(manifest: Option<String>, done: &dyn Fn(&[String]) -> bool) -> (Vec<String>, bool) {
    let (h, d) = apisim_start(Duration::from_millis(300), options(1), |c| {
        c.rbac = manifest
    });
    let agent = Agent::start(&format!(
        "[upstream]\nkind = \"apiserver\"\nkubeconfig = \"{}\"\nnode_name = \"edge-node-1\"\n\
         detect = \"revision\"\npoll_interval = \"250ms\"\n[policy]\nmode = \"auto\"\n\
         stable_for = \"200ms\"\ngate_check_interval = \"50ms\"\nprepull = false\n\
         ready_timeout = \"3s\"\n",
        d.path().join("kubeconfig").display()
    ));
    post(&format!(
        "{}/sim/rollout/edge-apps/telemetry-agent?broken=1",
        h.control_url()
    ));
    let start = Instant::now();
    let mut told = false;
    while start.elapsed() < Duration::from_secs(60) {
        let refused = forbidden(&h);
        if done(&refused) {
            return (refused, false);
        }
        told = history(&h)
            .iter()
            .any(|e| e["event"] == "k8s_event" && e["reason"] == "UpgradeFailed");
        if told {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(agent);
    (forbidden(&h), told)
}

/// The imagepull with detect = openyurt: a merge patch of `pods/status`. Whether it was
/// answered 200.
fn imagepull(manifest: Option<String>) -> (Vec<String>, u16) {
    let (h, d) = apisim_start(Duration::from_millis(300), options(1), |c| {
        c.rbac = manifest;
        c.options.openyurt = true;
    });
    let agent = Agent::start(&format!(
        "[upstream]\nkind = \"apiserver\"\nkubeconfig = \"{}\"\nnode_name = \"edge-node-1\"\n\
         detect = \"openyurt\"\n",
        d.path().join("kubeconfig-token-file").display()
    ));
    post(&format!(
        "{}/sim/rollout/kube-system/kube-proxy",
        h.control_url()
    ));
    let mut pod = String::new();
    wait_for("kube-proxy needs upgrade", Duration::from_secs(60), || {
        let pods = get(&agent.url("/pods")).json();
        let found = pods["items"].as_array().and_then(|items| {
            items.iter().find(|p| {
                p["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("kube-proxy"))
                    && p["status"]["conditions"].as_array().is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "PodNeedUpgrade" && c["status"] == "True")
                    })
            })
        });
        if let Some(p) = found {
            pod = p["metadata"]["name"].as_str().unwrap().to_owned();
        }
        found.is_some()
    });
    let r = post(&agent.url(&format!(
        "/openyurt.io/v1/namespaces/kube-system/pods/{pod}/imagepull"
    )));
    (forbidden(&h), r.status)
}

#[test]
fn the_shipped_manifest_lets_the_agent_work_and_each_grant_is_one_it_calls() {
    let (refused, released) = budgeted(None, &|_| false);
    assert!(
        refused.is_empty() && released,
        "as shipped: no call refused ({refused:?}), the slot taken and given back, both upgraded"
    );
    let (refused, status) = imagepull(None);
    assert!(refused.is_empty() && status == 200, "{refused:?} {status}");
    let (refused, told) = failed(None, &|_| false);
    assert!(
        refused.is_empty() && told,
        "as shipped: no call refused ({refused:?}), the failed upgrade told as an Event"
    );

    let docs = yurt_ota::yaml::parse_all(SHIPPED).unwrap();
    let all = grants(&docs);
    // 14: `watch leases` is called by a node waiting for a slot (issue 24).
    assert_eq!(all.len(), 14, "{all:?}");
    let mut unneeded = Vec::new();
    for (grant, at) in all {
        let manifest = without(&docs, at);
        let want = format!("forbidden {grant}");
        let refused = if grant == "patch pods/status" {
            imagepull(Some(manifest)).0
        } else if grant == "create events" {
            failed(Some(manifest), &|r: &[String]| r.contains(&want)).0
        } else {
            budgeted(Some(manifest), &|r: &[String]| r.contains(&want)).0
        };
        eprintln!("without {grant:?}: refused {refused:?}");
        if !refused.contains(&want) {
            unneeded.push(grant);
        }
    }
    assert!(
        unneeded.is_empty(),
        "granted but never called by the agent: {unneeded:?}"
    );
}
