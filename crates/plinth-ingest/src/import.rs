//! File import: NDJSON (PostHog- or Segment-shaped objects, one per line),
//! CSV and Parquet (one event per row, columns as fields).
//!
//! An import commits every `commit_rows` rows, with a checkpoint in the same
//! commit saying how many rows of the file are stored. Re-running an
//! interrupted import skips those rows, so a killed import followed by a
//! re-run stores every row exactly once. Rows that cannot be accepted (not
//! UTF-8, not JSON, not an event) go to `quarantine` with `file:line` and
//! the reason.
//!
//! An NDJSON file is mapped into memory rather than read: a chunk's text is
//! a region of the mapping, which the events' strings point into until the
//! chunk is written, so the file's bytes are never copied. The file must
//! not change while it is imported.
//!
//! Persons and groups are saved less often than events, every
//! [`IDENTITY_SAVE_INTERVAL`] and at the end: each save rewrites the whole
//! `persons` table, and saving it with every chunk made an import's writes
//! grow with the square of its persons (190 copies of 2.4M persons for the
//! 100M-event demo). Their own checkpoint says up to which row they are
//! saved; a re-run first re-applies the identities of the rows between
//! that and the events' checkpoint (in file order, which is idempotent),
//! so a kill between two saves loses no person.

use std::collections::BTreeMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use serde_json::Value;

use datafusion::arrow::buffer::Buffer;

use crate::columns::EventColumns;
use crate::rows::{Ingestor, QuarantineInput};

/// Rows per commit by default: large enough that files are not tiny, small
/// enough to bound memory: up to four chunks are held at once (one being
/// read, one waiting, one being ordered, one being written), about 2.5 GiB
/// at peak for the demo's 400-byte events.
pub const DEFAULT_COMMIT_ROWS: usize = 1 << 19;

/// The most text a chunk holds: a chunk also ends here before
/// `commit_rows`, which bounds memory for long lines and keeps offsets
/// into a chunk's text within the 32 bits of an Arrow string view. A line
/// longer than this is refused.
pub(crate) const CHUNK_TEXT_BYTES: usize = 1 << 30;

/// Where a chunk of rows ends.
#[derive(Debug, Clone, Copy)]
struct ChunkLimits {
    rows: usize,
    text_bytes: usize,
}

impl ChunkLimits {
    fn is_full(&self, rows: usize, text_bytes: usize) -> bool {
        rows >= self.rows || text_bytes >= self.text_bytes
    }
}

/// How often an import saves persons and groups, besides at its end.
pub const IDENTITY_SAVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportFormat {
    Ndjson,
    Csv,
    Parquet,
}

impl ImportFormat {
    /// The format a file name suggests.
    pub fn from_path(path: &Path) -> Option<ImportFormat> {
        let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
        if name.ends_with(".ndjson") || name.ends_with(".jsonl") || name.ends_with(".json") {
            Some(ImportFormat::Ndjson)
        } else if name.ends_with(".csv") {
            Some(ImportFormat::Csv)
        } else if name.ends_with(".parquet") {
            Some(ImportFormat::Parquet)
        } else {
            None
        }
    }
}

/// What one file's import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub file: PathBuf,
    /// Rows of the file read by this run.
    pub rows: u64,
    pub events: u64,
    pub quarantined: u64,
    /// Rows an earlier, interrupted run had already stored.
    pub resumed_after: u64,
    /// Of those, the rows whose identities this run applied again, because
    /// the interrupted run had not saved them.
    pub identities_replayed: u64,
}

