//! A `PUT /v1/holds/{name}` body, through the API's handler as a client's request reaches it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use yurt_ota::api::Api;
use yurt_ota::config::Settings;
use yurt_ota::http::{Handler, Request};
use yurt_ota::decider::Decider;
use yurt_ota::node_view::NodeView;

fn api() -> &'static Api {
    static API: OnceLock<Api> = OnceLock::new();
    API.get_or_init(|| {
        let settings = Settings::default();
        let node = Arc::new(yurt_ota::sim::Node::new(settings.sim.clone()));
        let control = Decider::new(
            yurt_ota::gate::Gates::new(Vec::new()),
            yurt_ota::state::Store::in_memory(),
            settings.policy,
        );
        Api::new(
            Arc::new(NodeView::new(Duration::from_secs(5))),
            Arc::new(yurt_ota::upstream::sim::Sim::new(node)),
            None,
            None,
            Arc::new(control),
        )
    })
}

fn request(method: &str, body: &[u8]) -> Request {
    Request {
        method: method.into(),
        target: "/v1/holds/fuzz".into(),
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: body.to_vec(),
    }
}

fuzz_target!(|data: &[u8]| {
    let api = api();
    let put = api.handle(request("PUT", data));
    assert!(
        matches!(put.status, 200 | 201 | 400 | 409 | 413 | 503),
        "{}",
        put.status
    );
    let delete = api.handle(request("DELETE", b""));
    assert!(
        matches!(delete.status, 200 | 204 | 404 | 503),
        "{}",
        delete.status
    );
});
