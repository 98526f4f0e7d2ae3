//! One event read from a line of JSON text, its properties kept as text.
//!
//! `plinth import` is CPU-bound in this reading. Building a
//! `serde_json::Value` tree of each line, writing its properties back out
//! and copying its strings was most of that CPU, so events in PostHog's
//! plain file shape (`uuid`, `event`, `distinct_id`, `timestamp`,
//! `properties`, nothing else at the top) are read without the tree: the
//! properties stay the client's text, scanned only for `$session_id`,
//! `$lib` and the keys identity facts come from. Nearly every such event
//! has no identity facts and string values; it is read with the general
//! way's rules ([`crate::event::id_text`], [`crate::timestamp::event_time`])
//! into slices of the line, copying only strings that hold escapes. The
//! others have just those keys normalized by [`crate::normalize_json_event`],
//! so their identity facts are exactly its facts. Every other line
//! (Segment, `sent_at`, top-level `$set`, a wrong type, a rejection) takes
//! the general way, [`crate::normalize_json_event`].

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::event::{self, GroupIdentify, NormalizedEvent, Rejected};
use crate::timestamp;

/// An event read from a line of text. Its text fields are slices of the
/// line where the line holds them as they are (no escapes, no rewrite), so
/// that an import can point its columns into the text it read.
#[derive(Debug, Clone, PartialEq)]
pub struct TextEvent<'a> {
    pub uuid: Option<Cow<'a, str>>,
    pub event: Cow<'a, str>,
    pub distinct_id: Cow<'a, str>,
    /// UTC microseconds, after clock-skew correction.
    pub timestamp_micros: i64,
    pub session_id: Option<Cow<'a, str>>,
    pub library: Option<Cow<'a, str>>,
    /// The properties object: the line's own text when the event was read
    /// in its plain shape, else written out compactly.
    pub properties: Cow<'a, str>,
    /// What the event says of persons and groups; `None` when it says
    /// nothing, as nearly all events do.
    pub identity: Option<Box<IdentityFacts>>,
}

/// What one event says of persons and groups (see [`NormalizedEvent`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IdentityFacts {
    pub set: Option<Map<String, Value>>,
    pub set_once: Option<Map<String, Value>>,
    pub merge: Option<(String, String)>,
    pub group: Option<GroupIdentify>,
}

impl TextEvent<'static> {
    /// `event` with its properties written out as text (its `groups` are
    /// in them).
    pub fn from_normalized(mut event: NormalizedEvent) -> TextEvent<'static> {
        let properties = Value::Object(std::mem::take(&mut event.properties)).to_string();
        TextEvent::with_properties(event, Cow::Owned(properties))
    }
}

impl<'a> TextEvent<'a> {
    /// `event` with `properties` as its properties text (`event.properties`
    /// is not read).
    fn with_properties(event: NormalizedEvent, properties: Cow<'a, str>) -> TextEvent<'a> {
        let facts = IdentityFacts {
            set: event.set,
            set_once: event.set_once,
            merge: event.merge,
            group: event.group,
        };
        TextEvent {
            uuid: event.uuid.map(Cow::Owned),
            event: Cow::Owned(event.event),
            distinct_id: Cow::Owned(event.distinct_id),
            timestamp_micros: event.timestamp_micros,
            session_id: event.session_id.map(Cow::Owned),
            library: event.library.map(Cow::Owned),
            properties,
            identity: (facts != IdentityFacts::default()).then(|| Box::new(facts)),
        }
    }
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
    let event = crate::normalize_json_event(value, received_at_micros)?;
    Ok(TextEvent::from_normalized(event))
}

/// The top level of a plain PostHog event, each value left as its text;
/// any other key, or a key given twice, makes the line take the general way.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlainEvent<'a> {
    #[serde(borrow)]
    uuid: Option<&'a RawValue>,
    #[serde(borrow)]
    event: Option<&'a RawValue>,
    #[serde(borrow)]
    distinct_id: Option<&'a RawValue>,
    #[serde(borrow)]
    timestamp: Option<&'a RawValue>,
    #[serde(borrow)]
    properties: Option<&'a RawValue>,
}

/// The properties that the event's columns (`$session_id`, `$lib`) and its
/// identity facts (the others, see [`crate::event::check_identity`] and
/// [`crate::event::finish`]) are read from; the rest are skipped.
#[derive(Deserialize)]
struct PlainProperties<'a> {
    #[serde(rename = "$session_id", borrow)]
    session_id: Option<&'a RawValue>,
    #[serde(rename = "$lib", borrow)]
    lib: Option<&'a RawValue>,
    #[serde(rename = "$set", borrow)]
    set: Option<&'a RawValue>,
    #[serde(rename = "$set_once", borrow)]
    set_once: Option<&'a RawValue>,
    #[serde(rename = "$anon_distinct_id", borrow)]
    anon_distinct_id: Option<&'a RawValue>,
    #[serde(borrow)]
    alias: Option<&'a RawValue>,
    #[serde(rename = "$group_type", borrow)]
    group_type: Option<&'a RawValue>,
    #[serde(rename = "$group_key", borrow)]
    group_key: Option<&'a RawValue>,
    #[serde(rename = "$group_set", borrow)]
    group_set: Option<&'a RawValue>,
    #[serde(rename = "$groups", borrow)]
    groups: Option<&'a RawValue>,
}

