//! The listening socket of a local HTTP server (the agent's API, `yurt-ota sim`): TCP or a Unix
//! socket, and the request size caps both use. Below `api` and `sim`, so neither imports the
//! other for it.

use crate::config::Listen;
use crate::http;

/// Request bodies above this are refused with 413.
pub const MAX_REQUEST_BODY: usize = 64 * 1024;
/// Request heads (request line and headers) above this are refused with 431.
pub const MAX_REQUEST_HEAD: usize = 16 * 1024;

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
