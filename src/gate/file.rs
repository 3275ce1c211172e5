//! A signal file, such as `/run/vehicle/stopped` written by the vehicle's CAN service.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{Bell, Notice, Reading, Signal};
use crate::config::FileOpen;

/// Contents above this are not read: a signal file holds a word, not a document.
const MAX_CONTENT: u64 = 4096;

pub struct FileGate {
    path: PathBuf,
    open_when: FileOpen,
    max_age: Option<Duration>,
    /// With `max_age`: when the file, as last read, turns stale. Also set to the read's
    /// moment after a closure seen only by the watch, for an immediate second read.
    stale_at: Option<SystemTime>,
    /// `watch::transitions` of the file at the last read.
    seen: (u64, u64),
}

impl FileGate {
    pub fn new(path: PathBuf, open_when: FileOpen, max_age: Option<Duration>) -> FileGate {
        FileGate {
            seen: super::watch::transitions(&path),
            path,
            open_when,
            max_age,
            stale_at: None,
        }
    }
}

impl Signal for FileGate {
    fn notice(&mut self, _: &Arc<Bell>, _: Duration) -> Notice {
        Notice::File(self.path.clone())
    }

    /// The moment the file turns stale, if it is fresh now: a timer, not an event.
    fn next_change(&self, now: SystemTime) -> Option<Duration> {
        Some(self.stale_at?.duration_since(now).unwrap_or(Duration::ZERO))
    }

    /// The file as it is now; but if the watch saw it go away (or, for `absent`, appear) since
    /// the last read, the gate was closed for a moment in between: that reads closed once, so
    /// the stability window restarts rather than spanning the closure, and it is read again at
    /// once. This holds for the fresh re-read at the moment of action too.
    fn read(&mut self, now: SystemTime, _fresh: bool) -> Result<Reading, String> {
        let seen = super::watch::transitions(&self.path);
        let (left, appeared) = (seen.0 != self.seen.0, seen.1 != self.seen.1);
        self.seen = seen;
        let r = self.read_now(now)?;
        let interrupted = match self.open_when {
            FileOpen::Absent => appeared,
            FileOpen::Exists | FileOpen::Equals(_) => left,
        };
        if r.open && interrupted {
            self.stale_at = Some(now);
            return Ok(Reading {
                open: false,
                detail: format!(
                    "{} changed and changed back since the last read: closed for a moment",
                    self.path.display()
                ),
            });
        }
        Ok(r)
    }
}

