//! Sample ratio mismatch: are the units split across arms as configured?
//!
//! A chi-square goodness-of-fit test of the observed counts against the
//! configured weights, as gbstats 0.8.0 `check_srm`. A mismatch means the
//! assignment or the exposure logging is broken, and the experiment's
//! results should not be trusted.

use serde::{Deserialize, Serialize};

use crate::dist::chi_square_sf;
use crate::error::StatsError;

/// GrowthBook flags a mismatch below this p-value: strict, because the
/// check runs on every experiment at every refresh.
pub const SRM_P_VALUE_THRESHOLD: f64 = 0.001;

/// The answer of [`sample_ratio_mismatch`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SrmResult {
    pub chi_square: f64,
    pub degrees_of_freedom: u64,
    pub p_value: f64,
    /// `p_value < SRM_P_VALUE_THRESHOLD`.
    pub mismatch: bool,
}

/// Tests the observed unit counts per arm against the expected weights
/// (any non-negative scale: `[1, 1]` and `[0.5, 0.5]` are the same split).
/// An arm of weight 0 contributes nothing to the statistic but still
/// counts as a degree of freedom, as in gbstats. No units at all is no
/// evidence of a mismatch: p-value 1.
pub fn sample_ratio_mismatch(counts: &[u64], weights: &[f64]) -> Result<SrmResult, StatsError> {
    if counts.len() < 2 {
        return Err(StatsError::invalid("counts", "needs at least two arms"));
    }
    if weights.len() != counts.len() {
        return Err(StatsError::invalid(
            "weights",
            format!(
                "has {} entries but counts has {}",
                weights.len(),
                counts.len()
            ),
        ));
    }
    if let Some(bad) = weights.iter().find(|w| !(w.is_finite() && **w >= 0.0)) {
        return Err(StatsError::invalid(
            "weights",
            format!("must be finite and non-negative, got {bad}"),
        ));
    }
    let total_weight: f64 = weights.iter().sum();
    if total_weight <= 0.0 {
        return Err(StatsError::invalid("weights", "must not all be zero"));
    }
    let degrees_of_freedom = counts.len() as u64 - 1;
    let total_observed: f64 = counts.iter().map(|&c| c as f64).sum();
    if total_observed == 0.0 {
        return Ok(SrmResult {
            chi_square: 0.0,
            degrees_of_freedom,
            p_value: 1.0,
            mismatch: false,
        });
    }
    let chi_square: f64 = counts
        .iter()
        .zip(weights)
        .filter(|&(_, &weight)| weight > 0.0)
        .map(|(&observed, &weight)| {
            let expected = weight / total_weight * total_observed;
            (observed as f64 - expected).powi(2) / expected
        })
        .sum();
    let p_value = chi_square_sf(chi_square, degrees_of_freedom as f64);
    Ok(SrmResult {
        chi_square,
        degrees_of_freedom,
        p_value,
        mismatch: p_value < SRM_P_VALUE_THRESHOLD,
    })
}
