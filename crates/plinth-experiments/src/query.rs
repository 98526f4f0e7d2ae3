//! From raw events to per-variant sufficient statistics: two scans of
//! `events` into one table of exposed persons, then one pass over it.
//!
//! 1. Exposures: one scan of the exposure event (files are sorted by event,
//!    so it reads only those rows) feeds `plinth_experiment_exposures`, an
//!    aggregate function that records, per person (as `events.person_num`
//!    resolves them, so merged persons count once; `person_id` when some
//!    scanned events predate numbers), the first exposure and
//!    the smallest and largest variant served, as positions in the
//!    definition's list; a person whose two differ saw more than one
//!    variant. A row counts when its flag property is the flag and its
//!    variant property a declared variant, both read as `properties->>key`
//!    reads them (in one pass, see [`crate::flag_json`]), within the
//!    experiment's start and end.
//! 2. Metrics: one scan of the events any metric reads feeds
//!    `plinth_experiment_metrics`, which adds each event of an exposed
//!    person to that person's accumulators, one per [`Quantity`]: a
//!    component (conversion, count or sum of an event) over a window after
//!    first exposure, or over the CUPED pre-period before it. Events of
//!    persons never exposed are dropped.
//! 3. Per variant (persons who saw several set aside and counted): the
//!    number of persons and, per quantity, the sum and the sum of squares,
//!    plus the sums of the products that ratios and CUPED need.
//!
//! This computes what one SQL query over the same rows would (exposures
//! grouped by person, left-joined to the metric events, grouped by person
//! again, then by variant; see `tests/experiments.rs`, which compares with
//! DuckDB), without the join and the two 10M-group string aggregations:
//! both scans run on every partition of the session and fill one table of
//! persons keyed by their UUID's 128 bits ([`crate::persons`]). Both scans
//! are planned before either runs, so they read the same files. The
//! session has the engine's memory pool (the table reserves what it
//! holds), the query's deadline is checked on every batch, and the SQL
//! runs with read-only privileges.

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::Int64Type;
use datafusion::error::DataFusionError;
use datafusion::execution::FunctionRegistry;
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::prelude::{SQLOptions, SessionContext};
use plinth_engine::{Engine, QueryError};

use crate::definition::{Component, Experiment, Measure, MetricKind};
use crate::persons::{
    ExposureRule, MetricRule, PastDeadline, PersonKeys, Persons, Update, Window, exposures_udaf,
    metrics_udaf,
};

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

/// The quantities and products an experiment needs, and the scans that
/// compute them.
#[derive(Debug, Clone)]
pub struct QueryPlan {
    pub quantities: Vec<Quantity>,
    /// Pairs of indexes into `quantities`.
    pub products: Vec<(usize, usize)>,
    /// The exposures' scan, into `plinth_experiment_exposures`, with
    /// [`PERSON`] for the column naming persons.
    exposures_sql: String,
    /// The metric events' scan, into `plinth_experiment_metrics`; `None`
    /// without metrics.
    metrics_sql: Option<String>,
    /// Counts the scanned events without a person number.
    unnumbered_sql: String,
    /// What each metric event does to a person's accumulators.
    metric_rule: MetricRule,
    /// Per quantity, its accumulator.
    accumulators: Vec<Accumulator>,
}