/// Imports one file. `progress` is called with the bytes read so far.
///
/// Three stages overlap: this thread reads a chunk of rows and parses it on
/// every core; an orderer thread resolves the previous chunk's persons and
/// builds its rows; a writer thread encodes the chunk before
/// that as Parquet and commits it. Resolving persons is serial, so while
/// it ran as part of one commit stage, a core idled for a third of the
/// commit. Each stage takes the chunks in file order, one at a time, so
/// checkpoints still only grow.
pub fn import_file(
    ingestor: &Ingestor,
    path: &Path,
    format: ImportFormat,
    commit_rows: usize,
    progress: &dyn Fn(u64),
) -> Result<ImportReport> {
    let commit_rows = commit_rows.max(1);
    let metadata =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    let key = checkpoint_key(path, &metadata)?;
    let done = ingestor
        .store()
        .events
        .snapshot()
        .checkpoints
        .get(&key)
        .copied()
        .unwrap_or(0);
    // Rows that were stored were quarantined too when they had to be.
    let quarantined_done = ingestor
        .store()
        .quarantine
        .snapshot()
        .checkpoints
        .get(&key)
        .copied()
        .unwrap_or(0)
        .max(done);
    // Runs of earlier versions saved identities with every chunk: without
    // a checkpoint of their own they cover what events do. Recorded before
    // any row, so that a kill before the first save replays from here.
    let persons = &ingestor.store().persons;
    let identities_done = match persons.snapshot().checkpoints.get(&key) {
        Some(&saved) => saved.min(done),
        None => {
            persons.append(&[], &BTreeMap::from([(key.clone(), done)]))?;
            done
        }
    };
    let mut report = ImportReport {
        file: path.to_path_buf(),
        resumed_after: done,
        identities_replayed: done - identities_done,
        ..Default::default()
    };
    let display = path.display().to_string();
    std::thread::scope(|scope| {
        // One chunk waits while another is ordered and a third written:
        // memory stays bounded at about four chunks.
        let (chunks, orderer_chunks) = std::sync::mpsc::sync_channel::<DecodedChunk>(1);
        // The writer takes an ordered chunk only when it is free.
        let (ordered, writer_chunks) = std::sync::mpsc::sync_channel::<OrderedChunk>(0);
        // The decoders' buffers of written chunks go back to hold later
        // ones: new buffers are faulted in, and zeroed, page by page.
        let (spares, committed) = std::sync::mpsc::channel::<Vec<EventColumns>>();
        // One message per chunk written, so that the orderer can wait for
        // the files of every chunk whose persons it is about to save.
        let (written, written_chunks) = std::sync::mpsc::channel::<()>();
        let writer = scope.spawn(move || -> Result<()> {
            for chunk in writer_chunks {
                // The reader, or the orderer, may have finished.
                let _ = spares.send(chunk.write(ingestor.store())?);
                let _ = written.send(());
            }
            Ok(())
        });
        let orderer = scope.spawn(move || -> Result<()> {
            let writer_stopped = || anyhow::anyhow!("the writer stopped");
            let mut saved_at = std::time::Instant::now();
            // Chunks handed to the writer and not yet written.
            let mut unwritten = 0;
            // Persons are saved with the checkpoint of a chunk once its
            // files are written and no later chunk's persons are applied.
            let save = |unwritten: &mut usize, checkpoint: &BTreeMap<String, u64>| -> Result<()> {
                for _ in 0..std::mem::take(unwritten) {
                    written_chunks.recv().map_err(|_| writer_stopped())?;
                }
                ingestor.save_identities_with(checkpoint)
            };
            // The checkpoint of the last chunk whose identities are not saved.
            let mut unsaved = None;
            for chunk in orderer_chunks {
                let checkpoint = chunk.checkpoint.clone();
                ordered
                    .send(chunk.order(ingestor)?)
                    .map_err(|_| writer_stopped())?;
                unwritten += 1;
                if saved_at.elapsed() >= IDENTITY_SAVE_INTERVAL {
                    save(&mut unwritten, &checkpoint)?;
                    saved_at = std::time::Instant::now();
                    unsaved = None;
                } else {
                    unsaved = Some(checkpoint);
                }
            }
            drop(ordered);
            match unsaved {
                Some(checkpoint) => save(&mut unwritten, &checkpoint),
                None => Ok(()),
            }
        });
        let mut spare_parts = Vec::new();
        let mut decode = |rows: RowChunk, end: u64| -> Result<()> {
            spare_parts.extend(committed.try_iter().flatten());
            let text = rows.text.as_slice();
            // Rows up to `done` are stored: only their identities count.
            let stored = rows.rows.partition_point(|(line, _)| *line <= done);
            let replayed = decode_rows(text, &rows.rows[..stored], &display, &mut Vec::new()).0;
            let (events, rejected) =
                decode_rows(text, &rows.rows[stored..], &display, &mut spare_parts);
            let rejected: Vec<QuarantineInput> = rejected
                .into_iter()
                .filter(|(line, _)| *line > quarantined_done)
                .map(|(_, q)| q)
                .collect();
            report.events += events.iter().map(EventColumns::len).sum::<usize>() as u64;
            report.quarantined += rejected.len() as u64;
            let chunk = DecodedChunk {
                text: rows.text,
                replayed,
                stores_rows: end > done,
                events,
                rejected,
                checkpoint: BTreeMap::from([(key.clone(), end)]),
            };
            // A closed channel means the orderer failed; its error is
            // the one reported.
            chunks
                .send(chunk)
                .map_err(|_| anyhow::anyhow!("the orderer stopped"))
        };
        let limits = ChunkLimits {
            rows: commit_rows,
            text_bytes: CHUNK_TEXT_BYTES,
        };
        let read = read_rows(
            path,
            format,
            identities_done,
            limits,
            &mut report.rows,
            progress,
            &mut decode,
        );
        drop(chunks);
        let ordered = orderer.join().expect("orderer thread");
        let written = writer.join().expect("writer thread");
        written.and(ordered).and(read)
    })?;
    Ok(report)
}

