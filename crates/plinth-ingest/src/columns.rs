//! Imported events as Arrow columns whose strings stay in the text they
//! were read from.
//!
//! An import reads a chunk of NDJSON into one buffer. Copying each event's
//! strings out of it, into owned events and then into Arrow builders in
//! file order, was a third of an import's CPU, much of it the kernel
//! zeroing fresh pages for the copies. Here each string is a view
//! (`Utf8View`) into the chunk's text, or into a decoder's own text where
//! the parser rewrote it (escapes, lines read the general way) or made it
//! (ids of events sent without one). Grouping rows by day (the store's
//! writer) then moves 16-byte views, and the Parquet writer reads the
//! strings where they lie.

use std::ops::Range;
use std::sync::Arc;

use anyhow::Result;
use datafusion::arrow::array::{
    ArrayRef, Int64Array, RecordBatch, StringViewArray, StringViewBuilder,
    TimestampMicrosecondArray, make_view,
};
use datafusion::arrow::buffer::{Buffer, NullBuffer, ScalarBuffer};
use plinth_capture::TextEvent;
use serde_json::{Map, Value};

use crate::groups::GroupUpdate;
use crate::identity::PersonRef;
use crate::rows::{IdentityRef, Ingestor, new_event_id, other_id};

/// The buffer index of the chunk's text in every view.
const CHUNK_TEXT: u32 = 0;

/// Strings up to this length live in the view itself.
const INLINE_BYTES: usize = 12;

/// One decoder's share of a chunk's events, in the order they were read.
#[derive(Debug, Default)]
pub(crate) struct EventColumns {
    /// The buffer index of `own_text`: the chunk's text is buffer 0, and
    /// each decoder of a chunk has its own index after it.
    buffer_index: u32,
    uuid: Vec<u128>,
    event: Vec<u128>,
    distinct_id: Vec<u128>,
    timestamp: Vec<i64>,
    session_id: Vec<u128>,
    has_session_id: Vec<bool>,
    library: Vec<u128>,
    has_library: Vec<bool>,
    properties: Vec<u128>,
    /// What the few events that say anything of persons or groups say,
    /// with their row.
    facts: Vec<(usize, PersonFacts)>,
    /// Text that is not in the chunk's: rewritten by the parser, or made.
    own_text: Vec<u8>,
    /// Where the chunk's text was (address and length) when the events
    /// were read from it: the views are only valid over that text.
    chunk_text: Option<(usize, usize)>,
}

/// What one event says of persons and groups.
#[derive(Debug)]
struct PersonFacts {
    merge_with: Option<String>,
    set: Option<Map<String, Value>>,
    set_once: Option<Map<String, Value>>,
    group: Option<GroupUpdate>,
}

impl PersonFacts {
    fn identity<'a>(&'a self, distinct_id: &'a str, timestamp_micros: i64) -> IdentityRef<'a> {
        IdentityRef {
            distinct_id,
            timestamp_micros,
            merge_with: self.merge_with.as_deref(),
            set: self.set.as_ref(),
            set_once: self.set_once.as_ref(),
            group: self.group.as_ref(),
        }
    }
}

impl EventColumns {
    /// Empties the columns, keeping their memory, for the decoder with
    /// `buffer_index` (see [`EventColumns::buffer_index`]).
    pub fn reset(&mut self, buffer_index: u32) {
        self.buffer_index = buffer_index;
        self.uuid.clear();
        self.event.clear();
        self.distinct_id.clear();
        self.timestamp.clear();
        self.session_id.clear();
        self.has_session_id.clear();
        self.library.clear();
        self.has_library.clear();
        self.properties.clear();
        self.facts.clear();
        self.own_text.clear();
        self.chunk_text = None;
    }

    pub fn len(&self) -> usize {
        self.timestamp.len()
    }

    pub fn reserve(&mut self, rows: usize) {
        for column in [
            &mut self.uuid,
            &mut self.event,
            &mut self.distinct_id,
            &mut self.session_id,
            &mut self.library,
            &mut self.properties,
        ] {
            column.reserve(rows);
        }
        self.timestamp.reserve(rows);
        self.has_session_id.reserve(rows);
        self.has_library.reserve(rows);
    }

