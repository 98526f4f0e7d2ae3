//! Segment HTTP tracking API: `POST /v1/track|identify|page|screen|group|alias|batch`.
//!
//! Calls are mapped to PostHog's vocabulary (page → `$pageview`, identify →
//! `$identify`, …) and Segment's `context` to PostHog property names, so the
//! rest of Plinth sees one event shape.

use serde_json::{Map, Value};

use crate::error::{CaptureError, Limits};
use crate::event::{self, DecodedRequest, EventParts, NormalizedEvent, Rejected};
use crate::payload::{self, GZIP_MAGIC};
use crate::timestamp;

/// Group type given to a Segment `group` call whose traits carry no
/// `group_type`: Segment groups have no type, PostHog groups need one.
pub const SEGMENT_DEFAULT_GROUP_TYPE: &str = "segment_group";

/// A Segment call type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Call {
    Track,
    Identify,
    Page,
    Screen,
    Group,
    Alias,
}

impl Call {
    fn parse(name: &str) -> Option<Call> {
        Some(match name.to_ascii_lowercase().as_str() {
            "track" => Call::Track,
            "identify" => Call::Identify,
            "page" => Call::Page,
            "screen" => Call::Screen,
            "group" => Call::Group,
            "alias" => Call::Alias,
            _ => return None,
        })
    }
}

enum Endpoint {
    Batch,
    Single(Call),
}

fn endpoint(path: &str) -> Option<Endpoint> {
    let path = path.split('?').next().unwrap_or(path);
    let name = path
        .strip_suffix('/')
        .unwrap_or(path)
        .strip_prefix("/v1/")?;
    if name == "batch" {
        Some(Endpoint::Batch)
    } else {
        Call::parse(name).map(Endpoint::Single)
    }
}

/// What every message of one request shares.
pub(crate) struct MessageContext<'a> {
    pub(crate) received_at: i64,
    /// Batch-level `sentAt`.
    pub(crate) sent_at: Option<i64>,
    /// Batch-level `context`, merged under each message's own.
    pub(crate) batch_context: Option<&'a Map<String, Value>>,
    /// The call type named by the path (`/v1/track`), which wins over `type`.
    pub(crate) call: Option<Call>,
    pub(crate) max_event_bytes: usize,
    /// A record exported by Segment (it has `receivedAt`): its `timestamp`
    /// is already corrected, so no skew correction is applied again.
    pub(crate) exported: bool,
}

/// Decodes a Segment HTTP API request.
///
/// `authorization` is the `Authorization` header: `Basic base64(writeKey:)`.
/// Without it the body's `writeKey` is used; a request with neither is
/// `Err(Unauthorized)`. Gzip bodies are recognised by their magic bytes.
pub fn decode_segment(
    path: &str,
    authorization: Option<&str>,
    body: &[u8],
    received_at_micros: i64,
    limits: &Limits,
) -> Result<DecodedRequest, CaptureError> {
    let endpoint = endpoint(path).ok_or_else(|| CaptureError::UnknownEndpoint(path.to_owned()))?;
    let limit = limits.max_batch_bytes;
    if body.len() > limit {
        return Err(CaptureError::PayloadTooLarge { limit });
    }
    let payload = if body.starts_with(&GZIP_MAGIC) {
        payload::gunzip_capped(body, limit)?
    } else {
        body.to_vec()
    };
    let Value::Object(mut object) = serde_json::from_slice(&payload)
        .map_err(|e| CaptureError::BadRequest(format!("payload is not valid JSON: {e}")))?
    else {
        return Err(CaptureError::BadRequest(
            "payload is not a JSON object".into(),
        ));
    };

    let token = authorization
        .and_then(basic_auth_user)
        .or_else(|| match object.get("writeKey") {
            Some(Value::String(key)) if !key.trim().is_empty() => Some(key.clone()),
            _ => None,
        })
        .ok_or(CaptureError::Unauthorized)?;

    let events = match endpoint {
        Endpoint::Batch => {
            let Some(Value::Array(items)) = object.remove("batch") else {
                return Err(CaptureError::BadRequest(
                    "batch is missing or not an array".into(),
                ));
            };
            if items.is_empty() {
                return Err(CaptureError::BadRequest("empty batch".into()));
            }
            let batch_context = match object.get("context") {
                Some(Value::Object(context)) => Some(context),
                _ => None,
            };
            let context = MessageContext {
                received_at: received_at_micros,
                sent_at: object.get("sentAt").and_then(timestamp::parse_timestamp),
                batch_context,
                call: None,
                max_event_bytes: limits.max_event_bytes,
                exported: false,
            };
            items
                .into_iter()
                .map(|item| normalize_message(item, &context))
                .collect()
        }
        Endpoint::Single(call) => {
            if payload.len() > limits.max_event_bytes {
                return Err(CaptureError::PayloadTooLarge {
                    limit: limits.max_event_bytes,
                });
            }
            let context = MessageContext {
                received_at: received_at_micros,
                sent_at: None,
                batch_context: None,
                call: Some(call),
                max_event_bytes: limits.max_event_bytes,
                exported: false,
            };
            vec![normalize_message(Value::Object(object), &context)]
        }
    };
    Ok(DecodedRequest {
        token: Some(token),
        events,
        beacon: false,
        historical_migration: false,
    })
}

