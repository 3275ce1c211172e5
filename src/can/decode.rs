//! The pure part of a CAN gate: where a signal sits in a frame (DBC bit numbering), which frames
//! carry it (an exact id, or a J1939 PGN), its physical value, and whether that value opens the
//! gate. No sockets here: the live gate, `yurt-ota replay` and the tests all decode through it.
//!
//! Ours for needs no library meets: `can-dbc` parses DBC files only, and `can_decode` (0.7, the
//! crate that decodes frames by a DBC) decodes whole messages of a parsed DBC by exact id. A
//! gate also takes its layout inline (`start_bit`, `length`, ..., no DBC file), matches J1939
//! frames by PGN whatever their priority and source, and needs the mask of its signal's bits for
//! the broadcast manager's content filter (`gate::can::bus`): none of these is offered.

use std::fmt;

/// `CAN_EFF_FLAG`: set in an id (as the kernel and `candump` give it) for a 29-bit frame.
pub const EFF_FLAG: u32 = 0x8000_0000;
/// `CAN_RTR_FLAG`: a remote request, which carries no data.
pub const RTR_FLAG: u32 = 0x4000_0000;

/// Where a signal's bits are, in DBC's numbering: `start_bit` is the least significant bit for
/// little-endian (Intel, `@1`) signals and the most significant one for big-endian (Motorola,
/// `@0`) signals, counted as bit `n % 8` of byte `n / 8`.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub start_bit: u16,
    pub length: u16,
    pub big_endian: bool,
    pub signed: bool,
    pub factor: f64,
    pub offset: f64,
}

impl Layout {
    /// The signal's bit positions, most significant first.
    fn positions(&self) -> Vec<u16> {
        let n = self.length;
        if self.big_endian {
            let mut out = Vec::with_capacity(n as usize);
            let mut pos = self.start_bit;
            for i in 0..n {
                out.push(pos);
                if i + 1 < n {
                    // Motorola's sawtooth: down within a byte, then to the top of the next byte.
                    pos = if pos % 8 == 0 { pos + 15 } else { pos - 1 };
                }
            }
            out
        } else {
            (0..n).rev().map(|i| self.start_bit + i).collect()
        }
    }

    /// Checks that the signal fits in a classic CAN frame (8 bytes) and is at most 64 bits.
    pub fn check(&self) -> Result<(), String> {
        if self.length == 0 || self.length > 64 {
            return Err(format!("length {} must be 1..=64 bits", self.length));
        }
        let last = self.bytes_needed();
        if last > 8 {
            return Err(format!(
                "bits {} do not fit in an 8-byte frame",
                self.describe_bits()
            ));
        }
        if self.factor == 0.0 || !self.factor.is_finite() || !self.offset.is_finite() {
            return Err("factor must be a non-zero number and offset a number".into());
        }
        Ok(())
    }

    /// The frame length the signal needs: one past its highest byte.
    pub fn bytes_needed(&self) -> usize {
        self.positions()
            .iter()
            .map(|p| *p as usize / 8 + 1)
            .max()
            .unwrap_or(0)
    }

    /// The raw value, or `None` when the frame is too short for it.
    pub fn raw(&self, data: &[u8]) -> Option<i64> {
        if data.len() < self.bytes_needed() {
            return None;
        }
        let mut v: u64 = 0;
        for p in self.positions() {
            let bit = (data[p as usize / 8] >> (p % 8)) & 1;
            v = (v << 1) | u64::from(bit);
        }
        let n = u32::from(self.length);
        Some(if self.signed && n < 64 && v >> (n - 1) & 1 == 1 {
            (v | (u64::MAX << n)) as i64
        } else {
            v as i64
        })
    }

    pub fn physical(&self, raw: i64) -> f64 {
        let raw = if self.signed {
            raw as f64
        } else {
            raw as u64 as f64
        };
        raw * self.factor + self.offset
    }

