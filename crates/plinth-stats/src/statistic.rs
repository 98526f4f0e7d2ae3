//! Per-variant sufficient statistics: the sums a metric query returns for one
//! arm of an experiment, and the means and variances derived from them.
//!
//! The definitions follow GrowthBook's gbstats 0.8.0
//! (`gbstats/models/statistics.py`) exactly, including its conventions:
//! proportions use the plug-in variance `p(1 - p)` while means use the
//! unbiased `n - 1` denominator, and a statistic with `n <= 1` has variance 0.

use serde::{Deserialize, Serialize};

use crate::error::StatsError;

/// A 0/1 outcome per unit: `sum` is the number of converted units.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ProportionStatistic {
    pub n: u64,
    pub sum: f64,
}

impl ProportionStatistic {
    pub fn mean(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.sum / self.n as f64
        }
    }

    pub fn variance(&self) -> f64 {
        let p = self.mean();
        p * (1.0 - p)
    }
}

/// A numeric outcome per unit: the sum and the sum of squares of its values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SampleMeanStatistic {
    pub n: u64,
    pub sum: f64,
    pub sum_squares: f64,
}

impl SampleMeanStatistic {
    /// Sufficient statistics of raw per-unit values.
    pub fn from_values(values: &[f64]) -> Self {
        SampleMeanStatistic {
            n: values.len() as u64,
            sum: values.iter().sum(),
            sum_squares: values.iter().map(|v| v * v).sum(),
        }
    }

    pub fn mean(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.sum / self.n as f64
        }
    }

    /// Unbiased sample variance; 0 when there are fewer than two units.
    pub fn variance(&self) -> f64 {
        if self.n <= 1 {
            return 0.0;
        }
        let n = self.n as f64;
        (self.sum_squares - self.sum * self.sum / n) / (n - 1.0)
    }
}

/// One variable of a composite statistic (the numerator or denominator of a
/// ratio, the post- or pre-exposure value of a CUPED metric).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BaseStatistic {
    Proportion(ProportionStatistic),
    Mean(SampleMeanStatistic),
}

impl BaseStatistic {
    pub fn n(&self) -> u64 {
        match self {
            BaseStatistic::Proportion(s) => s.n,
            BaseStatistic::Mean(s) => s.n,
        }
    }

    pub fn sum(&self) -> f64 {
        match self {
            BaseStatistic::Proportion(s) => s.sum,
            BaseStatistic::Mean(s) => s.sum,
        }
    }

    pub fn mean(&self) -> f64 {
        match self {
            BaseStatistic::Proportion(s) => s.mean(),
            BaseStatistic::Mean(s) => s.mean(),
        }
    }

    pub fn variance(&self) -> f64 {
        match self {
            BaseStatistic::Proportion(s) => s.variance(),
            BaseStatistic::Mean(s) => s.variance(),
        }
    }

    /// The statistic of two arms pooled as one sample of `n` units, as the
    /// CUPED coefficient is estimated on both arms together.
    fn pooled(a: &BaseStatistic, b: &BaseStatistic, n: u64) -> Result<BaseStatistic, StatsError> {
        match (a, b) {
            (BaseStatistic::Proportion(a), BaseStatistic::Proportion(b)) => {
                Ok(BaseStatistic::Proportion(ProportionStatistic {
                    n,
                    sum: a.sum + b.sum,
                }))
            }
            (BaseStatistic::Mean(a), BaseStatistic::Mean(b)) => {
                Ok(BaseStatistic::Mean(SampleMeanStatistic {
                    n,
                    sum: a.sum + b.sum,
                    sum_squares: a.sum_squares + b.sum_squares,
                }))
            }
            _ => Err(StatsError::invalid(
                "treatment",
                "a metric's variables must be of the same kind (proportion or mean) in both arms",
            )),
        }
    }
}

/// Sample covariance of two variables from their sums and sum of products.
fn covariance(n: u64, sum_x: f64, sum_y: f64, sum_products: f64) -> f64 {
    if n <= 1 {
        return 0.0;
    }
    let n = n as f64;
    (sum_products - sum_x * sum_y / n) / (n - 1.0)
}

/// A ratio metric `sum(numerator) / sum(denominator)` over units (e.g.
/// revenue per order), whose variance comes from the delta method.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RatioStatistic {
    pub n: u64,
    pub numerator: BaseStatistic,
    pub denominator: BaseStatistic,
    /// Sum over units of numerator × denominator.
    pub numerator_denominator_sum_products: f64,
}

impl RatioStatistic {
    pub fn mean(&self) -> f64 {
        if self.denominator.sum() == 0.0 {
            0.0
        } else {
            self.numerator.sum() / self.denominator.sum()
        }
    }

    pub fn covariance(&self) -> f64 {
        covariance(
            self.n,
            self.numerator.sum(),
            self.denominator.sum(),
            self.numerator_denominator_sum_products,
        )
    }

    /// Delta-method variance of the ratio of the two unit means, scaled to
    /// one unit (divide by `n` for the variance of the ratio itself).
    pub fn variance(&self) -> f64 {
        let mean_d = self.denominator.mean();
        if mean_d == 0.0 || self.n <= 1 {
            return 0.0;
        }
        let mean_m = self.numerator.mean();
        self.numerator.variance() / mean_d.powi(2)
            - 2.0 * self.covariance() * mean_m / mean_d.powi(3)
            + mean_m.powi(2) * self.denominator.variance() / mean_d.powi(4)
    }
}

