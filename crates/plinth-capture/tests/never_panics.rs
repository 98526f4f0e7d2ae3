//! The decoders never panic: random bytes, random queries and headers, and
//! random mutations of valid payloads (plain, gzip, base64, lz-string) all
//! end in events, rejections or a request error. The `fuzz/` target covers
//! the same ground with coverage guidance.

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use plinth_capture::{Limits, decode_posthog, decode_segment, normalize_json_event};
use proptest::prelude::*;

const POSTHOG_PATHS: [&str; 5] = ["/e/", "/batch", "/engage/", "/capture/", "/i/v0/e"];
const SEGMENT_PATHS: [&str; 3] = ["/v1/batch", "/v1/track", "/v1/identify"];
const FIXTURES: [&str; 4] = [
    "posthog_py_capture",
    "posthog_py_identify",
    "segment_py_track",
    "segment_py_group",
];

fn small_limits() -> Limits {
    Limits {
        max_event_bytes: 4_096,
        max_batch_bytes: 65_536,
    }
}

fn query() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("compression=gzip-js".to_owned()),
        Just("compression=lz64".to_owned()),
        Just("compression=base64&beacon=1".to_owned()),
        "[ -~]{0,40}".prop_map(|q| q),
        "[A-Za-z0-9+/= ]{0,60}".prop_map(|d| format!("data={d}&_=1714564800000")),
    ]
}

fn content_type() -> impl Strategy<Value = Option<&'static str>> {
    prop_oneof![
        Just(None),
        Just(Some("text/plain")),
        Just(Some("application/json")),
        Just(Some("application/x-www-form-urlencoded")),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, u8),
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for mutation in mutations {
        if bytes.is_empty() {
            break;
        }
        match *mutation {
            Mutation::Flip(at, mask) => {
                let at = at % bytes.len();
                bytes[at] ^= mask;
            }
            Mutation::Truncate(at) => bytes.truncate(at % bytes.len()),
            Mutation::Insert(at, byte) => {
                let at = at % bytes.len();
                bytes.insert(at, byte);
            }
        }
    }
    bytes
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    prop::collection::vec(
        prop_oneof![
            (any::<usize>(), 1u8..).prop_map(|(a, m)| Mutation::Flip(a, m)),
            any::<usize>().prop_map(Mutation::Truncate),
            (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Mutation::Insert(a, b)),
        ],
        1..6,
    )
}

/// A valid payload in one of the encodings, with the query that names it.
fn encoded_fixture(name: &str, encoding: u8) -> (Vec<u8>, &'static str) {
    let body = common::fixture(name).body;
    match encoding % 4 {
        0 => (body, ""),
        1 => (common::gzip(&body), "compression=gzip-js"),
        2 => (STANDARD.encode(&body).into_bytes(), "compression=base64"),
        _ => {
            let text = String::from_utf8(body).unwrap();
            (
                lz_str::compress_to_base64(text.as_str()).into_bytes(),
                "compression=lz64",
            )
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes(body in prop::collection::vec(any::<u8>(), 0..512), query in query(),
                    content_type in content_type(), path in 0usize..5, received in any::<i64>()) {
        let _ = decode_posthog(POSTHOG_PATHS[path], &query, content_type, &body, received, &small_limits());
        let auth = format!("Basic {}", STANDARD.encode(&body));
        let _ = decode_segment(SEGMENT_PATHS[path % 3], Some(&auth), &body, received, &small_limits());
    }

    #[test]
    fn mutated_valid_payloads(fixture in 0usize..4, encoding in any::<u8>(), mutations in mutations(),
                              path in 0usize..5) {
        let (body, query) = encoded_fixture(FIXTURES[fixture], encoding);
        let body = mutate(body, &mutations);
        let received = common::micros("2026-11-22T12:27:15Z");
        let _ = decode_posthog(POSTHOG_PATHS[path], query, Some("text/plain"), &body, received, &small_limits());
        let _ = decode_segment(SEGMENT_PATHS[path % 3], Some("Basic azo="), &body, received, &small_limits());
    }

    #[test]
    fn arbitrary_json_events(text in "[{}\\[\\]\":,0-9a-zA-Z$_ .-]{0,200}", received in any::<i64>()) {
        if let Ok(value) = serde_json::from_str(&text) {
            let _ = normalize_json_event(value, received);
        }
    }
}
