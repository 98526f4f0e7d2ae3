//! One evaluation of an alert: the metric's series from the events (one
//! DataFusion query, every bucket of the store's range, empty buckets as
//! zero), the product-metric detector over it, the flagged points among the
//! newest complete buckets, and for each the breakdown values that explain
//! most of the change (contribution analysis over the previous seven
//! buckets' shares). [`series`] and [`contributors`] also serve
//! `plinth anomalies`.

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use plinth_anomaly::{Breakdown, Contribution, DetectorConfig, SegmentValue, detect_series};
use plinth_engine::{Engine, Privileges, QueryError};
use serde::Serialize;

use crate::definition::{AlertDefinition, Direction, Interval, Measure};

/// Contributors reported per flagged point.
const TOP_CONTRIBUTORS: usize = 3;
/// Buckets before the flagged one whose shares give each value's expectation.
const BASELINE_BUCKETS: i64 = 7;

/// A flagged point, as recorded in the catalog and POSTed to the webhook.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlaggedPoint {
    pub alert: String,
    pub event: String,
    pub measure: Measure,
    pub interval: Interval,
    /// Start of the bucket, UTC microseconds and RFC 3339.
    pub bucket_micros: i64,
    pub bucket: String,
    pub value: f64,
    pub expected: f64,
    pub low: f64,
    pub high: f64,
    pub score: f64,
    /// `down` or `up`.
    pub direction: Direction,
    /// The breakdown values that explain most of the change, largest share first.
    pub contributors: Vec<Contribution>,
}

fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn timestamp(micros: i64) -> String {
    format!("to_timestamp_micros({micros}) AT TIME ZONE 'UTC'")
}

/// What is watched: an event's aggregate per bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchedMetric {
    pub event: String,
    pub measure: Measure,
    /// The property of `sum` and `average`.
    pub property: Option<String>,
    pub interval: Interval,
}

impl AlertDefinition {
    pub fn metric(&self) -> WatchedMetric {
        WatchedMetric {
            event: self.event.clone(),
            measure: self.measure,
            property: self.property.clone(),
            interval: self.interval,
        }
    }
}

/// A metric's value in every bucket of the store's range.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Bucket starts, UTC microseconds, one interval apart.
    pub buckets: Vec<i64>,
    pub values: Vec<f64>,
}

/// The watched value of the rows for which `condition` holds (`true` for all).
fn aggregate(metric: &WatchedMetric, condition: &str) -> String {
    let property = metric.property.as_deref().map(literal).unwrap_or_default();
    let value = format!("json_get_float(properties, {property})");
    match metric.measure {
        Measure::Count => format!("sum(CASE WHEN {condition} THEN 1 ELSE 0 END)"),
        Measure::Persons => format!("count(DISTINCT CASE WHEN {condition} THEN person_id END)"),
        Measure::Sum => format!("sum(CASE WHEN {condition} THEN {value} ELSE 0.0 END)"),
        Measure::Average => format!("avg(CASE WHEN {condition} THEN {value} END)"),
    }
}

/// The series of `metric` from the first to the last bucket holding any
/// event (a bucket without the watched event is 0, or NaN for an average),
/// leaving out the last one if it is still in progress at `now_micros`;
/// `None` when the store is empty.
pub async fn series(
    engine: &Engine,
    metric: &WatchedMetric,
    now_micros: i64,
) -> Result<Option<Series>, QueryError> {
    let unit = metric.interval.unit();
    let step = metric.interval.micros();
    let sql = format!(
        "WITH span AS (SELECT date_trunc('{unit}', min(timestamp)) AS first, date_trunc('{unit}', max(timestamp)) AS last FROM events),
              series AS (SELECT date_trunc('{unit}', timestamp) AS bucket, {value} AS value
                         FROM events WHERE event = {event} GROUP BY bucket)
         SELECT arrow_cast(s.first, 'Int64'), arrow_cast(s.last, 'Int64'), arrow_cast(v.bucket, 'Int64'), CAST(v.value AS DOUBLE)
         FROM span s LEFT JOIN series v ON true",
        value = aggregate(metric, "true"),
        event = literal(&metric.event),
    );
    let result = engine.query(&sql, Privileges::ReadStore).await?;
    let mut range = None;
    let mut known = std::collections::HashMap::new();
    for batch in &result.batches {
        let first = batch.column(0).as_primitive::<Int64Type>();
        let last = batch.column(1).as_primitive::<Int64Type>();
        let bucket = batch.column(2).as_primitive::<Int64Type>();
        let value = batch.column(3).as_primitive::<Float64Type>();
        for row in 0..batch.num_rows() {
            if first.is_valid(row) {
                range = Some((first.value(row), last.value(row)));
            }
            if bucket.is_valid(row) && value.is_valid(row) {
                known.insert(bucket.value(row), value.value(row));
            }
        }
    }
    let Some((first, mut last)) = range else {
        return Ok(None);
    };
    if last.saturating_add(step) > now_micros {
        last -= step;
    }
    let missing = if metric.measure == Measure::Average {
        f64::NAN
    } else {
        0.0
    };
    let buckets: Vec<i64> = (first..=last).step_by(step as usize).collect();
    let values = buckets
        .iter()
        .map(|b| known.get(b).copied().unwrap_or(missing))
        .collect();
    Ok(Some(Series { buckets, values }))
}