/// Where a person's quantity is accumulated.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Accumulator {
    /// A counter (a conversion is 0 or 1).
    Count(usize),
    Sum(usize),
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
        let exposures_sql = exposures_sql(experiment);
        let (metrics_sql, metric_rule, accumulators) = metrics(experiment, &quantities);
        let mut scanned: Vec<String> = metric_rule.events.iter().map(|e| literal(e)).collect();
        scanned.push(literal(&experiment.definition.exposure.event));
        let unnumbered_sql = format!(
            "SELECT count(*) FROM events WHERE person_num IS NULL AND event IN ({})",
            scanned.join(", ")
        );
        QueryPlan {
            quantities,
            products,
            exposures_sql,
            metrics_sql,
            unnumbered_sql,
            metric_rule,
            accumulators,
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

    /// Runs the scans and collects the sums per variant.
    pub async fn run(
        &self,
        engine: &Engine,
        experiment: &Experiment,
    ) -> Result<ExperimentSums, QueryError> {
        let limits = engine.limits();
        let deadline = Instant::now() + limits.time;
        let ctx = engine.session(None).await?;
        let classify = |error: DataFusionError| classify(engine, error);
        // Numbers unless some scanned events predate them (nulls are
        // pruned by the files' statistics, so this reads next to nothing).
        let unnumbered = ctx
            .sql_with_options(&self.unnumbered_sql, read_only())
            .await
            .map_err(classify)?
            .collect()
            .await
            .map_err(classify)?;
        let unnumbered = unnumbered
            .first()
            .and_then(|batch| batch.column(0).as_primitive_opt::<Int64Type>())
            .map_or(0, |counts| counts.value(0));
        let (keys, person) = if unnumbered == 0 {
            (PersonKeys::Numbers, "person_num")
        } else {
            (PersonKeys::Ids, "person_id")
        };
        let reservation =
            MemoryConsumer::new("experiment persons").register(&ctx.runtime_env().memory_pool);
        let rule = &self.metric_rule;
        let persons = Arc::new(Persons::new(
            keys,
            rule.counts,
            rule.sums,
            reservation,
            deadline,
        ));
        let definition = &experiment.definition;
        let exposure = &definition.exposure;
        ctx.register_udaf(exposures_udaf(
            persons.clone(),
            ExposureRule {
                flag_property: exposure.flag_property.clone(),
                variant_property: exposure.variant_property.clone(),
                flag: definition.flag.clone(),
                variants: definition.variants.clone(),
                json_as_text: ctx.udf("json_as_text").map_err(classify)?,
            },
        ));
        ctx.register_udaf(metrics_udaf(persons.clone(), rule.clone()));

        // Both planned first, so both read the same snapshot of the files.
        let exposures = plan(&ctx, &self.exposures_sql.replace(PERSON, person))
            .await
            .map_err(classify)?;
        let metrics = match &self.metrics_sql {
            Some(sql) => Some(
                plan(&ctx, &sql.replace(PERSON, person))
                    .await
                    .map_err(classify)?,
            ),
            None => None,
        };
        datafusion::physical_plan::collect(exposures, ctx.task_ctx())
            .await
            .map_err(classify)?;
        if let Some(metrics) = metrics {
            datafusion::physical_plan::collect(metrics, ctx.task_ctx())
                .await
                .map_err(classify)?;
        }
        if Instant::now() > deadline {
            return Err(QueryError::TimedOut(limits.time));
        }
        Ok(self.sums(
            &persons,
            experiment.definition.variants.len(),
            limits.threads,
        ))
    }

    /// The per-variant sums over every exposed person.
    fn sums(&self, persons: &Persons, variants: usize, threads: usize) -> ExperimentSums {
        let empty = GroupSums {
            units: 0,
            sums: vec![0.0; self.quantities.len()],
            sums_of_squares: vec![0.0; self.quantities.len()],
            sums_of_products: vec![0.0; self.products.len()],
        };
        let init = || ExperimentSums {
            variants: vec![empty.clone(); variants],
            multiple_variant_persons: 0,
        };
        // Each thread reads a person's quantities once into its own scratch.
        let scratch = || (init(), vec![0.0; self.quantities.len()]);
        let parts = persons.fold(threads, scratch, |(totals, values), person| {
            let (variant_min, variant_max) = person.variants();
            if variant_min != variant_max {
                totals.multiple_variant_persons += 1;
                return;
            }
            let group = &mut totals.variants[variant_min as usize];
            group.units += 1;
            for (value, accumulator) in values.iter_mut().zip(&self.accumulators) {
                *value = match *accumulator {
                    Accumulator::Count(j) => person.count(j) as f64,
                    Accumulator::Sum(j) => person.sum(j),
                };
            }
            let sums = group.sums.iter_mut().zip(&mut group.sums_of_squares);
            for ((sum, square), &value) in sums.zip(values.iter()) {
                *sum += value;
                *square += value * value;
            }
            for (product, &(a, b)) in group.sums_of_products.iter_mut().zip(&self.products) {
                *product += values[a] * values[b];
            }
        });
        let mut total = init();
        for (part, _) in parts {
            total.multiple_variant_persons += part.multiple_variant_persons;
            for (group, part) in total.variants.iter_mut().zip(part.variants) {
                group.units += part.units;
                let add = |a: &mut Vec<f64>, b: Vec<f64>| {
                    for (a, b) in a.iter_mut().zip(b) {
                        *a += b;
                    }
                };
                add(&mut group.sums, part.sums);
                add(&mut group.sums_of_squares, part.sums_of_squares);
                add(&mut group.sums_of_products, part.sums_of_products);
            }
        }
        total
    }
}

/// The privileges of [`Engine::query`] for a read-only key.
fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Plans `sql` with read-only privileges.
async fn plan(
    ctx: &SessionContext,
    sql: &str,
) -> datafusion::error::Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
    ctx.sql_with_options(sql, read_only())
        .await?
        .create_physical_plan()
        .await
}

/// Where the scans' SQL names the column that keys persons.
const PERSON: &str = "{person}";

