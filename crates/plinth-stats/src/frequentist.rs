//! Frequentist comparison of two arms: Welch's t-test (two- and one-sided)
//! and the always-valid sequential test.
//!
//! Effects are absolute (`mean_t - mean_c`) or relative
//! (`(mean_t - mean_c) / mean_c`); the variance of a relative effect comes
//! from the delta method. Formulas and degenerate cases follow GrowthBook's
//! gbstats 0.8.0 (`gbstats/frequentist/tests.py`).

use serde::{Deserialize, Serialize};

use crate::dist::{t_cdf, t_ppf, t_sf};
use crate::error::{StatsError, check_open_unit};
use crate::statistic::{VariantStatistic, prepare_arms};

/// Whether an effect is a difference of means or a lift over the control.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DifferenceType {
    /// `(treatment - control) / control`.
    #[default]
    Relative,
    /// `treatment - control`.
    Absolute,
}

/// The alternative hypothesis of a fixed-horizon test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Alternative {
    #[default]
    TwoSided,
    /// The treatment's effect is greater than `test_value`.
    Greater,
    /// The treatment's effect is less than `test_value`.
    Less,
}

/// Why a test answered an uninformative result instead of an estimate. The
/// serialized names are gbstats' error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Unavailable {
    /// The control's mean is 0, so no relative effect exists.
    #[serde(rename = "ZERO_NEGATIVE_BASELINE_VARIATION")]
    ZeroBaseline,
    /// An arm has no spread (too few units, or all equal).
    #[serde(rename = "ZERO_NEGATIVE_VARIANCE")]
    ZeroVariance,
    /// An arm has no units.
    #[serde(rename = "NO_UNITS_IN_VARIATION")]
    NoUnits,
}

/// Settings of [`welch_t_test`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FrequentistConfig {
    pub difference: DifferenceType,
    pub alternative: Alternative,
    /// Significance level: the interval has coverage `1 - alpha`.
    pub alpha: f64,
    /// The effect under the null hypothesis.
    pub test_value: f64,
}

impl Default for FrequentistConfig {
    fn default() -> Self {
        FrequentistConfig {
            difference: DifferenceType::Relative,
            alternative: Alternative::TwoSided,
            alpha: 0.05,
            test_value: 0.0,
        }
    }
}

/// Settings of [`sequential_test`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SequentialConfig {
    pub difference: DifferenceType,
    pub alpha: f64,
    pub test_value: f64,
    /// N*: the total sample size at which the confidence sequence is
    /// tightest. GrowthBook's default is 5000.
    pub tuning_parameter: f64,
}

impl Default for SequentialConfig {
    fn default() -> Self {
        SequentialConfig {
            difference: DifferenceType::Relative,
            alpha: 0.05,
            test_value: 0.0,
            tuning_parameter: 5000.0,
        }
    }
}

/// The answer of a frequentist test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FrequentistResult {
    /// Point estimate of the effect (gbstats' `expected`).
    pub lift: f64,
    /// Confidence interval `[low, high]`; an open end of a one-sided
    /// interval is infinite (`null` in JSON).
    pub ci: [f64; 2],
    pub p_value: f64,
    /// Standard error of the effect estimate.
    pub stddev: f64,
    /// Set when the inputs allow no estimate; the numbers are then
    /// uninformative (effect 0, interval `[0, 0]`, p-value 1).
    pub unavailable: Option<Unavailable>,
}

impl FrequentistResult {
    fn uninformative(reason: Unavailable) -> Self {
        FrequentistResult {
            lift: 0.0,
            ci: [0.0, 0.0],
            p_value: 1.0,
            stddev: 0.0,
            unavailable: Some(reason),
        }
    }
}

/// The effect estimate: CUPED-adjusted means, but a relative effect is
/// scaled by the control's observed (unadjusted) mean.
pub(crate) fn effect_estimate(
    control: &VariantStatistic,
    treatment: &VariantStatistic,
    difference: DifferenceType,
) -> f64 {
    let diff = treatment.mean() - control.mean();
    match difference {
        DifferenceType::Absolute => diff,
        DifferenceType::Relative => diff / control.unadjusted_mean(),
    }
}

/// Variance of the effect estimate (delta method for relative effects).
pub(crate) fn effect_variance(
    control: &VariantStatistic,
    treatment: &VariantStatistic,
    difference: DifferenceType,
) -> f64 {
    let (var_a, n_a) = (control.variance(), control.n() as f64);
    let (var_b, n_b) = (treatment.variance(), treatment.n() as f64);
    match difference {
        DifferenceType::Absolute => var_b / n_b + var_a / n_a,
        DifferenceType::Relative => {
            let mean_a = control.unadjusted_mean();
            let mean_b = treatment.unadjusted_mean();
            var_b / (mean_a.powi(2) * n_b) + var_a * mean_b.powi(2) / (mean_a.powi(4) * n_a)
        }
    }
}