/// Parsed rows of one chunk, ready to commit.
struct DecodedChunk {
    /// The rows' text, which the events' strings point into.
    text: Buffer,
    /// Stored events whose identities an interrupted run had not saved.
    replayed: Vec<EventColumns>,
    /// Whether rows after the stored ones end in this chunk.
    stores_rows: bool,
    /// The events, in file order, in the parts the decoders made.
    events: Vec<EventColumns>,
    rejected: Vec<QuarantineInput>,
    checkpoint: BTreeMap<String, u64>,
}

impl DecodedChunk {
    /// Applies the replayed identities, then the events' (finding each
    /// event's person), and builds the rows to write.
    fn order(self, ingestor: &Ingestor) -> Result<OrderedChunk> {
        ingestor.apply_chunk_identities(&self.text, &self.replayed);
        let (mut rejected, mut events) = (None, None);
        if self.stores_rows {
            let now = chrono::Utc::now().timestamp_micros();
            if !self.rejected.is_empty() {
                rejected = Some(crate::rows::quarantine_batch(&self.rejected, now)?);
            }
            events = Some(ingestor.chunk_batch(&self.text, &self.events, now)?);
        }
        let mut parts = self.events;
        parts.extend(self.replayed);
        Ok(OrderedChunk {
            parts,
            rejected,
            events,
            checkpoint: self.checkpoint,
        })
    }
}

/// A chunk's rows, ready to write; persons are saved by the orderer.
struct OrderedChunk {
    /// The decoders' parts, to hold a later chunk.
    parts: Vec<EventColumns>,
    rejected: Option<RecordBatch>,
    events: Option<RecordBatch>,
    checkpoint: BTreeMap<String, u64>,
}

impl OrderedChunk {
    /// Quarantined rows, then events, each commit carrying the chunk's
    /// checkpoint. Hands back the decoders' buffers.
    fn write(self, store: &plinth_store::Store) -> Result<Vec<EventColumns>> {
        if let Some(rejected) = self.rejected {
            store.quarantine.append(&[rejected], &self.checkpoint)?;
        }
        if let Some(events) = self.events {
            // Compaction rewrites an import's files (one per day and chunk).
            store.events.append_staged(&[events], &self.checkpoint)?;
        }
        Ok(self.parts)
    }
}

