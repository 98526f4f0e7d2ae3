//! dbt unit tests (`unit_tests:` with `given` and `expect`): a model's SQL
//! run over fixture rows instead of its real inputs, its output compared
//! with the expected rows.
//!
//! Each `given` input becomes an in-memory table registered under the name
//! of the relation it stands for (so the model's compiled SQL reads it
//! unchanged); values are cast to the types of the real relation when it
//! exists, and its columns the fixture leaves out are NULL, as in dbt. The
//! output is compared on the columns `expect` names, as a multiset of rows
//! rendered as text after casting the expected values to the output's types.
//! Ephemeral inputs are replaced too: the model's SQL is compiled with
//! ephemeral models left as relations named like their CTEs.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::datasource::MemTable;
use datafusion::prelude::{DataFrame, Expr, SessionContext, cast, lit};
use datafusion::scalar::ScalarValue;
use plinth_pipelines::{CompiledProject, RunStatus, UnitTest, ephemeral_cte_name};
use serde_json::Value;

use crate::NodeResult;
use crate::materialize::{collect, column, pipeline_sql, quote};

/// Runs `unit` with `sql`, the model's SQL compiled with `is_incremental()`
/// as the unit test says (false unless its overrides set it). Ephemeral
/// inputs can be given only when `sql` leaves them as relations.
pub(crate) async fn unit_test(
    ctx: &SessionContext,
    compiled: &CompiledProject,
    unit: &UnitTest,
    sql: &str,
    ephemerals_replaceable: bool,
) -> Result<NodeResult> {
    for input in &unit.given {
        if input.fixture.is_some() {
            bail!("fixture files are not supported yet; give the rows inline");
        }
        let relation = input_relation(compiled, &input.input, ephemerals_replaceable)?;
        let real = match ctx.table(relation.as_str()).await {
            Ok(frame) => Some(frame.schema().inner().clone()),
            Err(_) => None,
        };
        let frame = rows_frame(ctx, &input.format, input.rows.as_ref(), real.as_ref()).await?;
        let (schema, batches) = collect(frame).await?;
        ctx.deregister_table(relation.as_str())?;
        ctx.register_table(
            relation.as_str(),
            Arc::new(MemTable::try_new(schema, vec![batches])?),
        )?;
    }
    let actual = pipeline_sql(ctx, sql)
        .await
        .context("planning the model's SQL")?;
    let actual_schema = actual.schema().inner().clone();
    let expected = rows_frame(
        ctx,
        &unit.expect.format,
        unit.expect.rows.as_ref(),
        Some(&actual_schema),
    )
    .await?;
    // Compare on the columns the expectation names.
    let named = expected_columns(&unit.expect.format, unit.expect.rows.as_ref());
    let keep: Vec<Expr> = if named.is_empty() {
        actual_schema
            .fields()
            .iter()
            .map(|f| column(f.name()))
            .collect()
    } else {
        named.iter().map(|c| column(c)).collect()
    };
    let actual_rows = rendered(actual.select(keep.clone())?).await?;
    let expected_rows = rendered(expected.select(keep)?).await?;
    let passed = actual_rows == expected_rows;
    let message = if passed {
        "PASS".to_string()
    } else {
        format!(
            "FAIL: expected {} rows {:?}, got {} rows {:?}",
            expected_rows.len(),
            expected_rows,
            actual_rows.len(),
            actual_rows
        )
    };
    Ok(NodeResult {
        status: if passed {
            RunStatus::Pass
        } else {
            RunStatus::Fail
        },
        message,
        failures: Some(u64::from(!passed)),
        rows: None,
        relation: None,
        audit: None,
    })
}

/// The relation `ref('x')` / `source('s', 't')` names.
fn input_relation(
    compiled: &CompiledProject,
    input: &str,
    ephemerals_replaceable: bool,
) -> Result<String> {
    let input = input.trim();
    let args = |prefix: &str| -> Option<Vec<String>> {
        let inner = input.strip_prefix(prefix)?.strip_suffix(')')?;
        Some(
            inner
                .split(',')
                .map(|a| a.trim().trim_matches(|c| c == '\'' || c == '"').to_string())
                .collect(),
        )
    };
    if let Some(args) = args("ref(") {
        let name = args.last().context("ref() needs a name")?;
        let node = compiled
            .nodes
            .values()
            .find(|n| &n.node.name == name && n.relation_name().is_some())
            .with_context(|| format!("unit test input {input}: no such model, seed or snapshot"))?;
        if node.is_ephemeral() {
            if !ephemerals_replaceable {
                bail!(
                    "unit test input {input} is an ephemeral model, inlined in the incremental SQL; \
                     it can be given only without is_incremental"
                );
            }
            return Ok(ephemeral_cte_name(&node.node.name));
        }
        return Ok(node.relation_name().expect("filtered above"));
    }
    if let Some(args) = args("source(") {
        let [source, table] = args.as_slice() else {
            bail!("unit test input {input}: source() takes a source and a table");
        };
        let found = compiled
            .sources
            .values()
            .find(|s| &s.source_name == source && &s.name == table)
            .with_context(|| format!("unit test input {input}: no such source table"))?;
        return Ok(found.identifier.clone());
    }
    bail!("unit test input {input:?} must be ref('...') or source('...', '...')")
}

