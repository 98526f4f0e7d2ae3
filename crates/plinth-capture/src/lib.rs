//! Decoding of PostHog and Segment capture payloads into normalized events.
//!
//! This crate owns the pure part of capture: given a request's path, query,
//! the headers that matter, body bytes and the time it was received, it
//! returns the events it carries (each either a [`NormalizedEvent`] or a
//! [`Rejected`] item for quarantine) or a [`CaptureError`] that maps to an
//! HTTP status. It decompresses (gzip found by magic bytes, lz-string,
//! base64, form bodies, GET `data=`) under size caps, corrects client clock
//! skew, maps Segment calls to PostHog event names, and extracts identity
//! facts (merges, `$set`, groups) without keeping any state.
//!
//! It must never do I/O or depend on the HTTP stack, the write-ahead log,
//! the store or the engine: the server and `plinth import` call it.
//!
//! Entry points: [`decode_posthog`], [`decode_segment`], and
//! [`normalize_json_event`] for one event read from a file, and
//! [`normalize_json_text`] for one line of text (what `plinth import` uses).

mod error;
mod event;
mod lzstring;
mod payload;
mod posthog;
mod segment;
mod text;
mod timestamp;

use serde_json::Value;

pub use error::{CaptureError, Limits};
pub use event::{DecodedRequest, GroupIdentify, NormalizedEvent, Rejected};
pub use posthog::decode_posthog;
pub use segment::{SEGMENT_DEFAULT_GROUP_TYPE, decode_segment};
pub use text::{IdentityFacts, TextEvent, normalize_json_text};

/// Normalizes one event read from a file (an NDJSON line for `plinth import`).
///
/// PostHog-shaped objects have `distinct_id` (or `$distinct_id`); Segment
/// messages have `type`, `userId` or `anonymousId`. An object with only
/// `event` is read as PostHog and rejected for its missing distinct id.
/// The same validation as capture applies, without size limits; per-event
/// `sent_at` / `sentAt` are skew-corrected against `received_at_micros`,
/// except for Segment records that carry `receivedAt` (exports), whose
/// `timestamp` Segment has already corrected.
pub fn normalize_json_event(
    value: Value,
    received_at_micros: i64,
) -> Result<NormalizedEvent, Rejected> {
    let Value::Object(object) = &value else {
        return Err(Rejected {
            reason: "event is not a JSON object".into(),
            raw: value.to_string(),
        });
    };
    let posthog_shaped = object.contains_key("distinct_id") || object.contains_key("$distinct_id");
    let segment_shaped = ["type", "userId", "anonymousId"]
        .iter()
        .any(|key| object.contains_key(*key));
    if posthog_shaped || (!segment_shaped && object.contains_key("event")) {
        let context = posthog::EventContext {
            received_at: received_at_micros,
            sent_at: None,
            engage: false,
            max_event_bytes: usize::MAX,
        };
        posthog::normalize_event(value, &context)
    } else if segment_shaped {
        let context = segment::MessageContext {
            received_at: received_at_micros,
            sent_at: None,
            batch_context: None,
            call: None,
            max_event_bytes: usize::MAX,
            exported: object.contains_key("receivedAt"),
        };
        segment::normalize_message(value, &context)
    } else {
        Err(Rejected {
            reason: "neither a PostHog event (event, distinct_id) nor a Segment message \
                     (type, userId or anonymousId)"
                .into(),
            raw: value.to_string(),
        })
    }
}
