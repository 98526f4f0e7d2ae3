//! Identity: which distinct ids are one person, and that person's properties.
//!
//! A person's id is a UUID derived from the first distinct id it was seen
//! with (`plinth_store::schema::derived_person_id`). When an
//! anonymous id is identified (`$identify`, `$create_alias`, Segment
//! identify/alias) with an id not yet seen, the new id joins the anonymous
//! person: every event before and after the login counts as one person. When
//! both ids already belong to different persons, their records merge into the
//! older one, which records the id of the one merged away: events stored
//! under that id count as the survivor when queried.
//!
//! Each person also gets a number, the next one when it is created: events
//! carry it beside the id (`events.person_num`) so that scans keying on
//! millions of persons read 8 bytes a row, not 36. Numbers follow the order
//! in which events create persons, so replaying the same events in the same
//! order (capture recovery) gives the same numbers; a merged-away person's
//! number stays with its events and is recorded by the survivor, and no
//! number is given twice.

use std::sync::Arc;

use anyhow::{Context, Result};
use datafusion::arrow::array::{
    Array, AsArray, Int64Array, Int64Builder, ListArray, ListBuilder, RecordBatch, StringArray,
    StringBuilder, TimestampMicrosecondArray, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::Int64Type;
use plinth_store::schema::{derived_person_id, possibly_merged_person_ids};
use serde_json::{Map, Value};

#[derive(Debug, Clone)]
struct Person {
    person_id: Arc<str>,
    distinct_ids: Vec<String>,
    properties: Map<String, Value>,
    created_at_micros: i64,
    /// Persons merged into this one; their stored events carry these ids.
    merged_person_ids: Vec<String>,
    person_num: i64,
    /// The numbers of the persons merged into this one.
    merged_person_nums: Vec<i64>,
}

/// The person of an event: its id and its number.
#[derive(Debug, Clone, PartialEq)]
pub struct PersonRef {
    pub id: Arc<str>,
    pub num: i64,
}

/// The distinct-id to person map and the persons' properties.
#[derive(Debug, Default)]
pub struct Identities {
    by_distinct_id: foldhash::HashMap<String, usize>,
    persons: Vec<Option<Person>>,
    /// The number the next new person gets.
    next_num: i64,
    changed: bool,
}

impl Identities {
    /// Rebuilds the map from the rows of the `persons` table.
    pub fn load(batches: &[RecordBatch]) -> Result<Identities> {
        let mut identities = Identities::default();
        for batch in batches {
            let column = |name: &str| batch.column_by_name(name).context("persons column missing");
            let ids = column("person_id")?
                .as_any()
                .downcast_ref::<StringArray>()
                .context("person_id")?;
            let distinct = column("distinct_ids")?
                .as_any()
                .downcast_ref::<ListArray>()
                .context("distinct_ids")?;
            let properties = column("properties")?
                .as_any()
                .downcast_ref::<StringArray>()
                .context("properties")?;
            let created = column("created_at")?
                .as_any()
                .downcast_ref::<TimestampMicrosecondArray>()
                .context("created_at")?;
            let list = |name: &'static str| {
                batch
                    .column_by_name(name)
                    .map(|c| c.as_any().downcast_ref::<ListArray>().context(name))
                    .transpose()
            };
            let merged = list("merged_person_ids")?;
            let merged_nums = list("merged_person_nums")?;
            let nums = batch
                .column_by_name("person_num")
                .map(|c| {
                    c.as_any()
                        .downcast_ref::<Int64Array>()
                        .context("person_num")
                })
                .transpose()?;
            for row in 0..batch.num_rows() {
                let distinct_ids = text_list(distinct, row)?;
                let person_id = ids.value(row);
                let merged_person_ids = match merged {
                    Some(merged) if merged.is_valid(row) => text_list(merged, row)?,
                    _ => possibly_merged_person_ids(person_id, &distinct_ids),
                };
                let merged_person_nums = match merged_nums {
                    Some(merged) if merged.is_valid(row) => number_list(merged, row)?,
                    _ => Vec::new(),
                };
                // Persons saved before numbers existed get theirs below.
                let person_num = nums
                    .filter(|n| n.is_valid(row))
                    .map_or(-1, |n| n.value(row));
                let index = identities.persons.len();
                for id in &distinct_ids {
                    identities.by_distinct_id.insert(id.clone(), index);
                }
                identities.persons.push(Some(Person {
                    person_id: person_id.into(),
                    distinct_ids,
                    properties: serde_json::from_str(properties.value(row)).unwrap_or_default(),
                    created_at_micros: created.value(row),
                    merged_person_ids,
                    person_num,
                    merged_person_nums,
                }));
            }
        }
        let numbered = identities.persons.iter().flatten();
        identities.next_num = numbered
            .flat_map(|p| std::iter::once(p.person_num).chain(p.merged_person_nums.iter().copied()))
            .max()
            .map_or(0, |max| max + 1);
        for person in identities.persons.iter_mut().flatten() {
            if person.person_num < 0 {
                person.person_num = identities.next_num;
                identities.next_num += 1;
                identities.changed = true;
            }
        }
        Ok(identities)
    }

    /// The person of `distinct_id`, created at `at_micros` if new.
    pub fn resolve(&mut self, distinct_id: &str, at_micros: i64) -> PersonRef {
        let index = self.index_of(distinct_id, at_micros);
        self.person_ref(index)
    }

    /// Records that `a` and `b` are the same person (`a` is usually the
    /// anonymous id). Returns the person both now resolve to.
    pub fn merge(&mut self, a: &str, b: &str, at_micros: i64) -> PersonRef {
        let known_a = self.by_distinct_id.get(a).copied();
        let known_b = self.by_distinct_id.get(b).copied();
        let index = match (known_a, known_b) {
            (Some(ia), Some(ib)) if ia != ib => self.merge_persons(ia, ib),
            (Some(i), Some(_)) => i,
            (Some(i), None) => self.attach(b, i),
            (None, Some(i)) => self.attach(a, i),
            (None, None) => {
                let i = self.index_of(a, at_micros);
                self.attach(b, i)
            }
        };
        self.person_ref(index)
    }

    /// Applies `$set` (overwrite) and `$set_once` (only if absent).
    pub fn set_properties(
        &mut self,
        distinct_id: &str,
        at_micros: i64,
        set: Option<&Map<String, Value>>,
        set_once: Option<&Map<String, Value>>,
    ) {
        let index = self.index_of(distinct_id, at_micros);
        let person = self.persons[index].as_mut().expect("live person");
        if let Some(set) = set {
            for (key, value) in set {
                person.properties.insert(key.clone(), value.clone());
            }
        }
        if let Some(set_once) = set_once {
            for (key, value) in set_once {
                person
                    .properties
                    .entry(key.clone())
                    .or_insert_with(|| value.clone());
            }
        }
        self.changed = true;
    }

    /// Whether anything changed since the last [`Identities::mark_saved`].
    pub fn is_changed(&self) -> bool {
        self.changed
    }

    pub fn mark_saved(&mut self) {
        self.changed = false;
    }

    pub fn len(&self) -> usize {
        self.persons.iter().flatten().count()
    }

    /// How many persons have others merged into them.
    pub fn persons_with_merges(&self) -> u64 {
        self.persons
            .iter()
            .flatten()
            .filter(|p| !p.merged_person_ids.is_empty())
            .count() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `persons` table as one batch.
    pub fn to_batch(&self) -> Result<RecordBatch> {
        let mut ids = StringBuilder::new();
        let mut distinct = ListBuilder::new(StringBuilder::new());
        let mut properties = StringBuilder::new();
        let mut created = TimestampMicrosecondBuilder::new().with_timezone("UTC");
        let mut merged = ListBuilder::new(StringBuilder::new());
        let mut nums = Int64Builder::new();
        let mut merged_nums = ListBuilder::new(Int64Builder::new());
        for person in self.persons.iter().flatten() {
            ids.append_value(&person.person_id);
            for id in &person.distinct_ids {
                distinct.values().append_value(id);
            }
            distinct.append(true);
            properties.append_value(serde_json::to_string(&person.properties)?);
            created.append_value(person.created_at_micros);
            for id in &person.merged_person_ids {
                merged.values().append_value(id);
            }
            merged.append(true);
            nums.append_value(person.person_num);
            merged_nums
                .values()
                .append_slice(&person.merged_person_nums);
            merged_nums.append(true);
        }
        let columns: Vec<Arc<dyn Array>> = vec![
            Arc::new(ids.finish()),
            Arc::new(distinct.finish()),
            Arc::new(properties.finish()),
            Arc::new(created.finish()),
            Arc::new(merged.finish()),
            Arc::new(nums.finish()),
            Arc::new(merged_nums.finish()),
        ];
        Ok(RecordBatch::try_new(
            plinth_store::schema::persons(),
            columns,
        )?)
    }

    fn index_of(&mut self, distinct_id: &str, at_micros: i64) -> usize {
        if let Some(&index) = self.by_distinct_id.get(distinct_id) {
            let person = self.persons[index].as_mut().expect("live person");
            if at_micros < person.created_at_micros {
                person.created_at_micros = at_micros;
                self.changed = true;
            }
            return index;
        }
        let index = self.persons.len();
        self.persons.push(Some(Person {
            person_id: derived_person_id(distinct_id).into(),
            distinct_ids: vec![distinct_id.to_string()],
            properties: Map::new(),
            created_at_micros: at_micros,
            merged_person_ids: Vec::new(),
            person_num: self.next_num,
            merged_person_nums: Vec::new(),
        }));
        self.next_num += 1;
        self.by_distinct_id.insert(distinct_id.to_string(), index);
        self.changed = true;
        index
    }

    fn attach(&mut self, distinct_id: &str, index: usize) -> usize {
        self.by_distinct_id.insert(distinct_id.to_string(), index);
        self.persons[index]
            .as_mut()
            .expect("live person")
            .distinct_ids
            .push(distinct_id.to_string());
        self.changed = true;
        index
    }

    /// Folds the younger person into the older; the older keeps its id and
    /// the younger's properties fill only what the older lacks.
    fn merge_persons(&mut self, a: usize, b: usize) -> usize {
        let (keep, drop) = {
            let pa = self.person(a);
            let pb = self.person(b);
            if (pa.created_at_micros, &pa.person_id) <= (pb.created_at_micros, &pb.person_id) {
                (a, b)
            } else {
                (b, a)
            }
        };
        let dropped = self.persons[drop].take().expect("live person");
        let kept = self.persons[keep].as_mut().expect("live person");
        for id in &dropped.distinct_ids {
            self.by_distinct_id.insert(id.clone(), keep);
        }
        kept.distinct_ids.extend(dropped.distinct_ids);
        kept.merged_person_ids.push(dropped.person_id.to_string());
        kept.merged_person_ids.extend(dropped.merged_person_ids);
        kept.merged_person_nums.push(dropped.person_num);
        kept.merged_person_nums.extend(dropped.merged_person_nums);
        for (key, value) in dropped.properties {
            kept.properties.entry(key).or_insert(value);
        }
        self.changed = true;
        keep
    }

    fn person_ref(&self, index: usize) -> PersonRef {
        let person = self.person(index);
        PersonRef {
            id: person.person_id.clone(),
            num: person.person_num,
        }
    }

    fn person(&self, index: usize) -> &Person {
        self.persons[index].as_ref().expect("live person")
    }
}

/// Row `row` of a `List<Utf8>` column.
fn text_list(list: &ListArray, row: usize) -> Result<Vec<String>> {
    let values = list.value(row);
    let values = values.as_string_opt::<i32>().context("a list of texts")?;
    Ok(values.iter().flatten().map(str::to_string).collect())
}

/// Row `row` of a `List<Int64>` column.
fn number_list(list: &ListArray, row: usize) -> Result<Vec<i64>> {
    let values = list.value(row);
    let values = values
        .as_primitive_opt::<Int64Type>()
        .context("a list of numbers")?;
    Ok(values.iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifying_an_anonymous_id_keeps_one_person() {
        let mut ids = Identities::default();
        let anon = ids.resolve("anon-1", 10);
        let merged = ids.merge("anon-1", "user-1", 20);
        assert_eq!(anon, merged);
        assert_eq!(ids.resolve("user-1", 30), anon);
        assert_eq!(ids.len(), 1);
    }

    #[test]
    fn merging_two_known_persons_keeps_the_older_and_its_properties() {
        let mut ids = Identities::default();
        let old = ids.resolve("a", 1);
        ids.set_properties("a", 1, Some(&json_map(r#"{"plan":"free"}"#)), None);
        let young = ids.resolve("b", 5);
        ids.set_properties(
            "b",
            5,
            Some(&json_map(r#"{"plan":"pro","email":"x@y"}"#)),
            None,
        );
        assert_eq!(ids.merge("b", "a", 9), old);
        assert_eq!(ids.resolve("b", 10), old);
        assert_eq!(ids.len(), 1);
        let batch = ids.to_batch().unwrap();
        let reloaded = Identities::load(&[batch]).unwrap();
        let person = reloaded.person(reloaded.by_distinct_id["b"]);
        assert_eq!(person.properties["plan"], "free");
        assert_eq!(person.properties["email"], "x@y");
        assert_eq!(person.merged_person_ids, [young.id.to_string()]);
        assert_eq!(person.merged_person_nums, [young.num]);
    }

    #[test]
    fn attaching_an_id_records_no_merge_and_old_files_yield_every_possible_merge() {
        let mut ids = Identities::default();
        let anon = ids.resolve("anon", 1);
        ids.merge("anon", "user", 2);
        assert!(ids.person(0).merged_person_ids.is_empty());
        // A persons file of an earlier version has no merged_person_ids.
        let batch = ids.to_batch().unwrap();
        let old = batch.project(&[0, 1, 2, 3]).unwrap();
        let reloaded = Identities::load(&[old]).unwrap();
        let person = reloaded.person(reloaded.by_distinct_id["user"]);
        assert_eq!(*person.person_id, *anon.id);
        assert_eq!(person.merged_person_ids, [derived_person_id("user")]);
    }

    #[test]
    fn numbers_follow_creation_survive_merges_and_are_never_given_twice() {
        let mut ids = Identities::default();
        let first = ids.resolve("a", 1);
        let second = ids.resolve("b", 2);
        let third = ids.resolve("c", 3);
        assert_eq!((first.num, second.num, third.num), (0, 1, 2));
        // "c" merges into the older "a" and keeps its number; "a" records it.
        assert_eq!(ids.merge("c", "a", 4), first);
        let mut reloaded = Identities::load(&[ids.to_batch().unwrap()]).unwrap();
        assert_eq!(reloaded.resolve("c", 5), first);
        let person = reloaded.person(reloaded.by_distinct_id["a"]);
        assert_eq!(person.merged_person_nums, [2]);
        // The highest number was merged away: the next person must not reuse it.
        assert_eq!(reloaded.resolve("d", 6).num, 3);
        // Persons saved before numbers existed are numbered on load.
        let old = ids.to_batch().unwrap().project(&[0, 1, 2, 3, 4]).unwrap();
        let mut numbered = Identities::load(&[old]).unwrap();
        assert!(numbered.is_changed());
        let (a, b) = (numbered.resolve("a", 9), numbered.resolve("b", 9));
        assert_ne!(a.num, b.num);
        assert_eq!(numbered.resolve("new", 9).num, 2);
    }

    #[test]
    fn set_once_never_overwrites() {
        let mut ids = Identities::default();
        ids.set_properties("u", 1, None, Some(&json_map(r#"{"source":"ads"}"#)));
        ids.set_properties("u", 2, None, Some(&json_map(r#"{"source":"seo"}"#)));
        ids.set_properties("u", 3, Some(&json_map(r#"{"plan":"pro"}"#)), None);
        let person = ids.person(ids.by_distinct_id["u"]);
        assert_eq!(person.properties["source"], "ads");
        assert_eq!(person.properties["plan"], "pro");
    }

    #[test]
    fn person_ids_are_deterministic() {
        let mut a = Identities::default();
        let mut b = Identities::default();
        assert_eq!(a.resolve("same", 1), b.resolve("same", 99));
    }

    fn json_map(text: &str) -> Map<String, Value> {
        serde_json::from_str(text).unwrap()
    }
}