    /// The signal's bits as a mask over the frame's bytes: the content filter of the kernel's
    /// broadcast manager, which then tells only when these bits change.
    pub fn mask(&self) -> [u8; 8] {
        let mut m = [0u8; 8];
        for p in self.positions() {
            if (p as usize) < 64 {
                m[p as usize / 8] |= 1 << (p % 8);
            }
        }
        m
    }

    /// The signal's bits in DBC numbering: `8..23` (least to most significant) for a
    /// little-endian signal; for a big-endian one, each byte's run from the most significant
    /// bit down, `11..8, 23..16`, as a DBC editor draws the sawtooth.
    pub fn describe_bits(&self) -> String {
        let pos = self.positions();
        if !self.big_endian {
            let (lsb, msb) = (pos.last().copied(), pos.first().copied());
            return format!("{}..{}", lsb.unwrap_or(0), msb.unwrap_or(0));
        }
        let mut runs: Vec<(u16, u16)> = Vec::new();
        for p in pos {
            match runs.last_mut() {
                Some((hi, lo)) if *hi / 8 == p / 8 && *lo == p + 1 => *lo = p,
                _ => runs.push((p, p)),
            }
        }
        let runs: Vec<String> = runs
            .iter()
            .map(|(hi, lo)| {
                if hi == lo {
                    hi.to_string()
                } else {
                    format!("{hi}..{lo}")
                }
            })
            .collect();
        runs.join(", ")
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "start_bit {}, {} bits ({}), {}, {}, physical = raw x {} + {}",
            self.start_bit,
            self.length,
            self.describe_bits(),
            if self.big_endian {
                "big-endian (Motorola)"
            } else {
                "little-endian (Intel)"
            },
            if self.signed { "signed" } else { "unsigned" },
            self.factor,
            self.offset
        )
    }
}

/// Which frames carry the signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameId {
    /// One id: 11-bit, or 29-bit when `extended`.
    Exact { id: u32, extended: bool },
    /// J1939: a parameter group at any priority, from any source address unless `source`.
    Pgn { pgn: u32, source: Option<u8> },
}

/// The PGN of a 29-bit J1939 id: EDP, DP, PF and, for PDU2 (PF >= 240), PS; for PDU1 the PS
/// byte is the destination address and not part of the PGN.
pub fn pgn_of(id: u32) -> u32 {
    let pgn = (id >> 8) & 0x3_FFFF;
    let pf = (pgn >> 8) & 0xFF;
    if pf < 240 {
        pgn & 0x3_FF00
    } else {
        pgn
    }
}

/// Checks a configured PGN: 18 bits, and for PDU1 (PF < 240) no destination byte.
pub fn check_pgn(pgn: u32) -> Result<(), String> {
    if pgn > 0x3_FFFF {
        return Err(format!("{pgn} is more than 18 bits"));
    }
    if (pgn >> 8) & 0xFF < 240 && pgn & 0xFF != 0 {
        return Err(format!(
            "{pgn} (0x{pgn:X}) is a PDU1 group (PF < 240) whose low byte is a destination \
             address, not part of the PGN: use 0x{:X}",
            pgn & 0x3_FF00
        ));
    }
    Ok(())
}

impl FrameId {
    /// Whether a frame with `id` (`EFF_FLAG` set for 29-bit frames) carries the signal.
    pub fn matches(&self, id: u32) -> bool {
        let extended = id & EFF_FLAG != 0;
        let bare = id & 0x1FFF_FFFF;
        match *self {
            FrameId::Exact {
                id: want,
                extended: ext,
            } => ext == extended && bare == want,
            FrameId::Pgn { pgn, source } => {
                extended
                    && pgn_of(bare) == pgn
                    && source.is_none_or(|s| bare & 0xFF == u32::from(s))
            }
        }
    }

