//! The file as written: one serde struct per section, every field optional, unknown keys and
//! wrong types refused by serde (`deny_unknown_fields`), each error with its key and line.
//!
//! Each section (and each `[[gate]]`) is deserialized on its own from toml's spanned table. When
//! serde refuses a key, the error is recorded, that key is set aside and the section read again,
//! so that one run reports every bad key, as an operator fixing a file wants.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::validate::Errors;

#[derive(Debug, Default)]
pub(super) struct RawConfig {
    pub upstream: Option<RawUpstream>,
    pub api: Option<RawApi>,
    pub policy: Option<RawPolicy>,
    pub state: Option<RawState>,
    pub sim: Option<RawSim>,
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
pub(super) struct RawSim {
    pub node_name: Option<String>,
    pub recreate_delay: Option<String>,
    pub ready_delay: Option<String>,
    pub pull_delay: Option<String>,
}

/// A `[[gate]]`, tagged by its `kind`: each variant's struct refuses the keys of other kinds.
/// `gate` dispatches on the tag itself, because serde's internally tagged enums buffer the
/// table and lose toml's spans, and with them the key and line of each error.
#[derive(Debug)]
pub(super) enum RawGate {
    File(RawFileGate),
    Gpio(RawGpioGate),
    GpioSysfs(RawSysfsGate),
    Command(RawCommandGate),
    Window(RawWindowGate),
}

pub(super) const GATE_KINDS: &[&str] = &["file", "gpio", "gpio-sysfs", "command", "window"];

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
fn section<T: DeserializeOwned>(
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
    lenient(name, span, table, errors, None)
}

/// One `[[gate]]`: its `kind` picks the variant, whose struct refuses the keys of other kinds.
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
    let kind = match table.get("kind").map(|k| k.get_ref()) {
        Some(DeValue::String(k)) if GATE_KINDS.contains(&k.as_ref()) => k.to_string(),
        Some(DeValue::String(k)) => {
            let key = format!("{name}.kind");
            let at = table.get("kind").map_or(span.start, |k| k.span().start);
            errors.push_at(
                &key,
                at,
                format!("unknown kind {k:?}; expected file, gpio, gpio-sysfs, command or window"),
            );
            // Still read the common keys, to report what else is wrong.
            lenient::<RawCommon>(name, span, table, errors, Some("?"));
            return None;
        }
        Some(other) => {
            let found = other.type_str();
            errors.push_at(
                &format!("{name}.kind"),
                span.start,
                format!("expected a string, found {found}"),
            );
            return None;
        }
        None => {
            errors.push_at(
                &format!("{name}.kind"),
                span.start,
                "required: file, gpio, gpio-sysfs, command or window".into(),
            );
            return None;
        }
    };
    let mut table = table;
    table.remove("kind");
    let k = Some(kind.as_str());
    Some(match kind.as_str() {
        "file" => RawGate::File(lenient(name, span, table, errors, k)?),
        "gpio" => RawGate::Gpio(lenient(name, span, table, errors, k)?),
        "gpio-sysfs" => RawGate::GpioSysfs(lenient(name, span, table, errors, k)?),
        "command" => RawGate::Command(lenient(name, span, table, errors, k)?),
        _ => RawGate::Window(lenient(name, span, table, errors, k)?),
    })
}

/// Deserializes `table` as `T`; each key serde refuses is reported (named `{name}.{key}`, with
/// its line) and set aside, and the rest read again. `gate_kind` words the unknown-key message.
fn lenient<T: DeserializeOwned>(
    name: &str,
    span: std::ops::Range<usize>,
    mut table: DeTable<'_>,
    errors: &mut Errors,
    gate_kind: Option<&str>,
) -> Option<T> {
    loop {
        let whole = Spanned::new(span.clone(), table.clone());
        let e = match T::deserialize(toml::de::Deserializer::from(whole)) {
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
