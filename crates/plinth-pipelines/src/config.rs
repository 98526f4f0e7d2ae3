//! Node configuration: the keys dbt accepts, how layers merge, and the typed
//! view the engine reads.
//!
//! Layers, lowest precedence first: `dbt_project.yml` folder hierarchy (walked
//! along the node's fqn), the property file's `config:`, then `config(...)` in
//! the SQL file. `tags`, `pre_hook` and `post_hook` accumulate across layers;
//! `meta`, `docs`, `grants`, `persist_docs` and `column_types` merge as maps;
//! every other key is replaced by the higher layer (dbt's rules).

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::PipelineError;

/// Keys that are configuration even when written without `+` in
/// `dbt_project.yml`; any other key whose value is a mapping is a folder.
const KNOWN_CONFIG_KEYS: &[&str] = &[
    "access",
    "alias",
    "batch_size",
    "begin",
    "check_cols",
    "column_types",
    "concurrent_batches",
    "contract",
    "database",
    "delimiter",
    "docs",
    "enabled",
    "error_if",
    "event_time",
    "fail_calc",
    "full_refresh",
    "grants",
    "group",
    "hard_deletes",
    "incremental_strategy",
    "invalidate_hard_deletes",
    "labels",
    "limit",
    "lookback",
    "materialized",
    "meta",
    "on_configuration_change",
    "on_schema_change",
    "persist_docs",
    "post_hook",
    "pre_hook",
    "quote_columns",
    "quoting",
    "schema",
    "severity",
    "snapshot_meta_column_names",
    "sql_header",
    "store_failures",
    "store_failures_as",
    "strategy",
    "tags",
    "target_database",
    "target_schema",
    "unique_key",
    "updated_at",
    "warn_if",
    "where",
    "dbt_valid_to_current",
];

const ACCUMULATING_KEYS: &[&str] = &["tags", "pre_hook", "post_hook"];
const MAP_MERGED_KEYS: &[&str] = &["meta", "docs", "grants", "persist_docs", "column_types"];

/// Normalises a config key: drops the leading `+`, spells hooks with `_`.
pub(crate) fn normalize_key(key: &str) -> String {
    let key = key.strip_prefix('+').unwrap_or(key);
    match key {
        "pre-hook" => "pre_hook".to_string(),
        "post-hook" => "post_hook".to_string(),
        other => other.to_string(),
    }
}

pub(crate) fn is_config_key(raw_key: &str, value: &Value) -> bool {
    raw_key.starts_with('+')
        || KNOWN_CONFIG_KEYS.contains(&normalize_key(raw_key).as_str())
        || !value.is_object()
}

/// Turns `tags`/hooks into lists so that layers can be appended.
fn normalize_value(key: &str, value: Value) -> Value {
    if ACCUMULATING_KEYS.contains(&key) {
        match value {
            Value::Array(items) => Value::Array(
                items
                    .into_iter()
                    .map(|item| match item {
                        // A hook may be written `{sql: ..., transaction: ...}`.
                        Value::Object(mut map) if map.contains_key("sql") => {
                            map.remove("sql").unwrap_or(Value::Null)
                        }
                        other => other,
                    })
                    .collect(),
            ),
            Value::Null => Value::Array(Vec::new()),
            single => Value::Array(vec![single]),
        }
    } else {
        value
    }
}

/// Merges `overlay` onto `base` with dbt's per-key rules.
pub(crate) fn merge_into(base: &mut Map<String, Value>, overlay: &Map<String, Value>) {
    for (raw_key, value) in overlay {
        let key = normalize_key(raw_key);
        let value = normalize_value(&key, value.clone());
        if ACCUMULATING_KEYS.contains(&key.as_str()) {
            let entry = base
                .entry(key.clone())
                .or_insert_with(|| Value::Array(Vec::new()));
            if let (Value::Array(existing), Value::Array(new)) = (entry, value) {
                for item in new {
                    if key != "tags" || !existing.contains(&item) {
                        existing.push(item);
                    }
                }
            }
        } else if MAP_MERGED_KEYS.contains(&key.as_str()) {
            match (base.get_mut(&key), value) {
                (Some(Value::Object(existing)), Value::Object(new)) => {
                    for (k, v) in new {
                        existing.insert(k, v);
                    }
                }
                (_, value) => {
                    base.insert(key, value);
                }
            }
        } else {
            base.insert(key, value);
        }
    }
}

