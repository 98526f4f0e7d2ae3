//! `normalize_json_text`: one NDJSON line, read the same as
//! `normalize_json_event` reads its parsed tree.

mod common;

use std::borrow::Cow;

use common::micros;
use plinth_capture::{TextEvent, normalize_json_event, normalize_json_text};
use proptest::prelude::*;
use serde_json::Value;

fn now() -> i64 {
    micros("2024-06-01T00:00:00Z")
}

/// Lines in PostHog's plain file shape, which are read without a tree.
/// The first [`READ_IN_PLACE`] have no identity facts and no escapes, so
/// none of their text is copied.
const PLAIN: &[&str] = &[
    r#"{"uuid":"0190e0a4-0000-7000-8000-000000000009","event":"$pageview","distinct_id":"u1","timestamp":"2024-05-01T12:00:00Z","properties":{"$browser":"Chrome","$session_id":"s1","$lib":"web","plan":"pro"}}"#,
    r#"{ "timestamp" : " 2024-05-01 12:00:00 ", "uuid" : "0190e0a4-0000-7000-8000-00000000000a", "distinct_id" : "Zoë", "event" : "Bestellung abgeschlossen ✓", "properties" : { "$lib" : "posthog-python", "nested" : {"$set": {"a": 1}}, "$session_id" : "0190e0a4-0000-7000-8000-00000000000b", "amount" : 12.5 } }"#,
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
    r#"{"event":"e","distinct_id":"u","properties":{"$l\u0069b":"web","$set":{"\u0061":1}}}"#,
];

const READ_IN_PLACE: usize = 2;

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
    r#"{"event":"e","distinct_id":"u","properties":{"$lib":null,"$lib":"b"}}"#,
    r#"{"event":"e","distinct_id":"u","properties":{"x":"\ud800"}}"#,
    r#"{"event":"e","distinct_id":"u","properties":{"emoji":"\ud83d\ude00"}}"#,
    r#"{"event":"e","distinct_id":"u""#,
    r#"[1,2]"#,
];

/// Both ways give the same event, properties equal as JSON (the text way
/// keeps the client's text); rejections give the same reason.
fn assert_agrees(line: &str) -> Result<TextEvent<'_>, String> {
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
        (Ok(text), Ok(tree)) => {
            let tree = TextEvent::from_normalized(tree);
            assert_eq!(text.uuid, tree.uuid, "{line}");
            assert_eq!(text.event, tree.event, "{line}");
            assert_eq!(text.distinct_id, tree.distinct_id, "{line}");
            assert_eq!(text.timestamp_micros, tree.timestamp_micros, "{line}");
            assert_eq!(text.session_id, tree.session_id, "{line}");
            assert_eq!(text.library, tree.library, "{line}");
            assert_eq!(text.identity, tree.identity, "{line}");
            let parse = |properties: &str| serde_json::from_str::<Value>(properties).unwrap();
            assert_eq!(parse(&text.properties), parse(&tree.properties), "{line}");
            Ok(text)
        }
        (Err(text), Err(tree)) => {
            assert_eq!(text.reason, tree.reason, "{line}");
            Err(text.reason)
        }
        (text, tree) => panic!("{line}: text way {text:?}, tree way {tree:?}"),
    }
}

fn accepted(line: &str) -> TextEvent<'_> {
    assert_agrees(line).unwrap_or_else(|reason| panic!("{line}: {reason}"))
}

#[allow(
    clippy::ptr_arg,
    reason = "it reads the variant, which a `&str` has not"
)]
fn is_borrowed(text: &Cow<'_, str>) -> bool {
    matches!(text, Cow::Borrowed(_))
}

#[test]
fn plain_lines_keep_their_properties_text() {
    for (at, line) in PLAIN.iter().enumerate() {
        let event = accepted(line);
        assert!(
            is_borrowed(&event.properties),
            "{line} was read through the tree"
        );
        if line.contains("\"properties\":{") {
            assert!(line.contains(event.properties.as_ref()), "{line}");
        }
        if at < READ_IN_PLACE {
            let fields = [&event.event, &event.distinct_id, &event.properties];
            let optional = [&event.uuid, &event.session_id, &event.library];
            assert!(
                fields
                    .into_iter()
                    .chain(optional.into_iter().flatten())
                    .all(is_borrowed),
                "{line} was copied: {event:?}"
            );
            assert!(optional.iter().all(|field| field.is_some()), "{line}");
        }
    }
}

#[test]
fn other_lines_are_read_the_general_way() {
    let mut rejected = 0;
    for line in GENERAL {
        match assert_agrees(line) {
            Ok(event) => assert!(
                !is_borrowed(&event.properties),
                "{line} was read without the tree"
            ),
            Err(_) => rejected += 1,
        }
    }
    assert_eq!(rejected, 10, "the rejected lines of GENERAL");
}

#[test]
fn properties_text_is_found_wherever_it_is() {
    let lines = [
        (
            r#"{"properties" : { "$lib" : "web" } , "event":"e","distinct_id":"u"}"#,
            r#"{ "$lib" : "web" }"#,
        ),
        (
            r#"{"event":"e","propert\u0069es":{"a":"}","b":[{"}":"\\"}]},"distinct_id":"u"}"#,
            r#"{"a":"}","b":[{"}":"\\"}]}"#,
        ),
        (
            r#"{"uuid":null,"event":"e","distinct_id":"u","timestamp":null,"properties":{ }}"#,
            "{ }",
        ),
        (
            "\t{\"event\":\"e\",\"distinct_id\":\"u\",\"properties\":{\"k\":1.5e3}}\r\n",
            r#"{"k":1.5e3}"#,
        ),
    ];
    for (line, properties) in lines {
        let event = accepted(line);
        assert_eq!(event.properties, properties, "{line}");
        assert!(is_borrowed(&event.properties), "{line}");
    }
    let line = r#"{"properties":null,"event":"e","distinct_id":"u"}"#;
    assert_eq!(accepted(line).properties, "{}");
}

