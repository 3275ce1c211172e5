//! `yurt-ota replay`: a gate configuration run over a recorded drive (a `candump -l` log), to
//! see before it goes on a vehicle when each CAN gate would have opened and closed and why, and
//! when an upgrade could have started (`policy.stable_for` applied). No CAN hardware needed.
//!
//! Each gate is judged as the live gate judges it (`super::judge`), at each of its frames and
//! at the moment its last frame turns older than `max_age`. Times are seconds from the log's
//! first frame.

use std::io::BufRead;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use socketcan::{EmbeddedFrame as _, Frame as _};

use super::decode::EFF_FLAG;
use super::{judge, Latest};
use crate::config::{CanGateSettings, GateKind, Settings};

/// One frame of the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Microseconds since the epoch, as candump writes it.
    pub t_us: u64,
    pub interface: String,
    /// With `EFF_FLAG` for 29-bit ids.
    pub id: u32,
    pub data: Vec<u8>,
}

/// Reads a `candump -l` log with socketcan's reader; a bad line is an error naming it.
pub fn read_log(name: &str, input: impl BufRead) -> Result<Vec<Record>, String> {
    let mut out = Vec::new();
    let mut reader = socketcan::dump::Reader::from_reader(input);
    let mut line = 0usize;
    loop {
        line += 1;
        let r = match reader.next_record() {
            Ok(None) => break,
            Ok(Some(r)) => r,
            Err(e) => return Err(format!("{name} line {line}: {e}; expected a `candump -l` line such as \"(1764950400.000000) can0 18FEF100#F70000CCFFFFFFFF\"")),
        };
        let f = &r.frame;
        // Remote and error frames carry no signal.
        if !matches!(
            f,
            socketcan::CanAnyFrame::Normal(_) | socketcan::CanAnyFrame::Fd(_)
        ) {
            continue;
        }
        let id = if f.is_extended() {
            f.raw_id() | EFF_FLAG
        } else {
            f.raw_id()
        };
        out.push(Record {
            t_us: r.t_us,
            interface: r.device,
            id,
            data: f.data().to_vec(),
        });
    }
    out.sort_by_key(|r| r.t_us);
    Ok(out)
}

/// A gate opening or closing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    /// Seconds from the log's first frame.
    pub at: f64,
    pub open: bool,
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GateTimeline {
    pub name: String,
    pub interface: String,
    pub signal: String,
    pub open_when: String,
    pub safety: bool,
    /// The first entry is the state at 0 s.
    pub changes: Vec<Change>,
}

/// A stretch with every CAN upgrade gate open, and when an upgrade could have started in it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Open {
    pub from: f64,
    /// `None`: still open at the end of the replay.
    pub to: Option<f64>,
    /// `from + stable_for`, when the stretch lasts that long.
    pub upgrade_at: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Replay {
    /// The first frame's time, seconds since the epoch.
    pub start: f64,
    /// The last frame, seconds from the start.
    pub log_end: f64,
    /// Where the replay stopped, seconds from the start.
    pub until: f64,
    pub frames: usize,
    pub stable_for: f64,
    pub gates: Vec<GateTimeline>,
    pub all_open: Vec<Open>,
    /// The configured gates that a CAN log cannot replay (file, window, value...): named so
    /// that nobody reads the result as the whole picture.
    pub not_replayed: Vec<String>,
    /// Interfaces the gates read that the log never saw.
    pub missing_interfaces: Vec<String>,
}

fn secs(us: u64) -> f64 {
    us as f64 / 1e6
}

/// One CAN gate as the replay runs it.
struct Run<'a> {
    s: &'a CanGateSettings,
    latest: Latest,
    open: Option<bool>,
    tl: GateTimeline,
}