    /// The id as the kernel writes it (with `EFF_FLAG` for 29-bit ids), for an exact id.
    pub fn kernel_id(&self) -> Option<u32> {
        match *self {
            FrameId::Exact { id, extended } => Some(if extended { id | EFF_FLAG } else { id }),
            FrameId::Pgn { .. } => None,
        }
    }

    /// The kernel filter (`can_id`, `can_mask`) of a raw socket that passes exactly the frames
    /// `matches` takes: priority bits are left out of the mask, and the source byte too when
    /// any source will do.
    pub fn raw_filter(&self) -> (u32, u32) {
        const SFF_MASK: u32 = 0x7FF;
        const EFF_MASK: u32 = 0x1FFF_FFFF;
        match *self {
            FrameId::Exact {
                id,
                extended: false,
            } => (id, EFF_FLAG | SFF_MASK),
            FrameId::Exact { id, extended: true } => (id | EFF_FLAG, EFF_FLAG | EFF_MASK),
            FrameId::Pgn { pgn, source } => {
                let pdu1 = (pgn >> 8) & 0xFF < 240;
                let pgn_mask: u32 = if pdu1 { 0x3_FF00 } else { 0x3_FFFF };
                let (sa, sa_mask) = source.map_or((0, 0), |s| (u32::from(s), 0xFF));
                (
                    EFF_FLAG | (pgn & pgn_mask) << 8 | sa,
                    EFF_FLAG | RTR_FLAG | pgn_mask << 8 | sa_mask,
                )
            }
        }
    }
}

impl fmt::Display for FrameId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FrameId::Exact {
                id,
                extended: false,
            } => write!(f, "id 0x{id:03X} (11-bit)"),
            FrameId::Exact { id, extended: true } => write!(f, "id 0x{id:08X} (29-bit)"),
            FrameId::Pgn { pgn, source: None } => {
                write!(f, "J1939 PGN {pgn} (0x{pgn:04X}), any priority, any source")
            }
            FrameId::Pgn {
                pgn,
                source: Some(s),
            } => write!(
                f,
                "J1939 PGN {pgn} (0x{pgn:04X}), any priority, source 0x{s:02X}"
            ),
        }
    }
}

/// A comparison of a number: `< 0.5`, `>= 11.8`, `== 1`, `!= 0`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Compare {
    pub op: Op,
    pub value: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl Op {
    fn word(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }
}

/// Splits `"<= 3"` into the operator and the rest.
fn split_op(text: &str) -> Option<(Op, &str)> {
    let t = text.trim();
    for (w, op) in [
        ("<=", Op::Le),
        (">=", Op::Ge),
        ("==", Op::Eq),
        ("!=", Op::Ne),
        ("<", Op::Lt),
        (">", Op::Gt),
    ] {
        if let Some(rest) = t.strip_prefix(w) {
            return Some((op, rest.trim()));
        }
    }
    None
}

impl Compare {
    pub fn holds(&self, v: f64) -> bool {
        // Physical values are raw x factor: 0.1 x 3 is not 0.3 in binary; compare to a
        // millionth of the scale of the number.
        let eps = 1e-9 * self.value.abs().max(1.0);
        match self.op {
            Op::Lt => v < self.value - eps,
            Op::Le => v <= self.value + eps,
            Op::Gt => v > self.value + eps,
            Op::Ge => v >= self.value - eps,
            Op::Eq => (v - self.value).abs() <= eps,
            Op::Ne => (v - self.value).abs() > eps,
        }
    }
}

impl std::str::FromStr for Compare {
    type Err = String;

    fn from_str(s: &str) -> Result<Compare, String> {
        let bad =
            || format!("{s:?}: expected a comparison such as \"< 0.5\", \">= 11.8\" or \"== 1\"");
        let (op, rest) = split_op(s).ok_or_else(bad)?;
        let value: f64 = rest.parse().map_err(|_| bad())?;
        if !value.is_finite() {
            return Err(bad());
        }
        Ok(Compare { op, value })
    }
}

