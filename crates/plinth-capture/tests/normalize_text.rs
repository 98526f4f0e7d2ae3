//! `normalize_json_text`: one NDJSON line, read the same as
//! `normalize_json_event` reads its parsed tree.

mod common;

use std::borrow::Cow;

use common::micros;
use plinth_capture::{normalize_json_event, normalize_json_text};
use proptest::prelude::*;
use serde_json::Value;

fn now() -> i64 {
    micros("2024-06-01T00:00:00Z")
}

/// Lines in PostHog's plain file shape, which are read without a tree.
const PLAIN: &[&str] = &[
    r#"{"uuid":"0190e0a4-0000-7000-8000-000000000009","event":"$pageview","distinct_id":"u1","timestamp":"2024-05-01T12:00:00Z","properties":{"$browser":"Chrome","$session_id":"s1","$lib":"web","plan":"pro"}}"#,
    r#"{"event":"signed_up","distinct_id":"u1","timestamp":"2024-05-01T12:00:00.123456Z","properties":{"$set":{"email":"a@b.c"},"$set_once":{"first":"x"}}}"#,
    r#"{"event":"$identify","distinct_id":"user-1","properties":{"$anon_distinct_id":"anon-1"}}"#,
    r#"{"event":"$identify","distinct_id":"user-1","properties":{"$anon_distinct_id":"null"}}"#,
    r#"{"event":"$create_alias","distinct_id":"user-1","properties":{"alias":"other"}}"#,
    r#"{"event":"$groupidentify","distinct_id":"u","properties":{"$group_type":"company","$group_key":42,"$group_set":{"name":"Acme"}}}"#,
    r#"{"event":"clicked","distinct_id":7,"uuid":12,"properties":{"$groups":{"company":"acme","team":3}}}"#,
    r#"{"event":"e","distinct_id":"u","timestamp":1717000000000,"properties":null}"#,
    r#"{"event":"e","distinct_id":"u"}"#,
    r#"{ "event" : "spaced", "distinct_id" : "u", "properties" : { "a" : [1, {"b": null}], "s": "\u00e9\n\"q\"" } }"#,
    r#"{"event":"e","distinct_id":"u","properties":{"$session_id":"","$lib":5,"$set":"not an object"}}"#,
];

/// Lines the general way reads: other shapes, or events it rejects.
const GENERAL: &[&str] = &[
    r#"{"type":"track","event":"Order Completed","userId":"u","anonymousId":"a","timestamp":"2024-05-01T12:00:00Z","messageId":"m"}"#,
    r#"{"event":"e","distinct_id":"u","sent_at":"2024-05-31T23:00:00Z","timestamp":"2024-05-31T22:00:00Z"}"#,
    r#"{"event":"e","distinct_id":"u","$set":{"top":1},"properties":{"$set":{"inner":2}}}"#,
    r#"{"event":"e","$distinct_id":"u"}"#,
    r#"{"event":"e","properties":{"distinct_id":"in-properties"}}"#,
    r#"{"event":"e","distinct_id":"u","properties":[1,2]}"#,
    r#"{"event":"  ","distinct_id":"u"}"#,
    r#"{"event":"e","distinct_id":"   "}"#,
    r#"{"event":"e","distinct_id":"u","timestamp":"2030-01-01T00:00:00Z"}"#,
    r#"{"event":"e","distinct_id":"u","timestamp":"yesterday"}"#,
    r#"{"event":"$create_alias","distinct_id":"u","properties":{}}"#,
    r#"{"event":"$groupidentify","distinct_id":"u","properties":{"$group_key":"k"}}"#,
    r#"{"event":"e","distinct_id":"u","properties":{"$lib":"a","$lib":"b"}}"#,
    r#"{"event":"e","distinct_id":"u","properties":{"x":"\ud800"}}"#,
    r#"{"event":"e","distinct_id":"u","properties":{"emoji":"\ud83d\ude00"}}"#,
    r#"{"event":"e","distinct_id":"u""#,
    r#"[1,2]"#,
];

