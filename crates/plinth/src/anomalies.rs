//! `plinth anomalies`: flag unusual points of an event's daily or hourly
//! count, and score the detector on the Numenta Anomaly Benchmark.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Result, bail};
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{Int64Type, TimestampMicrosecondType};
use plinth_anomaly::{
    Breakdown, DetectorConfig, SegmentValue, detect_series, explain_change, run_nab,
};
use plinth_engine::{Engine, Privileges};
use plinth_store::{Mode, Store};

use crate::cli::{AnomaliesArgs, AnomaliesCommand, Interval, ScanArgs};

pub fn run(args: AnomaliesArgs) -> Result<()> {
    match args.command {
        Some(AnomaliesCommand::Nab { nab }) => {
            let report = run_nab(&nab, &DetectorConfig::default())?;
            print!("{report}");
            Ok(())
        }
        None => scan(args.scan),
    }
}

/// SQL text literal.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn scan(args: ScanArgs) -> Result<()> {
    let Some(event) = &args.event else {
        bail!(
            "name the event to watch with --event NAME, or score the detector with `plinth anomalies nab --nab DIR`"
        );
    };
    let store = Arc::new(Store::open(
        &args.data.dir,
        Mode::Reader,
        "plinth anomalies",
    )?);
    let engine = Engine::new(store, plinth_engine::Limits::default());
    let runtime = tokio::runtime::Runtime::new()?;
    let unit = match args.interval {
        Interval::Day => "day",
        Interval::Hour => "hour",
    };
    let step_micros: i64 = match args.interval {
        Interval::Day => 86_400_000_000,
        Interval::Hour => 3_600_000_000,
    };
    // The series spans every bucket of the store's range, so a bucket where
    // the event never happened counts as zero rather than vanishing.
    let sql = format!(
        "WITH range AS (SELECT date_trunc('{unit}', min(timestamp)) AS first, date_trunc('{unit}', max(timestamp)) AS last FROM events),
              counts AS (SELECT date_trunc('{unit}', timestamp) AS bucket, count(*) AS n FROM events WHERE event = {event} GROUP BY bucket)
         SELECT r.first, r.last, c.bucket, c.n FROM range r LEFT JOIN counts c ON true ORDER BY c.bucket",
        event = quote(event)
    );
    let result = runtime.block_on(engine.query(&sql, Privileges::ReadStore))?;
    let mut counts = BTreeMap::new();
    let mut range = None;
    for batch in &result.batches {
        let first = batch.column(0).as_primitive::<TimestampMicrosecondType>();
        let last = batch.column(1).as_primitive::<TimestampMicrosecondType>();
        let bucket = batch.column(2).as_primitive::<TimestampMicrosecondType>();
        let n = batch.column(3).as_primitive::<Int64Type>();
        for row in 0..batch.num_rows() {
            if first.is_valid(row) {
                range = Some((first.value(row), last.value(row)));
            }
            if bucket.is_valid(row) {
                counts.insert(bucket.value(row), n.value(row) as f64);
            }
        }
    }
    let Some((first, last)) = range else {
        bail!("{} holds no events", args.data.dir.display());
    };
    let buckets: Vec<i64> = (0..=((last - first) / step_micros))
        .map(|i| first + i * step_micros)
        .collect();
    let values: Vec<f64> = buckets
        .iter()
        .map(|b| counts.get(b).copied().unwrap_or(0.0))
        .collect();
    let seconds: Vec<i64> = buckets.iter().map(|b| b / 1_000_000).collect();
    let config = metric_config(args.warmup, args.detector.as_deref())?;
    let points = detect_series(&seconds, &values, &config);
    println!(
        "{:<20} {:>10} {:>10} {:>21} {:>6}",
        unit, "count", "expected", "band", "score"
    );
    let mut flagged = 0;
    for (bucket, point) in buckets.iter().zip(&points) {
        let is_flagged = point.score >= args.threshold;
        if !is_flagged && !args.all {
            continue;
        }
        flagged += usize::from(is_flagged);
        println!(
            "{:<20} {:>10} {:>10.1} {:>10.1}..{:<10.1} {:>6.3}{}",
            format_bucket(*bucket, args.interval),
            point.value,
            point.expected,
            point.low,
            point.high,
            point.score,
            if is_flagged { "  <- flagged" } else { "" }
        );
        if is_flagged && let Some(property) = &args.breakdown {
            explain(
                &runtime,
                &engine,
                event,
                property,
                unit,
                *bucket,
                step_micros,
                point.expected,
            )?;
        }
    }
    println!(
        "{flagged} of {} {unit}s flagged (score >= {})",
        points.len(),
        args.threshold
    );
    Ok(())
}

