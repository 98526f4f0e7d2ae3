//! Every query is bounded in memory and time; sorts spill instead of failing.

use std::sync::Arc;
use std::time::Duration;

use plinth_engine::{Engine, Limits, Privileges, QueryError};
use plinth_store::{Mode, Store};

fn engine(dir: &std::path::Path, limits: Limits) -> Engine {
    let store = Arc::new(Store::open(dir, Mode::Writer, "limits test").unwrap());
    Engine::new(store, limits)
}

#[tokio::test]
async fn a_query_over_its_memory_limit_fails_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(
        dir.path(),
        Limits {
            memory_bytes: 8 << 20,
            ..Limits::default()
        },
    );
    // array_agg keeps every value in memory and cannot spill.
    let err = engine
        .query(
            "SELECT array_agg(concat('row-', value)) FROM generate_series(1, 5000000)",
            Privileges::ReadStore,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, QueryError::OutOfMemory { limit, .. } if limit == 8 << 20),
        "{err}"
    );
    assert!(err.to_string().contains("memory limit"), "{err}");
}

#[tokio::test]
async fn a_sort_larger_than_memory_spills_and_answers() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(
        dir.path(),
        Limits {
            memory_bytes: 32 << 20,
            spill_dir: Some(dir.path().join("spill")),
            threads: 1,
            ..Limits::default()
        },
    );
    std::fs::create_dir_all(dir.path().join("spill")).unwrap();
    let result = engine
        .query(
            "SELECT v FROM (SELECT concat('value-', value * 7919 % 3000000) AS v FROM generate_series(1, 3000000)) ORDER BY v DESC",
            Privileges::ReadStore,
        )
        .await
        .unwrap();
    assert_eq!(result.rows(), 3_000_000);
    let first = result.batches[0].column(0);
    let first = datafusion::arrow::array::AsArray::as_string_view_opt(first.as_ref())
        .map(|a| a.value(0).to_string())
        .or_else(|| {
            datafusion::arrow::array::AsArray::as_string_opt::<i32>(first.as_ref())
                .map(|a| a.value(0).to_string())
        })
        .unwrap();
    assert_eq!(first, "value-999999");
}

#[tokio::test]
async fn a_query_over_its_time_limit_is_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(
        dir.path(),
        Limits {
            time: Duration::from_millis(300),
            ..Limits::default()
        },
    );
    let started = std::time::Instant::now();
    let err = engine
        .query(
            "SELECT count(*) FROM generate_series(1, 100000000000)",
            Privileges::ReadStore,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, QueryError::TimedOut(_)), "{err}");
    // Cancelled promptly, not after the query would have finished.
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test]
async fn admins_may_run_ddl_that_analysts_may_not() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path(), Limits::default());
    let sql = "CREATE TABLE scratch AS SELECT 1 AS x";
    assert!(matches!(
        engine.query(sql, Privileges::ReadStore).await,
        Err(QueryError::Refused(_))
    ));
    engine.query(sql, Privileges::Admin).await.unwrap();
}