/// The user of `Basic base64(user:password)`; Segment puts the write key there.
fn basic_auth_user(header: &str) -> Option<String> {
    let (scheme, credentials) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(payload::decode_base64(credentials.trim())?).ok()?;
    let user = decoded
        .split_once(':')
        .map_or(decoded.as_str(), |(user, _)| user);
    (!user.is_empty()).then(|| user.to_owned())
}

/// `base` with `overlay` on top, recursively for nested objects.
fn deep_merge(base: &Map<String, Value>, overlay: Map<String, Value>) -> Map<String, Value> {
    let mut merged = base.clone();
    for (key, value) in overlay {
        let combined = match (merged.remove(&key), value) {
            (Some(Value::Object(under)), Value::Object(over)) => {
                Value::Object(deep_merge(&under, over))
            }
            (_, value) => value,
        };
        merged.insert(key, combined);
    }
    merged
}

/// Segment context fields and the PostHog properties they become.
const CONTEXT_PROPERTIES: [(&[&str], &str); 22] = [
    (&["library", "name"], "$lib"),
    (&["library", "version"], "$lib_version"),
    (&["ip"], "$ip"),
    (&["page", "url"], "$current_url"),
    (&["page", "path"], "$pathname"),
    (&["page", "referrer"], "$referrer"),
    (&["userAgent"], "$raw_user_agent"),
    (&["os", "name"], "$os"),
    (&["os", "version"], "$os_version"),
    (&["device", "id"], "$device_id"),
    (&["device", "type"], "$device_type"),
    (&["device", "manufacturer"], "$device_manufacturer"),
    (&["device", "model"], "$device_model"),
    (&["app", "name"], "$app_name"),
    (&["app", "version"], "$app_version"),
    (&["screen", "width"], "$screen_width"),
    (&["screen", "height"], "$screen_height"),
    (&["locale"], "$locale"),
    (&["timezone"], "$timezone"),
    (&["campaign", "source"], "utm_source"),
    (&["campaign", "medium"], "utm_medium"),
    (&["campaign", "name"], "utm_campaign"),
];

/// Page properties and the PostHog properties they become.
const PAGE_PROPERTIES: [(&str, &str); 3] = [
    ("url", "$current_url"),
    ("path", "$pathname"),
    ("referrer", "$referrer"),
];

fn lookup<'v>(object: &'v Map<String, Value>, path: &[&str]) -> Option<&'v Value> {
    let (first, rest) = path.split_first()?;
    rest.iter()
        .try_fold(object.get(*first)?, |value, key| value.get(*key))
}

/// Sets `key` unless the event already has it: what the client put in the
/// event's own properties wins over what is derived from context.
fn insert_absent(properties: &mut Map<String, Value>, key: &str, value: Option<&Value>) {
    if let Some(value) = value.filter(|v| !v.is_null()) {
        properties.entry(key).or_insert_with(|| value.clone());
    }
}

/// Checks that `key` is absent, null or an object.
fn check_object_field(object: &Map<String, Value>, key: &str) -> Result<(), String> {
    match object.get(key) {
        None | Some(Value::Null | Value::Object(_)) => Ok(()),
        Some(_) => Err(format!("{key} is not a JSON object")),
    }
}

