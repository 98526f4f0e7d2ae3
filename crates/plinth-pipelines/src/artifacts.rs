//! dbt-shaped artifacts: `target/manifest.json` from a compiled project, and
//! `target/run_results.json` from results the runner collects.

use std::io::{self, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::compile::{CompiledNode, CompiledProject};
use crate::project::{NodeId, ResourceType};

const MANIFEST_SCHEMA: &str = "https://schemas.getdbt.com/dbt/manifest/v12.json";
const RUN_RESULTS_SCHEMA: &str = "https://schemas.getdbt.com/dbt/run-results/v6.json";

/// The current time as dbt writes it: `2024-05-01T12:00:00.123456Z`.
pub fn utc_timestamp_now() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        now.subsec_micros()
    )
}

/// The current time as Jinja's `run_started_at` renders in dbt (Python's
/// `str(datetime)`): `2024-05-01 12:00:00.123456+00:00`.
pub(crate) fn dbt_datetime_now() -> String {
    let iso = utc_timestamp_now();
    format!("{}+00:00", iso.replacen('T', " ", 1).trim_end_matches('Z'))
}

fn write_json(path: &Path, value: &impl Serialize) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = io::BufWriter::new(std::fs::File::create(path)?);
    serde_json::to_writer(&mut file, value)?;
    file.flush()
}

fn node_json(project: &CompiledProject, compiled: &CompiledNode) -> Value {
    let node = &compiled.node;
    let refs: Vec<Value> = node
        .refs
        .iter()
        .map(|id| {
            let name = id.rsplit('.').next().unwrap_or(id);
            json!({"name": name, "package": null, "version": null})
        })
        .collect();
    let sources: Vec<Value> = node
        .sources
        .iter()
        .filter_map(|id| project.sources.get(id))
        .map(|s| json!([s.source_name, s.name]))
        .collect();
    let mut value = json!({
        "unique_id": node.unique_id,
        "resource_type": node.resource_type.as_str(),
        "name": node.name,
        "package_name": project.project_name,
        "path": node.original_file_path.split_once('/').map(|(_, rest)| rest).unwrap_or(&node.original_file_path),
        "original_file_path": node.original_file_path,
        "patch_path": node.patch_path.as_ref().map(|p| format!("{}://{p}", project.project_name)),
        "fqn": node.fqn,
        "alias": node.relation_name().unwrap_or_else(|| node.name.clone()),
        "database": node.config.database.clone().unwrap_or_else(|| project.target.database.clone()),
        "schema": node.config.schema.clone().unwrap_or_else(|| project.target.schema.clone()),
        "relation_name": node.relation_name(),
        "config": manifest_config(compiled),
        "tags": node.config.tags,
        "description": node.description,
        "columns": node.columns,
        "meta": node.config.meta,
        "depends_on": {
            "macros": [],
            "nodes": node.depends_on().collect::<Vec<_>>(),
        },
        "refs": refs,
        "sources": sources,
        "raw_code": node.raw_code,
        "language": "sql",
        "compiled": node.resource_type != ResourceType::Seed,
        "compiled_code": compiled.compiled_sql,
    });
    if let Some(meta) = &node.test_metadata {
        value["test_metadata"] = json!({
            "name": meta.name,
            "namespace": meta.namespace,
            "kwargs": meta.kwargs,
        });
        value["column_name"] = json!(meta.column_name);
        value["attached_node"] = json!(meta.attached_node);
    }
    value
}

/// The node's config as dbt's manifest shows it: the keys as configured,
/// plus the defaults the typed config applied.
fn manifest_config(compiled: &CompiledNode) -> Value {
    let c = &compiled.node.config;
    let mut config = c.raw.clone();
    let mut default = |key: &str, value: Value| {
        config.entry(key.to_string()).or_insert(value);
    };
    default("enabled", json!(c.enabled));
    default("materialized", json!(c.materialized));
    default("tags", json!(c.tags));
    default("meta", json!(c.meta));
    if compiled.node.resource_type == ResourceType::Test {
        default("severity", json!(c.severity));
        default("warn_if", json!(c.warn_if));
        default("error_if", json!(c.error_if));
        default("fail_calc", json!(c.fail_calc));
    } else {
        default("on_schema_change", json!(c.on_schema_change));
    }
    Value::Object(config)
}

