//! PostHog capture: `/capture`, `/batch`, `/e`, `/i/v0/e`, `/track`,
//! `/engage` (GET and POST, with or without a trailing slash).
//!
//! Bodies are a JSON array of events, a single event, or a batch wrapper
//! `{api_key|token, batch, sent_at, historical_migration}`; possibly gzip,
//! lz-string or base64, possibly inside a form body or a GET query.

use serde_json::{Map, Value};

use crate::error::{CaptureError, Limits};
use crate::event::{self, DecodedRequest, EventParts, NormalizedEvent, Rejected};
use crate::payload::{self, Compression, FormFields, GZIP_MAGIC};
use crate::timestamp;

/// What differs between PostHog endpoints once the payload is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    /// `/engage`: an object without `event` is a person update (`$identify`).
    Engage,
    Other,
}

fn endpoint(path: &str) -> Option<Endpoint> {
    let path = path.split('?').next().unwrap_or(path);
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    match trimmed {
        "/engage" => Some(Endpoint::Engage),
        "/capture" | "/batch" | "/e" | "/i/v0/e" | "/track" => Some(Endpoint::Other),
        _ => None,
    }
}

/// What every event of one request shares.
pub(crate) struct EventContext {
    pub(crate) received_at: i64,
    /// Batch-level `sent_at` (body), else the query's `_`.
    pub(crate) sent_at: Option<i64>,
    pub(crate) engage: bool,
    pub(crate) max_event_bytes: usize,
}

/// Decodes a PostHog capture request.
///
/// `path` is the request path (`/batch/`), `query` the raw query string
/// (with or without `?`), `content_type` the header if any, `body` the raw
/// body (empty for GET). The token comes from the batch wrapper or the
/// events; a request without one is `Err(Unauthorized)`.
pub fn decode_posthog(
    path: &str,
    query: &str,
    content_type: Option<&str>,
    body: &[u8],
    received_at_micros: i64,
    limits: &Limits,
) -> Result<DecodedRequest, CaptureError> {
    let endpoint = endpoint(path).ok_or_else(|| CaptureError::UnknownEndpoint(path.to_owned()))?;
    let query = FormFields::parse(query.as_bytes());
    let payload = request_payload(body, content_type, &query, limits.max_batch_bytes)?;
    let value: Value = serde_json::from_slice(&payload)
        .map_err(|e| CaptureError::BadRequest(format!("payload is not valid JSON: {e}")))?;

    let (items, batch_token, batch_sent_at, historical_migration) = match value {
        Value::Array(items) => (items, None, None, false),
        Value::Object(mut object) if object.contains_key("batch") => {
            let Some(Value::Array(items)) = object.remove("batch") else {
                return Err(CaptureError::BadRequest("batch is not an array".into()));
            };
            let token = ["api_key", "token"]
                .iter()
                .find_map(|key| non_empty_string(object.get(*key)));
            let sent_at = object.get("sent_at").and_then(timestamp::parse_timestamp);
            let historical = object
                .get("historical_migration")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            (items, token, sent_at, historical)
        }
        Value::Object(object) => {
            if payload.len() > limits.max_event_bytes {
                return Err(CaptureError::PayloadTooLarge {
                    limit: limits.max_event_bytes,
                });
            }
            (vec![Value::Object(object)], None, None, false)
        }
        _ => {
            return Err(CaptureError::BadRequest(
                "payload is neither an event, an array of events nor a batch".into(),
            ));
        }
    };
    if items.is_empty() {
        return Err(CaptureError::BadRequest("empty batch".into()));
    }

    let token = match batch_token {
        Some(token) => token,
        None => events_token(&items)?.ok_or(CaptureError::Unauthorized)?,
    };
    let context = EventContext {
        received_at: received_at_micros,
        sent_at: batch_sent_at.or_else(|| query_sent_at(&query)),
        engage: endpoint == Endpoint::Engage,
        max_event_bytes: limits.max_event_bytes,
    };
    Ok(DecodedRequest {
        token: Some(token),
        events: items
            .into_iter()
            .map(|item| normalize_event(item, &context))
            .collect(),
        beacon: query.beacon,
        historical_migration,
    })
}

/// The request's JSON bytes, whatever wrapping the client used.
fn request_payload(
    body: &[u8],
    content_type: Option<&str>,
    query: &FormFields,
    limit: usize,
) -> Result<Vec<u8>, CaptureError> {
    if body.len() > limit {
        return Err(CaptureError::PayloadTooLarge { limit });
    }
    let payload = if body.starts_with(&GZIP_MAGIC) {
        // posthog-js sends gzip as text/plain, sometimes without ?compression.
        payload::gunzip_capped(body, limit)?
    } else if payload::is_form_content_type(content_type) {
        let form = FormFields::parse(body);
        let data = form
            .data
            .ok_or_else(|| CaptureError::BadRequest("form body without a data field".into()))?;
        let compression = form.compression.or(query.compression).unwrap_or_default();
        payload::decode_data_field(&data, compression, limit)?
    } else if body.is_empty() {
        let data = query
            .data
            .as_deref()
            .ok_or_else(|| CaptureError::BadRequest("empty payload".into()))?;
        payload::decode_data_field(data, query.compression.unwrap_or_default(), limit)?
    } else {
        match query.compression.unwrap_or_default() {
            Compression::LzString => {
                let text = std::str::from_utf8(body)
                    .map_err(|_| CaptureError::BadRequest("lz-string body is not text".into()))?;
                payload::decode_lz64(text, limit)?
            }
            Compression::Base64 => payload::decode_data_field(
                std::str::from_utf8(body)
                    .map_err(|_| CaptureError::BadRequest("base64 body is not text".into()))?,
                Compression::Base64,
                limit,
            )?,
            // A gzip hint without gzip bytes: the hint is as unreliable as
            // its absence, so the body is read as it is.
            Compression::Gzip | Compression::None => body.to_vec(),
        }
    };
    let payload = payload::unwrap_undeclared_base64(payload);
    if payload.len() > limit {
        return Err(CaptureError::PayloadTooLarge { limit });
    }
    Ok(payload)
}

