//! `GROUP BY person_id` over `events`, grouped by `person_num` instead.
//!
//! Funnels, retention and most per-person questions group the events by
//! person. Grouping by the 36-byte `person_id` text hashes and compares
//! strings, and at millions of persons the hash table outgrows the caches;
//! `person_num` is the same person as an 8-byte integer. While every event
//! has a number, the two name persons one-to-one (the ingest gives each
//! person one number; merges resolve both through the same overrides), so
//! grouping by either makes the same groups.
//!
//! The rule rewrites an aggregate whose only grouping key is `person_id`,
//! read from the stored `events` through filters or an alias, into one
//! grouped by `person_num` that carries `person_id` along with
//! `first_value`; a projection restores the original output. When the
//! query never reads the grouped `person_id`, DataFusion's projection
//! pruning drops the carried value and the column is not read at all.
//!
//! [`CountDistinctPersonNum`] likewise counts `count(DISTINCT person_id)`
//! over `events` as `count(DISTINCT person_num)`.
//!
//! The engine adds the rules only to sessions where they hold: `events` is
//! the stored table (no merge overrides) and no stored or buffered event
//! lacks a number ([`plinth_store::Table::never_null`]).

use std::sync::Arc;

use datafusion::common::{Column, Result};
use datafusion::datasource::source_as_provider;
use datafusion::functions_aggregate::expr_fn::first_value;
use datafusion::logical_expr::expr::{AggregateFunction, AggregateFunctionParams};
use datafusion::logical_expr::{
    Aggregate, Expr, Filter, LogicalPlan, Projection, SubqueryAlias, TableScan,
};
use plinth_store::provider::StoreTable;

use crate::aggregate_rule::AggregateRewrite;

/// The events table's name and the columns the rule trades.
const EVENTS: &str = "events";
const PERSON_ID: &str = "person_id";
const PERSON_NUM: &str = "person_num";

/// The alias of the carried `person_id`, never seen outside the rewrite.
const CARRIED: &str = "__plinth_grouped_person_id";

#[derive(Debug, Default)]
pub struct GroupByPersonNum;

impl AggregateRewrite for GroupByPersonNum {
    const NAME: &'static str = "plinth_group_by_person_num";

    fn rewrite_aggregate(&self, aggregate: &Aggregate) -> Result<Option<LogicalPlan>> {
        let [Expr::Column(person_id)] = aggregate.group_expr.as_slice() else {
            return Ok(None);
        };
        if person_id.name != PERSON_ID {
            return Ok(None);
        }
        let Some((input, person_num)) = input_with_person_num(&aggregate.input)? else {
            return Ok(None);
        };

        let mut aggr_expr = aggregate.aggr_expr.clone();
        aggr_expr.push(first_value(Expr::Column(person_id.clone()), vec![]).alias(CARRIED));
        let regrouped =
            Aggregate::try_new(Arc::new(input), vec![Expr::Column(person_num)], aggr_expr)?;
        // Output as before: the grouped person_id first, then the
        // aggregates, under their original names.
        let regrouped_schema = regrouped.schema.clone();
        let column_at = |i: usize| Expr::Column(Column::from(regrouped_schema.qualified_field(i)));
        let carried = aggregate.aggr_expr.len() + 1;
        let restored = (0..aggregate.schema.fields().len())
            .map(|i| {
                let (qualifier, field) = aggregate.schema.qualified_field(i);
                let source = if i == 0 { carried } else { i };
                column_at(source).alias_qualified(qualifier.cloned(), field.name())
            })
            .collect();
        let projection =
            Projection::try_new(restored, Arc::new(LogicalPlan::Aggregate(regrouped)))?;
        Ok(Some(LogicalPlan::Projection(projection)))
    }
}

/// `count(DISTINCT person_id)` over `events` counts `person_num` instead:
/// the same number where the two name persons one-to-one, from an 8-byte
/// column instead of 36-byte text. It must run before DataFusion's own
/// rules, which turn a lone distinct count into one more grouping key.
#[derive(Debug, Default)]
pub struct CountDistinctPersonNum;

impl AggregateRewrite for CountDistinctPersonNum {
    const NAME: &'static str = "plinth_count_distinct_person_num";

