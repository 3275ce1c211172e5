use super::*;
use crate::http::Body;
use crate::upstream::{Relay, UpstreamError};
use std::time::Duration;

fn err(method: &str, path: &str) -> (Option<Endpoint>, u16, &'static str) {
    let (ep, e) = route(method, path).unwrap_err();
    (ep, e.status, e.error)
}

/// The paths and methods of docs/openapi.yaml, read as text: `  /path:` then
/// `    get:` lines below it.
fn documented_routes() -> Vec<(String, Vec<String>)> {
    let doc = include_str!("../../docs/openapi.yaml");
    let paths = doc.split("\npaths:\n").nth(1).expect("a paths: section");
    let mut routes: Vec<(String, Vec<String>)> = Vec::new();
    for line in paths.lines() {
        if let Some(p) = line.strip_prefix("  /").and_then(|l| l.strip_suffix(':')) {
            routes.push((format!("/{p}"), Vec::new()));
        } else if let Some(m) = line.strip_prefix("    ").and_then(|l| l.strip_suffix(':')) {
            if ["get", "put", "post", "delete", "patch", "head", "options"].contains(&m) {
                let last = routes.last_mut().expect("a method under a path");
                last.1.push(m.to_uppercase());
            }
        }
    }
    routes
}

#[test]
fn the_openapi_document_matches_the_routing_table() {
    // Valid YAML first: schemathesis and client generators refuse a document that is not.
    let doc = include_str!("../../docs/openapi.yaml");
    let parsed = yaml_rust2::YamlLoader::load_from_str(doc).expect("docs/openapi.yaml is YAML");
    assert_eq!(parsed[0]["openapi"].as_str(), Some("3.0.3"));
    let routes = documented_routes();
    assert!(routes.len() >= 12, "{routes:?}");
    let mut covered = Vec::new();
    for (template, methods) in &routes {
        let path = template
            .replace("{ns}", "kube-system")
            .replace("{pod}", "kube-proxy-x2x7z")
            .replace("{name}", "navigation")
            .replace("{daemonset}", "kube-proxy");
        let endpoint = route(&methods[0], &path)
            .unwrap_or_else(|e| panic!("{} {template}: {e:?}", methods[0]))
            .endpoint;
        let mut allowed: Vec<&str> = endpoint.allow().split(", ").collect();
        allowed.sort_unstable();
        let mut documented: Vec<&str> = methods.iter().map(String::as_str).collect();
        documented.sort_unstable();
        assert_eq!(
            allowed, documented,
            "{template}: the document and Allow differ"
        );
        covered.push(endpoint);
    }
    for e in Endpoint::ALL {
        assert!(covered.contains(&e), "{e:?} is not in docs/openapi.yaml");
    }
}

#[test]
fn routing_table() {
    assert_eq!(route("GET", "/pods").unwrap().endpoint, Endpoint::Pods);
    let r = route(
        "POST",
        "/openyurt.io/v1/namespaces/kube-system/pods/etcd-v1.36-control-plane/upgrade",
    )
    .unwrap();
    assert_eq!(
        (r.endpoint, r.pod),
        (
            Endpoint::Upgrade,
            Some(("kube-system", "etcd-v1.36-control-plane"))
        )
    );
    assert_eq!(
        route("POST", "/openyurt.io/v1/namespaces/a/pods/b/imagepull")
            .unwrap()
            .endpoint,
        Endpoint::Imagepull
    );
    for (path, ep) in [
        ("/v1/healthz", Endpoint::Healthz),
        ("/v1/readyz", Endpoint::Readyz),
        ("/v1/status", Endpoint::Status),
        ("/metrics", Endpoint::Metrics),
    ] {
        assert_eq!(route("GET", path).unwrap().endpoint, ep);
    }
    assert_eq!(err("GET", "/nope"), (None, 404, "not_found"));
    assert_eq!(err("GET", "/pods/"), (None, 404, "not_found"));
    assert_eq!(
        err("GET", "/openyurt.io/v1/namespaces/a/pods/b/delete"),
        (None, 404, "not_found")
    );
    assert_eq!(
        err("POST", "/pods"),
        (Some(Endpoint::Pods), 405, "method_not_allowed")
    );
    let (_, e) = route("GET", "/openyurt.io/v1/namespaces/a/pods/b/upgrade").unwrap_err();
    assert_eq!((e.status, e.allow), (405, Some("POST")));
    for bad in [
        "/openyurt.io/v1/namespaces/Kube/pods/b/upgrade",
        "/openyurt.io/v1/namespaces/a/pods/B_1/upgrade",
        "/openyurt.io/v1/namespaces/a.b/pods/b/upgrade",
        "/openyurt.io/v1/namespaces/a/pods/%2e%2e/upgrade",
        "/openyurt.io/v1/namespaces//pods/b/upgrade",
    ] {
        assert_eq!(
            err("POST", bad),
            (Some(Endpoint::Upgrade), 400, "invalid_name"),
            "{bad}"
        );
    }
}

