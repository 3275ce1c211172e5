//! yurt-ota-apisim: the kube-apiserver stand-in (SPEC 2b) for yurt-ota's apiserver mode, its
//! integration tests and benchmarks. Its own crate, so that the agent's (`yurt-ota`) dependency
//! tree has no certificate generator and no TLS server.
#![forbid(unsafe_code)]

pub mod apiserver;
