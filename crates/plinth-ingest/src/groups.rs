//! Groups: the companies, teams or projects that `$groupidentify` (Segment:
//! `group`) describes, and their properties.
//!
//! A group is identified by its type and key. Each identify sets the given
//! properties in the order calls arrive (PostHog's processing order), as
//! persons' `$set` does; `created_at` is the earliest identify's time. The whole table is
//! small (one row per group) and is replaced when it changed, like
//! `persons`.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result};
use datafusion::arrow::array::{
    Array, RecordBatch, StringArray, StringBuilder, TimestampMicrosecondArray,
    TimestampMicrosecondBuilder,
};
use serde_json::{Map, Value};

/// One `$groupidentify`, as logged.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GroupUpdate {
    pub group_type: String,
    pub group_key: String,
    pub set: Map<String, Value>,
}

impl From<plinth_capture::GroupIdentify> for GroupUpdate {
    fn from(group: plinth_capture::GroupIdentify) -> Self {
        GroupUpdate {
            group_type: group.group_type,
            group_key: group.group_key,
            set: group.set,
        }
    }
}

#[derive(Debug, Clone)]
struct Group {
    properties: Map<String, Value>,
    created_at_micros: i64,
}

/// Every known group.
#[derive(Debug, Default)]
pub struct Groups {
    groups: BTreeMap<(String, String), Group>,
    changed: bool,
}

impl Groups {
    /// Rebuilds the groups from the rows of the `groups` table.
    pub fn load(batches: &[RecordBatch]) -> Result<Groups> {
        let mut groups = Groups::default();
        for batch in batches {
            let strings = |name: &str| {
                batch
                    .column_by_name(name)
                    .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                    .with_context(|| format!("groups column {name}"))
            };
            let (types, keys, properties) = (
                strings("group_type")?,
                strings("group_key")?,
                strings("properties")?,
            );
            let created = batch
                .column_by_name("created_at")
                .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>())
                .context("groups column created_at")?;
            for row in 0..batch.num_rows() {
                let properties: Map<String, Value> = serde_json::from_str(properties.value(row))
                    .context("group properties are not a JSON object")?;
                groups.groups.insert(
                    (types.value(row).to_string(), keys.value(row).to_string()),
                    Group {
                        properties,
                        created_at_micros: created.value(row),
                    },
                );
            }
        }
        Ok(groups)
    }

    /// Applies one identify made at `at_micros`.
    pub fn identify(&mut self, update: &GroupUpdate, at_micros: i64) {
        let group = self
            .groups
            .entry((update.group_type.clone(), update.group_key.clone()))
            .or_insert_with(|| Group {
                properties: Map::new(),
                created_at_micros: at_micros,
            });
        group.created_at_micros = group.created_at_micros.min(at_micros);
        group.properties.extend(update.set.clone());
        self.changed = true;
    }

    pub fn is_changed(&self) -> bool {
        self.changed
    }

    pub fn mark_saved(&mut self) {
        self.changed = false;
    }

    /// The whole `groups` table.
    pub fn to_batch(&self) -> Result<RecordBatch> {
        let mut types = StringBuilder::new();
        let mut keys = StringBuilder::new();
        let mut properties = StringBuilder::new();
        let mut created = TimestampMicrosecondBuilder::new().with_timezone("UTC");
        for ((group_type, group_key), group) in &self.groups {
            types.append_value(group_type);
            keys.append_value(group_key);
            properties.append_value(Value::Object(group.properties.clone()).to_string());
            created.append_value(group.created_at_micros);
        }
        let columns: Vec<Arc<dyn Array>> = vec![
            Arc::new(types.finish()),
            Arc::new(keys.finish()),
            Arc::new(properties.finish()),
            Arc::new(created.finish()),
        ];
        Ok(RecordBatch::try_new(
            plinth_store::schema::groups(),
            columns,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn update(key: &str, set: Value) -> GroupUpdate {
        GroupUpdate {
            group_type: "company".into(),
            group_key: key.into(),
            set: set.as_object().unwrap().clone(),
        }
    }

    #[test]
    fn identifies_set_in_arrival_order_and_survive_a_reload() {
        let mut groups = Groups::default();
        groups.identify(&update("acme", json!({"plan": "free", "size": 10})), 200);
        groups.identify(&update("acme", json!({"plan": "pro", "region": "eu"})), 100);
        let batch = groups.to_batch().unwrap();
        let reloaded = Groups::load(&[batch]).unwrap();
        let acme = &reloaded.groups[&("company".to_string(), "acme".to_string())];
        assert_eq!(
            Value::Object(acme.properties.clone()),
            json!({"plan": "pro", "size": 10, "region": "eu"})
        );
        assert_eq!(acme.created_at_micros, 100);
        assert_eq!(reloaded.groups.len(), 1);
    }
}
