//! Tracking plans on a real `plinth serve`: `record` keeps violating events
//! and marks them, `enforce` quarantines them with the reason, the
//! violations report counts both, and quarantine replay re-checks against
//! the plan as it is after a fix.

mod common;

use std::path::Path;

use common::{Server, admin_and_capture_keys, count, query, run, run_ok};
use reqwest::blocking::Client;
use serde_json::{Value, json};

const PLAN: &str = r#"
mode: record
unplanned_events: violation
events:
  checkout completed:
    owner: payments
    mode: enforce
    properties:
      plan: { type: string, required: true, enum: [free, pro, team] }
      amount: { type: number, required: true, minimum: 0 }
  signed up:
    additional_properties: false
    properties:
      source: { type: string, required: true }
  invited teammate:
    description: Planned, never sent in this test.
"#;

/// The plan after the team agreed that gold is a plan and amount optional.
const FIXED_PLAN: &str = r#"
mode: record
events:
  checkout completed:
    mode: enforce
    properties:
      plan: { type: string, required: true, enum: [free, pro, team, gold] }
      amount: { type: number, minimum: 0 }
"#;

fn post(url: &str, body: Value) {
    let response = Client::new()
        .post(url)
        .body(body.to_string())
        .send()
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().unwrap());
}

fn violations(server: &Server, admin: &str, query: &str) -> reqwest::blocking::Response {
    Client::new()
        .get(format!(
            "{}/api/v1/tracking-plan/violations{query}",
            server.url
        ))
        .bearer_auth(admin)
        .send()
        .unwrap()
}

fn event_report<'a>(report: &'a Value, event: &str) -> &'a Value {
    report["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["event"] == event)
        .unwrap_or_else(|| panic!("no {event} in {report:#}"))
}

#[test]
fn record_marks_enforce_quarantines_and_replay_rechecks() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    std::fs::write(dir.path().join("tracking-plan.yml"), PLAN).unwrap();
    let (admin, key) = admin_and_capture_keys(data);
    let server = Server::start(dir.path());

    let checkout = |plan: &str, amount: Option<f64>| {
        let mut properties = json!({"plan": plan});
        if let Some(amount) = amount {
            properties["amount"] = json!(amount);
        }
        json!({"event": "checkout completed", "distinct_id": "u1", "properties": properties})
    };
    post(
        &format!("{}/batch/", server.url),
        json!({"api_key": key, "batch": [
            checkout("pro", Some(10.0)),
            checkout("gold", Some(5.0)),
            checkout("pro", None),
            {"event": "signed up", "distinct_id": "u2",
             "properties": {"source": "ads", "referrer": "news", "$browser": "Firefox"}},
            {"event": "signed up", "distinct_id": "u3",
             "properties": {"source": "ads", "$plan_violations": ["forged by the client"]}},
            {"event": "clicked button", "distinct_id": "u4", "properties": {}},
            {"event": "$pageview", "distinct_id": "u4", "properties": {"$current_url": "/"}},
        ]}),
    );
    // Segment's shape is checked the same way.
    post(
        &format!("{}/v1/track", server.url),
        json!({"writeKey": key, "userId": "u5", "event": "checkout completed",
               "properties": {"plan": "team"}}),
    );

    let marked = "json_contains(properties, '$plan_violations')";
    let served = |sql: &str| query(&server.url, &admin, sql)[0][0].clone();
    assert_eq!(served("SELECT count(*) FROM events"), json!(5));
    assert_eq!(
        served("SELECT count(*) FROM events WHERE event = 'checkout completed'"),
        json!(1)
    );
    assert_eq!(
        served(&format!("SELECT count(*) FROM events WHERE {marked}")),
        json!(2),
        "the unexpected property and the unplanned event are recorded; the forged mark is gone"
    );
    let recorded = served(
        "SELECT properties->>'$plan_violations' FROM events \
         WHERE event = 'signed up' AND distinct_id = 'u2'",
    );
    let recorded = recorded.as_str().unwrap();
    assert!(
        recorded.contains("unexpected property `referrer`"),
        "{recorded}"
    );
    assert!(
        !recorded.contains("$browser"),
        "SDK properties are never unexpected"
    );
    assert_eq!(
        served("SELECT count(*) FROM quarantine WHERE starts_with(reason, 'tracking plan: ')"),
        json!(3)
    );

    let report: Value = violations(&server, &admin, "?days=30").json().unwrap();
    assert_eq!(report["tracking_plan"], true);
    let checkout_report = event_report(&report, "checkout completed");
    assert_eq!(checkout_report["mode"], "enforce");
    assert_eq!(
        (
            &checkout_report["stored"],
            &checkout_report["quarantined"],
            &checkout_report["stored_with_violations"]
        ),
        (&json!(1), &json!(3), &json!(0))
    );
    assert_eq!(
        checkout_report["violations"],
        json!([
            {"violation": "missing required property `amount`", "count": 2},
            {"violation": "property `plan` is \"gold\", not one of \"free\", \"pro\", \"team\"", "count": 1},
        ])
    );
    let signed_up = event_report(&report, "signed up");
    assert_eq!(
        (&signed_up["stored"], &signed_up["stored_with_violations"]),
        (&json!(2), &json!(1))
    );
    let unplanned = event_report(&report, "clicked button");
    assert_eq!(
        (&unplanned["planned"], &unplanned["mode"]),
        (&json!(false), &json!("record"))
    );
    let never_sent = event_report(&report, "invited teammate");
    assert_eq!(
        (&never_sent["planned"], &never_sent["stored"]),
        (&json!(true), &json!(0))
    );
    assert!(
        report["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["event"] != "$pageview"),
        "events that keep the plan and are not in it are not listed"
    );
    assert_eq!(violations(&server, &admin, "?days=0").status(), 400);
    assert_eq!(
        Client::new()
            .get(format!("{}/api/v1/tracking-plan/violations", server.url))
            .send()
            .unwrap()
            .status(),
        401
    );
    drop(server);
    let store = dir.path();

    // Replay against the same plan: the events still violate it and stay.
    let replay = run_ok(&["quarantine", "replay", "--data", data]);
    assert!(
        replay.contains("0 replayed into events, 3 still quarantined"),
        "{replay}"
    );
    assert!(
        replay.contains("missing required property `amount`"),
        "{replay}"
    );

    // After the fix, replay moves them into events, clean.
    std::fs::write(dir.path().join("tracking-plan.yml"), FIXED_PLAN).unwrap();
    let replay = run_ok(&["quarantine", "replay", "--data", data]);
    assert!(
        replay.contains("3 replayed into events, 0 still quarantined"),
        "{replay}"
    );
    assert_eq!(
        count(
            store,
            "SELECT count(*) FROM events WHERE event = 'checkout completed'"
        ),
        4
    );
    assert_eq!(
        count(
            store,
            &format!("SELECT count(*) FROM events WHERE event = 'checkout completed' AND {marked}")
        ),
        0
    );
}

#[test]
fn a_broken_plan_stops_the_server_with_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.yml");
    std::fs::write(&plan, "mode: block\nevents: {}\n").unwrap();
    let output = run(&[
        "serve",
        "--data",
        dir.path().to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--tracking-plan",
        plan.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("error: ") && stderr.contains("plan.yml") && stderr.contains("line 1"),
        "{stderr}"
    );
    let missing = run(&[
        "quarantine",
        "replay",
        "--data",
        dir.path().to_str().unwrap(),
        "--tracking-plan",
        Path::new("/nonexistent/plan.yml").to_str().unwrap(),
    ]);
    assert_eq!(missing.status.code(), Some(1));
}
