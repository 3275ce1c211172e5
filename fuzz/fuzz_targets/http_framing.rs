//! What a client sends on one connection, framed into requests as the API server does.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| yurt_ota::http::fuzz_framing(data));
