//! The YAML subset kubeconfigs are written in, read into a `serde_json::Value`.
//!
//! Supported: block mappings and sequences (`- ` items holding scalars, mappings or sequences,
//! and a sequence at its key's indentation, as kubectl writes them), plain, single- and
//! double-quoted scalars, literal (`|`) and folded (`>`) block scalars, comments, a `---` start
//! (a second document is ignored), and flow collections written as JSON (`preferences: {}`,
//! or a whole kubeconfig in its JSON form). Plain `null`, `~` and `true`/`false` are typed;
//! every other plain scalar is a string (a kubeconfig has no numbers the agent reads).
//!
//! Anything else (anchors, aliases, tags, complex keys, directives, multi-line plain or quoted
//! scalars, flow collections that are not JSON) is an error naming the line, never a guess.

use serde_json::{Map, Value};

/// A syntax error or an unsupported construct, at a line (1-based).
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
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut p = Parser {
        raw: text.lines().collect(),
        lines: Vec::new(),
        pos: 0,
    };
    p.lines = p.significant()?;
    let Some(first) = p.lines.first() else {
        return Ok(None);
    };
    if first.text.starts_with(['{', '[']) {
        // The JSON form (JSON is YAML's flow style), from its first line on.
        let skip = first.no - 1;
        let json = p.raw[skip..].join("\n");
        return serde_json::from_str(&json).map(Some).map_err(|e| Error {
            line: e.line() + skip,
            msg: format!("not YAML or JSON: {e}"),
        });
    }
    let first = p.lines[0].indent;
    let v = p.node(first)?;
    if let Some(l) = p.lines.get(p.pos) {
        return Err(l.err("unexpected content (wrong indentation?)"));
    }
    Ok(Some(v))
}

/// A line with content: its number, indentation and text (without the indentation).
#[derive(Debug, Clone)]
struct Line<'a> {
    no: usize,
    indent: usize,
    text: &'a str,
}

impl Line<'_> {
    fn err(&self, msg: impl Into<String>) -> Error {
        Error {
            line: self.no,
            msg: msg.into(),
        }
    }
}

struct Parser<'a> {
    raw: Vec<&'a str>,
    lines: Vec<Line<'a>>,
    pos: usize,
}

fn unsupported(what: &str) -> String {
    format!("{what} not supported (yurt-ota reads the YAML subset kubeconfigs use)")
}

