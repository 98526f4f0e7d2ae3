//! The capture endpoints of a real `plinth serve`, request by request: the
//! documented status of each kind of bad input, deduplication, beacons,
//! CORS, the "no flags" answers, and quarantine list and replay.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::{count, plinth, run_ok};
use reqwest::blocking::{Client, Response};
use serde_json::{Value, json};

/// A server with extra arguments; stopped with SIGTERM (graceful) or
/// SIGKILL (dropped).
struct Serving {
    child: Child,
    url: String,
}

impl Serving {
    fn start(data: &Path, extra: &[&str]) -> Serving {
        let mut child = plinth()
            .args([
                "serve",
                "--data",
                data.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap()
            .to_string();
        Serving { child, url }
    }

    /// SIGTERM, then waits: the server drains capture into Parquet.
    fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        assert!(exit.success(), "plinth serve exited with {exit}");
    }

    fn post(&self, path: &str, body: impl Into<reqwest::blocking::Body>) -> Response {
        Client::new()
            .post(format!("{}{path}", self.url))
            .body(body)
            .send()
            .unwrap()
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn event(key: &str, uuid: &str) -> Value {
    json!({"api_key": key, "event": "clicked", "distinct_id": "u1", "uuid": uuid, "properties": {"button": "buy"}})
}

#[test]
fn every_kind_of_request_gets_its_documented_answer() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let key = run_ok(&["keys", "create", "--data", data, "--capture"])
        .trim()
        .to_string();
    let admin = run_ok(&["keys", "create", "--data", data, "--role", "admin"])
        .trim()
        .to_string();
    let server = Serving::start(
        dir.path(),
        &["--max-event-bytes", "1KiB", "--max-batch-bytes", "64KiB"],
    );

    // Accepted, on every PostHog path, with and without a trailing slash.
    for (n, path) in [
        "/capture", "/batch/", "/e/", "/i/v0/e/", "/track", "/engage/",
    ]
    .iter()
    .enumerate()
    {
        let response = server.post(
            path,
            event(&key, &format!("00000000-0000-4000-8000-00000000000{n}")).to_string(),
        );
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(
            response.json::<Value>().unwrap(),
            json!({"status": 1}),
            "{path}"
        );
    }
    // The same uuid again (an SDK retry) is acknowledged and not stored twice.
    let retry = server.post(
        "/batch/",
        event(&key, "00000000-0000-4000-8000-000000000000").to_string(),
    );
    assert_eq!(retry.status(), 200);
    // GET with base64 data, and a beacon.
    let data_param =
        base64_encode(&event(&key, "00000000-0000-4000-8000-000000000010").to_string());
    let get = Client::new()
        .get(format!("{}/e/?data={data_param}", server.url))
        .send()
        .unwrap();
    assert_eq!(get.status(), 200);
    let beacon = server.post(
        "/e/?beacon=1",
        event(&key, "00000000-0000-4000-8000-000000000011").to_string(),
    );
    assert_eq!(beacon.status(), 204);
    // Segment, keyed by Basic auth and by writeKey.
    let segment = Client::new()
        .post(format!("{}/v1/track", server.url))
        .basic_auth(&key, Some(""))
        .json(&json!({"userId": "u1", "event": "paid", "messageId": "seg-1"}))
        .send()
        .unwrap();
    assert_eq!(segment.status(), 200);
    assert_eq!(segment.json::<Value>().unwrap(), json!({"success": true}));
    let segment_batch = server.post(
        "/v1/batch",
        json!({"writeKey": key, "batch": [{"type": "page", "anonymousId": "a1", "messageId": "seg-2", "name": "Home"}]}).to_string(),
    );
    assert_eq!(segment_batch.status(), 200);

    // Refusals.
    assert_eq!(server.post("/batch/", "{not json").status(), 400);
    assert_eq!(
        server
            .post("/batch/", json!({"api_key": key, "batch": []}).to_string())
            .status(),
        400
    );
    let no_key = json!({"event": "x", "distinct_id": "u"}).to_string();
    assert_eq!(server.post("/capture/", no_key).status(), 401);
    assert_eq!(
        server
            .post("/capture/", event("phc_wrong", "u-1").to_string())
            .status(),
        401
    );
    assert_eq!(
        server
            .post("/capture/", event(&admin, "u-2").to_string())
            .status(),
        401,
        "a secret key is not a write key"
    );
    let mut big = event(&key, "u-3");
    big["properties"]["blob"] = json!("x".repeat(2000));
    assert_eq!(server.post("/capture/", big.to_string()).status(), 413);
    assert_eq!(server.post("/batch/", vec![b' '; 70 << 10]).status(), 413);
    let gzip_garbage = vec![0x1f, 0x8b, 0x08, 0x00, 0x01, 0x02, 0x03];
    assert_eq!(server.post("/batch/", gzip_garbage).status(), 400);
    assert_eq!(server.post("/capture/", "").status(), 400);

    // A batch with one event too large and one without distinct_id: the
    // request is accepted, those two are quarantined, the third stored.
    let mut oversized = event(&key, "00000000-0000-4000-8000-000000000020");
    oversized["properties"]["blob"] = json!("y".repeat(2000));
    let batch = json!({"api_key": key, "batch": [
        oversized,
        {"event": "orphan", "properties": {}},
        event(&key, "00000000-0000-4000-8000-000000000021"),
    ]});
    assert_eq!(server.post("/batch/", batch.to_string()).status(), 200);

    // Browsers: CORS preflight and headers; posthog-js's flag and config calls.
    let preflight = Client::new()
        .request(reqwest::Method::OPTIONS, format!("{}/e/", server.url))
        .header("Origin", "https://shop.example")
        .header("Access-Control-Request-Headers", "content-type")
        .send()
        .unwrap();
    assert!(preflight.status().is_success());
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    let flags: Value = server
        .post(
            "/flags/?v=2",
            json!({"token": key, "distinct_id": "u1"}).to_string(),
        )
        .json()
        .unwrap();
    assert_eq!(flags["featureFlags"], json!({}));
    let config = Client::new()
        .get(format!("{}/array/{key}/config", server.url))
        .send()
        .unwrap();
    assert_eq!(config.status(), 200);

    // Queryable at once through the server.
    let rows: Value = Client::new()
        .post(format!("{}/api/v1/query", server.url))
        .bearer_auth(&admin)
        .json(&json!({"sql": "SELECT count(*), count(DISTINCT uuid) FROM events"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(rows["rows"], json!([[11, 11]]));

    // The counters agree: 11 stored, at least one retry, and group commit
    // never syncs more often than requests arrive.
    let metrics = Client::new()
        .get(format!("{}/metrics", server.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let counter = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(&format!("plinth_capture_{name}_total ")))
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
            .parse()
            .unwrap()
    };
    assert_eq!(counter("events"), 11, "{metrics}");
    assert!(counter("duplicates") >= 1, "{metrics}");
    assert!(
        (1..=counter("requests")).contains(&counter("fsyncs")),
        "{metrics}"
    );

    // A graceful stop leaves everything in Parquet and the log empty.
    server.stop();
    assert_eq!(count(dir.path(), "SELECT count(*) FROM events"), 11);
    assert_eq!(count(dir.path(), "SELECT count(*) FROM quarantine"), 2);
    let wal_bytes: u64 = std::fs::read_dir(dir.path().join("wal"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert_eq!(
        wal_bytes, 0,
        "the write-ahead log should be empty after a graceful stop"
    );

    // The engineer reads the quarantine, then replays it (with no size limit
    // now, the oversized event passes; the orphan still fails).
    let listed = run_ok(&["quarantine", "list", "--data", data]);
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(listed.contains("orphan"), "{listed}");
    let replayed = run_ok(&["quarantine", "replay", "--data", data]);
    assert!(
        replayed.contains("1 replayed into events, 1 still quarantined"),
        "{replayed}"
    );
    assert_eq!(count(dir.path(), "SELECT count(*) FROM events"), 12);
    assert_eq!(count(dir.path(), "SELECT count(*) FROM quarantine"), 1);
    // Replaying again changes nothing.
    run_ok(&["quarantine", "replay", "--data", data]);
    assert_eq!(count(dir.path(), "SELECT count(*) FROM events"), 12);
}

fn base64_encode(text: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out.replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D")
}