/// Both ways give the same event, properties equal as JSON; rejections
/// give the same reason.
fn assert_agrees(line: &str) -> Result<Cow<'_, str>, String> {
    let text = normalize_json_text(line, now());
    let tree = match serde_json::from_str::<Value>(line) {
        Ok(value) => normalize_json_event(value, now()),
        Err(e) => {
            let reason = text.expect_err(line).reason;
            assert!(reason.starts_with("not valid JSON"), "{line}: {reason}");
            return Err(format!("not valid JSON: {e}"));
        }
    };
    match (text, tree) {
        (Ok(text), Ok(mut tree)) => {
            let properties: Value = serde_json::from_str(&text.properties).unwrap();
            assert_eq!(
                properties,
                Value::Object(std::mem::take(&mut tree.properties)),
                "{line}"
            );
            assert_eq!(text.event, tree, "{line}");
            Ok(text.properties)
        }
        (Err(text), Err(tree)) => {
            assert_eq!(text.reason, tree.reason, "{line}");
            Err(text.reason)
        }
        (text, tree) => panic!("{line}: text way {text:?}, tree way {tree:?}"),
    }
}

#[test]
fn plain_lines_keep_their_properties_text() {
    for line in PLAIN {
        let properties = assert_agrees(line).unwrap_or_else(|reason| panic!("{line}: {reason}"));
        assert!(
            matches!(properties, Cow::Borrowed(_)),
            "{line} was read through the tree"
        );
        if line.contains("\"properties\":{") {
            assert!(line.contains(properties.as_ref()), "{line}");
        }
    }
}

#[test]
fn other_lines_are_read_the_general_way() {
    let mut rejected = 0;
    for line in GENERAL {
        match assert_agrees(line) {
            Ok(properties) => assert!(
                matches!(properties, Cow::Owned(_)),
                "{line} was read without the tree"
            ),
            Err(_) => rejected += 1,
        }
    }
    assert_eq!(rejected, 10, "the rejected lines of GENERAL");
}

/// JSON values of the kinds identity facts treat differently.
const VALUES: &[&str] = &[
    r#""x""#,
    r#""""#,
    r#"" ""#,
    r#""null""#,
    r#""anonymous""#,
    r#""u1""#,
    "7",
    "1.5",
    "null",
    "true",
    r#"{"a":1}"#,
    r#"{"company":"acme","n":2}"#,
    "[1]",
    r#""2024-05-01T12:00:00Z""#,
];
const EVENTS: &[&str] = &[
    r#""$identify""#,
    r#""$create_alias""#,
    r#""$merge_dangerously""#,
    r#""$groupidentify""#,
    r#""$pageview""#,
];
const PROPERTY_KEYS: &[&str] = &[
    "$session_id",
    "$lib",
    "$set",
    "$set_once",
    "$anon_distinct_id",
    "alias",
    "$group_type",
    "$group_key",
    "$group_set",
    "$groups",
    "plan",
    "distinct_id",
];

/// Ids that identity facts accept.
const IDS: &[&str] = &[r#""u1""#, r#""x""#, "7"];

/// Lines in or near the plain shape, mostly accepted ones.
fn plain_shaped_line() -> impl Strategy<Value = String> {
    let value = || prop::sample::select(VALUES);
    let id = || prop_oneof![3 => prop::sample::select(IDS), 1 => value()];
    let event = prop_oneof![4 => prop::sample::select(EVENTS), 1 => value()];
    let timestamp = prop_oneof![3 => Just(r#""2024-05-01T12:00:00Z""#), 1 => value()];
    let property = prop_oneof![2 => prop::sample::select(IDS), 1 => value()];
    let properties = prop::collection::vec((prop::sample::select(PROPERTY_KEYS), property), 0..6);
    let extra = prop_oneof![5 => Just(None), 1 => value().prop_map(|v| Some(("sent_at", v)))];
    (
        prop::option::of(id()),
        event,
        id(),
        prop::option::of(timestamp),
        prop::option::of(properties),
        extra,
    )
        .prop_map(|(uuid, event, distinct_id, timestamp, properties, extra)| {
            let mut fields = vec![
                format!(r#""event":{event}"#),
                format!(r#""distinct_id":{distinct_id}"#),
            ];
            fields.extend(uuid.map(|v| format!(r#""uuid":{v}"#)));
            fields.extend(timestamp.map(|v| format!(r#""timestamp":{v}"#)));
            fields.extend(properties.map(|pairs| {
                let pairs: Vec<String> = pairs.iter().map(|(k, v)| format!("{k:?}:{v}")).collect();
                format!(r#""properties":{{{}}}"#, pairs.join(","))
            }));
            fields.extend(extra.map(|(k, v)| format!("{k:?}:{v}")));
            format!("{{{}}}", fields.join(","))
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// Whatever the identity keys hold, both ways read the line alike.
    #[test]
    fn both_ways_agree_on_generated_lines(line in plain_shaped_line()) {
        let _ = assert_agrees(&line);
    }
}
