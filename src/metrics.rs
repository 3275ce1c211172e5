//! Counters for `/metrics`, in Prometheus text format. Label sets are small and fixed (route
//! templates, status codes, error kinds), never raw paths or pod names.
//!
//! The text exposition is ours for an unmet need: the Prometheus text format (0.0.4) of SPEC 3,
//! served as `text/plain; version=0.0.4`. `prometheus-client` (0.26.0, the Prometheus project's
//! crate; its source checked 2026-12-06) writes only OpenMetrics text: a counter's `# TYPE`
//! line drops `_total` (`# TYPE yurt_ota_polls counter` above `yurt_ota_polls_total{..}`),
//! which in 0.0.4, where a sample's name is its family's, leaves those samples without their
//! type; the exposition ends in `# EOF`; help registered in its `Registry` gets a `.` appended
//! (ours end in one); its content type is `application/openmetrics-text`. A gauge absent until it has a
//! value (`yurt_ota_snapshot_age_seconds` before the first poll) would also need a collector
//! of ours. Escaping and the fixed label sets are small (`label` below).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use crate::upstream::UpstreamError;

#[derive(Default)]
pub struct Metrics {
    polls_ok: AtomicU64,
    polls_failed: [AtomicU64; UpstreamError::KINDS.len()],
    /// `(route, status)` → count.
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// `(call, status)` → count; status 0 is a transport failure.
    upstream_calls: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// Upgrades by outcome: started, succeeded, failed, refused, error.
    upgrades: Mutex<BTreeMap<(&'static str, u16), u64>>,
}

pub const UPGRADE_RESULTS: [&str; 6] = [
    "started",
    "succeeded",
    "failed",
    "refused",
    "error",
    "uncertain",
];

/// A gate as `/metrics` shows it.
pub struct GateGauge {
    pub name: String,
    pub safety: bool,
    pub open: bool,
    pub changes: u64,
}

/// Values read from elsewhere at render time.
#[derive(Default)]
pub struct Gauges {
    pub snapshot_age: Option<f64>,
    pub pods: usize,
    pub pods_needing_upgrade: usize,
    pub ready: bool,
    pub gates: Vec<GateGauge>,
    pub upgrade_gates_open: bool,
    pub holds: usize,
    pub breaker_tripped: bool,
    pub in_flight: usize,
    pub queued: usize,
    /// The state file can be written (`Store::unavailable` is `None`).
    pub state_writable: bool,
    /// `(DaemonSet namespace/name, revision)` blocked on this node after a failed upgrade.
    pub blocked: Vec<(String, String)>,
}

/// A label value as the exposition format wants it: `\\`, `"` and newlines escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn bump(map: &Mutex<BTreeMap<(&'static str, u16), u64>>, key: (&'static str, u16)) {
    *map.lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key)
        .or_default() += 1;
}

/// One line per `(label, status)` key of a counter family: `name{label="…",code="…"} n`.
fn by_status(
    out: &mut String,
    name: &str,
    label: &str,
    map: &Mutex<BTreeMap<(&'static str, u16), u64>>,
) {
    for ((value, code), n) in map.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        let _ = writeln!(out, "{name}{{{label}=\"{value}\",code=\"{code}\"}} {n}");
    }
}

impl Metrics {
    pub fn poll_ok(&self) {
        self.polls_ok.fetch_add(1, Relaxed);
    }

    pub fn poll_failed(&self, kind: &str) {
        if let Some(i) = UpstreamError::KINDS.iter().position(|k| *k == kind) {
            self.polls_failed[i].fetch_add(1, Relaxed);
        }
    }

    pub fn request(&self, route: &'static str, status: u16) {
        bump(&self.requests, (route, status));
    }

    pub fn upstream_call(&self, call: &'static str, status: u16) {
        bump(&self.upstream_calls, (call, status));
    }

    pub fn upgrade(&self, result: &'static str) {
        bump(&self.upgrades, (result, 0));
    }

