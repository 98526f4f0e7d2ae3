//! Events counted by name from the Parquet dictionary codes, and by day
//! from the log, give the answers DataFusion's own grouping gives, over
//! files and buffered rows, and only queries of those shapes are counted
//! that way.

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
    "SELECT date_trunc('day', timestamp) AS day, count(*) FROM events GROUP BY day ORDER BY day",
];

/// Not rewritten: each needs DataFusion's grouping.
const GROUPED: &[&str] = &[
    "SELECT event, count(uuid) FROM events GROUP BY event ORDER BY event",
    "SELECT event, count(*) FROM events WHERE distinct_id <> 'ann' GROUP BY event ORDER BY event",
    "SELECT event, distinct_id, count(*) FROM events GROUP BY event, distinct_id ORDER BY 1, 2",
    "SELECT event, count(DISTINCT 1) FROM events GROUP BY event ORDER BY event",
    "SELECT date_trunc('day', timestamp) AS day, count(uuid) FROM events GROUP BY day ORDER BY day",
    "SELECT date_trunc('hour', timestamp) AS h, count(*) FROM events GROUP BY h ORDER BY h LIMIT 1",
];

fn engine_over(dir: &std::path::Path) -> (Arc<Store>, Ingestor, Engine) {
    let store = Arc::new(Store::open(dir, Mode::Writer, "test").unwrap());
    let ingestor = Ingestor::open(store.clone()).unwrap();
    let engine = Engine::new(store.clone(), Limits::default());
    (store, ingestor, engine)
}

#[tokio::test]
async fn counted_events_equal_the_grouped_counts() {
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
    // By day: 20 of the first commit's events a day, the second's on the
    // first two days, the buffered rows on the first.
    let days = [
        "1970-01-01T00:00:00Z,23",
        "1970-01-02T00:00:00Z,21",
        "1970-01-03T00:00:00Z,10",
    ];
    assert_eq!(rows(&engine, COUNTED[3]).await, days);
    assert_eq!(rows(&engine, GROUPED[4]).await, days);
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
