//! Helpers shared by the engine's integration tests.

use plinth_ingest::EventInput;

/// An event of `distinct_id` at `at` (UTC microseconds), with a uuid
/// derived from all three so that each is distinct.
pub fn event(name: &str, distinct_id: &str, at: i64) -> EventInput {
    EventInput {
        uuid: Some(format!("{name}-{distinct_id}-{at}")),
        event: name.to_string(),
        distinct_id: distinct_id.to_string(),
        timestamp_micros: at,
        properties: "{}".to_string(),
        ..Default::default()
    }
}
