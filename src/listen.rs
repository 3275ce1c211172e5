//! The listening socket of a local HTTP server (the agent's API, `yurt-ota sim`): TCP or a Unix
//! socket. Below `api` and `sim`, so neither imports the other for it; above `http`.

use crate::config::Listen;
use crate::http;

/// Binds the API socket. A stale Unix socket from an earlier run is replaced, a live one refused.
pub fn bind(listen: &Listen) -> Result<http::Listener, String> {
    let fail = |e: std::io::Error| {
        format!("cannot listen on {listen} (api.listen): {e}; is another yurt-ota running?")
    };
    match listen {
        Listen::Tcp(addr) => std::net::TcpListener::bind(addr)
            .map(http::Listener::Tcp)
            .map_err(fail),
        Listen::Unix(path) => http::Listener::unix(path),
    }
}