/// Welch–Satterthwaite degrees of freedom.
fn welch_degrees_of_freedom(control: &VariantStatistic, treatment: &VariantStatistic) -> f64 {
    let (var_a, n_a) = (control.variance(), control.n() as f64);
    let (var_b, n_b) = (treatment.variance(), treatment.n() as f64);
    (var_b / n_b + var_a / n_a).powi(2)
        / (var_b.powi(2) / (n_b.powi(2) * (n_b - 1.0))
            + var_a.powi(2) / (n_a.powi(2) * (n_a - 1.0)))
}

/// The degenerate cases in which gbstats' frequentist tests give up.
fn frequentist_unavailable(
    control: &VariantStatistic,
    treatment: &VariantStatistic,
) -> Option<Unavailable> {
    if control.mean() == 0.0 || control.unadjusted_mean() == 0.0 {
        Some(Unavailable::ZeroBaseline)
    } else if control.has_zero_variance() || treatment.has_zero_variance() {
        Some(Unavailable::ZeroVariance)
    } else {
        None
    }
}

/// Welch's unequal-variance t-test of treatment against control.
pub fn welch_t_test(
    control: &VariantStatistic,
    treatment: &VariantStatistic,
    config: &FrequentistConfig,
) -> Result<FrequentistResult, StatsError> {
    check_open_unit("alpha", config.alpha)?;
    let (control, treatment) = prepare_arms(control, treatment)?;
    if let Some(reason) = frequentist_unavailable(&control, &treatment) {
        return Ok(FrequentistResult::uninformative(reason));
    }
    let lift = effect_estimate(&control, &treatment, config.difference);
    let stddev = effect_variance(&control, &treatment, config.difference).sqrt();
    let dof = welch_degrees_of_freedom(&control, &treatment);
    let t_statistic = (lift - config.test_value) / stddev;
    let (ci, p_value) = match config.alternative {
        Alternative::TwoSided => {
            let half_width = t_ppf(1.0 - config.alpha / 2.0, dof) * stddev;
            let p_value = 2.0 * t_sf(t_statistic.abs(), dof);
            ([lift - half_width, lift + half_width], p_value)
        }
        Alternative::Greater => {
            let half_width = t_ppf(1.0 - config.alpha, dof) * stddev;
            ([lift - half_width, f64::INFINITY], t_sf(t_statistic, dof))
        }
        Alternative::Less => {
            let half_width = t_ppf(1.0 - config.alpha, dof) * stddev;
            // gbstats 0.8.0 reports this upper bound as `estimate - width`,
            // which excludes its own estimate; GrowthBook's later TypeScript
            // port uses `estimate + width`, the bound with coverage 1 - alpha.
            (
                [f64::NEG_INFINITY, lift + half_width],
                t_cdf(t_statistic, dof),
            )
        }
    };
    Ok(FrequentistResult {
        lift,
        ci,
        p_value,
        stddev,
        unavailable: None,
    })
}

/// `rho` of the asymptotic confidence sequence, chosen so that the sequence
/// is tightest at `tuning_parameter` units (Waudby-Smith et al. 2023,
/// arXiv 2103.06476 v7, eq. 161).
fn sequential_rho(alpha: f64, tuning_parameter: f64) -> f64 {
    ((-2.0 * alpha.ln() + (-2.0 * alpha.ln() + 1.0).ln()) / tuning_parameter).sqrt()
}

/// Two-sided test whose confidence interval is an always-valid asymptotic
/// confidence sequence: it keeps its coverage however often it is looked at
/// (Waudby-Smith et al. 2023, eq. 9 for the interval, eq. 155 for the
/// p-value), as GrowthBook's sequential testing.
pub fn sequential_test(
    control: &VariantStatistic,
    treatment: &VariantStatistic,
    config: &SequentialConfig,
) -> Result<FrequentistResult, StatsError> {
    check_open_unit("alpha", config.alpha)?;
    if !(config.tuning_parameter.is_finite() && config.tuning_parameter > 0.0) {
        return Err(StatsError::invalid(
            "sequential_tuning_parameter",
            format!("must be a positive number, got {}", config.tuning_parameter),
        ));
    }
    let (control, treatment) = prepare_arms(control, treatment)?;
    if let Some(reason) = frequentist_unavailable(&control, &treatment) {
        return Ok(FrequentistResult::uninformative(reason));
    }
    let lift = effect_estimate(&control, &treatment, config.difference);
    let variance = effect_variance(&control, &treatment, config.difference);
    let total_n = (control.n() + treatment.n()) as f64;
    let rho = sequential_rho(config.alpha, config.tuning_parameter);
    let n_rho2_plus_1 = total_n * rho.powi(2) + 1.0;

    let unit_variance = variance * total_n;
    let half_width = unit_variance.sqrt()
        * (2.0 * n_rho2_plus_1 * (n_rho2_plus_1.sqrt() / config.alpha).ln()
            / (total_n * rho).powi(2))
        .sqrt();

    let standardized_squared = (lift - config.test_value).powi(2) * total_n / variance;
    let e_value =
        (rho.powi(2) * standardized_squared / (2.0 * n_rho2_plus_1)).exp() / n_rho2_plus_1.sqrt();
    Ok(FrequentistResult {
        lift,
        ci: [lift - half_width, lift + half_width],
        p_value: (1.0 / e_value).min(1.0),
        stddev: variance.sqrt(),
        unavailable: None,
    })
}
