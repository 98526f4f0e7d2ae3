//! Ingest: from accepted events to rows of the store.
//!
//! Every source (the capture endpoints, file import, the demo generator)
//! hands over [`EventInput`]s; [`Ingestor`] resolves each distinct id to a
//! person ([`identity`]), records group properties ([`groups`]), turns
//! events into Arrow batches ([`rows`]), and writes them to the store.
//!
//! This crate knows nothing of HTTP or SQL. It never drops an event: what it
//! cannot accept goes to `quarantine` with the reason.

pub mod capture;
mod columns;
pub mod groups;
pub mod identity;
pub mod import;
pub mod rows;
pub mod wal;

pub use capture::{
    CaptureConfig, CapturePipeline, CaptureRequest, CaptureStats, CaptureUnavailable, Receipt,
    Recovery,
};
pub use groups::{GroupUpdate, Groups};
pub use identity::{Identities, PersonRef};
pub use import::{ImportFormat, ImportReport, import_file};
pub use rows::{EventInput, Ingestor, QuarantineInput};
