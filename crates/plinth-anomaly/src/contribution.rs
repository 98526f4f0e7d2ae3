//! Contribution analysis: which breakdown values (country, plan, device, ...)
//! explain a detected change of a metric.
//!
//! For each dimension the change of the metric is split additively over its
//! values: a value's share is its own change (actual − expected) divided by
//! the dimension's total change. Shares of one dimension sum to 1; a value
//! that moved against the total has a negative share, and one that moved
//! more than the total has a share above 1. Pure function, no I/O.

use serde::{Deserialize, Serialize};

/// One value of a dimension at the flagged point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentValue {
    pub value: String,
    /// The metric of this value at the flagged point.
    pub actual: f64,
    /// Its expected (baseline) value.
    pub expected: f64,
}

/// The metric broken down by one dimension.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Breakdown {
    pub dimension: String,
    pub values: Vec<SegmentValue>,
}

/// How much one value explains of its dimension's change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contribution {
    pub dimension: String,
    pub value: String,
    pub actual: f64,
    pub expected: f64,
    /// actual − expected.
    pub change: f64,
    /// change / the dimension's total change; 0 when the dimension's total
    /// did not change.
    pub share: f64,
}

/// Ranks every value of every dimension by its share of the change, largest
/// first (ties: larger absolute change first, then dimension and value name).
/// Non-finite inputs are skipped.
pub fn explain_change(breakdowns: &[Breakdown]) -> Vec<Contribution> {
    let mut contributions = Vec::new();
    for breakdown in breakdowns {
        let values: Vec<&SegmentValue> = breakdown
            .values
            .iter()
            .filter(|v| v.actual.is_finite() && v.expected.is_finite())
            .collect();
        let total_change: f64 = values.iter().map(|v| v.actual - v.expected).sum();
        // A change smaller than rounding noise of the totals is no change.
        let magnitude: f64 = values
            .iter()
            .map(|v| v.actual.abs() + v.expected.abs())
            .sum();
        let has_change = total_change.abs() > magnitude * 1e-12;
        for v in values {
            let change = v.actual - v.expected;
            contributions.push(Contribution {
                dimension: breakdown.dimension.clone(),
                value: v.value.clone(),
                actual: v.actual,
                expected: v.expected,
                change,
                share: if has_change {
                    change / total_change
                } else {
                    0.0
                },
            });
        }
    }
    contributions.sort_by(|a, b| {
        b.share
            .total_cmp(&a.share)
            .then(b.change.abs().total_cmp(&a.change.abs()))
            .then_with(|| a.dimension.cmp(&b.dimension))
            .then_with(|| a.value.cmp(&b.value))
    });
    contributions
}
