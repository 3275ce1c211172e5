//! The vocabulary of a CAN signal, below both `config` (which reads it from a gate's keys or a
//! DBC file) and `gate::can` (which reads it off the bus): `decode` lays out and decodes a
//! signal's bits, compares and value tables; `dbc` resolves a signal by name in a DBC file.

pub mod dbc;
pub mod decode;

pub use decode::{check_pgn, CanSignal, Compare, FrameId, Layout, Op, OpenWhen, ValueTable};
