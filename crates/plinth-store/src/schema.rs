//! The schemas of the store's tables.
//!
//! Timestamps are UTC microseconds. `properties` columns hold a JSON object as
//! text; SQL reads them with the JSON functions (`properties->>'plan'`).

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// The type of every timestamp column in the store.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// `events`: one row per captured or imported event.
pub fn events() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("uuid", DataType::Utf8, false),
        Field::new("event", DataType::Utf8, false),
        Field::new("distinct_id", DataType::Utf8, false),
        Field::new("person_id", DataType::Utf8, false),
        Field::new("timestamp", timestamp_type(), false),
        Field::new("received_at", timestamp_type(), false),
        Field::new("session_id", DataType::Utf8, true),
        Field::new("properties", DataType::Utf8, false),
        Field::new("lib", DataType::Utf8, true),
    ]))
}

/// `persons`: one row per person, with every distinct id that resolves to it.
pub fn persons() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("person_id", DataType::Utf8, false),
        Field::new(
            "distinct_ids",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            false,
        ),
        Field::new("properties", DataType::Utf8, false),
        Field::new("created_at", timestamp_type(), false),
    ]))
}

/// `groups`: one row per group (a company, a team, ...) that a
/// `$groupidentify` or Segment `group` call described, with its properties.
/// Events name their groups in `properties.$groups` (group type to key).
pub fn groups() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("group_type", DataType::Utf8, false),
        Field::new("group_key", DataType::Utf8, false),
        Field::new("properties", DataType::Utf8, false),
        Field::new("created_at", timestamp_type(), false),
    ]))
}

/// `quarantine`: events that could be read but not accepted, with the reason.
pub fn quarantine() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("received_at", timestamp_type(), false),
        Field::new("source", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("payload", DataType::Utf8, false),
    ]))
}
