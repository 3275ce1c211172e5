//! yurt-ota: decides when OpenYurt OTA upgrades happen on an edge node.
#![forbid(unsafe_code)]

pub mod agent; // the loops: poller and autopilot (decide, act)
pub mod api; // the local HTTP API: routing, relays, status, worker pool
pub mod bell; // what wakes the decision loop: a ring or a stop
pub mod can; // a CAN signal's layout, decoding and DBC look-up (config and gate::can)
pub mod cli; // operator subcommands, as clients of the local API
pub mod config; // TOML file -> validated Settings
pub mod daemon; // the wiring on top: bind, spawn the loops, serve, stop
pub mod decider; // the decision's local inputs (gates, state, policy, fleet) and `decide`
pub mod excerpt; // the first part of a body or value, for a log line or status field
pub mod fleet; // the seed's strategies: strategy annotation, fleet budget, Lease slots
pub mod gate; // local signals (file, GPIO, command, window) and their stability
pub mod http; // the small blocking HTTP/1.1 server (bounded connections, request caps) and client
pub mod listen; // the socket a local HTTP server listens on (TCP or Unix)
pub mod metrics; // Prometheus counters and gauges
pub mod names; // DNS-1123 name rules for names in URLs
pub mod node_view; // what the poller learns and the API serves: snapshot, health, outcomes
pub mod pod; // the pod fields we read and the OpenYurt upgrade rules
pub mod policy; // pure: (pods, gates, state, now, settings) -> actions and "why not yet"
pub mod schedule; // maintenance windows: parsing and calendar math (config and gate::window)
pub mod shutdown; // the stop request: signals in, condition variable out
pub mod sim; // the YurtHub simulator (in-process node + `yurt-ota sim`)
pub mod snapshot; // the validated, pre-rendered pod list
pub mod state; // persisted in-flight upgrades, queue, holds, breaker, events; atomic writes
pub mod systemd; // Type=notify: READY, STATUS, WATCHDOG over $NOTIFY_SOCKET
pub mod upstream; // trait Upstream: YurtHub over HTTP, or the simulator
pub mod yaml; // YAML into serde_json::Value (yaml-rust2's parser), nesting and aliases bounded

/// Helpers shared by the unit tests.
#[cfg(test)]
mod testing {
    /// The recorded kube-system pod list of a kind cluster of Kubernetes `v1.<minor>`.
    pub fn fixture(version: &str) -> Vec<u8> {
        let path = format!(
            "{}/tests/fixtures/kind-v{version}-kube-system-podlist.json",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    pub const VERSIONS: [&str; 4] = ["1.32", "1.33", "1.35", "1.36"];
}
