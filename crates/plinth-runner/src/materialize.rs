//! Building one node: views, tables, incremental models, seeds, and data
//! tests with their audit query.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, Int64Type, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::{Column, ScalarValue};
use datafusion::datasource::MemTable;
use datafusion::logical_expr::JoinType;
use datafusion::prelude::{CsvReadOptions, DataFrame, Expr, SessionContext, cast, lit};
use plinth_pipelines::{BUILTIN_SOURCE_TABLES, CompiledNode, RunStatus, Severity};
use plinth_warehouse::dialect::duckdb_semantics;
use plinth_warehouse::{Relation, Version, Warehouse, parquet_schema};

use crate::{AUDIT_SCHEMA, NodeResult};

/// Everything a node's build reads.
pub(crate) struct Work<'a> {
    pub ctx: &'a SessionContext,
    pub warehouse: &'a Warehouse,
    pub node: &'a CompiledNode,
    /// The staged version the session shows.
    pub staged: &'a Version,
    pub project_root: &'a Path,
    pub run_started_at: &'a str,
}

impl Work<'_> {
    /// The node's relation, which must not hide an event store table.
    pub fn relation_name(&self) -> Result<String> {
        let name = self
            .node
            .relation_name()
            .context("a node without a relation name")?;
        if BUILTIN_SOURCE_TABLES.contains(&name.as_str()) {
            bail!("{name} is a table of the event store; give the model another name or alias");
        }
        Ok(name)
    }

    /// The schema of `name`'s table in the staged version, if it is one.
    pub fn staged_table_schema(&self, name: &str) -> Result<Option<SchemaRef>> {
        match self.staged.relations.get(name) {
            Some(Relation::Table { files }) => {
                let first = files.first().context("a table without files")?;
                Ok(Some(parquet_schema(
                    &self.warehouse.dir().join(&first.path),
                )?))
            }
            _ => Ok(None),
        }
    }

    /// Runs `frame` and stages its rows as one new file of `name`.
    pub async fn write(&self, name: &str, frame: DataFrame) -> Result<(Relation, u64)> {
        let (schema, batches) = collect(frame).await?;
        let file = self.warehouse.write_table(name, &schema, &batches)?;
        let rows = file.rows;
        Ok((Relation::Table { files: vec![file] }, rows))
    }
}

/// Runs a frame; the schema is the physical plan's, which the batches share.
pub(crate) async fn collect(frame: DataFrame) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let task = frame.task_ctx();
    let plan = frame.create_physical_plan().await?;
    let schema = plan.schema();
    let batches = datafusion::physical_plan::collect(plan, Arc::new(task)).await?;
    Ok((schema, batches))
}

/// Plans pipeline SQL (a model's, a snapshot's, a test's) with the
/// semantics pipelines follow ([`plinth_warehouse::dialect`]).
pub(crate) async fn pipeline_sql(ctx: &SessionContext, sql: &str) -> Result<DataFrame> {
    let (state, plan) = ctx.sql(sql).await?.into_parts();
    Ok(DataFrame::new(state, duckdb_semantics(plan)?))
}

/// An unqualified column, its name kept exactly (no case folding).
pub(crate) fn column(name: &str) -> Expr {
    Expr::Column(Column::new_unqualified(name))
}

pub(crate) fn built(name: String, relation: Relation, rows: u64, what: &str) -> NodeResult {
    NodeResult {
        status: RunStatus::Success,
        message: format!("OK created {what} {name} ({rows} rows)"),
        failures: None,
        rows: Some(rows),
        relation: Some((name, relation)),
        audit: None,
    }
}

/// Views, tables and incremental models.
pub(crate) async fn model(work: &Work<'_>) -> Result<NodeResult> {
    let name = work.relation_name()?;
    let sql = &work.node.compiled_sql;
    match work.node.node.config.materialized.as_str() {
        "view" => {
            // Planning checks the SQL now, as creating a view does in dbt.
            pipeline_sql(work.ctx, sql).await?;
            Ok(NodeResult {
                status: RunStatus::Success,
                message: format!("OK created view {name}"),
                failures: None,
                rows: None,
                relation: Some((name, Relation::View { sql: sql.clone() })),
                audit: None,
            })
        }
        "table" => {
            let (relation, rows) = work
                .write(&name, pipeline_sql(work.ctx, sql).await?)
                .await?;
            Ok(built(name, relation, rows, "table"))
        }
        "incremental" => incremental(work, name).await,
        other => bail!(
            "materialization {other:?} is not supported (view, table, incremental, ephemeral)"
        ),
    }
}