/// The product-metric detector with `--detector` overrides applied.
fn metric_config(warmup: usize, overrides: Option<&str>) -> Result<DetectorConfig> {
    let mut config = serde_json::to_value(DetectorConfig::product_metrics(warmup))?;
    if let Some(overrides) = overrides {
        let overrides: serde_json::Map<String, serde_json::Value> = serde_json::from_str(overrides)
            .map_err(|e| anyhow::anyhow!("--detector must be a JSON object: {e}"))?;
        for (key, value) in overrides {
            if config.get(&key).is_none() {
                bail!("--detector: unknown setting {key:?}");
            }
            config[key] = value;
        }
    }
    Ok(serde_json::from_value(config)?)
}

/// Names the values of `property` that account for most of the change at
/// `bucket`: each value's expected count is its share of the previous seven
/// buckets times the expected total.
#[allow(clippy::too_many_arguments)]
fn explain(
    runtime: &tokio::runtime::Runtime,
    engine: &Engine,
    event: &str,
    property: &str,
    unit: &str,
    bucket: i64,
    step: i64,
    expected_total: f64,
) -> Result<()> {
    let sql = format!(
        "SELECT coalesce(properties->>{property}, '(none)') AS value,
                sum(CASE WHEN date_trunc('{unit}', timestamp) = to_timestamp_micros({bucket}) AT TIME ZONE 'UTC' THEN 1 ELSE 0 END) AS now,
                sum(CASE WHEN timestamp < to_timestamp_micros({bucket}) AT TIME ZONE 'UTC' THEN 1 ELSE 0 END) AS before
         FROM events WHERE event = {event}
           AND timestamp >= to_timestamp_micros({start}) AT TIME ZONE 'UTC'
           AND timestamp < to_timestamp_micros({end}) AT TIME ZONE 'UTC'
         GROUP BY value",
        property = quote(property),
        event = quote(event),
        start = bucket - 7 * step,
        end = bucket + step,
    );
    let result = runtime.block_on(engine.query(&sql, Privileges::ReadStore))?;
    let mut rows = Vec::new();
    for batch in &result.batches {
        let value = datafusion::arrow::compute::cast(
            batch.column(0),
            &datafusion::arrow::datatypes::DataType::Utf8,
        )?;
        let value = value.as_string::<i32>();
        let now = batch.column(1).as_primitive::<Int64Type>();
        let before = batch.column(2).as_primitive::<Int64Type>();
        for row in 0..batch.num_rows() {
            rows.push((
                value.value(row).to_string(),
                now.value(row) as f64,
                before.value(row) as f64,
            ));
        }
    }
    let before_total: f64 = rows.iter().map(|r| r.2).sum();
    if before_total == 0.0 {
        return Ok(());
    }
    let breakdown = Breakdown {
        dimension: property.to_string(),
        values: rows
            .into_iter()
            .map(|(value, now, before)| SegmentValue {
                value,
                actual: now,
                expected: before / before_total * expected_total,
            })
            .collect(),
    };
    for contribution in explain_change(&[breakdown]).iter().take(3) {
        println!(
            "    {}={}: {:.0} vs {:.1} expected ({:.0}% of the change)",
            contribution.dimension,
            contribution.value,
            contribution.actual,
            contribution.expected,
            contribution.share * 100.0
        );
    }
    Ok(())
}

fn format_bucket(micros: i64, interval: Interval) -> String {
    let time = chrono::DateTime::from_timestamp_micros(micros).expect("valid timestamp");
    match interval {
        Interval::Day => time.format("%Y-%m-%d").to_string(),
        Interval::Hour => time.format("%Y-%m-%d %H:00").to_string(),
    }
}
