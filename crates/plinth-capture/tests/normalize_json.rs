//! `normalize_json_event`: one event from a file (NDJSON import).

mod common;

use common::micros;
use plinth_capture::normalize_json_event;
use serde_json::json;

fn now() -> i64 {
    micros("2024-06-01T00:00:00Z")
}

#[test]
fn posthog_shaped_line() {
    let line = json!({"event": "signed_up", "distinct_id": "u1", "timestamp": "2024-05-01T12:00:00Z",
        "uuid": "0190e0a4-0000-7000-8000-000000000009", "properties": {"$session_id": "s", "$set": {"a": 1}}});
    let event = normalize_json_event(line, now()).unwrap();
    assert_eq!(
        (event.event.as_str(), event.distinct_id.as_str()),
        ("signed_up", "u1")
    );
    assert_eq!(event.timestamp_micros, micros("2024-05-01T12:00:00Z"));
    assert_eq!(event.session_id.as_deref(), Some("s"));
    assert_eq!(event.set.unwrap()["a"], json!(1));
}

#[test]
fn segment_shaped_lines() {
    let track = json!({"type": "track", "event": "Order Completed", "userId": "u", "anonymousId": "a",
        "timestamp": "2024-05-01T12:00:00Z", "messageId": "m"});
    let event = normalize_json_event(track, now()).unwrap();
    assert_eq!(
        (event.event.as_str(), event.distinct_id.as_str()),
        ("Order Completed", "u")
    );
    assert_eq!(event.uuid.as_deref(), Some("m"));
    assert_eq!(event.properties["$anon_distinct_id"], json!("a"));
    assert_eq!(event.merge, None, "only identify merges");

    // No type but userId and event: a track.
    let typeless = json!({"userId": "u", "event": "Viewed"});
    assert_eq!(
        normalize_json_event(typeless, now()).unwrap().event,
        "Viewed"
    );

    let identify =
        json!({"type": "identify", "userId": "u", "anonymousId": "a", "traits": {"plan": "pro"}});
    let event = normalize_json_event(identify, now()).unwrap();
    assert_eq!(event.merge, Some(("u".into(), "a".into())));
    assert_eq!(
        event.timestamp_micros,
        now(),
        "no timestamp: the import time"
    );
}

#[test]
fn segment_export_keeps_its_corrected_timestamp() {
    // A Segment export: timestamp already corrected, sentAt/receivedAt kept.
    let exported = json!({"type": "track", "event": "A", "userId": "u",
        "originalTimestamp": "2024-05-01T11:00:00Z", "sentAt": "2024-05-01T11:00:05Z",
        "receivedAt": "2024-05-01T12:00:06Z", "timestamp": "2024-05-01T12:00:01Z"});
    let event = normalize_json_event(exported, now()).unwrap();
    assert_eq!(event.timestamp_micros, micros("2024-05-01T12:00:01Z"));
    // Without receivedAt, sentAt corrects against the given reception time.
    let live = json!({"type": "track", "event": "A", "userId": "u",
        "timestamp": "2024-05-01T11:00:00Z", "sentAt": "2024-05-01T11:00:05Z"});
    assert_eq!(
        normalize_json_event(live, now()).unwrap().timestamp_micros,
        now() - 5_000_000
    );
}

#[test]
fn unrecognised_and_invalid_lines_are_rejected_with_a_reason() {
    let cases = [
        (json!([1, 2]), "event is not a JSON object"),
        (json!({"foo": "bar"}), "neither a PostHog event"),
        (json!({"event": "e"}), "missing distinct_id"),
        (
            json!({"type": "track", "event": "e"}),
            "missing userId and anonymousId",
        ),
        (
            json!({"event": "e", "distinct_id": "d", "timestamp": 1e20}),
            "unparseable timestamp",
        ),
    ];
    for (line, reason) in cases {
        let rejected = normalize_json_event(line.clone(), now()).unwrap_err();
        assert!(
            rejected.reason.starts_with(reason),
            "{line}: {:?}",
            rejected.reason
        );
        assert_eq!(rejected.raw, line.to_string());
    }
}

/// A refused event is quarantined as `to_posthog_json`; replay reads it with
/// `normalize_json_event` and must get the very same event back, identity
/// facts included, whichever format it first arrived in.
#[test]
fn posthog_json_of_an_event_reads_back_equal() {
    let received = micros("2024-06-01T00:00:10Z");
    let originals = [
        json!({"event": "$identify", "distinct_id": "user-1", "timestamp": "2024-05-31T23:59:59.123456Z",
            "uuid": "0190e0a4-0000-7000-8000-00000000000a",
            "properties": {"$anon_distinct_id": "anon-1", "$set": {"plan": "pro"}, "$set_once": {"first": 1},
                "$session_id": "s1", "$lib": "web", "$groups": {"company": "acme"}}}),
        json!({"type": "identify", "userId": "u", "anonymousId": "a", "traits": {"email": "e@x"},
            "timestamp": "2024-05-30T10:00:00Z", "messageId": "m1"}),
        json!({"type": "alias", "userId": "u", "previousId": "old", "timestamp": "2024-05-30T10:00:00Z"}),
        json!({"type": "group", "userId": "u", "groupId": "g1", "traits": {"name": "Acme"},
            "timestamp": "2024-05-30T10:00:00Z"}),
        json!({"event": "checkout completed", "distinct_id": 42, "sent_at": "2024-06-01T00:00:05Z",
            "timestamp": "2024-06-01T00:00:00Z", "properties": {"amount": 9.5}}),
    ];
    for original in originals {
        let event = normalize_json_event(original.clone(), received).unwrap();
        let again = normalize_json_event(event.to_posthog_json(), micros("2030-01-01T00:00:00Z"))
            .unwrap_or_else(|rejected| panic!("{original}: {}", rejected.reason));
        assert_eq!(again, event, "{original}");
    }
}