/// The text way keeps the properties text unparsed, so it must refuse what
/// the tree way refuses, deep inside skipped values too.
#[test]
fn invalid_json_is_refused_inside_properties() {
    let values = [
        r#""\x""#,
        "\"a\u{1}b\"",
        "\"tab\there\"",
        r#""\uZZZZ""#,
        r#""\u12""#,
        "01",
        "-01",
        "1.",
        "-",
        ".5",
        "+1",
        "1e",
        "1e+",
        "0x1",
        "NaN",
        "Infinity",
        "tru",
        "nul",
        "'a'",
        "[1,]",
        "[1 2]",
        "[1",
        r#"{"a":1,}"#,
        r#"{"a" 1}"#,
        r#"{"a":1 "b":2}"#,
        r#"{"b":[{"c":[01]}]}"#,
    ];
    let lines = values
        .iter()
        .map(|value| format!(r#"{{"event":"e","distinct_id":"u","properties":{{"a":{value}}}}}"#))
        .chain(
            [
                r#"{"event":"e","distinct_id":"u","properties":{"a":1,}}"#,
                r#"{"event":"e","distinct_id":"u","properties":{"a":1}} x"#,
                r#"{"event":"e","distinct_id":"u","properties":{"a":1}}}"#,
                r#"{"event":"e","distinct_id":"u","properties":{"a":1},}"#,
                r#"{"event":"e","distinct_id":"u","properties":{"a":1}"#,
                r#"{"event":"e","distinct_id":"u","properties":{"a":[1}}"#,
                r#"{"event":"e","distinct_id":"u","properties":{"a":"1}}"#,
            ]
            .map(str::to_owned),
        );
    for line in lines {
        let reason = assert_agrees(&line).expect_err(&line);
        assert!(reason.starts_with("not valid JSON"), "{line}: {reason}");
    }
}

/// serde_json, the tree way's parser, reads 127 levels of nesting.
#[test]
fn nesting_is_read_as_deep_as_the_tree_reads() {
    let nested = |levels: usize| {
        let inner = format!("{}{}", "[".repeat(levels), "]".repeat(levels));
        format!(r#"{{"event":"e","distinct_id":"u","properties":{{"a":{inner}}}}}"#)
    };
    let line = nested(125);
    assert!(is_borrowed(&accepted(&line).properties));
    let line = nested(126);
    let reason = assert_agrees(&line).expect_err(&line);
    assert!(reason.contains("recursion limit"), "{reason}");
    let many = vec!["{}"; 300].join(",");
    let line =
        format!(r#"{{"event":"e","distinct_id":"u","properties":{{"a":[{many}],"b":"[{{"}}}}"#);
    assert!(is_borrowed(&accepted(&line).properties));
}

#[test]
fn escaped_strings_are_decoded() {
    let line = r#"{"event":"sign\u0065d \"up\"","distinct_id":"us\\er","properties":{"$session_id":"s\/1","$lib":"web"}}"#;
    let event = accepted(line);
    assert_eq!(event.event, r#"signed "up""#);
    assert_eq!(event.distinct_id, r"us\er");
    assert_eq!(event.session_id.as_deref(), Some("s/1"));
    assert_eq!(event.library.as_deref(), Some("web"));
    assert!(!is_borrowed(&event.event) && !is_borrowed(&event.distinct_id));
    assert!(!is_borrowed(event.session_id.as_ref().unwrap()));
    assert!(is_borrowed(event.library.as_ref().unwrap()));
}

#[test]
fn long_event_names_are_cut_in_place() {
    let name = "é".repeat(250);
    let line = format!(r#"{{"event":"{name}","distinct_id":"u"}}"#);
    let event = accepted(&line);
    assert_eq!(event.event, "é".repeat(200));
    assert!(is_borrowed(&event.event));
}

#[test]
fn empty_uuid_and_session_id_are_none() {
    let line = r#"{"uuid":"","event":"e","distinct_id":"u","properties":{"$session_id":""}}"#;
    let event = accepted(line);
    assert_eq!(event.uuid, None);
    assert_eq!(event.session_id, None);
    assert!(is_borrowed(&event.event) && is_borrowed(&event.properties));
    let line = r#"{"uuid":"  ","event":"e","distinct_id":"u","properties":{"$session_id":"s"}}"#;
    assert_eq!(accepted(line).uuid, None);
}

#[test]
fn set_is_an_identity_fact() {
    let line = r#"{"event":"signed_up","distinct_id":"u1","properties":{"plan":"pro","$set":{"email":"a@b.c"}}}"#;
    let identity = accepted(line).identity.expect("identity facts");
    let set = serde_json::json!({"email": "a@b.c"});
    assert_eq!(identity.set.map(Value::Object), Some(set));
    assert_eq!(identity.set_once, None);
    assert_eq!(identity.merge, None);
    assert_eq!(identity.group, None);
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
    r#""2030-01-01T00:00:00Z""#,
    r#""1969-12-31T23:59:59Z""#,
    r#""\u0075\u0031""#,
];
const EVENTS: &[&str] = &[
    r#""$identify""#,
    r#""$create_alias""#,
    r#""$merge_dangerously""#,
    r#""$groupidentify""#,
    r#""$pageview""#,
    r#""$create\u005falias""#,
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