impl fmt::Display for Compare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.op.word(), self.value)
    }
}

/// A signal's value table (DBC `VAL_`): raw value to name.
pub type ValueTable = Vec<(i64, String)>;

/// When a CAN gate reads open.
#[derive(Debug, Clone, PartialEq)]
pub enum OpenWhen {
    /// On the physical value.
    Compare(Compare),
    /// The raw value is (or with `negate`, is not) one of these entries of the value table.
    Named {
        negate: bool,
        entries: Vec<(i64, String)>,
    },
}

impl OpenWhen {
    /// Parses `open_when` against the signal's value table: a comparison on the physical value,
    /// `== Name`, `!= Name` or `in [A, B]` with names from the table.
    pub fn parse(text: &str, table: &ValueTable) -> Result<OpenWhen, String> {
        let t = text.trim();
        let name = |n: &str| -> Result<(i64, String), String> {
            let n = n.trim().trim_matches('"');
            table.iter().find(|(_, v)| v == n).cloned().ok_or_else(|| {
                if table.is_empty() {
                    format!("{n:?}: the signal has no value table; compare numbers (\"== 1\")")
                } else {
                    let names: Vec<&str> = table.iter().map(|(_, v)| v.as_str()).collect();
                    format!(
                        "{n:?} is not in the signal's value table ({})",
                        names.join(", ")
                    )
                }
            })
        };
        if let Some(rest) = t.strip_prefix("in") {
            let rest = rest.trim();
            let inner = rest
                .strip_prefix('[')
                .and_then(|r| r.strip_suffix(']'))
                .ok_or_else(|| format!("{text:?}: write a list as \"in [P, N]\""))?;
            let entries = inner
                .split(',')
                .filter(|n| !n.trim().is_empty())
                .map(name)
                .collect::<Result<Vec<_>, _>>()?;
            if entries.is_empty() {
                return Err(format!("{text:?}: the list is empty"));
            }
            return Ok(OpenWhen::Named {
                negate: false,
                entries,
            });
        }
        if let Ok(c) = t.parse::<Compare>() {
            return Ok(OpenWhen::Compare(c));
        }
        match split_op(t) {
            Some((op @ (Op::Eq | Op::Ne), rest)) if !rest.is_empty() => Ok(OpenWhen::Named {
                negate: op == Op::Ne,
                entries: vec![name(rest)?],
            }),
            Some((_, rest)) if rest.parse::<f64>().is_err() && !rest.is_empty() => Err(format!(
                "{text:?}: a name from the value table takes == or !=, or \"in [A, B]\""
            )),
            _ => Err(format!(
                "{text:?}: expected a comparison (\"< 0.5\", \">= 11.8\", \"== 1\"), a name \
                 from the value table (\"== Set\") or a list (\"in [P, N]\")"
            )),
        }
    }
}

impl fmt::Display for OpenWhen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenWhen::Compare(c) => write!(f, "{c}"),
            OpenWhen::Named { negate, entries } if entries.len() == 1 => {
                write!(f, "{} {}", if *negate { "!=" } else { "==" }, entries[0].1)
            }
            OpenWhen::Named { entries, .. } => {
                let names: Vec<&str> = entries.iter().map(|(_, n)| n.as_str()).collect();
                write!(f, "in [{}]", names.join(", "))
            }
        }
    }
}

/// Whether a value-table name means "no valid value": J1939's error and not-available states,
/// a maker's "Invalid", "SNA" (signal not available).
pub fn is_error_name(name: &str) -> bool {
    let n: String = name
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_ascii_lowercase();
    matches!(
        n.as_str(),
        "error"
            | "err"
            | "fault"
            | "invalid"
            | "na"
            | "notavailable"
            | "sna"
            | "signalnotavailable"
            | "notavail"
            | "unavailable"
            | "undefined"
    ) || n.starts_with("error")
        || n.starts_with("notavailable")
}

