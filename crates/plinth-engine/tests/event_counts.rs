//! Events counted by name from the Parquet dictionary codes give the
//! answers DataFusion's own grouping gives, over files and buffered rows,
//! and only queries of that shape are counted that way.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use plinth_engine::{Engine, Limits};
use plinth_ingest::Ingestor;
use plinth_store::{Mode, Store};

use common::{event, plan, rows};

/// Rewritten: grouped only by event, every aggregate a `count(*)`.
const COUNTED: &[&str] = &[
    "SELECT event, count(*) FROM events GROUP BY event ORDER BY event",
    "SELECT e.event, count(1) AS n, count(*) FROM events AS e GROUP BY e.event ORDER BY 1",
    "SELECT event, count(*) AS n FROM events GROUP BY event ORDER BY n DESC, event LIMIT 2",
];

/// Not rewritten: each needs DataFusion's grouping.
const GROUPED: &[&str] = &[
    "SELECT event, count(uuid) FROM events GROUP BY event ORDER BY event",
    "SELECT event, count(*) FROM events WHERE distinct_id <> 'ann' GROUP BY event ORDER BY event",
    "SELECT event, distinct_id, count(*) FROM events GROUP BY event, distinct_id ORDER BY 1, 2",
    "SELECT event, count(DISTINCT 1) FROM events GROUP BY event ORDER BY event",
];

fn engine_over(dir: &std::path::Path) -> (Arc<Store>, Ingestor, Engine) {
    let store = Arc::new(Store::open(dir, Mode::Writer, "test").unwrap());
    let ingestor = Ingestor::open(store.clone()).unwrap();
    let engine = Engine::new(store.clone(), Limits::default());
    (store, ingestor, engine)
}

#[tokio::test]
async fn counts_by_code_equal_the_grouped_counts() {
    let dir = tempfile::tempdir().unwrap();
    let (store, ingestor, engine) = engine_over(dir.path());
    let day = 86_400_000_000;
    // Two commits over two days: several files, names in several dictionaries.
    let first: Vec<_> = (0..50)
        .map(|i| {
            event(
                ["viewed", "bought", "left"][i % 3],
                "ann",
                i as i64 * day / 20,
            )
        })
        .collect();
    ingestor.append(&first, 10 * day, &BTreeMap::new()).unwrap();
    let second = [
        event("viewed", "bob", 1),
        event("signed up", "bob", day + 5),
    ];
    ingestor
        .append(&second, 10 * day, &BTreeMap::new())
        .unwrap();
    // And rows still in the buffer.
    let buffered = [event("viewed", "cy", 7), event("invited", "cy", 8)];
    store
        .events
        .buffer(ingestor.events_batch(&buffered, 10 * day).unwrap())
        .unwrap();
    assert!(store.events.snapshot().files.len() >= 3);

    let expected = [
        "bought,17",
        "invited,1",
        "left,16",
        "signed up,1",
        "viewed,19",
    ];
    assert_eq!(rows(&engine, COUNTED[0]).await, expected);
    let twice: Vec<String> = expected
        .iter()
        .map(|row| format!("{row},{}", row.rsplit(',').next().unwrap()))
        .collect();
    assert_eq!(rows(&engine, COUNTED[1]).await, twice);
    assert_eq!(rows(&engine, COUNTED[2]).await, ["viewed,19", "bought,17"]);
    assert_eq!(rows(&engine, GROUPED[0]).await, expected);
    for sql in COUNTED {
        let plan = plan(&engine, sql).await;
        assert!(plan.contains("EventCountsExec"), "{sql}\n{plan}");
    }
    for sql in GROUPED {
        let plan = plan(&engine, sql).await;
        assert!(!plan.contains("EventCountsExec"), "{sql}\n{plan}");
    }
}

#[tokio::test]
async fn an_empty_table_has_no_counts() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, _ingestor, engine) = engine_over(dir.path());
    assert!(rows(&engine, COUNTED[0]).await.is_empty());
    assert!(plan(&engine, COUNTED[0]).await.contains("EventCountsExec"));
}