impl<'a> Parser<'a> {
    /// The lines of the first document that hold content: no blank or comment-only lines, no
    /// `---` start; stops at a second `---` or `...`.
    fn significant(&self) -> Result<Vec<Line<'a>>, Error> {
        let mut out: Vec<Line<'a>> = Vec::new();
        let mut started = false;
        for (i, raw) in self.raw.iter().enumerate() {
            let no = i + 1;
            let body = raw.trim_start_matches(' ');
            let indent = raw.len() - body.len();
            let line = Line {
                no,
                indent,
                text: body.trim_end_matches(WS),
            };
            let bare = line.text.trim_start_matches(WS);
            if bare.is_empty() || bare.starts_with('#') {
                continue;
            }
            if body.starts_with('\t') {
                return Err(line.err("a tab in indentation is not YAML"));
            }
            if indent == 0 && (is_marker(line.text, "---") || is_marker(line.text, "...")) {
                if started || !out.is_empty() || line.text.starts_with("...") {
                    break;
                }
                started = true;
                if line.text.len() > 3 {
                    return Err(line.err(unsupported("content after `---` is")));
                }
                continue;
            }
            if indent == 0 && line.text.starts_with('%') {
                return Err(line.err(unsupported("directives (%) are")));
            }
            out.push(line);
        }
        Ok(out)
    }

    fn peek(&self) -> Option<&Line<'a>> {
        self.lines.get(self.pos)
    }

    /// The node whose first line is the current one, at `indent`.
    fn node(&mut self, indent: usize) -> Result<Value, Error> {
        let line = self.lines[self.pos].clone();
        if is_item(line.text) {
            self.seq(indent)
        } else if key_of(&line)?.is_some() {
            self.map(indent)
        } else {
            self.pos += 1;
            let v = self.value(&line, line.text, indent)?;
            Ok(v)
        }
    }

    fn seq(&mut self, indent: usize) -> Result<Value, Error> {
        let mut items = Vec::new();
        while let Some(line) = self.peek().cloned() {
            if line.indent < indent {
                break;
            }
            if line.indent > indent {
                return Err(line.err("unexpected indentation in a sequence"));
            }
            if !is_item(line.text) {
                break;
            }
            let rest = line.text[1..].trim_start_matches(' ');
            if rest.is_empty() || rest.starts_with('#') {
                self.pos += 1;
                items.push(self.nested(indent)?);
                continue;
            }
            // The item's content becomes a line of its own, indented where it starts, so that
            // `- name: x` followed by `  user: ...` reads as one mapping.
            let at = indent + (line.text.len() - rest.len());
            self.lines[self.pos] = Line {
                no: line.no,
                indent: at,
                text: rest,
            };
            items.push(self.node(at)?);
        }
        Ok(Value::Array(items))
    }

    fn map(&mut self, indent: usize) -> Result<Value, Error> {
        let mut map = Map::new();
        while let Some(line) = self.peek().cloned() {
            if line.indent < indent {
                break;
            }
            if line.indent > indent {
                return Err(line.err("unexpected indentation in a mapping"));
            }
            if is_item(line.text) {
                return Err(line.err("a sequence item where a mapping key was expected"));
            }
            let (key, rest) = key_of(&line)?
                .ok_or_else(|| line.err("expected `key: value` (a mapping entry)"))?;
            if map.contains_key(&key) {
                return Err(line.err(format!("duplicate key {key:?}")));
            }
            self.pos += 1;
            let v = if rest.is_empty() || rest.starts_with('#') {
                match self.peek() {
                    // A sequence may sit at its key's indentation.
                    Some(n) if n.indent == indent && is_item(n.text) => self.seq(indent)?,
                    _ => self.nested(indent)?,
                }
            } else {
                self.value(&line, &rest, indent)?
            };
            map.insert(key, v);
        }
        Ok(Value::Object(map))
    }

    /// The node on the lines after `line` if they are indented deeper than `indent`, else null.
    fn nested(&mut self, indent: usize) -> Result<Value, Error> {
        match self.peek() {
            Some(n) if n.indent > indent => {
                let at = n.indent;
                self.node(at)
            }
            _ => Ok(Value::Null),
        }
    }

    /// A value written on the line itself (after `key: ` or alone): a scalar, a JSON flow
    /// collection, or a block scalar header whose body follows.
    fn value(&mut self, line: &Line<'a>, text: &str, indent: usize) -> Result<Value, Error> {
        match text.as_bytes()[0] {
            b'{' | b'[' => serde_json::from_str(text)
                .or_else(|_| serde_json::from_str(plain(text)))
                .map_err(|_| {
                    line.err(unsupported(
                        "flow collections other than JSON on one line are",
                    ))
                }),
            b'|' | b'>' => self.block(line, text, indent),
            b'&' => Err(line.err(unsupported("anchors (&) are"))),
            b'*' => Err(line.err(unsupported("aliases (*) are"))),
            b'!' => Err(line.err(unsupported("tags (!) are"))),
            b'?' => Err(line.err(unsupported("complex keys (?) are"))),
            b'@' | b'`' => Err(line.err("a plain scalar cannot start with @ or `")),
            b'"' | b'\'' => {
                let (s, rest) = quoted(text).map_err(|m| line.err(m))?;
                let rest = rest.trim_start_matches(WS);
                if !rest.is_empty() && !rest.starts_with('#') {
                    return Err(line.err("unexpected text after a quoted scalar"));
                }
                Ok(Value::String(s))
            }
            _ => {
                let s = plain(text);
                if s.contains(": ") || s.ends_with(':') {
                    return Err(line.err("a mapping value is not allowed here"));
                }
                if is_item(s) {
                    return Err(line.err("a sequence item is not allowed here"));
                }
                if self.peek().is_some_and(|n| n.indent > indent) {
                    let n = self.peek().unwrap();
                    return Err(n.err(unsupported("multi-line plain scalars are")));
                }
                Ok(match s {
                    "~" | "null" | "Null" | "NULL" => Value::Null,
                    "true" | "True" | "TRUE" => Value::Bool(true),
                    "false" | "False" | "FALSE" => Value::Bool(false),
                    _ => Value::String(s.to_owned()),
                })
            }
        }
    }

    /// `|` or `>` with an optional chomping indicator (`-`, `+`); the body is the raw lines
    /// indented deeper than `indent`.
    fn block(&mut self, line: &Line<'a>, header: &str, indent: usize) -> Result<Value, Error> {
        let h = plain(header);
        let (folded, chomp) = match h {
            "|" => (false, ' '),
            "|-" => (false, '-'),
            "|+" => (false, '+'),
            ">" => (true, ' '),
            ">-" => (true, '-'),
            ">+" => (true, '+'),
            _ => {
                return Err(line.err(unsupported(
                    "block scalar indicators other than | > |- >- |+ >+ are",
                )))
            }
        };
        // The body: raw lines after the header until one with content at `indent` or less.
        let mut body: Vec<&str> = Vec::new();
        let mut at = None;
        let mut i = line.no; // raw index of the next line
        while i < self.raw.len() {
            let r = self.raw[i];
            let content = r.trim_start_matches(' ');
            let ind = r.len() - content.len();
            if !content.trim_matches(WS).is_empty() {
                if ind <= indent {
                    break;
                }
                let a = *at.get_or_insert(ind);
                if ind < a {
                    return Err(Error {
                        line: i + 1,
                        msg: "less indented line inside a block scalar".into(),
                    });
                }
                if folded && ind > a {
                    return Err(Error {
                        line: i + 1,
                        msg: unsupported("more indented lines in a folded (>) scalar are"),
                    });
                }
            }
            body.push(r);
            i += 1;
        }
        // Skip the significant lines the body covered.
        while self.peek().is_some_and(|n| n.no <= i) {
            self.pos += 1;
        }
        let a = at.unwrap_or(0);
        let lines: Vec<&str> = body.iter().map(|r| r.get(a..).unwrap_or("")).collect();
        let mut s = String::new();
        for (k, l) in lines.iter().enumerate() {
            if k > 0 {
                let prev_empty = lines[k - 1].is_empty();
                s.push(if folded && !prev_empty && !l.is_empty() {
                    ' '
                } else {
                    '\n'
                });
                if folded && prev_empty && !l.is_empty() && s.ends_with("\n\n") {
                    s.pop();
                }
            }
            s.push_str(l.trim_end_matches('\r'));
        }
        let content = s.trim_end_matches('\n').len();
        match chomp {
            '-' => s.truncate(content),
            '+' => s.push('\n'),
            _ => {
                s.truncate(content);
                if content > 0 {
                    s.push('\n');
                }
            }
        }
        Ok(Value::String(s))
    }
}