    /// Adds `event`, read from `text` (the chunk's text).
    pub fn push(&mut self, text: &[u8], event: TextEvent<'_>) {
        let read_from = (text.as_ptr() as usize, text.len());
        assert!(
            self.chunk_text.is_none_or(|before| before == read_from),
            "a decoder's events come from one chunk"
        );
        self.chunk_text = Some(read_from);
        let row = self.len();
        let uuid = match &event.uuid {
            Some(id) => self.view(text, id),
            None => self.own_view(&new_event_id()),
        };
        self.uuid.push(uuid);
        let name = self.view(text, &event.event);
        self.event.push(name);
        let distinct_id = self.view(text, &event.distinct_id);
        self.distinct_id.push(distinct_id);
        self.timestamp.push(event.timestamp_micros);
        let session_id = event.session_id.as_ref().map(|s| self.view(text, s));
        self.session_id.push(session_id.unwrap_or_default());
        self.has_session_id.push(session_id.is_some());
        let library = event.library.as_ref().map(|l| self.view(text, l));
        self.library.push(library.unwrap_or_default());
        self.has_library.push(library.is_some());
        let properties = self.view(text, &event.properties);
        self.properties.push(properties);
        if let Some(facts) = event.identity {
            let facts = *facts;
            self.facts.push((
                row,
                PersonFacts {
                    merge_with: other_id(facts.merge, &event.distinct_id),
                    set: facts.set,
                    set_once: facts.set_once,
                    group: facts.group.map(GroupUpdate::from),
                },
            ));
        }
    }

    /// A view of `value`: into `text` when it is a slice of it, else into
    /// the decoder's own text.
    fn view(&mut self, text: &[u8], value: &str) -> u128 {
        if value.len() <= INLINE_BYTES {
            return make_view(value.as_bytes(), CHUNK_TEXT, 0);
        }
        match within(text, value) {
            Some(range) => make_view(value.as_bytes(), CHUNK_TEXT, offset(range.start)),
            None => self.own_view(value),
        }
    }

    fn own_view(&mut self, value: &str) -> u128 {
        let start = self.own_text.len();
        self.own_text.extend_from_slice(value.as_bytes());
        make_view(value.as_bytes(), self.buffer_index, offset(start))
    }
}

/// A view's offset. Chunks are read in pieces of at most
/// [`crate::import::CHUNK_TEXT_BYTES`], and a decoder's own text is about
/// as long as its share of them.
fn offset(at: usize) -> u32 {
    u32::try_from(at).expect("chunk text under 4 GiB")
}

/// Where `part` lies in `text`, if it is a slice of it (the parser borrows
/// from the line, or hands out a constant such as `{}`).
fn within(text: &[u8], part: &str) -> Option<Range<usize>> {
    let start = (part.as_ptr() as usize).checked_sub(text.as_ptr() as usize)?;
    let end = start + part.len();
    (end <= text.len()).then_some(start..end)
}

/// A chunk's events as arrays, in the order they were read.
pub(crate) struct ChunkEvents<'a> {
    parts: &'a [EventColumns],
    timestamp: Vec<i64>,
    uuid: StringViewArray,
    event: StringViewArray,
    distinct_id: StringViewArray,
    session_id: StringViewArray,
    library: StringViewArray,
    properties: StringViewArray,
}

