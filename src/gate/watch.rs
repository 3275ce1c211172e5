//! Gates that tell instead of being asked: the threads that sleep on a signal's own events
//! (inotify for files, GPIO edge events, `poll(2)` on a sysfs `value`) and ring a `Bell` that
//! the decision loop sleeps on.
//!
//! An event only says "look again": the loop then reads every gate, and the re-read at the
//! moment of action (SPEC section 5) is unchanged. Events can be lost (an inotify queue
//! overflow, a GPIO event buffer overrun), so the loop also re-reads every gate slowly
//! (`policy.gate_reread`), and an overflow rings at once.

use std::collections::BTreeMap;
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};

use crate::bell::Bell;

/// The events of a directory that can change what a file in it reads: created, deleted,
/// renamed in or out, written, touched (mtime for `max_age`), and the directory itself going.
fn dir_flags() -> WatchFlags {
    WatchFlags::CREATE
        | WatchFlags::DELETE
        | WatchFlags::MOVED_FROM
        | WatchFlags::MOVED_TO
        | WatchFlags::CLOSE_WRITE
        | WatchFlags::MODIFY
        | WatchFlags::ATTRIB
        | WatchFlags::DELETE_SELF
        | WatchFlags::MOVE_SELF
        | WatchFlags::ONLYDIR
}

/// The directory to watch for `target`: its own, or while that does not exist yet, the nearest
/// existing ancestor (where the missing directory will appear).
pub fn watch_dir(target: &Path) -> Option<PathBuf> {
    let mut dir = target.parent()?;
    loop {
        if dir.is_dir() {
            return Some(if dir.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                dir.to_owned()
            });
        }
        dir = dir.parent()?;
    }
}

/// Per signal file: how many times the watch saw it go away (deleted, renamed away) and
/// appear (created, renamed in). A file gate compares these between its reads, so a closure
/// shorter than the loop's reaction (gone and back before the gate is read) is still a closure:
/// the stability window restarts instead of spanning it.
static TRANSITIONS: Mutex<BTreeMap<PathBuf, (u64, u64)>> = Mutex::new(BTreeMap::new());

/// `(left, appeared)` for `path` so far.
pub fn transitions(path: &Path) -> (u64, u64) {
    let map = TRANSITIONS.lock().unwrap_or_else(|e| e.into_inner());
    map.get(path).copied().unwrap_or_default()
}

pub(crate) fn note_transition(path: &Path, flags: ReadFlags) {
    let left = flags.intersects(ReadFlags::DELETE | ReadFlags::MOVED_FROM);
    let appeared = flags.intersects(ReadFlags::CREATE | ReadFlags::MOVED_TO);
    if !left && !appeared {
        return;
    }
    let mut map = TRANSITIONS.lock().unwrap_or_else(|e| e.into_inner());
    let e = map.entry(path.to_path_buf()).or_default();
    e.0 += u64::from(left);
    e.1 += u64::from(appeared);
}

/// What one inotify event means for the targets.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// Events were lost: re-read everything now, and re-arm the watches.
    Overflow,
    /// A watched directory went away or moved: re-arm the watches and look.
    Rearm,
    /// A target, or a directory on the way to one, changed.
    Relevant,
    /// Another file in a watched directory.
    Other,
}

/// The inotify side of the gates: watched directories and the files looked for in them.
pub struct FileWatch {
    fd: rustix::fd::OwnedFd,
    targets: Vec<PathBuf>,
    /// Watched directory → watch descriptor.
    watches: BTreeMap<PathBuf, i32>,
}

impl FileWatch {
    /// Watches the directories of `targets` (signal files, fake sysfs `value` files).
    pub fn new(targets: Vec<PathBuf>) -> Result<FileWatch, String> {
        let fd = inotify::init(CreateFlags::CLOEXEC).map_err(|e| format!("inotify_init: {e}"))?;
        let mut w = FileWatch {
            fd,
            targets,
            watches: BTreeMap::new(),
        };
        w.arm();
        Ok(w)
    }

