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

/// `schema` with its `Utf8` fields as `Utf8View`: the form in which a table
/// also takes rows on append (see `Table::append`) and compaction moves
/// them, strings pointing into text already held.
pub fn strings_as_views(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|field| match field.data_type() {
            DataType::Utf8 => field.as_ref().clone().with_data_type(DataType::Utf8View),
            _ => field.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
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
        // The person's number (see `persons.person_num`): the same person as
        // `person_id`, in 8 bytes instead of 36, for scans that key on
        // persons by the million. Null in files written before it existed.
        Field::new("person_num", DataType::Int64, true),
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
        // The ids of persons merged into this one: their stored events still
        // carry those ids, and queries count them as this person. Null in
        // files written before the column existed.
        Field::new(
            "merged_person_ids",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            true,
        ),
        // A number unique to the person in this store, given in order of
        // creation and never reused; a merge keeps the survivor's. Null in
        // files written before the column existed.
        Field::new("person_num", DataType::Int64, true),
        // The numbers of the persons merged into this one, beside their ids.
        Field::new(
            "merged_person_nums",
            DataType::List(Arc::new(Field::new("item", DataType::Int64, true))),
            true,
        ),
    ]))
}

/// The `persons` checkpoint that counts persons with merged ids, written
/// with every replacement of the table: at 0 (the usual case, logins only
/// attach ids) readers need not open `persons` to resolve `person_id`.
pub const PERSONS_WITH_MERGES: &str = "persons_with_merges";

/// The namespace of person ids derived from distinct ids.
const PERSON_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x8c0f_7a2e_4d61_4c4b_9a57_1f43_62d9_0b15);

/// The id of a person first seen with `distinct_id`: a UUID (version 5)
/// derived from it, so the same input always yields the same ids.
pub fn derived_person_id(distinct_id: &str) -> String {
    uuid::Uuid::new_v5(&PERSON_NAMESPACE, distinct_id.as_bytes()).to_string()
}

/// For a `persons` row written before `merged_person_ids` existed: every id a
/// person merged into it could have had. A person's id derives from its
/// first distinct id and a merge moves every distinct id to the survivor,
/// so the merged-away ids are among those derived from the survivor's other
/// distinct ids (ids that were only attached were never persons; they
/// appear in no event and cost only a map entry).
pub fn possibly_merged_person_ids(person_id: &str, distinct_ids: &[String]) -> Vec<String> {
    distinct_ids
        .iter()
        .map(|id| derived_person_id(id))
        .filter(|id| id != person_id)
        .collect()
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
