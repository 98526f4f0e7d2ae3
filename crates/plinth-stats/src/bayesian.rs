//! Bayesian comparison of two arms with a Gaussian prior on the effect.
//!
//! The likelihood of the effect is normal, centred on the frequentist
//! estimate with its delta-method variance; with a proper prior the
//! posterior is the precision-weighted combination, with a flat (improper)
//! prior it is the likelihood itself. From the posterior come the credible
//! interval, the chance to win and the risk (expected loss) of choosing each
//! arm. This is GrowthBook's `EffectBayesianABTest` (gbstats 0.8.0,
//! `gbstats/bayesian/tests.py`).

use serde::{Deserialize, Serialize};

use crate::dist::{normal_cdf, normal_pdf, normal_ppf};
use crate::error::{StatsError, check_open_unit};
use crate::frequentist::{DifferenceType, Unavailable, effect_estimate, effect_variance};
use crate::statistic::{VariantStatistic, prepare_arms};

/// A normal prior on the effect. An improper prior (`proper: false`) is
/// flat: `mean` and `variance` are then ignored.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GaussianPrior {
    pub mean: f64,
    pub variance: f64,
    pub proper: bool,
}

impl Default for GaussianPrior {
    fn default() -> Self {
        GaussianPrior {
            mean: 0.0,
            variance: 1.0,
            proper: false,
        }
    }
}

/// Settings of [`bayesian_test`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BayesianConfig {
    pub difference: DifferenceType,
    /// The credible interval has probability `1 - alpha`.
    pub alpha: f64,
    /// A metric where lower is better (e.g. load time): the chance to win
    /// is that of a decrease, and the risks swap.
    pub inverse: bool,
    pub prior: GaussianPrior,
    /// The scale the prior is stated on; it is rescaled by the control's
    /// mean when it differs from `difference`.
    pub prior_type: DifferenceType,
}

impl Default for BayesianConfig {
    fn default() -> Self {
        BayesianConfig {
            difference: DifferenceType::Relative,
            alpha: 0.05,
            inverse: false,
            prior: GaussianPrior::default(),
            prior_type: DifferenceType::Relative,
        }
    }
}

/// Expected loss of shipping each arm: how much is lost, in the units of
/// the effect, if that arm is chosen and the other one is in fact better.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Risk {
    pub control: f64,
    pub treatment: f64,
}

/// The answer of [`bayesian_test`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BayesianResult {
    /// Posterior mean of the effect (gbstats' `expected`).
    pub lift: f64,
    /// Equal-tailed credible interval `[low, high]`.
    pub ci: [f64; 2],
    /// Posterior standard deviation of the effect.
    pub stddev: f64,
    /// Posterior probability that the treatment is better than control.
    pub chance_to_win: f64,
    pub risk: Risk,
    /// The scale of `risk`: that of the effect.
    pub risk_type: DifferenceType,
    /// Set when the inputs allow no estimate; the numbers are then
    /// uninformative (effect 0, chance to win 0.5, no risk).
    pub unavailable: Option<Unavailable>,
}

impl BayesianResult {
    fn uninformative(reason: Unavailable, difference: DifferenceType) -> Self {
        BayesianResult {
            lift: 0.0,
            ci: [0.0, 0.0],
            stddev: 0.0,
            chance_to_win: 0.5,
            risk: Risk {
                control: 0.0,
                treatment: 0.0,
            },
            risk_type: difference,
            unavailable: Some(reason),
        }
    }
}

/// `E[max(Z - w, 0)]` for a standard normal `Z`: the normal loss function.
/// Computed as `phi(w) - w * Phi(-w)` with `Phi(-w)` from the tail function,
/// so it stays accurate far into the tails.
fn normal_loss(w: f64) -> f64 {
    normal_pdf(w) - w * normal_cdf(-w)
}

/// Risks of an effect distributed `N(mu, sigma^2)`: choosing control loses
/// `E[max(X, 0)]`, choosing treatment loses `E[max(-X, 0)]`.
fn risks(mu: f64, sigma: f64) -> Risk {
    let z = mu / sigma;
    Risk {
        control: sigma * normal_loss(-z),
        treatment: sigma * normal_loss(z),
    }
}

/// Bayesian comparison of treatment against control.
pub fn bayesian_test(
    control: &VariantStatistic,
    treatment: &VariantStatistic,
    config: &BayesianConfig,
) -> Result<BayesianResult, StatsError> {
    check_open_unit("alpha", config.alpha)?;
    if config.prior.proper && !(config.prior.variance.is_finite() && config.prior.variance > 0.0) {
        return Err(StatsError::invalid(
            "prior",
            "a proper prior needs a positive, finite variance",
        ));
    }
    let (control, treatment) = prepare_arms(control, treatment)?;
    let difference = config.difference;
    if difference == DifferenceType::Relative
        && (control.mean() == 0.0 || control.unadjusted_mean() == 0.0)
    {
        return Ok(BayesianResult::uninformative(
            Unavailable::ZeroBaseline,
            difference,
        ));
    }
    if control.n() == 0 || treatment.n() == 0 {
        return Ok(BayesianResult::uninformative(
            Unavailable::NoUnits,
            difference,
        ));
    }
    if control.has_zero_variance() || treatment.has_zero_variance() {
        return Ok(BayesianResult::uninformative(
            Unavailable::ZeroVariance,
            difference,
        ));
    }

    let prior = prior_on_effect_scale(&config.prior, config.prior_type, difference, &control);
    let data_mean = effect_estimate(&control, &treatment, difference);
    let data_variance = effect_variance(&control, &treatment, difference);

    let (posterior_mean, posterior_precision) = if prior.proper {
        let precision = 1.0 / data_variance + 1.0 / prior.variance;
        let mean = (data_mean / data_variance + prior.mean / prior.variance) / precision;
        (mean, precision)
    } else {
        (data_mean, 1.0 / data_variance)
    };
    let posterior_stddev = (1.0 / posterior_precision).sqrt();

    let chance_of_increase = normal_cdf(posterior_mean / posterior_stddev);
    let ci = [
        posterior_mean + posterior_stddev * normal_ppf(config.alpha / 2.0),
        posterior_mean + posterior_stddev * normal_ppf(1.0 - config.alpha / 2.0),
    ];
    let increase_risks = risks(posterior_mean, posterior_stddev);
    let (chance_to_win, risk) = if config.inverse {
        let swapped = Risk {
            control: increase_risks.treatment,
            treatment: increase_risks.control,
        };
        (1.0 - chance_of_increase, swapped)
    } else {
        (chance_of_increase, increase_risks)
    };
    Ok(BayesianResult {
        lift: posterior_mean,
        ci,
        stddev: posterior_stddev,
        chance_to_win,
        risk,
        risk_type: difference,
        unavailable: None,
    })
}

/// A prior stated as a relative lift becomes one on the absolute difference
/// (and back) by scaling with the control's observed mean.
fn prior_on_effect_scale(
    prior: &GaussianPrior,
    prior_type: DifferenceType,
    difference: DifferenceType,
    control: &VariantStatistic,
) -> GaussianPrior {
    let control_mean = control.unadjusted_mean();
    match (prior_type, difference) {
        (DifferenceType::Absolute, DifferenceType::Relative) => GaussianPrior {
            mean: prior.mean / control_mean.abs(),
            variance: prior.variance / control_mean.powi(2),
            proper: prior.proper,
        },
        (DifferenceType::Relative, DifferenceType::Absolute) => GaussianPrior {
            mean: prior.mean * control_mean.abs(),
            variance: prior.variance * control_mean.powi(2),
            proper: prior.proper,
        },
        _ => *prior,
    }
}
