//! Table operations keep every row exactly once across appends, flushes,
//! compaction, retention, vacuum and reopening.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{
    Array, AsArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray, UInt32Array,
};
use datafusion::arrow::compute::{cast, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, TimestampMicrosecondType};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
use plinth_store::{Mode, Store, schema};

const DAY: i64 = 86_400_000_000;

fn events(start: i64, count: usize, day: i64) -> RecordBatch {
    let ids: Vec<String> = (0..count)
        .map(|i| format!("e{}", start + i as i64))
        .collect();
    let text = |v: &str| Arc::new(StringArray::from(vec![v; count])) as Arc<dyn Array>;
    let ts = Arc::new(
        TimestampMicrosecondArray::from(
            (0..count)
                .map(|i| day * DAY + i as i64 * 1000)
                .collect::<Vec<_>>(),
        )
        .with_timezone("UTC"),
    );
    RecordBatch::try_new(
        schema::events(),
        vec![
            Arc::new(StringArray::from(ids)),
            text("$pageview"),
            text("d"),
            text("p"),
            ts.clone(),
            ts,
            text("s"),
            text("{}"),
            text("test"),
            Arc::new(Int64Array::from(vec![7; count])),
        ],
    )
    .unwrap()
}

/// A new store whose `events` has `files` files of `rows` rows each.
fn store_with_event_files(files: i64, rows: usize) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Mode::Writer, "test").unwrap();
    for i in 0..files {
        store
            .events
            .append(&[events(i * rows as i64, rows, today())], &BTreeMap::new())
            .unwrap();
    }
    (dir, store)
}

fn today() -> i64 {
    chrono::Utc::now().timestamp_micros() / DAY
}

#[test]
fn appends_partition_by_day_and_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), Mode::Writer, "test").unwrap();
        store
            .events
            .append(
                &[events(0, 10, today()), events(10, 5, today() - 1)],
                &BTreeMap::new(),
            )
            .unwrap();
        let snapshot = store.events.snapshot();
        assert_eq!(snapshot.files.len(), 2);
        assert_eq!(snapshot.rows(), 15);
        assert!(snapshot.files.iter().all(|f| f.path.starts_with("date=")));
    }
    let store = Store::open(dir.path(), Mode::Reader, "test").unwrap();
    assert_eq!(store.events.view().rows(), 15);
}

#[test]
fn flush_moves_buffered_rows_to_parquet_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Mode::Writer, "test").unwrap();
    store.events.buffer(events(0, 7, today())).unwrap();
    assert_eq!(store.events.view().rows(), 7);
    assert_eq!(store.events.flush().unwrap(), 7);
    let view = store.events.view();
    assert_eq!((view.snapshot.rows(), view.buffered.len()), (7, 0));
}

/// The codec, dictionary use and statistics of a data file's columns, by
/// column name.
fn column_encodings(path: &std::path::Path) -> BTreeMap<String, (Compression, bool, bool)> {
    let reader = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
    let row_group = reader.metadata().row_group(0);
    row_group
        .columns()
        .iter()
        .map(|column| {
            (
                column.column_path().string(),
                (
                    column.compression(),
                    column.dictionary_page_offset().is_some(),
                    column.statistics().is_some(),
                ),
            )
        })
        .collect()
}

#[test]
fn staged_files_are_light_and_compaction_rewrites_even_a_lone_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Mode::Writer, "test").unwrap();
    let table_dir = dir.path().join("tables/events");
    store
        .events
        .append_staged(&[events(0, 300, today())], &BTreeMap::new())
        .unwrap();
    let staged = store.events.snapshot().files[0].clone();
    assert!(staged.staged);
    let encodings = column_encodings(&table_dir.join(&staged.path));
    assert_eq!(encodings.len(), 10);
    assert!(
        encodings
            .values()
            .all(|&(codec, dictionary, _)| codec == Compression::LZ4_RAW && !dictionary),
        "{encodings:?}"
    );
    let with_statistics: Vec<&str> = encodings
        .iter()
        .filter(|(_, (_, _, statistics))| *statistics)
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(with_statistics, ["timestamp"]);

    // One file, far below the target size: merged with nothing, but
    // rewritten in its final form.
    let report = store.events.compact(1_000_000).unwrap();
    assert_eq!((report.files_before, report.files_after), (1, 1));
    let snapshot = store.events.snapshot();
    let file = &snapshot.files[0];
    assert!(!file.staged);
    assert_eq!(file.rows, 300);
    assert_ne!(file.path, staged.path);
    let encodings = column_encodings(&table_dir.join(&file.path));
    assert!(matches!(
        encodings["event"],
        (Compression::ZSTD(_), true, true)
    ));
    assert!(matches!(
        encodings["properties"],
        (Compression::ZSTD(_), false, false)
    ));
    assert!(encodings["uuid"].2);
    // A final file alone is left as it is.
    let again = store.events.compact(1_000_000).unwrap();
    assert_eq!(store.events.snapshot().files, snapshot.files);
    assert_eq!((again.files_before, again.files_after), (1, 1));
}

