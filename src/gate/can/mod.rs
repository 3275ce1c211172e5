//! `kind = "can"` gates (SPEC section 5): one signal on a SocketCAN interface, decoded as its
//! DBC file (or the inline layout) says, open when `open_when` holds, closed when the frame
//! stops coming (`max_age`), is too short, or carries a value the table calls an error.
//!
//! The signal's layout, decoding and DBC look-up are `crate::can`; `bus` holds the sockets (the seam: it
//! fills a `Latest` per gate), `replay` runs gates over a `candump -l` log.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{Bell, Notice, Reading, Signal};
use crate::config::{CanGateSettings, HumanDuration};

pub mod bus;
pub mod replay;

pub use crate::can::{check_pgn, dbc, decode};
pub use crate::can::{CanSignal, Compare, FrameId, Layout, Op, OpenWhen, ValueTable};

/// What the bus last told of one gate's frames.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Latest {
    /// The last frame's data (for the broadcast manager: the last one that changed the bits).
    pub data: Option<Vec<u8>>,
    /// When that frame came.
    pub at: Option<SystemTime>,
    /// The kernel watches the timeout (BCM): `at` is the last change, not the last frame, and
    /// `timed_out` says when frames stopped. Otherwise the age of `at` is judged here.
    pub watched: bool,
    pub timed_out: bool,
    /// The interface failed (missing, down, bus-off): closed, with this reason.
    pub error: Option<String>,
}

/// What a gate reads from what the bus said, at `now`.
pub fn judge(
    signal: &CanSignal,
    interface: &str,
    max_age: Duration,
    latest: &Latest,
    now: SystemTime,
) -> Result<Reading, String> {
    if let Some(e) = &latest.error {
        return Err(e.clone());
    }
    let stale = || {
        format!(
            "{interface}: no frame of {} ({}) for more than max_age {}",
            signal.name,
            signal.frame,
            HumanDuration(max_age)
        )
    };
    let (Some(data), Some(at)) = (&latest.data, latest.at) else {
        return Err(format!(
            "{interface}: no frame of {} ({}) yet",
            signal.name, signal.frame
        ));
    };
    if latest.timed_out || (!latest.watched && now.duration_since(at).unwrap_or_default() > max_age)
    {
        return Err(stale());
    }
    let (open, detail) = signal.evaluate(data)?;
    Ok(Reading { open, detail })
}

/// A live CAN gate: its slot on the interface's bus.
pub struct CanGate {
    settings: CanGateSettings,
    slot: bus::Slot,
    started: bool,
}

impl CanGate {
    /// Registers the signal on its interface (no socket yet: `notice` or the first read opens
    /// the interface, with every CAN gate of the configuration registered).
    pub fn new(settings: CanGateSettings) -> CanGate {
        let slot = bus::subscribe(
            &settings.interface,
            settings.signal.frame.clone(),
            settings.signal.layout.mask(),
            settings.max_age,
        );
        CanGate {
            settings,
            slot,
            started: false,
        }
    }

    /// A gate over a slot that a test fills: the seam, without sockets.
    pub fn with_slot(settings: CanGateSettings, slot: bus::Slot) -> CanGate {
        CanGate {
            settings,
            slot,
            started: true,
        }
    }

