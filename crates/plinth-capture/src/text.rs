//! One event read from a line of JSON text, its properties kept as text.
//!
//! An import stores each event's properties as JSON text. Building a
//! `serde_json::Value` tree of every line and writing the properties back
//! out was most of an import's CPU, so events in PostHog's plain file shape
//! (`uuid`, `event`, `distinct_id`, `timestamp`, `properties`, nothing else
//! at the top) are read without the tree: the properties stay the client's
//! text, and only the keys that identity facts come from are parsed. Those
//! go through the same checks and the same [`crate::event::finish`] as any
//! event, so both ways give the same event. Every other line (Segment,
//! `sent_at`, top-level `$set`, a wrong type, a rejection) takes the general
//! way, [`crate::normalize_json_event`].

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::event::{NormalizedEvent, Rejected};

/// An event read from text; `event.properties` is empty and `properties`
/// holds the whole object as JSON text.
#[derive(Debug, Clone, PartialEq)]
pub struct TextEvent<'a> {
    pub event: NormalizedEvent,
    /// The properties object: the line's own text when the event was read
    /// in its plain shape, else written out compactly.
    pub properties: Cow<'a, str>,
}

/// [`crate::normalize_json_event`] for one line of JSON text. A line that is
/// not JSON is rejected with the parser's reason.
pub fn normalize_json_text(text: &str, received_at_micros: i64) -> Result<TextEvent<'_>, Rejected> {
    if let Some(read) = read_plain(text, received_at_micros) {
        return Ok(read);
    }
    let value: Value = serde_json::from_str(text).map_err(|e| Rejected {
        reason: format!("not valid JSON: {e}"),
        raw: text.to_owned(),
    })?;
    let mut event = crate::normalize_json_event(value, received_at_micros)?;
    let properties = std::mem::take(&mut event.properties);
    Ok(TextEvent {
        event,
        properties: Cow::Owned(Value::Object(properties).to_string()),
    })
}

/// The top level of a plain PostHog event; any other key makes the line
/// take the general way.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlainEvent<'a> {
    uuid: Option<Value>,
    event: Value,
    distinct_id: Value,
    timestamp: Option<Value>,
    #[serde(borrow)]
    properties: Option<&'a RawValue>,
}

/// The properties that identity facts and the event's columns are read
/// from (see [`crate::event::check_identity`] and [`crate::event::finish`]);
/// the others are skipped unparsed.
#[derive(Deserialize)]
struct IdentityProperties {
    #[serde(rename = "$session_id")]
    session_id: Option<Value>,
    #[serde(rename = "$lib")]
    lib: Option<Value>,
    #[serde(rename = "$set")]
    set: Option<Value>,
    #[serde(rename = "$set_once")]
    set_once: Option<Value>,
    #[serde(rename = "$anon_distinct_id")]
    anon_distinct_id: Option<Value>,
    alias: Option<Value>,
    #[serde(rename = "$group_type")]
    group_type: Option<Value>,
    #[serde(rename = "$group_key")]
    group_key: Option<Value>,
    #[serde(rename = "$group_set")]
    group_set: Option<Value>,
    #[serde(rename = "$groups")]
    groups: Option<Value>,
}

impl IdentityProperties {
    /// The properties present, as the map the general way would have built
    /// had the event held no others.
    fn into_map(self) -> Map<String, Value> {
        [
            ("$session_id", self.session_id),
            ("$lib", self.lib),
            ("$set", self.set),
            ("$set_once", self.set_once),
            ("$anon_distinct_id", self.anon_distinct_id),
            ("alias", self.alias),
            ("$group_type", self.group_type),
            ("$group_key", self.group_key),
            ("$group_set", self.group_set),
            ("$groups", self.groups),
        ]
        .into_iter()
        .filter_map(|(key, value)| Some((key.to_owned(), value?)))
        .collect()
    }
}

/// The event, if `text` is a plain PostHog event that normalizes without a
/// rejection; `None` sends it the general way.
fn read_plain(text: &str, received_at_micros: i64) -> Option<TextEvent<'_>> {
    // Skipped text is checked less than parsed text: a lone surrogate
    // escape makes the tree refuse the line, so escaped surrogates go that way.
    if has_surrogate_escape(text) {
        return None;
    }
    let plain: PlainEvent = serde_json::from_str(text).ok()?;
    let properties_text = match plain.properties.map(RawValue::get) {
        None | Some("null") => "{}",
        Some(object) if object.starts_with('{') => object,
        Some(_) => return None,
    };
    // Duplicate identity keys are an error here, where the general way
    // keeps the last: such rare lines take that way.
    let identity: IdentityProperties = serde_json::from_str(properties_text).ok()?;
    let mut object = Map::new();
    for (key, value) in [
        ("uuid", plain.uuid),
        ("event", Some(plain.event)),
        ("distinct_id", Some(plain.distinct_id)),
        ("timestamp", plain.timestamp),
        ("properties", Some(Value::Object(identity.into_map()))),
    ] {
        if let Some(value) = value {
            object.insert(key.to_owned(), value);
        }
    }
    let mut event = crate::normalize_json_event(Value::Object(object), received_at_micros).ok()?;
    event.properties = Map::new();
    Some(TextEvent {
        event,
        properties: Cow::Borrowed(properties_text),
    })
}

/// Whether `text` holds a `\uD800`-`\uDFFF` escape (or text that looks like one).
fn has_surrogate_escape(text: &str) -> bool {
    text.match_indices("\\u").any(|(at, _)| {
        let hex = text.as_bytes().get(at + 2..at + 4);
        matches!(
            hex,
            Some([b'd' | b'D', b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F'])
        )
    })
}
