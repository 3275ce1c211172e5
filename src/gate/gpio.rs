//! GPIO lines: the Linux GPIO character device (uAPI v2, through `gpiocdev`), and the legacy
//! sysfs interface (`/sys/class/gpio/gpioN/value`) of older BSP kernels.
//!
//! Lines are only ever read: the character device requests the line as an input, and the sysfs
//! gate reads `value` and never writes `export`, `direction` or `value`.

use std::path::PathBuf;
use std::time::SystemTime;

use super::{Reading, Signal};
use crate::config::GpioLine;

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
    request: Option<(gpiocdev::Request, u32)>,
}

impl CdevGate {
    pub fn new(chip: PathBuf, line: GpioLine, open_high: bool) -> CdevGate {
        CdevGate {
            chip,
            line,
            open_high,
            request: None,
        }
    }

    fn request(&self) -> Result<(gpiocdev::Request, u32), String> {
        let chip = self.chip.display();
        let offset = match &self.line {
            GpioLine::Offset(n) => *n,
            GpioLine::Name(name) => gpiocdev::chip::Chip::from_path(&self.chip)
                .map_err(|e| format!("{chip}: {e}"))?
                .find_line_info(name)
                .map(|info| info.offset)
                .ok_or_else(|| format!("{chip} has no line named {name:?}"))?,
        };
        let req = gpiocdev::Request::builder()
            .on_chip(&self.chip)
            .with_consumer("yurt-ota")
            .with_line(offset)
            .as_input()
            .request()
            .map_err(|e| format!("{chip} line {offset}: {e}"))?;
        Ok((req, offset))
    }
}

impl Signal for CdevGate {
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
}

impl SysfsGate {
    pub fn new(root: PathBuf, line: u32, open_high: bool) -> SysfsGate {
        SysfsGate {
            value: root.join(format!("gpio{line}")).join("value"),
            open_high,
        }
    }
}

impl Signal for SysfsGate {
    fn read(&mut self, _now: SystemTime, _fresh: bool) -> Result<Reading, String> {
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
