//! The upgrade intent record, `state.dir/intent`: one 4 KiB block, written in place.
//!
//! No upgrade call is sent before its intent is on disk (SPEC 6: a restart never sends a
//! duplicate call). Rewriting the whole state file for it (temp file, fsync, rename, fsync of
//! the directory) sat between the gates' `stable_for` running out and the call. This record
//! costs one `pwrite` and one `fdatasync`: the file was filled with zeros when it was created
//! and never changes size, so no metadata and no directory has to reach the disk with it. The
//! state file takes the intent in with its next write (after the call); `State::intent_seq`
//! says which record it holds, and a newer record is taken in at start.
//!
//! Layout, little-endian: magic `yotaint1` (8 bytes), sequence number (u64), payload length
//! (u32), FNV-1a 64 checksum of the sequence number, length and payload (u64); the payload (one
//! `InFlight` as JSON); zeros to 4096 bytes. All zeros: no record was ever written. A record that
//! does not check out (torn by a power cut mid-write, or damaged) reads as "an upgrade call may
//! have been sent, for a pod not known": the store sets the file aside and trips the breaker.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::InFlight;

pub const NAME: &str = "intent";
pub const SIZE: usize = 4096;
const MAGIC: &[u8; 8] = b"yotaint1";
const HEADER: usize = 8 + 8 + 4 + 8;

#[derive(Debug, PartialEq)]
pub struct Record {
    pub seq: u64,
    pub entry: InFlight,
}

#[derive(Debug, PartialEq)]
pub enum Read {
    /// Never written.
    Empty,
    Valid(Record),
    /// Why it cannot be trusted.
    Corrupt(String),
}

fn checksum(seq: u64, payload: &[u8]) -> u64 {
    use std::hash::Hasher as _;
    let mut h = fnv::FnvHasher::default();
    h.write(&seq.to_le_bytes());
    h.write(&(payload.len() as u32).to_le_bytes());
    h.write(payload);
    h.finish()
}

/// The whole block for record `seq`; `None` when the entry does not fit (never for a pod: its
/// names are at most 253 bytes each).
pub fn encode(seq: u64, entry: &InFlight) -> Option<Vec<u8>> {
    let payload = serde_json::to_vec(entry).ok()?;
    if HEADER + payload.len() > SIZE {
        return None;
    }
    let mut block = Vec::with_capacity(SIZE);
    block.extend_from_slice(MAGIC);
    block.extend_from_slice(&seq.to_le_bytes());
    block.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    block.extend_from_slice(&checksum(seq, &payload).to_le_bytes());
    block.extend_from_slice(&payload);
    block.resize(SIZE, 0);
    Some(block)
}

pub fn decode(block: &[u8]) -> Read {
    if block.len() != SIZE {
        return Read::Corrupt(format!("it is {} bytes, not {SIZE}", block.len()));
    }
    if block.iter().all(|b| *b == 0) {
        return Read::Empty;
    }
    let u64_at = |i: usize| u64::from_le_bytes(block[i..i + 8].try_into().unwrap_or_default());
    let seq = u64_at(8);
    let len = u32::from_le_bytes(block[16..20].try_into().unwrap_or_default()) as usize;
    if &block[..8] != MAGIC || len > SIZE - HEADER {
        return Read::Corrupt("its header is not an intent record's".into());
    }
    let payload = &block[HEADER..HEADER + len];
    if checksum(seq, payload) != u64_at(20) {
        return Read::Corrupt(format!("record {seq} fails its checksum"));
    }
    match serde_json::from_slice(payload) {
        Ok(entry) => Read::Valid(Record { seq, entry }),
        Err(e) => Read::Corrupt(format!("record {seq} does not parse ({e})")),
    }
}

