//! From raw events to per-variant sufficient statistics, in one SQL query.
//!
//! The query has three steps, all inside DataFusion:
//!
//! 1. `exposures`: each person's first exposure to the flag (persons as
//!    `events.person_id` resolves them, so merged persons count once), with
//!    the smallest and largest variant they were served, as positions in
//!    the definition's list (integers hash and compare faster than names);
//!    a person whose two differ saw more than one variant.
//! 2. `per_person`: the exposures left-joined to the events any metric
//!    reads, aggregated per person into one column per [`Quantity`]: a
//!    component (conversion, count or sum of an event) over a window after
//!    first exposure, or over the CUPED pre-period before it. It groups by
//!    `person_id` alone (the variants are aggregates of one value per
//!    person), so the join's partitioning by person serves the aggregation
//!    too: no second shuffle and no partial aggregate.
//! 3. per variant (and whether the person saw several): the number of
//!    persons and, per quantity, the sum and the sum of squares, plus the
//!    sums of the products that ratios and CUPED need.
//!
//! Events are read twice (exposures, then metric events), each scan
//! filtered by event name, which the files are sorted by.

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{Float64Type, Int64Type};
use plinth_engine::{Engine, Privileges, QueryError};

use crate::definition::{Component, Experiment, Measure, MetricKind};

/// When, relative to a person's first exposure, a quantity is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Span {
    /// From first exposure for this many microseconds, or to the end.
    After(Option<i64>),
    /// This many microseconds before first exposure (CUPED's pre-period).
    Before(i64),
}

/// One per-person column of the query.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Quantity {
    pub component: Component,
    pub span: Span,
}

/// The sums of one group of persons (one variant).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupSums {
    pub units: u64,
    /// Per quantity, in [`QueryPlan::quantities`] order.
    pub sums: Vec<f64>,
    pub sums_of_squares: Vec<f64>,
    /// Per pair in [`QueryPlan::products`] order: the sum of their product.
    pub sums_of_products: Vec<f64>,
}

/// What the query returns: the sums of each declared variant, and how many
/// persons were left out for having seen several variants.
#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentSums {
    /// In the definition's variant order.
    pub variants: Vec<GroupSums>,
    pub multiple_variant_persons: u64,
}

/// The quantities and products an experiment needs, and the SQL that
/// computes them.
#[derive(Debug, Clone)]
pub struct QueryPlan {
    pub quantities: Vec<Quantity>,
    /// Pairs of indexes into `quantities`.
    pub products: Vec<(usize, usize)>,
    pub sql: String,
}

impl QueryPlan {
    pub fn new(experiment: &Experiment) -> QueryPlan {
        let mut quantities: Vec<Quantity> = Vec::new();
        let mut products: Vec<(usize, usize)> = Vec::new();
        let mut index_of = |quantity: Quantity| match quantities.iter().position(|q| *q == quantity)
        {
            Some(i) => i,
            None => {
                quantities.push(quantity);
                quantities.len() - 1
            }
        };
        let mut wanted_products = Vec::new();
        for metric in &experiment.metrics {
            let after = Span::After(metric.window_micros);
            match &metric.measure {
                Measure::Single(component) => {
                    let post = index_of(Quantity {
                        component: component.clone(),
                        span: after,
                    });
                    if let Some(pre_period) = experiment.pre_period_micros {
                        let pre = index_of(Quantity {
                            component: component.clone(),
                            span: Span::Before(pre_period),
                        });
                        wanted_products.push((post, pre));
                    }
                }
                Measure::Ratio {
                    numerator,
                    denominator,
                } => {
                    let n = index_of(Quantity {
                        component: numerator.clone(),
                        span: after,
                    });
                    let d = index_of(Quantity {
                        component: denominator.clone(),
                        span: after,
                    });
                    wanted_products.push((n, d));
                }
            }
        }
        for pair in wanted_products {
            if !products.contains(&pair) {
                products.push(pair);
            }
        }
        let sql = build_sql(experiment, &quantities, &products);
        QueryPlan {
            quantities,
            products,
            sql,
        }
    }

    /// The index of a quantity in [`QueryPlan::quantities`].
    pub fn quantity(&self, component: &Component, span: Span) -> usize {
        self.quantities
            .iter()
            .position(|q| q.component == *component && q.span == span)
            .expect("the plan holds every quantity its metrics need")
    }