impl Run<'_> {
    /// Judges the gate at `t_us` (from the start) and notes a change.
    fn judge(&mut self, t_us: u64, start_us: u64) {
        let now = SystemTime::UNIX_EPOCH + Duration::from_micros(start_us + t_us);
        let (open, why) = match judge(
            &self.s.signal,
            &self.s.interface,
            self.s.max_age,
            &self.latest,
            now,
        ) {
            Ok(r) => (r.open, r.detail),
            Err(e) => (false, e),
        };
        if self.open == Some(open) {
            return;
        }
        // Several frames at one moment (the first frames at 0 s): the last one counts.
        let at = secs(t_us);
        if self.tl.changes.last().is_some_and(|c| c.at == at) {
            self.tl.changes.pop();
            if self.tl.changes.last().map(|c| c.open) == Some(open) {
                self.open = Some(open);
                return;
            }
        }
        self.open = Some(open);
        self.tl.changes.push(Change { at, open, why });
    }

    /// When the last frame turns stale (strictly older than `max_age`), from the start.
    fn stale_at(&self, start_us: u64) -> Option<u64> {
        let at = self.latest.at?;
        let at_us = at.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_micros() as u64;
        (self.open == Some(true)).then(|| at_us - start_us + self.s.max_age.as_micros() as u64 + 1)
    }
}

/// Runs the configuration's CAN gates over `records` (sorted by time) until `until` seconds
/// from the first frame (default: the last frame).
pub fn replay(settings: &Settings, records: &[Record], until: Option<f64>) -> Replay {
    let start_us = records.first().map_or(0, |r| r.t_us);
    let log_end_us = records.last().map_or(0, |r| r.t_us - start_us);
    let until_us = until.map_or(log_end_us, |u| (u * 1e6).round().max(0.0) as u64);
    let mut runs: Vec<Run> = Vec::new();
    let mut not_replayed = Vec::new();
    for g in &settings.gates {
        match &g.kind {
            GateKind::Can(c) if g.upgrade => runs.push(Run {
                s: c,
                latest: Latest::default(),
                open: None,
                tl: GateTimeline {
                    name: g.name.clone(),
                    interface: c.interface.clone(),
                    signal: format!("{} ({})", c.signal.name, c.signal.frame),
                    open_when: c.signal.open_when.to_string(),
                    safety: g.safety,
                    changes: Vec::new(),
                },
            }),
            other => not_replayed.push(format!("{} ({})", g.name, other.word())),
        }
    }
    for r in runs.iter_mut() {
        r.judge(0, start_us);
    }
    // Each step: the next moment something can change, a frame or a gate turning stale.
    let mut frames = records
        .iter()
        .filter(|r| r.t_us - start_us <= until_us)
        .peekable();
    loop {
        let next_frame = frames.peek().map(|r| r.t_us - start_us);
        let next_stale = runs.iter().filter_map(|r| r.stale_at(start_us)).min();
        let t = match (next_frame, next_stale) {
            (Some(f), Some(s)) if s < f => s,
            (Some(f), _) => f,
            (None, Some(s)) if s <= until_us => s,
            _ => break,
        };
        if next_frame == Some(t) {
            let rec = frames.next().expect("peeked");
            let at = SystemTime::UNIX_EPOCH + Duration::from_micros(rec.t_us);
            for run in runs.iter_mut() {
                if run.s.interface == rec.interface && run.s.signal.frame.matches(rec.id) {
                    run.latest.data = Some(rec.data.clone());
                    run.latest.at = Some(at);
                }
            }
        }
        for run in runs.iter_mut() {
            run.judge(t, start_us);
        }
    }
    let stable_us = settings.policy.stable_for.as_micros() as u64;
    let all_open = stretches(&runs, until_us, stable_us);
    let mut missing_interfaces: Vec<String> = runs
        .iter()
        .map(|r| r.s.interface.clone())
        .filter(|i| !records.iter().any(|r| &r.interface == i))
        .collect();
    missing_interfaces.dedup();
    Replay {
        start: secs(start_us),
        log_end: secs(log_end_us),
        until: secs(until_us),
        frames: records.len(),
        stable_for: settings.policy.stable_for.as_secs_f64(),
        gates: runs.into_iter().map(|r| r.tl).collect(),
        all_open,
        not_replayed,
        missing_interfaces,
    }
}

