//! Events in, Arrow rows of `events`, `persons` and `quarantine` out.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use datafusion::arrow::array::{
    Array, Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use plinth_store::Store;
use serde_json::{Map, Value};

use crate::groups::{GroupUpdate, Groups};
use crate::identity::{Identities, PersonRef};

/// An accepted event, as every source hands it over.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventInput {
    /// The client's dedup key (PostHog `uuid`, Segment `messageId`); a new
    /// time-ordered UUID is assigned when absent.
    pub uuid: Option<String>,
    pub event: String,
    pub distinct_id: String,
    /// UTC microseconds, after clock-skew correction.
    pub timestamp_micros: i64,
    pub session_id: Option<String>,
    /// The event's properties as JSON object text.
    pub properties: String,
    pub lib: Option<String>,
    /// Person properties to overwrite (`$set`) and to set once (`$set_once`).
    pub set: Option<Map<String, Value>>,
    pub set_once: Option<Map<String, Value>>,
    /// Another distinct id of the same person (`$anon_distinct_id`, an alias).
    pub merge_with: Option<String>,
    /// Properties of a group (`$groupidentify`, Segment `group`).
    pub group: Option<GroupUpdate>,
}

impl From<plinth_capture::NormalizedEvent> for EventInput {
    fn from(event: plinth_capture::NormalizedEvent) -> Self {
        let properties = Value::Object(event.properties).to_string();
        EventInput {
            uuid: event.uuid,
            properties,
            merge_with: other_id(event.merge, &event.distinct_id),
            event: event.event,
            distinct_id: event.distinct_id,
            timestamp_micros: event.timestamp_micros,
            session_id: event.session_id,
            lib: event.library,
            set: event.set,
            set_once: event.set_once,
            group: event.group.map(GroupUpdate::from),
        }
    }
}

impl EventInput {
    pub(crate) fn identity(&self) -> IdentityRef<'_> {
        IdentityRef {
            distinct_id: &self.distinct_id,
            timestamp_micros: self.timestamp_micros,
            merge_with: self.merge_with.as_deref(),
            set: self.set.as_ref(),
            set_once: self.set_once.as_ref(),
            group: self.group.as_ref(),
        }
    }
}

/// The id of a merge pair that is not the event's own.
pub(crate) fn other_id(merge: Option<(String, String)>, distinct_id: &str) -> Option<String> {
    merge.map(|(a, b)| if a == distinct_id { b } else { a })
}

/// What one event says of its person and groups.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdentityRef<'a> {
    pub distinct_id: &'a str,
    pub timestamp_micros: i64,
    /// Another distinct id of the same person.
    pub merge_with: Option<&'a str>,
    pub set: Option<&'a Map<String, Value>>,
    pub set_once: Option<&'a Map<String, Value>>,
    pub group: Option<&'a GroupUpdate>,
}