/// A DataFusion error as the engine reports it.
fn classify(engine: &Engine, error: DataFusionError) -> QueryError {
    let limits = engine.limits();
    match error.find_root() {
        DataFusionError::External(e) if e.is::<PastDeadline>() => QueryError::TimedOut(limits.time),
        DataFusionError::ResourcesExhausted(detail) => QueryError::OutOfMemory {
            limit: limits.memory_bytes,
            detail: detail.clone(),
        },
        root => QueryError::Internal(root.to_string()),
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

/// The exposure event's rows within the experiment's dates.
fn exposures_sql(experiment: &Experiment) -> String {
    let mut filter = format!("event = {}", literal(&experiment.definition.exposure.event));
    if let Some(start) = experiment.start_micros {
        filter += &format!(" AND timestamp >= {}", timestamp(start));
    }
    if let Some(end) = experiment.end_micros {
        filter += &format!(" AND timestamp <= {}", timestamp(end));
    }
    format!(
        "SELECT plinth_experiment_exposures({PERSON}, arrow_cast(timestamp, 'Int64'), properties) AS rows
         FROM events WHERE {filter}"
    )
}

/// The metric events' scan, what each event does to a person's
/// accumulators, and where each quantity is accumulated.
fn metrics(
    experiment: &Experiment,
    quantities: &[Quantity],
) -> (Option<String>, MetricRule, Vec<Accumulator>) {
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
    let mut events: Vec<&str> = quantities
        .iter()
        .map(|q| q.component.event.as_str())
        .collect();
    events.sort_unstable();
    events.dedup();

    let mut rule = MetricRule {
        events: events.iter().map(|e| e.to_string()).collect(),
        updates: vec![Vec::new(); events.len()],
        counts: 0,
        sums: 0,
        values: summed.len(),
    };
    let mut accumulators = Vec::new();
    for q in quantities {
        let window = match q.span {
            Span::After(length) => Window::After(length),
            Span::Before(length) => Window::Before(length),
        };
        let update = match q.component.kind {
            MetricKind::Conversion => {
                rule.counts += 1;
                accumulators.push(Accumulator::Count(rule.counts - 1));
                Update::Flag(rule.counts - 1)
            }
            MetricKind::Count => {
                rule.counts += 1;
                accumulators.push(Accumulator::Count(rule.counts - 1));
                Update::Count(rule.counts - 1)
            }
            MetricKind::Sum => {
                let property = q.component.property.as_deref().unwrap_or_default();
                let value = summed
                    .iter()
                    .position(|p| *p == (q.component.event.as_str(), property))
                    .expect("every summed property has a column");
                rule.sums += 1;
                accumulators.push(Accumulator::Sum(rule.sums - 1));
                Update::Sum {
                    sum: rule.sums - 1,
                    value,
                }
            }
            MetricKind::Ratio => unreachable!("ratios are split into components"),
        };
        let code = events
            .iter()
            .position(|e| *e == q.component.event)
            .expect("every quantity's event is scanned");
        rule.updates[code].push((window, update));
    }
    if events.is_empty() {
        return (None, rule, accumulators);
    }

    let mut span = String::new();
    if let Some(start) = experiment.start_micros {
        let earliest = start - experiment.pre_period_micros.unwrap_or(0);
        span += &format!(" AND timestamp >= {}", timestamp(earliest));
    }
    if let Some(end) = experiment.end_micros {
        span += &format!(" AND timestamp <= {}", timestamp(end));
    }
    // One scan per metric event, which passes its code: the files sort by
    // event, so each scan reads only its event's pages, no row compares
    // event names, and `properties` is decoded only for the events whose
    // sums need it.
    let scans: Vec<String> = events
        .iter()
        .enumerate()
        .map(|(code, event)| {
            let values: String = summed
                .iter()
                .enumerate()
                .map(|(i, (summed_event, property))| {
                    let value = if summed_event == event {
                        format!("coalesce(json_get_float(properties, {}), 0.0)", literal(property))
                    } else {
                        "CAST(NULL AS DOUBLE)".to_string()
                    };
                    format!(", {value} AS value_{i}")
                })
                .collect();
            format!(
                "SELECT {PERSON} AS person, {code} AS code, arrow_cast(timestamp, 'Int64') AS micros{values}
                 FROM events WHERE event = {}{span}",
                literal(event)
            )
        })
        .collect();
    let values: String = (0..summed.len()).map(|i| format!(", value_{i}")).collect();
    let sql = format!(
        "SELECT plinth_experiment_metrics(person, code, micros{values}) AS rows
         FROM ({}) AS metric_events",
        scans.join(" UNION ALL ")
    );
    (Some(sql), rule, accumulators)
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
        let metrics = plan.metrics_sql.as_deref().unwrap();
        assert_eq!(metrics.matches("json_get_float").count(), 1);
        assert!(metrics.contains("event = 'purchase'"));
        assert!(
            plan.exposures_sql
                .contains("event = '$feature_flag_called'")
        );
    }
}
