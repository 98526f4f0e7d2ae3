//! From per-variant sums to results: the statistic of each metric in each
//! variant, each treatment compared with the control (frequentist or
//! sequential interval and p-value, Bayesian chance to win, CUPED when the
//! experiment has a pre-period), the sample ratio check, and warnings.
//!
//! With `multiple_testing` (`holm` or `bh`), the comparisons of every
//! treatment with the control on every primary and secondary metric form
//! one family of `m` tests, as in GrowthBook; guardrails stay out of it
//! (a guardrail is a safety check: correcting it would hide harm) and are
//! judged at `alpha` alone. Each comparison of the family then carries:
//!
//! - `p_value_adjusted`: Holm–Bonferroni's or Benjamini–Hochberg's adjusted
//!   p-value (`plinth_stats::multiple_testing`), and `significant` means
//!   `p_value_adjusted < alpha`; `p_value` stays the unadjusted one;
//! - `ci_adjusted`: the interval of the same test at a corrected level,
//!   `results.multiple_testing.interval_alpha`. For `holm` that is
//!   `alpha / m`: Bonferroni's simultaneous intervals, which all cover
//!   their true lifts at once with probability at least `1 - alpha`. They
//!   are valid but can be more cautious than Holm's p-values: a comparison
//!   Holm finds significant only thanks to its step-down may still have an
//!   interval that crosses 0. (No interval matches Holm's decisions and
//!   stays informative; GrowthBook widens the interval until it matches the
//!   adjusted p-value, which has no coverage guarantee, so we do not.) For
//!   `bh` it is `R * alpha / m`, `R` being the number of significant
//!   comparisons (at least 1): Benjamini and Yekutieli's (2005) false
//!   coverage-rate intervals, which keep the expected share of
//!   significant comparisons whose interval misses its true lift below
//!   `alpha`; they exclude 0 exactly for the comparisons BH finds
//!   significant (for the fixed-horizon test). Sequential experiments get
//!   the always-valid interval at that level.
//!
//! Chance to win is Bayesian and is not corrected (GrowthBook corrects only
//! frequentist results).

use plinth_stats::FrequentistResult;
use plinth_stats::{
    BaseStatistic, BayesianConfig, DifferenceType, FrequentistConfig, ProportionStatistic,
    RatioStatistic, RegressionAdjustedStatistic, SampleMeanStatistic, SequentialConfig, StatsError,
    Unavailable, VariantStatistic, bayesian_test, benjamini_hochberg, cuped_theta, holm_bonferroni,
    sample_ratio_mismatch, sequential_test, welch_t_test,
};
use serde::Serialize;

use crate::definition::{
    Component, Experiment, Measure, Metric, MetricKind, MetricRole, MultipleTesting,
};
use crate::query::{ExperimentSums, GroupSums, QueryPlan, Span};

/// The results of one experiment, as the CLI prints and the API answers.
#[derive(Debug, Clone, Serialize)]
pub struct ExperimentResults {
    pub experiment: String,
    pub flag: String,
    pub control: String,
    /// Units per variant, in the definition's order (control first).
    pub variants: Vec<VariantUnits>,
    /// Persons served more than one variant: left out of every number.
    pub multiple_variant_persons: u64,
    pub srm: SrmCheck,
    /// N* of the sequential test, when results are always valid.
    pub sequential_tuning: Option<f64>,
    /// Whether metrics are adjusted by their pre-exposure values.
    pub cuped: bool,
    pub alpha: f64,
    /// The correction across metrics, when the definition asks for one.
    pub multiple_testing: Option<MultipleTestingSummary>,
    pub metrics: Vec<MetricResult>,
    pub warnings: Vec<Warning>,
}

