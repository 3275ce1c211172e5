//! The file as written: one serde struct per section, every field optional, unknown keys and
//! wrong types refused by serde (`deny_unknown_fields`), each error with its key and line.
//!
//! Each section (and each `[[gate]]`) is deserialized on its own from toml's spanned table. When
//! serde refuses a key, the error is recorded, that key is set aside and the section read again,
//! so that one run reports every bad key, as an operator fixing a file wants.
//!
//! A `[[gate]]` is a tagged enum, `kind` its tag, read in two serde passes over the same spanned
//! table: `GateTag` reads only `kind` (an unknown kind is refused with its line), then `GateSeed`
//! deserializes the whole table into that kind's struct, which refuses the keys of other kinds.
//! Not `#[serde(tag = "kind")]`: serde's internally tagged enums buffer the table into its own
//! `Content` before they know the variant, and errors from there carry no span, so no key and no
//! line. Nor one streaming pass: toml hands the keys in sorted order, not with `kind` first.

use std::marker::PhantomData;

use serde::de::{DeserializeSeed, Deserializer, Visitor};
use serde::Deserialize;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::errors::Errors;

#[derive(Debug, Default)]
pub(super) struct RawConfig {
    pub upstream: Option<RawUpstream>,
    pub api: Option<RawApi>,
    pub policy: Option<RawPolicy>,
    pub state: Option<RawState>,
    pub sim: Option<RawSim>,
    pub fleet: Option<RawFleet>,
    /// Each `[[gate]]` in file order; `None` where serde refused it whole (reported).
    pub gates: Vec<Option<RawGate>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    pub kind: Option<String>,
    pub url: Option<String>,
    pub poll_interval: Option<String>,
    pub timeout: Option<String>,
    // The apiserver keys (SPEC section 2b), validated by `apiserver`; only with that kind.
    pub kubeconfig: Option<String>,
    pub server: Option<String>,
    pub ca_file: Option<String>,
    pub token_file: Option<String>,
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
    pub node_name: Option<String>,
    pub detect: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApi {
    pub listen: Option<String>,
    pub token_file: Option<String>,
    pub max_connections: Option<i64>,
    pub connection_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    pub mode: Option<String>,
    pub on_closed: Option<String>,
    pub stable_for: Option<String>,
    pub max_concurrent: Option<i64>,
    pub ready_timeout: Option<String>,
    pub max_defer: Option<String>,
    pub gate_check_interval: Option<String>,
    pub gate_reread: Option<String>,
    pub prepull: Option<bool>,
    pub include: Option<Vec<String>>,
    pub exclude: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawState {
    pub dir: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFleet {
    pub namespace: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSim {
    pub node_name: Option<String>,
    pub recreate_delay: Option<String>,
    pub ready_delay: Option<String>,
    pub pull_delay: Option<String>,
}

/// A `[[gate]]`, tagged by its `kind`: each variant's struct refuses the keys of other kinds.
#[derive(Debug)]
pub(super) enum RawGate {
    File(RawFileGate),
    Gpio(RawGpioGate),
    GpioSysfs(RawSysfsGate),
    Command(RawCommandGate),
    Window(RawWindowGate),
    Can(RawCanGate),
    Value(RawValueGate),
}

/// A gate's `kind`, the tag of `RawGate`: a string, one of `GATE_KINDS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum GateTag {
    File,
    Gpio,
    GpioSysfs,
    Command,
    Window,
    Can,
    Value,
}

const GATE_KINDS: &[&str] = &[
    "file",
    "gpio",
    "gpio-sysfs",
    "command",
    "window",
    "can",
    "value",
];

/// By hand only so that a kind that is not a string reads "expected a string, found integer"
/// (derived, toml's enum support would also take a table); serde still places every error.
impl<'de> Deserialize<'de> for GateTag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<GateTag, D::Error> {
        struct Tag;
        impl Visitor<'_> for Tag {
            type Value = GateTag;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<GateTag, E> {
                Ok(match v {
                    "file" => GateTag::File,
                    "gpio" => GateTag::Gpio,
                    "gpio-sysfs" => GateTag::GpioSysfs,
                    "command" => GateTag::Command,
                    "window" => GateTag::Window,
                    "can" => GateTag::Can,
                    "value" => GateTag::Value,
                    _ => return Err(E::unknown_variant(v, GATE_KINDS)),
                })
            }
        }
        d.deserialize_str(Tag)
    }
}

/// The first pass over a `[[gate]]`: its `kind` only, every other key passed over.
#[derive(Deserialize)]
struct TagOnly {
    kind: Option<GateTag>,
}

/// The second pass: the `[[gate]]` (less its tag) into the struct of the kind the first pass read.
#[derive(Clone, Copy)]
struct GateSeed(GateTag);

impl<'de> DeserializeSeed<'de> for GateSeed {
    type Value = RawGate;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<RawGate, D::Error> {
        Ok(match self.0 {
            GateTag::File => RawGate::File(RawFileGate::deserialize(d)?),
            GateTag::Gpio => RawGate::Gpio(RawGpioGate::deserialize(d)?),
            GateTag::GpioSysfs => RawGate::GpioSysfs(RawSysfsGate::deserialize(d)?),
            GateTag::Command => RawGate::Command(RawCommandGate::deserialize(d)?),
            GateTag::Window => RawGate::Window(RawWindowGate::deserialize(d)?),
            GateTag::Can => RawGate::Can(RawCanGate::deserialize(d)?),
            GateTag::Value => RawGate::Value(RawValueGate::deserialize(d)?),
        })
    }
}

impl GateTag {
    fn word(self) -> &'static str {
        // The variants are declared in the order of `GATE_KINDS`.
        GATE_KINDS[self as usize]
    }
}

