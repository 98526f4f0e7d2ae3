//! One event read from a line of JSON text, its properties kept as text.
//!
//! `plinth import` is CPU-bound in this reading. Building a
//! `serde_json::Value` tree of each line, writing its properties back out
//! and copying its strings was most of that CPU, so events in PostHog's
//! plain file shape (`uuid`, `event`, `distinct_id`, `timestamp`,
//! `properties`, nothing else at the top) are read without the tree, in one
//! serde_json pass over the line: the properties object is visited for
//! `$session_id`, `$lib` and the keys identity facts come from, its other
//! values skipped, and its text is found from where the values around it
//! end, so it stays the client's text. (The SIMD parsers sonic-rs and
//! simd-json both read these lines, about 400 bytes of short values,
//! slower than serde_json does.) A scan of the line's `\`, `{` and `[`
//! before that sends the general way what skipping checks less than the
//! tree does, and tells whether any string can hold an escape.
//!
//! Nearly every such event has no identity facts and string values; it is
//! read with the general way's rules ([`crate::event::id_text`],
//! [`crate::timestamp::event_time`]) into slices of the line, copying only
//! strings that hold escapes. The others have just those keys normalized by
//! [`crate::normalize_json_event`], so their identity facts are exactly its
//! facts. Every other line (Segment, `sent_at`, top-level `$set`, a wrong
//! type, a rejection) takes the general way, [`crate::normalize_json_event`].

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
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

/// The event, if `text` is a plain PostHog event that normalizes without a
/// rejection; `None` sends it the general way.
fn read_plain(text: &str, received_at_micros: i64) -> Option<TextEvent<'_>> {
    let escapes = scan(text)?;
    let mut plain = PlainEvent::default();
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let visitor = PlainEventVisitor {
        text,
        plain: &mut plain,
    };
    deserializer.deserialize_map(visitor).ok()?;
    deserializer.end().ok()?;
    let properties_text = plain.properties_text.unwrap_or("{}");
    read_direct(&plain, properties_text, escapes, received_at_micros)
        .or_else(|| read_normalized(&plain, properties_text, received_at_micros))
}

/// Whether the strings of a line may hold escapes: none do in a line
/// without a `\`, so its strings need not be searched for one.
#[derive(Clone, Copy, PartialEq)]
enum Escapes {
    Absent,
    Present,
}

/// The deepest nesting serde_json (the general way's parser) reads.
const TREE_MAX_DEPTH: usize = 127;

