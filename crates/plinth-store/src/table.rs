//! One table: its snapshot, its in-memory buffer, and the operations that
//! publish new snapshots (append, flush, replace, compact, retain, vacuum).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use datafusion::arrow::array::new_null_array;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};

use crate::log::{self, DataFile, Snapshot, Tombstone};
use crate::write::{FileForm, map_on_every_core, write_files};

/// What a table is: its name, schema and physical layout.
#[derive(Debug, Clone)]
pub struct TableSpec {
    pub name: &'static str,
    pub schema: SchemaRef,
    /// The timestamp column whose UTC date partitions the files.
    pub partition_column: Option<&'static str>,
    /// The order of rows inside a file.
    pub sort_columns: &'static [&'static str],
}

/// What a query reads: the files of one snapshot and the buffered rows that
/// are not in those files.
#[derive(Debug, Clone)]
pub struct TableView {
    pub table_dir: PathBuf,
    pub snapshot: Arc<Snapshot>,
    pub buffered: Vec<RecordBatch>,
}

impl TableView {
    pub fn rows(&self) -> u64 {
        self.snapshot.rows()
            + self
                .buffered
                .iter()
                .map(|b| b.num_rows() as u64)
                .sum::<u64>()
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CompactionReport {
    pub files_before: usize,
    pub files_after: usize,
    pub rows: u64,
}

struct State {
    snapshot: Arc<Snapshot>,
    buffered: Vec<RecordBatch>,
}

/// A table of the store. All methods are synchronous and may block on disk;
/// async callers run them on a blocking thread.
pub struct Table {
    spec: TableSpec,
    dir: PathBuf,
    writable: bool,
    state: RwLock<State>,
    /// Serialises the writers of this table (commits are read-modify-write).
    write_lock: Mutex<()>,
    /// Per (file, column), whether the file's statistics show no null
    /// there; files never change, so each footer is read once.
    null_free: Mutex<HashMap<(String, String), bool>>,
}

impl Table {
    /// Opens the table in `dir`. A writable table first removes what a
    /// crashed writer may have left: temporary log files and data files that
    /// no snapshot names.
    pub(crate) fn open(dir: PathBuf, spec: TableSpec, writable: bool) -> Result<Table> {
        let snapshot = log::read_latest(&dir)?;
        if writable {
            fs::create_dir_all(&dir)?;
            log::remove_temporaries(&dir)?;
            remove_orphans(&dir, &snapshot)?;
        }
        Ok(Table {
            spec,
            dir,
            writable,
            state: RwLock::new(State {
                snapshot: Arc::new(snapshot),
                buffered: Vec::new(),
            }),
            write_lock: Mutex::new(()),
            null_free: Mutex::new(HashMap::new()),
        })
    }

    pub fn name(&self) -> &'static str {
        self.spec.name
    }

    pub fn schema(&self) -> SchemaRef {
        self.spec.schema.clone()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A consistent view for one query.
    pub fn view(&self) -> TableView {
        let state = self.state.read().expect("table state lock");
        TableView {
            table_dir: self.dir.clone(),
            snapshot: state.snapshot.clone(),
            buffered: state.buffered.clone(),
        }
    }

    /// Re-reads the newest snapshot, for processes that read a table another
    /// process writes.
    pub fn refresh(&self) -> Result<()> {
        let snapshot = log::read_latest(&self.dir)?;
        let mut state = self.state.write().expect("table state lock");
        if snapshot.version > state.snapshot.version {
            state.snapshot = Arc::new(snapshot);
        }
        Ok(())
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.state
            .read()
            .expect("table state lock")
            .snapshot
            .clone()
    }

    /// Makes rows visible to queries at once, before they reach Parquet.
    /// Durability is the caller's: the ingest write-ahead log.
    pub fn buffer(&self, batch: RecordBatch) -> Result<()> {
        self.check_schema(&batch, Strings::AsDeclared)?;
        self.state
            .write()
            .expect("table state lock")
            .buffered
            .push(batch);
        Ok(())
    }

    /// Whether no row of the current view is null in `column`, by the
    /// files' statistics and the buffered rows. A file that predates the
    /// column, or whose statistics do not count nulls, counts as holding
    /// some.
    pub fn never_null(&self, column: &str) -> Result<bool> {
        let view = self.view();
        if view.buffered.iter().any(|batch| {
            batch
                .column_by_name(column)
                .is_none_or(|c| c.null_count() > 0)
        }) {
            return Ok(false);
        }
        let mut known = self.null_free.lock().expect("null-free cache lock");
        for file in &view.snapshot.files {
            let key = (file.path.clone(), column.to_string());
            let null_free = match known.get(&key) {
                Some(&null_free) => null_free,
                None => {
                    let null_free = file_never_null(&self.dir.join(&file.path), column)?;
                    known.insert(key, null_free);
                    null_free
                }
            };
            if !null_free {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Every row of the current view, read into memory (for small tables).
    pub fn read_all(&self) -> Result<Vec<RecordBatch>> {
        let view = self.view();
        let mut batches = Vec::new();
        for file in &view.snapshot.files {
            batches.extend(read_file(
                &self.dir.join(&file.path),
                &self.spec.schema,
                Strings::AsDeclared,
            )?);
        }
        batches.extend(view.buffered);
        Ok(batches)
    }

    pub fn buffered_rows(&self) -> usize {
        let state = self.state.read().expect("table state lock");
        state.buffered.iter().map(|b| b.num_rows()).sum()
    }

    /// Writes `batches` as new files and publishes them in one commit, with
    /// `checkpoints` updated in the same commit. String columns may come as
    /// views (`Utf8View`) of the table's `Utf8`, in every batch of the call
    /// alike: the files are the same.
    pub fn append(
        &self,
        batches: &[RecordBatch],
        checkpoints: &BTreeMap<String, u64>,
    ) -> Result<Arc<Snapshot>> {
        self.append_in(FileForm::Final, batches, checkpoints)
    }

    /// [`Table::append`], its files written to be rewritten by compaction
    /// (see [`FileForm::Staged`]): for writers whose files compaction
    /// merges anyway, such as imports.
    pub fn append_staged(
        &self,
        batches: &[RecordBatch],
        checkpoints: &BTreeMap<String, u64>,
    ) -> Result<Arc<Snapshot>> {
        self.append_in(FileForm::Staged, batches, checkpoints)
    }

    fn append_in(
        &self,
        form: FileForm,
        batches: &[RecordBatch],
        checkpoints: &BTreeMap<String, u64>,
    ) -> Result<Arc<Snapshot>> {
        self.check_writable()?;
        for batch in batches {
            self.check_schema(batch, Strings::AsViews)?;
        }
        if batches
            .windows(2)
            .any(|pair| pair[0].schema() != pair[1].schema())
        {
            bail!(
                "the batches of one append to {} hold their strings in different forms",
                self.spec.name
            );
        }
        let _writer = self.write_lock.lock().expect("write lock");
        let files = write_files(&self.dir, &self.spec, batches, form)?;
        self.commit("append", |snapshot| {
            snapshot.files.extend(files);
            snapshot.checkpoints.extend(checkpoints.clone());
        })
    }

    /// Moves the in-memory buffer into Parquet. The commit and the removal of
    /// the flushed rows from the buffer happen under one lock, so a query sees
    /// those rows exactly once.
    pub fn flush(&self) -> Result<usize> {
        self.check_writable()?;
        let _writer = self.write_lock.lock().expect("write lock");
        let pending = self
            .state
            .read()
            .expect("table state lock")
            .buffered
            .clone();
        if pending.is_empty() {
            return Ok(0);
        }
        let rows = pending.iter().map(|b| b.num_rows()).sum();
        let files = write_files(&self.dir, &self.spec, &pending, FileForm::Final)?;
        let mut state = self.state.write().expect("table state lock");
        let mut snapshot = (*state.snapshot).clone();
        snapshot.files.extend(files);
        self.publish(&mut snapshot, "flush")?;
        state.snapshot = Arc::new(snapshot);
        state.buffered.drain(..pending.len());
        Ok(rows)
    }

    /// Moves the first `batches` buffered batches into Parquet, publishing
    /// `checkpoints` in the same commit; returns the rows moved. Batches
    /// buffered meanwhile stay buffered. A caller that alone appends to the
    /// buffer knows exactly which rows a checkpoint covers (the capture
    /// pipeline records the write-ahead log position this way).
    pub fn flush_prefix(
        &self,
        batches: usize,
        checkpoints: &BTreeMap<String, u64>,
    ) -> Result<usize> {
        self.check_writable()?;
        let _writer = self.write_lock.lock().expect("write lock");
        let pending: Vec<RecordBatch> = {
            let state = self.state.read().expect("table state lock");
            if state.buffered.len() < batches {
                bail!(
                    "table {} has {} buffered batches, fewer than the {batches} to flush",
                    self.spec.name,
                    state.buffered.len()
                );
            }
            state.buffered[..batches].to_vec()
        };
        let rows = pending.iter().map(|b| b.num_rows()).sum();
        let files = write_files(&self.dir, &self.spec, &pending, FileForm::Final)?;
        let mut state = self.state.write().expect("table state lock");
        let mut snapshot = (*state.snapshot).clone();
        snapshot.files.extend(files);
        snapshot.checkpoints.extend(checkpoints.clone());
        self.publish(&mut snapshot, "flush")?;
        state.snapshot = Arc::new(snapshot);
        state.buffered.drain(..batches);
        Ok(rows)
    }

    /// Replaces the whole content of the table (for small, mutable tables
    /// such as `persons`), with `checkpoints` updated in the same commit.
    pub fn replace(
        &self,
        batches: &[RecordBatch],
        checkpoints: &BTreeMap<String, u64>,
    ) -> Result<Arc<Snapshot>> {
        self.check_writable()?;
        let _writer = self.write_lock.lock().expect("write lock");
        let files = write_files(&self.dir, &self.spec, batches, FileForm::Final)?;
        self.commit("replace", |snapshot| {
            let now = now_micros();
            let old = std::mem::replace(&mut snapshot.files, files);
            snapshot.checkpoints.extend(checkpoints.clone());
            snapshot
                .tombstones
                .extend(old.into_iter().map(|f| Tombstone {
                    path: f.path,
                    removed_at_micros: now,
                }));
        })
    }

    /// Merges each partition's small files into files of up to
    /// `target_rows`, sorted by the table's sort key, and rewrites staged
    /// files in their final form. Readers keep reading the
    /// old snapshot until the new one is published; the old files stay on
    /// disk until [`Table::vacuum`].
    pub fn compact(&self, target_rows: u64) -> Result<CompactionReport> {
        self.check_writable()?;
        let _writer = self.write_lock.lock().expect("write lock");
        let snapshot = self.snapshot();
        let mut by_partition: BTreeMap<Option<String>, Vec<&DataFile>> = BTreeMap::new();
        for file in &snapshot.files {
            by_partition
                .entry(file.partition.clone())
                .or_default()
                .push(file);
        }
        let groups: Vec<Vec<&DataFile>> = by_partition
            .values()
            .flat_map(|files| compaction_groups(files, target_rows))
            .collect();
        // Each group is read, sorted and written on one core; an import
        // leaves dozens of days to merge.
        let merged = map_on_every_core(&groups, |group| -> Result<Vec<DataFile>> {
            let mut batches = Vec::new();
            for file in group {
                batches.extend(read_file(
                    &self.dir.join(&file.path),
                    &self.spec.schema,
                    Strings::AsViews,
                )?);
            }
            write_files(&self.dir, &self.spec, &batches, FileForm::Final)
        });
        let mut added = Vec::new();
        for files in merged {
            added.extend(files?);
        }
        let removed: Vec<String> = groups.iter().flatten().map(|f| f.path.clone()).collect();
        let report = CompactionReport {
            files_before: snapshot.files.len(),
            files_after: snapshot.files.len() - removed.len() + added.len(),
            rows: snapshot.rows(),
        };
        if removed.is_empty() {
            return Ok(report);
        }
        self.commit("compact", |snapshot| {
            tombstone(snapshot, &removed.iter().cloned().collect());
            snapshot.files.extend(added);
        })?;
        Ok(report)
    }

    /// Drops whole partitions older than `max_age`; returns the rows dropped.
    pub fn retain(&self, max_age: Duration) -> Result<u64> {
        self.check_writable()?;
        let Some(_) = self.spec.partition_column else {
            bail!("table {} is not partitioned by date", self.spec.name);
        };
        let _writer = self.write_lock.lock().expect("write lock");
        let cutoff = now_micros() - max_age.as_micros() as i64;
        let snapshot = self.snapshot();
        let expired: HashSet<String> = snapshot
            .files
            .iter()
            .filter(|f| f.max_micros.is_some_and(|m| m < cutoff))
            .map(|f| f.path.clone())
            .collect();
        let rows = snapshot
            .files
            .iter()
            .filter(|f| expired.contains(&f.path))
            .map(|f| f.rows)
            .sum();
        if !expired.is_empty() {
            self.commit("retention", |snapshot| tombstone(snapshot, &expired))?;
        }
        Ok(rows)
    }

    /// Deletes files that left the snapshot more than `grace` ago; returns
    /// how many were deleted.
    pub fn vacuum(&self, grace: Duration) -> Result<usize> {
        self.check_writable()?;
        let _writer = self.write_lock.lock().expect("write lock");
        let cutoff = now_micros() - grace.as_micros() as i64;
        let snapshot = self.snapshot();
        let (expired, kept): (Vec<_>, Vec<_>) = snapshot
            .tombstones
            .iter()
            .cloned()
            .partition(|t| t.removed_at_micros <= cutoff);
        if expired.is_empty() {
            return Ok(0);
        }
        // Forget the tombstones first: a crash in between leaves orphans,
        // which the next open removes.
        self.commit("vacuum", |snapshot| snapshot.tombstones = kept)?;
        log::delete_tombstoned(&self.dir, &expired)?;
        remove_empty_partition_dirs(&self.dir)?;
        Ok(expired.len())
    }

    fn commit(&self, operation: &str, change: impl FnOnce(&mut Snapshot)) -> Result<Arc<Snapshot>> {
        let mut state = self.state.write().expect("table state lock");
        let mut snapshot = (*state.snapshot).clone();
        change(&mut snapshot);
        self.publish(&mut snapshot, operation)?;
        let snapshot = Arc::new(snapshot);
        state.snapshot = snapshot.clone();
        Ok(snapshot)
    }

    fn publish(&self, snapshot: &mut Snapshot, operation: &str) -> Result<()> {
        snapshot.version += 1;
        snapshot.operation = operation.to_string();
        snapshot.committed_at_micros = now_micros();
        log::commit(&self.dir, snapshot)
    }

    fn check_writable(&self) -> Result<()> {
        if !self.writable {
            bail!("table {} is open read-only", self.spec.name);
        }
        Ok(())
    }

    /// Whether `batch` holds the table's columns, its strings as declared
    /// or, with [`Strings::AsViews`], possibly as views.
    fn check_schema(&self, batch: &RecordBatch, strings: Strings) -> Result<()> {
        let fits = match strings {
            Strings::AsDeclared => batch.schema().fields() == self.spec.schema.fields(),
            Strings::AsViews => crate::write::holds_table_schema(batch, &self.spec.schema),
        };
        if !fits {
            bail!(
                "batch schema does not match table {}: {:?}",
                self.spec.name,
                batch.schema()
            );
        }
        Ok(())
    }
}

fn tombstone(snapshot: &mut Snapshot, paths: &HashSet<String>) {
    let now = now_micros();
    snapshot.files.retain(|f| !paths.contains(&f.path));
    snapshot
        .tombstones
        .extend(paths.iter().map(|path| Tombstone {
            path: path.clone(),
            removed_at_micros: now,
        }));
}

/// Groups of files worth rewriting: runs of small or staged files whose
/// rows add up to at most `target_rows` (a larger staged file alone), each
/// group at least two files or a staged one.
fn compaction_groups<'a>(files: &[&'a DataFile], target_rows: u64) -> Vec<Vec<&'a DataFile>> {
    let mut small: Vec<&DataFile> = files
        .iter()
        .copied()
        .filter(|f| f.rows < target_rows || f.staged)
        .collect();
    small.sort_by_key(|f| f.rows);
    let mut groups = Vec::new();
    let mut current: Vec<&DataFile> = Vec::new();
    let mut rows = 0;
    for file in small {
        if rows + file.rows > target_rows && !current.is_empty() {
            groups.push(std::mem::take(&mut current));
            rows = 0;
        }
        rows += file.rows;
        current.push(file);
    }
    groups.push(current);
    groups.retain(|g| g.len() > 1 || g.iter().any(|f| f.staged));
    groups
}

/// The form of a table's string columns in batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strings {
    /// As the table declares them.
    AsDeclared,
    /// As views (`Utf8View`): into text a writer already holds, or into
    /// the decoded pages of a file read only to move its rows (compaction).
    AsViews,
}

/// The rows of one data file in the table's schema: a nullable column the
/// file predates (it was written by an earlier version) reads as nulls.
fn read_file(path: &Path, schema: &SchemaRef, strings: Strings) -> Result<Vec<RecordBatch>> {
    let file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut metadata = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new())?;
    let mut schema = schema.clone();
    if strings == Strings::AsViews {
        let as_views = ArrowReaderOptions::new()
            .with_schema(crate::schema::strings_as_views(metadata.schema()));
        metadata = ArrowReaderMetadata::try_new(metadata.metadata().clone(), as_views)?;
        schema = crate::schema::strings_as_views(&schema);
    }
    let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, metadata)
        .with_batch_size(64 * 1024)
        .build()?;
    reader
        .map(|batch| {
            let batch = batch?;
            if batch.schema().fields() == schema.fields() {
                return Ok(batch);
            }
            let columns = schema
                .fields()
                .iter()
                .map(|field| match batch.column_by_name(field.name()) {
                    Some(column) => Ok(column.clone()),
                    None if field.is_nullable() => {
                        Ok(new_null_array(field.data_type(), batch.num_rows()))
                    }
                    None => bail!("{} has no column {}", path.display(), field.name()),
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(RecordBatch::try_new(schema.clone(), columns)?)
        })
        .collect()
}

/// Deletes data files that are neither live nor tombstoned: the leftovers of
/// a writer killed between writing a file and committing it.
fn remove_orphans(dir: &Path, snapshot: &Snapshot) -> Result<()> {
    let known: HashSet<&str> = snapshot
        .files
        .iter()
        .map(|f| f.path.as_str())
        .chain(snapshot.tombstones.iter().map(|t| t.path.as_str()))
        .collect();
    for path in parquet_files(dir)? {
        let relative = path
            .strip_prefix(dir)
            .expect("under dir")
            .to_string_lossy()
            .replace('\\', "/");
        if !known.contains(relative.as_str()) {
            tracing::warn!(file = %path.display(), "removing a file no snapshot names");
            fs::remove_file(&path)?;
        }
    }
    Ok(())
}

fn parquet_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        for entry in fs::read_dir(&folder)? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                if entry.file_name() != log::LOG_DIR {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "parquet") {
                out.push(path);
            }
        }
    }
    Ok(out)
}

fn remove_empty_partition_dirs(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() && entry.file_name().to_string_lossy().starts_with("date=") {
            // Fails harmlessly when the folder still has files.
            let _ = fs::remove_dir(entry.path());
        }
    }
    Ok(())
}

pub(crate) fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// Whether the footer of the Parquet file at `path` shows no null in
/// `column` in any row group.
fn file_never_null(path: &Path, column: &str) -> Result<bool> {
    let file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader = SerializedFileReader::new(file)
        .with_context(|| format!("reading the footer of {}", path.display()))?;
    let metadata = reader.metadata();
    let Some(index) = metadata
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.path().string() == column)
    else {
        return Ok(false);
    };
    Ok(metadata.row_groups().iter().all(|group| {
        group
            .column(index)
            .statistics()
            .and_then(|s| s.null_count_opt())
            == Some(0)
    }))
}
