//! Column-level lineage from DataFusion logical plans.
//!
//! Each model's compiled SQL is planned (not run) in a session that sees the
//! published warehouse; every output column is then traced down the plan to
//! the table-scan columns it is computed from. DataFusion inlines a view as a
//! subquery aliased by the view's name; tracing stops there, so an edge
//! always points at the relation the SQL names (a model, seed, snapshot or
//! source table), and following edges from relation to relation gives the
//! whole graph. Ephemeral models are inlined as CTEs, so lineage looks
//! through them.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use datafusion::logical_expr::{Expr, JoinType, LogicalPlan};
use plinth_engine::Engine;
use plinth_pipelines::{CompiledProject, ResourceType};
use serde::Serialize;

/// A column of a relation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ColumnRef {
    pub relation: String,
    pub column: String,
}

impl std::fmt::Display for ColumnRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.relation, self.column)
    }
}

/// Every model column and the columns it is computed from.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LineageGraph {
    /// Column -> the columns it reads directly.
    pub upstream: BTreeMap<ColumnRef, BTreeSet<ColumnRef>>,
    /// Models whose SQL could not be planned (not built yet, for one), with why.
    pub unplanned: BTreeMap<String, String>,
}

impl LineageGraph {
    /// Columns that `column` is computed from, transitively, nearest first,
    /// each with its distance.
    pub fn ancestors(&self, column: &ColumnRef) -> Vec<(usize, ColumnRef)> {
        walk(column, |c| {
            self.upstream.get(c).cloned().unwrap_or_default()
        })
    }

    /// Columns computed from `column`, transitively, nearest first.
    pub fn descendants(&self, column: &ColumnRef) -> Vec<(usize, ColumnRef)> {
        walk(column, |c| {
            self.upstream
                .iter()
                .filter(|(_, sources)| sources.contains(c))
                .map(|(target, _)| target.clone())
                .collect()
        })
    }

    /// Whether `column` is a column of a relation the graph knows.
    pub fn knows(&self, column: &ColumnRef) -> bool {
        self.upstream.contains_key(column)
            || self
                .upstream
                .values()
                .any(|sources| sources.contains(column))
    }
}

fn walk(
    start: &ColumnRef,
    next: impl Fn(&ColumnRef) -> BTreeSet<ColumnRef>,
) -> Vec<(usize, ColumnRef)> {
    let mut seen = BTreeSet::from([start.clone()]);
    let mut found = Vec::new();
    let mut frontier = vec![start.clone()];
    let mut depth = 0;
    while !frontier.is_empty() {
        depth += 1;
        let mut following = Vec::new();
        for column in &frontier {
            for neighbour in next(column) {
                if seen.insert(neighbour.clone()) {
                    found.push((depth, neighbour.clone()));
                    following.push(neighbour);
                }
            }
        }
        frontier = following;
    }
    found
}

/// Plans every model and snapshot of `compiled` against the published
/// warehouse and traces its columns.
pub async fn lineage(engine: &Engine, compiled: &CompiledProject) -> Result<LineageGraph> {
    let ctx = engine.session(None).await?;
    let views: BTreeSet<String> = compiled
        .nodes
        .values()
        .filter(|n| n.node.config.materialized == "view")
        .filter_map(|n| n.relation_name())
        .collect();
    let tracer = Tracer { views: &views };
    let mut graph = LineageGraph::default();
    for id in &compiled.order {
        let node = &compiled.nodes[id];
        let traced = matches!(
            node.node.resource_type,
            ResourceType::Model | ResourceType::Snapshot
        ) && !node.is_ephemeral();
        let Some(relation) = node.relation_name().filter(|_| traced) else {
            continue;
        };
        let plan = match ctx.state().create_logical_plan(&node.compiled_sql).await {
            Ok(plan) => plan,
            Err(e) => {
                graph.unplanned.insert(relation, e.find_root().to_string());
                continue;
            }
        };
        for (index, field) in plan.schema().fields().iter().enumerate() {
            let target = ColumnRef {
                relation: relation.clone(),
                column: field.name().clone(),
            };
            graph.upstream.insert(target, tracer.sources(&plan, index));
        }
    }
    Ok(graph)
}

struct Tracer<'a> {
    /// Relations that are views: where an inlined view's subquery stops.
    views: &'a BTreeSet<String>,
}

impl Tracer<'_> {
    /// The table-scan columns output column `index` of `plan` is computed from.
    fn sources(&self, plan: &LogicalPlan, index: usize) -> BTreeSet<ColumnRef> {
        match plan {
            LogicalPlan::SubqueryAlias(alias) if self.views.contains(alias.alias.table()) => {
                BTreeSet::from([ColumnRef {
                    relation: alias.alias.table().to_string(),
                    column: alias.schema.field(index).name().clone(),
                }])
            }
            LogicalPlan::TableScan(scan) => {
                let field = scan.projected_schema.field(index);
                BTreeSet::from([ColumnRef {
                    relation: scan.table_name.table().to_string(),
                    column: field.name().clone(),
                }])
            }
            LogicalPlan::Projection(projection) => {
                self.expr_sources(&projection.expr[index], &projection.input)
            }
            LogicalPlan::Aggregate(aggregate) => {
                let groups = aggregate.group_expr.len();
                match aggregate.group_expr.get(index) {
                    Some(expr) => self.expr_sources(expr, &aggregate.input),
                    None => aggregate
                        .aggr_expr
                        .get(index - groups)
                        .map(|expr| self.expr_sources(expr, &aggregate.input))
                        .unwrap_or_default(),
                }
            }
            LogicalPlan::Window(window) => {
                let passed = window.input.schema().fields().len();
                if index < passed {
                    self.sources(&window.input, index)
                } else {
                    self.expr_sources(&window.window_expr[index - passed], &window.input)
                }
            }
            LogicalPlan::Join(join) => {
                let left = join.left.schema().fields().len();
                match join.join_type {
                    JoinType::LeftSemi | JoinType::LeftAnti | JoinType::LeftMark => {
                        self.sources(&join.left, index)
                    }
                    JoinType::RightSemi | JoinType::RightAnti | JoinType::RightMark => {
                        self.sources(&join.right, index)
                    }
                    _ if index < left => self.sources(&join.left, index),
                    _ => self.sources(&join.right, index - left),
                }
            }
            LogicalPlan::Union(union) => union
                .inputs
                .iter()
                .flat_map(|input| self.sources(input, index))
                .collect(),
            other => {
                // Filters, sorts, limits, aliases, distinct, repartitions: the
                // input's columns pass through in order.
                let inputs = other.inputs();
                match inputs.as_slice() {
                    [input] if input.schema().fields().len() == other.schema().fields().len() => {
                        self.sources(input, index)
                    }
                    _ => BTreeSet::new(),
                }
            }
        }
    }

    fn expr_sources(&self, expr: &Expr, input: &LogicalPlan) -> BTreeSet<ColumnRef> {
        expr.column_refs()
            .into_iter()
            .filter_map(|column| input.schema().index_of_column(column).ok())
            .flat_map(|i| self.sources(input, i))
            .collect()
    }
}