/// The keys every kind of gate takes.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawCommon {
    pub name: Option<String>,
    pub safety: Option<bool>,
    pub applies_to: Option<Vec<String>>,
}

macro_rules! gate_struct {
    ($name:ident { $($field:ident: $ty:ty,)* }) => {
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(super) struct $name {
            pub name: Option<String>,
            pub safety: Option<bool>,
            pub applies_to: Option<Vec<String>>,
            $(pub $field: $ty,)*
        }

        impl $name {
            pub fn common(&self) -> RawCommon {
                RawCommon {
                    name: self.name.clone(),
                    safety: self.safety,
                    applies_to: self.applies_to.clone(),
                }
            }
        }
    };
}

gate_struct!(RawFileGate {
    path: Option<String>,
    open_when: Option<String>,
    value: Option<String>,
    max_age: Option<String>,
});
gate_struct!(RawGpioGate {
    chip: Option<String>,
    line: Option<RawLine>,
    open_when: Option<String>,
});
gate_struct!(RawSysfsGate {
    line: Option<i64>,
    open_when: Option<String>,
    sysfs_root: Option<String>,
});
gate_struct!(RawCommandGate {
    argv: Option<Vec<String>>,
    interval: Option<String>,
    timeout: Option<String>,
});
gate_struct!(RawWindowGate {
    windows: Option<Vec<String>>,
    timezone: Option<String>,
});
gate_struct!(RawCanGate {
    interface: Option<String>,
    dbc: Option<String>,
    message: Option<String>,
    signal: Option<String>,
    id: Option<i64>,
    extended: Option<bool>,
    pgn: Option<i64>,
    source: Option<i64>,
    start_bit: Option<i64>,
    length: Option<i64>,
    byte_order: Option<String>,
    signed: Option<bool>,
    factor: Option<RawNumber>,
    offset: Option<RawNumber>,
    unit: Option<String>,
    j1939: Option<bool>,
    open_when: Option<String>,
    max_age: Option<String>,
});
gate_struct!(RawValueGate {
    path: Option<String>,
    scale: Option<RawNumber>,
    scale_file: Option<String>,
    open_when: Option<String>,
    close_when: Option<String>,
    interval: Option<String>,
});

/// A number written as an integer (`1`) or a float (`0.125`).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged, expecting = "expected a number")]
pub(super) enum RawNumber {
    Int(i64),
    Float(f64),
}

impl RawNumber {
    pub fn get(self) -> f64 {
        match self {
            RawNumber::Int(n) => n as f64,
            RawNumber::Float(f) => f,
        }
    }
}

/// A GPIO line by offset (17) or by name ("PARK_BRAKE").
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "expected a line offset (17) or a line name (\"PARK_BRAKE\")"
)]
pub(super) enum RawLine {
    Offset(i64),
    Name(String),
}

/// Reads the document; `None` when it is not TOML at all (reported, with its line).
pub(super) fn read(text: &str, errors: &mut Errors) -> Option<RawConfig> {
    let root = match DeTable::parse(text) {
        Ok(root) => root.into_inner(),
        Err(e) => {
            // toml's message carries the line and column and names the offending key.
            let message = e.to_string();
            errors.push("", format!("invalid TOML: {}", message.trim_end()));
            return None;
        }
    };
    let mut raw = RawConfig::default();
    for (key, value) in root {
        let name = key.get_ref().to_string();
        let (span, value) = (value.span(), value.into_inner());
        match name.as_str() {
            "upstream" => raw.upstream = section(&name, span, value, errors),
            "api" => raw.api = section(&name, span, value, errors),
            "policy" => raw.policy = section(&name, span, value, errors),
            "state" => raw.state = section(&name, span, value, errors),
            "sim" => raw.sim = section(&name, span, value, errors),
            "fleet" => raw.fleet = section(&name, span, value, errors),
            "gate" => match value {
                DeValue::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        let g = item.get_ref().clone();
                        raw.gates
                            .push(gate(&format!("gate[{i}]"), item.span(), g, errors));
                    }
                }
                _ => errors.push_at(&name, span.start, "expected [[gate]] tables".into()),
            },
            _ => errors.push_at(&name, key.span().start, "unknown section".into()),
        }
    }
    Some(raw)
}

