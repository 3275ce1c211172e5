//! `cargo bench --bench status`: `GET /v1/status` against the real agent binary for node lists
//! of 1,250 to 20,000 pods (a quarter of them outdated DaemonSet pods, each listed with why it
//! waits). The time must grow in step with the pods: issue 9 found 5 s at 20,000 pods, from a
//! lookup per listed pod that scanned the whole list. The last column is the time per pod
//! relative to the smallest list; linear work keeps it near 1, quadratic work doubles it with
//! each doubling of the list.

use std::net::TcpListener;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;

const SIZES: [usize; 5] = [1_250, 2_500, 5_000, 10_000, 20_000];
const ROUNDS: usize = 5;

fn main() {
    println!("| pods | outdated | status bytes | median | per pod vs 1,250 |");
    println!("|---|---|---|---|---|");
    let mut base = None;
    for n in SIZES {
        let list = pod_list(n);
        let upstream = serve(list);
        let dir = tempfile::tempdir().unwrap();
        let (mut agent, port) = common::start_agent(
            dir.path(),
            &format!(
                "[upstream]\nurl = \"http://127.0.0.1:{upstream}\"\npoll_interval = \"1h\"\ntimeout = \"30s\"\n"
            ),
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        let outdated = loop {
            if let Ok(body) = common::fetch(port, "/v1/status") {
                let v: Value = serde_json::from_slice(&body).unwrap();
                if v["snapshot"]["pods"] == n {
                    break v["pods_needing_upgrade"].as_array().unwrap().len();
                }
            }
            assert!(Instant::now() < deadline, "the agent did not read {n} pods");
            thread::sleep(Duration::from_millis(100));
        };
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..ROUNDS {
            let t = Instant::now();
            bytes = common::fetch(port, "/v1/status").unwrap().len();
            times.push(t.elapsed());
        }
        let _ = agent.kill();
        let _ = agent.wait();
        times.sort();
        let median = times[ROUNDS / 2];
        let per_pod = median.as_secs_f64() / n as f64;
        let rel = per_pod / *base.get_or_insert(per_pod);
        println!("| {n} | {outdated} | {bytes} | {median:.1?} | {rel:.2} |");
    }
}

/// `n` fixture pods, without what the agent does not read (so 20,000 fit under the upstream
/// body cap); the DaemonSet ones outdated.
fn pod_list(n: usize) -> Vec<u8> {
    let mut items = common::fixture_pods(n);
    for p in &mut items {
        let m = &p["metadata"];
        let st = &p["status"];
        let slim = json!({
            "metadata": {"name": m["name"], "namespace": m["namespace"], "uid": m["uid"],
                         "ownerReferences": m["ownerReferences"]},
            "spec": {"nodeName": p["spec"]["nodeName"]},
            "status": {"phase": st["phase"], "conditions": st["conditions"]},
        });
        *p = slim;
        if p["metadata"]["ownerReferences"][0]["kind"] == "DaemonSet" {
            p["status"]["conditions"]
                .as_array_mut()
                .unwrap()
                .push(json!({
                    "type": "PodNeedUpgrade", "status": "True",
                    "message": "controllerrevision: 7f9c8d6b5"
                }));
        }
    }
    serde_json::to_vec(
        &json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}),
    )
    .unwrap()
}

/// A pod list server on a free port.
fn serve(body: Vec<u8>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = Arc::new(tiny_http::Server::from_listener(listener, None).unwrap());
    let port = server.server_addr().to_ip().unwrap().port();
    thread::spawn(move || {
        for req in server.incoming_requests() {
            let header = tiny_http::Header::from_bytes("Content-Type", "application/json").unwrap();
            let _ =
                req.respond(tiny_http::Response::from_data(body.as_slice()).with_header(header));
        }
    });
    port
}
