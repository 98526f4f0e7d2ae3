//! Turning record batches into sorted, date-partitioned Parquet files.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use datafusion::arrow::array::{Array, ArrayRef, TimestampMicrosecondArray, UInt32Array};
use datafusion::arrow::compute::{
    LexicographicalComparator, SortColumn, concat_batches, max, min, take,
};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::parquet::arrow::arrow_writer::ArrowWriterOptions;
use datafusion::parquet::arrow::{ArrowWriter, add_encoded_arrow_schema_to_metadata};
use datafusion::parquet::basic::{Compression, Encoding, ZstdLevel};
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use datafusion::parquet::schema::types::ColumnPath;

use crate::log::{DataFile, sync_path};
use crate::table::TableSpec;

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// The partition (UTC day number since the epoch) a row with this
/// partition timestamp is stored under; every file holds one.
pub fn partition_day(micros: i64) -> i64 {
    micros.div_euclid(MICROS_PER_DAY)
}

/// The first instant of partition `day`, in UTC microseconds.
pub fn partition_start(day: i64) -> i64 {
    day * MICROS_PER_DAY
}

/// Rows per Parquet row group: small enough that pruning skips work, large
/// enough that scans stay sequential.
const ROW_GROUP_ROWS: usize = 256 * 1024;

/// Sorts `batches` by partition day and, for [`FileForm::Final`], the
/// table's sort key, and writes one file per partition (event date) in
/// `form`. Files are fsynced under their final names, which
/// no snapshot references yet; the caller publishes them through a log
/// commit.
pub(crate) fn write_files(
    table_dir: &Path,
    spec: &TableSpec,
    batches: &[RecordBatch],
    form: FileForm,
) -> Result<Vec<DataFile>> {
    let batches: Vec<&RecordBatch> = batches.iter().filter(|b| b.num_rows() > 0).collect();
    let Some(first) = batches.first() else {
        return Ok(vec![]);
    };
    // The batches of one write share one form: strings as declared, or as
    // views (`Table::append`).
    let batch = concat_batches(&first.schema(), batches.iter().copied())?;
    let partition_micros = match spec.partition_column {
        Some(name) => Some(
            batch
                .column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>())
                .with_context(|| format!("partition column {name} must be a timestamp"))?
                .clone(),
        ),
        None => None,
    };

    // Each day must be a contiguous run. Final files sort by (day, sort
    // key...) in one pass; staged rows keep their order within a day
    // (compaction sorts them), which a counting sort gives in linear time.
    let order = match form {
        FileForm::Final => full_key_order(&batch, spec, partition_micros.as_ref())?,
        FileForm::Staged => partition_micros
            .as_ref()
            .and_then(|micros| day_order(micros.values())),
    };
    // Writers that hand rows over in file order (capture) skip the copy.
    let sorted = match order {
        None => batch,
        Some(order) => take_batch(&batch, &order)?,
    };

    let mut parts = Vec::new();
    match spec.partition_column {
        None => parts.push((None, sorted, None)),
        Some(name) => {
            let micros = sorted
                .column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>())
                .expect("checked above")
                .clone();
            let mut start = 0;
            while start < sorted.num_rows() {
                let day = partition_day(micros.value(start));
                let mut end = start + 1;
                while end < sorted.num_rows() && partition_day(micros.value(end)) == day {
                    end += 1;
                }
                let day_micros = micros.slice(start, end - start);
                let range = (
                    min(&day_micros).expect("non-empty"),
                    max(&day_micros).expect("non-empty"),
                );
                parts.push((
                    Some(day_name(day)),
                    sorted.slice(start, end - start),
                    Some(range),
                ));
                start = end;
            }
        }
    }
    write_parts(table_dir, &spec.schema, parts, form)
}

/// A file to write: its partition, its rows and their time range.
type Part = (Option<String>, RecordBatch, Option<(i64, i64)>);

