//! Helpers shared by the engine's integration tests.
// Each test crate uses a different subset of these helpers.
#![allow(dead_code)]

use datafusion::arrow::util::display::array_value_to_string;
use plinth_engine::{Engine, Privileges};
use plinth_ingest::EventInput;

/// An event of `distinct_id` at `at` (UTC microseconds), with a uuid
/// derived from all three so that each is distinct.
pub fn event(name: &str, distinct_id: &str, at: i64) -> EventInput {
    EventInput {
        uuid: Some(format!("{name}-{distinct_id}-{at}")),
        event: name.to_string(),
        distinct_id: distinct_id.to_string(),
        timestamp_micros: at,
        properties: "{}".to_string(),
        ..Default::default()
    }
}

/// Every row of a query's result, as text, one string a row.
pub async fn rows(engine: &Engine, sql: &str) -> Vec<String> {
    let result = engine.query(sql, Privileges::ReadStore).await.unwrap();
    let mut rows = Vec::new();
    for batch in &result.batches {
        for row in 0..batch.num_rows() {
            let cells: Vec<String> = batch
                .columns()
                .iter()
                .map(|c| array_value_to_string(c, row).unwrap())
                .collect();
            rows.push(cells.join(","));
        }
    }
    rows
}

/// The physical plan of `sql`, as EXPLAIN prints it.
pub async fn plan(engine: &Engine, sql: &str) -> String {
    rows(engine, &format!("EXPLAIN {sql}")).await.join("\n")
}
