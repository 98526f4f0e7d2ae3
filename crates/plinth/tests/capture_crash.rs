//! Crash tests of capture: concurrent senders post batches while the server
//! is killed (SIGKILL) at random moments and restarted. Every event that was
//! acknowledged with 200 must be stored exactly once. And a kill after the
//! events reached Parquet but before persons were saved loses no merge.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Server, admin_and_capture_keys, count, query};
use serde_json::{Value, json};

const SENDERS: usize = 4;
const BATCH: usize = 50;
const ROUNDS: usize = 4;

/// Posts batches until `stop` or until the server is gone; records the ids
/// of every batch answered 200. Every third request re-sends the previous
/// batch, as an SDK retry would.
fn send_until_stopped(
    url: String,
    key: String,
    sender: usize,
    round: usize,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<HashSet<String>>>,
) -> usize {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut previous: Option<Vec<String>> = None;
    let mut sent = 0;
    for request in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let ids: Vec<String> = match (&previous, request % 3) {
            (Some(ids), 2) => ids.clone(),
            _ => (0..BATCH)
                .map(|j| format!("{round}-{sender}-{request}-{j}"))
                .collect(),
        };
        let batch: Vec<Value> = ids
            .iter()
            .map(|id| json!({"event": "crash test", "distinct_id": format!("sender-{sender}"), "uuid": id, "properties": {"id": id}}))
            .collect();
        let body = json!({"api_key": key, "batch": batch});
        match client.post(format!("{url}/batch/")).json(&body).send() {
            Ok(response) if response.status() == 200 => {
                sent += ids.len();
                acked.lock().unwrap().extend(ids.iter().cloned());
            }
            Ok(_) => {}
            Err(_) => break,
        }
        previous = Some(ids);
    }
    sent
}

#[test]
fn acknowledged_events_survive_sigkill_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let (admin, key) = common::admin_and_capture_keys(data);
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let mut moments = common::Moments::from_env_or_clock();
    for round in 0..ROUNDS {
        let server = Server::start(dir.path());
        let stop = Arc::new(AtomicBool::new(false));
        let senders: Vec<_> = (0..SENDERS)
            .map(|sender| {
                let (url, key, stop, acked) =
                    (server.url.clone(), key.clone(), stop.clone(), acked.clone());
                std::thread::spawn(move || send_until_stopped(url, key, sender, round, stop, acked))
            })
            .collect();
        // Late enough in some rounds for a flush (every 5 s) to have run.
        std::thread::sleep(Duration::from_millis(moments.next_ms(300, 6500)));
        drop(server); // SIGKILL
        stop.store(true, Ordering::Relaxed);
        let sent: usize = senders.into_iter().map(|s| s.join().unwrap()).sum();
        assert!(
            sent > 0,
            "round {round}: no request was acknowledged before the kill"
        );
    }

    let server = Server::start(dir.path());
    let acked = acked.lock().unwrap();
    let counts = query(
        &server.url,
        &admin,
        "SELECT count(*), count(DISTINCT uuid) FROM events WHERE event = 'crash test'",
    );
    let (rows, unique) = (
        counts[0][0].as_u64().unwrap(),
        counts[0][1].as_u64().unwrap(),
    );
    assert_eq!(rows, unique, "an event is stored twice");
    let stored: HashSet<String> = query(
        &server.url,
        &admin,
        "SELECT uuid FROM events WHERE event = 'crash test'",
    )
    .into_iter()
    .map(|row| row[0].as_str().unwrap().to_string())
    .collect();
    let lost: Vec<_> = acked.difference(&stored).take(5).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged events lost, e.g. {lost:?}",
        acked.difference(&stored).count()
    );
    eprintln!("{} acknowledged, {} stored", acked.len(), stored.len());
}

/// Persons are saved every 30 s, events every second: a kill in between
/// leaves events in Parquet whose persons exist only in the log. Restart
/// must derive them again.
#[test]
fn a_merge_logged_before_a_kill_survives_when_persons_were_not_saved() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let (admin, key) = admin_and_capture_keys(data);
    let server = Server::start(dir.path());
    let batch = json!({"api_key": key, "batch": [
        {"event": "$pageview", "distinct_id": "anon-7", "properties": {}},
        {"event": "$identify", "distinct_id": "user-7",
         "properties": {"$anon_distinct_id": "anon-7", "$set": {"plan": "pro"}}},
        {"event": "signed up", "distinct_id": "user-7", "properties": {}},
    ]});
    let response = reqwest::blocking::Client::new()
        .post(format!("{}/batch/", server.url))
        .body(batch.to_string())
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    // `plinth sql` beside the server reads Parquet only.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while count(dir.path(), "SELECT count(*) FROM events") < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "events never reached Parquet"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        count(dir.path(), "SELECT count(*) FROM persons"),
        0,
        "persons were saved already: this test would not exercise recovery"
    );
    drop(server); // SIGKILL

    let server = Server::start(dir.path());
    assert_eq!(
        json!(query(
            &server.url,
            &admin,
            "SELECT count(DISTINCT person_id) FROM events"
        )),
        json!([[1]])
    );
    assert_eq!(
        json!(query(
            &server.url,
            &admin,
            "SELECT array_length(distinct_ids), properties->>'plan' FROM persons"
        )),
        json!([[2, "pro"]])
    );
    assert_eq!(
        json!(query(&server.url, &admin, "SELECT count(*) FROM events")),
        json!([[3]]),
        "recovery re-derives persons without storing the events again"
    );
}