/// Writes one file per part, in order, on every core: encoding and
/// compressing is most of a flush, and one chunk of an import holds
/// several days. The files and their folders are synced together at the
/// end (see [`sync_together`]).
fn write_parts(
    table_dir: &Path,
    schema: &SchemaRef,
    parts: Vec<Part>,
    form: FileForm,
) -> Result<Vec<DataFile>> {
    let files = map_on_every_core(&parts, |(partition, batch, range)| {
        write_one(table_dir, schema, partition.clone(), batch, *range, form)
    })
    .into_iter()
    .collect::<Result<Vec<_>>>()?;
    let paths: Vec<PathBuf> = files.iter().map(|f| table_dir.join(&f.path)).collect();
    sync_together(&paths)?;
    Ok(files)
}

/// Syncs the files at `paths`, then their folders (so that their names are
/// durable too), each from one of many threads. A sync waits on the disk,
/// not the CPU: one at a time, the 180 of an import's chunk (a file and a
/// folder per day) were a sixth of its commit; at once, the file system
/// commits them together. Files are opened again to be synced, so that a
/// write of many days does not hold a descriptor for each.
fn sync_together(paths: &[PathBuf]) -> Result<()> {
    const THREADS: usize = 32;
    fn on_threads(paths: &[&Path]) -> Result<()> {
        let share = paths.len().div_ceil(THREADS).max(1);
        std::thread::scope(|scope| {
            let syncs: Vec<_> = paths
                .chunks(share)
                .map(|part| scope.spawn(|| part.iter().try_for_each(|path| sync_path(path))))
                .collect();
            syncs
                .into_iter()
                .try_for_each(|sync| sync.join().expect("sync thread"))
        })
    }
    let files: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    on_threads(&files)?;
    let folders: BTreeSet<&Path> = files
        .iter()
        .map(|path| path.parent().expect("a file has a folder"))
        .collect();
    on_threads(&folders.into_iter().collect::<Vec<_>>())
}

/// `work` of each item, in order; items go round-robin to one thread per
/// core.
pub(crate) fn map_on_every_core<T: Sync, R: Send>(
    items: &[T],
    work: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len());
    if threads <= 1 {
        return items.iter().map(work).collect();
    }
    let mut done: Vec<(usize, R)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|first| {
                let work = &work;
                scope.spawn(move || {
                    (first..items.len())
                        .step_by(threads)
                        .map(|index| (index, work(&items[index])))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().expect("worker thread"))
            .collect()
    });
    done.sort_by_key(|(index, _)| *index);
    done.into_iter().map(|(_, result)| result).collect()
}

fn take_batch(batch: &RecordBatch, indices: &UInt32Array) -> Result<RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .map(|c| take(c.as_ref(), indices, None))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

/// The row order that sorts `columns` ascending, or `None` when the rows
/// are in order already. Compared in Arrow's row format: one `memcmp` per
/// comparison instead of a comparator per column, which for the string keys
/// of `events` was most of a flush's sort.
fn sort_indices(columns: &[ArrayRef]) -> Result<Option<UInt32Array>> {
    if columns.is_empty() {
        return Ok(None);
    }
    // Rows handed over in order are checked neighbour by neighbour, without
    // the row format's copy of every key (a twentieth of an import's CPU).
    let keys: Vec<SortColumn> = columns
        .iter()
        .map(|values| SortColumn {
            values: values.clone(),
            options: None,
        })
        .collect();
    let comparator = LexicographicalComparator::try_new(&keys)?;
    let rows = columns[0].len();
    if (1..rows).all(|i| comparator.compare(i - 1, i) != std::cmp::Ordering::Greater) {
        return Ok(None);
    }
    let fields = columns
        .iter()
        .map(|column| SortField::new(column.data_type().clone()))
        .collect();
    let rows = RowConverter::new(fields)?.convert_columns(columns)?;
    let mut order: Vec<u32> = (0..rows.num_rows() as u32).collect();
    order.sort_unstable_by(|&a, &b| rows.row(a as usize).cmp(&rows.row(b as usize)));
    Ok(Some(UInt32Array::from(order)))
}