/// The config keys of one level of a `dbt_project.yml` tree.
fn level_config(level: &Map<String, Value>) -> Map<String, Value> {
    level
        .iter()
        .filter(|(k, v)| is_config_key(k, v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Resolves the `dbt_project.yml` config for a node with the given fqn
/// (`[project, folder..., name]`) from one resource section (`models:`,
/// `seeds:`, ...). Deeper levels override shallower ones.
pub(crate) fn folder_config(section: Option<&Value>, fqn: &[String]) -> Map<String, Value> {
    let mut merged = Map::new();
    let Some(Value::Object(root)) = section else {
        return merged;
    };
    merge_into(&mut merged, &level_config(root));
    let mut level = root;
    for part in fqn {
        let next = level
            .iter()
            .find(|(k, v)| k.as_str() == part && !is_config_key(k, v));
        match next {
            Some((_, Value::Object(child))) => {
                merge_into(&mut merged, &level_config(child));
                level = child;
            }
            _ => break,
        }
    }
    merged
}

/// Test severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Severity {
    #[serde(rename = "ERROR")]
    Error,
    #[serde(rename = "WARN")]
    Warn,
}

/// The outcome of a data test given its number of failing rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TestStatus {
    Pass,
    Warn,
    Fail,
}

/// A node's resolved configuration: typed fields for what the engine needs,
/// and `raw`, the merged map with every key as written (normalised), which
/// is what the manifest shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeConfig {
    pub enabled: bool,
    /// `view`, `table`, `incremental`, `ephemeral`, `seed`, `snapshot` or `test`.
    pub materialized: String,
    pub alias: Option<String>,
    pub schema: Option<String>,
    pub database: Option<String>,
    pub tags: Vec<String>,
    /// Column names of `unique_key` (dbt accepts a string or a list).
    pub unique_key: Vec<String>,
    pub incremental_strategy: Option<String>,
    /// `ignore` (default), `fail`, `append_new_columns`, `sync_all_columns`.
    pub on_schema_change: String,
    pub full_refresh: Option<bool>,
    pub pre_hook: Vec<String>,
    pub post_hook: Vec<String>,
    /// Snapshots: `timestamp` or `check`.
    pub strategy: Option<String>,
    pub updated_at: Option<String>,
    /// Snapshots: `all` or a list of columns (kept as written).
    pub check_cols: Option<Value>,
    /// Seeds: column name to SQL type.
    pub column_types: Map<String, Value>,
    pub delimiter: Option<String>,
    pub quote_columns: Option<bool>,
    /// Tests.
    pub severity: Severity,
    pub warn_if: String,
    pub error_if: String,
    pub fail_calc: String,
    #[serde(rename = "where")]
    pub where_clause: Option<String>,
    pub limit: Option<u64>,
    pub store_failures: Option<bool>,
    pub meta: Map<String, Value>,
    pub raw: Map<String, Value>,
}

