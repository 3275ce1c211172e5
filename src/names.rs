//! Kubernetes name rules (DNS-1123) for the names that arrive in URLs, and the plain names of
//! gates and holds.

/// A gate's or a hold's name: it appears in logs, metrics labels, URLs and `blocked_by`, so 1 to
/// 63 of letters, digits, `-`, `_` and `.`.
pub fn check_plain(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?}: 1 to 63 of letters, digits, '-', '_' and '.'"
        ))
    }
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
