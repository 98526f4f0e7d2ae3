//! Requests recorded from the real Python SDKs (posthog 7.91.1,
//! segment-analytics-python 2.4.0; see tests/fixtures/gen_fixtures.py for
//! the calls made) decode to the events those calls describe.

mod common;

use std::io::Read;

use common::{fixture, micros, only_event};
use plinth_capture::{
    DecodedRequest, Limits, SEGMENT_DEFAULT_GROUP_TYPE, decode_posthog, decode_segment,
};
use serde_json::{Value, json};

/// The fixed timestamp gen_fixtures.py passes to the SDKs.
const FIXED: &str = "2024-05-01T12:00:00Z";
/// The server receives each request this long after the client sent it.
const TRANSIT_MICROS: i64 = 1_500_000;

/// The client's `sent_at` / `sentAt` as written in the recorded body.
fn client_sent_at(body: &[u8], key: &str) -> i64 {
    let mut text = Vec::new();
    if body.starts_with(&[0x1f, 0x8b]) {
        flate2::read::MultiGzDecoder::new(body)
            .read_to_end(&mut text)
            .unwrap();
    } else {
        text = body.to_vec();
    }
    let body: Value = serde_json::from_slice(&text).unwrap();
    micros(body[key].as_str().unwrap())
}

fn decode_posthog_fixture(name: &str) -> (DecodedRequest, i64) {
    let request = fixture(name);
    assert_eq!(request.method, "POST");
    let received_at = client_sent_at(&request.body, "sent_at") + TRANSIT_MICROS;
    let decoded = decode_posthog(
        &request.path,
        "",
        request.content_type.as_deref(),
        &request.body,
        received_at,
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(decoded.token.as_deref(), Some("phc_testkey"));
    assert!(!decoded.beacon);
    assert!(!decoded.historical_migration);
    (decoded, received_at)
}

fn decode_segment_fixture(name: &str) -> (DecodedRequest, i64) {
    let request = fixture(name);
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", "/v1/batch")
    );
    let received_at = client_sent_at(&request.body, "sentAt") + TRANSIT_MICROS;
    let decoded = decode_segment(
        &request.path,
        request.authorization.as_deref(),
        &request.body,
        received_at,
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(decoded.token.as_deref(), Some("seg_writekey"));
    (decoded, received_at)
}

fn assert_posthog_capture(decoded: &DecodedRequest) {
    let event = only_event(decoded);
    assert_eq!(event.event, "signed_up");
    assert_eq!(event.distinct_id, "user-1");
    assert_eq!(
        event.uuid.as_deref(),
        Some("0190e0a4-0000-7000-8000-000000000001")
    );
    assert_eq!(event.session_id.as_deref(), Some("sess-1"));
    assert_eq!(event.library.as_deref(), Some("posthog-python"));
    assert_eq!(event.properties["plan"], json!("pro"));
    assert_eq!(event.properties["n"], json!(3));
    // The SDK stamped FIXED; the request reached us TRANSIT after its sent_at,
    // so the corrected time keeps the client's measured age on our clock.
    assert_eq!(event.timestamp_micros, micros(FIXED) + TRANSIT_MICROS);
    assert_eq!((event.merge.as_ref(), event.group.as_ref()), (None, None));
}

#[test]
fn posthog_python_capture() {
    let (decoded, _) = decode_posthog_fixture("posthog_py_capture");
    assert_posthog_capture(&decoded);
}

#[test]
fn posthog_python_gzip_capture() {
    let request = fixture("posthog_py_capture_gzip");
    assert_eq!(
        &request.body[..2],
        &[0x1f, 0x8b],
        "the SDK really gzipped it"
    );
    let (decoded, _) = decode_posthog_fixture("posthog_py_capture_gzip");
    assert_posthog_capture(&decoded);
}

#[test]
fn posthog_python_identify_merges_anonymous_id_and_sets() {
    let (decoded, _) = decode_posthog_fixture("posthog_py_identify");
    let event = only_event(&decoded);
    assert_eq!(event.event, "$identify");
    assert_eq!(event.merge, Some(("user-1".into(), "anon-1".into())));
    assert_eq!(event.set.as_ref().unwrap()["email"], json!("a@example.com"));
    assert_eq!(
        event.set_once.as_ref().unwrap()["first_seen"],
        json!("2024-05-01")
    );
}

#[test]
fn posthog_python_alias() {
    // posthog-python's alias(previous_id="anon-2", distinct_id="user-2")
    // sends distinct_id "anon-2" with properties.alias "user-2".
    let (decoded, _) = decode_posthog_fixture("posthog_py_alias");
    let event = only_event(&decoded);
    assert_eq!(event.event, "$create_alias");
    assert_eq!(event.merge, Some(("anon-2".into(), "user-2".into())));
}

#[test]
fn posthog_python_set_with_top_level_set() {
    let (decoded, _) = decode_posthog_fixture("posthog_py_set");
    let event = only_event(&decoded);
    assert_eq!(event.event, "$set");
    assert_eq!(event.set.as_ref().unwrap()["name"], json!("Max"));
    assert_eq!(event.properties["$set"]["name"], json!("Max"));
}

#[test]
fn posthog_python_group_identify_and_groups() {
    let (decoded, _) = decode_posthog_fixture("posthog_py_groupidentify");
    let group = only_event(&decoded).group.clone().unwrap();
    assert_eq!(
        (group.group_type.as_str(), group.group_key.as_str()),
        ("company", "acme")
    );
    assert_eq!(group.set["employees"], json!(12));

    let (decoded, _) = decode_posthog_fixture("posthog_py_groups");
    let event = only_event(&decoded);
    assert_eq!(
        event.groups.get("company").map(String::as_str),
        Some("acme")
    );
    assert!(event.group.is_none());
}

#[test]
fn segment_python_track_maps_context() {
    let (decoded, _) = decode_segment_fixture("segment_py_track");
    let event = only_event(&decoded);
    assert_eq!(event.event, "Order Completed");
    assert_eq!(event.distinct_id, "user-1");
    assert_eq!(event.uuid.as_deref(), Some("msg-track-1"));
    assert_eq!(event.properties["revenue"], json!(42.5));
    // The SDK replaces context.library with its own.
    assert_eq!(event.library.as_deref(), Some("analytics-python"));
    assert_eq!(event.properties["$lib_version"], json!("2.4.0"));
    assert_eq!(event.properties["$ip"], json!("203.0.113.9"));
    assert_eq!(event.properties["context"]["ip"], json!("203.0.113.9"));
    assert_eq!(event.timestamp_micros, micros(FIXED) + TRANSIT_MICROS);
    assert!(
        !event.properties.contains_key("$anon_distinct_id"),
        "anonymousId was null"
    );
}

#[test]
fn segment_python_identify() {
    let (decoded, received_at) = decode_segment_fixture("segment_py_identify");
    let event = only_event(&decoded);
    assert_eq!(event.event, "$identify");
    assert_eq!(event.distinct_id, "user-1");
    assert_eq!(event.merge, Some(("user-1".into(), "anon-1".into())));
    let set = event.set.as_ref().unwrap();
    assert_eq!(
        (&set["email"], &set["plan"]),
        (&json!("a@example.com"), &json!("pro"))
    );
    // No explicit timestamp: the SDK stamps "now" just before sentAt, so
    // after correction the event lies just before reception, transit excluded.
    let age = received_at - event.timestamp_micros;
    assert!((0..1_000_000).contains(&age), "age {age}");
}

#[test]
fn segment_python_page_and_screen() {
    let (decoded, _) = decode_segment_fixture("segment_py_page");
    let page = only_event(&decoded);
    assert_eq!(page.event, "$pageview");
    assert_eq!(page.properties["name"], json!("Getting Started"));
    assert_eq!(page.properties["category"], json!("Docs"));
    assert_eq!(
        page.properties["$current_url"],
        json!("https://example.com/docs")
    );

    let (decoded, _) = decode_segment_fixture("segment_py_screen");
    let screen = only_event(&decoded);
    assert_eq!(screen.event, "$screen");
    assert_eq!(screen.properties["$screen_name"], json!("Main"));
    assert_eq!(screen.properties["variant"], json!("b"));
}

#[test]
fn segment_python_group_and_alias() {
    let (decoded, _) = decode_segment_fixture("segment_py_group");
    let event = only_event(&decoded);
    assert_eq!(event.event, "$groupidentify");
    let group = event.group.as_ref().unwrap();
    assert_eq!(group.group_type, SEGMENT_DEFAULT_GROUP_TYPE);
    assert_eq!(group.group_key, "org-7");
    assert_eq!(group.set["name"], json!("Acme"));

    let (decoded, _) = decode_segment_fixture("segment_py_alias");
    let event = only_event(&decoded);
    assert_eq!(event.event, "$create_alias");
    assert_eq!(event.merge, Some(("user-1".into(), "anon-1".into())));
}

#[test]
fn segment_python_anonymous_track() {
    let (decoded, _) = decode_segment_fixture("segment_py_anonymous_track");
    let event = only_event(&decoded);
    assert_eq!(
        (event.event.as_str(), event.distinct_id.as_str()),
        ("Viewed", "anon-9")
    );
}
