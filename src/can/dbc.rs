//! A signal by name from a DBC file, read with `can-dbc`: its message's id, its bits, scale,
//! unit and value table, for a CAN gate's layout.

use std::path::Path;

use can_dbc::{ByteOrder, Dbc, MessageId, ValueType};

use super::decode::{FrameId, Layout, ValueTable};

/// What a DBC says of one signal.
#[derive(Debug, Clone, PartialEq)]
pub struct DbcSignal {
    pub frame: FrameId,
    pub layout: Layout,
    pub unit: String,
    pub values: ValueTable,
}

/// Which key a DBC error belongs to.
#[derive(Debug, PartialEq, Eq)]
pub enum DbcKey {
    Dbc,
    Message,
    Signal,
}

/// Reads `path` and finds `message`'s `signal`; an error names the key it is about.
pub fn resolve(path: &Path, message: &str, signal: &str) -> Result<DbcSignal, (DbcKey, String)> {
    let p = path.display();
    let bytes = std::fs::read(path).map_err(|e| (DbcKey::Dbc, format!("{p}: {e}")))?;
    // DBC files from Vector's tools are often cp1252, not UTF-8: a unit or comment with "°"
    // must not make the file unreadable. Message and signal names are ASCII (C identifiers).
    let text = String::from_utf8_lossy(&bytes);
    let dbc = Dbc::try_from(text.as_ref())
        .map_err(|e| (DbcKey::Dbc, format!("{p} is not a DBC file: {e}")))?;
    find(&dbc, message, signal).map_err(|(k, m)| (k, format!("{p}: {m}")))
}

fn find(dbc: &Dbc, message: &str, signal: &str) -> Result<DbcSignal, (DbcKey, String)> {
    let Some(m) = dbc.messages.iter().find(|m| m.name == message) else {
        let names: Vec<&str> = dbc.messages.iter().map(|m| m.name.as_str()).collect();
        return Err((
            DbcKey::Message,
            format!("no message {message:?}; it has {}", names.join(", ")),
        ));
    };
    let Some(s) = m.signals.iter().find(|s| s.name == signal) else {
        let names: Vec<&str> = m.signals.iter().map(|s| s.name.as_str()).collect();
        return Err((
            DbcKey::Signal,
            format!(
                "message {message} has no signal {signal:?}; it has {}",
                names.join(", ")
            ),
        ));
    };
    let frame = match m.id {
        MessageId::Standard(id) => FrameId::Exact {
            id: u32::from(id),
            extended: false,
        },
        MessageId::Extended(id) => FrameId::Exact { id, extended: true },
    };
    let layout = Layout {
        start_bit: u16::try_from(s.start_bit).unwrap_or(u16::MAX),
        length: u16::try_from(s.size).unwrap_or(u16::MAX),
        big_endian: s.byte_order == ByteOrder::BigEndian,
        signed: s.value_type == ValueType::Signed,
        factor: s.factor,
        offset: s.offset,
    };
    layout
        .check()
        .map_err(|e| (DbcKey::Signal, format!("{message}.{signal}: {e}")))?;
    let values = dbc
        .value_descriptions_for_signal(m.id, signal)
        .unwrap_or_default()
        .iter()
        .map(|v| (v.id, v.description.clone()))
        .collect();
    Ok(DbcSignal {
        frame,
        layout,
        unit: s.unit.clone(),
        values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn fixture() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/can/vehicle.dbc")
    }

    #[test]
    fn signals_of_the_fixture_resolve() {
        let brake = resolve(&fixture(), "CCVS1", "ParkingBrakeSwitch").unwrap();
        assert_eq!(
            brake.frame,
            FrameId::Exact {
                id: 0x18FE_F100,
                extended: true
            }
        );
        assert_eq!((brake.layout.start_bit, brake.layout.length), (2, 2));
        assert!(!brake.layout.big_endian && !brake.layout.signed);
        assert_eq!(brake.values[1], (1, "Set".to_owned()));
        let speed = resolve(&fixture(), "BODY_SPEED", "VehicleSpeed").unwrap();
        assert_eq!(
            speed.frame,
            FrameId::Exact {
                id: 0x3A0,
                extended: false
            }
        );
        assert!(speed.layout.big_endian);
        assert_eq!((speed.layout.factor, speed.unit.as_str()), (0.01, "km/h"));
        let temp = resolve(&fixture(), "BODY_GEAR", "Temperature").unwrap();
        assert!(temp.layout.signed && temp.layout.big_endian);
        // The fixture's first BODY_GEAR frame: gear P, 20 degC.
        assert_eq!(
            temp.layout
                .physical(temp.layout.raw(&[0x00, 0x28]).unwrap()),
            20.0
        );
    }

    /// A file saved as cp1252 ("°C" as 0xB0): read, not refused.
    #[test]
    fn a_cp1252_file_is_read() {
        let mut bytes = std::fs::read(fixture()).unwrap();
        let at = bytes.windows(6).position(|w| w == b"\"degC\"").unwrap();
        bytes.splice(at + 1..at + 5, [0xB0, b'C']);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp1252.dbc");
        std::fs::write(&path, bytes).unwrap();
        let temp = resolve(&path, "BODY_GEAR", "Temperature").unwrap();
        assert_eq!(temp.unit, "\u{FFFD}C");
    }

    #[test]
    fn unknown_names_are_refused_by_name() {
        let (key, msg) = resolve(&fixture(), "CCVS1", "ParkBrake").unwrap_err();
        assert_eq!(key, DbcKey::Signal);
        assert!(
            msg.contains("no signal \"ParkBrake\"") && msg.contains("ParkingBrakeSwitch"),
            "{msg}"
        );
        let (key, msg) = resolve(&fixture(), "CCVS2", "X").unwrap_err();
        assert_eq!(key, DbcKey::Message);
        assert!(msg.contains("CCVS2"), "{msg}");
        let (key, _) = resolve(Path::new("/nonexistent.dbc"), "A", "B").unwrap_err();
        assert_eq!(key, DbcKey::Dbc);
    }
}