/// One `[section]`; serde refuses unknown keys and wrong types, each reported, and the rest of
/// the section is still read.
fn section<T: for<'de> Deserialize<'de>>(
    name: &str,
    span: std::ops::Range<usize>,
    value: DeValue<'_>,
    errors: &mut Errors,
) -> Option<T> {
    let DeValue::Table(table) = value else {
        let found = value.type_str();
        errors.push_at(
            name,
            span.start,
            format!("expected a table [{name}], found {found}"),
        );
        return None;
    };
    lenient(name, span, table, errors, None, PhantomData)
}

/// One `[[gate]]`: serde reads its `kind` (`GateTag`), then the table as that kind's struct.
fn gate(
    name: &str,
    span: std::ops::Range<usize>,
    value: DeValue<'_>,
    errors: &mut Errors,
) -> Option<RawGate> {
    let DeValue::Table(table) = value else {
        errors.push_at(name, span.start, "expected a table".into());
        return None;
    };
    let whole = Spanned::new(span.clone(), table.clone());
    let tag = match TagOnly::deserialize(toml::de::Deserializer::from(whole)) {
        Ok(TagOnly { kind: Some(tag) }) => tag,
        Ok(TagOnly { kind: None }) => {
            let message = "required: file, gpio, gpio-sysfs, command, window, can or value";
            errors.push_at(&format!("{name}.kind"), span.start, message.into());
            return None;
        }
        Err(e) => {
            let at = e.span().map_or(span.start, |s| s.start);
            let message = reword(e.message(), None, name);
            errors.push_at(&format!("{name}.kind"), at, message);
            // Still read the common keys, to report what else is wrong.
            lenient(
                name,
                span,
                table,
                errors,
                Some("?"),
                PhantomData::<RawCommon>,
            );
            return None;
        }
    };
    // The tag is read; as with serde's tagged enums, the variant's struct sees the rest.
    let mut table = table;
    table.remove("kind");
    lenient(name, span, table, errors, Some(tag.word()), GateSeed(tag))
}

/// Deserializes `table` with `seed` (`PhantomData::<T>` for a plain `T`); each key serde refuses
/// is reported (named `{name}.{key}`, with its line) and set aside, and the rest read again.
/// `gate_kind` words the unknown-key message.
fn lenient<T, S: for<'de> DeserializeSeed<'de, Value = T> + Copy>(
    name: &str,
    span: std::ops::Range<usize>,
    mut table: DeTable<'_>,
    errors: &mut Errors,
    gate_kind: Option<&str>,
    seed: S,
) -> Option<T> {
    loop {
        let whole = Spanned::new(span.clone(), table.clone());
        let e = match seed.deserialize(toml::de::Deserializer::from(whole)) {
            Ok(v) => return Some(v),
            Err(e) => e,
        };
        let at = e.span().map_or(span.start, |s| s.start);
        // The entry the error points into: its key, or its value.
        let bad = table.iter().find_map(|(k, v)| {
            let inside = k.span().contains(&at) || v.span().contains(&at) || v.span().end == at;
            inside.then(|| k.get_ref().to_string())
        });
        let message = reword(e.message(), gate_kind, name);
        match bad {
            Some(key) if key != "kind" => {
                errors.refuse(&format!("{name}.{key}"), at, message);
                table.remove(key.as_str());
            }
            _ => {
                errors.push_at(name, at, message);
                return None;
            }
        }
    }
}

/// serde's wording, in the words of this file's earlier messages (kept by the tests).
fn reword(message: &str, gate_kind: Option<&str>, section: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        let (kind, _) = rest.split_once('`').unwrap_or((rest, ""));
        return format!(
            "unknown kind {kind:?}; expected file, gpio, gpio-sysfs, command, window, can or value"
        );
    }
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let takes = rest
            .split_once(", expected one of ")
            .or_else(|| rest.split_once(", expected "))
            .map(|(_, t)| t.replace('`', ""))
            .unwrap_or_default();
        return match gate_kind {
            Some(kind) => format!("unknown key for a {kind:?} gate; it takes {takes}"),
            None => format!("unknown key; [{section}] takes {takes}"),
        };
    }
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        if let Some((found, expected)) = rest.split_once(", expected ") {
            let found = found.split_whitespace().next().unwrap_or(found);
            let found = match found {
                "sequence" => "array",
                "map" => "table",
                "boolean" | "integer" | "string" | "float" => found,
                other => other,
            };
            let expected = match expected {
                "a boolean" => "true or false",
                "i64" => "an integer",
                "a sequence" => "a list of strings",
                other => other,
            };
            return format!("expected {expected}, found {found}");
        }
    }
    message.trim_end().to_owned()
}
