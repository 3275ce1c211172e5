//! `GET /metrics`: the counters of `NodeView` with the gauges read now.

use std::time::{Instant, SystemTime};

use super::Api;
use crate::http::Response;
use crate::state::unix_ms;

impl Api {
    /// `GET /metrics`: Prometheus text.
    pub(super) fn metrics(&self, now: Instant) -> Response {
        Response::new(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            self.shared.metrics.render(&self.gauges(now)).into_bytes(),
        )
    }

    pub(super) fn gauges(&self, now: Instant) -> crate::metrics::Gauges {
        let c = &self.control;
        let now_ms = unix_ms(SystemTime::now());
        let (holds, breaker, in_flight, queued, blocked) = c.store.read(|s| {
            (
                s.active_holds(now_ms).count(),
                s.breaker.is_some(),
                s.in_flight.len(),
                s.queue.len(),
                s.blocked
                    .iter()
                    .map(|b| (b.daemonset.clone(), b.revision.clone().unwrap_or_default()))
                    .collect(),
            )
        });
        let gates = c.gates.states();
        let open = gates.iter().all(|g| !g.upgrade || g.open) && holds == 0;
        crate::metrics::Gauges {
            gates: gates
                .into_iter()
                .map(|g| crate::metrics::GateGauge {
                    name: g.name,
                    safety: g.safety,
                    open: g.open,
                    changes: g.changes,
                })
                .collect(),
            upgrade_gates_open: open,
            holds,
            breaker_tripped: breaker,
            in_flight,
            queued,
            state_writable: c.store.unavailable().is_none(),
            blocked,
            ..self.shared.gauges(now)
        }
    }
}
