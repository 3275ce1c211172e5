//! `yurt-ota sim`: the simulated node served over HTTP, as YurtHub serves its OTA API.

use std::time::Instant;

use tiny_http::{Header, Request, Response, StatusCode};

use super::Node;
use crate::config::Listen;
use crate::shutdown::Shutdown;

pub fn run(node: Node, listen: &Listen, stop: &Shutdown) -> Result<(), String> {
    let server = crate::api::bind(listen, std::time::Duration::from_secs(30))?;
    log::info!(
        "simulated YurtHub for node {} on {listen}; try GET /pods, POST /sim/rollout/NS/DS",
        node.node_name()
    );
    crate::api::serve(server, 2, stop, move |req: Request| {
        let a = node.handle(Instant::now(), req.method().as_str(), req.url());
        log::debug!("{} {} -> {}", req.method(), req.url(), a.status);
        let headers: Vec<Header> = Header::from_bytes("Content-Type", a.content_type)
            .into_iter()
            .collect();
        let len = a.body.len();
        let resp = Response::new(
            StatusCode(a.status),
            headers,
            std::io::Cursor::new(a.body),
            Some(len),
            None,
        );
        let _ = req.respond(resp);
    });
    Ok(())
}
