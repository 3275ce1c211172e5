//! GPIO lines: the Linux GPIO character device (uAPI v2, through `gpiocdev`), and the legacy
//! sysfs interface (`/sys/class/gpio/gpioN/value`) of older BSP kernels.
//!
//! Lines are only ever read: the character device requests the line as an input, and the sysfs
//! gate reads `value` and never writes `export`, `direction` or `value`.
//!
//! The character device is `gpiocdev`'s. The sysfs side (a read of `value`, `poll(2)` on it
//! through rustix) is ours for a need `sysfs_gpio` (0.6) does not meet: the gate's tree is
//! `sysfs_root` (a BSP's other path, the tests' plain files), and `sysfs_gpio` addresses a line
//! by number under `/sys/class/gpio` or by a path that must resolve there.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::{Bell, Notice, Reading, Signal};
use crate::config::GpioLine;

/// Kernel debounce asked for on a character-device line, where the kernel offers it (v5.10+;
/// refused otherwise, and then the line is requested without). `stable_for` does the real
/// settling; this only spares wake-ups on a bouncing contact.
const DEBOUNCE: Duration = Duration::from_millis(10);

/// `statfs` magic of sysfs: only there does `value` signal edges to `poll(2)`.
const SYSFS_MAGIC: u64 = 0x6265_6572;

fn level(high: bool) -> &'static str {
    if high {
        "high"
    } else {
        "low"
    }
}

/// A line on `/dev/gpiochipN`, held as an input request between reads.
pub struct CdevGate {
    chip: PathBuf,
    line: GpioLine,
    open_high: bool,
    request: Option<(Arc<gpiocdev::Request>, u32)>,
    /// Set by `notice`: then each request asks for edge events, and a thread waits on them.
    bell: Option<Arc<Bell>>,
    /// How the current request hears of changes, for status.
    how: String,
    fallback: Duration,
}

impl CdevGate {
    pub fn new(chip: PathBuf, line: GpioLine, open_high: bool) -> CdevGate {
        CdevGate {
            chip,
            line,
            open_high,
            request: None,
            bell: None,
            how: String::new(),
            fallback: Duration::from_millis(250),
        }
    }

    fn request(&mut self) -> Result<(Arc<gpiocdev::Request>, u32), String> {
        let chip = self.chip.display();
        let offset = match &self.line {
            GpioLine::Offset(n) => *n,
            GpioLine::Name(name) => gpiocdev::chip::Chip::from_path(&self.chip)
                .map_err(|e| format!("{chip}: {e}"))?
                .find_line_info(name)
                .map(|info| info.offset)
                .ok_or_else(|| format!("{chip} has no line named {name:?}"))?,
        };
        let plain = || {
            gpiocdev::Request::builder()
                .on_chip(&self.chip)
                .with_consumer("yurt-ota")
                .with_line(offset)
                .as_input()
                .request()
                .map_err(|e| format!("{chip} line {offset}: {e}"))
        };
        let Some(bell) = self.bell.clone() else {
            return Ok((Arc::new(plain()?), offset));
        };
        // Both edges, with kernel debounce; without debounce where the kernel refuses it; read
        // periodically where the chip has no edge detection at all.
        let edges = |debounce: Option<Duration>| {
            let mut b = gpiocdev::Request::builder();
            b.on_chip(&self.chip)
                .with_consumer("yurt-ota")
                .with_line(offset)
                .as_input()
                .with_edge_detection(gpiocdev::line::EdgeDetection::BothEdges);
            if let Some(d) = debounce {
                b.with_debounce_period(d);
            }
            b.request()
        };
        let (req, how) = match edges(Some(DEBOUNCE)) {
            Ok(r) => (
                r,
                format!(
                    "edge events, both edges, kernel debounce {}ms",
                    DEBOUNCE.as_millis()
                ),
            ),
            Err(e1) => match edges(None) {
                Ok(r) => (
                    r,
                    format!("edge events, both edges, no kernel debounce ({e1})"),
                ),
                Err(e2) => {
                    self.how = format!("periodic read: no edge events on this line ({e2})");
                    return Ok((Arc::new(plain()?), offset));
                }
            },
        };
        let req = Arc::new(req);
        self.how = how;
        let (events, name) = (req.clone(), format!("{chip} line {offset}"));
        std::thread::Builder::new()
            .name("gpio-edges".into())
            .spawn(move || loop {
                // Only "look again": the level is read by the gate. An overrun drops old events,
                // never the last one, so a ring always follows the last change.
                match events.read_edge_event() {
                    Ok(_) => bell.ring(),
                    Err(e) => {
                        log::warn!("{name}: edge events stopped: {e}");
                        bell.ring();
                        return;
                    }
                }
            })
            .map_err(|e| format!("cannot start a GPIO edge thread: {e}"))?;
        Ok((req, offset))
    }
}