/// The `timestamp` column of the table's one file, in file order.
fn times_in_only_file(store: &Store, table_dir: &std::path::Path) -> Vec<i64> {
    let snapshot = store.events.snapshot();
    assert_eq!(snapshot.files.len(), 1);
    let file = std::fs::File::open(table_dir.join(&snapshot.files[0].path)).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    reader
        .flat_map(|batch| {
            let batch = batch.unwrap();
            let times = batch.column_by_name("timestamp").unwrap();
            times
                .as_primitive::<TimestampMicrosecondType>()
                .values()
                .to_vec()
        })
        .collect()
}

#[test]
fn staged_files_keep_their_rows_order_within_a_day_and_compaction_sorts_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Mode::Writer, "test").unwrap();
    let table_dir = dir.path().join("tables/events");
    let ascending = events(0, 300, today());
    let reversed = UInt32Array::from_iter_values((0..300).rev());
    let descending = take_record_batch(&ascending, &reversed).unwrap();
    store
        .events
        .append_staged(&[descending], &BTreeMap::new())
        .unwrap();
    let staged = times_in_only_file(&store, &table_dir);
    assert_eq!(staged.len(), 300);
    assert!(
        staged.windows(2).all(|pair| pair[0] > pair[1]),
        "{staged:?}"
    );

    store.events.compact(1_000_000).unwrap();
    let compacted = times_in_only_file(&store, &table_dir);
    let mut sorted = staged.clone();
    sorted.sort_unstable();
    assert_eq!(compacted, sorted);
}

#[test]
fn a_log_from_before_staged_files_reads_its_files_as_final() {
    let file: plinth_store::log::DataFile = serde_json::from_str(
        r#"{"path":"date=2024-01-01/part-a.parquet","rows":3,"bytes":10,"partition":"2024-01-01","min_micros":1,"max_micros":2}"#,
    )
    .unwrap();
    assert!(!file.staged);
    // And a final file is written as before.
    assert!(!serde_json::to_string(&file).unwrap().contains("staged"));
}

#[test]
fn compaction_merges_small_files_and_vacuum_deletes_the_old_ones() {
    let (dir, store) = store_with_event_files(5, 100);
    let before = store.events.snapshot();
    let report = store.events.compact(1_000_000).unwrap();
    assert_eq!(
        (report.files_before, report.files_after, report.rows),
        (5, 1, 500)
    );
    let after = store.events.snapshot();
    assert_eq!(after.rows(), 500);
    assert_eq!(after.tombstones.len(), 5);
    // Old files stay until vacuum, for queries that still read them.
    for file in &before.files {
        assert!(dir.path().join("tables/events").join(&file.path).exists());
    }
    assert_eq!(store.events.vacuum(Duration::ZERO).unwrap(), 5);
    for file in &before.files {
        assert!(!dir.path().join("tables/events").join(&file.path).exists());
    }
    assert!(store.events.snapshot().tombstones.is_empty());
}