async fn incremental(work: &Work<'_>, name: String) -> Result<NodeResult> {
    let config = &work.node.node.config;
    let new_rows = pipeline_sql(work.ctx, &work.node.compiled_sql).await?;
    let existing_schema = work.staged_table_schema(&name)?;
    let Some(target) = existing_schema.filter(|_| work.node.is_incremental) else {
        let (relation, rows) = work.write(&name, new_rows).await?;
        return Ok(built(name, relation, rows, "incremental table"));
    };
    let (new_schema, new_batches) = collect(new_rows).await?;
    let new_count: usize = new_batches.iter().map(|b| b.num_rows()).sum();

    // The columns of the result, by on_schema_change.
    let target_cols: Vec<(&str, &DataType)> = target
        .fields()
        .iter()
        .map(|f| (f.name().as_str(), f.data_type()))
        .collect();
    let new_cols: Vec<(&str, &DataType)> = new_schema
        .fields()
        .iter()
        .map(|f| (f.name().as_str(), f.data_type()))
        .collect();
    let has = |cols: &[(&str, &DataType)], name: &str| cols.iter().any(|(n, _)| *n == name);
    let added: Vec<&str> = new_cols
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| !has(&target_cols, n))
        .collect();
    let removed: Vec<&str> = target_cols
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| !has(&new_cols, n))
        .collect();
    let columns: Vec<(&str, &DataType)> = match config.on_schema_change.as_str() {
        _ if added.is_empty() && removed.is_empty() => target_cols.clone(),
        "fail" => bail!(
            "the source and target schemas of incremental model {name} are out of sync \
             (on_schema_change: fail): added {added:?}, removed {removed:?}; \
             run with --full-refresh to rebuild it"
        ),
        "append_new_columns" => target_cols
            .iter()
            .copied()
            .chain(new_cols.iter().copied().filter(|(n, _)| added.contains(n)))
            .collect(),
        "sync_all_columns" => new_cols.clone(),
        "ignore" => {
            if let Some(missing) = removed.first() {
                bail!(
                    "column {missing} of {name} is missing from the model's new rows \
                     (on_schema_change: ignore); run with --full-refresh to rebuild it"
                );
            }
            target_cols.clone()
        }
        other => bail!(
            "on_schema_change {other:?} is not one of ignore, fail, append_new_columns, sync_all_columns"
        ),
    };
    let conform = |available: &[(&str, &DataType)]| -> Result<Vec<Expr>> {
        columns
            .iter()
            .map(|(col, data_type)| {
                let value = if has(available, col) {
                    cast(column(col), (*data_type).clone())
                } else {
                    lit(ScalarValue::try_from(*data_type)?)
                };
                Ok(value.alias(*col))
            })
            .collect()
    };
    let staging = format!("__plinth_new_{}", name.replace('.', "_"));
    work.ctx.register_table(
        staging.as_str(),
        Arc::new(MemTable::try_new(new_schema.clone(), vec![new_batches])?),
    )?;
    let new_frame = work
        .ctx
        .table(staging.as_str())
        .await?
        .select(conform(&new_cols)?)?;
    let strategy = config.incremental_strategy.clone().unwrap_or_else(|| {
        if config.unique_key.is_empty() {
            "append".to_string()
        } else {
            "delete+insert".to_string()
        }
    });
    let unchanged_columns = columns == target_cols;
    let relation = match strategy.as_str() {
        "append" if unchanged_columns => {
            // New rows go into a new file beside the existing ones.
            let (schema, batches) = collect(new_frame).await?;
            let file = work.warehouse.write_table(&name, &schema, &batches)?;
            let Some(Relation::Table { files }) = work.staged.relations.get(&name) else {
                bail!("{name} is not a table");
            };
            let mut files = files.clone();
            files.push(file);
            Relation::Table { files }
        }
        "append" | "delete+insert" | "merge" => {
            let old = work
                .ctx
                .table(name.as_str())
                .await?
                .select(conform(&target_cols)?)?;
            let frame = if strategy == "append" {
                old.union(new_frame)?
            } else {
                replace_matched(work, &strategy, &name, &staging, old, new_frame, &columns).await?
            };
            work.write(&name, frame).await?.0
        }
        other => bail!("incremental strategy {other:?} is not one of append, delete+insert, merge"),
    };
    let rows = relation.rows().unwrap_or(0);
    Ok(NodeResult {
        status: RunStatus::Success,
        message: format!("OK {strategy} {new_count} rows into {name} ({rows} rows)"),
        failures: None,
        rows: Some(new_count as u64),
        relation: Some((name, relation)),
        audit: None,
    })
}