/// YAML's white space (not Unicode's: a no-break space is content).
const WS: [char; 3] = [' ', '\t', '\r'];

fn is_marker(text: &str, m: &str) -> bool {
    text.starts_with(m) && text[3..].chars().next().is_none_or(|c| c == ' ')
}

fn is_item(text: &str) -> bool {
    text == "-" || text.starts_with("- ")
}

/// A plain scalar: up to a comment, trimmed.
fn plain(text: &str) -> &str {
    uncommented(text).trim_start_matches(WS)
}

/// `text` up to a comment, trimmed at the end only (its offsets are `text`'s).
fn uncommented(text: &str) -> &str {
    let end = text
        .char_indices()
        .find(|&(i, c)| c == '#' && i > 0 && text[..i].ends_with([' ', '\t']))
        .map_or(text.len(), |(i, _)| i);
    text[..end].trim_end_matches(WS)
}

/// `key: rest` (or `key:` at the end): the key and what follows the colon, trimmed. None if the
/// line is not a mapping entry.
fn key_of(line: &Line) -> Result<Option<(String, String)>, Error> {
    let t = line.text;
    let (key, after) = match t.as_bytes()[0] {
        b'"' | b'\'' => {
            let (k, rest) = quoted(t).map_err(|m| line.err(m))?;
            let rest = rest.trim_start_matches(' ');
            match rest.strip_prefix(':') {
                Some(after) if after.is_empty() || after.starts_with(' ') => (k, after),
                _ => return Ok(None),
            }
        }
        b'?' if t == "?" || t.starts_with("? ") => {
            return Err(line.err(unsupported("complex keys (?) are")))
        }
        b'&' | b'*' | b'!' | b'{' | b'[' | b'|' | b'>' => return Ok(None),
        _ => {
            let scan = uncommented(t);
            let colon = scan
                .char_indices()
                .find(|&(i, c)| c == ':' && scan[i + 1..].chars().next().is_none_or(|n| n == ' '));
            match colon {
                Some((i, _)) => (t[..i].trim_end_matches(WS).to_owned(), &t[i + 1..]),
                None => return Ok(None),
            }
        }
    };
    Ok(Some((key, after.trim_matches(WS).to_owned())))
}