/// Evaluates `alert` over the engine's events; `now_micros` decides which
/// bucket is still in progress (it is left out).
pub async fn evaluate(
    engine: &Engine,
    alert: &AlertDefinition,
    now_micros: i64,
) -> Result<Vec<FlaggedPoint>, QueryError> {
    let metric = alert.metric();
    let Some(Series { buckets, values }) = series(engine, &metric, now_micros).await? else {
        return Ok(Vec::new());
    };
    let seconds: Vec<i64> = buckets.iter().map(|b| b / 1_000_000).collect();
    let points = detect_series(
        &seconds,
        &values,
        &DetectorConfig::product_metrics(alert.warmup),
    );

    let newest = buckets.len().saturating_sub(alert.lookback);
    let mut flagged = Vec::new();
    for (bucket, point) in buckets.iter().zip(&points).skip(newest) {
        let direction = if point.value < point.expected {
            Direction::Down
        } else {
            Direction::Up
        };
        let wanted = alert.direction == Direction::Both || alert.direction == direction;
        if point.score < alert.threshold || !wanted {
            continue;
        }
        let mut contributors = match &alert.breakdown {
            Some(property) => {
                contributors(engine, &metric, property, *bucket, point.expected).await?
            }
            None => Vec::new(),
        };
        contributors.truncate(TOP_CONTRIBUTORS);
        flagged.push(FlaggedPoint {
            alert: alert.name.clone(),
            event: alert.event.clone(),
            measure: alert.measure,
            interval: alert.interval,
            bucket_micros: *bucket,
            bucket: chrono::DateTime::from_timestamp_micros(*bucket)
                .expect("bucket in range")
                .to_rfc3339(),
            value: point.value,
            expected: point.expected,
            low: point.low,
            high: point.high,
            score: point.score,
            direction,
            contributors,
        });
    }
    Ok(flagged)
}

/// The values of `property`, ranked by how much of the change at `bucket`
/// they explain: each value's expectation is its share of the previous
/// seven buckets times the expected total. Empty when those buckets hold
/// nothing.
pub async fn contributors(
    engine: &Engine,
    metric: &WatchedMetric,
    property: &str,
    bucket: i64,
    expected_total: f64,
) -> Result<Vec<Contribution>, QueryError> {
    let step = metric.interval.micros();
    let at = timestamp(bucket);
    let sql = format!(
        "SELECT coalesce(properties->>{property}, '(none)') AS value,
                CAST({now} AS DOUBLE) AS now, CAST({before} AS DOUBLE) AS before
         FROM events WHERE event = {event}
           AND timestamp >= {start} AND timestamp < {end}
         GROUP BY value",
        property = literal(property),
        now = aggregate(metric, &format!("timestamp >= {at}")),
        before = aggregate(metric, &format!("timestamp < {at}")),
        event = literal(&metric.event),
        start = timestamp(bucket - BASELINE_BUCKETS * step),
        end = timestamp(bucket + step),
    );
    let result = engine.query(&sql, Privileges::ReadStore).await?;
    let mut rows = Vec::new();
    for batch in &result.batches {
        let value = datafusion::arrow::compute::cast(batch.column(0), &DataType::Utf8)
            .map_err(|e| QueryError::Internal(e.to_string()))?;
        let value = value.as_string::<i32>();
        let now = batch.column(1).as_primitive::<Float64Type>();
        let before = batch.column(2).as_primitive::<Float64Type>();
        for row in 0..batch.num_rows() {
            let number = |column: &datafusion::arrow::array::Float64Array| {
                if column.is_valid(row) {
                    column.value(row)
                } else {
                    0.0
                }
            };
            rows.push((value.value(row).to_string(), number(now), number(before)));
        }
    }
    let before_total: f64 = rows.iter().map(|r| r.2).sum();
    if before_total == 0.0 {
        return Ok(Vec::new());
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
    Ok(plinth_anomaly::explain_change(&[breakdown]))
}