    /// The index of a product in [`QueryPlan::products`].
    pub fn product(&self, a: usize, b: usize) -> usize {
        self.products
            .iter()
            .position(|p| *p == (a, b))
            .expect("the plan holds every product its metrics need")
    }

    /// Runs the query and collects the sums per variant.
    pub async fn run(
        &self,
        engine: &Engine,
        experiment: &Experiment,
    ) -> Result<ExperimentSums, QueryError> {
        let result = engine.query(&self.sql, Privileges::ReadStore).await?;
        let variants = &experiment.definition.variants;
        let empty = GroupSums {
            units: 0,
            sums: vec![0.0; self.quantities.len()],
            sums_of_squares: vec![0.0; self.quantities.len()],
            sums_of_products: vec![0.0; self.products.len()],
        };
        let mut sums = ExperimentSums {
            variants: vec![empty; variants.len()],
            multiple_variant_persons: 0,
        };
        for batch in &result.batches {
            let variant = batch.column(0).as_primitive::<Int64Type>();
            let multiple = batch.column(1).as_boolean();
            let units = batch.column(2).as_primitive::<Int64Type>();
            let float = |name: &str| {
                batch
                    .column_by_name(name)
                    .map(|c| c.as_primitive::<Float64Type>())
                    .ok_or_else(|| QueryError::Internal(format!("no column {name}")))
            };
            for row in 0..batch.num_rows() {
                let units = units.value(row) as u64;
                if multiple.value(row) {
                    sums.multiple_variant_persons += units;
                    continue;
                }
                let group = &mut sums.variants[variant.value(row) as usize];
                group.units = units;
                let value = |column: &datafusion::arrow::array::Float64Array| {
                    if column.is_valid(row) {
                        column.value(row)
                    } else {
                        0.0
                    }
                };
                for i in 0..self.quantities.len() {
                    group.sums[i] = value(float(&format!("sum_{i}"))?);
                    group.sums_of_squares[i] = value(float(&format!("sum_squares_{i}"))?);
                }
                for (k, (a, b)) in self.products.iter().enumerate() {
                    group.sums_of_products[k] = value(float(&format!("sum_product_{a}_{b}"))?);
                }
            }
        }
        Ok(sums)
    }
}

/// A SQL text literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A UTC timestamp literal comparable with `events.timestamp`.
fn timestamp(micros: i64) -> String {
    format!("to_timestamp_micros({micros}) AT TIME ZONE 'UTC'")
}

