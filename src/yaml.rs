//! YAML read into a `serde_json::Value`, by yaml-rust2's parser (a maintained YAML 1.2 parser,
//! the successor of yaml-rust), bounded: kubeconfigs (SPEC 2b) and, in the apiserver stand-in,
//! the RBAC manifest.
//!
//! We take yaml-rust2's events, not its tree: its loader copies an alias's node each time it is
//! used (a "billion laughs" file of a few hundred bytes grows to gigabytes) and drops a deep tree
//! by recursion. Here nesting deeper than `MAX_DEPTH` and more than `MAX_NODES` nodes (aliases
//! counted at their expanded size) are refused with the line named, before they are built.
//!
//! Plain scalars are typed as kubectl's YAML reader (go-yaml, then JSON) types the values a
//! kubeconfig holds: `null`, `~` and an empty value are null, `true`/`false` booleans; every
//! other scalar, numbers included, is a string (kubectl turns a number into a string where the
//! field is a string, and the fields read here are strings).

use std::collections::HashMap;

use serde_json::{Map, Value};
use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Collections nested deeper than this are refused (a kubeconfig needs 4 levels).
pub const MAX_DEPTH: usize = 64;
/// Nodes in a document, aliases counted at the size of what they stand for.
pub const MAX_NODES: usize = 100_000;

/// A syntax error or a bound exceeded, at a line (1-based).
#[derive(Debug, PartialEq, Eq)]
pub struct Error {
    pub line: usize,
    pub msg: String,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.msg)
    }
}

/// The first document of `text`; `None` if it holds none.
pub fn parse(text: &str) -> Result<Option<Value>, Error> {
    Ok(read(text, false)?.into_iter().next())
}

/// Every document of `text` (`---` separated), empty ones left out.
pub fn parse_all(text: &str) -> Result<Vec<Value>, Error> {
    read(text, true)
}

enum Frame {
    Seq(Vec<Value>),
    /// The map, and the key whose value comes next.
    Map(Map<String, Value>, Option<String>),
}

/// A collection being built: its anchor, and the nodes within it so far (itself included).
struct Open {
    frame: Frame,
    anchor: usize,
    nodes: usize,
}

fn read(text: &str, all: bool) -> Result<Vec<Value>, Error> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let text = &*tabs_after_keys(text);
    let mut parser = Parser::new_from_str(text);
    let mut docs = Vec::new();
    let mut stack: Vec<Open> = Vec::new();
    let mut anchors: HashMap<usize, (Value, usize)> = HashMap::new();
    let mut total = 0usize;
    let mut done: Option<Value> = None;
    loop {
        let (event, mark) = parser.next_token().map_err(|e| scan_error(text, &e))?;
        let at = |msg: String| Error {
            line: line_of(&mark),
            msg,
        };
        // A complete node to place in its parent: the value and its size in nodes.
        let node: Option<(Value, usize)> = match event {
            Event::StreamEnd => break,
            Event::DocumentStart => {
                anchors.clear();
                total = 0;
                None
            }
            Event::DocumentEnd => {
                if let Some(v) = done.take() {
                    docs.push(v);
                    if !all {
                        break;
                    }
                }
                None
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(at(format!(
                        "nested deeper than {MAX_DEPTH} levels (refused)"
                    )));
                }
                expect_value(&stack).map_err(at)?;
                total += 1;
                let frame = if matches!(event, Event::SequenceStart(..)) {
                    Frame::Seq(Vec::new())
                } else {
                    Frame::Map(Map::new(), None)
                };
                stack.push(Open {
                    frame,
                    anchor,
                    nodes: 1,
                });
                None
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let open = stack.pop().expect("the parser balances collections");
                let v = match open.frame {
                    Frame::Seq(items) => Value::Array(items),
                    Frame::Map(m, _) => Value::Object(m),
                };
                if open.anchor != 0 {
                    anchors.insert(open.anchor, (v.clone(), open.nodes));
                }
                Some((v, open.nodes))
            }
            Event::Scalar(s, style, anchor, _) => {
                total += 1;
                let v = if is_key(&stack) {
                    Value::String(s)
                } else {
                    scalar(s, style)
                };
                if anchor != 0 {
                    anchors.insert(anchor, (v.clone(), 1));
                }
                Some((v, 1))
            }
            Event::Alias(id) => {
                let (v, n) = anchors
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| at("an alias to an unknown anchor".into()))?;
                total += n;
                if total > MAX_NODES {
                    return Err(at(format!(
                        "more than {MAX_NODES} nodes with aliases expanded (refused)"
                    )));
                }
                Some((v, n))
            }
            Event::Nothing | Event::StreamStart => None,
        };
        if total > MAX_NODES {
            return Err(at(format!("more than {MAX_NODES} nodes (refused)")));
        }
        let Some((v, n)) = node else { continue };
        match stack.last_mut() {
            None => done = Some(v),
            Some(open) => {
                open.nodes += n;
                match &mut open.frame {
                    Frame::Seq(items) => items.push(v),
                    Frame::Map(_, key @ None) => match v {
                        Value::String(k) => *key = Some(k),
                        _ => return Err(at("a mapping key that is not a scalar".into())),
                    },
                    Frame::Map(m, key) => {
                        let k = key.take().expect("matched Some");
                        if m.contains_key(&k) {
                            return Err(at(format!("mapping key {k:?} repeated")));
                        }
                        m.insert(k, v);
                    }
                }
            }
        }
    }
    if let Some(v) = done {
        docs.push(v);
    }
    Ok(docs
        .into_iter()
        .filter(|d| !d.is_null())
        .take(if all { usize::MAX } else { 1 })
        .collect())
}

