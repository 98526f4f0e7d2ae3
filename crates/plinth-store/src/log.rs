//! The table log: numbered snapshots of a table's live files.
//!
//! `_log/00000000000000000007.json` holds the whole state of version 7: the
//! live data files, the tombstones of files removed but not yet deleted, and
//! named checkpoints (how far an import got). A version is published by
//! writing a temporary file, fsyncing it, and hard-linking it to its final
//! name, which fails if that version exists: a commit is atomic and two
//! writers can never both publish the same version.
//!
//! Full snapshots rather than deltas keep recovery trivial (read the newest
//! file); the store keeps file counts small through compaction, so snapshots
//! stay small.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The folder, inside a table's folder, that holds the log.
pub const LOG_DIR: &str = "_log";
/// How many old versions are kept beside the newest, for inspection.
const KEPT_VERSIONS: u64 = 20;

/// One live Parquet file of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFile {
    /// Path relative to the table folder, `/`-separated.
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
    /// The event date (`YYYY-MM-DD`) of every row, for date-partitioned tables.
    pub partition: Option<String>,
    /// Smallest and largest partition timestamp in the file (UTC micros).
    pub min_micros: Option<i64>,
    pub max_micros: Option<i64>,
    /// Written to be rewritten (see `FileForm::Staged`): compaction takes
    /// it whatever its size. Logs from before staged files read as `false`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub staged: bool,
}

/// A file that left the snapshot and waits for vacuum to delete it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    pub path: String,
    pub removed_at_micros: i64,
}

/// The state of a table at one version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u64,
    pub operation: String,
    pub committed_at_micros: i64,
    pub files: Vec<DataFile>,
    pub tombstones: Vec<Tombstone>,
    /// Named progress markers committed atomically with the data, such as
    /// the number of lines of an import file already stored.
    pub checkpoints: BTreeMap<String, u64>,
}

impl Snapshot {
    pub fn rows(&self) -> u64 {
        self.files.iter().map(|f| f.rows).sum()
    }
}

fn version_path(table_dir: &Path, version: u64) -> PathBuf {
    table_dir.join(LOG_DIR).join(format!("{version:020}.json"))
}

fn parse_version(name: &str) -> Option<u64> {
    name.strip_suffix(".json")?.parse().ok()
}

/// The newest published version, or an empty version 0 for a new table.
pub fn read_latest(table_dir: &Path) -> Result<Snapshot> {
    read_latest_state(table_dir)
}

/// Publishes `snapshot` as version `snapshot.version`; fails if that version
/// already exists.
pub fn commit(table_dir: &Path, snapshot: &Snapshot) -> Result<()> {
    commit_state(table_dir, snapshot.version, snapshot)
}

/// The newest version of any log kept in `dir/_log` (the table log, the
/// warehouse log), or `T::default()` when nothing was published yet.
pub fn read_latest_state<T: DeserializeOwned + Default>(dir: &Path) -> Result<T> {
    let log_dir = dir.join(LOG_DIR);
    let latest = match fs::read_dir(&log_dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .filter_map(|e| parse_version(&e.file_name().to_string_lossy()))
            .max(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", log_dir.display())),
    };
    match latest {
        None => Ok(T::default()),
        Some(version) => {
            let path = version_path(dir, version);
            let text = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_slice(&text)
                .with_context(|| format!("log version {} is not valid", path.display()))
        }
    }
}

/// Publishes `state` as `version` of the log in `dir/_log`: written to a
/// temporary file, fsynced, then hard-linked to its final name, which fails
/// if another writer published that version first.
pub fn commit_state(dir: &Path, version: u64, state: &impl Serialize) -> Result<()> {
    let log_dir = dir.join(LOG_DIR);
    fs::create_dir_all(&log_dir)?;
    let tmp = log_dir.join(format!(".{}.tmp", uuid::Uuid::new_v4()));
    {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(&serde_json::to_vec(state)?)?;
        file.sync_all()?;
    }
    let target = version_path(dir, version);
    let linked = fs::hard_link(&tmp, &target);
    fs::remove_file(&tmp)?;
    if let Err(e) = linked {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            bail!(
                "version {version} of {} was committed by another writer",
                dir.display()
            );
        }
        return Err(e).with_context(|| format!("publishing {}", target.display()));
    }
    sync_path(&log_dir)?;
    if version > KEPT_VERSIONS {
        let old = version_path(dir, version - KEPT_VERSIONS - 1);
        let _ = fs::remove_file(old);
    }
    Ok(())
}

/// Makes a written file, or a new name, rename or link inside a folder,
/// durable: `path` is the file or the folder.
pub fn sync_path(path: &Path) -> Result<()> {
    fs::File::open(path)
        .and_then(|opened| opened.sync_all())
        .with_context(|| format!("syncing {}", path.display()))
}

/// Deletes the files of `tombstones` under `table_dir`; a file already gone
/// (a vacuum that died after deleting it) is not an error.
pub fn delete_tombstoned(table_dir: &Path, tombstones: &[Tombstone]) -> Result<()> {
    for tombstone in tombstones {
        match fs::remove_file(table_dir.join(&tombstone.path)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Removes temporary log files left by a crashed commit.
pub fn remove_temporaries(table_dir: &Path) -> Result<()> {
    let log_dir = table_dir.join(LOG_DIR);
    if let Ok(entries) = fs::read_dir(&log_dir) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().ends_with(".tmp") {
                fs::remove_file(entry.path())?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_then_read_latest_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_latest(dir.path()).unwrap().version, 0);
        for version in 1..=3 {
            let snapshot = Snapshot {
                version,
                operation: "append".into(),
                ..Default::default()
            };
            commit(dir.path(), &snapshot).unwrap();
        }
        assert_eq!(read_latest(dir.path()).unwrap().version, 3);
    }

    #[test]
    fn a_version_cannot_be_published_twice() {
        let dir = tempfile::tempdir().unwrap();
        let snapshot = Snapshot {
            version: 1,
            ..Default::default()
        };
        commit(dir.path(), &snapshot).unwrap();
        let err = commit(dir.path(), &snapshot).unwrap_err();
        assert!(err.to_string().contains("another writer"), "{err}");
    }

    #[test]
    fn old_versions_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        for version in 1..=KEPT_VERSIONS + 5 {
            let snapshot = Snapshot {
                version,
                ..Default::default()
            };
            commit(dir.path(), &snapshot).unwrap();
        }
        let count = fs::read_dir(dir.path().join(LOG_DIR)).unwrap().count() as u64;
        assert_eq!(count, KEPT_VERSIONS + 1);
    }
}
