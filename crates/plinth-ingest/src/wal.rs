//! The write-ahead log: numbered records in append-only segment files.
//!
//! This module owns the bytes on disk and nothing of what they mean. A
//! record is `len: u32 | crc32: u32 | lsn: u64 | payload`, little-endian,
//! the CRC covering the LSN and the payload. LSNs (log sequence numbers)
//! start at 1 and grow by one per record, across segments and restarts.
//!
//! A segment is `wal/<first lsn, 20 digits>.wal`: it holds the records from
//! its first LSN up to the next segment's first LSN minus one. The writer
//! appends to the newest segment only and rotates to a new one on request;
//! a segment is deleted ([`remove_covered`]) once every record in it is
//! covered, i.e. stored elsewhere, and it is no longer the active one.
//!
//! A crash can tear only the tail of a segment (records are synced before
//! anyone is told they exist): [`read_all`] stops each segment at its first
//! short or corrupt record and truncates it there, so a torn record is
//! never read as data and never followed by new records.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

const HEADER_BYTES: usize = 16;
const SEGMENT_SUFFIX: &str = ".wal";
/// Refuse record lengths above this when reading: a corrupt length must not
/// make recovery allocate gigabytes.
const MAX_RECORD_BYTES: usize = 1 << 30;

/// One record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub lsn: u64,
    pub payload: Vec<u8>,
}

/// Appends records to the active segment of a log folder.
pub struct WalWriter {
    dir: PathBuf,
    file: File,
    segment_first_lsn: u64,
    segment_bytes: u64,
    next_lsn: u64,
}

impl WalWriter {
    /// Starts a new, empty segment whose first record will be `next_lsn`.
    pub fn create(dir: &Path, next_lsn: u64) -> Result<WalWriter> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let file = create_segment(dir, next_lsn)?;
        Ok(WalWriter {
            dir: dir.to_path_buf(),
            file,
            segment_first_lsn: next_lsn,
            segment_bytes: 0,
            next_lsn,
        })
    }

    /// The LSN the next appended record gets.
    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    /// Bytes in the active segment.
    pub fn segment_bytes(&self) -> u64 {
        self.segment_bytes
    }

    /// Encodes `payloads` as consecutive records and writes them with one
    /// system call; returns the LSN of the first. Nothing is durable until
    /// [`WalWriter::sync`]. On error the segment is cut back to its last
    /// whole record and the LSNs are not consumed.
    pub fn append(&mut self, payloads: &[Vec<u8>]) -> Result<u64> {
        let first = self.next_lsn;
        let size: usize = payloads.iter().map(|p| HEADER_BYTES + p.len()).sum();
        let mut buffer = Vec::with_capacity(size);
        for (offset, payload) in payloads.iter().enumerate() {
            encode(&mut buffer, first + offset as u64, payload);
        }
        if let Err(error) = self.file.write_all(&buffer) {
            // A partial write must not stay in front of later records.
            let _ = self.file.set_len(self.segment_bytes);
            return Err(error).context("writing the write-ahead log");
        }
        self.segment_bytes += buffer.len() as u64;
        self.next_lsn += payloads.len() as u64;
        Ok(first)
    }

    /// Makes every appended record durable (`fdatasync`).
    pub fn sync(&mut self) -> Result<()> {
        self.file.sync_data().context("syncing the write-ahead log")
    }

    /// Closes the active segment and starts the next one. Used after a
    /// flush, so that the closed segment can be deleted once covered, and
    /// after a failed write or sync, so that the segment whose state is
    /// unknown receives nothing more.
    pub fn rotate(&mut self) -> Result<()> {
        let file = create_segment(&self.dir, self.next_lsn)?;
        self.file = file;
        self.segment_first_lsn = self.next_lsn;
        self.segment_bytes = 0;
        Ok(())
    }

    /// The first LSN of the active segment.
    pub fn segment_first_lsn(&self) -> u64 {
        self.segment_first_lsn
    }
}

fn create_segment(dir: &Path, first_lsn: u64) -> Result<File> {
    let path = segment_path(dir, first_lsn);
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    // The new name must survive a crash, or its records would vanish with it.
    File::open(dir)?.sync_all()?;
    Ok(file)
}

fn segment_path(dir: &Path, first_lsn: u64) -> PathBuf {
    dir.join(format!("{first_lsn:020}{SEGMENT_SUFFIX}"))
}

fn encode(buffer: &mut Vec<u8>, lsn: u64, payload: &[u8]) {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&lsn.to_le_bytes());
    crc.update(payload);
    buffer.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buffer.extend_from_slice(&crc.finalize().to_le_bytes());
    buffer.extend_from_slice(&lsn.to_le_bytes());
    buffer.extend_from_slice(payload);
}