/// A quoted scalar at the start of `t` and what follows it.
fn quoted(t: &str) -> Result<(String, &str), String> {
    let q = t.as_bytes()[0];
    let mut out = String::new();
    let mut chars = t[1..].char_indices();
    while let Some((i, c)) = chars.next() {
        if q == b'\'' && c == '\'' {
            if t[i + 2..].starts_with('\'') {
                chars.next();
                out.push('\'');
                continue;
            }
            return Ok((out, &t[i + 2..]));
        }
        if q == b'"' && c == '"' {
            return Ok((out, &t[i + 2..]));
        }
        if q == b'"' && c == '\\' {
            let (_, e) = chars.next().ok_or("a backslash at the end of the line")?;
            let hex = |n: usize, chars: &mut std::str::CharIndices| -> Result<char, String> {
                let mut v = 0u32;
                for _ in 0..n {
                    let d = chars.next().and_then(|(_, h)| h.to_digit(16));
                    v = v * 16 + d.ok_or("bad hex escape in a double-quoted scalar")?;
                }
                char::from_u32(v).ok_or_else(|| "escape is not a character".to_string())
            };
            out.push(match e {
                '0' => '\0',
                'a' => '\x07',
                'b' => '\x08',
                't' | '\t' => '\t',
                'n' => '\n',
                'v' => '\x0b',
                'f' => '\x0c',
                'r' => '\r',
                'e' => '\x1b',
                ' ' => ' ',
                '"' => '"',
                '/' => '/',
                '\\' => '\\',
                'N' => '\u{85}',
                '_' => '\u{a0}',
                'L' => '\u{2028}',
                'P' => '\u{2029}',
                'x' => hex(2, &mut chars)?,
                'u' => hex(4, &mut chars)?,
                'U' => hex(8, &mut chars)?,
                other => {
                    return Err(format!(
                        "unknown escape \\{other} in a double-quoted scalar"
                    ))
                }
            });
            continue;
        }
        out.push(c);
    }
    Err(format!(
        "unterminated quoted scalar ({})",
        unsupported("multi-line quoted scalars are")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use yaml_rust2::{Yaml, YamlLoader};

    /// yaml-rust2's reading, as a Value (scalars that are not null or bool as strings).
    fn reference(text: &str) -> Value {
        fn conv(y: &Yaml) -> Value {
            match y {
                Yaml::Null => Value::Null,
                Yaml::Boolean(b) => Value::Bool(*b),
                Yaml::String(s) | Yaml::Real(s) => Value::String(s.clone()),
                Yaml::Integer(i) => Value::String(i.to_string()),
                Yaml::Array(a) => Value::Array(a.iter().map(conv).collect()),
                Yaml::Hash(h) => Value::Object(
                    h.iter()
                        .map(|(k, v)| (k.as_str().unwrap().to_owned(), conv(v)))
                        .collect(),
                ),
                other => panic!("{other:?}"),
            }
        }
        conv(&YamlLoader::load_from_str(text).unwrap()[0])
    }

    fn same(text: &str) {
        assert_eq!(parse(text).unwrap().unwrap(), reference(text), "{text}");
    }

    #[test]
    fn kubectl_shapes_read_as_yaml_rust2_reads_them() {
        same(
            "# written by kubectl\n---\napiVersion: v1\nclusters:\n- cluster:\n    \
             certificate-authority-data: LS0t\n    server: https://[fd00::1]:6443\n  \
             name: edge\ncontexts:\n- context:\n    cluster: edge\n    user: \"system:node:a\"\n  \
             name: 'it''s'\ncurrent-context: 'it''s'\npreferences: {}\nusers:\n- name: \
             system:node:a   # a comment\n  user:\n    token: abc#def\n    tokenFile: \
             \"/var/run/t\\u00e9\\n\"\n\n    exec: null\n    insecure: false\n",
        );
        same(
            "clusters:\n  - name: a\n    cluster:\n      server: x\n  - name: b\nempty:\nlast: ~\n",
        );
        same("a:\n  - - x\n    - y\n  - z: 1\n    w: [\"1\", \"2\"]\n  -\n    v: q\nb: |\n  line one\n   two\n\n  three\nc: >-\n  folded\n  words\n\n  para\nd: |-\n  x\n");
        same("\"quoted key\": v\n'k2' : w\nurl: http://a:1/b?c=d\n");
        same("top:\n    deep:\n        deeper: x\n    back: y\n...\nignored: z\n");
    }

    #[test]
    fn json_form_and_flow_values() {
        let v = parse("# comment\n{\"a\": [1, {\"b\": null}],\n \"c\": \"d\"}\n")
            .unwrap()
            .unwrap();
        assert_eq!(v, json!({"a": [1, {"b": null}], "c": "d"}));
        let v = parse("preferences: {}  # none\nlist: [\"x\"]\n")
            .unwrap()
            .unwrap();
        assert_eq!(v, json!({"preferences": {}, "list": ["x"]}));
        assert_eq!(parse("# only a comment\n\n").unwrap(), None);
        assert_eq!(parse("---\n").unwrap(), None);
        let e = parse("a: 1\nb: {x: 1}\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert!(e.msg.contains("not JSON") || e.msg.contains("flow"), "{e}");
        let e = parse("\n{\"a\":\n  1,,}").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
    }

    #[test]
    fn no_break_space_is_content_not_white_space() {
        // Found by fuzz/fuzz_targets/kubeconfig.rs: a panic slicing inside U+00A0.
        assert!(parse("\u{a0}-: # v\nlusrs:\nSlU").is_err());
        let v = parse("a: \u{a0}b\u{a0}\n").unwrap().unwrap();
        assert_eq!(v, serde_json::json!({"a": "\u{a0}b\u{a0}"}));
    }

    #[test]
    fn unsupported_and_invalid_name_the_line() {
        let cases: &[(&str, usize, &str)] = &[
            ("a: &x 1\nb: *x\n", 1, "anchors"),
            ("a: 1\nb: *x\n", 2, "aliases"),
            ("a: 1\nb: !!str 2\n", 2, "tags"),
            ("? a\n: b\n", 1, "complex keys"),
            ("%YAML 1.2\n---\na: 1\n", 1, "directives"),
            ("a:\n\tb: 1\n", 2, "tab"),
            ("a: one\n  two\n", 2, "multi-line plain"),
            ("a: \"open\n  close\"\n", 1, "unterminated"),
            ("a: 1\na: 2\n", 2, "duplicate key \"a\""),
            ("a:\n  b: 1\n c: 2\n", 3, "indentation"),
            ("a: 1\n  b: 2\n", 2, "multi-line plain"),
            ("a:\n  b: 1\n    c: 2\n", 3, "multi-line plain"),
            ("a: b: c\n", 1, "mapping value"),
            ("a: 1\n- b\n", 2, "sequence item"),
            ("- a\nb: 1\n", 2, "unexpected"),
            ("a: \"x\" y\n", 1, "after a quoted"),
            ("a: \"\\q\"\n", 1, "unknown escape"),
            ("a: |2\n   x\n", 1, "block scalar"),
            ("a: >\n  x\n    y\n", 3, "more indented"),
            ("a: @x\n", 1, "@"),
            ("just text\nmore: x\n", 2, "unexpected"),
        ];
        for (text, line, what) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.line, *line, "{text:?}: {e}");
            assert!(e.msg.contains(what), "{text:?}: {e}");
        }
    }
}