/// A collection may not be a mapping key.
fn expect_value(stack: &[Open]) -> Result<(), String> {
    if is_key(stack) {
        return Err("a mapping key that is not a scalar (not supported)".into());
    }
    Ok(())
}

fn is_key(stack: &[Open]) -> bool {
    matches!(
        stack.last(),
        Some(Open {
            frame: Frame::Map(_, None),
            ..
        })
    )
}

fn scalar(s: String, style: TScalarStyle) -> Value {
    if style != TScalarStyle::Plain {
        return Value::String(s);
    }
    match s.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => Value::Null,
        "true" | "True" | "TRUE" => Value::Bool(true),
        "false" | "False" | "FALSE" => Value::Bool(false),
        _ => Value::String(s),
    }
}

/// yaml-rust2's lines count from 1.
fn line_of(m: &Marker) -> usize {
    m.line().max(1)
}

/// The parser's message, and what it most likely means where its words point elsewhere: a tab
/// in indentation (kubectl refuses it too, saying so).
fn scan_error(text: &str, e: &yaml_rust2::ScanError) -> Error {
    let line = line_of(e.marker());
    let tab_indented = text
        .split(['\n', '\r'])
        .enumerate()
        .take(line + 1)
        .find(|(_, l)| {
            let lead = &l[..l.len() - l.trim_start_matches([' ', '\t']).len()];
            lead.contains('\t') && !l.trim().is_empty()
        });
    if let Some((i, _)) = tab_indented {
        return Error {
            line: i + 1,
            msg: "a tab in indentation: YAML indents with spaces only".into(),
        };
    }
    if e.info() == "recursion limit exceeded" {
        // yaml-rust2's own bound on flow nesting (`[[[…`), met before ours.
        return Error {
            line,
            msg: "nested too deep (refused)".into(),
        };
    }
    Error {
        line,
        msg: format!("not YAML: {}", e.info()),
    }
}

