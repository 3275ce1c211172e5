//! Holds (`/v1/holds`) and the breaker reset: what an operator or a device app sets to stop
//! upgrades for a while, or to let them start again.

use std::time::SystemTime;

use serde_json::{json, Value};

use super::{json_response, state_unavailable, Api, ApiError, TEXT};
use crate::http::Response;
use crate::state::{self, from_unix_ms, unix_ms, Hold, MAX_REASON};

/// A hold lasts at most this long: an app that crashed holding one cannot block forever.
pub const MAX_HOLD_TTL: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

pub(super) fn hold_json(h: &Hold) -> Value {
    json!({
        "name": h.name,
        "reason": h.reason,
        "created": state::rfc3339(from_unix_ms(h.created_ms)),
        "expires": state::rfc3339(from_unix_ms(h.expires_ms)),
    })
}

impl Api {
    pub(super) fn holds(&self) -> Vec<Value> {
        let now_ms = unix_ms(SystemTime::now());
        self.control
            .store
            .read(|s| s.active_holds(now_ms).map(hold_json).collect())
    }

    pub(super) fn hold(&self, method: &str, name: &str, body: &[u8]) -> Result<Response, ApiError> {
        let now = SystemTime::now();
        let now_ms = unix_ms(now);
        match method {
            "GET" => {
                let h = self
                    .control
                    .store
                    .read(|s| s.active_holds(now_ms).find(|h| h.name == name).cloned());
                h.map(|h| json_response(200, &hold_json(&h)))
                    .ok_or_else(|| {
                        ApiError::new(404, "not_found", format!("no active hold {name:?}"))
                    })
            }
            "DELETE" => {
                let existed = self
                    .control
                    .store
                    .commit(|s| {
                        let before = s.holds.len();
                        s.holds.retain(|h| h.name != name);
                        let existed = s.holds.len() != before;
                        if existed {
                            s.event(now, "hold_released", None, format!("hold {name} released"));
                        }
                        existed
                    })
                    .map_err(state_unavailable)?;
                if existed {
                    log::info!("hold {name} released");
                    Ok(Response::new(204, TEXT, Vec::new()))
                } else {
                    Err(ApiError::new(404, "not_found", format!("no hold {name:?}")))
                }
            }
            _ => {
                let bad = |m: String| ApiError::new(400, "invalid_hold", m);
                let v: Value = serde_json::from_slice(body).map_err(|e| {
                    bad(format!("the body must be JSON like {{\"ttl\":\"30m\",\"reason\":\"navigation active\"}}: {e}"))
                })?;
                let ttl = v.get("ttl").and_then(Value::as_str).ok_or_else(|| {
                    bad("\"ttl\" is required, e.g. \"30m\": a hold always expires".into())
                })?;
                let crate::config::HumanDuration(ttl) =
                    ttl.parse().map_err(|e| bad(format!("ttl: {e}")))?;
                if ttl.is_zero() || ttl > MAX_HOLD_TTL {
                    return Err(bad(format!(
                        "ttl must be more than zero and at most {}",
                        crate::config::HumanDuration(MAX_HOLD_TTL)
                    )));
                }
                let reason = match v.get("reason") {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(r)) if r.len() <= MAX_REASON => r.clone(),
                    Some(_) => {
                        return Err(bad(format!(
                            "\"reason\" must be a string of at most {MAX_REASON} bytes"
                        )))
                    }
                };
                let hold = Hold {
                    name: name.to_owned(),
                    reason,
                    created_ms: now_ms,
                    expires_ms: now_ms + ttl.as_millis() as u64,
                };
                let msg = format!(
                    "hold {name} set for {} ({})",
                    crate::config::HumanDuration(ttl),
                    hold.reason
                );
                // Durable before the 200, and at most `MAX_HOLDS` (409 `too_many_holds`).
                self.control
                    .store
                    .commit(|s| {
                        s.set_hold(hold.clone(), now_ms)?;
                        s.event(now, "hold_set", None, msg.clone());
                        Ok(())
                    })
                    .map_err(state_unavailable)?
                    .map_err(|m: String| ApiError::new(409, "too_many_holds", m))?;
                log::info!("{msg}");
                Ok(json_response(200, &hold_json(&hold)))
            }
        }
    }

    /// `POST /v1/breaker/reset`: automatic upgrades may start again.
    pub(super) fn breaker_reset(&self) -> Result<Response, ApiError> {
        let was = self
            .control
            .store
            .commit(|s| {
                let mut was = s.breaker.take();
                // The revisions blocked per DaemonSet (SPEC 6) are cleared by hand too.
                let blocked = std::mem::take(&mut s.blocked);
                if was.is_none() {
                    was = blocked.first().map(|b| crate::state::Breaker {
                        tripped_ms: b.tripped_ms,
                        reason: b.reason.clone(),
                    });
                }
                for b in &blocked {
                    s.event(
                        SystemTime::now(),
                        "revision_unblocked",
                        Some(&b.pod),
                        format!(
                            "reset by the API: revision {} of {} may be tried again (it failed: {})",
                            b.revision.as_deref().unwrap_or("?"),
                            b.daemonset,
                            b.reason
                        ),
                    );
                }
                if let Some(b) = &was {
                    s.event(
                        SystemTime::now(),
                        "breaker_reset",
                        None,
                        format!("reset by the API; it had tripped: {}", b.reason),
                    );
                }
                was
            })
            .map_err(state_unavailable)?;
        if let Some(b) = &was {
            log::info!("circuit breaker reset by the API (was: {})", b.reason);
        }
        Ok(json_response(
            200,
            &json!({"tripped": false, "was_tripped": was.is_some(), "reason": was.map(|b| b.reason)}),
        ))
    }
}