impl FileGate {
    fn read_now(&mut self, now: SystemTime) -> Result<Reading, String> {
        self.stale_at = None;
        let p = self.path.display();
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            // Permission denied, a broken mount: unreadable, so closed (fail closed).
            Err(e) => return Err(format!("{p}: {e}")),
        };
        let Some(meta) = meta else {
            return Ok(Reading {
                open: self.open_when == FileOpen::Absent,
                detail: format!("{p} absent"),
            });
        };
        // A stale signal reads closed whatever it says: its writer may have died.
        if let Some(max) = self.max_age {
            let modified = meta.modified().map_err(|e| format!("{p}: mtime: {e}"))?;
            let age = now.duration_since(modified).unwrap_or_default();
            // Just past the limit, so that the read at that moment sees it stale.
            // Checked: an mtime set far in the future (`touch -d`) must not overflow into a
            // panic; such a file has no stale moment to wake for.
            self.stale_at = (age <= max)
                .then(|| modified.checked_add(max + Duration::from_millis(1)))
                .flatten();
            if age > max {
                return Err(format!(
                    "{p} is stale: last written {}s ago, max_age is {}",
                    age.as_secs(),
                    crate::config::HumanDuration(max)
                ));
            }
        }
        match &self.open_when {
            FileOpen::Exists => Ok(Reading {
                open: true,
                detail: format!("{p} exists"),
            }),
            FileOpen::Absent => Ok(Reading {
                open: false,
                detail: format!("{p} exists"),
            }),
            FileOpen::Equals(want) => {
                let mut text = String::new();
                std::fs::File::open(&self.path)
                    .and_then(|f| f.take(MAX_CONTENT).read_to_string(&mut text))
                    .map_err(|e| format!("{p}: {e}"))?;
                let have = text.trim();
                Ok(Reading {
                    open: have == want,
                    detail: format!("{p} = {:?}", crate::excerpt::excerpt(have.as_bytes())),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (seen under qemu): a file removed and re-created between two reads of the
    /// gate read open both times, so the stability window spanned the closure.
    #[test]
    fn a_closure_seen_only_by_the_watch_reads_closed_once_then_open() {
        use rustix::fs::inotify::ReadFlags;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stopped");
        std::fs::write(&path, "").unwrap();
        let now = SystemTime::now();
        let mut exists = FileGate::new(path.clone(), FileOpen::Exists, None);
        let mut absent = FileGate::new(path.clone(), FileOpen::Absent, None);
        assert!(exists.read(now, false).unwrap().open);
        assert_eq!(exists.next_change(now), None);
        // Gone and back before the next read: only the watch saw it.
        super::super::watch::note_transition(&path, ReadFlags::DELETE);
        super::super::watch::note_transition(&path, ReadFlags::CREATE);
        let r = exists.read(now, true).unwrap();
        assert!(!r.open, "{}", r.detail);
        assert_eq!(
            exists.next_change(now),
            Some(Duration::ZERO),
            "read again at once"
        );
        assert!(exists.read(now, false).unwrap().open);
        assert_eq!(exists.next_change(now), None);
        // `absent`: the file is there now, closed whatever the transitions.
        assert!(!absent.read(now, false).unwrap().open);
        std::fs::remove_file(&path).unwrap();
        super::super::watch::note_transition(&path, ReadFlags::DELETE);
        assert!(
            absent.read(now, false).unwrap().open,
            "it left: open, no interruption"
        );
        super::super::watch::note_transition(&path, ReadFlags::CREATE);
        super::super::watch::note_transition(&path, ReadFlags::DELETE);
        assert!(
            !absent.read(now, false).unwrap().open,
            "it appeared for a moment"
        );
        assert!(absent.read(now, false).unwrap().open);
    }

    #[test]
    fn exists_absent_equals_and_stale() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stopped");
        let now = SystemTime::now();
        let mut exists = FileGate::new(path.clone(), FileOpen::Exists, None);
        let mut absent = FileGate::new(path.clone(), FileOpen::Absent, None);
        let mut equals = FileGate::new(path.clone(), FileOpen::Equals("1".into()), None);
        let mut fresh = FileGate::new(
            path.clone(),
            FileOpen::Exists,
            Some(Duration::from_secs(10)),
        );
        assert!(!exists.read(now, false).unwrap().open);
        assert!(absent.read(now, false).unwrap().open);
        assert!(!equals.read(now, false).unwrap().open);

        std::fs::write(&path, "1\n").unwrap();
        assert!(exists.read(now, false).unwrap().open);
        assert!(!absent.read(now, false).unwrap().open);
        let r = equals.read(now, false).unwrap();
        assert!(r.open, "{}", r.detail);
        assert!(fresh.read(now, false).unwrap().open);
        let left = fresh
            .next_change(now)
            .expect("a fresh file turns stale later");
        assert!(left > Duration::from_secs(9) && left <= Duration::from_secs(11));
        assert_eq!(
            exists.next_change(now),
            None,
            "no max_age: only events change it"
        );
        // The same file, eleven seconds later, is stale: an error, so the gate is closed.
        let later = now + Duration::from_secs(11);
        assert!(fresh.read(later, false).unwrap_err().contains("stale"));
        assert_eq!(
            fresh.next_change(later),
            None,
            "stale: only a write changes it"
        );

        std::fs::write(&path, "0").unwrap();
        assert!(!equals.read(now, false).unwrap().open);
    }

    #[test]
    fn unreadable_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        // A directory cannot be read as a file: the equals gate reports it, it does not guess.
        let mut g = FileGate::new(dir.path().to_owned(), FileOpen::Equals("1".into()), None);
        assert!(g.read(SystemTime::now(), false).is_err());
    }
}