    pub fn render(&self, g: &Gauges) -> String {
        let mut out = String::with_capacity(2048);
        let head = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        head(
            &mut out,
            "yurt_ota_snapshot_age_seconds",
            "gauge",
            "Seconds since the last successful poll of the upstream (absent before the first).",
        );
        if let Some(age) = g.snapshot_age {
            let _ = writeln!(out, "yurt_ota_snapshot_age_seconds {age:.3}");
        }
        head(
            &mut out,
            "yurt_ota_ready",
            "gauge",
            "1 when a snapshot newer than 3 poll intervals exists.",
        );
        let _ = writeln!(out, "yurt_ota_ready {}", u8::from(g.ready));
        head(
            &mut out,
            "yurt_ota_pods",
            "gauge",
            "Pods on the node in the current snapshot.",
        );
        let _ = writeln!(out, "yurt_ota_pods {}", g.pods);
        head(
            &mut out,
            "yurt_ota_pods_needing_upgrade",
            "gauge",
            "DaemonSet pods with PodNeedUpgrade=True.",
        );
        let _ = writeln!(
            out,
            "yurt_ota_pods_needing_upgrade {}",
            g.pods_needing_upgrade
        );
        head(
            &mut out,
            "yurt_ota_polls_total",
            "counter",
            "Polls of the upstream pod list, by result.",
        );
        let _ = writeln!(
            out,
            "yurt_ota_polls_total{{result=\"ok\"}} {}",
            self.polls_ok.load(Relaxed)
        );
        for (kind, n) in UpstreamError::KINDS.iter().zip(&self.polls_failed) {
            let _ = writeln!(
                out,
                "yurt_ota_polls_total{{result=\"{kind}\"}} {}",
                n.load(Relaxed)
            );
        }
        head(
            &mut out,
            "yurt_ota_upstream_calls_total",
            "counter",
            "Upgrade and imagepull calls sent upstream, by upstream status (0: no answer).",
        );
        by_status(
            &mut out,
            "yurt_ota_upstream_calls_total",
            "call",
            &self.upstream_calls,
        );
        head(
            &mut out,
            "yurt_ota_gate_open",
            "gauge",
            "1 when the gate's signal reads open (a signal that cannot be read is closed).",
        );
        for gate in &g.gates {
            let _ = writeln!(
                out,
                "yurt_ota_gate_open{{gate=\"{}\",safety=\"{}\"}} {}",
                gate.name,
                gate.safety,
                u8::from(gate.open)
            );
        }
        head(
            &mut out,
            "yurt_ota_gate_changes_total",
            "counter",
            "Changes of a gate between open and closed.",
        );
        for gate in &g.gates {
            let _ = writeln!(
                out,
                "yurt_ota_gate_changes_total{{gate=\"{}\"}} {}",
                gate.name, gate.changes
            );
        }
        for (name, help, v) in [
            (
                "yurt_ota_upgrade_gates_open",
                "1 when every upgrade gate is open and no hold is active (stability aside).",
                u64::from(g.upgrade_gates_open),
            ),
            ("yurt_ota_holds_active", "Active holds.", g.holds as u64),
            (
                "yurt_ota_breaker_tripped",
                "1 while the circuit breaker stops automatic upgrades.",
                u64::from(g.breaker_tripped),
            ),
            (
                "yurt_ota_upgrades_in_flight",
                "Upgrades sent and not yet finished.",
                g.in_flight as u64,
            ),
            (
                "yurt_ota_upgrades_queued",
                "Upgrades queued until the gates allow.",
                g.queued as u64,
            ),
            (
                "yurt_ota_state_writable",
                "1 while the state file can be written; at 0, upgrades and changes through the API pause.",
                u64::from(g.state_writable),
            ),
        ] {
            head(&mut out, name, "gauge", help);
            let _ = writeln!(out, "{name} {v}");
        }
        head(
            &mut out,
            "yurt_ota_revision_blocked",
            "gauge",
            "1 for each DaemonSet revision this node does not try again by itself after its upgrade failed (a newer revision, or POST /v1/breaker/reset, clears it).",
        );
        for (ds, rev) in &g.blocked {
            let _ = writeln!(
                out,
                "yurt_ota_revision_blocked{{daemonset=\"{}\",revision=\"{}\"}} 1",
                label(ds),
                label(rev)
            );
        }
        head(
            &mut out,
            "yurt_ota_upgrades_total",
            "counter",
            "Upgrades by the agent's policy, by result: started, succeeded, failed (that revision blocked), refused (4xx), error (not sent), uncertain (no answer or 5xx after it was sent: the pod is read again).",
        );
        let upgrades = self.upgrades.lock().unwrap_or_else(|e| e.into_inner());
        for result in UPGRADE_RESULTS {
            let n = upgrades.get(&(result, 0)).copied().unwrap_or(0);
            let _ = writeln!(out, "yurt_ota_upgrades_total{{result=\"{result}\"}} {n}");
        }
        drop(upgrades);
        head(
            &mut out,
            "yurt_ota_api_requests_total",
            "counter",
            "Requests to the local API, by route and status.",
        );
        by_status(
            &mut out,
            "yurt_ota_api_requests_total",
            "route",
            &self.requests,
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_gauges() {
        let m = Metrics::default();
        m.poll_ok();
        m.poll_failed("timeout");
        m.poll_failed("timeout");
        m.request("pods", 200);
        m.request("pods", 200);
        m.request("upgrade", 400);
        m.upstream_call("upgrade", 503);
        m.upgrade("started");
        let text = m.render(&Gauges {
            snapshot_age: Some(1.5),
            pods: 8,
            pods_needing_upgrade: 2,
            ready: true,
            gates: vec![GateGauge {
                name: "vehicle-stopped".into(),
                safety: true,
                open: false,
                changes: 3,
            }],
            upgrade_gates_open: false,
            holds: 1,
            breaker_tripped: true,
            in_flight: 0,
            queued: 2,
            state_writable: false,
            blocked: vec![("edge-apps/gw".into(), "7f9c\"8d".into())],
        });
        for line in [
            "yurt_ota_snapshot_age_seconds 1.500",
            "yurt_ota_polls_total{result=\"ok\"} 1",
            "yurt_ota_polls_total{result=\"timeout\"} 2",
            "yurt_ota_polls_total{result=\"connect\"} 0",
            "yurt_ota_api_requests_total{route=\"pods\",code=\"200\"} 2",
            "yurt_ota_api_requests_total{route=\"upgrade\",code=\"400\"} 1",
            "yurt_ota_upstream_calls_total{call=\"upgrade\",code=\"503\"} 1",
            "yurt_ota_pods_needing_upgrade 2",
            "yurt_ota_ready 1",
            "yurt_ota_gate_open{gate=\"vehicle-stopped\",safety=\"true\"} 0",
            "yurt_ota_gate_changes_total{gate=\"vehicle-stopped\"} 3",
            "yurt_ota_holds_active 1",
            "yurt_ota_breaker_tripped 1",
            "yurt_ota_upgrades_queued 2",
            "yurt_ota_state_writable 0",
            "yurt_ota_upgrades_total{result=\"started\"} 1",
            "yurt_ota_upgrades_total{result=\"failed\"} 0",
            "yurt_ota_revision_blocked{daemonset=\"edge-apps/gw\",revision=\"7f9c\\\"8d\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        let none = m.render(&Gauges {
            snapshot_age: None,
            pods: 0,
            pods_needing_upgrade: 0,
            ready: false,
            gates: Vec::new(),
            upgrade_gates_open: true,
            holds: 0,
            breaker_tripped: false,
            in_flight: 0,
            queued: 0,
            state_writable: true,
            blocked: Vec::new(),
        });
        assert!(!none
            .lines()
            .any(|l| l.starts_with("yurt_ota_snapshot_age_seconds ")));
    }
}
