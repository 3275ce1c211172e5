//! systemd integration (`Type=notify`): `READY=1` once the API is bound and the first poll has
//! been tried, a `STATUS=` line a person understands, and `WATCHDOG=1` from the decision loop
//! while the agent makes progress. Without `$NOTIFY_SOCKET` (not under systemd) it does nothing.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

pub struct Notifier {
    /// `WatchdogSec=` from `$WATCHDOG_USEC`, when systemd set it for this process.
    watchdog: Option<Duration>,
    last_ping: Mutex<Option<Instant>>,
    last_status: Mutex<String>,
}

impl Notifier {
    pub fn from_env() -> Notifier {
        Notifier {
            watchdog: sd_notify::watchdog_enabled(),
            last_ping: Mutex::new(None),
            last_status: Mutex::new(String::new()),
        }
    }

    fn send(&self, state: &[NotifyState]) {
        if let Err(e) = sd_notify::notify(state) {
            log::debug!("sd_notify: {e}");
        }
    }

    pub fn ready(&self, status: &str) {
        *self.last_status.lock().unwrap_or_else(|e| e.into_inner()) = status.to_owned();
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// Sends `STATUS=` when it changed.
    pub fn status(&self, status: &str) {
        let mut last = self.last_status.lock().unwrap_or_else(|e| e.into_inner());
        if *last != status {
            *last = status.to_owned();
            self.send(&[NotifyState::Status(status)]);
        }
    }

    /// Pings the watchdog, at most twice per `WatchdogSec=`. The caller pings only while the
    /// agent makes progress, so a hung loop is restarted by systemd.
    pub fn watchdog(&self) {
        let Some(period) = self.watchdog else {
            return;
        };
        let now = Instant::now();
        let mut last = self.last_ping.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|at| now.duration_since(at) >= period / 2) {
            *last = Some(now);
            self.send(&[NotifyState::Watchdog]);
        }
    }

    /// How often the watchdog wants a ping, if enabled.
    pub fn watchdog_period(&self) -> Option<Duration> {
        self.watchdog
    }

    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }
}
