//! The file operations under the state: a capped read, a durable replace, and setting an
//! unusable file aside under a name of its own.
//!
//! `replace` (temp file, fsync, rename, fsync of the directory) is ours for a measured defect:
//! `atomic-write-file` 0.3.1 syncs the file and the directory as this does, but marks its temp
//! file finished before the fsync and the rename, so each commit that fails there leaves a
//! `.state.json.XXXXXX` of a new random name behind (three after
//! `a_full_disk_loses_nothing_acknowledged_and_recovers_by_itself`'s failed writes and retries,
//! checked 2026-12-06 by swapping it in). A disk that fails for hours would fill with them; ours
//! removes its one fixed-name temp file on failure, and a crash leaves at most that one, reused
//! by the next write. `tempfile`'s `persist` syncs neither the file nor the directory. The
//! capped read and the set-aside name are the state's own rules (SPEC 6), no library's job.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The file's bytes; `None` when there is none; `Err(len)` when it is over `max`, found
/// without reading it whole.
pub fn read_capped(path: &Path, max: u64) -> std::io::Result<Option<Result<Vec<u8>, u64>>> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    if len > max {
        return Ok(Some(Err(len)));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    // Bounded even when the file grows after the length was read.
    f.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Ok(Some(Err(bytes.len() as u64)));
    }
    Ok(Some(Ok(bytes)))
}

/// Replaces `path` with `bytes` durably: a temp file in the same directory, fsync, rename, fsync
/// of the directory. A failure leaves the old file as it was and no temp file behind.
pub fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp"));
    let result = (|| {
        std::fs::create_dir_all(dir)?;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename itself is durable once the directory is synced.
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        // A partial temp file on a full disk takes the room the next try needs.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Renames `path` to `<name>.corrupt-<unix ms>-<n>`, the first such name not taken: two files
/// set aside in the same millisecond, or a clock set back, never overwrite each other.
pub fn set_aside(path: &Path) -> Result<PathBuf, String> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let ms = super::unix_ms(SystemTime::now());
    for n in 0..1000 {
        let aside = dir.join(format!("{name}.corrupt-{ms}-{n}"));
        // One agent owns a state directory, so "absent now" holds until the rename.
        if std::fs::symlink_metadata(&aside).is_ok() {
            continue;
        }
        return std::fs::rename(path, &aside)
            .map(|()| aside)
            .map_err(|e| e.to_string());
    }
    Err("no free name for it".into())
}