/// A metric adjusted by a pre-exposure covariate (CUPED): the mean is
/// `post - theta * pre`, which keeps the treatment effect unbiased (the
/// covariate is independent of assignment) and removes the variance the
/// covariate explains.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RegressionAdjustedStatistic {
    pub n: u64,
    pub post: BaseStatistic,
    pub pre: BaseStatistic,
    /// Sum over units of post × pre.
    pub post_pre_sum_products: f64,
    /// The adjustment coefficient; the tests set it from both arms pooled
    /// (see [`cuped_theta`]), so callers may leave it at 0.
    pub theta: f64,
}

impl RegressionAdjustedStatistic {
    pub fn mean(&self) -> f64 {
        self.post.mean() - self.theta * self.pre.mean()
    }

    pub fn unadjusted_mean(&self) -> f64 {
        self.post.mean()
    }

    pub fn covariance(&self) -> f64 {
        covariance(
            self.n,
            self.post.sum(),
            self.pre.sum(),
            self.post_pre_sum_products,
        )
    }

    pub fn variance(&self) -> f64 {
        if self.n <= 1 {
            return 0.0;
        }
        self.post.variance() + self.theta.powi(2) * self.pre.variance()
            - 2.0 * self.theta * self.covariance()
    }
}

/// The CUPED coefficient: the slope of post on pre over both arms pooled,
/// `cov(post, pre) / var(pre)`. It is 0 when either pooled variance is 0
/// (the adjustment then does nothing).
pub fn cuped_theta(
    control: &RegressionAdjustedStatistic,
    treatment: &RegressionAdjustedStatistic,
) -> Result<f64, StatsError> {
    let n = control.n + treatment.n;
    let post = BaseStatistic::pooled(&control.post, &treatment.post, n)?;
    let pre = BaseStatistic::pooled(&control.pre, &treatment.pre, n)?;
    if pre.variance() == 0.0 || post.variance() == 0.0 {
        return Ok(0.0);
    }
    let pooled_covariance = covariance(
        n,
        post.sum(),
        pre.sum(),
        control.post_pre_sum_products + treatment.post_pre_sum_products,
    );
    Ok(pooled_covariance / pre.variance())
}

/// The statistic of one experiment arm for one metric.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum VariantStatistic {
    Proportion(ProportionStatistic),
    Mean(SampleMeanStatistic),
    Ratio(RatioStatistic),
    RegressionAdjusted(RegressionAdjustedStatistic),
}

impl VariantStatistic {
    /// Number of units (users) in the arm.
    pub fn n(&self) -> u64 {
        match self {
            VariantStatistic::Proportion(s) => s.n,
            VariantStatistic::Mean(s) => s.n,
            VariantStatistic::Ratio(s) => s.n,
            VariantStatistic::RegressionAdjusted(s) => s.n,
        }
    }

    /// The metric value the effect is computed on (CUPED-adjusted if any).
    pub fn mean(&self) -> f64 {
        match self {
            VariantStatistic::Proportion(s) => s.mean(),
            VariantStatistic::Mean(s) => s.mean(),
            VariantStatistic::Ratio(s) => s.mean(),
            VariantStatistic::RegressionAdjusted(s) => s.mean(),
        }
    }

    /// The metric value as observed, before any CUPED adjustment; relative
    /// effects divide by the control's unadjusted mean.
    pub fn unadjusted_mean(&self) -> f64 {
        match self {
            VariantStatistic::RegressionAdjusted(s) => s.unadjusted_mean(),
            other => other.mean(),
        }
    }

    /// Variance of the metric for one unit.
    pub fn variance(&self) -> f64 {
        match self {
            VariantStatistic::Proportion(s) => s.variance(),
            VariantStatistic::Mean(s) => s.variance(),
            VariantStatistic::Ratio(s) => s.variance(),
            VariantStatistic::RegressionAdjusted(s) => s.variance(),
        }
    }

    pub fn stddev(&self) -> f64 {
        let variance = self.variance();
        if variance <= 0.0 {
            0.0
        } else {
            variance.sqrt()
        }
    }

    pub(crate) fn has_zero_variance(&self) -> bool {
        self.variance() <= 0.0
    }

    fn kind(&self) -> &'static str {
        match self {
            VariantStatistic::Proportion(_) => "proportion",
            VariantStatistic::Mean(_) => "mean",
            VariantStatistic::Ratio(_) => "ratio",
            VariantStatistic::RegressionAdjusted(_) => "regression_adjusted",
        }
    }
}

/// Checks that both arms hold the same kind of statistic and, for CUPED,
/// sets the pooled coefficient on both, as every test does before it runs.
pub(crate) fn prepare_arms(
    control: &VariantStatistic,
    treatment: &VariantStatistic,
) -> Result<(VariantStatistic, VariantStatistic), StatsError> {
    if control.kind() != treatment.kind() {
        return Err(StatsError::invalid(
            "treatment",
            format!(
                "is a {} statistic but control is a {} statistic",
                treatment.kind(),
                control.kind()
            ),
        ));
    }
    match (control, treatment) {
        (VariantStatistic::RegressionAdjusted(a), VariantStatistic::RegressionAdjusted(b)) => {
            let theta = cuped_theta(a, b)?;
            Ok((
                VariantStatistic::RegressionAdjusted(RegressionAdjustedStatistic { theta, ..*a }),
                VariantStatistic::RegressionAdjusted(RegressionAdjustedStatistic { theta, ..*b }),
            ))
        }
        _ => Ok((*control, *treatment)),
    }
}
