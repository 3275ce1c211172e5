//! `yurt-ota sim`: the simulated node served over HTTP, as YurtHub serves its OTA API.

use std::time::{Duration, Instant};

use super::Node;
use crate::config::Listen;
use crate::http::{self, Request, Response};
use crate::shutdown::Shutdown;

impl http::Handler for Node {
    fn handle(&self, req: Request) -> Response {
        let a = self.handle(Instant::now(), &req.method, &req.target);
        log::debug!("{} {} -> {}", req.method, req.target, a.status);
        Response::new(a.status, a.content_type, a.body)
    }

    /// Go's net/http answers malformed requests with a bare status line and text.
    fn reject(&self, status: u16, _: &'static str, message: String) -> Response {
        Response::new(status, "text/plain; charset=utf-8", message.into_bytes())
    }
}

pub fn run(node: Node, listen: &Listen, stop: &Shutdown) -> Result<(), String> {
    let listener = crate::listen::bind(listen)?;
    log::info!(
        "simulated YurtHub for node {} on {listen}; try GET /pods, POST /sim/rollout/NS/DS",
        node.node_name()
    );
    let limits = http::Limits {
        max_connections: 64,
        max_head: crate::http::MAX_REQUEST_HEAD,
        max_body: crate::http::MAX_REQUEST_BODY,
        timeout: Duration::from_secs(30),
    };
    http::serve(listener, limits, stop, &node);
    Ok(())
}