/// The stretches where every gate was open, from their timelines.
fn stretches(runs: &[Run], until_us: u64, stable_us: u64) -> Vec<Open> {
    if runs.is_empty() {
        return Vec::new();
    }
    let mut moments: Vec<u64> = runs
        .iter()
        .flat_map(|r| r.tl.changes.iter().map(|c| (c.at * 1e6).round() as u64))
        .collect();
    moments.sort_unstable();
    moments.dedup();
    let open_at = |t: u64| {
        runs.iter().all(|r| {
            r.tl.changes
                .iter()
                .take_while(|c| (c.at * 1e6).round() as u64 <= t)
                .last()
                .is_some_and(|c| c.open)
        })
    };
    let mut out: Vec<Open> = Vec::new();
    let mut from: Option<u64> = None;
    for t in moments {
        match (open_at(t), from) {
            (true, None) => from = Some(t),
            (false, Some(f)) => {
                out.push(open(f, Some(t), stable_us));
                from = None;
            }
            _ => {}
        }
    }
    if let Some(f) = from {
        out.push(open(f, None, stable_us).until(until_us, stable_us));
    }
    out
}

fn open(from: u64, to: Option<u64>, stable_us: u64) -> Open {
    let start = from + stable_us;
    Open {
        from: secs(from),
        to: to.map(secs),
        upgrade_at: to.is_none_or(|t| t >= start).then(|| secs(start)),
    }
}

impl Open {
    /// A stretch still open at the end: an upgrade only if `stable_for` passed before it.
    fn until(mut self, until_us: u64, stable_us: u64) -> Open {
        let start = (self.from * 1e6).round() as u64 + stable_us;
        if start > until_us {
            self.upgrade_at = None;
        }
        self
    }
}

