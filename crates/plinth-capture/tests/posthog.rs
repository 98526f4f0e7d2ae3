//! PostHog capture: endpoints, every body encoding posthog-js and the
//! server SDKs use, tokens, size limits, clock skew and rejections.

mod common;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::{gzip, micros, only_event, only_rejection};
use plinth_capture::{CaptureError, DecodedRequest, Limits, decode_posthog};
use serde_json::{Value, json};

const RECEIVED: &str = "2024-05-01T12:00:00Z";

fn received() -> i64 {
    micros(RECEIVED)
}

fn decode(
    path: &str,
    query: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<DecodedRequest, CaptureError> {
    decode_posthog(
        path,
        query,
        content_type,
        body,
        received(),
        &Limits::default(),
    )
}

/// A posthog-js style array of two events carrying their token in properties.
fn js_array() -> Value {
    json!([
        {"event": "$pageview", "properties": {"distinct_id": "d1", "token": "phc_js", "$session_id": "s1",
            "$current_url": "https://example.com/", "$lib": "web"}, "timestamp": "2024-05-01T11:59:58Z",
            "uuid": "u-1", "offset": 12},
        {"event": "clicked", "properties": {"distinct_id": "d1", "token": "phc_js"}, "uuid": "u-2"}
    ])
}

fn assert_js_array(decoded: &DecodedRequest) {
    assert_eq!(decoded.token.as_deref(), Some("phc_js"));
    let names: Vec<_> = decoded
        .events
        .iter()
        .map(|e| e.as_ref().map(|e| e.event.clone()).unwrap())
        .collect();
    assert_eq!(names, ["$pageview", "clicked"]);
    let first = decoded.events[0].as_ref().unwrap();
    assert_eq!(first.distinct_id, "d1");
    assert_eq!(first.session_id.as_deref(), Some("s1"));
    assert_eq!(first.library.as_deref(), Some("web"));
    assert_eq!(first.timestamp_micros, micros("2024-05-01T11:59:58Z"));
}

#[test]
fn every_endpoint_with_and_without_trailing_slash() {
    let body = js_array().to_string();
    for path in ["/capture", "/batch", "/e", "/i/v0/e", "/track", "/engage"] {
        for path in [path.to_owned(), format!("{path}/")] {
            let decoded = decode(&path, "", Some("application/json"), body.as_bytes());
            assert_js_array(&decoded.unwrap_or_else(|e| panic!("{path}: {e}")));
        }
    }
    assert_eq!(
        decode("/v1/batch", "", None, body.as_bytes())
            .unwrap_err()
            .status(),
        404
    );
}

#[test]
fn gzip_is_found_by_magic_bytes_whatever_the_headers_say() {
    let body = gzip(js_array().to_string().as_bytes());
    for (query, content_type) in [
        ("compression=gzip-js&ver=1.200.0", Some("text/plain")),
        ("", Some("text/plain")),
        ("", None),
        ("compression=gzip", Some("application/json")),
    ] {
        assert_js_array(&decode("/e/", query, content_type, &body).unwrap());
    }
}

#[test]
fn lz64_form_body_and_query_hint() {
    let lz = lz_str::compress_to_base64(js_array().to_string().as_str());
    // posthog-js (lz64): form body data=<lz64>&compression=lz64, '+' escaped...
    let form: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("data", &lz)
        .append_pair("compression", "lz64")
        .finish();
    let decoded = decode(
        "/e/",
        "",
        Some("application/x-www-form-urlencoded"),
        form.as_bytes(),
    );
    assert_js_array(&decoded.unwrap());
    // ... or not escaped, so that '+' arrives as a space.
    let raw_form = format!("data={lz}");
    let decoded = decode(
        "/e/",
        "compression=lz64",
        Some("application/x-www-form-urlencoded; charset=UTF-8"),
        raw_form.as_bytes(),
    );
    assert_js_array(&decoded.unwrap());
    // A raw lz-string body named by the query.
    assert_js_array(
        &decode(
            "/e/",
            "compression=lz-string",
            Some("text/plain"),
            lz.as_bytes(),
        )
        .unwrap(),
    );
}

#[test]
fn base64_form_body_get_query_and_undeclared_base64() {
    let json_text = js_array().to_string();
    let b64 = STANDARD.encode(&json_text);
    let form = format!(
        "data={}",
        b64.replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D")
    );
    assert_js_array(
        &decode(
            "/e/",
            "",
            Some("application/x-www-form-urlencoded"),
            form.as_bytes(),
        )
        .unwrap(),
    );
    // GET /e/?data=<base64>, url-safe alphabet without padding.
    let query = format!(
        "data={}&ip=1&_=1714564800000",
        URL_SAFE_NO_PAD.encode(&json_text)
    );
    assert_js_array(&decode("/e/", &query, None, b"").unwrap());
    // GET with plain JSON in data=.
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("data", &json_text)
        .finish();
    assert_js_array(&decode("/capture/", &query, None, b"").unwrap());
    // ?compression=base64 body, and a base64 body nobody declared.
    assert_js_array(
        &decode(
            "/e/",
            "compression=base64",
            Some("text/plain"),
            b64.as_bytes(),
        )
        .unwrap(),
    );
    assert_js_array(&decode("/batch", "", Some("text/plain"), b64.as_bytes()).unwrap());
}

#[test]
fn undecodable_payloads_are_400() {
    let cases: [(&str, Option<&str>, &[u8]); 7] = [
        ("", None, b"{not json"),
        ("", None, b""),
        ("", None, b"42"),
        ("", None, b"[]"),
        ("", None, &[0x1f, 0x8b, 0x08, 0, 1, 2, 3]),
        ("compression=lz64", None, b"!!not lz!!"),
        (
            "",
            Some("application/x-www-form-urlencoded"),
            b"compression=base64",
        ),
    ];
    for (query, content_type, body) in cases {
        let error = decode("/e/", query, content_type, body).unwrap_err();
        assert_eq!(error.status(), 400, "{body:?}: {error}");
    }
}

#[test]
fn token_sources_and_missing_token() {
    let batch = json!({"api_key": "phc_batch", "batch": [{"event": "e", "distinct_id": "d"}]});
    let with_token = json!({"token": "phc_batch", "batch": [{"event": "e", "distinct_id": "d"}]});
    let single_dollar = json!({"event": "e", "distinct_id": "d", "$token": "phc_dollar"});
    let single_api = json!({"event": "e", "distinct_id": "d", "api_key": "phc_api"});
    for (body, expected) in [
        (batch, "phc_batch"),
        (with_token, "phc_batch"),
        (single_dollar, "phc_dollar"),
        (single_api, "phc_api"),
    ] {
        let decoded = decode("/capture/", "", None, body.to_string().as_bytes()).unwrap();
        assert_eq!(decoded.token.as_deref(), Some(expected));
    }
    let no_token = json!([{"event": "e", "distinct_id": "d", "properties": {"token": ""}}]);
    let error = decode("/e/", "", None, no_token.to_string().as_bytes()).unwrap_err();
    assert_eq!(
        (error.clone(), error.status()),
        (CaptureError::Unauthorized, 401)
    );
    let two_tokens = json!([{"event": "e", "distinct_id": "d", "token": "a"}, {"event": "e", "distinct_id": "d", "token": "b"}]);
    let error = decode("/e/", "", None, two_tokens.to_string().as_bytes()).unwrap_err();
    assert_eq!(
        (error.clone(), error.status()),
        (CaptureError::MultipleTokens, 401)
    );
}

#[test]
fn beacon_and_historical_migration_flags() {
    let body = js_array().to_string();
    assert!(
        decode("/e/", "beacon=1", None, body.as_bytes())
            .unwrap()
            .beacon
    );
    assert!(
        !decode("/e/", "beacon=0", None, body.as_bytes())
            .unwrap()
            .beacon
    );
    let batch = json!({"api_key": "k", "historical_migration": true, "batch": [{"event": "e", "distinct_id": "d"}]});
    assert!(
        decode("/batch/", "", None, batch.to_string().as_bytes())
            .unwrap()
            .historical_migration
    );
}

#[test]
fn clock_skew_batch_event_and_query_sent_at() {
    // Client clock 2 hours slow; the event happened 30 s before sending.
    let sent = "2024-05-01T10:00:00Z";
    let ts = "2024-05-01T09:59:30Z";
    let expected = received() - 30_000_000;
    let batch = json!({"api_key": "k", "sent_at": sent, "batch": [{"event": "e", "distinct_id": "d", "timestamp": ts}]});
    let event = decode("/batch/", "", None, batch.to_string().as_bytes()).unwrap();
    assert_eq!(only_event(&event).timestamp_micros, expected);
    // Per-event sent_at wins over the batch's.
    let batch = json!({"api_key": "k", "sent_at": "2024-05-01T09:00:00Z",
        "batch": [{"event": "e", "distinct_id": "d", "timestamp": ts, "sent_at": sent}]});
    let event = decode("/batch/", "", None, batch.to_string().as_bytes()).unwrap();
    assert_eq!(only_event(&event).timestamp_micros, expected);
    // posthog-js sends its clock as ?_=<ms>.
    let single = json!({"event": "e", "distinct_id": "d", "timestamp": ts, "token": "k"});
    let query = format!("_={}", micros(sent) / 1000);
    let event = decode("/e/", &query, None, single.to_string().as_bytes()).unwrap();
    assert_eq!(only_event(&event).timestamp_micros, expected);
    // $ignore_sent_at keeps the client's time.
    let ignoring = json!({"api_key": "k", "sent_at": sent,
        "batch": [{"event": "e", "distinct_id": "d", "timestamp": ts, "properties": {"$ignore_sent_at": true}}]});
    let event = decode("/batch/", "", None, ignoring.to_string().as_bytes()).unwrap();
    assert_eq!(only_event(&event).timestamp_micros, micros(ts));
    // No timestamp: received_at minus offset.
    let offset = json!({"event": "e", "distinct_id": "d", "offset": 2500, "token": "k"});
    let event = decode("/e/", "", None, offset.to_string().as_bytes()).unwrap();
    assert_eq!(only_event(&event).timestamp_micros, received() - 2_500_000);
}

#[test]
fn engage_updates_a_person() {
    let engage = json!({"$set": {"plan": "pro"}, "$token": "phc_k", "$distinct_id": "d9"});
    let decoded = decode("/engage/", "", None, engage.to_string().as_bytes()).unwrap();
    let event = only_event(&decoded);
    assert_eq!(
        (event.event.as_str(), event.distinct_id.as_str()),
        ("$identify", "d9")
    );
    assert_eq!(event.set.as_ref().unwrap()["plan"], json!("pro"));
    assert_eq!(event.timestamp_micros, received());
    // The same body elsewhere has no event name.
    let decoded = decode("/capture/", "", None, engage.to_string().as_bytes()).unwrap();
    assert_eq!(only_rejection(&decoded).reason, "missing event name");
}

#[test]
fn identity_facts() {
    let batch = json!({"api_key": "k", "batch": [
        {"event": "$identify", "distinct_id": "user", "properties": {"$anon_distinct_id": "anon", "$set_once": {"a": 1}}},
        {"event": "$identify", "distinct_id": "user", "properties": {"$anon_distinct_id": "null"}},
        {"event": "$identify", "distinct_id": "user", "properties": {"$anon_distinct_id": "user"}},
        {"event": "$create_alias", "distinct_id": 42, "properties": {"alias": "other"}},
        {"event": "$merge_dangerously", "distinct_id": "x", "properties": {"alias": "y"}},
        {"event": "$groupidentify", "distinct_id": "d", "properties": {"$group_type": "org", "$group_key": 7}},
        {"event": "e", "distinct_id": "d", "properties": {"$groups": {"org": "7", "team": 3, "bad": null}}}
    ]});
    let decoded = decode("/batch/", "", None, batch.to_string().as_bytes()).unwrap();
    let events: Vec<_> = decoded.events.iter().map(|e| e.as_ref().unwrap()).collect();
    assert_eq!(events[0].merge, Some(("user".into(), "anon".into())));
    assert_eq!(events[0].set_once.as_ref().unwrap()["a"], json!(1));
    assert_eq!(events[1].merge, None, "placeholder ids never merge");
    assert_eq!(events[2].merge, None, "an id is not merged with itself");
    assert_eq!(events[3].merge, Some(("42".into(), "other".into())));
    assert_eq!(events[4].merge, Some(("x".into(), "y".into())));
    let group = events[5].group.as_ref().unwrap();
    assert_eq!(
        (group.group_type.as_str(), group.group_key.as_str()),
        ("org", "7")
    );
    assert!(group.set.is_empty());
    let groups: Vec<_> = events[6]
        .groups
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(groups, [("org", "7"), ("team", "3")]);
}

#[test]
fn each_rejection_reason_keeps_the_rest_of_the_batch() {
    let items = [
        (json!({"distinct_id": "d"}), "missing event name"),
        (
            json!({"event": 5, "distinct_id": "d"}),
            "event name is not a string",
        ),
        (json!({"event": "e"}), "missing distinct_id"),
        (
            json!({"event": "e", "distinct_id": "  "}),
            "missing distinct_id",
        ),
        (
            json!({"event": "e", "distinct_id": "d", "properties": []}),
            "properties is not a JSON object",
        ),
        (
            json!({"event": "e", "distinct_id": "d", "timestamp": "tomorrow"}),
            "unparseable timestamp",
        ),
        (
            json!({"event": "e", "distinct_id": "d", "timestamp": "1960-01-01T00:00:00Z"}),
            "timestamp before 1970",
        ),
        (
            json!({"event": "e", "distinct_id": "d", "timestamp": "2030-01-01T00:00:00Z"}),
            "timestamp more than 23 hours",
        ),
        (
            json!({"event": "$create_alias", "distinct_id": "d"}),
            "$create_alias without properties.alias",
        ),
        (
            json!({"event": "$groupidentify", "distinct_id": "d", "properties": {"$group_key": "k"}}),
            "$groupidentify without properties.$group_type",
        ),
        (
            json!({"event": "$groupidentify", "distinct_id": "d", "properties": {"$group_type": "t"}}),
            "$groupidentify without properties.$group_key",
        ),
        (json!("just a string"), "event is not a JSON object"),
    ];
    let mut batch: Vec<Value> = items.iter().map(|(item, _)| item.clone()).collect();
    batch.push(json!({"event": "fine", "distinct_id": "d"}));
    let body = json!({"api_key": "k", "batch": batch}).to_string();
    let decoded = decode("/batch/", "", None, body.as_bytes()).unwrap();
    for ((item, reason), result) in items.iter().zip(&decoded.events) {
        let rejected = result.as_ref().unwrap_err();
        assert!(
            rejected.reason.starts_with(reason),
            "{item}: got {:?}",
            rejected.reason
        );
        assert_eq!(serde_json::from_str::<Value>(&rejected.raw).unwrap(), *item);
    }
    assert_eq!(
        decoded.events.last().unwrap().as_ref().unwrap().event,
        "fine"
    );
}

#[test]
fn size_limits_apply_to_body_decompressed_payload_and_events() {
    let limits = Limits {
        max_event_bytes: 1_000,
        max_batch_bytes: 10_000,
    };
    let big_property = "x".repeat(2_000);
    let single =
        json!({"event": "e", "distinct_id": "d", "token": "k", "properties": {"p": big_property}})
            .to_string();
    let error =
        decode_posthog("/e/", "", None, single.as_bytes(), received(), &limits).unwrap_err();
    assert_eq!(
        (error.clone(), error.status()),
        (CaptureError::PayloadTooLarge { limit: 1_000 }, 413)
    );

    // Inside a batch an oversized event is only that event's problem.
    let batch = json!({"api_key": "k", "batch": [
        {"event": "e", "distinct_id": "d", "properties": {"p": big_property}},
        {"event": "small", "distinct_id": "d"}
    ]})
    .to_string();
    let decoded =
        decode_posthog("/batch/", "", None, batch.as_bytes(), received(), &limits).unwrap();
    assert!(
        decoded.events[0]
            .as_ref()
            .unwrap_err()
            .reason
            .contains("exceeds the 1000-byte limit")
    );
    assert_eq!(decoded.events[1].as_ref().unwrap().event, "small");

    // Raw body over the request limit.
    let huge = json!({"api_key": "k", "batch": [{"event": "e", "distinct_id": "d", "properties": {"p": "y".repeat(20_000)}}]}).to_string();
    let error =
        decode_posthog("/batch/", "", None, huge.as_bytes(), received(), &limits).unwrap_err();
    assert_eq!(error, CaptureError::PayloadTooLarge { limit: 10_000 });
    // Compressed it fits the body limit; decompressed it does not.
    let compressed = gzip(huge.as_bytes());
    assert!(compressed.len() < 10_000);
    let error = decode_posthog("/batch/", "", None, &compressed, received(), &limits).unwrap_err();
    assert_eq!(error, CaptureError::PayloadTooLarge { limit: 10_000 });
    let lz = lz_str::compress_to_base64(huge.as_str());
    assert!(lz.len() < 10_000);
    let error = decode_posthog(
        "/e/",
        "compression=lz64",
        None,
        lz.as_bytes(),
        received(),
        &limits,
    )
    .unwrap_err();
    assert_eq!(error, CaptureError::PayloadTooLarge { limit: 10_000 });
}

#[test]
fn gzip_bomb_is_stopped_at_the_limit() {
    // 64 MiB of spaces compresses to about 64 kB; decoding must stop at the
    // 20 MB default instead of inflating it all.
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let block = vec![b' '; 1 << 20];
    for _ in 0..64 {
        std::io::Write::write_all(&mut encoder, &block).unwrap();
    }
    let bomb = encoder.finish().unwrap();
    let limits = Limits::default();
    assert!(
        bomb.len() < limits.max_batch_bytes / 10,
        "bomb is {} bytes",
        bomb.len()
    );
    let error = decode_posthog(
        "/batch/",
        "",
        Some("text/plain"),
        &bomb,
        received(),
        &limits,
    )
    .unwrap_err();
    assert_eq!(
        error,
        CaptureError::PayloadTooLarge {
            limit: limits.max_batch_bytes
        }
    );
}