/// The record at `path`; `None` when there is no file.
pub fn read(path: &Path) -> io::Result<Option<Read>> {
    Ok(match super::disk::read_capped(path, SIZE as u64)? {
        None => None,
        Some(Ok(block)) => Some(decode(&block)),
        Some(Err(len)) => Some(Read::Corrupt(format!("it is {len} bytes, not {SIZE}"))),
    })
}

/// The record file, open for writing in place.
pub struct File(std::fs::File);

impl File {
    /// Opens `path`, first creating it durably as `SIZE` zeros when there is none.
    pub fn open(path: &Path) -> io::Result<File> {
        if std::fs::symlink_metadata(path).is_err() {
            super::disk::replace(path, &[0; SIZE])?;
        }
        let f = std::fs::OpenOptions::new().write(true).open(path)?;
        if f.metadata()?.len() != SIZE as u64 {
            return Err(io::Error::other(format!("it is not {SIZE} bytes")));
        }
        Ok(File(f))
    }

    /// Overwrites the block and returns once its data is on disk.
    pub fn write(&self, block: &[u8]) -> io::Result<()> {
        debug_assert_eq!(block.len(), SIZE);
        self.0.write_all_at(block, 0)?;
        self.0.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// FNV-1a 64, as written by earlier versions: a record on disk keeps checking out.
    #[test]
    fn the_checksum_is_the_one_records_on_disk_carry() {
        assert_eq!(checksum(7, br#"{"pod":"a"}"#), 0x3560_f56c_3c7c_e38f);
    }

    fn entry() -> InFlight {
        InFlight {
            namespace: "kube-system".into(),
            name: "kube-proxy-abcde".into(),
            uid: "pod-uid".into(),
            owner_uid: "ds-uid".into(),
            started_ms: 1_764_201_600_000,
            accepted: false,
            revision: None,
            uncertain: false,
        }
    }

    #[test]
    fn a_record_reads_back_and_zeros_read_as_none_written() {
        let block = encode(7, &entry()).unwrap();
        assert_eq!(block.len(), SIZE);
        assert_eq!(
            decode(&block),
            Read::Valid(Record {
                seq: 7,
                entry: entry()
            })
        );
        assert_eq!(decode(&[0; SIZE]), Read::Empty);
    }

    #[test]
    fn a_torn_or_damaged_record_reads_as_corrupt() {
        let block = encode(7, &entry()).unwrap();
        // Torn: the header reached the disk, the payload did not.
        let mut torn = block.clone();
        torn[HEADER..].fill(0);
        // Damaged: one bit of the payload.
        let mut flipped = block.clone();
        flipped[HEADER + 3] ^= 1;
        // The header of one record, the payload of another of the same length.
        let mut other = entry();
        other.uid = "pod-uie".into();
        let mut mixed = encode(7, &other).unwrap();
        mixed[..HEADER].copy_from_slice(&block[..HEADER]);
        for (what, b) in [("torn", torn), ("flipped", flipped), ("mixed", mixed)] {
            assert!(matches!(decode(&b), Read::Corrupt(_)), "{what}");
        }
        assert!(matches!(decode(&block[..100]), Read::Corrupt(_)));
        let mut garbage = vec![0xff; SIZE];
        garbage[..8].copy_from_slice(b"notmagic");
        assert!(matches!(decode(&garbage), Read::Corrupt(_)));
    }

    #[test]
    fn the_file_is_created_full_size_and_written_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(NAME);
        assert_eq!(read(&path).unwrap(), None);
        let f = File::open(&path).unwrap();
        assert_eq!(read(&path).unwrap(), Some(Read::Empty));
        let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).unwrap());
        f.write(&encode(1, &entry()).unwrap()).unwrap();
        f.write(&encode(2, &entry()).unwrap()).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), SIZE as u64);
        assert_eq!(std::os::unix::fs::MetadataExt::ino(&meta), ino, "in place");
        assert!(matches!(
            read(&path).unwrap(),
            Some(Read::Valid(Record { seq: 2, .. }))
        ));
    }
}
