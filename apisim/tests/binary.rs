//! The `yurt-ota-apisim` binary as the docs start it: it writes its files to `--dir`, names the
//! server by the first `--san`, serves pods over TLS with the written CA and token, and answers
//! on its control URL.

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};

fn agent(ca_pem: &str) -> ureq::Agent {
    let ca = Certificate::from_pem(ca_pem.as_bytes()).unwrap();
    let tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .root_certs(RootCerts::Specific(Arc::new(vec![ca])));
    ureq::Agent::config_builder()
        .tls_config(tls.build())
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

fn json(r: &mut ureq::http::Response<ureq::Body>) -> Value {
    serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap()
}

#[test]
fn the_binary_writes_its_files_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_yurt-ota-apisim"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--nodes",
            "2",
            "--san",
            "localhost",
            "--dir",
        ])
        .arg(dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dir.path().join("control").exists() {
        assert!(Instant::now() < deadline, "no control file");
        std::thread::sleep(Duration::from_millis(20));
    }
    let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();
    // The kubeconfigs name the server by the first --san, which the certificate carries.
    assert!(
        read("server").starts_with("https://localhost:"),
        "{}",
        read("server")
    );
    assert!(read("kubeconfig-cert").contains(&format!("server: {}\n", read("server"))));
    let mut r = agent(&read("ca.crt"))
        .get(format!(
            "{}/api/v1/pods?fieldSelector=spec.nodeName%3Dedge-node-2",
            read("server")
        ))
        .header("Authorization", format!("Bearer {}", read("token").trim()))
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(json(&mut r)["items"].as_array().unwrap().len(), 11);
    let state = json(
        &mut ureq::get(format!("{}/sim", read("control")))
            .call()
            .unwrap(),
    );
    assert_eq!(state["nodes"], json!(["edge-node-1", "edge-node-2"]));
    assert_eq!(state["requests"]["list pods"], 1);
    let history = json(
        &mut ureq::get(format!("{}/sim/history", read("control")))
            .call()
            .unwrap(),
    );
    assert_eq!(history, json!([]), "nothing deleted, no Lease written");
    child.kill().unwrap();
    let mut err = String::new();
    child.wait().unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        err.contains("kube-apiserver stand-in on https://localhost:"),
        "{err}"
    );
}
