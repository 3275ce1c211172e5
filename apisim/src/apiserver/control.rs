//! The `/sim/...` control routes (plain HTTP on loopback): describe, history, rollout, undo,
//! annotate, drop watches, fail requests, down/up, node heartbeats, compaction, token rotation.

use std::sync::Arc;

use serde_json::{json, Value};

use super::server::{cut, lock, new_token, set_down, Shared};
use super::tls;
use yurt_ota::http::{self, Request, Response};

/// The `/sim/...` control routes (plain HTTP on loopback).
pub(super) struct Control(pub(super) Arc<Shared>);

impl http::Handler for Control {
    fn handle(&self, req: Request) -> Response {
        let s = &self.0;
        let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
        let q = |k: &str| super::query_value(query, k);
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let post = req.method == "POST";
        let ok = |v: Value| Response::new(200, "application/json", v.to_string().into_bytes());
        let err = |code: u16, m: String| {
            Response::new(
                code,
                "application/json",
                json!({"error": m}).to_string().into_bytes(),
            )
        };
        match parts.as_slice() {
            ["sim"] if req.method == "GET" => {
                let mut d = s.cluster.describe();
                let requests = lock(&s.requests).clone();
                d["leaseRequests"] = super::server::LeaseRequests::of(&requests).to_json();
                d["requests"] = json!(requests);
                d["down"] = json!(*lock(&s.down));
                d["listen"] = json!(s.addr.to_string());
                ok(d)
            }
            ["sim", "history"] if req.method == "GET" => {
                let since = q("since").and_then(|c| c.parse().ok()).unwrap_or(0);
                ok(s.cluster.history(since))
            }
            ["sim", "rollout", ns, ds] if post => {
                let flag = |k: &str| matches!(q(k).as_deref(), Some("1" | "true"));
                match s
                    .cluster
                    .rollout(ns, ds, flag("undo"), flag("broken"), flag("flaky"))
                {
                    Ok(v) => ok(v),
                    Err((c, m)) => err(c, m),
                }
            }
            ["sim", "rollout", ns, ds, "undo"] if post => {
                match s.cluster.rollout(ns, ds, true, false, false) {
                    Ok(v) => ok(v),
                    Err((c, m)) => err(c, m),
                }
            }
            ["sim", "annotate", ns, ds] if post => {
                let Some(key) = q("key") else {
                    return err(400, "key= is required".into());
                };
                match s.cluster.annotate(ns, ds, &key, q("value").as_deref()) {
                    Ok(()) => ok(
                        json!({"annotated": format!("{ns}/{ds}"), "key": key, "value": q("value")}),
                    ),
                    Err(m) => err(404, m),
                }
            }
            ["sim", "min-ready", ns, ds] if post => {
                let Some(seconds) = q("seconds").and_then(|v| v.parse().ok()) else {
                    return err(400, "seconds=N (a whole number) is required".into());
                };
                match s.cluster.set_min_ready(ns, ds, seconds) {
                    Ok(()) => {
                        ok(json!({"daemonset": format!("{ns}/{ds}"), "minReadySeconds": seconds}))
                    }
                    Err(m) => err(404, m),
                }
            }
            ["sim", "drop-watches"] if post => ok(json!({"dropped": cut(s, true)})),
            ["sim", "fail"] if post => {
                let count = q("count").and_then(|c| c.parse().ok()).unwrap_or(1);
                let code = q("code").and_then(|c| c.parse().ok()).unwrap_or(500);
                *lock(&s.fail) = (count, code);
                ok(json!({"fail_next": count, "code": code}))
            }
            ["sim", "reset-after-delete"] if post => {
                let count = q("count").and_then(|c| c.parse().ok()).unwrap_or(1);
                *lock(&s.reset_after_delete) = count;
                ok(json!({"reset_after_delete": count}))
            }
            ["sim", "down"] if post => {
                set_down(s, true);
                ok(json!({"down": true}))
            }
            ["sim", "up"] if post => {
                set_down(s, false);
                ok(json!({"down": false}))
            }
            ["sim", "heartbeat"] if post => {
                let count = q("count").and_then(|c| c.parse().ok()).unwrap_or(1);
                let rv = s.cluster.heartbeat(count);
                ok(json!({"heartbeats": count, "resourceVersion": rv.to_string()}))
            }
            ["sim", "flood"] if post => {
                let count = q("count").and_then(|c| c.parse().ok()).unwrap_or(1);
                let bytes = q("bytes")
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(100 * 1024);
                let rv = s.cluster.flood(count, bytes);
                ok(json!({"flooded": count, "resourceVersion": rv.to_string()}))
            }
            ["sim", "compact"] if post => {
                s.cluster.compact();
                ok(json!({"compacted": s.cluster.compacted().to_string()}))
            }
            ["sim", "rotate-token"] if post => {
                let token = new_token();
                if let Err(e) = tls::write_atomic(&s.dir.join("token"), token.as_bytes()) {
                    return err(500, e);
                }
                *lock(&s.token) = token;
                ok(json!({"rotated": true, "file": s.dir.join("token")}))
            }
            _ => err(404, format!("no control route {} {path}", req.method)),
        }
    }

    fn reject(&self, status: u16, _: &'static str, message: String) -> Response {
        Response::new(status, "text/plain; charset=utf-8", message.into_bytes())
    }
}
