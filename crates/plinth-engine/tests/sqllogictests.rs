//! Runs every `tests/slt/*.slt` file against the engine over a store
//! holding a small fixture: events in Parquet and in the in-memory buffer,
//! an identified anonymous visitor, persons and a quarantined event.
//!
//! Queries run with store-reading privileges, as an analyst's would.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::Array;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use plinth_engine::{Engine, Limits, Privileges, QueryError};
use plinth_ingest::{EventInput, Ingestor, QuarantineInput};
use plinth_store::{Mode, Store};
use sqllogictest::{DBOutput, DefaultColumnType};

/// This package's folder, read when the test runs: a test binary that
/// cargo reuses from a clone elsewhere keeps that clone's compile-time path.
fn manifest_dir() -> PathBuf {
    PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"),
    )
}

struct PlinthDb {
    engine: Engine,
}

#[async_trait]
impl sqllogictest::AsyncDB for PlinthDb {
    type Error = QueryError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, QueryError> {
        let result = self.engine.query(sql, Privileges::ReadStore).await?;
        let types = result
            .schema
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Int8
                | DataType::Int16
                | DataType::Int32
                | DataType::Int64
                | DataType::UInt8
                | DataType::UInt16
                | DataType::UInt32
                | DataType::UInt64 => DefaultColumnType::Integer,
                DataType::Float32 | DataType::Float64 | DataType::Decimal128(_, _) => {
                    DefaultColumnType::FloatingPoint
                }
                DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => {
                    DefaultColumnType::Text
                }
                _ => DefaultColumnType::Any,
            })
            .collect();
        let options = FormatOptions::default().with_null("NULL");
        let mut rows = Vec::new();
        for batch in &result.batches {
            let formatters = batch
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| QueryError::Internal(e.to_string()))?;
            for row in 0..batch.num_rows() {
                rows.push(
                    formatters
                        .iter()
                        .zip(batch.columns())
                        .map(|(f, c)| {
                            let text = f.value(row).to_string();
                            if !c.is_null(row) && text.is_empty() {
                                "(empty)".to_string()
                            } else {
                                text
                            }
                        })
                        .collect(),
                );
            }
        }
        Ok(DBOutput::Rows { types, rows })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "plinth"
    }
}

fn micros(rfc3339: &str) -> i64 {
    chrono_parse(rfc3339)
}

fn chrono_parse(text: &str) -> i64 {
    datafusion::arrow::compute::kernels::cast_utils::string_to_timestamp_nanos(text)
        .expect("fixture timestamp")
        / 1000
}

fn event(event: &str, distinct_id: &str, at: &str, properties: &str) -> EventInput {
    EventInput {
        uuid: Some(format!("{event}-{distinct_id}-{at}")),
        event: event.to_string(),
        distinct_id: distinct_id.to_string(),
        timestamp_micros: micros(at),
        session_id: Some(format!("session-{distinct_id}")),
        properties: properties.to_string(),
        lib: Some("fixture".to_string()),
        ..Default::default()
    }
}

/// The fixture every .slt file reads.
fn build_fixture(dir: &Path) -> Arc<Store> {
    let store = Arc::new(Store::open(dir, Mode::Writer, "sqllogictests").unwrap());
    let ingestor = Ingestor::open(store.clone()).unwrap();
    let received = micros("2026-01-03T00:00:00Z");
    let mut identify = event(
        "$identify",
        "user-1",
        "2026-01-01T10:05:00Z",
        r#"{"$anon_distinct_id":"anon-1"}"#,
    );
    identify.merge_with = Some("anon-1".to_string());
    identify.set =
        Some(serde_json::from_str(r#"{"email":"ada@example.com","plan":"pro"}"#).unwrap());
    let committed = vec![
        event(
            "$pageview",
            "anon-1",
            "2026-01-01T10:00:00Z",
            r#"{"plan":"free","$browser":"Firefox","n":3,"nested":{"a":1},"tags":["x","y"]}"#,
        ),
        identify,
        event(
            "signed up",
            "user-1",
            "2026-01-01T10:06:00Z",
            r#"{"plan":"pro"}"#,
        ),
        event(
            "$pageview",
            "user-2",
            "2026-01-02T23:59:59.999999Z",
            r#"{"$browser":"Chrome"}"#,
        ),
        event(
            "purchase",
            "user-2",
            "2026-01-03T00:00:00Z",
            r#"{"price":9.5,"currency":"EUR"}"#,
        ),
    ];
    ingestor
        .append(&committed, received, &BTreeMap::new())
        .unwrap();
    // These rows stay in memory only: queries must see them all the same.
    let buffered = vec![event(
        "$pageview",
        "user-3",
        "2026-01-03T12:00:00Z",
        r#"{"$browser":"Safari"}"#,
    )];
    let batch = ingestor.events_batch(&buffered, received).unwrap();
    ingestor.save_identities().unwrap();
    store.events.buffer(batch).unwrap();
    ingestor
        .quarantine(
            &[QuarantineInput {
                source: "fixture.ndjson:7".to_string(),
                reason: "event has no distinct_id".to_string(),
                payload: r#"{"event":"orphan"}"#.to_string(),
            }],
            received,
        )
        .unwrap();
    store
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqllogictest_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = build_fixture(dir.path());
    let slt_dir = manifest_dir().join("tests/slt");
    let mut files: Vec<_> = std::fs::read_dir(&slt_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", slt_dir.display());
    for file in files {
        let engine = Engine::new(store.clone(), Limits::default());
        let mut runner = sqllogictest::Runner::new(move || {
            let engine = engine.clone();
            async move { Ok(PlinthDb { engine }) }
        });
        runner
            .run_file_async(&file)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
}
