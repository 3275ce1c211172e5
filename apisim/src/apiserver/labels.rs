//! `labelSelector` as the apiserver reads it (apimachinery `labels.Parse`): the equality forms
//! `k=v`, `k==v`, `k!=v`, the set forms `k in (a,b)`, `k notin (a,b)`, `k` (exists), `!k`
//! (does not exist), and `k>n`, `k<n`; requirements separated by commas are all required. A
//! selector that does not parse is the apiserver's error text (answered 400 `BadRequest`).
//!
//! No maintained crate parses the string form (kube-core matches a `LabelSelector` object, not
//! the query string), so the grammar is here, token for token as apimachinery's lexer reads it.

use serde_json::Value;

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `=`, `==`, `in`: present, with one of the values.
    In,
    /// `!=`, `notin`: absent, or none of the values.
    NotIn,
    Exists,
    DoesNotExist,
    Gt,
    Lt,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub op: Op,
    pub values: Vec<String>,
}

impl Requirement {
    /// Whether `labels` (an object's `metadata.labels`) meet it; as `Requirement.Matches`.
    pub fn matches(&self, labels: &Value) -> bool {
        let got = labels.get(&self.key).and_then(Value::as_str);
        let has = |v: &str| self.values.iter().any(|x| x == v);
        match self.op {
            Op::In => got.is_some_and(has),
            Op::NotIn => got.is_none_or(|v| !has(v)),
            Op::Exists => got.is_some(),
            Op::DoesNotExist => got.is_none(),
            Op::Gt | Op::Lt => {
                let (Some(got), Some(want)) = (
                    got.and_then(|v| v.parse::<i64>().ok()),
                    self.values.first().and_then(|v| v.parse::<i64>().ok()),
                ) else {
                    return false;
                };
                if self.op == Op::Gt {
                    got > want
                } else {
                    got < want
                }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    End,
    Close,
    Comma,
    Not,
    DoubleEquals,
    Equals,
    Gt,
    Ident(String),
    In,
    Lt,
    NotEquals,
    NotIn,
    Open,
    Error(String),
}

impl Tok {
    /// The literal, as the apiserver's messages quote it.
    fn literal(&self) -> &str {
        match self {
            Tok::End => "",
            Tok::Close => ")",
            Tok::Comma => ",",
            Tok::Not => "!",
            Tok::DoubleEquals => "==",
            Tok::Equals => "=",
            Tok::Gt => ">",
            Tok::Lt => "<",
            Tok::In => "in",
            Tok::NotEquals => "!=",
            Tok::NotIn => "notin",
            Tok::Open => "(",
            Tok::Ident(s) | Tok::Error(s) => s,
        }
    }
    /// In a value position `in` and `notin` are plain words (`k in (in)`).
    fn in_value_place(self) -> Tok {
        match self {
            Tok::In | Tok::NotIn => Tok::Ident(self.literal().to_owned()),
            t => t,
        }
    }
}

fn special(c: u8) -> bool {
    matches!(c, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

fn white(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

fn symbol(s: &[u8]) -> Option<Tok> {
    Some(match s {
        b")" => Tok::Close,
        b"," => Tok::Comma,
        b"!" => Tok::Not,
        b"==" => Tok::DoubleEquals,
        b"=" => Tok::Equals,
        b">" => Tok::Gt,
        b"<" => Tok::Lt,
        b"!=" => Tok::NotEquals,
        b"(" => Tok::Open,
        _ => return None,
    })
}

fn lex(s: &str) -> Vec<Tok> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    loop {
        while i < b.len() && white(b[i]) {
            i += 1;
        }
        if i >= b.len() {
            out.push(Tok::End);
            return out;
        }
        if special(b[i]) {
            // The longest run of symbols that still names a token.
            let start = i;
            let mut last = None;
            while i < b.len() && special(b[i]) {
                match symbol(&b[start..=i]) {
                    Some(t) => {
                        last = Some((t, i + 1));
                        i += 1;
                    }
                    None if last.is_some() => break,
                    None => i += 1,
                }
            }
            match last {
                Some((t, end)) => {
                    i = end;
                    out.push(t);
                }
                None => out.push(Tok::Error(format!(
                    "error expected: keyword found '{}'",
                    String::from_utf8_lossy(&b[start..i])
                ))),
            }
            continue;
        }
        let start = i;
        while i < b.len() && !special(b[i]) && !white(b[i]) {
            i += 1;
        }
        let word = String::from_utf8_lossy(&b[start..i]).into_owned();
        out.push(match word.as_str() {
            "in" => Tok::In,
            "notin" => Tok::NotIn,
            _ => Tok::Ident(word),
        });
    }
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Tok {
        self.toks[self.pos.min(self.toks.len() - 1)]
            .clone()
            .in_value_place()
    }
    fn next_raw(&mut self) -> Tok {
        let t = self.toks[self.pos.min(self.toks.len() - 1)].clone();
        self.pos += 1;
        t
    }
    fn next(&mut self) -> Tok {
        self.next_raw().in_value_place()
    }

    fn selector(&mut self) -> Result<Vec<Requirement>, String> {
        let mut reqs = Vec::new();
        loop {
            match self.peek() {
                Tok::Ident(_) | Tok::Not => {
                    let r = self
                        .requirement()
                        .map_err(|e| format!("unable to parse requirement: {e}"))?;
                    reqs.push(r);
                    match self.next() {
                        Tok::End => return Ok(reqs),
                        Tok::Comma => {
                            let t = self.peek();
                            if !matches!(t, Tok::Ident(_) | Tok::Not) {
                                return Err(format!(
                                    "found '{}', expected: identifier after ','",
                                    t.literal()
                                ));
                            }
                        }
                        t => {
                            return Err(format!(
                                "found '{}', expected: ',' or 'end of string'",
                                t.literal()
                            ))
                        }
                    }
                }
                Tok::End => return Ok(reqs),
                t => {
                    return Err(format!(
                        "found '{}', expected: !, identifier, or 'end of string'",
                        t.literal()
                    ))
                }
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        let mut t = self.next();
        let not = t == Tok::Not;
        if not {
            t = self.next();
        }
        let Tok::Ident(key) = t else {
            return Err(format!("found '{}', expected: identifier", t.literal()));
        };
        if let Some(e) = key_error(&key) {
            return Err(format!("<nil>: Invalid value: {key:?}: {e}"));
        }
        if not || matches!(self.peek(), Tok::End | Tok::Comma) {
            let op = if not { Op::DoesNotExist } else { Op::Exists };
            return Ok(Requirement {
                key,
                op,
                values: Vec::new(),
            });
        }
        let t = self.next_raw();
        let (op, set) = match t {
            Tok::In => (Op::In, true),
            Tok::NotIn => (Op::NotIn, true),
            Tok::Equals | Tok::DoubleEquals => (Op::In, false),
            Tok::NotEquals => (Op::NotIn, false),
            Tok::Gt => (Op::Gt, false),
            Tok::Lt => (Op::Lt, false),
            t => {
                return Err(format!(
                    "found '{}', expected: in, notin, =, ==, !=, gt, lt",
                    t.literal()
                ))
            }
        };
        let mut values = if set { self.values()? } else { self.exact()? };
        values.sort();
        values.dedup();
        let mut errs = Vec::new();
        if matches!(op, Op::Gt | Op::Lt) {
            for (i, v) in values.iter().enumerate() {
                if v.parse::<i64>().is_err() {
                    errs.push(format!("values[{i}]: Invalid value: {v:?}: for 'Gt', 'Lt' operators, the value must be an integer"));
                }
            }
        }
        for (i, v) in values.iter().enumerate() {
            if let Some(e) = value_error(v) {
                errs.push(format!("values[{i}][{key}]: Invalid value: {v:?}: {e}"));
            }
        }
        match errs.len() {
            0 => Ok(Requirement { key, op, values }),
            1 => Err(errs.remove(0)),
            _ => Err(format!("[{}]", errs.join(", "))),
        }
    }

    fn values(&mut self) -> Result<Vec<String>, String> {
        let t = self.next();
        if t != Tok::Open {
            return Err(format!("found '{}' expected: '('", t.literal()));
        }
        let first = self.peek();
        match first {
            Tok::Ident(_) | Tok::Comma => {
                let mut set = Vec::new();
                loop {
                    match self.next() {
                        Tok::Ident(v) => {
                            set.push(v);
                            match self.peek() {
                                Tok::Comma => continue,
                                Tok::Close => break,
                                t => {
                                    return Err(format!(
                                        "found '{}', expected: ',' or ')'",
                                        t.literal()
                                    ))
                                }
                            }
                        }
                        Tok::Comma => {
                            if set.is_empty() {
                                set.push(String::new());
                            }
                            match self.peek() {
                                Tok::Close => {
                                    set.push(String::new());
                                    break;
                                }
                                Tok::Comma => {
                                    self.next();
                                    set.push(String::new());
                                }
                                _ => {}
                            }
                        }
                        t => {
                            return Err(format!(
                                "found '{}', expected: ',', or identifier",
                                t.literal()
                            ))
                        }
                    }
                }
                if self.next() != Tok::Close {
                    return Err(format!("found '{}', expected: ')'", first.literal()));
                }
                Ok(set)
            }
            Tok::Close => {
                self.next();
                Ok(vec![String::new()])
            }
            t => Err(format!(
                "found '{}', expected: ',', ')' or identifier",
                t.literal()
            )),
        }
    }

    fn exact(&mut self) -> Result<Vec<String>, String> {
        if matches!(self.peek(), Tok::End | Tok::Comma) {
            return Ok(vec![String::new()]);
        }
        match self.next() {
            Tok::Ident(v) => Ok(vec![v]),
            t => Err(format!("found '{}', expected: identifier", t.literal())),
        }
    }
}

/// Parses a `labelSelector`; `Err` is the apiserver's message for it.
pub fn parse(s: &str) -> Result<Vec<Requirement>, String> {
    let toks = lex(s);
    let mut reqs = Parser { toks, pos: 0 }.selector()?;
    reqs.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(reqs)
}

const NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`
fn name_ok(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn subdomain_ok(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// `content.IsLabelKey`'s complaints (apimachinery's validation), joined.
fn key_error(k: &str) -> Option<String> {
    let qualified = format!("must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '{NAME_FMT}')");
    let parts: Vec<&str> = k.split('/').collect();
    let mut errs = Vec::new();
    let name = match parts.as_slice() {
        [n] => *n,
        [prefix, n] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_owned());
            } else if !subdomain_ok(prefix) {
                errs.push("prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".to_owned());
            }
            n
        }
        _ => {
            return Some(format!(
                "a valid label key {qualified} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            ))
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_owned());
    } else if name.len() > 63 {
        errs.push("name part must be no more than 63 characters".to_owned());
    }
    if !name_ok(name) {
        errs.push(format!("name part {qualified}"));
    }
    (!errs.is_empty()).then(|| errs.join("; "))
}

/// `validation.IsValidLabelValue`'s complaints, joined.
fn value_error(v: &str) -> Option<String> {
    let mut errs = Vec::new();
    if v.len() > 63 {
        errs.push("must be no more than 63 characters".to_owned());
    }
    if !v.is_empty() && !name_ok(v) {
        errs.push(format!("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '({NAME_FMT})?')"));
    }
    (!errs.is_empty()).then(|| errs.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sel(s: &str) -> Vec<Requirement> {
        parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn matches(s: &str, labels: &Value) -> bool {
        sel(s).iter().all(|r| r.matches(labels))
    }

    #[test]
    fn every_form_matches_as_the_apiserver_matches() {
        let l = json!({"yurt-ota.io/daemonset": "edge-apps.camera", "tier": "edge", "n": "7"});
        let none = json!({});
        for (s, on_l, on_none) in [
            ("", true, true),
            ("yurt-ota.io/daemonset=edge-apps.camera", true, false),
            ("yurt-ota.io/daemonset==edge-apps.camera", true, false),
            ("yurt-ota.io/daemonset!=edge-apps.camera", false, true),
            ("tier!=core", true, true),
            ("tier", true, false),
            ("!tier", false, true),
            ("tier in (core,edge)", true, false),
            ("tier in (core)", false, false),
            ("tier notin (core,edge)", false, true),
            ("tier notin (core)", true, true),
            ("tier=edge,n", true, false),
            ("tier=edge,!n", false, false),
            ("  tier  =  edge , n in ( 7 , 8 ) ", true, false),
            ("n>6", true, false),
            ("n<7", false, false),
            ("tier=", false, false),
            ("tier in ()", false, false),
            ("x in (in,notin)", false, false),
        ] {
            assert_eq!(matches(s, &l), on_l, "{s} on {l}");
            assert_eq!(matches(s, &none), on_none, "{s} on no labels");
        }
        assert!(matches("x in (in)", &json!({"x": "in"})));
        assert!(matches("x=", &json!({"x": ""})));
        assert!(matches("x in (a,,b)", &json!({"x": ""})));
    }

    #[test]
    fn malformed_selectors_get_the_apiservers_words() {
        for (s, want) in [
            (
                "a b",
                "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt",
            ),
            ("a,", "found '', expected: identifier after ','"),
            (",a", "found ',', expected: !, identifier, or 'end of string'"),
            ("a=b c", "found 'c', expected: ',' or 'end of string'"),
            ("a in b", "unable to parse requirement: found 'b' expected: '('"),
            ("a in (b", "unable to parse requirement: found '', expected: ',' or ')'"),
            ("a=(", "unable to parse requirement: found '(', expected: identifier"),
            ("!", "unable to parse requirement: found '', expected: identifier"),
            ("a=>b", "unable to parse requirement: found '>', expected: identifier"),
            ("a>b", "unable to parse requirement: values[0]: Invalid value: \"b\": for 'Gt', 'Lt' operators, the value must be an integer"),
            ("a=b$", "unable to parse requirement: values[0][a]: Invalid value: \"b$\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"),
            ("-a=b", "unable to parse requirement: <nil>: Invalid value: \"-a\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"),
            ("Example.com/a=b", "unable to parse requirement: <nil>: Invalid value: \"Example.com/a\": prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"),
        ] {
            assert_eq!(parse(s).unwrap_err(), want, "{s}");
        }
        assert!(parse("a/b/c")
            .unwrap_err()
            .contains("Invalid value: \"a/b/c\": a valid label key must consist of"));
        assert!(parse("!a=b")
            .unwrap_err()
            .contains("found '=', expected: ',' or 'end of string'"));
        assert!(parse(&format!("a={}", "v".repeat(64)))
            .unwrap_err()
            .contains("must be no more than 63 characters"));
    }
}