/// The rows of one chunk, their text in one buffer: a region of the mapped
/// file for NDJSON, so reading allocates and copies nothing.
struct RowChunk {
    text: Buffer,
    /// Each row's number in the file and where its text is.
    rows: Vec<(u64, Range<usize>)>,
}

/// Rows gathered one at a time (from CSV or Parquet), their text in one
/// buffer: reading allocates once a chunk, not once a row.
#[derive(Default)]
struct RowText {
    text: String,
    rows: Vec<(u64, Range<usize>)>,
}

impl RowText {
    fn push(&mut self, number: u64, row: &str) {
        let start = self.text.len();
        self.text.push_str(row);
        self.rows.push((number, start..self.text.len()));
    }

    /// The rows gathered, leaving room for as many again.
    fn take(&mut self) -> RowChunk {
        let next = RowText {
            text: String::with_capacity(self.text.len() + self.text.len() / 8),
            rows: Vec::with_capacity(self.rows.len()),
        };
        let RowText { text, rows } = std::mem::replace(self, next);
        RowChunk {
            text: Buffer::from_vec(text.into_bytes()),
            rows,
        }
    }
}

/// Reads the rows of `path` after the first `done`, handing them to
/// `commit` in chunks within `limits`, with the number of the last row
/// read.
fn read_rows(
    path: &Path,
    format: ImportFormat,
    done: u64,
    limits: ChunkLimits,
    rows_read: &mut u64,
    progress: &dyn Fn(u64),
    commit: &mut dyn FnMut(RowChunk, u64) -> Result<()>,
) -> Result<()> {
    let display = path.display();
    match format {
        ImportFormat::Ndjson => {
            let file = File::open(path).with_context(|| format!("cannot read {display}"))?;
            let file_bytes = file.metadata()?.len();
            // Where the first line not yet in a chunk starts in the file.
            let mut start = 0u64;
            let mut line_number = 0u64;
            while start < file_bytes {
                let window = map_window(&file, start, file_bytes, limits)
                    .with_context(|| format!("reading {display}"))?;
                let at_end = start + window.len() as u64 == file_bytes;
                // A last line without a newline ends with the file.
                let unterminated =
                    (at_end && window.last() != Some(&b'\n')).then_some(window.len());
                // Where, in the window, the chunk's text and the current
                // line start; lines before the chunk's first row (stored by
                // an earlier run, or blank) are left out of its text.
                let (mut first, mut line_start) = (0, 0);
                let mut rows = Vec::new();
                let mut full = false;
                for end in memchr::memchr_iter(b'\n', &window).chain(unterminated) {
                    line_number += 1;
                    if end - line_start > limits.text_bytes {
                        bail!(too_long(&display, line_number, limits));
                    }
                    let line = window[line_start..end].trim_ascii_end();
                    if line_number > done {
                        *rows_read += 1;
                        if !line.trim_ascii_start().is_empty() {
                            let row = line_start - first;
                            rows.push((line_number, row..row + line.len()));
                        }
                    }
                    line_start = (end + 1).min(window.len());
                    if rows.is_empty() {
                        first = line_start;
                    }
                    if limits.is_full(rows.len(), line_start - first) {
                        full = true;
                        break;
                    }
                }
                progress(start + line_start as u64);
                if !full && !at_end && line_start == 0 {
                    // No line end in more than a chunk's text.
                    bail!(too_long(&display, line_number + 1, limits));
                }
                // The window ends at a chunk, at the file's end, or (after
                // stored lines) in a line, which the next window starts at.
                if !rows.is_empty() || (at_end && !full && line_number > done) {
                    let text = window.slice_with_length(first, line_start - first);
                    commit(RowChunk { text, rows }, line_number)?;
                }
                start += line_start as u64;
            }
        }
        ImportFormat::Csv | ImportFormat::Parquet => {
            let batches = read_tabular(path, format)?;
            progress(std::fs::metadata(path)?.len());
            let mut chunk = RowText::default();
            let mut row_number = 0u64;
            for batch in batches {
                for object in rows_as_json(&batch?)? {
                    row_number += 1;
                    if row_number <= done {
                        continue;
                    }
                    *rows_read += 1;
                    chunk.push(row_number, &object);
                    if limits.is_full(chunk.rows.len(), chunk.text.len()) {
                        commit(chunk.take(), row_number)?;
                    }
                }
            }
            if row_number > done {
                commit(chunk.take(), row_number)?;
            }
        }
    }
    Ok(())
}