fn build_sql(
    experiment: &Experiment,
    quantities: &[Quantity],
    products: &[(usize, usize)],
) -> String {
    let definition = &experiment.definition;
    let exposure = &definition.exposure;
    let mut exposure_filter = format!(
        "event = {} AND (properties->>{}) = {}",
        literal(&exposure.event),
        literal(&exposure.flag_property),
        literal(&definition.flag)
    );
    if let Some(start) = experiment.start_micros {
        exposure_filter += &format!(" AND timestamp >= {}", timestamp(start));
    }
    if let Some(end) = experiment.end_micros {
        exposure_filter += &format!(" AND timestamp <= {}", timestamp(end));
    }
    let variant_index: String = definition
        .variants
        .iter()
        .enumerate()
        .map(|(i, v)| format!(" WHEN {} THEN {i}", literal(v)))
        .collect();

    // Each summed (event, property) is read from JSON once, as a column of
    // the metric events, and only on rows of that event.
    let mut summed: Vec<(&str, &str)> = Vec::new();
    for q in quantities {
        if let Some(property) = &q.component.property {
            let pair = (q.component.event.as_str(), property.as_str());
            if !summed.contains(&pair) {
                summed.push(pair);
            }
        }
    }
    let mut metric_columns = String::new();
    for (i, (event, property)) in summed.iter().enumerate() {
        metric_columns += &format!(
            ", CASE WHEN event = {} THEN coalesce(json_get_float(properties, {}), 0.0) END AS value_{i}",
            literal(event),
            literal(property)
        );
    }
    let mut events: Vec<&str> = quantities
        .iter()
        .map(|q| q.component.event.as_str())
        .collect();
    events.sort_unstable();
    events.dedup();
    let events: Vec<String> = events.iter().map(|e| literal(e)).collect();
    let mut metric_filter = format!("event IN ({})", events.join(", "));
    if let Some(start) = experiment.start_micros {
        let earliest = start - experiment.pre_period_micros.unwrap_or(0);
        metric_filter += &format!(" AND timestamp >= {}", timestamp(earliest));
    }
    if let Some(end) = experiment.end_micros {
        metric_filter += &format!(" AND timestamp <= {}", timestamp(end));
    }

    let mut per_person_columns = String::new();
    for (i, q) in quantities.iter().enumerate() {
        let window = match q.span {
            Span::After(None) => "m.ts >= x.first_exposure".to_string(),
            Span::After(Some(length)) => {
                format!("m.ts >= x.first_exposure AND m.ts < x.first_exposure + {length}")
            }
            Span::Before(length) => {
                format!("m.ts < x.first_exposure AND m.ts >= x.first_exposure - {length}")
            }
        };
        let condition = format!("m.event = {} AND {window}", literal(&q.component.event));
        let column = match q.component.kind {
            MetricKind::Conversion => format!("max(CASE WHEN {condition} THEN 1 ELSE 0 END)"),
            MetricKind::Count => format!("sum(CASE WHEN {condition} THEN 1 ELSE 0 END)"),
            MetricKind::Sum => {
                let property = q.component.property.as_deref().unwrap_or_default();
                let value = summed
                    .iter()
                    .position(|p| *p == (q.component.event.as_str(), property))
                    .expect("every summed property has a column");
                format!("sum(CASE WHEN {condition} THEN m.value_{value} ELSE 0.0 END)")
            }
            MetricKind::Ratio => unreachable!("ratios are split into components"),
        };
        per_person_columns += &format!(", CAST({column} AS DOUBLE) AS q{i}");
    }

    let mut totals = String::new();
    for i in 0..quantities.len() {
        totals += &format!(", sum(q{i}) AS sum_{i}, sum(q{i} * q{i}) AS sum_squares_{i}");
    }
    for (a, b) in products {
        totals += &format!(", sum(q{a} * q{b}) AS sum_product_{a}_{b}");
    }

    format!(
        "WITH exposures AS (
           SELECT person_id, min(ts) AS first_exposure, min(variant) AS variant, max(variant) AS other_variant
           FROM (SELECT person_id, arrow_cast(timestamp, 'Int64') AS ts,
                        CAST(CASE properties->>{variant_property}{variant_index} END AS BIGINT) AS variant
                 FROM events WHERE {exposure_filter})
           WHERE variant IS NOT NULL
           GROUP BY person_id),
         metric_events AS (
           SELECT person_id, event, arrow_cast(timestamp, 'Int64') AS ts{metric_columns}
           FROM events WHERE {metric_filter}),
         per_person AS (
           SELECT min(x.variant) AS variant, min(x.variant) <> min(x.other_variant) AS multiple{per_person_columns}
           FROM exposures x LEFT JOIN metric_events m ON m.person_id = x.person_id
           GROUP BY x.person_id)
         SELECT variant, multiple, count(*) AS units{totals}
         FROM per_person GROUP BY variant, multiple",
        variant_property = literal(&exposure.variant_property),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::ExperimentDefinition;

    #[test]
    fn metrics_share_their_quantities_and_cuped_adds_pre_periods_for_single_metrics() {
        let experiment = ExperimentDefinition::parse(
            "
name: e
flag: e
variants: [a, b]
primary_metrics:
  - {name: revenue, kind: sum, event: purchase, property: amount}
secondary_metrics:
  - name: per purchase
    kind: ratio
    numerator: {kind: sum, event: purchase, property: amount}
    denominator: {kind: count, event: purchase}
cuped: {pre_period_days: 7}
",
        )
        .unwrap();
        let plan = QueryPlan::new(&experiment);
        let spans: Vec<(MetricKind, Span)> = plan
            .quantities
            .iter()
            .map(|q| (q.component.kind, q.span))
            .collect();
        let week = 7 * 86_400_000_000;
        assert_eq!(
            spans,
            [
                (MetricKind::Sum, Span::After(None)),
                (MetricKind::Sum, Span::Before(week)),
                (MetricKind::Count, Span::After(None)),
            ]
        );
        assert_eq!(plan.products, [(0, 1), (0, 2)]);
        // The amount is read from JSON once, for purchases only.
        assert_eq!(plan.sql.matches("json_get_float").count(), 1);
        assert!(plan.sql.contains("(properties->>'$feature_flag') = 'e'"));
    }
}
