//! The errors found in one config file, each placed at the line that sets its key: what `raw`
//! (serde's refusals) and `validate` (the semantic checks) both push to.

use std::path::Path;

use super::{ConfigError, ConfigErrors};

/// The errors found so far in one file, each placed at its line.
pub(super) struct Errors<'t> {
    text: &'t str,
    file: &'t Path,
    /// Each error with its line (0: none), to be listed in file order.
    list: Vec<(usize, ConfigError)>,
    /// Keys serde refused (reported): validation says nothing more about them.
    refused: Vec<String>,
}

impl<'t> Errors<'t> {
    pub fn new(text: &'t str, file: &'t Path) -> Self {
        Errors {
            text,
            file,
            list: Vec::new(),
            refused: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// An error at `key`, placed at the line where the file sets it (if it does).
    pub fn push(&mut self, key: &str, message: String) {
        if self.refused.iter().any(|k| k == key) {
            return;
        }
        match locate(self.text, key) {
            Some(at) => self.push_at(key, at, message),
            None => self.list.push((
                0,
                ConfigError {
                    file: self.file.to_owned(),
                    key: key.to_owned(),
                    message,
                },
            )),
        }
    }

    /// A key serde refused (unknown, or of the wrong type), at byte `at` of the file.
    pub fn refuse(&mut self, key: &str, at: usize, message: String) {
        self.refused.push(key.to_owned());
        self.push_at(key, at, message);
    }

    /// An error at `key`, at byte `at` of the file.
    pub fn push_at(&mut self, key: &str, at: usize, message: String) {
        let before = &self.text[..at.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        self.list.push((
            line,
            ConfigError {
                file: self.file.to_owned(),
                key: key.to_owned(),
                message: format!("{message} (line {line}, column {column})"),
            },
        ));
    }
}

impl From<Errors<'_>> for ConfigErrors {
    fn from(mut e: Errors<'_>) -> Self {
        e.list.sort_by_key(|(line, _)| *line);
        ConfigErrors(e.list.into_iter().map(|(_, e)| e).collect())
    }
}

/// Where the file sets `key` (`section.key`, `gate[2].key[1]`): the byte offset of the key, or
/// of the item for `key[i]` lists written one item a line.
fn locate(text: &str, key: &str) -> Option<usize> {
    let (section, rest) = key.split_once('.')?;
    let name = rest.split('[').next()?;
    let (section, gate) = match section.strip_prefix("gate[") {
        Some(i) => ("gate", i.trim_end_matches(']').parse::<usize>().ok()),
        None => (section, None),
    };
    let (mut current, mut gates) = (String::new(), 0usize);
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        let indent = line.len() - t.len();
        if let Some(h) = t.strip_prefix("[[") {
            current = h.split(']').next().unwrap_or_default().trim().to_owned();
            if current == "gate" {
                gates += 1;
            }
        } else if let Some(h) = t.strip_prefix('[') {
            current = h.split(']').next().unwrap_or_default().trim().to_owned();
        } else if current == section
            && gate.is_none_or(|g| gates == g + 1)
            && t.strip_prefix(name)
                .is_some_and(|r| r.trim_start().starts_with('='))
        {
            return Some(offset + indent);
        }
        offset += line.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_finds_keys_of_the_nth_gate() {
        let text = "[[gate]]\nname = \"a\"\n[[gate]]\n  name = \"b\"\n";
        assert_eq!(
            locate(text, "gate[1].name"),
            Some(text.find("  name").unwrap() + 2)
        );
        assert_eq!(locate(text, "gate[0].name[3]"), Some(9));
        assert_eq!(locate(text, "gate[2].name"), None);
        assert_eq!(locate(text, "api.listen"), None);
    }
}
