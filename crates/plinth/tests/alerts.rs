//! Alerts inside a real `plinth serve` on the demo product: the planted
//! checkout outage is flagged with its contributing browsers, recorded, and
//! POSTed to a real local HTTP receiver that fails twice before accepting,
//! so the retries, their backoff and the delivery log are all observed; and
//! a delivery cut short by a crash resumes after a restart.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Server, admin_and_capture_keys, demo_until_june_30, get_json, run_ok};
use serde_json::Value;

/// A webhook receiver on a loopback port: answers 503 to the first
/// `failures` requests, then 200; sends every request body to the channel.
fn receiver(failures: usize) -> (String, mpsc::Receiver<(u16, Value)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hooks/plinth", listener.local_addr().unwrap());
    let (sender, bodies) = mpsc::channel();
    std::thread::spawn(move || {
        for (served, stream) in listener.incoming().enumerate() {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            assert!(
                request_line.starts_with("POST /hooks/plinth "),
                "{request_line}"
            );
            let mut length = 0;
            loop {
                let mut header = String::new();
                reader.read_line(&mut header).unwrap();
                if header.trim().is_empty() {
                    break;
                }
                if let Some((name, value)) = header.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let status = if served < failures { 503 } else { 200 };
            let reason = if status == 200 {
                "OK"
            } else {
                "Service Unavailable"
            };
            write!(
                stream,
                "HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let body = serde_json::from_slice(&body).expect("the webhook body is JSON");
            if sender.send((status, body)).is_err() {
                return;
            }
        }
    });
    (url, bodies)
}

#[test]
fn the_checkout_outage_is_flagged_recorded_and_delivered_after_retries() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    demo_until_june_30(data);
    let (admin, _) = admin_and_capture_keys(data);
    let (url, bodies) = receiver(2);
    let server = Server::start(dir.path());
    let client = reqwest::blocking::Client::new();

    // Drops only, over the last 30 days: the outage (2026-06-10, see
    // tests/anomalies.rs) must be the one point flagged.
    let definition = format!(
        "name: checkout-outage
event: checkout completed
breakdown: $browser
direction: down
lookback: 30
webhook: {{url: '{url}', max_attempts: 4, backoff_seconds: 0.3}}
"
    );
    let created = client
        .post(format!("{}/api/v1/alerts", server.url))
        .bearer_auth(&admin)
        .body(definition)
        .send()
        .unwrap();
    assert_eq!(created.status(), 201);

    let wait = Duration::from_secs(120);
    let received: Vec<(u16, Value)> = (0..3)
        .map(|_| bodies.recv_timeout(wait).expect("a webhook request"))
        .collect();
    let statuses: Vec<u16> = received.iter().map(|r| r.0).collect();
    assert_eq!(statuses, [503, 503, 200]);
    let point = &received[2].1;
    assert!(received.iter().all(|r| r.1 == *point), "{received:?}");
    assert_eq!(point["alert"], "checkout-outage");
    assert_eq!(point["bucket"], "2026-06-10T00:00:00+00:00", "{point:#}");
    assert_eq!(point["value"], 0.0);
    assert_eq!(point["direction"], "down");
    assert_eq!(point["contributors"][0]["dimension"], "$browser");
    assert_eq!(point["contributors"][0]["value"], "Chrome", "{point:#}");

    // The delivery log: two refusals, then the delivery, with backoff.
    let get = |path: &str| get_json(&server.url, &admin, path);
    let started = Instant::now();
    let log = loop {
        let log = get("/api/v1/alerts/checkout-outage/deliveries");
        if log.as_array().unwrap().len() >= 3 || started.elapsed() > wait {
            break log;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = log.as_array().unwrap();
    assert_eq!(log.len(), 3, "{log:?}");
    let attempts: Vec<(u64, u64, bool)> = log
        .iter()
        .map(|d| {
            (
                d["attempt"].as_u64().unwrap(),
                d["status"].as_u64().unwrap(),
                d["delivered"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(attempts, [(1, 503, false), (2, 503, false), (3, 200, true)]);
    let at: Vec<chrono::DateTime<chrono::FixedOffset>> = log
        .iter()
        .map(|d| chrono::DateTime::parse_from_rfc3339(d["at"].as_str().unwrap()).unwrap())
        .collect();
    let gap = |i: usize| (at[i + 1] - at[i]).num_milliseconds();
    assert!(
        gap(0) >= 250 && gap(1) >= 550,
        "backoff 0.3 s then 0.6 s: {at:?}"
    );

    // The point is recorded once, with its contributors, and not sent again.
    let alerts = get("/api/v1/alerts");
    assert_eq!(alerts[0]["points"].as_array().unwrap().len(), 1);
    assert_eq!(alerts[0]["points"][0], *point);
    assert!(bodies.recv_timeout(Duration::from_secs(3)).is_err());
}

#[test]
fn a_delivery_cut_short_by_a_crash_resumes_when_the_server_starts_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    demo_until_june_30(data);
    let (admin, _) = admin_and_capture_keys(data);
    let (url, bodies) = receiver(1);
    // A minute between attempts: the server is killed inside that wait.
    let definition = dir.path().join("alert.yml");
    std::fs::write(
        &definition,
        format!(
            "name: checkout-outage
event: checkout completed
direction: down
lookback: 30
webhook: {{url: '{url}', max_attempts: 3, backoff_seconds: 60}}
"
        ),
    )
    .unwrap();
    run_ok(&[
        "alert",
        "create",
        "--data",
        data,
        definition.to_str().unwrap(),
    ]);
    let wait = Duration::from_secs(120);
    let deliveries = |server: &Server| -> Vec<(u64, bool)> {
        let log = get_json(
            &server.url,
            &admin,
            "/api/v1/alerts/checkout-outage/deliveries",
        );
        log.as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["attempt"].as_u64().unwrap(),
                    d["delivered"].as_bool().unwrap(),
                )
            })
            .collect()
    };

    let first = Server::start(dir.path());
    assert_eq!(bodies.recv_timeout(wait).unwrap().0, 503);
    let started = Instant::now();
    while deliveries(&first).is_empty() && started.elapsed() < wait {
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(first); // SIGKILL, mid-backoff

    let again = Server::start(dir.path());
    let (status, point) = bodies.recv_timeout(wait).unwrap();
    assert_eq!(status, 200);
    assert_eq!(point["bucket"], "2026-06-10T00:00:00+00:00");
    let started = Instant::now();
    while deliveries(&again).len() < 2 && started.elapsed() < wait {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(deliveries(&again), [(1, false), (2, true)]);
    assert!(bodies.recv_timeout(Duration::from_secs(3)).is_err());
}

/// `method` on `path` of the server with `key`: the status and JSON answer.
fn send(method: reqwest::Method, url: &str, key: &str, body: Option<String>) -> (u16, Value) {
    let mut request = reqwest::blocking::Client::new()
        .request(method, url)
        .bearer_auth(key);
    if let Some(body) = body {
        request = request.body(body);
    }
    let response = request.send().unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

/// An hourly alert on `heartbeat` rising, evaluated every second.
fn heartbeat_alert(name: &str, url: &str) -> String {
    format!(
        "name: {name}
event: heartbeat
interval: hour
direction: up
every_seconds: 1
webhook: {{url: '{url}', max_attempts: 1, backoff_seconds: 0.1}}
"
    )
}

const HOUR: i64 = 3_600_000_000;

fn this_hour() -> i64 {
    let now = chrono::Utc::now().timestamp_micros();
    now - now.rem_euclid(HOUR)
}

fn at(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .unwrap()
        .to_rfc3339()
}

/// Imports a steady heartbeat, about 20 an hour, for the 58 hours up to
/// three hours ago, then `extra` events.
fn import_heartbeats(dir: &std::path::Path, extra: &[Value]) {
    let this_hour = this_hour();
    let mut lines = Vec::new();
    for h in 3..=60i64 {
        for i in 0..(18 + (h * 7) % 5) {
            lines.push(
                serde_json::json!({"event": "heartbeat", "distinct_id": format!("d{i}"),
                                   "timestamp": at(this_hour - h * HOUR + i * 60_000_000)})
                .to_string(),
            );
        }
    }
    lines.extend(extra.iter().map(Value::to_string));
    let file = dir.join("heartbeats.ndjson");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    run_ok(&[
        "import",
        "--data",
        dir.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
}

/// A tenfold jump of the heartbeat two hours ago.
fn heartbeat_spike() -> Vec<Value> {
    let this_hour = this_hour();
    (0..200)
        .map(|i| {
            serde_json::json!({"event": "heartbeat", "distinct_id": format!("s{i}"),
                               "timestamp": at(this_hour - 2 * HOUR + i * 1_000_000)})
        })
        .collect()
}

#[test]
fn deleting_an_alert_stops_its_delivery_retries() {
    let dir = tempfile::tempdir().unwrap();
    import_heartbeats(dir.path(), &heartbeat_spike());
    let (admin, _) = admin_and_capture_keys(dir.path().to_str().unwrap());
    // The receiver refuses every attempt; the alert would retry for minutes.
    let (url, bodies) = receiver(usize::MAX);
    let server = Server::start(dir.path());
    let alert = heartbeat_alert("flaky", &url).replace(
        "max_attempts: 1, backoff_seconds: 0.1",
        "max_attempts: 6, backoff_seconds: 1.5",
    );
    let (status, answer) = send(
        reqwest::Method::POST,
        &format!("{}/api/v1/alerts", server.url),
        &admin,
        Some(alert),
    );
    assert_eq!(status, 201, "{answer}");
    let (status, _) = bodies
        .recv_timeout(Duration::from_secs(60))
        .expect("the spike is flagged and sent");
    assert_eq!(status, 503);
    let (status, answer) = send(
        reqwest::Method::DELETE,
        &format!("{}/api/v1/alerts/flaky", server.url),
        &admin,
        None,
    );
    assert_eq!(status, 200, "{answer}");
    // The next attempt was due 1.5 s after the first, then 3 s after that.
    assert!(
        bodies.recv_timeout(Duration::from_secs(6)).is_err(),
        "a deleted alert's delivery kept retrying"
    );
    let log = get_json(&server.url, &admin, "/api/v1/alerts/flaky/deliveries");
    assert_eq!(log.as_array().unwrap().len(), 1, "{log:#}");
}

#[test]
fn a_deleted_alert_stops_in_the_running_server_and_keeps_its_history() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    import_heartbeats(dir.path(), &[]);
    let hour = 3_600_000_000i64;
    let this_hour = this_hour();
    let (admin, capture) = admin_and_capture_keys(data);
    let viewer = run_ok(&["keys", "create", "--data", data, "--role", "viewer"])
        .trim()
        .to_string();
    let (kept_url, kept) = receiver(0);
    let (deleted_url, deleted) = receiver(0);
    let server = Server::start(dir.path());
    let url = |path: &str| format!("{}{path}", server.url);
    let create = |name: &str, webhook: &str| {
        let (status, answer) = send(
            reqwest::Method::POST,
            &url("/api/v1/alerts"),
            &admin,
            Some(heartbeat_alert(name, webhook)),
        );
        assert_eq!(status, 201, "{answer}");
    };
    create("kept", &kept_url);
    create("deleted", &deleted_url);
    let names = || -> Vec<String> {
        get_json(&server.url, &admin, "/api/v1/alerts")
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(), ["deleted", "kept"]);
    // Nothing unusual yet.
    assert!(kept.recv_timeout(Duration::from_secs(3)).is_err());
    assert!(deleted.try_recv().is_err());

    // Only analysts and admins delete; an unknown name is 404.
    let delete = |key: &str, name: &str| {
        send(
            reqwest::Method::DELETE,
            &url(&format!("/api/v1/alerts/{name}")),
            key,
            None,
        )
    };
    assert_eq!(delete(&viewer, "deleted").0, 403);
    assert_eq!(delete(&admin, "never-was").0, 404);
    let (status, answer) = delete(&admin, "deleted");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        serde_json::json!({"name": "deleted", "deleted": true,
                           "kept": {"points": 0, "deliveries": 0}})
    );
    assert_eq!(delete(&admin, "deleted").0, 404);
    assert_eq!(names(), ["kept"]);

    // Then the heartbeat jumps tenfold two hours ago: the alert still
    // defined is told; the deleted one, identical, is not evaluated.
    let spike = heartbeat_spike();
    let sent = reqwest::blocking::Client::new()
        .post(url("/batch/"))
        .body(serde_json::json!({"api_key": capture, "batch": spike}).to_string())
        .send()
        .unwrap();
    assert_eq!(sent.status(), 200);
    let (status, point) = kept
        .recv_timeout(Duration::from_secs(60))
        .expect("the spike is flagged");
    assert_eq!(status, 200);
    assert_eq!(point["alert"], "kept");
    assert_eq!(point["bucket"], at(this_hour - 2 * hour), "{point:#}");
    assert_eq!(point["value"], 200.0);
    assert!(
        deleted.recv_timeout(Duration::from_secs(3)).is_err(),
        "the deleted alert was evaluated"
    );

    // Deleted with the CLI beside the running server: its history stays,
    // readable, and an alert created again under the name takes it up and
    // does not notify the same hour twice.
    let log = || get_json(&server.url, &admin, "/api/v1/alerts/kept/deliveries");
    let started = Instant::now();
    while log().as_array().unwrap().is_empty() && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = run_ok(&["alert", "delete", "kept", "--data", data]);
    assert_eq!(
        out.trim(),
        "deleted alert kept; kept its history: 1 flagged points, 1 delivery attempts"
    );
    assert!(names().is_empty());
    let history = log();
    assert_eq!(history.as_array().unwrap().len(), 1, "{history}");
    assert_eq!(history[0]["delivered"], true);
    let (status, _) = send(
        reqwest::Method::GET,
        &url("/api/v1/alerts/never-was/deliveries"),
        &admin,
        None,
    );
    assert_eq!(status, 404);
    create("kept", &kept_url);
    assert!(
        kept.recv_timeout(Duration::from_secs(3)).is_err(),
        "a bucket was notified twice"
    );
    let alerts = get_json(&server.url, &admin, "/api/v1/alerts");
    assert_eq!(alerts[0]["points"][0]["bucket"], point["bucket"]);
    let again = common::run(&["alert", "delete", "never-was", "--data", data]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("no alert named \"never-was\""),
        "{again:?}"
    );
}
