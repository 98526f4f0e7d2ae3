//! The normalized event and the identity facts read from it.
//!
//! Both formats are first brought to PostHog's shape (event name,
//! distinct id, properties with `$set`, `$anon_distinct_id`, `alias`,
//! `$group_*`); [`finish`] then reads the identity facts the same way for
//! both.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// PostHog truncates event names and distinct ids to this many characters.
const MAX_ID_CHARS: usize = 200;

/// Distinct ids that clients send by mistake (unset variables, placeholders).
/// Merging on them would join unrelated people into one, so no merge fact is
/// produced for them. The list is PostHog's (`isDistinctIdIllegal` in its
/// person processing).
const PLACEHOLDER_IDS: [&str; 16] = [
    "anonymous",
    "guest",
    "distinctid",
    "distinct_id",
    "id",
    "not_authenticated",
    "email",
    "undefined",
    "true",
    "false",
    "0",
    "[object object]",
    "nan",
    "none",
    "null",
    "nil",
];

/// One event, decoded, validated and in PostHog's vocabulary.
#[derive(Debug, Clone, PartialEq)]
pub struct NormalizedEvent {
    /// PostHog `uuid` or Segment `messageId`: the deduplication key. `None`
    /// when the client sent none.
    pub uuid: Option<String>,
    /// Event name; Segment calls map to `$pageview`, `$screen`, `$identify`,
    /// `$create_alias`, `$groupidentify`, and track to its own name.
    pub event: String,
    /// PostHog `distinct_id`; Segment `userId`, else `anonymousId`.
    pub distinct_id: String,
    /// Event time in UTC microseconds, after clock-skew correction.
    pub timestamp_micros: i64,
    /// `properties.$session_id`.
    pub session_id: Option<String>,
    /// Event properties. For Segment: the call's properties (or traits in
    /// `$set` / `$group_set`), context fields under PostHog names (`$lib`,
    /// `$ip`, `$current_url`, `$os`, `utm_source`, …) and the whole merged
    /// context under `"context"`.
    pub properties: Map<String, Value>,
    /// `$lib` (PostHog) or `context.library.name` (Segment).
    pub library: Option<String>,
    /// Person properties to set (`$set`, top-level `$set` on /engage,
    /// Segment identify traits).
    pub set: Option<Map<String, Value>>,
    /// Person properties to set only if unset (`$set_once`).
    pub set_once: Option<Map<String, Value>>,
    /// Two distinct ids that belong to one person: `(distinct_id, other)`
    /// from `$identify` + `$anon_distinct_id`, `$create_alias` /
    /// `$merge_dangerously` + `alias`, Segment identify (userId,
    /// anonymousId) and alias (userId, previousId). `None` when both ids are
    /// equal or one is a placeholder such as `"null"` or `"anonymous"`.
    pub merge: Option<(String, String)>,
    /// Group properties from `$groupidentify` / Segment group.
    pub group: Option<GroupIdentify>,
    /// Groups the event belongs to: `properties.$groups` (group type → key).
    pub groups: BTreeMap<String, String>,
}

impl NormalizedEvent {
    /// The event as a PostHog-shaped object that [`crate::normalize_json_event`]
    /// reads back into an equal event. A refused event is kept in quarantine
    /// in this shape, so that replay after a fix treats it like any other.
    pub fn to_posthog_json(&self) -> Value {
        let mut object = Map::new();
        if let Some(uuid) = &self.uuid {
            object.insert("uuid".into(), Value::String(uuid.clone()));
        }
        object.insert("event".into(), Value::String(self.event.clone()));
        object.insert(
            "distinct_id".into(),
            Value::String(self.distinct_id.clone()),
        );
        object.insert(
            "timestamp".into(),
            Value::String(crate::timestamp::format_micros(self.timestamp_micros)),
        );
        object.insert("properties".into(), Value::Object(self.properties.clone()));
        Value::Object(object)
    }
}

