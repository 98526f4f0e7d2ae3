//! Results key persons by `events.person_num`, and by `person_id` where the
//! scanned events predate numbers: both give the same sums, merges included.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReader;
use plinth_engine::{Engine, Limits};
use plinth_experiments::{ExperimentDefinition, QueryPlan};
use plinth_ingest::{EventInput, Ingestor};
use plinth_store::{Mode, Store, schema};

const HOUR: i64 = 3_600_000_000;
/// 2026-01-05T00:00:00Z.
const START: i64 = 1_767_571_200_000_000;

fn event(name: &str, distinct_id: &str, hour: i64, properties: String) -> EventInput {
    EventInput {
        uuid: Some(format!("{name}-{distinct_id}-{hour}")),
        event: name.to_string(),
        distinct_id: distinct_id.to_string(),
        timestamp_micros: START + hour * HOUR,
        properties,
        ..Default::default()
    }
}

fn events() -> Vec<EventInput> {
    let mut events = Vec::new();
    for person in 0..40 {
        let id = format!("user-{person}");
        let variant = if person % 2 == 0 { "control" } else { "test" };
        let exposure =
            format!(r#"{{"$feature_flag":"keys","$feature_flag_response":"{variant}"}}"#);
        events.push(event("$feature_flag_called", &id, person, exposure));
        for purchase in 0..(person % 4) {
            let amount = format!(r#"{{"amount":{}}}"#, 10 + person * purchase);
            events.push(event("purchase", &id, person + 1 + purchase, amount));
        }
    }
    // A second device with its own exposure and purchase, then a login that
    // merges it into user-3: one person, one unit.
    let flag = r#"{"$feature_flag":"keys","$feature_flag_response":"test"}"#;
    events.push(event("$feature_flag_called", "phone-3", 50, flag.into()));
    events.push(event("purchase", "phone-3", 51, r#"{"amount":99}"#.into()));
    let mut login = event("$identify", "user-3", 52, "{}".into());
    login.merge_with = Some("phone-3".into());
    events.push(login);
    events
}

const EXPERIMENT: &str = "
name: keys
flag: keys
variants: [control, test]
start: 2026-01-05
primary_metrics:
  - {name: revenue, kind: sum, event: purchase, property: amount}
secondary_metrics:
  - {name: purchased, kind: conversion, event: purchase, window_days: 1}
  - name: per purchase
    kind: ratio
    numerator: {kind: sum, event: purchase, property: amount}
    denominator: {kind: count, event: purchase}
";

/// Rewrites every `events` file as a version before `person_num` wrote it,
/// and publishes their new sizes.
fn drop_person_num(data: &std::path::Path, store: &Store) {
    let table_dir = data.join("tables/events");
    let without: Vec<usize> = (0..schema::events().fields().len())
        .filter(|&i| schema::events().field(i).name() != "person_num")
        .collect();
    let old_schema = Arc::new(schema::events().project(&without).unwrap());
    let mut snapshot = (*store.events.snapshot()).clone();
    for file in &mut snapshot.files {
        let reader = std::fs::File::open(table_dir.join(&file.path)).unwrap();
        let rows: Vec<RecordBatch> = ParquetRecordBatchReader::try_new(reader, 1024)
            .unwrap()
            .map(|batch| batch.unwrap().project(&without).unwrap())
            .collect();
        let (_, bytes) =
            plinth_store::write_parquet_file(&table_dir, &file.path, &old_schema, &rows).unwrap();
        file.bytes = bytes;
    }
    snapshot.version += 1;
    plinth_store::log::commit(&table_dir, &snapshot).unwrap();
    store.events.refresh().unwrap();
}

#[tokio::test]
async fn numbered_and_unnumbered_events_give_the_same_sums() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), Mode::Writer, "test").unwrap());
    let ingestor = Ingestor::open(store.clone()).unwrap();
    ingestor
        .append(&events(), START + 100 * HOUR, &BTreeMap::new())
        .unwrap();
    let engine = Engine::new(store.clone(), Limits::default());
    let experiment = ExperimentDefinition::parse(EXPERIMENT).unwrap();
    let plan = QueryPlan::new(&experiment);

    let numbered = plan.run(&engine, &experiment).await.unwrap();
    let units: Vec<u64> = numbered.variants.iter().map(|v| v.units).collect();
    // user-3 and phone-3 are one person, in the test arm.
    assert_eq!(
        (units, numbered.multiple_variant_persons),
        (vec![20, 20], 0)
    );

    drop_person_num(dir.path(), &store);
    let unnumbered_rows = engine
        .query(
            "SELECT count(*) FROM events WHERE person_num IS NULL",
            plinth_engine::Privileges::ReadStore,
        )
        .await
        .unwrap();
    let column = unnumbered_rows.batches[0].column(0);
    let nulls = datafusion::arrow::util::display::array_value_to_string(column, 0).unwrap();
    assert_eq!(nulls, store.events.snapshot().rows().to_string());
    assert_eq!(plan.run(&engine, &experiment).await.unwrap(), numbered);
}
