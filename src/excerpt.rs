//! The first part of a body or a value, fit for a log line or a status field: at most 200
//! bytes, control characters dropped. Below every module that quotes what it was given.

/// Keeps the first part of an error body for a log line or status field.
pub fn excerpt(body: &[u8]) -> String {
    const MAX: usize = 200;
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX)]);
    let mut s: String = text.trim().chars().filter(|c| !c.is_control()).collect();
    if body.len() > MAX {
        s.push('…');
    }
    s
}