#[test]
fn error_bodies_have_the_documented_shape() {
    let mut e = ApiError::new(409, "gate_closed", "closed");
    e.extra = Some(json!({"blocked_by": ["vehicle-stopped"]}));
    let r = e.reply();
    let Body::Bytes(b) = r.body else {
        panic!("an error body is bytes")
    };
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(
        v,
        json!({"error": "gate_closed", "message": "closed", "blocked_by": ["vehicle-stopped"]})
    );
    assert_eq!(r.content_type, JSON);
}

/// An upstream whose upgrade call panics, to prove one request cannot take the server down.
struct Panicking;

impl Upstream for Panicking {
    fn list_pods(&self) -> Result<Vec<u8>, UpstreamError> {
        Err(UpstreamError::Connect("test".into()))
    }
    fn upgrade(&self, _: &str, _: &str) -> Result<Relay, UpstreamError> {
        panic!("upgrade exploded")
    }
    fn imagepull(&self, _: &str, _: &str) -> Result<Relay, UpstreamError> {
        Ok(Relay {
            status: 200,
            content_type: None,
            body: b"pulled".to_vec(),
        })
    }
    fn kind(&self) -> &'static str {
        "test"
    }
    fn url(&self) -> &str {
        "test://"
    }
}

#[test]
fn a_panicking_request_is_answered_500_and_the_next_one_served() {
    use crate::http::Handler;
    let shared = Arc::new(NodeView::new(Duration::from_secs(5)));
    let control = Arc::new(Decider::new(
        crate::gate::Gates::new(Vec::new()),
        crate::state::Store::in_memory(),
        crate::config::Settings::default().policy,
    ));
    let api = Api::new(shared.clone(), Arc::new(Panicking), None, None, control);
    let req = |method: &str, target: &str| Request {
        method: method.into(),
        target: target.into(),
        headers: Vec::new(),
        body: Vec::new(),
    };
    let r = api.handle(req("POST", "/openyurt.io/v1/namespaces/a/pods/b/upgrade"));
    assert_eq!(r.status, 500);
    let r = api.handle(req("POST", "/openyurt.io/v1/namespaces/a/pods/b/imagepull"));
    assert_eq!(r.status, 200);
    let r = api.handle(req("GET", "/pods"));
    assert_eq!(r.status, 503);
    let m = shared.metrics.render(&api.gauges(Instant::now()));
    assert!(
        m.lines()
            .any(|l| l == "yurt_ota_api_requests_total{route=\"panic\",code=\"500\"} 1"),
        "{m}"
    );
}

#[test]
fn token_comparison() {
    assert!(constant_time_eq(b"secret", b"secret"));
    assert!(!constant_time_eq(b"secret", b"secreT"));
    assert!(!constant_time_eq(b"secret", b"secret2"));
}
