//! Optimizer rules that replace one aggregate at a time.
//!
//! The engine's rules ([`crate::event_counts`], [`crate::person_num_grouping`])
//! each look at one `Aggregate` node and either leave it or put another plan
//! in its place. [`AggregateRule`] is the DataFusion rule around such a
//! rewrite: it visits the plan bottom-up and hands each aggregate over.

use datafusion::common::Result;
use datafusion::common::tree_node::Transformed;
use datafusion::logical_expr::{Aggregate, LogicalPlan};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

/// A rewrite of one aggregate.
pub trait AggregateRewrite: std::fmt::Debug + Send + Sync {
    /// The rule's name, as DataFusion lists it.
    const NAME: &'static str;

    /// The plan to put in `aggregate`'s place, or `None` to leave it.
    fn rewrite_aggregate(&self, aggregate: &Aggregate) -> Result<Option<LogicalPlan>>;
}

/// The optimizer rule that applies `R` to every aggregate, bottom-up.
#[derive(Debug, Default)]
pub struct AggregateRule<R>(pub R);

impl<R: AggregateRewrite> OptimizerRule for AggregateRule<R> {
    fn name(&self) -> &str {
        R::NAME
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Aggregate(aggregate) = &plan else {
            return Ok(Transformed::no(plan));
        };
        Ok(match self.0.rewrite_aggregate(aggregate)? {
            Some(rewritten) => Transformed::yes(rewritten),
            None => Transformed::no(plan),
        })
    }
}