/// The client's send time from the query (`_` in epoch ms, as posthog-js
/// appends it). Values before 2021 are seconds from old SDKs, and ignored,
/// as PostHog does.
fn query_sent_at(query: &FormFields) -> Option<i64> {
    const JAN_2021_MILLIS: i64 = 1_609_459_200_000;
    query
        .sent_at_millis
        .filter(|ms| *ms >= JAN_2021_MILLIS)
        .and_then(|ms| ms.checked_mul(1_000))
}

fn non_empty_string(value: Option<&Value>) -> Option<String> {
    match value {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// The token an event carries: `token`, `$token`, `api_key` or `properties.token`.
fn event_token(item: &Value) -> Option<String> {
    let object = item.as_object()?;
    ["token", "$token", "api_key"]
        .iter()
        .find_map(|key| non_empty_string(object.get(*key)))
        .or_else(|| non_empty_string(object.get("properties")?.get("token")))
}

/// The one token the events carry, if any; different tokens in one request
/// are refused, as PostHog does.
fn events_token(items: &[Value]) -> Result<Option<String>, CaptureError> {
    let mut found: Option<String> = None;
    for token in items.iter().filter_map(event_token) {
        match &found {
            Some(existing) if *existing != token => return Err(CaptureError::MultipleTokens),
            Some(_) => {}
            None => found = Some(token),
        }
    }
    Ok(found)
}

/// Normalizes one PostHog event, or rejects it with the reason.
///
/// Every check reads the event by reference first, so that the raw text a
/// rejection keeps is serialized only for rejected events: accepted ones,
/// nearly all of them, are never written back to JSON here.
pub(crate) fn normalize_event(
    item: Value,
    context: &EventContext,
) -> Result<NormalizedEvent, Rejected> {
    event::check_then_build(
        item,
        |object| check_event(object, context),
        build_event,
        context.max_event_bytes,
    )
}

fn build_event(checked: CheckedEvent, mut object: Map<String, Value>) -> NormalizedEvent {
    let mut properties = match object.remove("properties") {
        Some(Value::Object(properties)) => properties,
        _ => Map::new(),
    };
    // /engage and some SDKs put $set / $set_once next to properties.
    for key in ["$set", "$set_once"] {
        if let Some(Value::Object(top_level)) = object.remove(key) {
            let slot = properties
                .entry(key)
                .or_insert_with(|| Value::Object(Map::new()));
            match slot {
                Value::Object(existing) => existing.extend(top_level),
                other => *other = Value::Object(top_level),
            }
        }
    }
    event::finish(EventParts {
        uuid: event::id_text(object.get("uuid")),
        event: checked.event,
        distinct_id: checked.distinct_id,
        timestamp_micros: checked.timestamp_micros,
        properties,
    })
}

/// What [`check_event`] read from a valid event.
struct CheckedEvent {
    event: String,
    distinct_id: String,
    timestamp_micros: i64,
}

/// Validates one event without taking it apart; the reason if it is unusable.
fn check_event(
    object: &Map<String, Value>,
    context: &EventContext,
) -> Result<CheckedEvent, String> {
    let empty = Map::new();
    let properties = match object.get("properties") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(properties)) => properties,
        Some(_) => return Err("properties is not a JSON object".into()),
    };
    let event = match object.get("event") {
        Some(Value::String(name)) if !name.trim().is_empty() => event::event_name(name),
        None | Some(Value::Null) if context.engage => "$identify".to_owned(),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            return Err("missing event name".into());
        }
        Some(_) => return Err("event name is not a string".into()),
    };
    let distinct_id = event::id_text(object.get("distinct_id"))
        .or_else(|| event::id_text(object.get("$distinct_id")))
        .or_else(|| event::id_text(properties.get("distinct_id")))
        .ok_or("missing distinct_id")?;

    let ignore_sent_at = properties.get("$ignore_sent_at") == Some(&Value::Bool(true));
    let sent_at = object
        .get("sent_at")
        .and_then(timestamp::parse_timestamp)
        .or(context.sent_at)
        .filter(|_| !ignore_sent_at);
    let timestamp_micros = timestamp::event_time(
        object.get("timestamp"),
        sent_at,
        object.get("offset"),
        context.received_at,
    )?;
    event::check_identity(&event, properties)?;
    Ok(CheckedEvent {
        event,
        distinct_id,
        timestamp_micros,
    })
}