/// The columns a dict or csv fixture names, in order of first appearance.
fn expected_columns(format: &str, rows: Option<&Value>) -> Vec<String> {
    let mut columns: Vec<String> = Vec::new();
    match (format, rows) {
        ("csv", Some(Value::String(text))) => {
            if let Some(header) = text.lines().find(|l| !l.trim().is_empty()) {
                columns = header.split(',').map(|c| c.trim().to_string()).collect();
            }
        }
        (_, Some(Value::Array(rows))) => {
            for row in rows {
                if let Value::Object(map) = row {
                    for key in map.keys() {
                        if !columns.contains(key) {
                            columns.push(key.clone());
                        }
                    }
                }
            }
        }
        _ => {}
    }
    columns
}

/// Fixture rows as a frame; with `schema`, every column of it, cast to its
/// type (columns the rows leave out are NULL).
async fn rows_frame(
    ctx: &SessionContext,
    format: &str,
    rows: Option<&Value>,
    schema: Option<&SchemaRef>,
) -> Result<DataFrame> {
    let frame = match (format, rows) {
        ("sql", Some(Value::String(sql))) => pipeline_sql(ctx, sql).await?,
        ("sql", _) => bail!("format sql needs rows as a SQL string"),
        _ => {
            let columns = expected_columns(format, rows);
            let table: Vec<BTreeMap<String, Value>> = match (format, rows) {
                ("csv", Some(Value::String(text))) => {
                    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
                    lines.next();
                    lines
                        .map(|line| {
                            columns
                                .iter()
                                .cloned()
                                .zip(line.split(',').map(|v| match v.trim() {
                                    "" => Value::Null,
                                    text => Value::String(text.to_string()),
                                }))
                                .collect()
                        })
                        .collect()
                }
                (_, Some(Value::Array(rows))) => rows
                    .iter()
                    .map(|row| match row {
                        Value::Object(map) => {
                            map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
                        }
                        _ => BTreeMap::new(),
                    })
                    .collect(),
                (_, None | Some(Value::Null)) => Vec::new(),
                (format, _) => bail!(
                    "rows in format {format} must be a list of mappings (dict) or a string (csv, sql)"
                ),
            };
            let all: Vec<String> = match schema {
                Some(schema) => schema.fields().iter().map(|f| f.name().clone()).collect(),
                None => columns,
            };
            if all.is_empty() {
                bail!("a fixture without columns");
            }
            let select_row = |row: &BTreeMap<String, Value>| {
                all.iter()
                    .map(|c| format!("{} as {}", literal(row.get(c)), quote(c)))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let sql = if table.is_empty() {
                let empty = BTreeMap::new();
                format!("select {} where false", select_row(&empty))
            } else {
                table
                    .iter()
                    .map(|row| format!("select {}", select_row(row)))
                    .collect::<Vec<_>>()
                    .join(" union all ")
            };
            ctx.sql(&sql).await?
        }
    };
    let Some(schema) = schema else {
        return Ok(frame);
    };
    let present: Vec<String> = frame
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let exprs: Vec<Expr> = schema
        .fields()
        .iter()
        .map(|field| {
            let value = if present.contains(field.name()) {
                cast(column(field.name()), field.data_type().clone())
            } else {
                lit(ScalarValue::try_from(field.data_type()).unwrap_or(ScalarValue::Null))
            };
            value.alias(field.name())
        })
        .collect();
    Ok(frame.select(exprs)?)
}

/// A JSON value as a SQL literal; strings stay text until cast.
fn literal(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "null".to_string(),
        Some(Value::String(s)) => format!("'{}'", s.replace('\'', "''")),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => format!("'{}'", other.to_string().replace('\'', "''")),
    }
}

/// Every row as text, sorted, so that row order does not matter.
async fn rendered(frame: DataFrame) -> Result<Vec<Vec<String>>> {
    let (_, batches) = collect(frame).await?;
    let mut rows = Vec::new();
    for batch in &batches {
        rows.extend(batch_rows(batch)?);
    }
    rows.sort();
    Ok(rows)
}

fn batch_rows(batch: &RecordBatch) -> Result<Vec<Vec<String>>> {
    (0..batch.num_rows())
        .map(|row| {
            batch
                .columns()
                .iter()
                .map(|c| {
                    if c.is_null(row) {
                        Ok("NULL".to_string())
                    } else if matches!(c.data_type(), DataType::Float32 | DataType::Float64) {
                        let value = datafusion::arrow::compute::cast(c, &DataType::Float64)?;
                        let value = value
                            .as_any()
                            .downcast_ref::<datafusion::arrow::array::Float64Array>()
                            .expect("cast to Float64")
                            .value(row);
                        Ok(format!("{value:.9}"))
                    } else {
                        Ok(array_value_to_string(c, row)?)
                    }
                })
                .collect()
        })
        .collect()
}
