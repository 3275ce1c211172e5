//! `kind = "window"` gates: open inside a maintenance window (`crate::schedule`), read at each
//! tick and woken by a timer at the window's next edge.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use jiff::Timestamp;

use super::{Bell, Notice, Reading, Signal};
use crate::schedule::{is_open, next_edge, next_open, zone, Window, DAYS};

/// A `window` gate.
pub struct WindowGate {
    windows: Vec<Window>,
    /// `None`: the system's local zone, looked up at each read so a changed zone is followed.
    zone_name: Option<String>,
}

impl WindowGate {
    pub fn new(windows: Vec<Window>, zone_name: Option<String>) -> WindowGate {
        WindowGate { windows, zone_name }
    }
}

impl Signal for WindowGate {
    fn read(&mut self, now: SystemTime, _fresh: bool) -> Result<Reading, String> {
        let tz = zone(self.zone_name.as_deref())?;
        let now = Timestamp::try_from(now).map_err(|e| format!("clock: {e}"))?;
        let local = now.to_zoned_datetime(tz.clone());
        let open = is_open(&self.windows, &tz, now);
        let zone = self.zone_name.as_deref().unwrap_or("local");
        Ok(Reading {
            open,
            detail: format!(
                "{} {zone} time {} {:02}:{:02}",
                if open { "inside" } else { "outside" },
                DAYS[local.weekday().to_monday_zero_offset() as usize],
                local.hour(),
                local.minute()
            ),
        })
    }

    fn notice(&mut self, _: &Arc<Bell>, _: Duration) -> Notice {
        Notice::Timed("a timer at its next edge".into())
    }

    fn next_change(&self, now: SystemTime) -> Option<Duration> {
        let tz = zone(self.zone_name.as_deref()).ok()?;
        let next = next_edge(&self.windows, &tz, Timestamp::try_from(now).ok()?)?;
        SystemTime::try_from(next).ok()?.duration_since(now).ok()
    }

    fn next_open(&self, now: SystemTime) -> Option<SystemTime> {
        let tz = zone(self.zone_name.as_deref()).ok()?;
        let next = next_open(&self.windows, &tz, Timestamp::try_from(now).ok()?)?;
        SystemTime::try_from(next).ok()
    }
}
