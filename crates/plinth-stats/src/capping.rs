//! Capping (winsorizing) per-unit metric values, so that a few extreme
//! units (a bot, a bulk order) do not dominate a mean.
//!
//! As in GrowthBook, only the upper tail is capped: each value becomes
//! `min(value, cap)`. The cap is either a fixed number or a percentile of
//! the values, computed with linear interpolation (SQL `PERCENTILE_CONT`),
//! optionally over the non-zero values only, since for sparse metrics the
//! zeros would otherwise drag the percentile down to 0.

use serde::{Deserialize, Serialize};

use crate::error::StatsError;

/// How to choose the cap.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Capping {
    /// Cap at a fixed value.
    Absolute { cap: f64 },
    /// Cap at the given percentile (a fraction in [0, 1], e.g. 0.99).
    Percentile { percentile: f64, ignore_zeros: bool },
}

/// The cap `capping` gives for these values; `None` for a percentile of no
/// values (nothing to cap).
pub fn cap_threshold(values: &[f64], capping: &Capping) -> Result<Option<f64>, StatsError> {
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(StatsError::invalid(
            format!("values[{i}]"),
            format!("must be a finite number, got {}", values[i]),
        ));
    }
    match *capping {
        Capping::Absolute { cap } => {
            if cap.is_nan() {
                return Err(StatsError::invalid("cap", "must be a number"));
            }
            Ok(Some(cap))
        }
        Capping::Percentile {
            percentile,
            ignore_zeros,
        } => {
            if !(0.0..=1.0).contains(&percentile) {
                return Err(StatsError::invalid(
                    "percentile",
                    format!("must be a fraction in [0, 1], got {percentile}"),
                ));
            }
            let mut kept: Vec<f64> = values
                .iter()
                .copied()
                .filter(|v| !(ignore_zeros && *v == 0.0))
                .collect();
            kept.sort_by(f64::total_cmp);
            Ok(interpolated_percentile(&kept, percentile))
        }
    }
}

/// `PERCENTILE_CONT` of sorted values: linear interpolation between the
/// two closest ranks.
fn interpolated_percentile(sorted: &[f64], fraction: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let position = fraction * last as f64;
    let below = position.floor() as usize;
    let above = position.ceil() as usize;
    let weight = position - below as f64;
    Some(sorted[below] + (sorted[above] - sorted[below]) * weight)
}

/// Caps `values` in place and returns the cap used (`None` when there was
/// nothing to compute a percentile of).
pub fn apply_capping(values: &mut [f64], capping: &Capping) -> Result<Option<f64>, StatsError> {
    let cap = cap_threshold(values, capping)?;
    if let Some(cap) = cap {
        for value in values.iter_mut() {
            *value = value.min(cap);
        }
    }
    Ok(cap)
}
