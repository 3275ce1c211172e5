//! A window gate spec ("Mon-Fri 02:00-04:00"), parsed and evaluated around the parse time.
#![no_main]
use libfuzzer_sys::fuzz_target;
use yurt_ota::gate::window::{is_open, next_open, Window};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(w) = Window::parse(text) {
        let tz = jiff::tz::TimeZone::UTC;
        let now = jiff::Timestamp::from_second(1_780_000_000).unwrap();
        let windows = [w];
        let open = is_open(&windows, &tz, now);
        if let Some(next) = next_open(&windows, &tz, now) {
            assert!(next >= now);
            assert!(!open || next == now);
        }
    }
});
