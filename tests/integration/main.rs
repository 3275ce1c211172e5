//! Integration tests: the real `yurt-ota` binary against a scripted YurtHub on loopback (serving
//! the recorded fixture pod lists) and against the simulator.

mod api;
mod apiserver;
mod apisim;
mod cli;
mod defer;
mod events;
mod fleet;
mod fleet_agents;
mod gates;
mod hardening;
mod node;
mod safety;
mod sim;
mod snapshot;
mod systemd;
mod util;