    /// The watched directories, for status and tests.
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.watches.keys().cloned().collect()
    }

    /// Watches each target's nearest existing directory and drops watches no longer needed.
    /// Returns whether the set changed (then the caller looks again: a file may have appeared
    /// in a directory before its watch existed).
    pub fn arm(&mut self) -> bool {
        let want: Vec<PathBuf> = self.targets.iter().filter_map(|t| watch_dir(t)).collect();
        let mut changed = false;
        let stale: Vec<PathBuf> = self
            .watches
            .keys()
            .filter(|d| !want.contains(d) || !d.is_dir())
            .cloned()
            .collect();
        for d in stale {
            if let Some(wd) = self.watches.remove(&d) {
                // Fails harmlessly when the kernel already dropped it (directory deleted).
                let _ = inotify::remove_watch(&self.fd, wd);
                changed = true;
            }
        }
        for d in want {
            // Added again even when present: the same inode gives the same descriptor, and a
            // path that now leads elsewhere (a symlink swapped) gets a new one.
            match inotify::add_watch(&self.fd, &d, dir_flags()) {
                Ok(wd) => match self.watches.insert(d, wd) {
                    None => changed = true,
                    Some(old) if old != wd => {
                        if !self.watches.values().any(|w| *w == old) {
                            let _ = inotify::remove_watch(&self.fd, old);
                        }
                        changed = true;
                    }
                    Some(_) => {}
                },
                // Gone between the check and the call, or not allowed: the slow re-read still
                // reads the gate, and the next event or re-arm tries again.
                Err(e) => log::debug!("inotify_add_watch {}: {e}", d.display()),
            }
        }
        changed
    }

    /// Counts a signal file going away or appearing (`transitions`).
    fn note(&self, wd: i32, flags: ReadFlags, name: Option<&[u8]>) -> &Self {
        let dir = self.watches.iter().find(|(_, w)| **w == wd).map(|(d, _)| d);
        if let (Some(dir), Some(name)) = (dir, name) {
            let path = dir.join(std::ffi::OsStr::from_bytes(name));
            if self.targets.contains(&path) {
                note_transition(&path, flags);
            }
        }
        self
    }

    /// Classifies one event.
    pub fn classify(&self, wd: i32, flags: ReadFlags, name: Option<&[u8]>) -> Seen {
        if flags.contains(ReadFlags::QUEUE_OVERFLOW) {
            return Seen::Overflow;
        }
        if flags.intersects(
            ReadFlags::IGNORED | ReadFlags::DELETE_SELF | ReadFlags::MOVE_SELF | ReadFlags::UNMOUNT,
        ) {
            return Seen::Rearm;
        }
        let Some(dir) = self.watches.iter().find(|(_, w)| **w == wd).map(|(d, _)| d) else {
            return Seen::Other;
        };
        let Some(name) = name else {
            return Seen::Other;
        };
        let path = dir.join(std::ffi::OsStr::from_bytes(name));
        // The file itself, or a directory on the way to it (created, renamed in).
        if self.targets.iter().any(|t| t.starts_with(&path)) {
            Seen::Relevant
        } else {
            Seen::Other
        }
    }

    /// Reads events until the thread's end, ringing `bell` for each batch that matters.
    pub fn run(mut self, bell: &Bell) {
        let mut buf = vec![MaybeUninit::<u8>::uninit(); 4096];
        loop {
            let mut ring = false;
            let mut rearm = false;
            {
                let mut reader = inotify::Reader::new(&self.fd, &mut buf);
                loop {
                    match reader.next() {
                        Ok(ev) => match self
                            .note(ev.wd(), ev.events(), ev.file_name().map(|n| n.to_bytes()))
                            .classify(ev.wd(), ev.events(), ev.file_name().map(|n| n.to_bytes()))
                        {
                            Seen::Overflow => {
                                log::info!("inotify queue overflowed: re-reading every gate now");
                                ring = true;
                                rearm = true;
                            }
                            Seen::Rearm => rearm = true,
                            Seen::Relevant => {
                                // A directory (or a symlink) on the way to a target may have
                                // appeared or changed: the watches follow.
                                ring = true;
                                rearm = true;
                            }
                            Seen::Other => {}
                        },
                        Err(rustix::io::Errno::INTR) => {}
                        Err(e) => {
                            log::warn!("inotify read: {e}; gates are re-read slowly");
                            return;
                        }
                    }
                    if reader.is_buffer_empty() {
                        break;
                    }
                }
            }
            if rearm && self.arm() {
                ring = true;
            }
            if ring {
                bell.ring();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn the_nearest_existing_directory_is_watched_and_moved_down() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("a/b/stopped");
        let mut w = FileWatch::new(vec![target.clone()]).unwrap();
        assert_eq!(w.dirs(), vec![root.path().to_owned()]);
        std::fs::create_dir_all(root.path().join("a/b")).unwrap();
        assert!(w.arm());
        assert_eq!(w.dirs(), vec![root.path().join("a/b")]);
        std::fs::remove_dir_all(root.path().join("a")).unwrap();
        assert!(w.arm());
        assert_eq!(w.dirs(), vec![root.path().to_owned()]);
        assert!(!w.arm(), "nothing changed");
    }

    /// `run/current -> run/v1`, then swapped to `run/v2`: the watch follows the link.
    #[test]
    fn a_swapped_symlink_moves_the_watch() {
        let root = tempfile::tempdir().unwrap();
        for v in ["v1", "v2"] {
            std::fs::create_dir(root.path().join(v)).unwrap();
        }
        let link = root.path().join("current");
        std::os::unix::fs::symlink("v1", &link).unwrap();
        let mut w = FileWatch::new(vec![link.join("stopped")]).unwrap();
        let first = w.watches[&link];
        std::os::unix::fs::symlink("v2", root.path().join("next")).unwrap();
        std::fs::rename(root.path().join("next"), &link).unwrap();
        assert!(w.arm());
        assert_ne!(w.watches[&link], first);
    }

    #[test]
    fn events_are_classified() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("stopped");
        let w = FileWatch::new(vec![target]).unwrap();
        let wd = *w.watches.values().next().unwrap();
        assert_eq!(
            w.classify(-1, ReadFlags::QUEUE_OVERFLOW, None),
            Seen::Overflow
        );
        assert_eq!(
            w.classify(wd, ReadFlags::CREATE, Some(b"stopped")),
            Seen::Relevant
        );
        assert_eq!(
            w.classify(wd, ReadFlags::MODIFY, Some(b"other")),
            Seen::Other
        );
        assert_eq!(w.classify(wd, ReadFlags::IGNORED, None), Seen::Rearm);
    }

    /// The real thread on real files: creation, a write, deletion and a rename each ring; a
    /// directory created later on the way is followed.
    #[test]
    fn the_thread_rings_for_the_file_and_not_for_others() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("run/vehicle/stopped");
        let bell = Bell::new();
        let w = FileWatch::new(vec![target.clone()]).unwrap();
        {
            let bell = bell.clone();
            std::thread::spawn(move || w.run(&bell));
        }
        let rung = |what: &str| {
            let t = Instant::now();
            bell.wait(Duration::from_secs(5));
            assert!(t.elapsed() < Duration::from_secs(4), "no ring for {what}");
        };
        std::fs::write(root.path().join("unrelated"), "x").unwrap();
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        rung("the directories created");
        // Anything left from the mkdir -p.
        let _ = bell.wait(Duration::from_millis(200));
        std::fs::write(&target, "1").unwrap();
        rung("the file created");
        std::fs::write(&target, "0").unwrap();
        rung("a write");
        std::fs::rename(&target, root.path().join("elsewhere")).unwrap();
        rung("a rename away");
        std::fs::write(target.with_file_name("tmp"), "1").unwrap();
        let _ = bell.wait(Duration::from_millis(200));
        std::fs::rename(target.with_file_name("tmp"), &target).unwrap();
        rung("a rename into place");
        std::fs::remove_file(&target).unwrap();
        rung("a deletion");
    }
}