/// SAE J1939-71's reserved ranges of a parameter: the top of the range says error (`0xFE..`)
/// or not available (`0xFF..`). For 2- and 4-bit states: 2 / 0xE error, 3 / 0xF not available.
pub fn j1939_reserved(length: u16, raw: i64) -> Option<&'static str> {
    let raw = raw as u64;
    let (err, na) = match length {
        2 => (2..=2, 3..=3),
        4 => (0xE..=0xE, 0xF..=0xF),
        8 => (0xFE..=0xFE, 0xFF..=0xFF),
        16 => (0xFE00..=0xFEFF, 0xFF00..=0xFFFF),
        32 => (0xFE00_0000..=0xFEFF_FFFF, 0xFF00_0000..=0xFFFF_FFFF),
        _ => return None,
    };
    if err.contains(&raw) {
        Some("error")
    } else if na.contains(&raw) {
        Some("not available")
    } else {
        None
    }
}

/// One CAN signal, resolved: which frames, which bits, what the values mean, when it opens.
#[derive(Debug, Clone, PartialEq)]
pub struct CanSignal {
    /// For people: `CCVS1.ParkingBrakeSwitch`, or the inline id.
    pub name: String,
    pub frame: FrameId,
    pub layout: Layout,
    pub unit: String,
    pub values: ValueTable,
    /// Read J1939's reserved ranges as error / not available.
    pub j1939: bool,
    pub open_when: OpenWhen,
}