/// Takes `key` out of `object`; an empty map unless it is an object.
fn take_object_field(object: &mut Map<String, Value>, key: &str) -> Map<String, Value> {
    match object.remove(key) {
        Some(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

/// What [`check_message`] read from a valid message.
struct CheckedMessage {
    call: Call,
    user_id: Option<String>,
    anonymous_id: Option<String>,
    distinct_id: String,
    timestamp_micros: i64,
}

/// Validates one message without taking it apart; the reason if it is
/// unusable. Building the event afterwards cannot fail, so the raw text a
/// rejection keeps is serialized only for rejected messages.
fn check_message(
    object: &Map<String, Value>,
    context: &MessageContext<'_>,
) -> Result<CheckedMessage, String> {
    let call = match (context.call, object.get("type")) {
        (Some(call), _) => call,
        (None, Some(Value::String(name))) => {
            Call::parse(name).ok_or_else(|| format!("unknown Segment type {name:?}"))?
        }
        // A typeless message that names an event is a track, as Segment exports show.
        (None, None | Some(Value::Null)) if object.get("event").is_some_and(Value::is_string) => {
            Call::Track
        }
        (None, _) => return Err("missing type".into()),
    };

    let user_id = event::id_text(object.get("userId"));
    let anonymous_id = event::id_text(object.get("anonymousId"));
    let distinct_id = user_id
        .clone()
        .or_else(|| anonymous_id.clone())
        .ok_or("missing userId and anonymousId")?;

    check_object_field(object, "context")?;
    match call {
        Call::Identify | Call::Group => check_object_field(object, "traits")?,
        _ => check_object_field(object, "properties")?,
    }
    match call {
        Call::Track => match object.get("event") {
            Some(Value::String(name)) if !name.trim().is_empty() => {}
            _ => return Err("missing event name".into()),
        },
        Call::Alias if event::id_text(object.get("previousId")).is_none() => {
            return Err("alias without previousId".into());
        }
        Call::Group if event::id_text(object.get("groupId")).is_none() => {
            return Err("group without groupId".into());
        }
        _ => {}
    }

    let timestamp_value = object
        .get("timestamp")
        .filter(|v| !v.is_null())
        .or_else(|| object.get("originalTimestamp"));
    let timestamp_micros = if context.exported {
        let received_at = object
            .get("receivedAt")
            .and_then(timestamp::parse_timestamp)
            .unwrap_or(context.received_at);
        timestamp::event_time(timestamp_value, None, None, received_at)
    } else {
        let sent_at = object
            .get("sentAt")
            .and_then(timestamp::parse_timestamp)
            .or(context.sent_at);
        timestamp::event_time(timestamp_value, sent_at, None, context.received_at)
    }?;
    Ok(CheckedMessage {
        call,
        user_id,
        anonymous_id,
        distinct_id,
        timestamp_micros,
    })
}

/// Normalizes one Segment message, or rejects it with the reason.
pub(crate) fn normalize_message(
    item: Value,
    context: &MessageContext<'_>,
) -> Result<NormalizedEvent, Rejected> {
    event::check_then_build(
        item,
        |object| check_message(object, context),
        |checked, object| build_message(checked, object, context),
        context.max_event_bytes,
    )
}

fn build_message(
    checked: CheckedMessage,
    mut object: Map<String, Value>,
    context: &MessageContext<'_>,
) -> NormalizedEvent {
    let CheckedMessage {
        call,
        user_id,
        anonymous_id,
        distinct_id,
        timestamp_micros,
    } = checked;

    let own_context = take_object_field(&mut object, "context");
    let merged_context = match context.batch_context {
        Some(batch) => deep_merge(batch, own_context),
        None => own_context,
    };

    let mut properties = match call {
        Call::Identify | Call::Group => Map::new(),
        _ => take_object_field(&mut object, "properties"),
    };
    let event = match call {
        Call::Track => match object.get("event") {
            Some(Value::String(name)) => event::event_name(name),
            _ => unreachable!("check_message requires an event name"),
        },
        Call::Page | Call::Screen => {
            insert_absent(&mut properties, "name", object.get("name"));
            insert_absent(&mut properties, "category", object.get("category"));
            if call == Call::Page {
                for (from, to) in PAGE_PROPERTIES {
                    let value = properties.get(from).cloned();
                    insert_absent(&mut properties, to, value.as_ref());
                }
                "$pageview".to_owned()
            } else {
                insert_absent(&mut properties, "$screen_name", object.get("name"));
                "$screen".to_owned()
            }
        }
        Call::Identify => {
            let traits = take_object_field(&mut object, "traits");
            properties.insert("$set".into(), Value::Object(traits));
            "$identify".to_owned()
        }
        Call::Alias => {
            let previous_id = event::id_text(object.get("previousId")).unwrap_or_default();
            properties.insert("alias".into(), Value::String(previous_id));
            "$create_alias".to_owned()
        }
        Call::Group => {
            let group_key = event::id_text(object.get("groupId")).unwrap_or_default();
            let traits = take_object_field(&mut object, "traits");
            let group_type = match traits.get("group_type") {
                Some(Value::String(t)) if !t.is_empty() => t.clone(),
                _ => SEGMENT_DEFAULT_GROUP_TYPE.to_owned(),
            };
            properties.insert("$group_type".into(), Value::String(group_type));
            properties.insert("$group_key".into(), Value::String(group_key));
            properties.insert("$group_set".into(), Value::Object(traits));
            "$groupidentify".to_owned()
        }
    };
    // With both ids the message says which anonymous id this user had;
    // on identify that is the merge fact.
    if user_id.is_some() {
        insert_absent(
            &mut properties,
            "$anon_distinct_id",
            anonymous_id.map(Value::String).as_ref(),
        );
    }
    for (path, key) in CONTEXT_PROPERTIES {
        insert_absent(&mut properties, key, lookup(&merged_context, path));
    }
    if !merged_context.is_empty() {
        properties.insert("context".into(), Value::Object(merged_context));
    }

    event::finish(EventParts {
        uuid: event::id_text(object.get("messageId")),
        event,
        distinct_id,
        timestamp_micros,
        properties,
    })
}
