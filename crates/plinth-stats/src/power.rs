//! Planning an experiment: the power to detect a relative lift with a given
//! number of units, and the smallest lift detectable with a given power.
//!
//! The formulas are those of GrowthBook's frequentist power calculator
//! (`packages/front-end/components/PowerCalculation/stats.ts`): a normal
//! approximation to the test of the relative effect, whose variance comes
//! from the delta method with the treatment mean at `mean * (1 + effect)`,
//! and, with sequential testing, the standard error widened by the ratio of
//! the confidence sequence's half-width to the fixed-horizon one.

use serde::{Deserialize, Serialize};

use crate::dist::{normal_cdf, normal_ppf};
use crate::error::{StatsError, check_open_unit};

/// What is known of the metric and the traffic before the experiment.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PowerDesign {
    /// Mean of the metric per unit (a conversion rate for proportions).
    pub mean: f64,
    /// Variance of the metric per unit (`p (1 - p)` for proportions).
    pub variance: f64,
    /// Total units over all arms.
    pub n: f64,
    /// Number of arms, control included; units split evenly among them.
    pub variations: u32,
    pub alpha: f64,
    /// N* of the sequential test, or `None` for a fixed-horizon test.
    pub sequential_tuning_parameter: Option<f64>,
}

impl PowerDesign {
    fn validate(&self) -> Result<(), StatsError> {
        if !(self.mean.is_finite() && self.mean != 0.0) {
            return Err(StatsError::invalid("mean", "must be a non-zero number"));
        }
        if !(self.variance.is_finite() && self.variance > 0.0) {
            return Err(StatsError::invalid("variance", "must be positive"));
        }
        if !(self.n.is_finite() && self.n > 0.0) {
            return Err(StatsError::invalid("n", "must be positive"));
        }
        if self.variations < 2 {
            return Err(StatsError::invalid("variations", "must be at least 2"));
        }
        check_open_unit("alpha", self.alpha)?;
        if let Some(tuning) = self.sequential_tuning_parameter
            && !(tuning.is_finite() && tuning > 0.0)
        {
            return Err(StatsError::invalid(
                "sequential_tuning_parameter",
                "must be positive",
            ));
        }
        Ok(())
    }

    fn n_per_variation(&self) -> f64 {
        self.n / self.variations as f64
    }

    /// Ratio of the sequential half-width to the fixed-horizon one at this
    /// sample size (1 without sequential testing).
    fn sequential_inflation(&self) -> f64 {
        let Some(tuning) = self.sequential_tuning_parameter else {
            return 1.0;
        };
        // Two arms are compared: the sequence runs over both arms' units.
        let n = 2.0 * self.n_per_variation();
        let rho_squared = (-2.0 * self.alpha.ln() + (-2.0 * self.alpha.ln() + 1.0).ln()) / tuning;
        let n_rho2_plus_1 = n * rho_squared + 1.0;
        let sequential_z = n.sqrt()
            * (2.0 * n_rho2_plus_1 * (n_rho2_plus_1.sqrt() / self.alpha).ln()
                / (n * n * rho_squared))
                .sqrt();
        sequential_z / normal_ppf(1.0 - self.alpha / 2.0)
    }
}

/// Probability that the test finds a relative lift of `effect` significant.
pub fn power(design: &PowerDesign, effect: f64, two_sided: bool) -> Result<f64, StatsError> {
    design.validate()?;
    if !effect.is_finite() {
        return Err(StatsError::invalid("effect", "must be a finite number"));
    }
    let n_per_variation = design.n_per_variation();
    let treatment_mean = design.mean * (1.0 + effect);
    let relative_variance = design.variance / (design.mean.powi(2) * n_per_variation)
        + design.variance * treatment_mean.powi(2) / (design.mean.powi(4) * n_per_variation);
    let standard_error = relative_variance.sqrt() * design.sequential_inflation();
    let z_star = if two_sided {
        normal_ppf(1.0 - design.alpha / 2.0)
    } else {
        normal_ppf(1.0 - design.alpha)
    };
    let standardized_effect = effect / standard_error;
    let mut power = 1.0 - normal_cdf(z_star - standardized_effect);
    if two_sided {
        power += normal_cdf(-z_star - standardized_effect);
    }
    Ok(power)
}

/// Smallest positive relative lift that a two-sided test detects with
/// probability `target_power` (ignoring the negligible chance of a
/// significant result of the wrong sign).
pub fn minimum_detectable_effect(
    design: &PowerDesign,
    target_power: f64,
) -> Result<f64, StatsError> {
    design.validate()?;
    check_open_unit("power", target_power)?;
    if target_power <= design.alpha {
        return Err(StatsError::invalid("power", "must be greater than alpha"));
    }
    let n_per_variation = design.n_per_variation();
    let z = normal_ppf(1.0 - design.alpha / 2.0) - normal_ppf(1.0 - target_power);
    let variance = design.variance * design.sequential_inflation().powi(2);
    let mean = design.mean;
    // Solves effect = z * se(effect) for the effect; a solution exists only
    // once the control's own noise is small enough relative to its mean.
    if n_per_variation <= variance * z.powi(2) / mean.powi(2) {
        return Err(StatsError::Infeasible(
            "no lift is detectable with this many units: add units or remove variations".into(),
        ));
    }
    let sigma2 = variance / n_per_variation;
    let a = 1.0 - z.powi(2) * sigma2 / mean.powi(2);
    let b = -2.0 * mean;
    let c = mean.powi(2) - z.powi(2) * sigma2;
    let treatment_mean = (-b + (b * b - 4.0 * a * c).sqrt()) / (2.0 * a);
    Ok((treatment_mean - mean) / mean)
}