impl<'a> IdentityRef<'a> {
    /// An event that says nothing of persons but whose they are.
    pub fn plain(distinct_id: &'a str, timestamp_micros: i64) -> IdentityRef<'a> {
        IdentityRef {
            distinct_id,
            timestamp_micros,
            merge_with: None,
            set: None,
            set_once: None,
            group: None,
        }
    }
}

/// Resolves one event's person (merging ids it links), sets person and
/// group properties, and returns the person.
fn apply_identity(
    identities: &mut Identities,
    groups: &mut Groups,
    event: IdentityRef,
) -> PersonRef {
    let person = match event.merge_with {
        Some(other) => identities.merge(other, event.distinct_id, event.timestamp_micros),
        None => identities.resolve(event.distinct_id, event.timestamp_micros),
    };
    if event.set.is_some() || event.set_once.is_some() {
        identities.set_properties(
            event.distinct_id,
            event.timestamp_micros,
            event.set,
            event.set_once,
        );
    }
    if let Some(group) = event.group {
        groups.identify(group, event.timestamp_micros);
    }
    person
}

/// The order of rows in an `events` file: by partition day, event, person
/// number and time, given each row's event name, time and person. Event
/// names are ranked first, so the sort compares integers; each row's name
/// is hashed once, and only the distinct names are sorted.
pub(crate) fn file_order<'a>(
    events: impl Iterator<Item = &'a str>,
    timestamps: impl Iterator<Item = i64>,
    persons: &[PersonRef],
) -> Vec<usize> {
    let mut first_seen: foldhash::HashMap<&str, usize> = foldhash::HashMap::default();
    let seen: Vec<usize> = events
        .map(|event| {
            let next = first_seen.len();
            *first_seen.entry(event).or_insert(next)
        })
        .collect();
    let mut names: Vec<(&str, usize)> = first_seen.into_iter().collect();
    names.sort_unstable();
    let mut rank = vec![0; names.len()];
    for (position, (_, seen)) in names.into_iter().enumerate() {
        rank[seen] = position;
    }
    let mut keys: Vec<(i64, usize, i64, i64, usize)> = timestamps
        .zip(persons)
        .zip(seen)
        .enumerate()
        .map(|(index, ((at, person), seen))| {
            (
                plinth_store::partition_day(at),
                rank[seen],
                person.num,
                at,
                index,
            )
        })
        .collect();
    keys.sort_unstable();
    keys.into_iter().map(|key| key.4).collect()
}

/// A new time-ordered id (UUIDv7) for an event the client sent without one.
/// The random part comes from the thread's generator: `Uuid::now_v7` asks
/// the kernel for randomness on every call, which showed in capture profiles.
pub fn new_event_id() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64);
    let random: [u8; 10] = rand::random();
    uuid::Builder::from_unix_timestamp_millis(millis, &random)
        .into_uuid()
        .to_string()
}

/// Something that could be read but not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineInput {
    /// Where it came from: an endpoint, or `file:line`.
    pub source: String,
    pub reason: String,
    pub payload: String,
}

/// Writes accepted events, their persons and their groups to a store.
pub struct Ingestor {
    store: Arc<Store>,
    identities: Mutex<Identities>,
    groups: Mutex<Groups>,
}