impl Signal for CdevGate {
    fn notice(&mut self, bell: &Arc<Bell>, fallback: Duration) -> Notice {
        self.bell = Some(bell.clone());
        self.fallback = fallback;
        // Asked again with edge detection at the next read.
        self.request = None;
        self.how = format!(
            "edge events (until the line is requested: read every {})",
            crate::config::HumanDuration(fallback)
        );
        Notice::Events(self.how.clone())
    }

    fn next_change(&self, _now: SystemTime) -> Option<Duration> {
        // Without a request (an error) or without edge events, read again at the fallback.
        let periodic = self.request.is_none() || self.how.starts_with("periodic");
        periodic.then_some(self.fallback)
    }

    fn how(&self) -> Option<String> {
        Some(self.how.clone())
    }

    fn read(&mut self, _now: SystemTime, _fresh: bool) -> Result<Reading, String> {
        if self.request.is_none() {
            self.request = Some(self.request()?);
        }
        let (req, offset) = self.request.as_ref().expect("requested above");
        match req.value(*offset) {
            Ok(v) => {
                let high = v == gpiocdev::line::Value::Active;
                Ok(Reading {
                    open: high == self.open_high,
                    detail: format!("{} line {offset} {}", self.chip.display(), level(high)),
                })
            }
            Err(e) => {
                // Drop the request: the chip may have gone away; the next read asks again.
                let msg = format!("{} line {offset}: {e}", self.chip.display());
                self.request = None;
                Err(msg)
            }
        }
    }
}

/// `/sys/class/gpio/gpioN/value`, exported by the board's boot scripts.
pub struct SysfsGate {
    value: PathBuf,
    open_high: bool,
    /// With `poll(2)` on `value`: false once that thread ended (the line went away).
    polling: Option<Arc<AtomicBool>>,
    /// Without: read again this long after the last read.
    periodic: Option<(Duration, Instant)>,
    how: String,
    fallback: Duration,
}

impl SysfsGate {
    pub fn new(root: PathBuf, line: u32, open_high: bool) -> SysfsGate {
        SysfsGate {
            value: root.join(format!("gpio{line}")).join("value"),
            open_high,
            polling: None,
            periodic: None,
            how: String::new(),
            fallback: Duration::from_millis(250),
        }
    }
}

/// Sets `edge` to `both` beside a sysfs `value` (the one write this gate makes: it asks the
/// kernel to signal changes and leaves direction and value alone). Reads back what the kernel
/// kept.
fn set_edge(value: &Path) -> Result<(), String> {
    let edge = value.with_file_name("edge");
    let p = edge.display();
    let now = std::fs::read_to_string(&edge).map_err(|e| format!("{p}: {e}"))?;
    if now.trim() != "both" {
        std::fs::write(&edge, "both").map_err(|e| format!("{p}: cannot set to both: {e}"))?;
    }
    match std::fs::read_to_string(&edge) {
        Ok(t) if t.trim() == "both" => Ok(()),
        Ok(t) => Err(format!("{p} reads {:?} after setting both", t.trim())),
        Err(e) => Err(format!("{p}: {e}")),
    }
}

/// Waits for `POLLPRI` on a sysfs `value` (an edge) and rings; ends when the line goes away.
fn poll_edges(value: PathBuf, bell: Arc<Bell>, alive: Arc<AtomicBool>) {
    use rustix::event::{poll, PollFd, PollFlags};
    let end = |why: String| {
        log::warn!(
            "{}: edge polling stopped: {why}; read periodically",
            value.display()
        );
        alive.store(false, Ordering::Relaxed);
        bell.ring();
    };
    let mut f = match std::fs::File::open(&value) {
        Ok(f) => f,
        Err(e) => return end(e.to_string()),
    };
    let mut buf = [0u8; 8];
    loop {
        // Reading from the start consumes the pending edge; poll then waits for the next.
        if let Err(e) = f.seek(SeekFrom::Start(0)).and_then(|_| f.read(&mut buf)) {
            return end(e.to_string());
        }
        let mut fds = [PollFd::new(&f, PollFlags::PRI | PollFlags::ERR)];
        match poll(&mut fds, None) {
            Ok(_) if fds[0].revents().contains(PollFlags::NVAL) => {
                return end("poll: invalid".into())
            }
            Ok(_) => bell.ring(),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return end(format!("poll: {e}")),
        }
    }
}

