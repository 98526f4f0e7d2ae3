//! Segment HTTP API: write keys, single-call endpoints, batch context
//! merge, PostHog naming, clock skew, limits and rejections.

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::{gzip, micros, only_event, only_rejection};
use plinth_capture::{CaptureError, DecodedRequest, Limits, decode_segment};
use serde_json::{Value, json};

fn received() -> i64 {
    micros("2024-05-01T12:00:00Z")
}

fn decode(path: &str, auth: Option<&str>, body: &Value) -> Result<DecodedRequest, CaptureError> {
    decode_segment(
        path,
        auth,
        body.to_string().as_bytes(),
        received(),
        &Limits::default(),
    )
}

fn basic(key: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{key}:")))
}

#[test]
fn write_key_from_basic_auth_or_body() {
    let track = json!({"userId": "u", "event": "E"});
    let decoded = decode("/v1/track", Some(&basic("wk_auth")), &track).unwrap();
    assert_eq!(decoded.token.as_deref(), Some("wk_auth"));
    assert_eq!(only_event(&decoded).event, "E");

    let mut with_body_key = track.clone();
    with_body_key["writeKey"] = json!("wk_body");
    let decoded = decode("/v1/track/", None, &with_body_key).unwrap();
    assert_eq!(decoded.token.as_deref(), Some("wk_body"));
    // An unusable Authorization header falls back to the body.
    let decoded = decode("/v1/track", Some("Bearer x"), &with_body_key).unwrap();
    assert_eq!(decoded.token.as_deref(), Some("wk_body"));

    let error = decode("/v1/track", None, &track).unwrap_err();
    assert_eq!(
        (error.clone(), error.status()),
        (CaptureError::Unauthorized, 401)
    );
    let error = decode("/v1/track", Some(&basic("")), &track).unwrap_err();
    assert_eq!(error, CaptureError::Unauthorized);
}

#[test]
fn single_call_endpoints_take_the_type_from_the_path() {
    let auth = basic("k");
    let cases = [
        (
            "/v1/track",
            json!({"anonymousId": "a", "event": "Signed Up"}),
            "Signed Up",
        ),
        (
            "/v1/page",
            json!({"userId": "u", "name": "Home"}),
            "$pageview",
        ),
        (
            "/v1/screen",
            json!({"userId": "u", "name": "Feed"}),
            "$screen",
        ),
        (
            "/v1/identify",
            json!({"userId": "u", "traits": {"x": 1}}),
            "$identify",
        ),
        (
            "/v1/group",
            json!({"userId": "u", "groupId": "g"}),
            "$groupidentify",
        ),
        (
            "/v1/alias",
            json!({"userId": "u", "previousId": "p"}),
            "$create_alias",
        ),
    ];
    for (path, body, expected) in cases {
        let decoded = decode(path, Some(&auth), &body).unwrap();
        assert_eq!(only_event(&decoded).event, expected, "{path}");
    }
    assert_eq!(
        decode("/v1/unknown", Some(&auth), &json!({}))
            .unwrap_err()
            .status(),
        404
    );
    assert_eq!(
        decode("/batch", Some(&auth), &json!({}))
            .unwrap_err()
            .status(),
        404
    );
}

#[test]
fn batch_context_is_merged_under_each_message() {
    let body = json!({
        "writeKey": "k",
        "context": {"library": {"name": "analytics-node", "version": "3.0.0"}, "ip": "198.51.100.1",
                    "os": {"name": "macOS"}},
        "batch": [
            {"type": "track", "event": "A", "userId": "u", "messageId": "m1",
             "context": {"ip": "203.0.113.5", "os": {"version": "14.1"},
                         "page": {"url": "https://example.com/p", "path": "/p"},
                         "campaign": {"source": "newsletter"}, "userAgent": "UA"},
             "properties": {"$ip": "client-chosen"}},
            {"type": "track", "event": "B", "anonymousId": "a", "messageId": "m2", "context": null}
        ]
    });
    let decoded = decode("/v1/batch", None, &body).unwrap();
    let first = decoded.events[0].as_ref().unwrap();
    assert_eq!(first.library.as_deref(), Some("analytics-node"));
    assert_eq!(first.properties["$lib_version"], json!("3.0.0"));
    // The event's own properties win over context-derived ones.
    assert_eq!(first.properties["$ip"], json!("client-chosen"));
    assert_eq!(first.properties["context"]["ip"], json!("203.0.113.5"));
    // Nested objects merge: name from the batch, version from the message.
    assert_eq!(
        first.properties["context"]["os"],
        json!({"name": "macOS", "version": "14.1"})
    );
    assert_eq!(
        (&first.properties["$os"], &first.properties["$os_version"]),
        (&json!("macOS"), &json!("14.1"))
    );
    assert_eq!(
        first.properties["$current_url"],
        json!("https://example.com/p")
    );
    assert_eq!(first.properties["$pathname"], json!("/p"));
    assert_eq!(first.properties["utm_source"], json!("newsletter"));
    assert_eq!(first.properties["$raw_user_agent"], json!("UA"));
    assert_eq!(first.uuid.as_deref(), Some("m1"));

    let second = decoded.events[1].as_ref().unwrap();
    assert_eq!(second.distinct_id, "a");
    assert_eq!(second.properties["$ip"], json!("198.51.100.1"));
    assert_eq!(
        second.properties["context"]["library"]["name"],
        json!("analytics-node")
    );
}