/// Maps the part of `file` from `start` that one chunk may take: the
/// chunk's text limit and one more line of up to that limit, with its line
/// end. Only the pages read are faulted in, and a chunk's pages are
/// unmapped when the last buffer over them is dropped.
fn map_window(
    file: &File,
    start: u64,
    file_bytes: u64,
    limits: ChunkLimits,
) -> std::io::Result<Buffer> {
    let most = 2 * limits.text_bytes as u64 + 2;
    let len = usize::try_from((file_bytes - start).min(most)).expect("under the text limit");
    // SAFETY: a mapping shows the file as it is, so the file must not
    // change while it is imported: a rewrite would change text already
    // checked to be UTF-8 under the strings made from it, and reading past
    // a truncation faults (SIGBUS). An import reads a finished file (the
    // command's help says so); one that changes later is a new import
    // (see `checkpoint_key`).
    let map = unsafe {
        memmap2::MmapOptions::new()
            .offset(start)
            .len(len)
            .map(file)?
    };
    Ok(Buffer::from(bytes::Bytes::from_owner(map)))
}

fn too_long(file: &std::path::Display, line: u64, limits: ChunkLimits) -> String {
    format!(
        "reading {file}: line {line} is longer than the {}-byte limit",
        limits.text_bytes
    )
}

/// A file is the same import while its path, size and modification time
/// are; a changed file imports again from the start.
fn checkpoint_key(path: &Path, metadata: &std::fs::Metadata) -> Result<String> {
    let canonical = path.canonicalize()?;
    let modified = metadata
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_micros())
        .unwrap_or(0);
    Ok(format!(
        "import:{}:{}:{modified}",
        canonical.display(),
        metadata.len()
    ))
}