/// The rows of a delete+insert or merge: existing rows whose key does not
/// come again, then the new rows; a merge limited to some columns
/// (`merge_update_columns` / `merge_exclude_columns`) keeps the other
/// columns of matched rows from their existing version. Rows with a NULL
/// key never match, as in dbt's delete and merge.
async fn replace_matched(
    work: &Work<'_>,
    strategy: &str,
    name: &str,
    staging: &str,
    old: DataFrame,
    new_frame: DataFrame,
    columns: &[(&str, &DataType)],
) -> Result<DataFrame> {
    let config = &work.node.node.config;
    if config.unique_key.is_empty() {
        bail!("incremental strategy {strategy} needs a unique_key");
    }
    // Rows whose key comes again are replaced; rows with a NULL key
    // never match, as in dbt's delete and merge.
    let keys: Vec<&str> = config.unique_key.iter().map(String::as_str).collect();
    let key_names: Vec<String> = keys.iter().map(|k| format!("__key_{k}")).collect();
    let key_names: Vec<&str> = key_names.iter().map(String::as_str).collect();
    let keys_of = |frame: DataFrame| {
        frame.select(
            keys.iter()
                .map(|k| column(k).alias(format!("__key_{k}")))
                .collect::<Vec<_>>(),
        )
    };
    let incoming = keys_of(work.ctx.table(staging).await?)?;
    let kept = old
        .clone()
        .join(incoming, JoinType::LeftAnti, &keys, &key_names, None)?;
    let updated = match strategy {
        "merge" => merge_updated_columns(config, columns),
        _ => None,
    };
    let frame = match updated {
        None => kept.union(new_frame)?,
        Some(updated) => {
            // A matched row takes only the updated columns from its
            // new version (merge_update_columns / merge_exclude_columns).
            let target = old.alias("__target")?;
            let qualified = |side: &str| -> Vec<String> {
                keys.iter().map(|k| format!("{side}.{k}")).collect()
            };
            let (left, right) = (qualified("__target"), qualified("__source"));
            let left: Vec<&str> = left.iter().map(String::as_str).collect();
            let right: Vec<&str> = right.iter().map(String::as_str).collect();
            let matched = target
                .join(
                    new_frame.clone().alias("__source")?,
                    JoinType::Inner,
                    &left,
                    &right,
                    None,
                )?
                .select(
                    columns
                        .iter()
                        .map(|(c, _)| {
                            let side = if updated.iter().any(|u| u == c) {
                                "__source"
                            } else {
                                "__target"
                            };
                            Expr::Column(Column::new(Some(side), *c)).alias(*c)
                        })
                        .collect::<Vec<_>>(),
                )?;
            let existing_keys = keys_of(work.ctx.table(name).await?)?;
            let fresh =
                new_frame.join(existing_keys, JoinType::LeftAnti, &keys, &key_names, None)?;
            kept.union(matched)?.union(fresh)?
        }
    };
    Ok(frame)
}

/// The columns a merge updates in matched rows, when the model limits them
/// (`merge_update_columns`, or every column but the keys and
/// `merge_exclude_columns`); `None` updates the whole row.
fn merge_updated_columns(
    config: &plinth_pipelines::NodeConfig,
    columns: &[(&str, &DataType)],
) -> Option<Vec<String>> {
    let list = |key: &str| -> Option<Vec<String>> {
        config.raw.get(key)?.as_array().map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
    };
    if let Some(updated) = list("merge_update_columns") {
        return Some(updated);
    }
    let excluded = list("merge_exclude_columns")?;
    Some(
        columns
            .iter()
            .map(|(c, _)| c.to_string())
            .filter(|c| !excluded.contains(c) && !config.unique_key.contains(c))
            .collect(),
    )
}

