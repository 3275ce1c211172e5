//! Integration tests: the real `yurt-ota` binary against a scripted YurtHub on loopback (serving
//! the recorded fixture pod lists) and against the simulator.

mod api;
mod apiserver;
mod apiserver_leases;
mod apisim;
mod apisim_writes;
mod can;
mod cli;
mod defer;
mod events;
mod fleet;
// Five agents with TLS at once, timed against lease expiry: native only. Under qemu-user on two
// cores the emulation, not the agents, would set the pace; the single-agent apiserver and fleet
// tests run there too.
#[cfg(target_arch = "x86_64")]
mod fleet_agents;
#[cfg(target_arch = "x86_64")]
mod fleet_broken;
#[cfg(target_arch = "x86_64")]
mod fleet_gates;
// Twenty agents at once: under qemu-user the emulation would set the pace (and the request
// rates it measures); native only, as the other multi-agent tests.
#[cfg(target_arch = "x86_64")]
mod fleet_watch;
mod gates;
mod hardening;
mod kubectl;
mod memory;
mod node;
mod rbac;
mod safety;
mod sim;
mod snapshot;
mod systemd;
mod util;