/// The order of `batch` by (day of `partition_micros`, the table's sort
/// key...); `None` when its rows are in it already.
fn full_key_order(
    batch: &RecordBatch,
    spec: &TableSpec,
    partition_micros: Option<&TimestampMicrosecondArray>,
) -> Result<Option<UInt32Array>> {
    let mut sort_columns = Vec::new();
    if let Some(micros) = partition_micros {
        let days: ArrayRef = Arc::new(
            micros
                .iter()
                .map(|m| m.map(partition_day))
                .collect::<datafusion::arrow::array::Int64Array>(),
        );
        sort_columns.push(days);
    }
    for name in spec.sort_columns {
        sort_columns.push(batch.column_by_name(name).context("sort column")?.clone());
    }
    sort_indices(&sort_columns)
}

/// The rows of `timestamps` grouped by partition day, each day's in their
/// order (a stable counting sort); `None` when they already are.
fn day_order(timestamps: &[i64]) -> Option<UInt32Array> {
    let days: Vec<i64> = timestamps.iter().map(|&at| partition_day(at)).collect();
    if days.is_sorted() {
        return None;
    }
    let first = *days.iter().min().expect("unsorted rows exist");
    let last = *days.iter().max().expect("unsorted rows exist");
    // A slot per day: dense when the span is short (the usual case, recent
    // events), else one per distinct day.
    let (slots, slot_count): (Vec<usize>, usize) = if last - first < days.len() as i64 {
        let slots = days.iter().map(|&day| (day - first) as usize).collect();
        (slots, (last - first) as usize + 1)
    } else {
        let mut distinct = days.clone();
        distinct.sort_unstable();
        distinct.dedup();
        let slots = days
            .iter()
            .map(|day| distinct.binary_search(day).expect("a row's own day"))
            .collect();
        (slots, distinct.len())
    };
    let mut starts = vec![0; slot_count + 1];
    for &slot in &slots {
        starts[slot + 1] += 1;
    }
    for slot in 0..slot_count {
        starts[slot + 1] += starts[slot];
    }
    let mut order = vec![0; slots.len()];
    for (row, &slot) in slots.iter().enumerate() {
        order[starts[slot]] = row as u32;
        starts[slot] += 1;
    }
    Some(UInt32Array::from(order))
}

/// Whether `batch` has the columns of `schema`, each of its type or, for
/// `Utf8`, a `Utf8View`: a writer may point its strings into text it
/// already holds instead of copying them.
pub(crate) fn holds_table_schema(batch: &RecordBatch, schema: &SchemaRef) -> bool {
    let fields = batch.schema_ref().fields();
    fields.len() == schema.fields().len()
        && fields.iter().zip(schema.fields()).all(|(given, table)| {
            given.name() == table.name()
                && given.is_nullable() == table.is_nullable()
                && (given.data_type() == table.data_type()
                    || (given.data_type() == &DataType::Utf8View
                        && table.data_type() == &DataType::Utf8))
        })
}

/// `YYYY-MM-DD` of a day number since the epoch.
pub(crate) fn day_name(day: i64) -> String {
    let date = chrono::DateTime::from_timestamp(day * 86_400, 0)
        .expect("day in range")
        .date_naive();
    date.format("%Y-%m-%d").to_string()
}

/// How a data file is encoded: for reading it many times, or for
/// rewriting it soon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileForm {
    /// For reading: zstd, dictionaries. What compaction writes, and every
    /// writer whose files may stay as they are.
    Final,
    /// For rewriting: an import's files are small (one per day and chunk)
    /// and compaction rewrites them all, so they are written as a log
    /// structured store writes its first level: LZ4, no dictionaries, rows
    /// in day order only (compaction sorts them by the full key). The
    /// demo's 10M events take 784 MB so against 451 MB compacted; writing
    /// them so saves a tenth of the import's CPU.
    Staged,
}