/// A `$groupidentify`: set properties on one group.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupIdentify {
    /// `$group_type`, e.g. `"company"`; Segment: `traits.group_type`, else
    /// [`crate::SEGMENT_DEFAULT_GROUP_TYPE`].
    pub group_type: String,
    /// `$group_key`; Segment: `groupId`.
    pub group_key: String,
    /// `$group_set`; Segment: the group call's traits.
    pub set: Map<String, Value>,
}

/// A readable event that cannot be stored as it is. The server quarantines
/// it with its reason and stores the rest of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Why, in words for a person (e.g. `"missing distinct_id"`).
    pub reason: String,
    /// The event exactly as decoded, serialized as compact JSON.
    pub raw: String,
}

/// A decoded capture request.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedRequest {
    /// The project key: PostHog `api_key` / `token` / `$token` /
    /// `properties.token`, Segment Basic-auth user or `writeKey`. Always
    /// `Some` when decoding succeeded (a request without one is
    /// `Err(CaptureError::Unauthorized)`); it is an `Option` so a caller that
    /// builds requests from other sources can leave it empty.
    pub token: Option<String>,
    /// One entry per event of the request, in order.
    pub events: Vec<Result<NormalizedEvent, Rejected>>,
    /// `?beacon=1`: the server answers 204 instead of 200.
    pub beacon: bool,
    /// PostHog batch `historical_migration`: a backfill, not live traffic.
    pub historical_migration: bool,
}

/// An id as clients send it: a non-blank string, or a number or boolean
/// written as text (PostHog accepts numeric distinct ids). Truncated to
/// PostHog's 200 characters.
pub(crate) fn id_text(value: Option<&Value>) -> Option<String> {
    let text = match value? {
        Value::String(s) => return non_blank_id(Cow::Borrowed(s)).map(Cow::into_owned),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => return None,
    };
    Some(truncate_id(Cow::Owned(text)).into_owned())
}