/// Parses and normalises rows on every core; keeps file order. The events
/// stay in one part per core: joining them would copy every event again.
/// Parts are filled from `spare_parts` while it has any.
fn decode_rows(
    text: &[u8],
    rows: &[(u64, Range<usize>)],
    file: &str,
    spare_parts: &mut Vec<EventColumns>,
) -> (Vec<EventColumns>, Vec<(u64, QuarantineInput)>) {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let size = rows.len().div_ceil(threads).max(1);
    let received = chrono::Utc::now().timestamp_micros();
    let parts: Vec<_> = std::thread::scope(|scope| {
        rows.chunks(size)
            .enumerate()
            .map(|(index, part)| {
                let mut events = spare_parts.pop().unwrap_or_default();
                // Buffer 0 is the chunk's text.
                events.reset(index as u32 + 1);
                scope.spawn(move || decode_part(text, part, file, received, events))
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().expect("decoder thread"))
            .collect()
    });
    let mut events = Vec::with_capacity(parts.len());
    let mut rejected = Vec::new();
    for (part_events, part_rejected) in parts {
        events.push(part_events);
        rejected.extend(part_rejected);
    }
    (events, rejected)
}

/// Decodes one decoder's share of a chunk's rows. Each row is checked to
/// be UTF-8 here, on every core, where it is parsed anyway; a row that is
/// not is quarantined like any other bad row, its invalid bytes stored as
/// U+FFFD (the quarantine's payload is text).
fn decode_part(
    text: &[u8],
    rows: &[(u64, Range<usize>)],
    file: &str,
    received_at: i64,
    mut events: EventColumns,
) -> (EventColumns, Vec<(u64, QuarantineInput)>) {
    events.reserve(rows.len());
    let mut rejected = Vec::new();
    for (line, range) in rows {
        let row = &text[range.clone()];
        let reason = match std::str::from_utf8(row) {
            Ok(row) => match plinth_capture::normalize_json_text(row, received_at) {
                Ok(event) => {
                    events.push(text, event);
                    continue;
                }
                Err(rejection) => rejection.reason,
            },
            Err(error) => format!(
                "not UTF-8: byte {} of the line begins no valid character \
                 (the payload shows U+FFFD in its place)",
                error.valid_up_to() + 1
            ),
        };
        rejected.push((
            *line,
            QuarantineInput {
                source: format!("{file}:{line}"),
                reason,
                payload: String::from_utf8_lossy(row).into_owned(),
            },
        ));
    }
    (events, rejected)
}

fn read_tabular(
    path: &Path,
    format: ImportFormat,
) -> Result<Box<dyn Iterator<Item = Result<RecordBatch, datafusion::arrow::error::ArrowError>>>> {
    let file = File::open(path)?;
    match format {
        ImportFormat::Csv => {
            // Every column as text: the normaliser decides what each means.
            let (header, _) = datafusion::arrow::csv::reader::Format::default()
                .with_header(true)
                .infer_schema(File::open(path)?, Some(0))
                .with_context(|| format!("{} has no readable CSV header", path.display()))?;
            if header.fields().is_empty() {
                bail!("{} has no header line", path.display());
            }
            let fields: Vec<Field> = header
                .fields()
                .iter()
                .map(|f| Field::new(f.name(), DataType::Utf8, true))
                .collect();
            let reader = datafusion::arrow::csv::ReaderBuilder::new(Arc::new(Schema::new(fields)))
                .with_header(true)
                .with_batch_size(64 * 1024)
                .build(file)?;
            Ok(Box::new(reader))
        }
        ImportFormat::Parquet => {
            let reader =
                datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                    file,
                )
                .with_context(|| format!("{} is not a Parquet file", path.display()))?
                .with_batch_size(64 * 1024)
                .build()?;
            Ok(Box::new(reader))
        }
        ImportFormat::Ndjson => unreachable!("NDJSON is read line by line"),
    }
}

/// Each row of `batch` as JSON object text, converted on every core (this
/// runs on the reading thread, which the tabular formats otherwise leave the
/// slowest stage).
fn rows_as_json(batch: &RecordBatch) -> Result<Vec<String>> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let size = batch.num_rows().div_ceil(threads).max(1);
    let parts: Vec<Result<Vec<String>>> = std::thread::scope(|scope| {
        (0..batch.num_rows())
            .step_by(size)
            .map(|start| {
                let part = batch.slice(start, size.min(batch.num_rows() - start));
                scope.spawn(move || part_as_json(&part))
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().expect("JSON conversion thread"))
            .collect()
    });
    let mut rows = Vec::with_capacity(batch.num_rows());
    for part in parts {
        rows.extend(part?);
    }
    Ok(rows)
}