/// Whether the line may hold escapes, or `None` if the parse below would
/// not check it as the general way does. Skipped values are checked less
/// than parsed ones: a lone surrogate escape makes the tree refuse the
/// line, and so does nesting deeper than it reads. So lines with text that
/// looks like a `\uD800`-`\uDFFF` escape, or nested that deep, take that
/// way. Only a line with more brackets than that has its depth measured.
fn scan(text: &str) -> Option<Escapes> {
    let bytes = text.as_bytes();
    let mut escapes = Escapes::Absent;
    let mut open_brackets = 0;
    for at in memchr::memchr3_iter(b'\\', b'{', b'[', bytes) {
        if bytes[at] == b'\\' {
            escapes = Escapes::Present;
            if matches!(
                bytes.get(at + 1..at + 4),
                Some([b'u', b'd' | b'D', b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F'])
            ) {
                return None;
            }
        } else {
            open_brackets += 1;
        }
    }
    (open_brackets <= TREE_MAX_DEPTH || nesting_depth(bytes) <= TREE_MAX_DEPTH).then_some(escapes)
}

/// How deep JSON text nests (brackets in its strings do not count).
fn nesting_depth(json: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0);
    let (mut in_string, mut escaped) = (false, false);
    for &byte in json {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match byte {
                b'"' => in_string = true,
                b'{' | b'[' => {
                    depth += 1;
                    deepest = deepest.max(depth);
                }
                b'}' | b']' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    deepest
}

/// A plain PostHog event, each value left as its text (`null` reads as
/// absent).
#[derive(Default)]
struct PlainEvent<'a> {
    uuid: Option<&'a RawValue>,
    event: Option<&'a RawValue>,
    distinct_id: Option<&'a RawValue>,
    timestamp: Option<&'a RawValue>,
    /// The properties object's text (`None` if absent or `null`).
    properties_text: Option<&'a str>,
    properties: PlainProperties<'a>,
}

/// The keys of a plain event; any other makes the line take the general way.
#[derive(Deserialize, Clone, Copy)]
#[serde(field_identifier, rename_all = "snake_case")]
enum PlainKey {
    Uuid,
    Event,
    DistinctId,
    Timestamp,
    Properties,
}

/// The properties that the event's columns (`$session_id`, `$lib`) and its
/// identity facts (the others, see [`crate::event::check_identity`] and
/// [`crate::event::finish`]) are read from; the rest are skipped.
#[derive(Default)]
struct PlainProperties<'a> {
    session_id: Option<&'a RawValue>,
    lib: Option<&'a RawValue>,
    set: Option<&'a RawValue>,
    set_once: Option<&'a RawValue>,
    anon_distinct_id: Option<&'a RawValue>,
    alias: Option<&'a RawValue>,
    group_type: Option<&'a RawValue>,
    group_key: Option<&'a RawValue>,
    group_set: Option<&'a RawValue>,
    groups: Option<&'a RawValue>,
}

/// The keys of [`PlainProperties`], and the others.
#[derive(Deserialize, Clone, Copy)]
#[serde(field_identifier)]
enum PropertyKey {
    #[serde(rename = "$session_id")]
    SessionId,
    #[serde(rename = "$lib")]
    Lib,
    #[serde(rename = "$set")]
    Set,
    #[serde(rename = "$set_once")]
    SetOnce,
    #[serde(rename = "$anon_distinct_id")]
    AnonDistinctId,
    #[serde(rename = "alias")]
    Alias,
    #[serde(rename = "$group_type")]
    GroupType,
    #[serde(rename = "$group_key")]
    GroupKey,
    #[serde(rename = "$group_set")]
    GroupSet,
    #[serde(rename = "$groups")]
    Groups,
    #[serde(other)]
    Other,
}

impl<'a> PlainProperties<'a> {
    /// The properties identity facts come from, with their keys.
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

/// Reads a plain event in one pass over its text. The properties object is
/// visited, not kept as a raw value, so its text is found from where the
/// values around it end (a `&RawValue` is a slice of the line): it starts
/// after the key that follows the value before it, and ends at the `}`
/// after its own last value.
struct PlainEventVisitor<'a, 'p> {
    text: &'a str,
    plain: &'p mut PlainEvent<'a>,
}

impl<'de> Visitor<'de> for PlainEventVisitor<'de, '_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a plain PostHog event")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let (text, plain) = (self.text, self.plain);
        let mut seen = 0u8;
        // Where the value before ends (at first, before the object's `{`).
        let mut read_to = 0;
        while let Some(key) = map.next_key::<PlainKey>()? {
            // The general way keeps the last of a key given twice: such rare
            // lines take that way.
            let bit = 1 << key as u8;
            if seen & bit != 0 {
                return Err(de::Error::custom("a key given twice"));
            }
            seen |= bit;
            let slot = match key {
                PlainKey::Uuid => &mut plain.uuid,
                PlainKey::Event => &mut plain.event,
                PlainKey::DistinctId => &mut plain.distinct_id,
                PlainKey::Timestamp => &mut plain.timestamp,
                PlainKey::Properties => {
                    let start = value_after_key(text, read_to).ok_or_else(not_in_line)?;
                    read_to = map.next_value_seed(PropertiesVisitor { text, start, plain })?;
                    continue;
                }
            };
            let raw: &RawValue = map.next_value()?;
            read_to = end_in(text, raw.get()).ok_or_else(not_in_line)?;
            *slot = present(raw);
        }
        Ok(())
    }
}

/// Reads the properties value, which starts at `start` in `text`: an object
/// (or `null`, read as absent). Gives where it ends.
struct PropertiesVisitor<'a, 'p> {
    text: &'a str,
    start: usize,
    plain: &'p mut PlainEvent<'a>,
}

impl<'de> DeserializeSeed<'de> for PropertiesVisitor<'de, '_> {
    type Value = usize;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<usize, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for PropertiesVisitor<'de, '_> {
    type Value = usize;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("an object or null")
    }