impl<'a> PlainProperties<'a> {
    /// The properties identity facts come from, with their keys; `null`
    /// reads as absent, which is what it means to those facts.
    fn identity_keys(&self) -> [(&'static str, Option<&'a RawValue>); 8] {
        [
            ("$set", self.set),
            ("$set_once", self.set_once),
            ("$anon_distinct_id", self.anon_distinct_id),
            ("alias", self.alias),
            ("$group_type", self.group_type),
            ("$group_key", self.group_key),
            ("$group_set", self.group_set),
            ("$groups", self.groups),
        ]
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
    // `null` reads as `None`.
    let properties_text = match plain.properties.map(RawValue::get) {
        None => "{}",
        Some(object) if object.starts_with('{') => object,
        Some(_) => return None,
    };
    // Duplicate keys read here are an error, where the general way keeps
    // the last: such rare lines take that way.
    let properties: PlainProperties = serde_json::from_str(properties_text).ok()?;
    read_direct(&plain, &properties, properties_text, received_at_micros)
        .or_else(|| read_normalized(&plain, &properties, properties_text, received_at_micros))
}

/// Nearly every line: an event without identity facts whose values have
/// the usual types, read with the general way's rules but without building
/// any `Value`, and without copying strings that hold no escapes. `None`
/// for any other line, including those the general way rejects.
fn read_direct<'a>(
    plain: &PlainEvent<'a>,
    properties: &PlainProperties<'a>,
    properties_text: &'a str,
    received_at_micros: i64,
) -> Option<TextEvent<'a>> {
    if properties
        .identity_keys()
        .iter()
        .any(|(_, raw)| raw.is_some())
    {
        return None;
    }
    let event = event::non_blank_id(json_text(plain.event?)?)?;
    // The general way checks these events' identity properties.
    if matches!(
        event.as_ref(),
        "$create_alias" | "$merge_dangerously" | "$groupidentify"
    ) {
        return None;
    }
    let distinct_id = event::non_blank_id(json_text(plain.distinct_id?)?)?;
    // A blank id is no id; another type takes the general way.
    let uuid = match plain.uuid {
        None => None,
        Some(raw) => event::non_blank_id(json_text(raw)?),
    };
    let micros = match plain.timestamp {
        None => received_at_micros,
        Some(raw) => timestamp::parse_text(&json_text(raw)?)?,
    };
    let timestamp_micros = timestamp::check_range(i128::from(micros), received_at_micros).ok()?;
    let column = |raw: Option<&'a RawValue>| json_text(raw?).filter(|text| !text.is_empty());
    Some(TextEvent {
        uuid,
        event,
        distinct_id,
        timestamp_micros,
        session_id: column(properties.session_id),
        library: column(properties.lib),
        properties: Cow::Borrowed(properties_text),
        identity: None,
    })
}

/// A line with identity facts or values of other types: the general way
/// normalizes the event as if its properties held only the keys that
/// matter, so the facts are read exactly as it reads them, and the
/// properties stay the line's text. `None` if it rejects the event.
fn read_normalized<'a>(
    plain: &PlainEvent<'_>,
    properties: &PlainProperties<'_>,
    properties_text: &'a str,
    received_at_micros: i64,
) -> Option<TextEvent<'a>> {
    let properties = object(
        [
            ("$session_id", properties.session_id),
            ("$lib", properties.lib),
        ]
        .into_iter()
        .chain(properties.identity_keys()),
    )?;
    let event = object([
        ("uuid", plain.uuid),
        ("event", plain.event),
        ("distinct_id", plain.distinct_id),
        ("timestamp", plain.timestamp),
    ])?
    .into_iter()
    .chain([("properties".to_owned(), Value::Object(properties))])
    .collect();
    let event = crate::normalize_json_event(Value::Object(event), received_at_micros).ok()?;
    Some(TextEvent::with_properties(
        event,
        Cow::Borrowed(properties_text),
    ))
}

/// The keys present, their values parsed.
fn object<'a>(
    pairs: impl IntoIterator<Item = (&'static str, Option<&'a RawValue>)>,
) -> Option<Map<String, Value>> {
    pairs
        .into_iter()
        .filter_map(|(key, raw)| Some((key, raw?)))
        .map(|(key, raw)| Some((key.to_owned(), serde_json::from_str(raw.get()).ok()?)))
        .collect()
}

/// The text of a JSON string: a slice of the line when it holds no escape
/// (the parser checked it, so the slice is the text), else decoded. `None`
/// for other values.
fn json_text(raw: &RawValue) -> Option<Cow<'_, str>> {
    let quoted = raw.get();
    let inner = quoted.strip_prefix('"')?.strip_suffix('"')?;
    if inner.contains('\\') {
        serde_json::from_str(quoted).ok().map(Cow::Owned)
    } else {
        Some(Cow::Borrowed(inner))
    }
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