/// How the p-values and intervals of the primary and secondary metrics
/// were corrected.
#[derive(Debug, Clone, Serialize)]
pub struct MultipleTestingSummary {
    /// `holm` or `bh`.
    pub method: MultipleTesting,
    /// The size of the family: treatments times primary and secondary metrics.
    pub comparisons: usize,
    /// The level of the adjusted intervals: each `ci_adjusted` has coverage
    /// `1 - interval_alpha` on its own.
    pub interval_alpha: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct VariantUnits {
    pub variant: String,
    pub units: u64,
    pub expected_share: f64,
    pub observed_share: f64,
}

/// Sample ratio mismatch: do the units split as the weights say?
#[derive(Debug, Clone, Serialize)]
pub struct SrmCheck {
    /// `None` without any units.
    pub p_value: Option<f64>,
    pub mismatch: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct MetricResult {
    pub name: String,
    pub role: MetricRole,
    pub kind: MetricKind,
    pub higher_is_better: bool,
    pub variants: Vec<VariantMetric>,
    /// Each treatment against the control.
    pub comparisons: Vec<Comparison>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VariantMetric {
    pub variant: String,
    pub units: u64,
    /// The observed mean per unit (the ratio of sums for ratio metrics).
    pub mean: f64,
    pub stddev: f64,
    /// The sufficient statistics the query returned (CUPED's `theta` is
    /// left at 0: the tests estimate it from both arms), for audit and for
    /// other tools.
    pub statistic: VariantStatistic,
}

#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub variant: String,
    /// Relative lift over the control (CUPED-adjusted when enabled).
    pub lift: f64,
    /// Confidence interval of the lift; always valid when sequential.
    pub ci: [f64; 2],
    /// Unadjusted, whatever `multiple_testing` says.
    pub p_value: f64,
    /// Corrected for the other comparisons of the family (see the module's
    /// documentation); `None` without a correction and for guardrails.
    pub p_value_adjusted: Option<f64>,
    /// The interval at the corrected level; `None` when `p_value_adjusted` is.
    pub ci_adjusted: Option<[f64; 2]>,
    /// `p_value_adjusted < alpha` when corrected, else `p_value < alpha`
    /// (never when the test is unavailable).
    pub significant: bool,
    /// Bayesian probability that the variant is better than the control
    /// (lower is better when the metric says so).
    pub chance_to_win: f64,
    /// `ttest` or `sequential`.
    pub test: &'static str,
    pub cuped: Option<CupedEffect>,
    pub unavailable: Option<Unavailable>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CupedEffect {
    pub theta: f64,
    /// Share of the lift's variance the adjustment removed.
    pub variance_reduction: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Warning {
    /// `srm`, `too_few_units`, `peeking`, `multiple_variants`, `guardrail`.
    pub code: &'static str,
    pub message: String,
}

/// Computes the results from the query's sums. `now_micros` decides whether
/// the experiment is still running (for the peeking warning).
pub fn analyze(
    experiment: &Experiment,
    plan: &QueryPlan,
    sums: &ExperimentSums,
    now_micros: i64,
) -> Result<ExperimentResults, StatsError> {
    let definition = &experiment.definition;
    let counts: Vec<u64> = sums.variants.iter().map(|v| v.units).collect();
    let total: u64 = counts.iter().sum();
    let variants = definition
        .variants
        .iter()
        .zip(&counts)
        .zip(&experiment.weights)
        .map(|((variant, &units), &expected_share)| VariantUnits {
            variant: variant.clone(),
            units,
            expected_share,
            observed_share: if total == 0 {
                0.0
            } else {
                units as f64 / total as f64
            },
        })
        .collect();
    let srm = if total == 0 {
        SrmCheck {
            p_value: None,
            mismatch: false,
        }
    } else {
        let result = sample_ratio_mismatch(&counts, &experiment.weights)?;
        SrmCheck {
            p_value: Some(result.p_value),
            mismatch: result.mismatch,
        }
    };

    let mut warnings = Vec::new();
    if let Some(p_value) = srm.p_value.filter(|_| srm.mismatch) {
        warnings.push(Warning {
            code: "srm",
            message: format!(
                "sample ratio mismatch: units split {counts:?} against weights {:?} (p = {p_value:.2e}); assignment or exposure logging is broken, so the results cannot be trusted",
                experiment.weights
            ),
        });
    }
    for (variant, &units) in definition.variants.iter().zip(&counts) {
        if units < definition.min_units {
            warnings.push(Warning {
                code: "too_few_units",
                message: format!(
                    "variant `{variant}` has {units} units, fewer than {}",
                    definition.min_units
                ),
            });
        }
    }
    if sums.multiple_variant_persons > 0 {
        warnings.push(Warning {
            code: "multiple_variants",
            message: format!(
                "{} persons were served more than one variant and are excluded",
                sums.multiple_variant_persons
            ),
        });
    }
    let running = experiment.end_micros.is_none_or(|end| now_micros < end);
    if running && experiment.sequential_tuning.is_none() {
        warnings.push(Warning {
            code: "peeking",
            message: "the experiment is still running and sequential testing is off: p-values and intervals read before the end overstate significance; enable `sequential` to look early".into(),
        });
    }

    let mut metrics = Vec::new();
    for metric in &experiment.metrics {
        let result = analyze_metric(experiment, plan, sums, metric)?;
        // Guardrails are never corrected, so their warnings can be decided now.
        if metric.role == MetricRole::Guardrail {
            for comparison in &result.comparisons {
                let worse = if metric.higher_is_better {
                    comparison.lift < 0.0
                } else {
                    comparison.lift > 0.0
                };
                if comparison.significant && worse {
                    warnings.push(Warning {
                        code: "guardrail",
                        message: format!(
                            "guardrail `{}` is significantly worse in `{}` (lift {:+.2}%, p = {:.3})",
                            metric.name,
                            comparison.variant,
                            comparison.lift * 100.0,
                            comparison.p_value
                        ),
                    });
                }
            }
        }
        metrics.push(result);
    }
    let multiple_testing = correct(experiment, &mut metrics)?;

    Ok(ExperimentResults {
        experiment: definition.name.clone(),
        flag: definition.flag.clone(),
        control: definition.variants[0].clone(),
        variants,
        multiple_variant_persons: sums.multiple_variant_persons,
        srm,
        sequential_tuning: experiment.sequential_tuning,
        cuped: experiment.pre_period_micros.is_some(),
        alpha: definition.alpha,
        multiple_testing,
        metrics,
        warnings,
    })
}

/// Applies the definition's multiple-testing correction to the
/// comparisons of the primary and secondary metrics.
fn correct(
    experiment: &Experiment,
    metrics: &mut [MetricResult],
) -> Result<Option<MultipleTestingSummary>, StatsError> {
    let method = experiment.definition.multiple_testing;
    let alpha = experiment.definition.alpha;
    // (metric, comparison) of every test in the family.
    let family: Vec<(usize, usize)> = metrics
        .iter()
        .enumerate()
        .filter(|(_, metric)| metric.role != MetricRole::Guardrail)
        .flat_map(|(i, metric)| (0..metric.comparisons.len()).map(move |j| (i, j)))
        .collect();
    let p_values: Vec<f64> = family
        .iter()
        .map(|&(i, j)| {
            let p = metrics[i].comparisons[j].p_value;
            if p.is_finite() {
                p.clamp(0.0, 1.0)
            } else {
                1.0
            }
        })
        .collect();
    let adjusted = match method {
        MultipleTesting::None => return Ok(None),
        MultipleTesting::Holm => holm_bonferroni(&p_values)?,
        MultipleTesting::Bh => benjamini_hochberg(&p_values)?,
    };
    for (&(i, j), &p) in family.iter().zip(&adjusted) {
        let comparison = &mut metrics[i].comparisons[j];
        comparison.p_value_adjusted = Some(p);
        comparison.significant = comparison.unavailable.is_none() && p < alpha;
    }
    let m = family.len() as f64;
    let interval_alpha = match method {
        MultipleTesting::Bh => {
            let significant = family
                .iter()
                .filter(|&&(i, j)| metrics[i].comparisons[j].significant)
                .count();
            alpha * significant.max(1) as f64 / m
        }
        _ => alpha / m,
    };
    for &(i, j) in &family {
        let variants = &metrics[i].variants;
        let (control, treatment) = (&variants[0].statistic, &variants[j + 1].statistic);
        let (result, _) = frequentist_test(experiment, control, treatment, interval_alpha)?;
        metrics[i].comparisons[j].ci_adjusted = Some(result.ci);
    }
    Ok(Some(MultipleTestingSummary {
        method,
        comparisons: family.len(),
        interval_alpha,
    }))
}

/// The experiment's frequentist test (sequential when enabled, else
/// Welch's t-test) of the relative lift, at `alpha`.
fn frequentist_test(
    experiment: &Experiment,
    control: &VariantStatistic,
    treatment: &VariantStatistic,
    alpha: f64,
) -> Result<(FrequentistResult, &'static str), StatsError> {
    Ok(match experiment.sequential_tuning {
        Some(tuning) => {
            let config = SequentialConfig {
                difference: DifferenceType::Relative,
                alpha,
                test_value: 0.0,
                tuning_parameter: tuning,
            };
            (sequential_test(control, treatment, &config)?, "sequential")
        }
        None => {
            let config = FrequentistConfig {
                alpha,
                ..FrequentistConfig::default()
            };
            (welch_t_test(control, treatment, &config)?, "ttest")
        }
    })
}

/// One variable of a metric in one group.
fn base(component: &Component, group: &GroupSums, index: usize) -> BaseStatistic {
    if component.kind == MetricKind::Conversion {
        BaseStatistic::Proportion(ProportionStatistic {
            n: group.units,
            sum: group.sums[index],
        })
    } else {
        BaseStatistic::Mean(SampleMeanStatistic {
            n: group.units,
            sum: group.sums[index],
            sum_squares: group.sums_of_squares[index],
        })
    }
}

fn plain(statistic: BaseStatistic) -> VariantStatistic {
    match statistic {
        BaseStatistic::Proportion(s) => VariantStatistic::Proportion(s),
        BaseStatistic::Mean(s) => VariantStatistic::Mean(s),
    }
}

/// The statistic of `metric` in `group`, with its CUPED covariate when the
/// experiment has a pre-period.
fn statistic(
    experiment: &Experiment,
    plan: &QueryPlan,
    metric: &Metric,
    group: &GroupSums,
) -> VariantStatistic {
    let after = Span::After(metric.window_micros);
    match &metric.measure {
        Measure::Single(component) => {
            let post = plan.quantity(component, after);
            let main = base(component, group, post);
            match experiment.pre_period_micros {
                Some(pre_period) => {
                    let pre = plan.quantity(component, Span::Before(pre_period));
                    VariantStatistic::RegressionAdjusted(RegressionAdjustedStatistic {
                        n: group.units,
                        post: main,
                        pre: base(component, group, pre),
                        post_pre_sum_products: group.sums_of_products[plan.product(post, pre)],
                        theta: 0.0,
                    })
                }
                None => plain(main),
            }
        }
        Measure::Ratio {
            numerator,
            denominator,
        } => {
            let n = plan.quantity(numerator, after);
            let d = plan.quantity(denominator, after);
            VariantStatistic::Ratio(RatioStatistic {
                n: group.units,
                numerator: base(numerator, group, n),
                denominator: base(denominator, group, d),
                numerator_denominator_sum_products: group.sums_of_products[plan.product(n, d)],
            })
        }
    }
}

/// The same statistic without its covariate, to measure what CUPED removed.
fn unadjusted(statistic: &VariantStatistic) -> VariantStatistic {
    match statistic {
        VariantStatistic::RegressionAdjusted(s) => plain(s.post),
        other => *other,
    }
}

fn analyze_metric(
    experiment: &Experiment,
    plan: &QueryPlan,
    sums: &ExperimentSums,
    metric: &Metric,
) -> Result<MetricResult, StatsError> {
    let definition = &experiment.definition;
    let statistics: Vec<VariantStatistic> = sums
        .variants
        .iter()
        .map(|group| statistic(experiment, plan, metric, group))
        .collect();
    let variants = definition
        .variants
        .iter()
        .zip(&statistics)
        .map(|(variant, s)| VariantMetric {
            variant: variant.clone(),
            units: s.n(),
            mean: s.unadjusted_mean(),
            stddev: unadjusted(s).stddev(),
            statistic: *s,
        })
        .collect();
    let control = &statistics[0];
    let mut comparisons = Vec::new();
    for (variant, treatment) in definition.variants.iter().zip(&statistics).skip(1) {
        let (frequentist, test) =
            frequentist_test(experiment, control, treatment, definition.alpha)?;
        let bayesian = bayesian_test(
            control,
            treatment,
            &BayesianConfig {
                alpha: definition.alpha,
                inverse: !metric.higher_is_better,
                ..BayesianConfig::default()
            },
        )?;
        let cuped = match (control, treatment) {
            (VariantStatistic::RegressionAdjusted(a), VariantStatistic::RegressionAdjusted(b)) => {
                let without = welch_t_test(
                    &unadjusted(control),
                    &unadjusted(treatment),
                    &FrequentistConfig::default(),
                )?;
                let variance_reduction = if without.stddev > 0.0 {
                    1.0 - (frequentist_stddev(control, treatment, definition.alpha)?
                        / without.stddev)
                        .powi(2)
                } else {
                    0.0
                };
                Some(CupedEffect {
                    theta: cuped_theta(a, b)?,
                    variance_reduction,
                })
            }
            _ => None,
        };
        comparisons.push(Comparison {
            variant: variant.clone(),
            lift: frequentist.lift,
            ci: frequentist.ci,
            p_value: frequentist.p_value,
            p_value_adjusted: None,
            ci_adjusted: None,
            significant: frequentist.unavailable.is_none()
                && frequentist.p_value < definition.alpha,
            chance_to_win: bayesian.chance_to_win,
            test,
            cuped,
            unavailable: frequentist.unavailable,
        });
    }
    let kind = match &metric.measure {
        Measure::Single(component) => component.kind,
        Measure::Ratio { .. } => MetricKind::Ratio,
    };
    Ok(MetricResult {
        name: metric.name.clone(),
        role: metric.role,
        kind,
        higher_is_better: metric.higher_is_better,
        variants,
        comparisons,
    })
}

/// The standard error of the fixed-horizon lift estimate (CUPED-adjusted
/// when the statistics carry a covariate).
fn frequentist_stddev(
    control: &VariantStatistic,
    treatment: &VariantStatistic,
    alpha: f64,
) -> Result<f64, StatsError> {
    let config = FrequentistConfig {
        alpha,
        ..FrequentistConfig::default()
    };
    Ok(welch_t_test(control, treatment, &config)?.stddev)
}
