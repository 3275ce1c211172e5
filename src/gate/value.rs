//! `kind = "value"` gates: a number read from a file, such as a battery's capacity
//! (`/sys/class/power_supply/BAT0/capacity`), an IIO ADC's raw reading times its
//! `in_voltage_scale`, or a thermal zone's temperature in millidegrees. Open when `open_when`
//! holds; with `close_when`, an open gate stays open until that holds (hysteresis), so a value
//! hovering at the threshold does not flap. A missing or unparsable file reads closed.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{Bell, Notice, Reading, Signal};
use crate::config::{HumanDuration, ValueGateSettings};

/// A sysfs attribute holds a number; more than this is not one.
const MAX_CONTENT: u64 = 256;

pub struct ValueGate {
    s: ValueGateSettings,
    /// Open at the last read (hysteresis starts from here).
    open: bool,
    /// When it was last read, for the periodic read.
    last: Option<SystemTime>,
}

fn number(path: &Path) -> Result<f64, String> {
    let p = path.display();
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_CONTENT).read_to_string(&mut text))
        .map_err(|e| format!("{p}: {e}"))?;
    let t = text.trim();
    t.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| {
            format!(
                "{p} holds {:?}, not a number",
                crate::excerpt::excerpt(t.as_bytes())
            )
        })
}

impl ValueGate {
    pub fn new(s: ValueGateSettings) -> ValueGate {
        ValueGate {
            s,
            open: false,
            last: None,
        }
    }

    fn value(&self) -> Result<f64, String> {
        let mut v = number(&self.s.path)? * self.s.scale;
        if let Some(f) = &self.s.scale_file {
            v *= number(f)?;
        }
        Ok(v)
    }
}

impl Signal for ValueGate {
    fn read(&mut self, now: SystemTime, _fresh: bool) -> Result<Reading, String> {
        self.last = Some(now);
        let v = match self.value() {
            Ok(v) => v,
            Err(e) => {
                // Unreadable: closed, and it opens again only when `open_when` holds.
                self.open = false;
                return Err(e);
            }
        };
        let open = match (&self.s.close_when, self.open) {
            (Some(close), true) => !close.holds(v),
            _ => self.s.open_when.holds(v),
        };
        let rule = match (&self.s.close_when, self.open, open) {
            (Some(c), true, true) => format!("stays open until {c}"),
            (Some(c), true, false) => format!("closes at {c}"),
            _ => format!("opens at {}", self.s.open_when),
        };
        self.open = open;
        Ok(Reading {
            open,
            detail: format!("{} = {v} ({rule})", self.s.path.display()),
        })
    }

    /// sysfs attributes tell inotify nothing when their value changes: read every `interval`.
    fn notice(&mut self, _: &Arc<Bell>, _: Duration) -> Notice {
        Notice::Periodic(format!(
            "read every {} (sysfs values send no events)",
            HumanDuration(self.s.interval)
        ))
    }

    fn next_change(&self, now: SystemTime) -> Option<Duration> {
        let due = self.last? + self.s.interval;
        Some(due.duration_since(now).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{GateKind, Settings};

    fn gate(extra: &str) -> ValueGate {
        let s = Settings::parse(
            &format!("[[gate]]\nname = \"v\"\nkind = \"value\"\n{extra}"),
            Path::new("t.toml"),
        )
        .unwrap();
        match &s.gates[0].kind {
            GateKind::Value(v) => ValueGate::new(v.clone()),
            other => panic!("{other:?}"),
        }
    }

    /// A fake sysfs tree: a thermal zone in millidegrees, with hysteresis: open below 70 °C,
    /// and once open, closed only above 80 °C.
    #[test]
    fn temperature_with_hysteresis() {
        let dir = tempfile::tempdir().unwrap();
        let temp = dir.path().join("thermal_zone0/temp");
        std::fs::create_dir_all(temp.parent().unwrap()).unwrap();
        let mut g = gate(&format!(
            "path = {:?}\nscale = 0.001\nopen_when = \"< 70\"\nclose_when = \"> 80\"\n",
            temp.display().to_string()
        ));
        let now = SystemTime::now();
        let mut at = |milli: &str| {
            std::fs::write(&temp, format!("{milli}\n")).unwrap();
            g.read(now, false).map(|r| r.open)
        };
        assert_eq!(
            at("75000"),
            Ok(false),
            "between: closed until it falls below 70"
        );
        assert_eq!(at("69000"), Ok(true));
        assert_eq!(at("75000"), Ok(true), "between: stays open");
        assert_eq!(at("80000"), Ok(true), "not above 80 yet");
        assert_eq!(at("80500"), Ok(false));
        assert_eq!(at("75000"), Ok(false), "between: stays closed");
        assert_eq!(at("69999"), Ok(true));
        // Garbage, then a missing file: closed, and the hysteresis starts over.
        assert!(at("hot").unwrap_err().contains("not a number"));
        assert_eq!(at("75000"), Ok(false));
        std::fs::remove_file(&temp).unwrap();
        assert!(g.read(now, false).is_err());
    }

    /// An IIO ADC: `in_voltage0_raw` x `in_voltage_scale` (mV) x 0.001 = volts.
    #[test]
    fn supply_voltage_from_an_iio_adc_and_the_periodic_read() {
        let dir = tempfile::tempdir().unwrap();
        let (raw, scale) = (
            dir.path().join("in_voltage0_raw"),
            dir.path().join("in_voltage_scale"),
        );
        std::fs::write(&raw, "2048\n").unwrap();
        std::fs::write(&scale, "6.25\n").unwrap();
        let mut g = gate(&format!(
            "path = {:?}\nscale_file = {:?}\nscale = 0.001\nopen_when = \">= 12\"\ninterval = \"10s\"\n",
            raw.display().to_string(),
            scale.display().to_string()
        ));
        let now = SystemTime::now();
        let r = g.read(now, false).unwrap();
        assert!(r.open, "12.8 V: {}", r.detail);
        std::fs::write(&raw, "1900").unwrap();
        assert!(!g.read(now, false).unwrap().open, "11.875 V");
        std::fs::remove_file(&scale).unwrap();
        assert!(g.read(now, false).unwrap_err().contains("in_voltage_scale"));
        assert_eq!(
            g.next_change(now + Duration::from_secs(4)),
            Some(Duration::from_secs(6))
        );
    }

    #[test]
    fn bad_settings_are_refused_with_their_key() {
        let bad = |extra: &str| {
            Settings::parse(
                &format!("[[gate]]\nname = \"v\"\nkind = \"value\"\n{extra}"),
                Path::new("t.toml"),
            )
            .unwrap_err()
            .to_string()
        };
        assert!(bad("path = \"/x\"\nopen_when = \"big\"\n").contains("`gate[0].open_when`"));
        assert!(bad("path = \"/x\"\nopen_when = \"> 1\"\nscale = 0\n").contains("`gate[0].scale`"));
        assert!(bad("open_when = \"> 1\"\n").contains("`gate[0].path`"));
        assert!(
            bad("path = \"/x\"\nopen_when = \"> 1\"\nclose_when = \"soon\"\n")
                .contains("`gate[0].close_when`")
        );
    }
}
