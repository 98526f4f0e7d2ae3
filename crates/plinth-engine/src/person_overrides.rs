//! Person overrides: events count as the person they belong to *now*, not
//! the one they belonged to when they were stored.
//!
//! When a login merges two persons that both have events, the merged-away
//! person's events keep their stored `person_id`. PostHog resolves this at
//! query time with an override table (old person → current person); so does
//! Plinth, from `persons.merged_person_ids` (and `merged_person_nums` for
//! the numbers). The `events` table that SQL sees is then a view over the
//! stored rows whose `person_id` is `plinth_person_of(person_id)` and whose
//! `person_num` is `plinth_person_num_of(person_num)`; queries that read
//! neither never evaluate them, and while no two persons with events were ever merged (the
//! usual case: a login only attaches a new id to the anonymous person) the
//! stored table is registered as it is. The map is rebuilt only when
//! `persons` gets a new version.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{Array, ArrayRef, Int64Array, ListArray, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::cast::{as_int64_array, as_string_array};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use plinth_store::Table;
use plinth_store::schema::{PERSONS_WITH_MERGES, possibly_merged_person_ids};

/// Merged-away persons → current persons, by id and by number.
#[derive(Debug, Default)]
pub struct Overrides {
    ids: HashMap<String, String>,
    nums: HashMap<i64, i64>,
}

impl Overrides {
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty() && self.nums.is_empty()
    }
}

/// The overrides of one `persons` version, rebuilt when it changes.
#[derive(Default)]
pub struct OverridesCache {
    current: Mutex<Option<(u64, Arc<Overrides>)>>,
}

impl OverridesCache {
    pub fn get(&self, persons: &Table) -> Result<Arc<Overrides>> {
        let version = persons.snapshot().version;
        let mut current = self.current.lock().expect("overrides lock");
        if let Some((cached, overrides)) = current.as_ref()
            && *cached == version
        {
            return Ok(overrides.clone());
        }
        let overrides = Arc::new(load(persons)?);
        *current = Some((version, overrides.clone()));
        Ok(overrides)
    }
}

fn load(persons: &Table) -> Result<Overrides> {
    let external = |e: anyhow::Error| DataFusionError::External(e.into());
    let mut overrides = Overrides::default();
    // Counted by the writer: with no merge there is nothing to read (at 10M
    // persons, reading them all cost every query about 1.8 s).
    if persons.snapshot().checkpoints.get(PERSONS_WITH_MERGES) == Some(&0) {
        return Ok(overrides);
    }
    for batch in persons.read_all().map_err(external)? {
        let person_ids = batch
            .column_by_name("person_id")
            .ok_or_else(|| DataFusionError::Internal("persons.person_id missing".into()))?;
        let person_ids = as_string_array(person_ids)?;
        let list = |name: &str| -> Result<Option<&ListArray>> {
            batch
                .column_by_name(name)
                .map(|c| {
                    c.as_any().downcast_ref::<ListArray>().ok_or_else(|| {
                        DataFusionError::Internal(format!("persons.{name} is not a list"))
                    })
                })
                .transpose()
        };
        let merged = list("merged_person_ids")?;
        let merged_nums = list("merged_person_nums")?;
        let nums = batch
            .column_by_name("person_num")
            .map(|c| as_int64_array(c))
            .transpose()?;
        let distinct_ids = list("distinct_ids")?
            .ok_or_else(|| DataFusionError::Internal("persons.distinct_ids missing".into()))?;
        for row in 0..batch.num_rows() {
            let person_id = person_ids.value(row);
            let merged_away: Vec<String> = match merged {
                Some(merged) if merged.is_valid(row) => as_string_array(&merged.value(row))?
                    .iter()
                    .flatten()
                    .map(str::to_string)
                    .collect(),
                // A row written before merges were recorded.
                _ => {
                    let ids = distinct_ids.value(row);
                    let ids: Vec<String> = as_string_array(&ids)?
                        .iter()
                        .flatten()
                        .map(str::to_string)
                        .collect();
                    possibly_merged_person_ids(person_id, &ids)
                }
            };
            for id in merged_away {
                overrides.ids.insert(id, person_id.to_string());
            }
            if let (Some(nums), Some(merged)) = (nums, merged_nums)
                && nums.is_valid(row)
                && merged.is_valid(row)
            {
                for num in as_int64_array(&merged.value(row))?.iter().flatten() {
                    overrides.nums.insert(num, nums.value(row));
                }
            }
        }
    }
    Ok(overrides)
}

/// `plinth_person_of(stored_person_id)` or `plinth_person_num_of(stored_person_num)`.
fn resolver_udf(overrides: Arc<Overrides>, column: Column) -> ScalarUDF {
    let argument = match column {
        Column::Id => DataType::Utf8,
        Column::Num => DataType::Int64,
    };
    ScalarUDF::new_from_impl(PersonOf {
        overrides,
        column,
        signature: Signature::exact(vec![argument], Volatility::Immutable),
    })
}

/// Which stored column a [`PersonOf`] resolves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Column {
    Id,
    Num,
}

#[derive(Debug)]
struct PersonOf {
    overrides: Arc<Overrides>,
    column: Column,
    signature: Signature,
}

// Two instances are the same function when they share one map.
impl PartialEq for PersonOf {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.overrides, &other.overrides) && self.column == other.column
    }
}

impl Eq for PersonOf {}

impl Hash for PersonOf {
    fn hash<H: Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.overrides).hash(state);
        self.column.hash(state);
    }
}

impl ScalarUDFImpl for PersonOf {
    fn name(&self) -> &str {
        match self.column {
            Column::Id => "plinth_person_of",
            Column::Num => "plinth_person_num_of",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(arg_types[0].clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let resolved: ArrayRef = match self.column {
            Column::Id => Arc::new(
                as_string_array(&arrays[0])?
                    .iter()
                    .map(|stored| {
                        stored.map(|id| self.overrides.ids.get(id).map_or(id, String::as_str))
                    })
                    .collect::<StringArray>(),
            ),
            Column::Num => Arc::new(
                as_int64_array(&arrays[0])?
                    .iter()
                    .map(|stored| stored.map(|num| *self.overrides.nums.get(&num).unwrap_or(&num)))
                    .collect::<Int64Array>(),
            ),
        };
        Ok(ColumnarValue::Array(resolved))
    }
}

/// Registers `events` in `ctx`: the stored table itself when no person was
/// ever merged, else the view that resolves `person_id`.
pub fn register_events(
    ctx: &datafusion::prelude::SessionContext,
    events: Arc<dyn datafusion::catalog::TableProvider>,
    overrides: Arc<Overrides>,
) -> Result<()> {
    use datafusion::prelude::col;
    if overrides.is_empty() {
        ctx.register_table("events", events)?;
        return Ok(());
    }
    let stored = ctx.read_table(events)?;
    let person_of = resolver_udf(overrides.clone(), Column::Id);
    let person_num_of = resolver_udf(overrides, Column::Num);
    let columns: Vec<_> = stored
        .schema()
        .fields()
        .iter()
        .map(|field| match field.name().as_str() {
            "person_id" => person_of.call(vec![col("person_id")]).alias("person_id"),
            "person_num" => person_num_of
                .call(vec![col("person_num")])
                .alias("person_num"),
            name => col(name),
        })
        .collect();
    ctx.register_table("events", stored.select(columns)?.into_view())?;
    Ok(())
}