/// Each row of `batch` as JSON object text; a `properties` column holding
/// JSON text becomes an object.
fn part_as_json(batch: &RecordBatch) -> Result<Vec<String>> {
    let mut buffer = Vec::new();
    {
        let mut writer = datafusion::arrow::json::LineDelimitedWriter::new(&mut buffer);
        writer.write(batch)?;
        writer.finish()?;
    }
    let text = String::from_utf8(buffer)?;
    Ok(text
        .lines()
        .map(|line| {
            let mut object: serde_json::Map<String, Value> =
                serde_json::from_str(line).unwrap_or_default();
            if let Some(Value::String(properties)) = object.get("properties")
                && let Ok(parsed @ Value::Object(_)) = serde_json::from_str(properties)
            {
                object.insert("properties".to_string(), parsed);
            }
            Value::Object(object).to_string()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row's number in its file, and its text.
    type NumberedRow = (u64, String);

    /// Reads `text` as an NDJSON file after its first `done` lines; the rows
    /// with their line numbers, and the line each commit ended at.
    fn read_ndjson(
        text: &str,
        done: u64,
        limits: ChunkLimits,
    ) -> Result<(Vec<NumberedRow>, Vec<u64>)> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.ndjson");
        std::fs::write(&path, text).unwrap();
        let (mut rows, mut ends, mut read) = (Vec::new(), Vec::new(), 0);
        let mut commit = |chunk: RowChunk, end: u64| {
            assert!(chunk.rows.len() <= limits.rows);
            // A chunk ends at the first line end past its limit.
            assert!(chunk.text.len() < 2 * limits.text_bytes + 2);
            let text = std::str::from_utf8(&chunk.text).unwrap();
            for (line, range) in &chunk.rows {
                rows.push((*line, text[range.clone()].to_owned()));
            }
            ends.push(end);
            Ok(())
        };
        read_rows(
            &path,
            ImportFormat::Ndjson,
            done,
            limits,
            &mut read,
            &|_| {},
            &mut commit,
        )?;
        Ok((rows, ends))
    }

    fn at_most(rows: usize) -> ChunkLimits {
        ChunkLimits {
            rows,
            text_bytes: CHUNK_TEXT_BYTES,
        }
    }

    #[test]
    fn ndjson_rows_across_chunks_are_read_once_in_order() {
        // Lines of many lengths, over many pages and chunks starting
        // anywhere in a page, with blank lines, CRLF endings and a last
        // line without a newline.
        let mut text = String::new();
        let mut expected = Vec::new();
        let mut line = 0u64;
        while text.len() < 3 << 20 {
            line += 1;
            let row = format!(
                "{{\"n\":{line},\"pad\":\"{}\"}}",
                "x".repeat(line as usize % 700)
            );
            match line % 50 {
                0 => text.push_str("  \n"),
                7 => text.push_str(&format!("{row}\r\n")),
                _ => text.push_str(&format!("{row}\n")),
            }
            if !line.is_multiple_of(50) {
                expected.push((line, row));
            }
        }
        line += 1;
        text.push_str("{\"last\":true}");
        expected.push((line, "{\"last\":true}".to_owned()));

        let (rows, ends) = read_ndjson(&text, 0, at_most(997)).unwrap();
        assert_eq!(rows, expected);
        assert_eq!(ends.last(), Some(&line));
        assert!(ends.windows(2).all(|w| w[0] < w[1]));

        // A resumed read starts after the stored lines.
        let done = line / 2;
        let (rows, _) = read_ndjson(&text, done, at_most(4096)).unwrap();
        let after: Vec<_> = expected.into_iter().filter(|(n, _)| *n > done).collect();
        assert_eq!(rows, after);
    }

    #[test]
    fn chunks_end_at_their_text_limit_and_longer_lines_are_refused() {
        let lines: Vec<String> = (0..100).map(|n| format!("{{\"n\":{n}}}")).collect();
        let limits = ChunkLimits {
            rows: 1000,
            text_bytes: 64,
        };
        let (read, ends) = read_ndjson(&lines.join("\n"), 0, limits).unwrap();
        let expected: Vec<(u64, String)> = (1..).zip(lines.iter().cloned()).collect();
        assert_eq!(read, expected);
        // About 900 bytes in chunks of a little over 64.
        assert!((10..=15).contains(&ends.len()), "{ends:?}");
        // Resumed, the stored lines fill windows of their own first.
        let (resumed, _) = read_ndjson(&lines.join("\n"), 60, limits).unwrap();
        assert_eq!(resumed, expected[60..]);

        let line_2_is_refused = |text: &str| {
            let error = read_ndjson(text, 0, limits).unwrap_err();
            assert!(
                error
                    .to_string()
                    .ends_with("line 2 is longer than the 64-byte limit"),
                "{error}"
            );
        };
        let long = format!(
            "{}\n{{\"pad\":\"{}\"}}\n{{\"after\":1}}\n",
            lines[0],
            "x".repeat(100)
        );
        line_2_is_refused(&long);
        // One without a line end in a whole window.
        line_2_is_refused(&format!(
            "{}\n{}\n{{\"after\":1}}\n",
            lines[0],
            "x".repeat(300)
        ));
    }
}
