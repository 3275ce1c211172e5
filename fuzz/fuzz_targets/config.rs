//! A config file's text, through the same loader as `run` and `check-config`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use yurt_ota::config::Settings;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(e) = Settings::parse(text, Path::new("fuzz.toml")) {
            let _ = e.to_string();
        }
    }
});