/// How every Parquet file of a data directory is written: row groups of
/// [`ROW_GROUP_ROWS`], no statistics of `properties` (no query prunes on
/// a JSON text's range; they only cost the writer comparisons of long
/// texts), and by `form`:
/// - [`FileForm::Final`]: zstd level 1. `person_num` is delta-encoded:
///   events sort by person number within an event, so its deltas take a
///   few bits, where a dictionary of up to millions of numbers overflows
///   to plain 8-byte values that zstd must then inflate on every scan.
///   Event ids and properties are (nearly) unique: a dictionary of them
///   only costs the writer a hash of every value.
/// - [`FileForm::Staged`]: LZ4, plain values, statistics of `timestamp`
///   only.
fn parquet_properties(form: FileForm) -> WriterProperties {
    let properties = ColumnPath::from("properties");
    let builder = WriterProperties::builder()
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_column_statistics_enabled(properties.clone(), EnabledStatistics::None);
    match form {
        FileForm::Final => {
            let person_num = ColumnPath::from("person_num");
            builder
                .set_compression(Compression::ZSTD(
                    ZstdLevel::try_new(1).expect("1 is a valid zstd level"),
                ))
                .set_column_dictionary_enabled(person_num.clone(), false)
                .set_column_encoding(person_num, Encoding::DELTA_BINARY_PACKED)
                .set_column_dictionary_enabled(ColumnPath::from("uuid"), false)
                .set_column_dictionary_enabled(properties, false)
        }
        // Statistics only where queries of not yet compacted rows prune
        // on them: finding each string column's least and greatest value
        // was 6% of an import's CPU. Staged rows are in day order only, so
        // the range of `event` in a page is all the day's events: only
        // times prune.
        FileForm::Staged => builder
            .set_compression(Compression::LZ4_RAW)
            .set_dictionary_enabled(false)
            .set_statistics_enabled(EnabledStatistics::None)
            .set_column_statistics_enabled(ColumnPath::from("timestamp"), EnabledStatistics::Page),
    }
    .build()
}

/// Writes one part's file, not yet synced.
fn write_one(
    table_dir: &Path,
    schema: &SchemaRef,
    partition: Option<String>,
    batch: &RecordBatch,
    range: Option<(i64, i64)>,
    form: FileForm,
) -> Result<DataFile> {
    let relative = match &partition {
        Some(day) => format!("date={day}/part-{}.parquet", uuid::Uuid::now_v7()),
        None => format!("part-{}.parquet", uuid::Uuid::now_v7()),
    };
    let (rows, file) = encode_file(
        table_dir,
        &relative,
        schema,
        std::slice::from_ref(batch),
        form,
    )?;
    Ok(DataFile {
        path: relative,
        rows,
        bytes: file.metadata()?.len(),
        partition,
        min_micros: range.map(|r| r.0),
        max_micros: range.map(|r| r.1),
        staged: form == FileForm::Staged,
    })
}

