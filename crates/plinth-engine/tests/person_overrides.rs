//! Unique-person counts stay right across a merge: events stored under a
//! person that a later login merged away count as the surviving person.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use plinth_engine::{Engine, Limits, Privileges};
use plinth_ingest::Ingestor;
use plinth_store::{Mode, Store};

use common::event;

async fn scalar(engine: &Engine, sql: &str) -> String {
    let result = engine.query(sql, Privileges::ReadStore).await.unwrap();
    let column = result.batches[0].column(0);
    datafusion::arrow::util::display::array_value_to_string(column, 0).unwrap()
}

#[tokio::test]
async fn events_of_a_merged_away_person_count_as_the_survivor() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), Mode::Writer, "test").unwrap());
    let ingestor = Ingestor::open(store.clone()).unwrap();
    let engine = Engine::new(store.clone(), Limits::default());
    // Two devices, each its own person with events; then a login joins them.
    let mut login = event("$identify", "laptop", 3_000_000);
    login.merge_with = Some("phone".to_string());
    let events = [
        event("viewed", "phone", 1_000_000),
        event("viewed", "laptop", 2_000_000),
        login,
    ];
    ingestor
        .append(&events, 4_000_000, &BTreeMap::new())
        .unwrap();
    // The stored rows carry two person ids...
    let mut stored = std::collections::HashSet::new();
    for batch in store.events.read_all().unwrap() {
        let column = batch.column_by_name("person_id").unwrap();
        for row in 0..batch.num_rows() {
            stored.insert(
                datafusion::arrow::util::display::array_value_to_string(column, row).unwrap(),
            );
        }
    }
    assert_eq!(stored.len(), 2);
    // The writer counted the merge, so readers know to load the map.
    let merges = plinth_store::schema::PERSONS_WITH_MERGES;
    assert_eq!(store.persons.snapshot().checkpoints.get(merges), Some(&1));
    // ...but queries see one person, in aggregates and in joins to persons.
    assert_eq!(
        scalar(&engine, "SELECT count(DISTINCT person_id) FROM events").await,
        "1"
    );
    assert_eq!(
        scalar(
            &engine,
            "SELECT count(*) FROM events e JOIN persons p ON e.person_id = p.person_id"
        )
        .await,
        "3"
    );
    assert_eq!(
        scalar(
            &engine,
            "SELECT count(*) FROM events WHERE timestamp > to_timestamp_micros(0)"
        )
        .await,
        "3"
    );
    // Person numbers resolve the same way, to the survivor's number.
    assert_eq!(
        scalar(&engine, "SELECT count(DISTINCT person_num) FROM events").await,
        "1"
    );
    assert_eq!(
        scalar(
            &engine,
            "SELECT count(*) FROM events e JOIN persons p \
             ON e.person_num = p.person_num AND e.person_id = p.person_id"
        )
        .await,
        "3"
    );
}

#[tokio::test]
async fn a_login_that_only_attaches_an_id_leaves_person_ids_as_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), Mode::Writer, "test").unwrap());
    let ingestor = Ingestor::open(store.clone()).unwrap();
    let engine = Engine::new(store.clone(), Limits::default());
    let mut login = event("$identify", "anonymous", 2_000_000);
    login.merge_with = Some("user@example.com".to_string());
    let events = [
        event("viewed", "anonymous", 1_000_000),
        login,
        event("viewed", "user@example.com", 3_000_000),
    ];
    ingestor
        .append(&events, 4_000_000, &BTreeMap::new())
        .unwrap();
    assert_eq!(
        scalar(&engine, "SELECT count(DISTINCT person_id) FROM events").await,
        "1"
    );
    // No merge of two persons: readers need not even open `persons`, and
    // the plan resolves nothing per row.
    let merges = plinth_store::schema::PERSONS_WITH_MERGES;
    assert_eq!(store.persons.snapshot().checkpoints.get(merges), Some(&0));
    let plan = engine
        .query(
            "EXPLAIN SELECT count(DISTINCT person_id) FROM events",
            Privileges::ReadStore,
        )
        .await
        .unwrap();
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&plan.batches)
        .unwrap()
        .to_string();
    assert!(!text.contains("plinth_person_of"), "{text}");
}