impl Ingestor {
    /// Loads the identity map and the groups from the store.
    pub fn open(store: Arc<Store>) -> Result<Ingestor> {
        let identities = Identities::load(&store.persons.read_all()?)?;
        let groups = Groups::load(&store.groups.read_all()?)?;
        Ok(Ingestor {
            store,
            identities: Mutex::new(identities),
            groups: Mutex::new(groups),
        })
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn persons(&self) -> usize {
        self.identities.lock().expect("identities lock").len()
    }

    /// Resolves persons and builds the `events` rows for `events`.
    pub fn events_batch(
        &self,
        events: &[EventInput],
        received_at_micros: i64,
    ) -> Result<RecordBatch> {
        self.requests_batch(&[(events, received_at_micros)])
    }

    /// One `events` batch for several requests, each with the time it was
    /// received: a group commit of many small requests builds one batch,
    /// not one per request.
    ///
    /// Identities are applied in the order of the requests; the rows come
    /// out in the order `events` files are sorted in (day, event, person
    /// number, time), so that writing them needs no sort and no copy of the
    /// columns.
    pub fn requests_batch(&self, requests: &[(&[EventInput], i64)]) -> Result<RecordBatch> {
        let inputs: Vec<(&EventInput, i64)> = requests
            .iter()
            .flat_map(|(events, at)| events.iter().map(move |event| (event, *at)))
            .collect();
        let persons: Vec<PersonRef> =
            self.apply_identities_of(inputs.iter().map(|(input, _)| input.identity()));
        let order = file_order(
            inputs.iter().map(|(input, _)| input.event.as_str()),
            inputs.iter().map(|(input, _)| input.timestamp_micros),
            &persons,
        );

        let rows = inputs.len();
        let bytes = |text: fn(&EventInput) -> usize| inputs.iter().map(|(i, _)| text(i)).sum();
        let mut uuid = StringBuilder::with_capacity(rows, rows * 36);
        let mut event = StringBuilder::with_capacity(rows, bytes(|i| i.event.len()));
        let mut distinct_id = StringBuilder::with_capacity(rows, bytes(|i| i.distinct_id.len()));
        let mut person_id = StringBuilder::with_capacity(rows, rows * 36);
        let mut timestamp = TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC");
        let mut received = TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC");
        let mut session = StringBuilder::with_capacity(
            rows,
            bytes(|i| i.session_id.as_ref().map_or(0, String::len)),
        );
        let mut properties = StringBuilder::with_capacity(rows, bytes(|i| i.properties.len()));
        let mut lib =
            StringBuilder::with_capacity(rows, bytes(|i| i.lib.as_ref().map_or(0, String::len)));
        let mut person_num = Int64Builder::with_capacity(rows);
        for index in order {
            let (input, received_at_micros) = inputs[index];
            let person = &persons[index];
            match &input.uuid {
                Some(id) => uuid.append_value(id),
                None => uuid.append_value(new_event_id()),
            }
            event.append_value(&input.event);
            distinct_id.append_value(&input.distinct_id);
            person_id.append_value(&person.id);
            person_num.append_value(person.num);
            timestamp.append_value(input.timestamp_micros);
            received.append_value(received_at_micros);
            session.append_option(input.session_id.as_deref());
            properties.append_value(&input.properties);
            lib.append_option(input.lib.as_deref());
        }
        let columns: Vec<Arc<dyn Array>> = vec![
            Arc::new(uuid.finish()),
            Arc::new(event.finish()),
            Arc::new(distinct_id.finish()),
            Arc::new(person_id.finish()),
            Arc::new(timestamp.finish()),
            Arc::new(received.finish()),
            Arc::new(session.finish()),
            Arc::new(properties.finish()),
            Arc::new(lib.finish()),
            Arc::new(person_num.finish()),
        ];
        Ok(RecordBatch::try_new(
            plinth_store::schema::events(),
            columns,
        )?)
    }

    /// Resolves the person of each event in order, applying what each says
    /// of persons and groups.
    pub(crate) fn apply_identities_of<'a>(
        &self,
        events: impl Iterator<Item = IdentityRef<'a>>,
    ) -> Vec<PersonRef> {
        let mut identities = self.identities.lock().expect("identities lock");
        let mut groups = self.groups.lock().expect("groups lock");
        events
            .map(|event| apply_identity(&mut identities, &mut groups, event))
            .collect()
    }