/// Writes `batches` as one Parquet file at `dir/relative` (with `schema`,
/// also when there are no rows), in its final form, and syncs it and its
/// folder, so that a log commit may name it. Returns its rows and bytes.
pub fn write_parquet_file(
    dir: &Path,
    relative: &str,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<(u64, u64)> {
    let (rows, file) = encode_file(dir, relative, schema, batches, FileForm::Final)?;
    file.sync_all()?;
    let bytes = file.metadata()?.len();
    sync_path(dir.join(relative).parent().expect("a file has a folder"))?;
    Ok((rows, bytes))
}

/// Writes `batches` as one Parquet file at `dir/relative` in `form`, and
/// gives its rows and the file, not yet synced.
fn encode_file(
    dir: &Path,
    relative: &str,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    form: FileForm,
) -> Result<(u64, fs::File)> {
    let path = dir.join(relative);
    let folder = path.parent().expect("a file has a folder");
    fs::create_dir_all(folder)?;
    let file = fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    // The file's Arrow schema is the table's, also when the batches hold
    // their strings as views: readers then see the types they always did.
    let mut properties = parquet_properties(form);
    add_encoded_arrow_schema_to_metadata(schema, &mut properties);
    let batch_schema = match batches.first() {
        Some(batch) if holds_table_schema(batch, schema) => batch.schema(),
        _ => schema.clone(),
    };
    let options = ArrowWriterOptions::new()
        .with_properties(properties)
        .with_skip_arrow_metadata(true);
    let mut writer = ArrowWriter::try_new_with_options(file, batch_schema, options)?;
    let mut rows = 0;
    for batch in batches {
        rows += batch.num_rows() as u64;
        writer.write(batch)?;
    }
    Ok((rows, writer.into_inner()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::compute::lexsort_to_indices;
    use proptest::prelude::*;

    #[test]
    fn day_order_groups_rows_by_day_and_keeps_their_order_within_one() {
        let day = 86_400_000_000;
        let order = |times: &[i64]| day_order(times).map(|order| order.values().to_vec());
        // Days 2, 1, 1, 7, 0, -1: a span of 9 days over 6 rows, so slots
        // come from the distinct days.
        let times = [2 * day + 5, day + 9, day, 7 * day, 3, -1];
        assert_eq!(order(&times), Some(vec![5, 4, 1, 2, 0, 3]));
        let near = [day + 1, 5, day, 9, 2 * day, 1, day + 3];
        assert_eq!(order(&near), Some(vec![1, 3, 5, 0, 2, 6, 4]));
        let far = [i64::MAX, i64::MIN, 0, day * 1_000_000];
        assert_eq!(order(&far), Some(vec![1, 2, 3, 0]));
        // Rows of one day, or already in day order, stay as they are.
        assert_eq!(order(&[9, 3, 5]), None);
        assert_eq!(order(&[-1, 5, 1, day + 2, day]), None);
        assert_eq!(order(&[]), None);
    }

    proptest! {
        /// The row-format order is the column-by-column order that Arrow's
        /// own lexicographic sort gives (ties may come in another order, so
        /// the sorted keys are compared, not the indices).
        #[test]
        fn row_order_is_lexicographic_order(
            rows in proptest::collection::vec(("[ab]{0,2}", "[xyz]{0,3}", -3i64..3), 0..60)
        ) {
            let columns: Vec<ArrayRef> = vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0.as_str()))),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1.as_str()))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
            ];
            let keys = |indices: &UInt32Array| -> Vec<(String, String, i64)> {
                indices.values().iter().map(|&i| rows[i as usize].clone()).collect()
            };
            let reference = lexsort_to_indices(
                &columns
                    .iter()
                    .map(|c| SortColumn { values: c.clone(), options: None })
                    .collect::<Vec<_>>(),
                None,
            )
            .unwrap();
            let identity = UInt32Array::from_iter_values(0..rows.len() as u32);
            let order = sort_indices(&columns).unwrap().unwrap_or(identity);
            prop_assert_eq!(keys(&order), keys(&reference));
        }

        /// Rows already in order are found to be, and rows out of order
        /// (by any key column) are not.
        #[test]
        fn rows_in_order_need_no_sort(
            mut rows in proptest::collection::vec(("[ab]{0,2}", -3i64..3), 2..40)
        ) {
            let columns = |rows: &[(String, i64)]| -> Vec<ArrayRef> {
                vec![
                    Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0.as_str()))),
                    Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
                ]
            };
            rows.sort();
            prop_assert!(sort_indices(&columns(&rows)).unwrap().is_none());
            rows.dedup();
            if rows.len() > 1 {
                rows.reverse();
                prop_assert!(sort_indices(&columns(&rows)).unwrap().is_some());
            }
        }
    }
}
