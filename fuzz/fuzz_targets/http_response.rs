//! What a server answers, read by the CLI's client (src/http/client/): head, then the body by
//! Content-Length, chunks (with extensions and trailers) or to the close, whole and split into
//! small reads.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| yurt_ota::http::client::fuzz_response(data));
