//! Corrections for testing many metrics or arms at once.
//!
//! Both return adjusted p-values in the order they were given, to be
//! compared with the unadjusted threshold. The step-down and step-up
//! procedures match GrowthBook's `adjustPValuesHolmBonferroni` and
//! `adjustPValuesBenjaminiHochberg` (`packages/shared/src/experiments.ts`).

use crate::error::StatsError;

fn check_p_values(p_values: &[f64]) -> Result<(), StatsError> {
    match p_values
        .iter()
        .position(|p| !(p.is_finite() && (0.0..=1.0).contains(p)))
    {
        Some(i) => Err(StatsError::invalid(
            format!("p_values[{i}]"),
            format!("must be in [0, 1], got {}", p_values[i]),
        )),
        None => Ok(()),
    }
}

/// Indices of `p_values` sorted ascending (ties keep their input order).
fn ascending_order(p_values: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..p_values.len()).collect();
    order.sort_by(|&a, &b| p_values[a].total_cmp(&p_values[b]));
    order
}

/// Holm–Bonferroni: controls the family-wise error rate (the chance of
/// any false positive) under any dependence between the tests.
pub fn holm_bonferroni(p_values: &[f64]) -> Result<Vec<f64>, StatsError> {
    check_p_values(p_values)?;
    let m = p_values.len();
    let mut adjusted = vec![0.0; m];
    let mut running_max: f64 = 0.0;
    for (rank, &index) in ascending_order(p_values).iter().enumerate() {
        let scaled = (p_values[index] * (m - rank) as f64).min(1.0);
        running_max = running_max.max(scaled);
        adjusted[index] = running_max;
    }
    Ok(adjusted)
}

/// Benjamini–Hochberg: controls the false discovery rate (the expected
/// share of false positives among the discoveries) for independent or
/// positively dependent tests.
pub fn benjamini_hochberg(p_values: &[f64]) -> Result<Vec<f64>, StatsError> {
    check_p_values(p_values)?;
    let m = p_values.len();
    let mut adjusted = vec![0.0; m];
    let mut running_min: f64 = 1.0;
    for (rank, &index) in ascending_order(p_values).iter().enumerate().rev() {
        let scaled = (p_values[index] * m as f64 / (rank + 1) as f64).min(1.0);
        running_min = running_min.min(scaled);
        adjusted[index] = running_min;
    }
    Ok(adjusted)
}
