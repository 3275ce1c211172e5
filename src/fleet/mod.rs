//! The seed's two DaemonSet strategies carried out on the node (SPEC section 6b): which
//! strategy a DaemonSet asks for, how many nodes of the fleet may upgrade it at once, and the
//! slots (Kubernetes Leases) that hold that budget across the fleet with no controller.
//!
//! Everything here is pure or goes through the small `Leases` trait; the apiserver client
//! implements it, and the tests use an in-memory apiserver with real compare-and-swap.

pub mod cache;
pub mod kube;
pub mod lease;
pub mod run;
pub mod scale;
pub mod store;
pub mod strategy;
#[cfg(test)]
pub mod testing;
pub mod view;

pub use lease::{Lease, LeaseError, Leases, Observed, Slot, SlotOutcome, Slots, Takes};
pub use run::Fleet;
pub use strategy::{budget, Budget, Strategy};
pub use view::{DaemonSetInfo, DaemonSetView, FleetView, SlotView};