    fn visit_unit<E: de::Error>(self) -> Result<usize, E> {
        Ok(self.start + "null".len())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<usize, A::Error> {
        let (text, properties) = (self.text, &mut self.plain.properties);
        let mut seen = 0u16;
        // Where the last value ends (at first, inside the `{`).
        let mut read_to = self.start + 1;
        while let Some(key) = map.next_key::<PropertyKey>()? {
            let raw: &RawValue = map.next_value()?;
            read_to = end_in(text, raw.get()).ok_or_else(not_in_line)?;
            let slot = match key {
                PropertyKey::SessionId => &mut properties.session_id,
                PropertyKey::Lib => &mut properties.lib,
                PropertyKey::Set => &mut properties.set,
                PropertyKey::SetOnce => &mut properties.set_once,
                PropertyKey::AnonDistinctId => &mut properties.anon_distinct_id,
                PropertyKey::Alias => &mut properties.alias,
                PropertyKey::GroupType => &mut properties.group_type,
                PropertyKey::GroupKey => &mut properties.group_key,
                PropertyKey::GroupSet => &mut properties.group_set,
                PropertyKey::Groups => &mut properties.groups,
                PropertyKey::Other => continue,
            };
            // A key given twice (`null` or not): as above.
            let bit = 1 << key as u16;
            if seen & bit != 0 {
                return Err(de::Error::custom("a property given twice"));
            }
            seen |= bit;
            *slot = present(raw);
        }
        let end = skip_whitespace(text, read_to)
            .filter(|&at| text.as_bytes()[at] == b'}')
            .ok_or_else(not_in_line)?
            + 1;
        let object = text.get(self.start..end).ok_or_else(not_in_line)?;
        self.plain.properties_text = Some(object);
        Ok(end)
    }
}

/// `raw` unless it is `null`, which means absent to every field read here.
fn present(raw: &RawValue) -> Option<&RawValue> {
    (raw.get() != "null").then_some(raw)
}

/// Where the value starts of the key that follows offset `at` of `text`
/// (past a `{` or `,`, the key and its `:`). The parser has read that far,
/// so the text there is JSON.
fn value_after_key(text: &str, at: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let punctuation = skip_whitespace(text, at)?;
    let mut at = skip_whitespace(text, punctuation + 1)? + 1;
    // The key's closing quote is the first one not escaped.
    while *bytes.get(at)? != b'"' {
        at += if bytes[at] == b'\\' { 2 } else { 1 };
    }
    let colon = skip_whitespace(text, at + 1)?;
    skip_whitespace(text, colon + 1)
}

/// The first offset from `at` on that is not JSON whitespace.
fn skip_whitespace(text: &str, at: usize) -> Option<usize> {
    let skipped = text.as_bytes().get(at..)?;
    let blank = skipped
        .iter()
        .take_while(|byte| matches!(byte, b' ' | b'\t' | b'\n' | b'\r'))
        .count();
    Some(at + blank).filter(|&at| at < text.len())
}

/// Where `part`, a slice of `text`, ends in it.
fn end_in(text: &str, part: &str) -> Option<usize> {
    let start = part.as_ptr().addr().checked_sub(text.as_ptr().addr())?;
    let end = start + part.len();
    (end <= text.len()).then_some(end)
}

/// What a position that is not in the line would be: never, as the parser
/// lends every raw value from the line and has read the text around them.
fn not_in_line<E: de::Error>() -> E {
    E::custom("a value not read from the line")
}

/// Nearly every line: an event without identity facts whose values have
/// the usual types, read with the general way's rules but without building
/// any `Value`, and without copying strings that hold no escapes. `None`
/// for any other line, including those the general way rejects.
fn read_direct<'a>(
    plain: &PlainEvent<'a>,
    properties_text: &'a str,
    escapes: Escapes,
    received_at_micros: i64,
) -> Option<TextEvent<'a>> {
    let properties = &plain.properties;
    if properties
        .identity_keys()
        .iter()
        .any(|(_, raw)| raw.is_some())
    {
        return None;
    }
    let event = event::non_blank_id(json_text(plain.event?, escapes)?)?;
    // The general way checks these events' identity properties.
    if matches!(
        event.as_ref(),
        "$create_alias" | "$merge_dangerously" | "$groupidentify"
    ) {
        return None;
    }
    let distinct_id = event::non_blank_id(json_text(plain.distinct_id?, escapes)?)?;
    // A blank id is no id; another type takes the general way.
    let uuid = match plain.uuid {
        None => None,
        Some(raw) => event::non_blank_id(json_text(raw, escapes)?),
    };
    let micros = match plain.timestamp {
        None => received_at_micros,
        Some(raw) => timestamp::parse_text(&json_text(raw, escapes)?)?,
    };
    let timestamp_micros = timestamp::check_range(i128::from(micros), received_at_micros).ok()?;
    let column =
        |raw: Option<&'a RawValue>| json_text(raw?, escapes).filter(|text| !text.is_empty());
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
    properties_text: &'a str,
    received_at_micros: i64,
) -> Option<TextEvent<'a>> {
    let properties = object(
        [
            ("$session_id", plain.properties.session_id),
            ("$lib", plain.properties.lib),
        ]
        .into_iter()
        .chain(plain.properties.identity_keys()),
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
fn json_text(raw: &RawValue, escapes: Escapes) -> Option<Cow<'_, str>> {
    let quoted = raw.get();
    let inner = quoted.strip_prefix('"')?.strip_suffix('"')?;
    if escapes == Escapes::Present && inner.contains('\\') {
        serde_json::from_str(quoted).ok().map(Cow::Owned)
    } else {
        Some(Cow::Borrowed(inner))
    }
}
