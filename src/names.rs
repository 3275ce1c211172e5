//! Kubernetes name rules (DNS-1123) for the names that arrive in URLs, the plain names of gates
//! and holds, and the escaping of outside text for logs and terminals.
//!
//! Ours for needs no library meets. The name rules are apimachinery's `IsDNS1123Label` and
//! `IsDNS1123Subdomain`, for which we found no crate outside Kubernetes client libraries (which
//! SPEC 9 excludes). `escape_controls` leaves quotes and backslashes as written (a hold reason
//! `C:\tmp` reads `C:\tmp`); std's `str::escape_debug` would escape the same controls,
//! separators and bidi overrides but also `"` and `\` (checked on rustc 1.95).

use std::borrow::Cow;
use std::fmt::Write;

/// A gate's or a hold's name: it appears in logs, metrics labels, URLs and `blocked_by`, so 1 to
/// 63 of letters, digits, `-`, `_` and `.`, not `.` or `..` (path segments that clients and
/// proxies resolve away: `/v1/holds/..` is not the hold it looks like).
pub fn check_plain(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    if !ok {
        return Err(format!(
            "{s:?}: 1 to 63 of letters, digits, '-', '_' and '.'"
        ));
    }
    if s == "." || s == ".." {
        return Err(format!(
            "{s:?} is a path segment, not a name: use at least one letter, digit, '-' or '_'"
        ));
    }
    Ok(())
}

/// Whether `c` may rewrite what a person sees: C0 and C1 controls (newlines, `ESC` sequences
/// that move the cursor, clear or retitle a terminal), line and paragraph separators, and the
/// bidirectional overrides that reorder text.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Outside text (hold reasons, upstream answers, pod fields) made safe for one log line or one
/// table cell: every character of `is_unsafe` is written as an escape (`\n`, `\r`, `\t`,
/// `\u{1b}`), so a record stays one line and a terminal only displays it. Borrowed when clean.
pub fn escape_controls(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_unsafe(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A DNS-1123 label: a namespace. At most 63 of `[a-z0-9-]`, alphanumeric at both ends.
pub fn check_label(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 63 {
        return Err(format!("{s:?} must be 1 to 63 characters"));
    }
    let b = s.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !b.iter().all(|&c| alnum(c) || c == b'-') {
        return Err(format!(
            "{s:?} may only hold lowercase letters, digits and '-'"
        ));
    }
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return Err(format!("{s:?} must start and end with a letter or digit"));
    }
    Ok(())
}

/// A DNS-1123 subdomain: a pod name. At most 253 characters of dot-separated labels.
pub fn check_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 253 {
        return Err(format!("{s:?} must be 1 to 253 characters"));
    }
    s.split('.').try_for_each(|part| {
        check_label(part).map_err(|_| {
            format!("{s:?} is not a DNS-1123 subdomain (lowercase letters, digits, '-' and '.')")
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names() {
        for ok in ["vehicle-stopped", "night_window", "a.b", "X1"] {
            assert!(check_plain(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "a/b", "bad%20name", &"a".repeat(64)] {
            assert!(check_plain(bad).is_err(), "{bad:?}");
        }
        // Regression (issue 9, item 10): `.` and `..` were accepted as hold names.
        for bad in [".", ".."] {
            assert!(
                check_plain(bad).unwrap_err().contains("path segment"),
                "{bad:?}"
            );
        }
        check_plain("...").unwrap();
        check_plain(".a").unwrap();
    }

    /// Regression (issue 9, item 9): a hold reason with `\r\n` forged a log line, and escape
    /// sequences retitled and cleared the terminal.
    #[test]
    fn control_characters_are_escaped_and_clean_text_borrowed() {
        assert!(matches!(
            escape_controls("navigation active, é ✓"),
            Cow::Borrowed(_)
        ));
        assert_eq!(
            escape_controls("x\r\nINFO: hold released"),
            "x\\r\\nINFO: hold released"
        );
        assert_eq!(
            escape_controls("\u{1b}]0;pwned\u{7}\u{1b}[2J\u{9b}\u{202e}"),
            "\\u{1b}]0;pwned\\u{7}\\u{1b}[2J\\u{9b}\\u{202e}"
        );
        assert_eq!(escape_controls("a\tb\u{7f}"), "a\\tb\\u{7f}");
    }

    #[test]
    fn labels_and_subdomains() {
        for ok in ["kube-system", "a", "0", "edge-apps-2"] {
            check_label(ok).unwrap();
            check_subdomain(ok).unwrap();
        }
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a_b",
            "a.b",
            "a/b",
            "%2e",
            &"a".repeat(64),
        ] {
            assert!(check_label(bad).is_err(), "{bad:?}");
        }
        check_subdomain("etcd-v1.36-control-plane").unwrap();
        check_subdomain(&format!("{}.{}", "a".repeat(63), "b".repeat(63))).unwrap();
        for bad in [
            "",
            ".a",
            "a..b",
            "a.",
            "UPPER",
            "a b",
            "..",
            &"a.".repeat(127),
        ] {
            assert!(check_subdomain(bad).is_err(), "{bad:?}");
        }
    }
}
