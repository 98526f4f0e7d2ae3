//! The data directory: its tables and the lock that makes one process its
//! only writer.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use crate::schema;
use crate::table::{Table, TableSpec};

/// How a process opens a data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The only process that commits: holds `.writer.lock` while open.
    Writer,
    /// Reads published snapshots; commits nothing, takes no lock, and so
    /// works beside a running server.
    Reader,
}

/// A data directory with its tables.
pub struct Store {
    root: PathBuf,
    pub events: Arc<Table>,
    pub persons: Arc<Table>,
    pub groups: Arc<Table>,
    pub quarantine: Arc<Table>,
    /// Held for the life of a writer; the OS releases it if the process dies.
    _writer_lock: Option<File>,
}

const LOCK_FILE: &str = ".writer.lock";

impl Store {
    /// Opens (creating if needed, for a writer) the data directory `root`.
    /// `holder` describes this process in the lock file, so that a second
    /// writer is told who holds it (e.g. "plinth serve on 127.0.0.1:8000").
    pub fn open(root: &Path, mode: Mode, holder: &str) -> Result<Store> {
        // Scans name files by absolute path (object_store's local file URLs).
        let root = &std::path::absolute(root)
            .with_context(|| format!("resolving data directory {}", root.display()))?;
        let lock = match mode {
            Mode::Writer => {
                fs::create_dir_all(root)
                    .with_context(|| format!("creating data directory {}", root.display()))?;
                Some(acquire_writer_lock(root, holder)?)
            }
            Mode::Reader => {
                if !root.join("tables").is_dir() {
                    bail!(
                        "{} is not a Plinth data directory (no tables/ in it); \
                         create one with `plinth demo` or `plinth import`",
                        root.display()
                    );
                }
                None
            }
        };
        let writable = mode == Mode::Writer;
        let open = |spec: TableSpec| -> Result<Arc<Table>> {
            let dir = root.join("tables").join(spec.name);
            Ok(Arc::new(Table::open(dir, spec, writable)?))
        };
        Ok(Store {
            root: root.to_path_buf(),
            events: open(events_spec())?,
            persons: open(persons_spec())?,
            groups: open(groups_spec())?,
            quarantine: open(quarantine_spec())?,
            _writer_lock: lock,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn tables(&self) -> [&Arc<Table>; 4] {
        [&self.events, &self.persons, &self.groups, &self.quarantine]
    }

    /// Who holds the writer lock of `root`, if anyone does.
    pub fn writer(root: &Path) -> Option<String> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(root.join(LOCK_FILE))
            .ok()?;
        match file.try_lock() {
            Ok(()) => None,
            Err(_) => Some(fs::read_to_string(root.join(LOCK_FILE)).unwrap_or_default()),
        }
    }
}

fn acquire_writer_lock(root: &Path, holder: &str) -> Result<File> {
    let path = root.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    if file.try_lock().is_err() {
        let mut who = String::new();
        let _ = file.read_to_string(&mut who);
        bail!(
            "{} is in use by another Plinth process ({}); stop it, or send it the work \
             (HTTP API) instead",
            root.display(),
            who.trim()
        );
    }
    file.set_len(0)?;
    file.rewind()?;
    write!(file, "{holder}, pid {}", std::process::id())?;
    file.flush()?;
    Ok(file)
}

pub fn events_spec() -> TableSpec {
    TableSpec {
        name: "events",
        schema: schema::events(),
        partition_column: Some("timestamp"),
        // Person numbers, not ids: comparing 8 bytes sorts faster than 36,
        // numbers within an event compress to small deltas, and scans that
        // feed per-person state (experiment results) visit it in order.
        sort_columns: &["event", "person_num", "timestamp"],
    }
}

pub fn persons_spec() -> TableSpec {
    TableSpec {
        name: "persons",
        schema: schema::persons(),
        partition_column: None,
        sort_columns: &["person_id"],
    }
}

pub fn groups_spec() -> TableSpec {
    TableSpec {
        name: "groups",
        schema: schema::groups(),
        partition_column: None,
        sort_columns: &["group_type", "group_key"],
    }
}

pub fn quarantine_spec() -> TableSpec {
    TableSpec {
        name: "quarantine",
        schema: schema::quarantine(),
        partition_column: None,
        sort_columns: &["received_at"],
    }
}
