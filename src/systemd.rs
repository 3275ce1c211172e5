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
    /// `WATCHDOG=trigger` was sent: once is enough.
    triggered: std::sync::atomic::AtomicBool,
}

impl Notifier {
    pub fn from_env() -> Notifier {
        Notifier {
            watchdog: sd_notify::watchdog_enabled(),
            last_ping: Mutex::new(None),
            last_status: Mutex::new(String::new()),
            triggered: std::sync::atomic::AtomicBool::new(false),
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

    /// The agent knows it is stuck: `WATCHDOG=trigger` has systemd act now as on a missed
    /// ping (kill, then `Restart=`), instead of up to `WatchdogSec=` later.
    pub fn watchdog_trigger(&self, why: &str) {
        if self.watchdog.is_none()
            || self
                .triggered
                .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        log::error!("{why}: asking systemd's watchdog to restart the agent");
        self.send(&[NotifyState::WatchdogTrigger, NotifyState::Status(why)]);
    }

    /// How often the watchdog wants a ping, if enabled.
    pub fn watchdog_period(&self) -> Option<Duration> {
        self.watchdog
    }

    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }
}

/// Slack over the poll's own bounds (the upstream timeout, the poll interval) before the poller
/// counts as stuck: parsing a large pod list, scheduling on a loaded device.
pub const POLL_SLACK: Duration = Duration::from_secs(5);

/// How long the poller has been stuck, for the watchdog, from when its last poll `started` and
/// `ended`: a poll running longer than `timeout` (every upstream call is bounded by it), or no
/// poll started `interval` after the last one ended, each plus [`POLL_SLACK`]. `None` while it
/// makes progress, or before its first poll. A hung poller is so caught `timeout` + slack after
/// its poll started, whatever `WatchdogSec=` and the poll interval are.
pub fn poller_stuck(
    started: Option<Instant>,
    ended: Option<Instant>,
    now: Instant,
    interval: Duration,
    timeout: Duration,
) -> Option<Duration> {
    let started = started?;
    let (since, allowed) = match ended {
        Some(ended) if ended >= started => (ended, interval + POLL_SLACK),
        _ => (started, timeout + POLL_SLACK),
    };
    let for_ = now.saturating_duration_since(since);
    (for_ > allowed).then_some(for_)
}

/// What a `gpio` gate needs from the system, for `check-config`: its chip as a character device
/// (`CONFIG_GPIO_CDEV`) that the service user `user` can open for reading and writing (the
/// package's udev rule gives `gpiochip*` to the group `gpio`, mode 0660). `None` when it can;
/// else why not, and what to do. The user and groups come from `/etc/passwd` and `/etc/group`.
pub fn gpio_chip_problem(chip: &std::path::Path, user: &str) -> Option<String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let shown = chip.display();
    let m = match std::fs::metadata(chip) {
        Err(e) => {
            return Some(format!(
                "{shown}: {e} (a GPIO gate needs the chip's character device: a kernel with \
                 CONFIG_GPIO_CDEV and the board's GPIO driver loaded)"
            ))
        }
        Ok(m) => m,
    };
    if !m.file_type().is_char_device() {
        return Some(format!("{shown} is not a character device"));
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let groups = std::fs::read_to_string("/etc/group").unwrap_or_default();
    let Some((uid, gid)) = passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 3 && f[0] == user).then(|| (f[2].parse::<u32>().ok(), f[3].parse::<u32>().ok()))
    }) else {
        return None; // no service user here (a development machine): nothing to judge
    };
    let in_group = gid == Some(m.gid())
        || groups.lines().any(|l| {
            let f: Vec<&str> = l.split(':').collect();
            f.len() > 3
                && f[2].parse::<u32>().ok() == Some(m.gid())
                && f[3].split(',').any(|u| u == user)
        });
    let mode = m.mode();
    let ok = if uid == Some(m.uid()) {
        mode & 0o600 == 0o600
    } else if in_group {
        mode & 0o060 == 0o060
    } else {
        mode & 0o006 == 0o006
    };
    let group = groups
        .lines()
        .find(|l| l.split(':').nth(2).and_then(|g| g.parse::<u32>().ok()) == Some(m.gid()))
        .and_then(|l| l.split(':').next())
        .map_or_else(|| m.gid().to_string(), str::to_owned);
    (!ok).then(|| {
        format!(
            "{shown} is mode {:o}, group {group}: the user {user} cannot open it, so the gate \
             reads closed. The package's udev rule gives gpiochip* to the group gpio, mode 0660 \
             (apply it: udevadm trigger --subsystem-match=gpio), and `dpkg-reconfigure yurt-ota` \
             adds {user} to the group that owns the chips",
            mode & 0o7777
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poll_past_its_timeout_is_stuck_and_a_due_poll_not_started_too() {
        let (i, t) = (Duration::from_secs(60), Duration::from_secs(5));
        let s = Instant::now();
        let at = |secs: u64| s + Duration::from_secs(secs);
        // Before the first poll: nothing to judge.
        assert_eq!(poller_stuck(None, None, at(100), i, t), None);
        // The first poll runs: fine until timeout + slack, stuck after.
        assert_eq!(poller_stuck(Some(s), None, at(10), i, t), None);
        assert_eq!(
            poller_stuck(Some(s), None, at(11), i, t),
            Some(Duration::from_secs(11))
        );
        // A later poll hangs: caught 10 s after it started, not a poll interval later.
        assert_eq!(poller_stuck(Some(at(62)), Some(at(2)), at(72), i, t), None);
        assert_eq!(
            poller_stuck(Some(at(62)), Some(at(2)), at(73), i, t),
            Some(Duration::from_secs(11))
        );
        // Between polls: idle up to the interval (+ slack), then stuck (the thread is gone).
        assert_eq!(poller_stuck(Some(s), Some(at(2)), at(67), i, t), None);
        assert_eq!(
            poller_stuck(Some(s), Some(at(2)), at(68), i, t),
            Some(Duration::from_secs(66))
        );
    }

    #[test]
    fn a_missing_chip_says_what_the_gate_needs() {
        let p = gpio_chip_problem(std::path::Path::new("/nonexistent/gpiochip9"), "root");
        assert!(p.is_some_and(|p| p.contains("CONFIG_GPIO_CDEV")));
    }

    #[test]
    fn a_regular_file_is_not_a_chip() {
        let p = gpio_chip_problem(std::path::Path::new("/etc/passwd"), "root");
        assert!(p.is_some_and(|p| p.contains("not a character device")));
    }

    #[test]
    fn a_device_open_to_all_is_fine_and_one_for_root_only_is_not() {
        // /dev/null is crw-rw-rw-; a user that exists everywhere: root owns it, so take the
        // permission bits of another user through "nobody".
        assert_eq!(
            gpio_chip_problem(std::path::Path::new("/dev/null"), "nobody"),
            None
        );
        if let Ok(m) = std::fs::metadata("/dev/mem") {
            use std::os::unix::fs::MetadataExt;
            if m.mode() & 0o066 == 0 {
                let p = gpio_chip_problem(std::path::Path::new("/dev/mem"), "nobody");
                assert!(p.is_some_and(|p| p.contains("cannot open it")));
            }
        }
    }
}
