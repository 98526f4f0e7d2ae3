//! The HTTP API of a real `plinth serve`, with real keys.

mod common;

use common::{Server, count, printed, run_ok};
use serde_json::Value;

fn post(
    url: &str,
    key: Option<&str>,
    accept: Option<&str>,
    body: &str,
) -> reqwest::blocking::Response {
    let client = reqwest::blocking::Client::new();
    let mut request = client
        .post(format!("{url}/api/v1/query"))
        .body(body.to_string());
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if let Some(accept) = accept {
        request = request.header("Accept", accept);
    }
    request.send().expect("request")
}

#[test]
fn the_demo_is_queryable_over_http_by_key_and_beside_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let out = run_ok(&[
        "demo",
        "--data",
        data,
        "--users",
        "300",
        "--days",
        "14",
        "--seed",
        "7",
        "--no-serve",
    ]);
    let admin = printed(&out, "secret key (admin):");
    let analyst = run_ok(&["keys", "create", "--data", data, "--role", "analyst"])
        .trim()
        .to_string();
    let capture = run_ok(&["keys", "create", "--data", data, "--capture"])
        .trim()
        .to_string();

    let server = Server::start(dir.path());
    let health = reqwest::blocking::get(format!("{}/healthz", server.url)).unwrap();
    assert_eq!(health.status(), 200);

    // The CLI reads the same directory while the server holds it.
    let events = count(dir.path(), "SELECT count(*) FROM events");
    assert!(events > 1000, "the demo should hold events, found {events}");

    let sql =
        r#"{"sql": "SELECT count(*) AS n, count(DISTINCT person_id) AS persons FROM events"}"#;
    let answer: Value = post(&server.url, Some(&admin), None, sql).json().unwrap();
    assert_eq!(answer["columns"][0]["name"], "n");
    assert_eq!(answer["rows"][0][0].as_u64(), Some(events));
    assert!(answer["rows"][0][1].as_u64().unwrap() > 0);

    let csv = post(&server.url, Some(&analyst), Some("text/csv"), sql)
        .text()
        .unwrap();
    assert_eq!(csv.lines().next(), Some("n,persons"));
    assert_eq!(
        csv.lines()
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .parse::<u64>()
            .unwrap(),
        events
    );

    let arrow = post(
        &server.url,
        Some(&analyst),
        Some("application/vnd.apache.arrow.stream"),
        r#"{"sql": "SELECT event FROM events LIMIT 10"}"#,
    );
    assert_eq!(
        arrow.headers()["content-type"],
        "application/vnd.apache.arrow.stream"
    );
    let bytes = arrow.bytes().unwrap();
    let reader =
        datafusion::arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
            .unwrap();
    let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, 10);

    // No key, a wrong key and a capture key are all refused.
    for key in [None, Some("phx_not-a-key"), Some(capture.as_str())] {
        let response = post(&server.url, key, None, sql);
        assert_eq!(response.status(), 401, "key {key:?}");
        let body: Value = response.json().unwrap();
        assert!(body["error"].as_str().unwrap().len() > 5);
    }

    // Analysts cannot reach files; bad SQL is the caller's error.
    let refused = post(
        &server.url,
        Some(&analyst),
        None,
        r#"{"sql": "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'"}"#,
    );
    assert_eq!(refused.status(), 403);
    let bad = post(&server.url, Some(&analyst), None, r#"{"sql": "SELEC 1"}"#);
    assert_eq!(bad.status(), 400);
    let not_json = post(&server.url, Some(&analyst), None, "SELECT 1");
    assert_eq!(not_json.status(), 400);
}