impl CanSignal {
    /// What one frame of the signal says: open or closed with the value, or an error (a frame
    /// too short, a value the table or J1939 calls error or not available): closed.
    pub fn evaluate(&self, data: &[u8]) -> Result<(bool, String), String> {
        let Some(raw) = self.layout.raw(data) else {
            return Err(format!(
                "{}: frame of {} bytes, too short for the signal (needs {})",
                self.name,
                data.len(),
                self.layout.bytes_needed()
            ));
        };
        let label = self.values.iter().find(|(v, _)| *v == raw).map(|(_, n)| n);
        if let Some(n) = label.filter(|n| is_error_name(n)) {
            return Err(format!("{} = {raw} ({n}): no valid value", self.name));
        }
        if label.is_none() && self.j1939 {
            if let Some(what) = j1939_reserved(self.layout.length, raw) {
                return Err(format!("{} = {raw:#X}: J1939 {what}", self.name));
            }
        }
        let physical = self.layout.physical(raw);
        let open = match &self.open_when {
            OpenWhen::Compare(c) => c.holds(physical),
            OpenWhen::Named { negate, entries } => {
                entries.iter().any(|(v, _)| *v == raw) != *negate
            }
        };
        let shown = match label {
            Some(n) => format!("{n} ({raw})"),
            None if self.unit.is_empty() => format!("{physical}"),
            None => format!("{physical} {}", self.unit),
        };
        Ok((open, format!("{} = {shown}", self.name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn le(start: u16, len: u16, signed: bool) -> Layout {
        Layout {
            start_bit: start,
            length: len,
            big_endian: false,
            signed,
            factor: 1.0,
            offset: 0.0,
        }
    }

    fn be(start: u16, len: u16, signed: bool) -> Layout {
        Layout {
            big_endian: true,
            ..le(start, len, signed)
        }
    }

    /// Each row: layout, frame bytes, raw value expected (None: frame too short).
    #[test]
    fn raw_values_at_odd_offsets() {
        let cases: &[(Layout, &[u8], Option<i64>)] = &[
            // Little-endian 16 bits at bit 8 (CCVS1 speed): bytes 1 (low) and 2 (high).
            (
                le(8, 16, false),
                &[0xF7, 0x34, 0x12, 0, 0, 0, 0, 0],
                Some(0x1234),
            ),
            // Two bits at 2..3 (CCVS1 parking brake): 0xF7 = 1111_0111 -> 01.
            (le(2, 2, false), &[0xF7], Some(1)),
            // Little-endian 12 bits at odd bit 5, across bytes 0 and 1 and 2: 0xABC << 5.
            (le(5, 12, false), &[0x80, 0x57, 0x01], Some(0xABC)),
            // Signed little-endian 12 bits: 0xFFF is -1, 0x800 is -2048.
            (le(5, 12, true), &[0xE0, 0xFF, 0x01], Some(-1)),
            (le(5, 12, true), &[0x00, 0x00, 0x01], Some(-2048)),
            // Big-endian 16 bits starting at bit 7 (BODY_SPEED): byte 0 high, byte 1 low.
            (be(7, 16, false), &[0x12, 0x34, 0x01], Some(0x1234)),
            // Big-endian 4 bits at 3 (BODY_GEAR.Gear): the low nibble of byte 0.
            (be(3, 4, false), &[0xA3, 0x28], Some(3)),
            // Big-endian 12 bits, MSB at odd bit 11 (byte 1 bit 3): bits 11..8, then byte 2.
            (be(11, 12, false), &[0, 0x0A, 0xBC], Some(0xABC)),
            // Signed big-endian 8 bits at 15 (BODY_GEAR.Temperature): 0xF6 = -10.
            (be(15, 8, true), &[0, 0xF6], Some(-10)),
            // Big-endian 10 bits from bit 1 of byte 0 into byte 1: 0b11 then 0xFF = 0x3FF;
            // signed, -1.
            (be(1, 10, true), &[0x03, 0xFF], Some(-1)),
            // 64 bits little-endian.
            (
                le(0, 64, false),
                &[1, 0, 0, 0, 0, 0, 0, 0x80],
                Some(i64::MIN + 1),
            ),
            // Too short: needs 3 bytes.
            (le(8, 16, false), &[0xF7, 0x34], None),
            (be(11, 12, false), &[0, 0x0A], None),
        ];
        for (i, (layout, data, want)) in cases.iter().enumerate() {
            assert_eq!(layout.raw(data), *want, "case {i}: {layout}");
        }
    }

    #[test]
    fn masks_cover_the_signal_bits_only() {
        assert_eq!(le(2, 2, false).mask(), [0x0C, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(le(8, 16, false).mask(), [0, 0xFF, 0xFF, 0, 0, 0, 0, 0]);
        assert_eq!(be(11, 12, false).mask(), [0, 0x0F, 0xFF, 0, 0, 0, 0, 0]);
        assert_eq!(be(3, 4, false).mask(), [0x0F, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(be(11, 12, false).bytes_needed(), 3);
        assert!(le(60, 8, false).check().is_err(), "past 8 bytes");
        assert!(le(0, 0, false).check().is_err());
    }

    #[test]
    fn bits_are_described_in_dbc_numbering() {
        assert_eq!(le(8, 16, false).describe_bits(), "8..23");
        assert_eq!(be(7, 16, false).describe_bits(), "7..0, 15..8");
        assert_eq!(be(11, 12, false).describe_bits(), "11..8, 23..16");
        assert_eq!(be(3, 4, false).describe_bits(), "3..0");
        assert_eq!(be(0, 2, false).describe_bits(), "0, 15");
    }

    #[test]
    fn factor_and_offset() {
        let speed = Layout {
            factor: 1.0 / 256.0,
            ..le(8, 16, false)
        };
        assert_eq!(speed.physical(speed.raw(&[0, 0x80, 0x0C]).unwrap()), 12.5);
        let torque = Layout {
            offset: -125.0,
            ..le(16, 8, false)
        };
        assert_eq!(torque.physical(torque.raw(&[0, 0, 0x7D]).unwrap()), 0.0);
        let temp = Layout {
            factor: 0.5,
            ..be(15, 8, true)
        };
        assert_eq!(temp.physical(temp.raw(&[0, 0xF6]).unwrap()), -5.0);
        // Unsigned 64-bit raw values above i64::MAX stay positive.
        assert_eq!(le(0, 64, false).physical(-1), u64::MAX as f64);
    }

    #[test]
    fn j1939_pgn_matching_pdu1_and_pdu2() {
        // CCVS1 (PDU2, PF 0xFE), priority 6, source 0x00; and from source 0x17, priority 3.
        let ccvs1 = FrameId::Pgn {
            pgn: 65265,
            source: None,
        };
        assert!(ccvs1.matches(0x18FE_F100 | EFF_FLAG));
        assert!(ccvs1.matches(0x0CFE_F117 | EFF_FLAG));
        assert!(
            !ccvs1.matches(0x18FE_F100),
            "an 11-bit frame never matches a PGN"
        );
        assert!(!ccvs1.matches(0x18FE_F200 | EFF_FLAG));
        let from_engine = FrameId::Pgn {
            pgn: 65265,
            source: Some(0x00),
        };
        assert!(from_engine.matches(0x18FE_F100 | EFF_FLAG));
        assert!(!from_engine.matches(0x18FE_F117 | EFF_FLAG));
        // TSC1 (PGN 0 = 0x0000, PDU1): the PS byte is a destination and does not count.
        assert_eq!(pgn_of(0x0C00_0003), 0);
        assert_eq!(pgn_of(0x0C00_2A03), 0);
        // EEC1 0xF004 is PDU2 (PF 0xF0 = 240).
        assert_eq!(pgn_of(0x0CF0_0400), 0xF004);
        // A PDU1 group with data page set: 0x1EA00 (request), destination 0xFF.
        assert_eq!(pgn_of(0x19EA_FF21), 0x1_EA00);
        let request = FrameId::Pgn {
            pgn: 0x1_EA00,
            source: None,
        };
        assert!(request.matches(0x19EA_FF21 | EFF_FLAG));
        assert!(request.matches(0x19EA_0021 | EFF_FLAG), "any destination");
        assert!(
            !request.matches(0x18EA_FF21 | EFF_FLAG),
            "data page differs"
        );
        assert!(
            check_pgn(0xEA05).is_err(),
            "a PDU1 PGN with a destination byte"
        );
        assert!(check_pgn(0xFEF1).is_ok());
        // The kernel filter takes the same frames: priority out of the mask; for PDU1 the
        // destination too; the source only when given.
        assert_eq!(
            ccvs1.raw_filter(),
            (EFF_FLAG | 0x00FE_F100, EFF_FLAG | RTR_FLAG | 0x03FF_FF00)
        );
        assert_eq!(
            request.raw_filter(),
            (EFF_FLAG | 0x01EA_0000, EFF_FLAG | RTR_FLAG | 0x03FF_0000)
        );
        assert_eq!(
            from_engine.raw_filter(),
            (EFF_FLAG | 0x00FE_F100, EFF_FLAG | RTR_FLAG | 0x03FF_FFFF)
        );
        let exact = FrameId::Exact {
            id: 0x3A0,
            extended: false,
        };
        assert!(exact.matches(0x3A0) && !exact.matches(0x3A0 | EFF_FLAG));
        assert_eq!(exact.kernel_id(), Some(0x3A0));
    }

    fn table() -> ValueTable {
        vec![
            (0, "NotSet".into()),
            (1, "Set".into()),
            (2, "Error".into()),
            (3, "NotAvailable".into()),
        ]
    }

    #[test]
    fn open_when_parses_comparisons_and_names() {
        let t = table();
        let p = |s: &str| OpenWhen::parse(s, &t);
        assert_eq!(
            p("< 0.5").unwrap(),
            OpenWhen::Compare(Compare {
                op: Op::Lt,
                value: 0.5
            })
        );
        assert_eq!(p(">=11.8").unwrap().to_string(), ">= 11.8");
        assert_eq!(p("== Set").unwrap().to_string(), "== Set");
        assert_eq!(
            p("!= NotSet").unwrap(),
            OpenWhen::Named {
                negate: true,
                entries: vec![(0, "NotSet".into())]
            }
        );
        assert_eq!(
            p("in [NotSet, Set]").unwrap().to_string(),
            "in [NotSet, Set]"
        );
        assert!(p("== Parked")
            .unwrap_err()
            .contains("not in the signal's value table"));
        assert!(p("< Set").is_err());
        assert!(p("about 3").is_err());
        assert!(p("in P, N").is_err());
        assert!(OpenWhen::parse("== Set", &Vec::new())
            .unwrap_err()
            .contains("no value table"));
    }

    #[test]
    fn comparisons_tolerate_binary_fractions() {
        let c: Compare = "== 0.3".parse().unwrap();
        assert!(c.holds(0.1 * 3.0));
        let lt: Compare = "< 0.5".parse().unwrap();
        assert!(lt.holds(0.49) && !lt.holds(0.5) && !lt.holds(12.0));
        assert!("=> 3".parse::<Compare>().is_err());
    }

    #[test]
    fn value_tables_and_error_values_close() {
        let brake = CanSignal {
            name: "CCVS1.ParkingBrakeSwitch".into(),
            frame: FrameId::Exact {
                id: 0x18FE_F100,
                extended: true,
            },
            layout: le(2, 2, false),
            unit: String::new(),
            values: table(),
            j1939: false,
            open_when: OpenWhen::parse("== Set", &table()).unwrap(),
        };
        let frame = |v: u8| [v << 2, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            brake.evaluate(&frame(1)).unwrap(),
            (true, "CCVS1.ParkingBrakeSwitch = Set (1)".into())
        );
        assert!(!brake.evaluate(&frame(0)).unwrap().0);
        assert!(brake.evaluate(&frame(2)).unwrap_err().contains("Error"));
        assert!(brake
            .evaluate(&frame(3))
            .unwrap_err()
            .contains("NotAvailable"));
        assert!(brake.evaluate(&[]).unwrap_err().contains("too short"));
        let gear = CanSignal {
            values: vec![
                (0, "P".into()),
                (1, "R".into()),
                (2, "N".into()),
                (3, "D".into()),
                (15, "Invalid".into()),
            ],
            layout: be(3, 4, false),
            j1939: true,
            ..brake.clone()
        };
        let gear = CanSignal {
            open_when: OpenWhen::parse("in [P, N]", &gear.values).unwrap(),
            ..gear
        };
        assert!(gear.evaluate(&[0x00]).unwrap().0);
        assert!(gear.evaluate(&[0x02]).unwrap().0);
        assert!(!gear.evaluate(&[0x03]).unwrap().0);
        assert!(gear.evaluate(&[0x0F]).unwrap_err().contains("Invalid"));
        // J1939's reserved ranges, where no table names the value.
        let speed = CanSignal {
            values: Vec::new(),
            layout: Layout {
                factor: 1.0 / 256.0,
                ..le(8, 16, false)
            },
            unit: "km/h".into(),
            j1939: true,
            open_when: OpenWhen::Compare("< 0.5".parse().unwrap()),
            ..brake.clone()
        };
        assert_eq!(
            speed.evaluate(&[0, 0, 0]).unwrap(),
            (true, "CCVS1.ParkingBrakeSwitch = 0 km/h".into())
        );
        assert!(speed
            .evaluate(&[0, 0xFF, 0xFF])
            .unwrap_err()
            .contains("not available"));
        assert!(speed
            .evaluate(&[0, 0x00, 0xFE])
            .unwrap_err()
            .contains("error"));
        let plain = CanSignal {
            j1939: false,
            ..speed
        };
        assert!(
            !plain.evaluate(&[0, 0xFF, 0xFF]).unwrap().0,
            "255.99 km/h: moving"
        );
        assert!(is_error_name("Not Available") && is_error_name("SNA") && !is_error_name("Set"));
    }
}