/// The segments of `dir` as (first LSN, path), oldest first.
pub fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(first) = name
            .strip_suffix(SEGMENT_SUFFIX)
            .and_then(|n| n.parse::<u64>().ok())
        {
            found.push((first, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// Every whole record of every segment, in LSN order. Each segment is read
/// up to its first torn or corrupt record, and truncated there.
pub fn read_all(dir: &Path) -> Result<Vec<Record>> {
    let mut records = Vec::new();
    for (_, path) in segments(dir)? {
        let mut bytes = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .with_context(|| format!("reading {}", path.display()))?;
        let (valid, read) = decode_segment(&bytes);
        if valid < bytes.len() {
            tracing::warn!(
                segment = %path.display(),
                kept_bytes = valid,
                dropped_bytes = bytes.len() - valid,
                "cutting a torn record off the end of a write-ahead log segment"
            );
            let file = OpenOptions::new().write(true).open(&path)?;
            file.set_len(valid as u64)?;
            file.sync_all()?;
        }
        records.extend(read);
    }
    Ok(records)
}

/// The whole records at the start of `bytes`, and how many bytes they span.
fn decode_segment(bytes: &[u8]) -> (usize, Vec<Record>) {
    let mut records = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= HEADER_BYTES {
        let header = &bytes[at..at + HEADER_BYTES];
        let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        let lsn_bytes: [u8; 8] = header[8..16].try_into().expect("8 bytes");
        if len > MAX_RECORD_BYTES || bytes.len() - at - HEADER_BYTES < len {
            break;
        }
        let payload = &bytes[at + HEADER_BYTES..at + HEADER_BYTES + len];
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&lsn_bytes);
        hasher.update(payload);
        if hasher.finalize() != crc {
            break;
        }
        records.push(Record {
            lsn: u64::from_le_bytes(lsn_bytes),
            payload: payload.to_vec(),
        });
        at += HEADER_BYTES + len;
    }
    (at, records)
}

/// Deletes the segments older than `active_first_lsn` whose every record
/// has an LSN at most `covered_lsn`; returns how many were deleted.
pub fn remove_covered(dir: &Path, covered_lsn: u64, active_first_lsn: u64) -> Result<usize> {
    let all = segments(dir)?;
    let mut removed = 0;
    for pair in all.windows(2) {
        let ((first, path), (next_first, _)) = (&pair[0], &pair[1]);
        // A segment's last record is the next segment's first minus one.
        if *first < active_first_lsn && next_first.saturating_sub(1) <= covered_lsn {
            fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
            removed += 1;
        }
    }
    if removed > 0 {
        File::open(dir)?.sync_all()?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payloads(texts: &[&str]) -> Vec<Vec<u8>> {
        texts.iter().map(|t| t.as_bytes().to_vec()).collect()
    }

    #[test]
    fn records_round_trip_across_segments_in_lsn_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = WalWriter::create(dir.path(), 1).unwrap();
        assert_eq!(wal.append(&payloads(&["a", "b"])).unwrap(), 1);
        wal.sync().unwrap();
        wal.rotate().unwrap();
        assert_eq!(wal.append(&payloads(&["c"])).unwrap(), 3);
        wal.sync().unwrap();
        let records = read_all(dir.path()).unwrap();
        let lsns: Vec<u64> = records.iter().map(|r| r.lsn).collect();
        assert_eq!(lsns, [1, 2, 3]);
        assert_eq!(records[2].payload, b"c");
        assert_eq!(segments(dir.path()).unwrap().len(), 2);
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_never_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = WalWriter::create(dir.path(), 7).unwrap();
        wal.append(&payloads(&["whole", "torn"])).unwrap();
        wal.sync().unwrap();
        let (_, path) = segments(dir.path()).unwrap().remove(0);
        let length = fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(length - 2)
            .unwrap();
        let records = read_all(dir.path()).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].lsn, 7);
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            (HEADER_BYTES + 5) as u64
        );
    }

    #[test]
    fn a_flipped_byte_ends_the_segment() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = WalWriter::create(dir.path(), 1).unwrap();
        wal.append(&payloads(&["first", "second"])).unwrap();
        wal.sync().unwrap();
        let (_, path) = segments(dir.path()).unwrap().remove(0);
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&path, bytes).unwrap();
        assert_eq!(read_all(dir.path()).unwrap().len(), 1);
    }

    #[test]
    fn only_closed_and_covered_segments_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = WalWriter::create(dir.path(), 1).unwrap();
        wal.append(&payloads(&["1", "2"])).unwrap();
        wal.rotate().unwrap();
        wal.append(&payloads(&["3", "4"])).unwrap();
        wal.rotate().unwrap();
        // Segment 1 holds 1..=2, segment 3 holds 3..=4, segment 5 is active.
        assert_eq!(
            remove_covered(dir.path(), 3, wal.segment_first_lsn()).unwrap(),
            1
        );
        assert_eq!(
            remove_covered(dir.path(), 10, wal.segment_first_lsn()).unwrap(),
            1
        );
        let left: Vec<u64> = segments(dir.path()).unwrap().iter().map(|s| s.0).collect();
        assert_eq!(left, [5]);
    }
}