    fn rewrite_aggregate(&self, aggregate: &Aggregate) -> Result<Option<LogicalPlan>> {
        if !aggregate
            .aggr_expr
            .iter()
            .any(|e| counted_person_id(e).is_some())
        {
            return Ok(None);
        }
        let Some((input, person_num)) = input_with_person_num(&aggregate.input)? else {
            return Ok(None);
        };
        let person_num = Expr::Column(person_num);
        let aggr_expr = aggregate
            .aggr_expr
            .iter()
            .map(|expr| match counted_person_id(expr) {
                // Under the original name, so nothing above changes.
                Some(count) => Expr::AggregateFunction(AggregateFunction {
                    func: count.func.clone(),
                    params: AggregateFunctionParams {
                        args: vec![person_num.clone()],
                        ..count.params.clone()
                    },
                })
                .alias(expr.schema_name().to_string()),
                None => expr.clone(),
            })
            .collect();
        let recounted =
            Aggregate::try_new(Arc::new(input), aggregate.group_expr.clone(), aggr_expr)?;
        if recounted.schema.fields() != aggregate.schema.fields() {
            return Ok(None);
        }
        Ok(Some(LogicalPlan::Aggregate(recounted)))
    }
}

/// The count, if `expr` is `count(DISTINCT person_id)` (any filter).
fn counted_person_id(expr: &Expr) -> Option<&AggregateFunction> {
    let Expr::AggregateFunction(count) = expr else {
        return None;
    };
    let counts_person_id = count.func.name() == "count"
        && count.params.distinct
        && count.params.order_by.is_empty()
        && matches!(count.params.args.as_slice(), [Expr::Column(c)] if c.name == PERSON_ID);
    counts_person_id.then_some(count)
}

/// [`with_person_num`], with the `person_num` column of its output.
fn input_with_person_num(input: &LogicalPlan) -> Result<Option<(LogicalPlan, Column)>> {
    let Some(input) = with_person_num(input)? else {
        return Ok(None);
    };
    let (qualifier, _) = input
        .schema()
        .qualified_field_with_unqualified_name(PERSON_NUM)?;
    let person_num = Column::new(qualifier.cloned(), PERSON_NUM);
    Ok(Some((input, person_num)))
}

/// `input` rebuilt so that its output has the events' `person_num` (and
/// still their `person_id`), when it is the stored events table under
/// filters and aliases only; `None` otherwise.
fn with_person_num(input: &LogicalPlan) -> Result<Option<LogicalPlan>> {
    Ok(match input {
        LogicalPlan::Filter(filter) => match with_person_num(&filter.input)? {
            Some(rebuilt) => Some(LogicalPlan::Filter(Filter::try_new(
                filter.predicate.clone(),
                Arc::new(rebuilt),
            )?)),
            None => None,
        },
        LogicalPlan::SubqueryAlias(alias) => match with_person_num(&alias.input)? {
            Some(rebuilt) => Some(LogicalPlan::SubqueryAlias(SubqueryAlias::try_new(
                Arc::new(rebuilt),
                alias.alias.clone(),
            )?)),
            None => None,
        },
        LogicalPlan::TableScan(scan) => scan_with_person_num(scan)?,
        _ => None,
    })
}

fn scan_with_person_num(scan: &TableScan) -> Result<Option<LogicalPlan>> {
    let provider = source_as_provider(&scan.source)?;
    let is_events = provider
        .downcast_ref::<StoreTable>()
        .is_some_and(|store| store.table().name() == EVENTS);
    if !is_events {
        return Ok(None);
    }
    let schema = scan.source.schema();
    let (Ok(person_id), Ok(person_num)) = (schema.index_of(PERSON_ID), schema.index_of(PERSON_NUM))
    else {
        return Ok(None);
    };
    let projection = match &scan.projection {
        None => None,
        Some(columns) if !columns.contains(&person_id) => return Ok(None),
        Some(columns) if columns.contains(&person_num) => Some(columns.clone()),
        Some(columns) => Some([columns.as_slice(), &[person_num]].concat()),
    };
    let rebuilt = datafusion::logical_expr::logical_plan::TableScanBuilder::new(
        scan.table_name.clone(),
        scan.source.clone(),
    )
    .with_projection(projection)
    .with_filters(scan.filters.clone())
    .with_fetch(scan.fetch)
    .with_statistics_requests(scan.statistics_requests.clone())
    .build()?;
    Ok(Some(LogicalPlan::TableScan(rebuilt)))
}