/// A tab between a key's `:` and its value, which kubectl (go-yaml) reads as a space and
/// yaml-rust2 refuses, made a space: in block context, outside quotes, a `key:` at the start of
/// a line (after its indentation and any `- `). Lines end as they did (LF, CRLF or CR alone).
fn tabs_after_keys(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains(":\t") {
        return text.into();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        let end = rest.find(['\n', '\r']).map_or(rest.len(), |i| i + 1);
        let (line, tail) = rest.split_at(end);
        rest = tail;
        let body = line.trim_start_matches([' ', '-']);
        let lead = line.len() - body.len();
        let key_end = body
            .find(":\t")
            .filter(|&i| !body[..i].contains(['"', '\'', '{', '[', '#', ':']) && i > 0);
        match key_end {
            Some(i) => {
                let after = &body[i + 1..];
                let value = after.trim_start_matches('\t');
                out.push_str(&line[..lead + i + 1]);
                out.push(' ');
                out.push_str(value);
            }
            None => out.push_str(line),
        }
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn block_flow_and_json_forms() {
        let y = "a:\n  b: [1, two, {c: d}]\n  e: {f: g, h: ~}\nl:\n- x\n- y: z\n";
        assert_eq!(
            parse(y).unwrap().unwrap(),
            json!({"a": {"b": ["1", "two", {"c": "d"}], "e": {"f": "g", "h": null}},
                   "l": ["x", {"y": "z"}]})
        );
        let j = r#"{"a": {"b": "c", "t": true}, "n": null}"#;
        assert_eq!(
            parse(j).unwrap().unwrap(),
            json!({"a": {"b": "c", "t": true}, "n": null})
        );
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(parse("# only a comment\n").unwrap(), None);
    }

    #[test]
    fn folded_plain_scalars_and_quotes() {
        let y = "token: abcdef\n  ghijkl\nq: 'it''s'\nd: \"a\\tb\"\nf: >\n  one\n  two\n";
        assert_eq!(
            parse(y).unwrap().unwrap(),
            json!({"token": "abcdef ghijkl", "q": "it's", "d": "a\tb", "f": "one two\n"})
        );
    }

    #[test]
    fn cr_line_endings_and_tab_after_a_key_read_as_kubectl_reads_them() {
        let y = "a: b\rc:\td\r";
        assert_eq!(parse(y).unwrap().unwrap(), json!({"a": "b", "c": "d"}));
        let y = "- a:\t\tb\n  c: 'x:\ty'\n";
        assert_eq!(
            parse(y).unwrap().unwrap(),
            json!([{"a": "b", "c": "x:\ty"}])
        );
        let crlf = "a: b\r\nc: d\r\n";
        assert_eq!(parse(crlf).unwrap().unwrap(), json!({"a": "b", "c": "d"}));
    }

    #[test]
    fn tab_in_indentation_is_named() {
        let e = parse("a:\n  b: c\n\td: e\n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert!(e.msg.contains("tab in indentation"), "{e}");
    }

    #[test]
    fn deep_nesting_is_refused_with_its_line() {
        // 40,000 nested `- ` (80 KB): refused at the level past the bound, no stack overflow.
        let y = format!("a: b\nc:\n{}x\n", "- ".repeat(40_000));
        let e = parse(&y).unwrap_err();
        assert!(e.msg.contains("nested deeper than 64"), "{e}");
        assert_eq!(e.line, 3, "{e}");
        let flow = format!("{}{}", "[".repeat(40_000), "]".repeat(40_000));
        let e = parse(&flow).unwrap_err();
        assert!(e.msg.contains("nested"), "{e}");
        // At the bound: read.
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse(&ok).is_ok());
    }

    #[test]
    fn alias_expansion_is_bounded() {
        let mut y = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            y.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let e = parse(&y).unwrap_err();
        assert!(e.msg.contains("aliases expanded"), "{e}");
        let small = "base: &b {server: s}\ncopy: *b\n";
        assert_eq!(
            parse(small).unwrap().unwrap(),
            json!({"base": {"server": "s"}, "copy": {"server": "s"}})
        );
    }

    #[test]
    fn several_documents() {
        let y = "---\na: 1\n---\n# nothing\n---\nb: 2\n";
        assert_eq!(
            parse_all(y).unwrap(),
            vec![json!({"a": "1"}), json!({"b": "2"})]
        );
        assert_eq!(parse(y).unwrap().unwrap(), json!({"a": "1"}));
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse("a: b\nc: [d\n").unwrap_err();
        assert!(e.line >= 2, "{e}");
        let e = parse("a: b\na: c\n").unwrap_err();
        assert!(e.msg.contains("repeated") && e.line == 2, "{e}");
        let e = parse("? [a]\n: b\n").unwrap_err();
        assert!(e.msg.contains("not a scalar"), "{e}");
    }
}