/// Writes `manifest.json` (dbt's v12 shape: `metadata`, `nodes`, `sources`,
/// `macros`, `docs`, `exposures`, `unit_tests`, `disabled`, `parent_map`,
/// `child_map`) into `target_dir`, creating it if needed.
pub fn write_manifest(compiled: &CompiledProject, target_dir: &Path) -> io::Result<()> {
    let nodes: Map<String, Value> = compiled
        .nodes
        .iter()
        .map(|(id, node)| (id.clone(), node_json(compiled, node)))
        .collect();
    let sources: Map<String, Value> = compiled
        .sources
        .iter()
        .map(|(id, s)| {
            let mut value = serde_json::to_value(s).unwrap_or(Value::Null);
            value["resource_type"] = json!("source");
            value["package_name"] = json!(compiled.project_name);
            value["relation_name"] = json!(s.identifier);
            (id.clone(), value)
        })
        .collect();
    let macros: Map<String, Value> = compiled
        .macros
        .iter()
        .map(|(name, m)| {
            (
                format!("macro.{}.{name}", compiled.project_name),
                json!({
                    "name": name,
                    "resource_type": "macro",
                    "package_name": compiled.project_name,
                    "original_file_path": m.original_file_path,
                    "arguments": m.arguments.iter().map(|a| json!({"name": a})).collect::<Vec<_>>(),
                }),
            )
        })
        .collect();
    let docs: Map<String, Value> = compiled
        .docs
        .iter()
        .map(|(name, d)| {
            (
                format!("doc.{}.{name}", compiled.project_name),
                json!({
                    "name": name,
                    "resource_type": "doc",
                    "package_name": compiled.project_name,
                    "original_file_path": d.original_file_path,
                    "block_contents": d.contents,
                }),
            )
        })
        .collect();
    let exposures: Map<String, Value> = compiled
        .exposures
        .iter()
        .map(|(id, e)| {
            let mut value = serde_json::to_value(e).unwrap_or(Value::Null);
            value["resource_type"] = json!("exposure");
            value["depends_on"] = json!({"macros": [], "nodes": e.depends_on});
            (id.clone(), value)
        })
        .collect();
    let unit_tests: Map<String, Value> = compiled
        .unit_tests
        .iter()
        .map(|(id, u)| (id.clone(), serde_json::to_value(u).unwrap_or(Value::Null)))
        .collect();
    let disabled: Map<String, Value> = compiled
        .disabled
        .iter()
        .map(|(id, n)| {
            (
                id.clone(),
                json!([{
                    "unique_id": id,
                    "resource_type": n.resource_type.as_str(),
                    "name": n.name,
                    "original_file_path": n.original_file_path,
                }]),
            )
        })
        .collect();
    let manifest = json!({
        "metadata": {
            "dbt_schema_version": MANIFEST_SCHEMA,
            "dbt_version": concat!("plinth-", env!("CARGO_PKG_VERSION")),
            "generated_at": utc_timestamp_now(),
            "invocation_id": compiled.invocation_id,
            "project_name": compiled.project_name,
            "adapter_type": compiled.target.adapter_type,
            "env": {},
        },
        "nodes": nodes,
        "sources": sources,
        "macros": macros,
        "docs": docs,
        "exposures": exposures,
        "metrics": {},
        "groups": {},
        "selectors": {},
        "disabled": disabled,
        "parent_map": compiled.parent_map,
        "child_map": compiled.child_map,
        "group_map": {},
        "saved_queries": {},
        "semantic_models": {},
        "unit_tests": unit_tests,
    });
    write_json(&target_dir.join("manifest.json"), &manifest)
}

/// A node's outcome, with dbt's status words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Model, seed or snapshot built.
    Success,
    /// Model, seed or snapshot failed.
    Error,
    /// Not run because something upstream failed.
    Skipped,
    /// Test passed.
    Pass,
    /// Test failed with severity error.
    Fail,
    /// Test failed with severity warn.
    Warn,
    /// Test could not run.
    #[serde(rename = "runtime error")]
    RuntimeError,
}

/// When a phase of a node's run started and ended (RFC 3339 strings).
#[derive(Debug, Clone, Serialize)]
pub struct TimingInfo {
    /// `compile` or `execute`.
    pub name: String,
    pub started_at: String,
    pub completed_at: String,
}

/// One entry of `run_results.json`.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub unique_id: NodeId,
    pub status: RunStatus,
    pub timing: Vec<TimingInfo>,
    pub thread_id: String,
    /// Seconds.
    pub execution_time: f64,
    pub message: Option<String>,
    /// Failing rows for tests.
    pub failures: Option<u64>,
    /// Engine facts, e.g. `{"rows_affected": 10}`.
    pub adapter_response: Value,
    pub compiled: bool,
    pub compiled_code: Option<String>,
    pub relation_name: Option<String>,
}

/// `run_results.json`, filled by the runner and written with [`RunResults::write`].
#[derive(Debug, Clone, Serialize)]
pub struct RunResults {
    pub results: Vec<RunResult>,
    /// Seconds for the whole invocation.
    pub elapsed_time: f64,
    /// The invocation's arguments (`{"which": "build", "select": [...]}`).
    pub args: Value,
    pub invocation_id: String,
}

impl RunResults {
    /// Writes `run_results.json` into `target_dir`, creating it if needed.
    pub fn write(&self, target_dir: &Path) -> io::Result<()> {
        let document = json!({
            "metadata": {
                "dbt_schema_version": RUN_RESULTS_SCHEMA,
                "dbt_version": concat!("plinth-", env!("CARGO_PKG_VERSION")),
                "generated_at": utc_timestamp_now(),
                "invocation_id": self.invocation_id,
                "env": {},
            },
            "results": self.results,
            "elapsed_time": self.elapsed_time,
            "args": self.args,
        });
        write_json(&target_dir.join("run_results.json"), &document)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_has_dbt_shape() {
        let ts = utc_timestamp_now();
        assert_eq!(ts.len(), "2024-05-01T12:00:00.123456Z".len());
        assert!(ts.starts_with("20"));
        assert_eq!(&ts[10..11], "T");
        assert!(ts.ends_with('Z'));
    }
}