    /// Applies what `events` say of persons and groups, building no rows:
    /// recovery uses it for logged events already in Parquet. Applying the
    /// same events again in log order leaves the same persons and groups.
    pub fn apply_identities<'a>(&self, events: impl IntoIterator<Item = &'a EventInput>) {
        let mut identities = self.identities.lock().expect("identities lock");
        let mut groups = self.groups.lock().expect("groups lock");
        for input in events {
            apply_identity(&mut identities, &mut groups, input.identity());
        }
    }

    /// Writes `events` to Parquet in one commit, with `checkpoints` in the
    /// same commit. Persons and groups are saved first: a crash in between
    /// leaves rows that a retry re-derives identically, never events without
    /// their persons.
    pub fn append(
        &self,
        events: &[EventInput],
        received_at_micros: i64,
        checkpoints: &BTreeMap<String, u64>,
    ) -> Result<()> {
        let batch = self.events_batch(events, received_at_micros)?;
        self.save_identities()?;
        self.store.events.append(&[batch], checkpoints)?;
        Ok(())
    }

    /// Replaces the `persons` and `groups` tables where they changed.
    pub fn save_identities(&self) -> Result<()> {
        self.save_identities_with(&BTreeMap::new())
    }

    /// [`Ingestor::save_identities`], publishing `checkpoints` with
    /// `persons` (even when nothing changed) to say which rows it covers.
    /// Groups are saved first: a checkpoint on `persons` covers both.
    pub fn save_identities_with(&self, checkpoints: &BTreeMap<String, u64>) -> Result<()> {
        // Locked in the order every other caller locks them.
        let mut identities = self.identities.lock().expect("identities lock");
        let mut groups = self.groups.lock().expect("groups lock");
        if groups.is_changed() {
            self.store
                .groups
                .replace(&[groups.to_batch()?], &BTreeMap::new())?;
            groups.mark_saved();
        }
        if identities.is_changed() {
            let mut checkpoints = checkpoints.clone();
            checkpoints.insert(
                plinth_store::schema::PERSONS_WITH_MERGES.to_string(),
                identities.persons_with_merges(),
            );
            self.store
                .persons
                .replace(&[identities.to_batch()?], &checkpoints)?;
            identities.mark_saved();
        } else if !checkpoints.is_empty() {
            self.store.persons.append(&[], checkpoints)?;
        }
        Ok(())
    }

    /// Writes quarantined items in one commit.
    pub fn quarantine(&self, items: &[QuarantineInput], received_at_micros: i64) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        self.store.quarantine.append(
            &[quarantine_batch(items, received_at_micros)?],
            &BTreeMap::new(),
        )?;
        Ok(())
    }
}

/// The `quarantine` rows for `items`.
pub fn quarantine_batch(items: &[QuarantineInput], received_at_micros: i64) -> Result<RecordBatch> {
    let mut received = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    let mut source = StringBuilder::new();
    let mut reason = StringBuilder::new();
    let mut payload = StringBuilder::new();
    for item in items {
        received.append_value(received_at_micros);
        source.append_value(&item.source);
        reason.append_value(&item.reason);
        payload.append_value(&item.payload);
    }
    let columns: Vec<Arc<dyn Array>> = vec![
        Arc::new(received.finish()),
        Arc::new(source.finish()),
        Arc::new(reason.finish()),
        Arc::new(payload.finish()),
    ];
    Ok(RecordBatch::try_new(
        plinth_store::schema::quarantine(),
        columns,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_order_is_day_then_event_name_then_person_then_time() {
        let day = 86_400_000_000;
        // (event, person number, time), in arrival order.
        let rows = [
            ("b", 1, day + 5),
            ("a", 2, 7),
            ("b", 1, 3),
            ("a", 1, 9),
            ("c", 0, 1),
            ("a", 1, 8),
            ("a", 0, day),
        ];
        let inputs: Vec<EventInput> = rows
            .iter()
            .map(|&(event, _, at)| EventInput {
                event: event.into(),
                timestamp_micros: at,
                ..EventInput::default()
            })
            .collect();
        let persons: Vec<PersonRef> = rows
            .iter()
            .map(|&(_, num, _)| PersonRef {
                id: num.to_string().into(),
                num,
            })
            .collect();
        let order = file_order(
            inputs.iter().map(|i| i.event.as_str()),
            inputs.iter().map(|i| i.timestamp_micros),
            &persons,
        );
        let mut expected: Vec<usize> = (0..rows.len()).collect();
        expected.sort_by_key(|&i| (rows[i].2 / day, rows[i].0, rows[i].1, rows[i].2));
        assert_eq!(order, expected);
        assert_eq!(order, [5, 3, 1, 2, 4, 6, 0]);
    }

    #[test]
    fn new_event_ids_are_unique_time_ordered_v7_uuids() {
        let ids: Vec<uuid::Uuid> = (0..10_000)
            .map(|_| new_event_id().parse().unwrap())
            .collect();
        assert!(ids.iter().all(|id| id.get_version_num() == 7));
        let unique: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
        let millis = |id: &uuid::Uuid| id.get_timestamp().unwrap().to_unix().0;
        assert!(ids.windows(2).all(|w| millis(&w[0]) <= millis(&w[1])));
    }
}
