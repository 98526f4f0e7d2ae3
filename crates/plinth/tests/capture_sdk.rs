//! The real PostHog and Segment SDKs (Python and Node) pointed at a real
//! `plinth serve`: every event arrives exactly once with its properties,
//! and identify / alias join each story into one person, also for events
//! sent before the merge.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Server, python, query};
use serde_json::{Value, json};

const STORIES: [&str; 4] = ["py-posthog", "py-segment", "node-posthog", "node-segment"];

fn sdk_dir() -> PathBuf {
    common::manifest_dir().join("../../tests/sdk")
}

/// Polls `sql` until it returns `expected` (persons reach Parquet at the
/// next flush, every few seconds).
fn eventually(server: &Server, admin: &str, sql: &str, expected: Value) {
    let started = Instant::now();
    loop {
        let rows = query(&server.url, admin, sql);
        if json!(rows) == expected {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{sql}\nexpected {expected}, got {}",
            json!(rows)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn run_client(program: &mut Command, what: &str) {
    let output = program
        .output()
        .unwrap_or_else(|e| panic!("cannot run the {what} SDK program: {e}; run the tests through .ci/run, which installs the SDKs"));
    assert!(
        output.status.success(),
        "the {what} SDK program failed (run the tests through .ci/run, which installs \
         the PyPI packages posthog and segment-analytics-python into its venv and runs \
         `npm ci` in tests/sdk):\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn real_sdks_deliver_every_event_once_and_merge_identities() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let (admin, key) = common::admin_and_capture_keys(data);
    let server = Server::start(dir.path());

    run_client(
        Command::new(python())
            .arg(sdk_dir().join("send_python.py"))
            .args([&server.url, &key]),
        "Python (posthog, segment-analytics-python)",
    );
    assert!(
        sdk_dir().join("node_modules/posthog-node").is_dir()
            && sdk_dir()
                .join("node_modules/@segment/analytics-node")
                .is_dir(),
        "the Node SDKs are not installed in tests/sdk/node_modules: run the tests through \
         .ci/run (it runs `npm ci` in tests/sdk)"
    );
    run_client(
        Command::new("node")
            .arg(sdk_dir().join("send_node.mjs"))
            .args([&server.url, &key]),
        "Node (posthog-node, @segment/analytics-node)",
    );

    for story in STORIES {
        // Each of the 13 events exactly once, with its properties. (The
        // parser binds `=` tighter than `->>`: accesses are parenthesised.)
        let events = format!(
            "SELECT count(*), count(DISTINCT uuid), count(DISTINCT properties->>'i'), \
             min(CAST(properties->>'i' AS BIGINT)), max(CAST(properties->>'i' AS BIGINT)), \
             count(*) FILTER (WHERE (properties->'nested'->>'ok') = 'true') \
             FROM events WHERE event = 'sdk event' AND (properties->>'client') = '{story}'"
        );
        assert_eq!(
            json!(query(&server.url, &admin, &events)),
            json!([[13, 13, 13, 0, 12, 13]]),
            "{story}"
        );
        // The identify, the alias and the group identify are events too.
        let identity_events = format!(
            "SELECT count(*) FROM events WHERE distinct_id LIKE '{story}-%' AND event <> 'sdk event'"
        );
        assert_eq!(
            json!(query(&server.url, &admin, &identity_events)),
            json!([[3]]),
            "{story}"
        );
        // One person: the anonymous visit, the user, and the second device
        // whose person already had events when the alias merged it.
        eventually(
            &server,
            &admin,
            &format!(
                "SELECT array_length(distinct_ids), properties->>'email' FROM persons \
                 WHERE array_has(distinct_ids, '{story}-user')"
            ),
            json!([[3, format!("{story}@example.com")]]),
        );
        eventually(
            &server,
            &admin,
            &format!(
                "SELECT count(DISTINCT person_id) FROM events WHERE distinct_id LIKE '{story}-%'"
            ),
            json!([[1]]),
        );
        // The group and its properties; Segment calls without a group type
        // get Plinth's default one.
        let group_type = if story.ends_with("segment") {
            "segment_group"
        } else {
            "company"
        };
        eventually(
            &server,
            &admin,
            &format!(
                "SELECT group_type, properties->>'name', CAST(properties->>'seats' AS BIGINT) \
                 FROM groups WHERE group_key = '{story}-acme'"
            ),
            json!([[group_type, "Acme", 5]]),
        );
    }
    assert_eq!(
        json!(query(
            &server.url,
            &admin,
            "SELECT count(*) FROM quarantine"
        )),
        json!([[0]])
    );
}
