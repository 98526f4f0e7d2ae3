//! From per-variant sums to results: the statistic of each metric in each
//! variant, each treatment compared with the control (frequentist or
//! sequential interval and p-value, Bayesian chance to win, CUPED when the
//! experiment has a pre-period), the sample ratio check, and warnings.

use plinth_stats::{
    BaseStatistic, BayesianConfig, DifferenceType, FrequentistConfig, ProportionStatistic,
    RatioStatistic, RegressionAdjustedStatistic, SampleMeanStatistic, SequentialConfig, StatsError,
    Unavailable, VariantStatistic, bayesian_test, cuped_theta, sample_ratio_mismatch,
    sequential_test, welch_t_test,
};
use serde::Serialize;

use crate::definition::{Component, Experiment, Measure, Metric, MetricKind, MetricRole};
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
    pub metrics: Vec<MetricResult>,
    pub warnings: Vec<Warning>,
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
    pub p_value: f64,
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
        metrics,
        warnings,
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
        let (frequentist, test) = match experiment.sequential_tuning {
            Some(tuning) => {
                let config = SequentialConfig {
                    difference: DifferenceType::Relative,
                    alpha: definition.alpha,
                    test_value: 0.0,
                    tuning_parameter: tuning,
                };
                (sequential_test(control, treatment, &config)?, "sequential")
            }
            None => {
                let config = FrequentistConfig {
                    alpha: definition.alpha,
                    ..FrequentistConfig::default()
                };
                (welch_t_test(control, treatment, &config)?, "ttest")
            }
        };
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