impl<'a> ChunkEvents<'a> {
    /// The events of `parts` (whose buffer indices are 1, 2, ... in order),
    /// read from `text`.
    ///
    /// # Panics
    /// If `text` is not the text the parts were read from, or the parts
    /// are out of order: their views would point into the wrong bytes.
    pub fn new(text: &Buffer, parts: &'a [EventColumns]) -> ChunkEvents<'a> {
        for (index, part) in parts.iter().enumerate() {
            assert_eq!(part.buffer_index as usize, index + 1, "parts in order");
            assert!(
                part.chunk_text
                    .is_none_or(|read_from| read_from == (text.as_ptr() as usize, text.len())),
                "parts read from this text"
            );
        }
        let mut buffers = vec![text.clone()];
        buffers.extend(
            parts
                .iter()
                .map(|part| Buffer::from_slice_ref(&part.own_text)),
        );
        let column = |views: fn(&EventColumns) -> &Vec<u128>,
                      valid: Option<fn(&EventColumns) -> &Vec<bool>>|
         -> StringViewArray {
            let views: ScalarBuffer<u128> = parts
                .iter()
                .flat_map(|part| views(part).iter().copied())
                .collect();
            let nulls = valid.map(|valid| {
                NullBuffer::from_iter(parts.iter().flat_map(|part| valid(part).iter().copied()))
            });
            // SAFETY: every view was made by `make_view` from a `&str`
            // that lies at its offset in its buffer: the chunk's text (the
            // very bytes, as checked above, which do not change: a mapped
            // file's are the import's to keep still, see
            // `import::map_window`) or the part's own text (appended
            // `&str`s), at the index checked above. Validating them again
            // was a twentieth of an import's CPU.
            unsafe { StringViewArray::new_unchecked(views, buffers.clone(), nulls) }
        };
        ChunkEvents {
            parts,
            timestamp: parts
                .iter()
                .flat_map(|part| part.timestamp.iter().copied())
                .collect(),
            uuid: column(|p| &p.uuid, None),
            event: column(|p| &p.event, None),
            distinct_id: column(|p| &p.distinct_id, None),
            session_id: column(|p| &p.session_id, Some(|p| &p.has_session_id)),
            library: column(|p| &p.library, Some(|p| &p.has_library)),
            properties: column(|p| &p.properties, None),
        }
    }

    /// What each event says of its person, in order.
    pub fn identities(&self) -> impl Iterator<Item = IdentityRef<'_>> {
        // Rows are numbered across parts.
        let mut first = 0;
        let mut facts: Vec<(usize, &PersonFacts)> = Vec::new();
        for part in self.parts {
            facts.extend(part.facts.iter().map(|(row, facts)| (first + row, facts)));
            first += part.len();
        }
        let mut facts = facts.into_iter().peekable();
        self.timestamp.iter().enumerate().map(move |(row, &at)| {
            let distinct_id = self.distinct_id.value(row);
            match facts.next_if(|(with, _)| *with == row) {
                Some((_, facts)) => facts.identity(distinct_id, at),
                None => IdentityRef::plain(distinct_id, at),
            }
        })
    }
}