/// A string id as [`id_text`] reads it: not blank, truncated. A borrowed
/// text stays borrowed.
pub(crate) fn non_blank_id(text: Cow<'_, str>) -> Option<Cow<'_, str>> {
    (!text.trim().is_empty()).then(|| truncate_id(text))
}

/// Truncates an id or event name to PostHog's 200 characters. A borrowed
/// text stays borrowed, so that a line read as text is not copied.
fn truncate_id(text: Cow<'_, str>) -> Cow<'_, str> {
    // No more bytes is no more characters: nearly every id, not counted.
    if text.len() <= MAX_ID_CHARS {
        return text;
    }
    let Some((cut, _)) = text.char_indices().nth(MAX_ID_CHARS) else {
        return text;
    };
    match text {
        Cow::Borrowed(text) => Cow::Borrowed(&text[..cut]),
        Cow::Owned(mut text) => {
            text.truncate(cut);
            Cow::Owned(text)
        }
    }
}

/// Truncates an event name the way PostHog does.
pub(crate) fn event_name(text: &str) -> String {
    truncate_id(Cow::Borrowed(text)).into_owned()
}

fn is_placeholder(id: &str) -> bool {
    let lowered = id.trim().to_lowercase();
    PLACEHOLDER_IDS.contains(&lowered.as_str())
}

fn merge_pair(distinct_id: &str, other: Option<String>) -> Option<(String, String)> {
    let other = other?;
    (other != distinct_id && !is_placeholder(distinct_id) && !is_placeholder(&other))
        .then(|| (distinct_id.to_owned(), other))
}

fn object_property(properties: &Map<String, Value>, key: &str) -> Option<Map<String, Value>> {
    match properties.get(key) {
        Some(Value::Object(object)) => Some(object.clone()),
        _ => None,
    }
}

/// The fields every format provides before identity facts are read.
pub(crate) struct EventParts {
    pub(crate) uuid: Option<String>,
    pub(crate) event: String,
    pub(crate) distinct_id: String,
    pub(crate) timestamp_micros: i64,
    pub(crate) properties: Map<String, Value>,
}

/// Why an event's identity facts are unusable, if they are: an alias or a
/// group identify missing its other half. [`finish`] reads only events that
/// passed this check.
pub(crate) fn check_identity(event: &str, properties: &Map<String, Value>) -> Result<(), String> {
    let present = |key: &str| id_text(properties.get(key)).is_some();
    match event {
        "$create_alias" | "$merge_dangerously" if !present("alias") => {
            Err(format!("{event} without properties.alias"))
        }
        "$groupidentify" if !matches!(properties.get("$group_type"), Some(Value::String(t)) if !t.is_empty()) => {
            Err("$groupidentify without properties.$group_type".into())
        }
        "$groupidentify" if !present("$group_key") => {
            Err("$groupidentify without properties.$group_key".into())
        }
        _ => Ok(()),
    }
}

/// Reads the identity facts out of PostHog-shaped properties that passed
/// [`check_identity`].
pub(crate) fn finish(parts: EventParts) -> NormalizedEvent {
    let EventParts {
        uuid,
        event,
        distinct_id,
        timestamp_micros,
        properties,
    } = parts;
    let string_property = |key: &str| match properties.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };

    let merge = match event.as_str() {
        "$identify" => merge_pair(&distinct_id, id_text(properties.get("$anon_distinct_id"))),
        "$create_alias" | "$merge_dangerously" => {
            merge_pair(&distinct_id, id_text(properties.get("alias")))
        }
        _ => None,
    };

    let group = match (
        event.as_str(),
        string_property("$group_type"),
        id_text(properties.get("$group_key")),
    ) {
        ("$groupidentify", Some(group_type), Some(group_key)) => Some(GroupIdentify {
            group_type,
            group_key,
            set: object_property(&properties, "$group_set").unwrap_or_default(),
        }),
        _ => None,
    };

    let groups = match properties.get("$groups") {
        Some(Value::Object(groups)) => groups
            .iter()
            .filter_map(|(group_type, key)| Some((group_type.clone(), id_text(Some(key))?)))
            .collect(),
        _ => BTreeMap::new(),
    };

    NormalizedEvent {
        uuid,
        session_id: string_property("$session_id"),
        library: string_property("$lib"),
        set: object_property(&properties, "$set"),
        set_once: object_property(&properties, "$set_once"),
        merge,
        group,
        groups,
        event,
        distinct_id,
        timestamp_micros,
        properties,
    }
}

/// Normalizes one event in two steps: `check` reads it by reference and
/// says why it is unusable, if it is; only then does `build` take it apart.
/// So the raw text a rejection keeps is serialized for rejected events only.
pub(crate) fn check_then_build<Checked>(
    item: Value,
    check: impl FnOnce(&Map<String, Value>) -> Result<Checked, String>,
    build: impl FnOnce(Checked, Map<String, Value>) -> NormalizedEvent,
    max_event_bytes: usize,
) -> Result<NormalizedEvent, Rejected> {
    let checked = match check_size_and_shape(&item, max_event_bytes).and_then(check) {
        Ok(checked) => checked,
        Err(reason) => {
            return Err(Rejected {
                reason,
                raw: item.to_string(),
            });
        }
    };
    match item {
        Value::Object(object) => Ok(build(checked, object)),
        _ => unreachable!("check_size_and_shape accepts only objects"),
    }
}

/// An event must be an object no larger than the limit.
fn check_size_and_shape(
    item: &Value,
    max_event_bytes: usize,
) -> Result<&Map<String, Value>, String> {
    if max_event_bytes < usize::MAX {
        let size = json_len(item);
        if size > max_event_bytes {
            return Err(format!(
                "event of {size} bytes exceeds the {max_event_bytes}-byte limit"
            ));
        }
    }
    match item {
        Value::Object(object) => Ok(object),
        _ => Err("event is not a JSON object".into()),
    }
}

/// The length of `value` as compact JSON, counted without building the text.
fn json_len(value: &Value) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Writing a `Value` to a sink that never fails cannot fail.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}