    fn latest(&self) -> Latest {
        self.slot.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Signal for CanGate {
    fn read(&mut self, now: SystemTime, _fresh: bool) -> Result<Reading, String> {
        if !std::mem::replace(&mut self.started, true) {
            bus::start(&self.settings.interface, None);
        }
        // Fresh or not, the slot is what the kernel last said: with the broadcast manager a
        // change or a silence reaches it at once, so it is never older than the bus.
        let s = &self.settings;
        judge(&s.signal, &s.interface, s.max_age, &self.latest(), now)
    }

    fn notice(&mut self, bell: &Arc<Bell>, _fallback: Duration) -> Notice {
        self.started = true;
        bus::start(&self.settings.interface, Some(bell.clone()));
        let s = &self.settings;
        Notice::Events(match s.signal.frame.kernel_id() {
            Some(_) => format!(
                "{}: CAN broadcast manager, told when the signal's bits change or no frame \
                 comes for {}",
                s.interface,
                HumanDuration(s.max_age)
            ),
            None => format!(
                "{}: raw socket with a kernel filter on the PGN (each frame read), rung on change",
                s.interface
            ),
        })
    }

    /// Without the kernel's timeout (PGN gates), the moment the last frame turns stale.
    fn next_change(&self, now: SystemTime) -> Option<Duration> {
        let l = self.latest();
        if l.watched || l.timed_out || l.error.is_some() {
            return None;
        }
        let stale_at = l.at? + self.settings.max_age + Duration::from_millis(1);
        Some(stale_at.duration_since(now).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{GateKind, Settings};
    use std::path::Path;

    fn settings(text: &str) -> CanGateSettings {
        let s = Settings::parse(text, Path::new("t.toml")).unwrap();
        match &s.gates[0].kind {
            GateKind::Can(c) => (**c).clone(),
            other => panic!("{other:?}"),
        }
    }

    fn dbc_gate(signal: &str, open_when: &str) -> CanGateSettings {
        let dbc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/can/vehicle.dbc");
        settings(&format!(
            "[[gate]]\nname = \"g\"\nkind = \"can\"\ninterface = \"can0\"\ndbc = {:?}\n\
             message = \"CCVS1\"\nsignal = {signal:?}\nopen_when = {open_when:?}\nmax_age = \"1s\"\n",
            dbc.display().to_string()
        ))
    }

    /// The gate through its trait, over a slot filled as the bus thread fills it.
    #[test]
    fn the_gate_reads_what_the_bus_said_and_fails_closed() {
        let slot = bus::Slot::default();
        let mut gate = CanGate::with_slot(dbc_gate("ParkingBrakeSwitch", "== Set"), slot.clone());
        let t0 = SystemTime::now();
        let set = |f: &dyn Fn(&mut Latest)| f(&mut slot.lock().unwrap());
        let e = gate.read(t0, true).unwrap_err();
        assert!(e.contains("no frame of CCVS1.ParkingBrakeSwitch"), "{e}");
        // The broadcast manager says the bits changed: brake set.
        set(&|l| {
            l.data = Some(vec![0xF7, 0, 0, 0xCC, 0xFF, 0xFF, 0xFF, 0xFF]);
            l.at = Some(t0);
            l.watched = true;
        });
        let r = gate.read(t0 + Duration::from_secs(30), true).unwrap();
        assert!(
            r.open,
            "watched by the kernel: a steady frame is not stale: {}",
            r.detail
        );
        assert_eq!(gate.next_change(t0), None, "the kernel tells");
        // Not set.
        set(&|l| l.data = Some(vec![0xF3, 0, 0, 0, 0, 0, 0, 0]));
        assert!(!gate.read(t0, true).unwrap().open);
        // Error, not available: closed with the reason.
        set(&|l| l.data = Some(vec![0xFB, 0, 0, 0, 0, 0, 0, 0]));
        assert!(gate.read(t0, true).unwrap_err().contains("Error"));
        set(&|l| l.data = Some(vec![0xFF]));
        assert!(gate.read(t0, true).unwrap_err().contains("NotAvailable"));
        // A zero-length frame.
        set(&|l| l.data = Some(vec![]));
        assert!(gate.read(t0, true).unwrap_err().contains("too short"));
        // The frame stopped coming: RX_TIMEOUT.
        set(&|l| {
            l.data = Some(vec![0xF7]);
            l.timed_out = true;
        });
        assert!(gate.read(t0, true).unwrap_err().contains("max_age 1s"));
        // The interface went down.
        set(&|l| {
            l.timed_out = false;
            l.error = Some("can0: Network is down".into());
        });
        assert_eq!(gate.read(t0, true).unwrap_err(), "can0: Network is down");
    }

    /// A raw socket's slot (PGN gates) is judged by its age here.
    #[test]
    fn unwatched_frames_turn_stale_by_age() {
        let slot = bus::Slot::default();
        let s = settings(
            "[[gate]]\nname = \"g\"\nkind = \"can\"\ninterface = \"can0\"\npgn = 65265\n\
             start_bit = 8\nlength = 16\nfactor = 0.00390625\nunit = \"km/h\"\nopen_when = \"< 0.5\"\nmax_age = \"500ms\"\n",
        );
        assert!(s.signal.j1939);
        let mut gate = CanGate::with_slot(s, slot.clone());
        let t0 = SystemTime::now();
        *slot.lock().unwrap() = Latest {
            data: Some(vec![0xF7, 0x00, 0x00]),
            at: Some(t0),
            ..Latest::default()
        };
        let r = gate.read(t0 + Duration::from_millis(400), true).unwrap();
        assert!(r.open);
        assert_eq!(r.detail, "PGN 65265 bits 8..23 = 0 km/h");
        assert_eq!(
            gate.next_change(t0 + Duration::from_millis(400)),
            Some(Duration::from_millis(101))
        );
        assert!(gate.read(t0 + Duration::from_millis(600), true).is_err());
        // 0xFFFF: J1939 "not available".
        slot.lock().unwrap().data = Some(vec![0, 0xFF, 0xFF]);
        assert!(gate.read(t0, true).unwrap_err().contains("not available"));
    }
}