#[test]
fn analytics_node_style_batch_with_nulls_and_unknown_fields() {
    // Shape of @segment/analytics-node 3.x messages: string messageId with a
    // prefix, _metadata, integrations, explicit nulls, sentAt per batch.
    let body = json!({
        "batch": [{
            "type": "identify", "userId": "user-7", "anonymousId": "anon-7",
            "traits": {"email": "x@example.com", "age": null},
            "messageId": "node-next-1714564790000-8c4b0c1a-7c33-4f8f-9a2d-0a51e4e6a001",
            "_metadata": {"nodeVersion": "20.11.0", "jsRuntime": "node"},
            "integrations": {}, "context": {"library": {"name": "@segment/analytics-node", "version": "3.0.0"}},
            "timestamp": "2024-05-01T11:59:50.000Z", "unknownField": [1, 2]
        }],
        "sentAt": "2024-05-01T12:00:00.000Z"
    });
    let decoded = decode("/v1/batch", Some(&basic("k")), &body).unwrap();
    let event = only_event(&decoded);
    assert_eq!(
        event.uuid.as_deref(),
        Some("node-next-1714564790000-8c4b0c1a-7c33-4f8f-9a2d-0a51e4e6a001")
    );
    assert_eq!(event.merge, Some(("user-7".into(), "anon-7".into())));
    assert_eq!(event.set.as_ref().unwrap()["age"], Value::Null);
    assert_eq!(event.library.as_deref(), Some("@segment/analytics-node"));
    assert_eq!(event.timestamp_micros, received() - 10_000_000);
}

#[test]
fn clock_skew_uses_message_sent_at_over_batch() {
    let body = json!({"writeKey": "k", "sentAt": "2024-05-01T08:00:00Z", "batch": [
        {"type": "track", "event": "A", "userId": "u", "timestamp": "2024-05-01T07:59:00Z"},
        {"type": "track", "event": "B", "userId": "u", "timestamp": "2024-05-01T07:59:00Z",
         "sentAt": "2024-05-01T07:59:30Z"},
        {"type": "track", "event": "C", "userId": "u", "originalTimestamp": "2024-05-01T07:59:45Z"},
        {"type": "track", "event": "D", "userId": "u"}
    ]});
    let decoded = decode("/v1/batch", None, &body).unwrap();
    let times: Vec<i64> = decoded
        .events
        .iter()
        .map(|e| e.as_ref().unwrap().timestamp_micros)
        .collect();
    assert_eq!(
        times,
        [
            received() - 60_000_000,
            received() - 30_000_000,
            received() - 15_000_000,
            received()
        ]
    );
}

#[test]
fn page_screen_group_alias_mapping() {
    let body = json!({"writeKey": "k", "batch": [
        {"type": "page", "userId": "u", "name": "Pricing", "category": "Marketing",
         "properties": {"url": "https://example.com/pricing", "path": "/pricing", "referrer": "https://r.example"}},
        {"type": "screen", "anonymousId": "a", "name": "Settings", "properties": {"name": "kept"}},
        {"type": "group", "userId": "u", "groupId": 99, "traits": {"group_type": "team", "size": 3}},
        {"type": "alias", "userId": "new", "previousId": "old"},
        {"type": "Track", "userId": "u", "event": "Case Insensitive Type"}
    ]});
    let decoded = decode("/v1/batch", None, &body).unwrap();
    let events: Vec<_> = decoded.events.iter().map(|e| e.as_ref().unwrap()).collect();
    let page = &events[0].properties;
    assert_eq!(
        (&page["name"], &page["category"]),
        (&json!("Pricing"), &json!("Marketing"))
    );
    assert_eq!(page["$current_url"], json!("https://example.com/pricing"));
    assert_eq!(
        (&page["$pathname"], &page["$referrer"]),
        (&json!("/pricing"), &json!("https://r.example"))
    );
    assert_eq!(events[1].properties["name"], json!("kept"));
    assert_eq!(events[1].properties["$screen_name"], json!("Settings"));
    let group = events[2].group.as_ref().unwrap();
    assert_eq!(
        (group.group_type.as_str(), group.group_key.as_str()),
        ("team", "99")
    );
    assert_eq!(group.set["size"], json!(3));
    assert_eq!(events[3].merge, Some(("new".into(), "old".into())));
    assert_eq!(events[3].distinct_id, "new");
    assert_eq!(events[4].event, "Case Insensitive Type");
}

