//! `GET /v1/events`: the state store's event log.

use serde_json::{json, Value};

use super::{json_response, query_value, Api, ApiError};
use crate::http::Response;
use crate::state::{self, from_unix_ms};

impl Api {
    /// `GET /v1/events?limit=N`: the newest events first.
    pub(super) fn events(&self, query: &str) -> Result<Response, ApiError> {
        let limit = match query_value(query, "limit") {
            None => 50,
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=state::MAX_EVENTS).contains(n))
                .ok_or_else(|| {
                    ApiError::new(
                        400,
                        "invalid_limit",
                        format!(
                            "limit={v:?}: give a whole number from 1 to {}",
                            state::MAX_EVENTS
                        ),
                    )
                })?,
        };
        let events: Vec<Value> = self.control.store.read(|s| {
            s.events
                .iter()
                .take(limit)
                .map(|e| json!({"at": state::rfc3339(from_unix_ms(e.at_ms)), "kind": e.kind, "pod": e.pod, "message": e.message}))
                .collect()
        });
        Ok(json_response(200, &json!({"events": events})))
    }
}