impl Signal for SysfsGate {
    /// On sysfs with `edge` settable: `poll(2)` on `value`. On another file system (a test
    /// tree): inotify on the file, which is how such a tree changes. Else a periodic read.
    fn notice(&mut self, bell: &Arc<Bell>, fallback: Duration) -> Notice {
        let on_sysfs = self
            .value
            .parent()
            .and_then(|d| rustix::fs::statfs(d).ok())
            .map(|s| s.f_type as u64 == SYSFS_MAGIC);
        if on_sysfs == Some(false) {
            self.how = "inotify: not on sysfs (a test tree)".into();
            return Notice::File(self.value.clone());
        }
        self.fallback = fallback;
        let every = crate::config::HumanDuration(fallback).to_string();
        match set_edge(&self.value) {
            Ok(()) => {
                let alive = Arc::new(AtomicBool::new(true));
                let (value, bell, flag) = (self.value.clone(), bell.clone(), alive.clone());
                let started = std::thread::Builder::new()
                    .name("gpio-sysfs".into())
                    .spawn(move || poll_edges(value, bell, flag));
                match started {
                    Ok(_) => {
                        self.polling = Some(alive);
                        self.how = format!("poll(2) on {} with edge both", self.value.display());
                        return Notice::Events(self.how.clone());
                    }
                    Err(e) => self.how = format!("periodic read every {every}: no thread: {e}"),
                }
            }
            Err(e) => {
                self.how = format!("periodic read every {every}: the line has no edge events: {e}")
            }
        }
        self.periodic = Some((fallback, Instant::now()));
        Notice::Periodic(self.how.clone())
    }

    fn next_change(&self, _now: SystemTime) -> Option<Duration> {
        if let Some(alive) = &self.polling {
            if alive.load(Ordering::Relaxed) {
                return None;
            }
            return Some(self.fallback);
        }
        let (every, last) = self.periodic?;
        Some((last + every).saturating_duration_since(Instant::now()))
    }

    fn how(&self) -> Option<String> {
        match &self.polling {
            Some(alive) if !alive.load(Ordering::Relaxed) => Some(format!(
                "periodic read every {}: edge polling stopped",
                crate::config::HumanDuration(self.fallback)
            )),
            _ => Some(self.how.clone()),
        }
    }

    fn read(&mut self, _now: SystemTime, _fresh: bool) -> Result<Reading, String> {
        if let Some((_, last)) = &mut self.periodic {
            *last = Instant::now();
        }
        let p = self.value.display();
        let text = std::fs::read_to_string(&self.value).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                format!(
                    "{p} does not exist: is the line exported (echo N > /sys/class/gpio/export)?"
                )
            } else {
                format!("{p}: {e}")
            }
        })?;
        let high = match text.trim() {
            "1" => true,
            "0" => false,
            other => return Err(format!("{p} reads {other:?}, not 0 or 1")),
        };
        Ok(Reading {
            open: high == self.open_high,
            detail: format!("{p} {}", level(high)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sysfs-like tree: `<root>/gpio17/value`, as the kernel lays it out.
    #[test]
    fn sysfs_values_levels_and_errors() {
        let root = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let mut high = SysfsGate::new(root.path().to_owned(), 17, true);
        let mut low = SysfsGate::new(root.path().to_owned(), 17, false);
        assert!(high
            .read(now, false)
            .unwrap_err()
            .contains("is the line exported"));
        let dir = root.path().join("gpio17");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("direction"), "in\n").unwrap();
        std::fs::write(dir.join("value"), "1\n").unwrap();
        assert!(high.read(now, false).unwrap().open);
        assert!(!low.read(now, false).unwrap().open);
        std::fs::write(dir.join("value"), "0\n").unwrap();
        assert!(!high.read(now, false).unwrap().open);
        assert!(low.read(now, false).unwrap().open);
        std::fs::write(dir.join("value"), "x").unwrap();
        assert!(high.read(now, false).unwrap_err().contains("not 0 or 1"));
        // Never written: the tree is as the test left it.
        assert_eq!(
            std::fs::read_to_string(dir.join("direction")).unwrap(),
            "in\n"
        );
    }

    /// A tree that is not sysfs changes by plain writes: watched by inotify, never polled for
    /// edges, and its `edge` file is not written.
    #[test]
    fn a_test_tree_is_watched_as_a_file() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("gpio17");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("value"), "1\n").unwrap();
        std::fs::write(dir.join("edge"), "none\n").unwrap();
        let mut g = SysfsGate::new(root.path().to_owned(), 17, true);
        let n = g.notice(&Bell::new(), Duration::from_millis(250));
        assert_eq!(n, Notice::File(dir.join("value")));
        assert_eq!(g.next_change(SystemTime::now()), None);
        assert_eq!(std::fs::read_to_string(dir.join("edge")).unwrap(), "none\n");
    }

    #[test]
    fn a_missing_chip_is_an_error_not_a_panic() {
        let mut g = CdevGate::new("/dev/gpiochip-none".into(), GpioLine::Offset(3), true);
        let e = g.read(SystemTime::now(), false).unwrap_err();
        assert!(e.contains("/dev/gpiochip-none"), "{e}");
        let mut g = CdevGate::new(
            "/dev/gpiochip-none".into(),
            GpioLine::Name("PARK".into()),
            true,
        );
        assert!(g.read(SystemTime::now(), false).is_err());
    }
}