#[test]
fn files_written_before_a_column_existed_read_it_as_null_and_compact() {
    let (dir, store) = store_with_event_files(2, 10);
    // Rewrite the first file as an earlier version wrote it: no person_num.
    let old = &store.events.snapshot().files[0];
    let table_dir = dir.path().join("tables/events");
    let file = std::fs::File::open(table_dir.join(&old.path)).unwrap();
    let rows: Vec<RecordBatch> =
        datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(file, 1024)
            .unwrap()
            .map(|batch| batch.unwrap())
            .collect();
    let without: Vec<usize> = (0..schema::events().fields().len() - 1).collect();
    let old_schema = Arc::new(schema::events().project(&without).unwrap());
    let old_rows: Vec<RecordBatch> = rows.iter().map(|b| b.project(&without).unwrap()).collect();
    plinth_store::write_parquet_file(&table_dir, &old.path, &old_schema, &old_rows).unwrap();

    let nums = |batches: Vec<RecordBatch>| -> (usize, usize) {
        let mut counts = (0, 0);
        for batch in &batches {
            assert_eq!(batch.schema(), schema::events());
            let column = batch.column_by_name("person_num").unwrap();
            counts.0 += column.null_count();
            counts.1 += column.as_primitive::<Int64Type>().iter().flatten().count();
        }
        counts
    };
    assert_eq!(nums(store.events.read_all().unwrap()), (10, 10));
    let report = store.events.compact(1_000_000).unwrap();
    assert_eq!((report.files_before, report.files_after), (2, 1));
    assert_eq!(nums(store.events.read_all().unwrap()), (10, 10));
}

/// An appender may hand strings over as views of text it holds; the files
/// are the table's all the same, their Arrow schema included.
#[test]
fn strings_appended_as_views_are_written_as_the_tables_strings() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Mode::Writer, "test").unwrap();
    let rows = events(0, 20, today());
    let as_views: Vec<Arc<dyn Array>> = rows
        .columns()
        .iter()
        .map(|column| match column.data_type() {
            DataType::Utf8 => cast(column, &DataType::Utf8View).unwrap(),
            _ => column.clone(),
        })
        .collect();
    let views =
        RecordBatch::try_new(schema::strings_as_views(&schema::events()), as_views).unwrap();
    store
        .events
        .append(std::slice::from_ref(&views), &BTreeMap::new())
        .unwrap();

    let file = &store.events.snapshot().files[0];
    let path = dir.path().join("tables/events").join(&file.path);
    let reader =
        datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(path).unwrap(),
        )
        .unwrap();
    assert_eq!(reader.schema(), &schema::events());
    assert_eq!(
        store.events.read_all().unwrap(),
        std::slice::from_ref(&rows)
    );

    // Both forms in one append are refused, not written half and half.
    let error = store
        .events
        .append(&[views.clone(), rows.clone()], &BTreeMap::new())
        .unwrap_err();
    assert!(error.to_string().contains("different forms"), "{error}");

    // A batch of other columns is still refused.
    let other = Schema::new(vec![Field::new("uuid", DataType::Utf8View, false)]);
    let wrong = RecordBatch::new_empty(Arc::new(other));
    let error = store.events.append(&[wrong], &BTreeMap::new()).unwrap_err();
    assert!(error.to_string().contains("does not match"), "{error}");
}

#[test]
fn retention_drops_old_days_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Mode::Writer, "test").unwrap();
    store
        .events
        .append(
            &[events(0, 3, today() - 40), events(3, 4, today())],
            &BTreeMap::new(),
        )
        .unwrap();
    let dropped = store
        .events
        .retain(Duration::from_secs(30 * 86_400))
        .unwrap();
    assert_eq!(dropped, 3);
    assert_eq!(store.events.snapshot().rows(), 4);
}

#[test]
fn files_no_snapshot_names_are_removed_when_a_writer_opens() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), Mode::Writer, "test").unwrap();
        store
            .events
            .append(&[events(0, 3, today())], &BTreeMap::new())
            .unwrap();
    }
    // What a writer killed between writing a file and committing it leaves.
    let orphan = dir
        .path()
        .join("tables/events/date=2020-01-01/part-orphan.parquet");
    std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
    std::fs::write(&orphan, b"half a file").unwrap();
    let store = Store::open(dir.path(), Mode::Writer, "test").unwrap();
    assert!(!orphan.exists());
    assert_eq!(store.events.snapshot().rows(), 3);
}

#[test]
fn a_second_writer_is_refused_with_who_holds_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Store::open(dir.path(), Mode::Writer, "plinth serve on 127.0.0.1:1").unwrap();
    let err = Store::open(dir.path(), Mode::Writer, "second")
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("plinth serve on 127.0.0.1:1"), "{err}");
    assert!(Store::writer(dir.path()).unwrap().contains("plinth serve"));
}

#[test]
fn checkpoints_commit_with_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Mode::Writer, "test").unwrap();
    let checkpoints = BTreeMap::from([("import:a".to_string(), 42)]);
    store
        .events
        .append(&[events(0, 1, today())], &checkpoints)
        .unwrap();
    assert_eq!(store.events.snapshot().checkpoints["import:a"], 42);
}