impl Replay {
    /// For people: each gate's changes, then the stretches with every gate open.
    pub fn render(&self, log: &str) -> String {
        let mut out = format!(
            "{log}: {} frames over {:.3} s; replayed until {:.3} s (times from the first frame, {:.6})\n",
            self.frames, self.log_end, self.until, self.start
        );
        for g in &self.gates {
            out += &format!(
                "\ngate {}{} on {}: {}, open when {}\n",
                g.name,
                if g.safety { " (safety)" } else { "" },
                g.interface,
                g.signal,
                g.open_when
            );
            for c in &g.changes {
                out += &format!(
                    "  {:>9.3} s  {:<6}  {}\n",
                    c.at,
                    if c.open { "open" } else { "closed" },
                    c.why
                );
            }
        }
        out += &format!(
            "\nevery CAN gate open (stable_for {}):\n",
            crate::config::HumanDuration(Duration::from_secs_f64(self.stable_for))
        );
        if self.all_open.is_empty() {
            out += "  never: no upgrade could have started\n";
        }
        for o in &self.all_open {
            let to = o.to.map_or("the end".to_owned(), |t| format!("{t:.3} s"));
            let up = match o.upgrade_at {
                Some(t) => format!("an upgrade could have started at {t:.3} s"),
                None => "too short for stable_for: no upgrade".to_owned(),
            };
            out += &format!("  {:>9.3} s to {to}: {up}\n", o.from);
        }
        for i in &self.missing_interfaces {
            out += &format!("\nwarning: the log has no frame on {i}, which the gates read\n");
        }
        if !self.not_replayed.is_empty() {
            out += &format!(
                "\nnot replayed (not CAN, or not an upgrade gate): {}\n",
                self.not_replayed.join(", ")
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/fixtures/can")
            .join(name)
    }

    fn parked(stable_for: &str) -> Settings {
        let dbc = fixture("vehicle.dbc").display().to_string();
        let text = format!(
            "[policy]\nstable_for = {stable_for:?}\n\n\
             [[gate]]\nname = \"stopped\"\nkind = \"can\"\ninterface = \"can0\"\ndbc = {dbc:?}\n\
             message = \"CCVS1\"\nsignal = \"WheelBasedVehicleSpeed\"\nopen_when = \"< 0.5\"\nmax_age = \"1s\"\n\n\
             [[gate]]\nname = \"parking-brake\"\nkind = \"can\"\ninterface = \"can0\"\ndbc = {dbc:?}\n\
             message = \"CCVS1\"\nsignal = \"ParkingBrakeSwitch\"\nopen_when = \"== Set\"\nmax_age = \"1s\"\n\n\
             [[gate]]\nname = \"night\"\nkind = \"window\"\nwindows = [\"Mon-Sun 00:00-24:00\"]\n"
        );
        Settings::parse(&text, Path::new("t.toml")).unwrap()
    }

    fn drive() -> Vec<Record> {
        let f = std::fs::File::open(fixture("drive.candump.log")).unwrap();
        read_log("drive.candump.log", std::io::BufReader::new(f)).unwrap()
    }

    /// The fixture's README: "parked" (speed < 0.5 km/h and parking brake Set) is open in
    /// 0–10 s and 40–50 s only, and closed from about 51 s with max_age = "1s".
    #[test]
    fn the_recorded_drive_opens_parked_exactly_when_parked() {
        let records = drive();
        assert_eq!(records.len(), 3750);
        let r = replay(&parked("5s"), &records, Some(60.0));
        let at = |g: usize| -> Vec<(f64, bool)> {
            r.gates[g].changes.iter().map(|c| (c.at, c.open)).collect()
        };
        assert_eq!(
            at(0),
            [(0.0, true), (10.1, false), (30.0, true), (50.900001, false)],
            "speed"
        );
        assert_eq!(
            at(1),
            [(0.0, true), (10.0, false), (40.0, true), (50.900001, false)],
            "brake"
        );
        let stale = &r.gates[1].changes[3].why;
        assert!(
            stale.contains("no frame of CCVS1.ParkingBrakeSwitch") && stale.contains("max_age 1s"),
            "{stale}"
        );
        assert_eq!(
            r.all_open,
            [
                Open {
                    from: 0.0,
                    to: Some(10.0),
                    upgrade_at: Some(5.0)
                },
                Open {
                    from: 40.0,
                    to: Some(50.900001),
                    upgrade_at: Some(45.0)
                },
            ]
        );
        assert_eq!(r.not_replayed, ["night (window)"]);
        assert!((r.log_end - 49.981).abs() < 1e-9 && r.until == 60.0);
        // Without --until, the replay ends with the log: still open at the end.
        let r = replay(&parked("30s"), &records, None);
        assert_eq!(
            r.all_open,
            [
                Open {
                    from: 0.0,
                    to: Some(10.0),
                    upgrade_at: None
                },
                Open {
                    from: 40.0,
                    to: None,
                    upgrade_at: None
                },
            ],
            "stable_for 30s is longer than either stretch"
        );
        let text = r.render("drive.candump.log");
        assert!(text.contains("too short for stable_for"), "{text}");
    }

    #[test]
    fn a_bad_line_is_named() {
        let log = "(1764950400.000000) can0 3A0#00\nthis is not candump\n";
        let e = read_log("x.log", log.as_bytes()).unwrap_err();
        assert!(e.starts_with("x.log line 2:"), "{e}");
    }

    /// Frames on another interface do not count, and the replay says so.
    #[test]
    fn another_interface_is_reported() {
        let log = "(1764950400.000000) can1 18FEF100#F70000CCFFFFFFFF\n";
        let r = replay(
            &parked("5s"),
            &read_log("x", log.as_bytes()).unwrap(),
            Some(2.0),
        );
        assert_eq!(r.missing_interfaces, ["can0"]);
        assert!(r.all_open.is_empty());
        assert!(!r.gates[0].changes[0].open);
    }
}