impl Ingestor {
    /// The `events` rows of a chunk's decoded events, in the order they
    /// were read (the store groups a staged file's rows by day), their
    /// strings left in place.
    pub(crate) fn chunk_batch(
        &self,
        text: &Buffer,
        parts: &[EventColumns],
        received_at_micros: i64,
    ) -> Result<RecordBatch> {
        let chunk = ChunkEvents::new(text, parts);
        let persons: Vec<PersonRef> = self.apply_identities_of(chunk.identities());
        let rows = persons.len();
        let mut person_id = StringViewBuilder::with_capacity(rows);
        for person in &persons {
            person_id.append_value(&person.id);
        }
        let ChunkEvents {
            timestamp,
            uuid,
            event,
            distinct_id,
            session_id,
            library,
            properties,
            ..
        } = chunk;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(uuid),
            Arc::new(event),
            Arc::new(distinct_id),
            Arc::new(person_id.finish()),
            Arc::new(TimestampMicrosecondArray::from(timestamp).with_timezone("UTC")),
            Arc::new(
                TimestampMicrosecondArray::from_value(received_at_micros, rows)
                    .with_timezone("UTC"),
            ),
            Arc::new(session_id),
            Arc::new(properties),
            Arc::new(library),
            Arc::new(Int64Array::from_iter_values(
                persons.iter().map(|person| person.num),
            )),
        ];
        let schema = plinth_store::schema::strings_as_views(&plinth_store::schema::events());
        Ok(RecordBatch::try_new(schema, columns)?)
    }

    /// Applies what a chunk's decoded events say of persons and groups,
    /// building no rows.
    pub(crate) fn apply_chunk_identities(&self, text: &Buffer, parts: &[EventColumns]) {
        let chunk = ChunkEvents::new(text, parts);
        self.apply_identities_of(chunk.identities());
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Array, ByteView};

    use super::*;

    /// Reads `lines` as one decoder of a chunk would.
    fn decode(text: &str) -> EventColumns {
        let mut part = EventColumns::default();
        part.reset(1);
        for line in text.lines() {
            let event = plinth_capture::normalize_json_text(line, 1_700_000_000_000_000).unwrap();
            part.push(text.as_bytes(), event);
        }
        part
    }

    /// Which buffer each long string of `array` lies in.
    fn buffers_of(array: &StringViewArray) -> Vec<Option<u32>> {
        array
            .views()
            .iter()
            .zip(array.iter())
            .map(|(&view, value)| {
                let long = value.is_some_and(|v| v.len() > INLINE_BYTES);
                long.then(|| ByteView::from(view).buffer_index)
            })
            .collect()
    }

    #[test]
    fn strings_stay_in_the_chunk_text_unless_rewritten_or_made() {
        let text: String = concat!(
            r#"{"uuid":"0190e0a4-0000-7000-8000-000000000009","event":"a long event name","distinct_id":"person-number-one","properties":{"$session_id":"session-number-one","$lib":"posthog-python","plan":"pro"}}"#,
            "\n",
            r#"{"event":"b","distinct_id":"u\u0041-escaped-distinct-id","properties":{"$set":{"plan":"team"}}}"#,
            "\n",
            r#"{"type":"track","event":"Segment Shaped Event","userId":"segment-user-1","messageId":"segment-message-000001"}"#,
        )
        .to_owned();
        let part = decode(&text);
        // The text moves into the buffer, as an import's does.
        let chunk_text = Buffer::from_vec(text.into_bytes());
        let parts = [part];
        let chunk = ChunkEvents::new(&chunk_text, &parts);

        assert_eq!(
            chunk.properties.value(0),
            r#"{"$session_id":"session-number-one","$lib":"posthog-python","plan":"pro"}"#
        );
        assert_eq!(chunk.distinct_id.value(1), "uA-escaped-distinct-id");
        assert_eq!(chunk.event.value(2), "Segment Shaped Event");
        // The plain line's strings point into the chunk's text (buffer 0);
        // the escaped id, the made uuid and the Segment line's rewritten
        // strings into the decoder's own (buffer 1).
        assert_eq!(buffers_of(&chunk.uuid), [Some(0), Some(1), Some(1)]);
        assert_eq!(buffers_of(&chunk.distinct_id), [Some(0), Some(1), Some(1)]);
        assert_eq!(buffers_of(&chunk.session_id), [Some(0), None, None]);
        assert_eq!(buffers_of(&chunk.properties)[0], Some(0));
        assert_eq!(
            (chunk.session_id.null_count(), chunk.library.is_null(0)),
            (2, false)
        );
        assert_eq!(chunk.uuid.value(1).len(), 36);

        // Only the second event says something of its person.
        let identities: Vec<IdentityRef> = chunk.identities().collect();
        assert_eq!(identities.len(), 3);
        assert!(identities[0].set.is_none() && identities[2].set.is_none());
        assert_eq!(
            identities[1].set.and_then(|set| set.get("plan")),
            Some(&Value::from("team"))
        );
        assert_eq!(identities[2].distinct_id, "segment-user-1");
    }

    #[test]
    #[should_panic(expected = "parts read from this text")]
    fn views_over_other_text_are_refused() {
        let text = r#"{"event":"a long event name","distinct_id":"person-number-one"}"#;
        let parts = [decode(text)];
        ChunkEvents::new(&Buffer::from_vec(text.as_bytes().to_vec()), &parts);
    }
}
