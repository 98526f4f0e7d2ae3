//! `GROUP BY person_id` over `events` is grouped by `person_num` where the
//! two name persons one-to-one, and only there; the answers never change.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, Int64Array, StringArray};
use datafusion::arrow::record_batch::RecordBatch;
use plinth_engine::{Engine, Limits};
use plinth_ingest::Ingestor;
use plinth_store::{Mode, Store};

use common::{event, plan, rows};

const FUNNEL: &str = "SELECT level, count(*) FROM (
    SELECT window_funnel(INTERVAL '1 hour', timestamp, event = 'viewed', event = 'bought') AS level
    FROM events WHERE event IN ('viewed', 'bought') GROUP BY person_id)
  GROUP BY level ORDER BY level";

/// Persons per event; the distinct count is a grouping key once DataFusion
/// has planned it.
const DISTINCT_PERSONS: &str = "SELECT event, count(DISTINCT person_id) AS persons,
  count(DISTINCT person_id) FILTER (WHERE distinct_id <> 'ann') AS others
  FROM events WHERE timestamp > TIMESTAMP '1970-01-01T00:00:00Z' GROUP BY event ORDER BY event";

const PER_PERSON: &str = "SELECT e.person_id, count(*), min(e.distinct_id)
  FROM events AS e GROUP BY e.person_id ORDER BY 3";

fn store_with_three_persons() -> (tempfile::TempDir, Arc<Store>, Engine) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), Mode::Writer, "test").unwrap());
    let ingestor = Ingestor::open(store.clone()).unwrap();
    let events = [
        event("viewed", "ann", 1_000_000),
        event("bought", "ann", 2_000_000),
        event("viewed", "bob", 1_000_000),
        event("viewed", "cy", 1_000_000),
        event("bought", "cy", 9_000_000_000),
    ];
    ingestor
        .append(&events, 10_000_000_000, &BTreeMap::new())
        .unwrap();
    let engine = Engine::new(store.clone(), Limits::default());
    (dir, store, engine)
}

#[tokio::test]
async fn numbered_events_group_persons_by_number_with_the_same_answers() {
    let (_dir, _store, engine) = store_with_three_persons();
    let funnel = plan(&engine, FUNNEL).await;
    assert!(funnel.contains("gby=[person_num@"), "{funnel}");
    assert!(
        !funnel.contains("person_id"),
        "person_id is not even read:\n{funnel}"
    );
    // Ann converted within the hour, Cy days later, Bob never.
    assert_eq!(rows(&engine, FUNNEL).await, ["1,2", "2,1"]);

    // The grouped person_id is still the output, carried by number.
    let per_person = plan(&engine, PER_PERSON).await;
    assert!(per_person.contains("gby=[person_num@"), "{per_person}");
    let answer = rows(&engine, PER_PERSON).await;
    let ids: Vec<String> = rows(
        &engine,
        "SELECT person_id FROM events WHERE event = 'viewed' ORDER BY distinct_id",
    )
    .await;
    assert_eq!(
        answer,
        [
            format!("{},2,ann", ids[0]),
            format!("{},1,bob", ids[1]),
            format!("{},2,cy", ids[2]),
        ]
    );

    // Distinct persons are counted by number, without reading person_id.
    let distinct = plan(&engine, DISTINCT_PERSONS).await;
    assert!(distinct.contains("person_num"), "{distinct}");
    assert!(!distinct.contains("person_id@"), "{distinct}");
    assert_eq!(
        rows(&engine, DISTINCT_PERSONS).await,
        ["bought,2,1", "viewed,3,2"]
    );

    // Other groupings are left as they are.
    let two_keys = plan(
        &engine,
        "SELECT count(*) FROM events GROUP BY person_id, event",
    )
    .await;
    assert!(!two_keys.contains("person_num"), "{two_keys}");
}

#[tokio::test]
async fn an_event_without_a_number_keeps_the_grouping_by_id() {
    let (_dir, store, engine) = store_with_three_persons();
    // Rows as a store written before person numbers would hold them: two
    // persons, neither with a number.
    let stored = store.events.read_all().unwrap();
    let first = &stored[0];
    let columns = first
        .schema()
        .fields()
        .iter()
        .map(|field| match field.name().as_str() {
            "person_num" => Arc::new(Int64Array::new_null(2)) as Arc<dyn Array>,
            "person_id" => Arc::new(StringArray::from(vec!["old-1", "old-2"])),
            "event" => Arc::new(StringArray::from(vec!["viewed", "viewed"])),
            name => {
                let column = first.column_by_name(name).unwrap().slice(0, 1);
                datafusion::arrow::compute::concat(&[&column, &column]).unwrap()
            }
        })
        .collect();
    let unnumbered = RecordBatch::try_new(first.schema(), columns).unwrap();
    store
        .events
        .append(&[unnumbered], &BTreeMap::new())
        .unwrap();

    let funnel = plan(&engine, FUNNEL).await;
    assert!(!funnel.contains("gby=[person_num"), "{funnel}");
    // Two more persons, not one group of persons without a number.
    let levels = rows(&engine, FUNNEL).await;
    let people: i64 = levels
        .iter()
        .map(|row| row.split(',').nth(1).unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(people, 5, "{levels:?}");
    // And distinct persons by id: the two unnumbered ones count (their
    // copied distinct_id is ann's, so the filtered count leaves them out).
    let distinct = plan(&engine, DISTINCT_PERSONS).await;
    assert!(!distinct.contains("person_num"), "{distinct}");
    assert_eq!(
        rows(&engine, DISTINCT_PERSONS).await,
        ["bought,2,1", "viewed,5,2"]
    );
}