fn string_of(map: &Map<String, Value>, key: &str) -> Option<String> {
    match map.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn strings_of(map: &Map<String, Value>, key: &str) -> Vec<String> {
    match map.get(key) {
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

fn bool_of(map: &Map<String, Value>, key: &str, file: &str) -> Result<Option<bool>, PipelineError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(other) => Err(PipelineError::invalid(
            file,
            None,
            format!("config `{key}` must be true or false, not {other}"),
        )),
    }
}

impl NodeConfig {
    /// Builds the typed view from the merged layers, with `default_materialized`
    /// when no layer sets `materialized`. `file` names the node's file in errors.
    pub(crate) fn resolve(
        mut raw: Map<String, Value>,
        default_materialized: &str,
        file: &str,
    ) -> Result<NodeConfig, PipelineError> {
        raw.entry("materialized")
            .or_insert_with(|| Value::String(default_materialized.to_string()));
        let severity = match string_of(&raw, "severity").as_deref() {
            None => Severity::Error,
            Some(s) if s.eq_ignore_ascii_case("error") => Severity::Error,
            Some(s) if s.eq_ignore_ascii_case("warn") => Severity::Warn,
            Some(other) => {
                return Err(PipelineError::invalid(
                    file,
                    None,
                    format!("severity must be `error` or `warn`, not `{other}`"),
                ));
            }
        };
        let limit = match raw.get("limit") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| {
                PipelineError::invalid(file, None, format!("limit must be a whole number, not {v}"))
            })?),
        };
        let map_of = |key: &str| match raw.get(key) {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        Ok(NodeConfig {
            enabled: bool_of(&raw, "enabled", file)?.unwrap_or(true),
            materialized: string_of(&raw, "materialized").unwrap_or_default(),
            alias: string_of(&raw, "alias"),
            schema: string_of(&raw, "schema"),
            database: string_of(&raw, "database"),
            tags: strings_of(&raw, "tags"),
            unique_key: strings_of(&raw, "unique_key"),
            incremental_strategy: string_of(&raw, "incremental_strategy"),
            on_schema_change: string_of(&raw, "on_schema_change")
                .unwrap_or_else(|| "ignore".to_string()),
            full_refresh: bool_of(&raw, "full_refresh", file)?,
            pre_hook: strings_of(&raw, "pre_hook"),
            post_hook: strings_of(&raw, "post_hook"),
            strategy: string_of(&raw, "strategy"),
            updated_at: string_of(&raw, "updated_at"),
            check_cols: raw.get("check_cols").cloned(),
            column_types: map_of("column_types"),
            delimiter: string_of(&raw, "delimiter"),
            quote_columns: bool_of(&raw, "quote_columns", file)?,
            severity,
            warn_if: string_of(&raw, "warn_if").unwrap_or_else(|| "!= 0".to_string()),
            error_if: string_of(&raw, "error_if").unwrap_or_else(|| "!= 0".to_string()),
            fail_calc: string_of(&raw, "fail_calc").unwrap_or_else(|| "count(*)".to_string()),
            where_clause: string_of(&raw, "where"),
            limit,
            store_failures: bool_of(&raw, "store_failures", file)?,
            meta: map_of("meta"),
            raw,
        })
    }

    /// The status of a data test that found `failures` failing rows (with the
    /// default `count(*)` fail_calc), by `severity`, `warn_if` and `error_if`
    /// as dbt decides it: error when severity is error and `error_if` holds,
    /// else warn when `warn_if` holds, else pass.
    pub fn test_status(&self, failures: u64) -> TestStatus {
        let holds = |condition: &str| threshold_holds(condition, failures);
        if self.severity == Severity::Error && holds(&self.error_if) {
            TestStatus::Fail
        } else if holds(&self.warn_if) {
            TestStatus::Warn
        } else {
            TestStatus::Pass
        }
    }
}

/// Evaluates a dbt threshold such as `!= 0`, `>10` or `>= 5` against a count.
/// An unreadable condition counts as holding whenever there are failures,
/// which is the default `!= 0`.
fn threshold_holds(condition: &str, count: u64) -> bool {
    let condition = condition.trim();
    let operators = ["!=", "<>", ">=", "<=", "==", "=", ">", "<"];
    let Some(op) = operators.iter().find(|op| condition.starts_with(**op)) else {
        return count != 0;
    };
    let Ok(limit) = condition[op.len()..].trim().parse::<f64>() else {
        return count != 0;
    };
    let count = count as f64;
    match *op {
        "!=" | "<>" => count != limit,
        ">=" => count >= limit,
        "<=" => count <= limit,
        "==" | "=" => count == limit,
        ">" => count > limit,
        _ => count < limit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn folder_config_walks_the_fqn_and_accepts_plus_and_bare_keys() {
        let section = json!({
            "+materialized": "view",
            "proj": {
                "tags": "all",
                "staging": {"+materialized": "table", "+tags": ["stg"], "meta": {"owner": "a"}},
                "marts": {"materialized": "incremental"}
            },
            "other_package": {"+materialized": "ephemeral"}
        });
        let fqn: Vec<String> = ["proj", "staging", "stg_x"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let cfg = folder_config(Some(&section), &fqn);
        assert_eq!(cfg["materialized"], "table");
        assert_eq!(cfg["tags"], json!(["all", "stg"]));
        assert_eq!(cfg["meta"], json!({"owner": "a"}));
        let fqn: Vec<String> = ["proj", "marts", "m"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            folder_config(Some(&section), &fqn)["materialized"],
            "incremental"
        );
    }

    #[test]
    fn thresholds_decide_test_status() {
        let mut raw = Map::new();
        raw.insert("warn_if".into(), json!(">1"));
        raw.insert("error_if".into(), json!(">= 10"));
        let cfg = NodeConfig::resolve(raw, "test", "t.yml").unwrap();
        assert_eq!(cfg.test_status(0), TestStatus::Pass);
        assert_eq!(cfg.test_status(1), TestStatus::Pass);
        assert_eq!(cfg.test_status(2), TestStatus::Warn);
        assert_eq!(cfg.test_status(10), TestStatus::Fail);
        let mut raw = Map::new();
        raw.insert("severity".into(), json!("warn"));
        let cfg = NodeConfig::resolve(raw, "test", "t.yml").unwrap();
        assert_eq!(cfg.test_status(50), TestStatus::Warn);
    }
}