#[test]
fn each_rejection_reason() {
    let items = [
        (
            json!({"type": "track", "event": "A"}),
            "missing userId and anonymousId",
        ),
        (
            json!({"type": "track", "event": "A", "userId": null, "anonymousId": ""}),
            "missing userId and anonymousId",
        ),
        (
            json!({"type": "track", "userId": "u"}),
            "missing event name",
        ),
        (
            json!({"type": "boop", "userId": "u"}),
            "unknown Segment type \"boop\"",
        ),
        (json!({"userId": "u"}), "missing type"),
        (
            json!({"type": "alias", "userId": "u"}),
            "alias without previousId",
        ),
        (
            json!({"type": "group", "userId": "u"}),
            "group without groupId",
        ),
        (
            json!({"type": "identify", "userId": "u", "traits": "x"}),
            "traits is not a JSON object",
        ),
        (
            json!({"type": "track", "event": "A", "userId": "u", "properties": 1}),
            "properties is not a JSON object",
        ),
        (
            json!({"type": "track", "event": "A", "userId": "u", "context": []}),
            "context is not a JSON object",
        ),
        (
            json!({"type": "track", "event": "A", "userId": "u", "timestamp": "nope"}),
            "unparseable timestamp",
        ),
        (
            json!({"type": "track", "event": "A", "userId": "u", "timestamp": "2099-01-01T00:00:00Z"}),
            "timestamp more than 23 hours",
        ),
        (json!(null), "event is not a JSON object"),
    ];
    let mut batch: Vec<Value> = items.iter().map(|(item, _)| item.clone()).collect();
    batch.push(json!({"type": "track", "event": "ok", "userId": "u"}));
    let decoded = decode("/v1/batch", Some(&basic("k")), &json!({"batch": batch})).unwrap();
    for ((item, reason), result) in items.iter().zip(&decoded.events) {
        let rejected = result.as_ref().unwrap_err();
        assert!(
            rejected.reason.starts_with(reason),
            "{item}: got {:?}",
            rejected.reason
        );
        assert_eq!(serde_json::from_str::<Value>(&rejected.raw).unwrap(), *item);
    }
    assert!(decoded.events.last().unwrap().is_ok());
    // A single-call request with a bad message is still a 200 with a rejection.
    let decoded = decode("/v1/track", Some(&basic("k")), &json!({"userId": "u"})).unwrap();
    assert_eq!(only_rejection(&decoded).reason, "missing event name");
}

#[test]
fn request_errors() {
    let auth = basic("k");
    for body in [
        &b"not json"[..],
        b"[]",
        b"{\"batch\": {}}",
        b"{\"batch\": []}",
    ] {
        let error = decode_segment(
            "/v1/batch",
            Some(&auth),
            body,
            received(),
            &Limits::default(),
        )
        .unwrap_err();
        assert_eq!(error.status(), 400, "{:?}", String::from_utf8_lossy(body));
    }
}

#[test]
fn gzip_body_and_size_limits() {
    let body = json!({"batch": [{"type": "track", "event": "A", "userId": "u", "properties": {"p": "z".repeat(3_000)}}]});
    let compressed = gzip(body.to_string().as_bytes());
    let decoded = decode_segment(
        "/v1/batch",
        Some(&basic("k")),
        &compressed,
        received(),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(only_event(&decoded).event, "A");

    // Segment's own limits: 32 KB per message, 500 KB per batch.
    let limits = Limits {
        max_event_bytes: 32 * 1024,
        max_batch_bytes: 500 * 1024,
    };
    let big = json!({"batch": [{"type": "track", "event": "A", "userId": "u", "properties": {"p": "z".repeat(600 * 1024)}}]});
    let error = decode_segment(
        "/v1/batch",
        Some(&basic("k")),
        &gzip(big.to_string().as_bytes()),
        received(),
        &limits,
    )
    .unwrap_err();
    assert_eq!(error, CaptureError::PayloadTooLarge { limit: 500 * 1024 });
    let single = json!({"userId": "u", "event": "A", "properties": {"p": "z".repeat(40 * 1024)}});
    let error = decode_segment(
        "/v1/track",
        Some(&basic("k")),
        single.to_string().as_bytes(),
        received(),
        &limits,
    )
    .unwrap_err();
    assert_eq!(error, CaptureError::PayloadTooLarge { limit: 32 * 1024 });
}
