//! Source freshness (`dbt source freshness`): how old the newest row of each
//! source table is, by its `loaded_at_field`, against `warn_after` and
//! `error_after`.

use anyhow::{Context, Result};
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, Float64Type};
use plinth_engine::Engine;
use plinth_pipelines::{CompiledProject, FreshnessThreshold, SourceTable};
use serde::Serialize;

use crate::materialize::{collect, quote};

/// The freshness of one source table.
#[derive(Debug, Clone, Serialize)]
pub struct SourceFreshness {
    pub unique_id: String,
    /// `pass`, `warn`, `error` or `runtime error`, as dbt's `sources.json`.
    pub status: &'static str,
    /// The newest `loaded_at_field`, as text.
    pub max_loaded_at: Option<String>,
    /// Seconds since then.
    pub max_loaded_at_time_ago_in_s: Option<f64>,
    pub message: String,
}

fn seconds(threshold: &FreshnessThreshold) -> Option<f64> {
    let unit = match threshold.period.as_str() {
        "minute" => 60.0,
        "hour" => 3600.0,
        "day" => 86_400.0,
        _ => return None,
    };
    Some(threshold.count as f64 * unit)
}

/// Checks every source table of `compiled` that has a `loaded_at_field` and
/// a freshness threshold.
pub async fn source_freshness(
    engine: &Engine,
    compiled: &CompiledProject,
) -> Result<Vec<SourceFreshness>> {
    let ctx = engine.session(None).await?;
    let mut results = Vec::new();
    for source in compiled.sources.values() {
        let (Some(field), Some(freshness)) = (&source.loaded_at_field, &source.freshness) else {
            continue;
        };
        if freshness.warn_after.is_none() && freshness.error_after.is_none() {
            continue;
        }
        let checked = check(&ctx, source, field).await;
        let result = match checked {
            Err(e) => SourceFreshness {
                unique_id: source.unique_id.clone(),
                status: "runtime error",
                max_loaded_at: None,
                max_loaded_at_time_ago_in_s: None,
                message: format!("{e:#}"),
            },
            Ok(None) => SourceFreshness {
                unique_id: source.unique_id.clone(),
                status: "error",
                max_loaded_at: None,
                max_loaded_at_time_ago_in_s: None,
                message: format!("{} has no rows with a {field}", source.identifier),
            },
            Ok(Some((newest, age))) => {
                let beyond = |t: &Option<FreshnessThreshold>| {
                    t.as_ref()
                        .and_then(seconds)
                        .is_some_and(|limit| age > limit)
                };
                let status = if beyond(&freshness.error_after) {
                    "error"
                } else if beyond(&freshness.warn_after) {
                    "warn"
                } else {
                    "pass"
                };
                SourceFreshness {
                    unique_id: source.unique_id.clone(),
                    status,
                    message: format!("newest {field} {newest}, {age:.0} s ago"),
                    max_loaded_at: Some(newest),
                    max_loaded_at_time_ago_in_s: Some(age),
                }
            }
        };
        results.push(result);
    }
    Ok(results)
}

/// The newest `field` of the source and its age in seconds.
async fn check(
    ctx: &datafusion::prelude::SessionContext,
    source: &SourceTable,
    field: &str,
) -> Result<Option<(String, f64)>> {
    let filter = source
        .freshness
        .as_ref()
        .and_then(|f| f.filter.as_ref())
        .map(|f| format!(" where {f}"))
        .unwrap_or_default();
    // The loaded_at_field may be an expression, as in dbt.
    let sql = format!(
        "select cast(max({field}) as varchar), \
         date_part('epoch', now()) - date_part('epoch', max({field})) \
         from {}{filter}",
        quote(&source.identifier)
    );
    let (_, batches) = collect(ctx.sql(&sql).await?).await?;
    let batch = batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .context("the freshness query returned no row")?;
    let newest = datafusion::arrow::compute::cast(batch.column(0), &DataType::Utf8)?;
    let newest = newest.as_string::<i32>();
    let age = datafusion::arrow::compute::cast(batch.column(1), &DataType::Float64)?;
    let age = age.as_primitive::<Float64Type>();
    if newest.is_null(0) || age.is_null(0) {
        return Ok(None);
    }
    Ok(Some((newest.value(0).to_string(), age.value(0))))
}
