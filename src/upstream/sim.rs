//! The simulator as an in-process upstream (`upstream.kind = "sim"`): the same answers as
//! `yurt-ota sim` gives over HTTP, without a socket in between.

use std::sync::Arc;
use std::time::Instant;

use super::{excerpt, Relay, Upstream, UpstreamError};
use crate::sim::Node;

pub struct Sim {
    node: Arc<Node>,
    url: String,
}

impl Sim {
    pub fn new(node: Arc<Node>) -> Sim {
        let url = format!("sim://{}", node.node_name());
        Sim { node, url }
    }

    fn call(&self, method: &str, path: &str) -> Relay {
        let a = self.node.handle(Instant::now(), method, path);
        Relay {
            status: a.status,
            content_type: Some(a.content_type.to_owned()),
            body: a.body,
        }
    }
}

impl Upstream for Sim {
    fn list_pods(&self) -> Result<Vec<u8>, UpstreamError> {
        let r = self.call("GET", "/pods");
        if r.status != 200 {
            return Err(UpstreamError::Status {
                code: r.status,
                body: excerpt(&r.body),
            });
        }
        Ok(r.body)
    }

    fn upgrade(&self, namespace: &str, pod: &str) -> Result<Relay, UpstreamError> {
        Ok(self.call(
            "POST",
            &format!("/openyurt.io/v1/namespaces/{namespace}/pods/{pod}/upgrade"),
        ))
    }

    fn imagepull(&self, namespace: &str, pod: &str) -> Result<Relay, UpstreamError> {
        Ok(self.call(
            "POST",
            &format!("/openyurt.io/v1/namespaces/{namespace}/pods/{pod}/imagepull"),
        ))
    }

    fn kind(&self) -> &'static str {
        "sim"
    }

    fn url(&self) -> &str {
        &self.url
    }
}