/// A seed: the CSV file with inferred types, `column_types` applied as casts.
pub(crate) async fn seed(work: &Work<'_>) -> Result<NodeResult> {
    let name = work.relation_name()?;
    let config = &work.node.node.config;
    let path = work.project_root.join(&work.node.node.original_file_path);
    let delimiter = match config.delimiter.as_deref() {
        None | Some("") => b',',
        Some(d) if d.len() == 1 => d.as_bytes()[0],
        Some(d) => bail!("seed delimiter {d:?} must be one character"),
    };
    let options = CsvReadOptions::new()
        .has_header(true)
        .delimiter(delimiter)
        .schema_infer_max_records(usize::MAX)
        .file_extension(".csv");
    let path_text = path.to_str().context("seed path is not UTF-8")?;
    let frame = work
        .ctx
        .read_csv(path_text, options)
        .await
        .with_context(|| format!("reading {}", path.display()))?;
    let frame = if config.column_types.is_empty() {
        frame
    } else {
        let staging = format!("__plinth_seed_{name}");
        work.ctx
            .register_table(staging.as_str(), frame.into_view())?;
        let schema = work.ctx.table(staging.as_str()).await?.schema().clone();
        let select: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| {
                let quoted = quote(f.name());
                match config.column_types.get(f.name()) {
                    Some(t) => format!(
                        "cast({quoted} as {}) as {quoted}",
                        t.as_str().unwrap_or_default()
                    ),
                    None => quoted,
                }
            })
            .collect();
        work.ctx
            .sql(&format!("select {} from {staging}", select.join(", ")))
            .await
            .with_context(|| format!("applying column_types to seed {name}"))?
    };
    let (relation, rows) = work.write(&name, frame).await?;
    Ok(NodeResult {
        message: format!("INSERT {rows} into {name}"),
        ..built(name, relation, rows, "seed")
    })
}

/// A SQL identifier, double-quoted.
pub(crate) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A data test: dbt's audit query over the test's failing rows, then the
/// status by severity, `warn_if` and `error_if`; the failing rows stored
/// under [`AUDIT_SCHEMA`] when asked.
pub(crate) async fn data_test(work: &Work<'_>, store_failures: bool) -> Result<NodeResult> {
    let config = &work.node.node.config;
    let audit_sql = work.node.audit_sql().context("not a test")?;
    let (_, batches) = collect(pipeline_sql(work.ctx, &audit_sql).await?).await?;
    let batch = batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .context("the audit query returned no row")?;
    let failures = count_of(batch.column(0).as_ref())?;
    let flag = |i: usize| -> Result<bool> {
        let column = datafusion::arrow::compute::cast(batch.column(i), &DataType::Boolean)?;
        let column = column.as_boolean();
        Ok(column.is_valid(0) && column.value(0))
    };
    let (should_warn, should_error) = (flag(1)?, flag(2)?);
    let status = if config.severity == Severity::Error && should_error {
        RunStatus::Fail
    } else if should_warn {
        RunStatus::Warn
    } else {
        RunStatus::Pass
    };
    let audit = if store_failures {
        let name = format!("{AUDIT_SCHEMA}.{}", relation_safe(&work.node.node.name));
        let sql = match config.limit {
            Some(limit) => format!(
                "select * from (\n{}\n) limit {limit}",
                work.node.compiled_sql
            ),
            None => work.node.compiled_sql.clone(),
        };
        let (relation, _) = work
            .write(&name, pipeline_sql(work.ctx, &sql).await?)
            .await?;
        Some((name, relation))
    } else {
        None
    };
    let message = match status {
        RunStatus::Pass => "PASS".to_string(),
        RunStatus::Warn => format!("WARN {failures}"),
        _ => format!("FAIL {failures}"),
    };
    let stored = audit
        .as_ref()
        .map(|(name, _)| format!(" (failing rows in {name})"))
        .unwrap_or_default();
    Ok(NodeResult {
        status,
        message: format!("{message}{stored}"),
        failures: Some(failures),
        rows: None,
        relation: None,
        audit,
    })
}

fn count_of(array: &dyn Array) -> Result<u64> {
    let as_int = datafusion::arrow::compute::cast(array, &DataType::Int64)?;
    let values = as_int.as_primitive::<Int64Type>();
    Ok(if values.is_valid(0) {
        values.value(0).max(0) as u64
    } else {
        0
    })
}

/// A test name as a relation name: letters, digits and `_`.
fn relation_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
