//! A window gate spec ("Mon-Fri 02:00-04:00"), parsed and evaluated around the parse time.
#![no_main]
use libfuzzer_sys::fuzz_target;
use yurt_ota::schedule::{is_open, next_open, Window};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(w) = Window::parse(text) {
        let tz = jiff::tz::TimeZone::UTC;
        let now = jiff::Timestamp::from_second(1_780_000_000).unwrap();
        let windows = [w];
        // Evaluated across a week, a minute apart around midnight and midday: never a panic.
        for hours in (0..7 * 24).step_by(12) {
            let _ = is_open(&windows, &tz, now + jiff::SignedDuration::from_hours(hours));
        }
        // The next start is after now, and within the eight days it looks at.
        if let Some(next) = next_open(&windows, &tz, now) {
            assert!(next > now);
            assert!(next <= now + jiff::SignedDuration::from_hours(9 * 24));
        }
    }
});
