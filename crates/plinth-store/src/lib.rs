//! The event store: Parquet tables under a table log, and the DataFusion
//! tables that read them.
//!
//! A [`Store`] is a data directory holding four tables: `events`, `persons`,
//! `groups` and `quarantine` (see [`schema`]). Each [`Table`] is a folder of immutable
//! Parquet files, partitioned by event date, plus `_log/`, a sequence of
//! versioned snapshots naming the live files ([`log`]). Appends, compaction,
//! retention and replacement all publish by writing one new log version, so a
//! reader sees a whole snapshot or the previous one, never half a write.
//!
//! Rows that arrived but are not yet in Parquet sit in the table's in-memory
//! buffer and are visible to queries at once ([`provider`]).
//!
//! This crate knows nothing of HTTP, SQL dialects, users or pipelines.
//!
//! Invariants:
//! - a data file is written and fsynced under a name that is not yet in any
//!   snapshot; it becomes visible only through a log commit;
//! - a file leaves the snapshot before it leaves the disk (tombstone, then
//!   vacuum after a grace period), so running queries never lose a file;
//! - only the process holding the writer lock commits or deletes anything.

pub mod log;
pub mod provider;
pub mod schema;
mod store;
mod table;
mod write;

pub use provider::TableProviderExt;
pub use store::{Mode, Store};
pub use table::{CompactionReport, Table, TableSpec, TableView};
pub use write::{FileForm, partition_day, partition_start, write_parquet_file};
