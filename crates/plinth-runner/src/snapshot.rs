//! Snapshots: slowly changing dimensions of type 2, as dbt builds them.
//!
//! Each row of the snapshot is one version of a source row, with
//! `dbt_scd_id` (a hash of the key and `dbt_updated_at`), `dbt_updated_at`,
//! `dbt_valid_from` and `dbt_valid_to` (NULL for the current version). A run
//! closes the current version of every key whose row changed (strategy
//! `timestamp`: `updated_at` is newer than the version's `dbt_valid_from`;
//! strategy `check`: a `check_cols` column differs) and inserts the new
//! version, and inserts keys never seen. Keys that left the source keep
//! their current version (dbt's default `hard_deletes: ignore`), or have it
//! closed at the run's start with `hard_deletes: invalidate` (or the older
//! `invalidate_hard_deletes: true`).

use anyhow::{Context, Result, bail};
use datafusion::arrow::datatypes::DataType;
use plinth_pipelines::RunStatus;
use serde_json::Value;

use crate::NodeResult;
use crate::materialize::{Work, built, pipeline_sql, quote};

const META_COLUMNS: [&str; 4] = [
    "dbt_scd_id",
    "dbt_updated_at",
    "dbt_valid_from",
    "dbt_valid_to",
];

pub(crate) async fn snapshot(work: &Work<'_>) -> Result<NodeResult> {
    let name = work.relation_name()?;
    let config = &work.node.node.config;
    if config.unique_key.is_empty() {
        bail!("snapshot {name} needs a unique_key");
    }
    let source = pipeline_sql(work.ctx, &work.node.compiled_sql).await?;
    let source_columns: Vec<String> = source
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let updated = match config.strategy.as_deref() {
        Some("timestamp") => {
            let column = config
                .updated_at
                .as_deref()
                .context("strategy timestamp needs updated_at")?;
            format!("source.{}", quote(column))
        }
        Some("check") => format!(
            "cast('{}' as timestamp)",
            work.run_started_at.replace('\'', "''")
        ),
        other => bail!("snapshot {name}: strategy must be timestamp or check, not {other:?}"),
    };
    // dbt_scd_id hashes the key and the update time as text; timestamps
    // are written as DuckDB writes them (`2024-01-01 10:00:00`), so the ids
    // match a dbt-duckdb snapshot's.
    let updated_is_timestamp = match config.strategy.as_deref() {
        Some("timestamp") => source
            .schema()
            .fields()
            .iter()
            .find(|f| Some(f.name().as_str()) == config.updated_at.as_deref())
            .is_some_and(|f| matches!(f.data_type(), DataType::Timestamp(_, _))),
        _ => true,
    };
    let updated_text = if updated_is_timestamp {
        format!("replace(cast({updated} as varchar), 'T', ' ')")
    } else {
        format!("cast({updated} as varchar)")
    };
    let hashed: Vec<String> = config
        .unique_key
        .iter()
        .map(|k| format!("cast(source.{} as varchar)", quote(k)))
        .chain(std::iter::once(updated_text))
        .map(|e| format!("coalesce({e}, '')"))
        .collect();
    let source_data = format!(
        "select source.*, {updated} as \"__plinth_updated_at\", md5({}) as \"__plinth_scd_id\" \
         from ({}) source",
        hashed.join(" || '|' || "),
        work.node.compiled_sql
    );
    let data_columns: Vec<String> = source_columns.iter().map(|c| quote(c)).collect();
    let new_versions = |from: &str| {
        format!(
            "select {}, \"__plinth_scd_id\" as dbt_scd_id, \"__plinth_updated_at\" as dbt_updated_at, \
             \"__plinth_updated_at\" as dbt_valid_from, \
             case when false then \"__plinth_updated_at\" end as dbt_valid_to from {from}",
            data_columns.join(", ")
        )
    };

    let existing = work.staged_table_schema(&name)?;
    let Some(existing) = existing else {
        let sql = format!(
            "with source_data as ({source_data}) {}",
            new_versions("source_data")
        );
        let (relation, rows) = work
            .write(&name, pipeline_sql(work.ctx, &sql).await?)
            .await?;
        return Ok(built(name, relation, rows, "snapshot"));
    };
    for meta in META_COLUMNS {
        if existing.field_with_name(meta).is_err() {
            bail!("{name} exists but is not a snapshot (no {meta} column)");
        }
    }
    let same_key = |left: &str, right: &str| {
        config
            .unique_key
            .iter()
            .map(|k| format!("{left}.{k} = {right}.{k}", k = quote(k)))
            .collect::<Vec<_>>()
            .join(" and ")
    };
    let changed = match config.strategy.as_deref() {
        Some("timestamp") => {
            "current_rows.dbt_valid_from < source_data.\"__plinth_updated_at\"".to_string()
        }
        _ => {
            let checked: Vec<String> = match &config.check_cols {
                Some(Value::Array(cols)) => cols
                    .iter()
                    .filter_map(|c| c.as_str().map(str::to_string))
                    .collect(),
                _ => source_columns
                    .iter()
                    .filter(|c| !config.unique_key.contains(c))
                    .cloned()
                    .collect(),
            };
            checked
                .iter()
                .map(|c| {
                    format!(
                        "current_rows.{c} is distinct from source_data.{c}",
                        c = quote(c)
                    )
                })
                .collect::<Vec<_>>()
                .join(" or ")
        }
    };
    let key_aliases = |from: &str| -> String {
        config
            .unique_key
            .iter()
            .map(|k| format!("{from}.{} as {}", quote(k), quote(&format!("__key_{k}"))))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let hard_deletes = match (
        config.raw.get("hard_deletes").and_then(Value::as_str),
        config.raw.get("invalidate_hard_deletes"),
    ) {
        (Some("invalidate"), _) | (None, Some(Value::Bool(true))) => true,
        (Some("ignore") | None, _) => false,
        (Some(other), _) => {
            bail!("snapshot {name}: hard_deletes {other:?} is not supported (ignore, invalidate)")
        }
    };
    // Keys that left the source: their current version closes now.
    let deleted = if hard_deletes {
        format!(
            "union all select {}, cast('{}' as timestamp) from current_rows \
             where not exists (select 1 from source_data where {})",
            key_aliases("current_rows"),
            work.run_started_at.replace('\'', "''"),
            same_key("current_rows", "source_data"),
        )
    } else {
        String::new()
    };
    let closes_on = config
        .unique_key
        .iter()
        .map(|k| format!("t.{} = c.{}", quote(k), quote(&format!("__key_{k}"))))
        .collect::<Vec<_>>()
        .join(" and ");
    let first_key = quote(&format!("__key_{}", config.unique_key[0]));
    let kept_columns: Vec<String> = existing
        .fields()
        .iter()
        .map(|f| f.name())
        .filter(|n| !META_COLUMNS.contains(&n.as_str()))
        .map(|n| format!("t.{}", quote(n)))
        .collect();
    let sql = format!(
        "with source_data as ({source_data}),
current_rows as (select * from {target} where dbt_valid_to is null),
changed as (
    select source_data.* from source_data
    join current_rows on {join_current}
    where {changed}
),
inserted as (
    select * from source_data
    where not exists (select 1 from current_rows where {join_current})
    union all
    select * from changed
),
closes as (
    select {changed_keys}, changed.\"__plinth_updated_at\" as \"__plinth_closed_at\" from changed
    {deleted}
)
select {kept}, t.dbt_scd_id, t.dbt_updated_at, t.dbt_valid_from,
    case when t.dbt_valid_to is null and c.{first_key} is not null
        then c.\"__plinth_closed_at\" else t.dbt_valid_to end as dbt_valid_to
from {target} t
left join closes c on {closes_on}
union all
{inserted}",
        target = quote(&name),
        join_current = same_key("current_rows", "source_data"),
        kept = kept_columns.join(", "),
        changed_keys = key_aliases("changed"),
        inserted = new_versions("inserted"),
    );
    let frame = pipeline_sql(work.ctx, &sql)
        .await
        .with_context(|| format!("planning the snapshot merge of {name}"))?;
    let (relation, rows) = work.write(&name, frame).await?;
    Ok(NodeResult {
        status: RunStatus::Success,
        message: format!("OK snapshotted {name} ({rows} rows)"),
        ..built(name, relation, rows, "snapshot")
    })
}
