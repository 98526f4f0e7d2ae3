//! Properties every answer must have, whatever the inputs.

use plinth_stats::{
    Alternative, BaseStatistic, BayesianConfig, Capping, DifferenceType, FrequentistConfig,
    GaussianPrior, PowerDesign, ProportionStatistic, RegressionAdjustedStatistic,
    SampleMeanStatistic, SequentialConfig, VariantStatistic, apply_capping, bayesian_test,
    benjamini_hochberg, cuped_theta, holm_bonferroni, minimum_detectable_effect, power,
    sample_ratio_mismatch, sequential_test, welch_t_test,
};
use proptest::prelude::*;

/// Sums of a mean metric with the given size, mean and standard deviation.
fn mean_statistic(n: u64, mean: f64, sd: f64) -> VariantStatistic {
    let sum = n as f64 * mean;
    VariantStatistic::Mean(SampleMeanStatistic {
        n,
        sum,
        sum_squares: (n - 1) as f64 * sd * sd + sum * sum / n as f64,
    })
}

/// Two arms of the same kind.
fn arms() -> impl Strategy<Value = (VariantStatistic, VariantStatistic)> {
    prop_oneof![
        (
            (2u64..2_000_000, 0.001f64..0.999),
            (2u64..2_000_000, 0.001f64..0.999)
        )
            .prop_map(|(a, b)| {
                let make = |(n, p): (u64, f64)| {
                    let sum = (n as f64 * p).round().clamp(1.0, (n - 1) as f64);
                    VariantStatistic::Proportion(ProportionStatistic { n, sum })
                };
                (make(a), make(b))
            }),
        (
            (2u64..2_000_000, 0.01f64..100.0, 0.01f64..300.0),
            (2u64..2_000_000, 0.01f64..100.0, 0.01f64..300.0)
        )
            .prop_map(|(a, b)| (mean_statistic(a.0, a.1, a.2), mean_statistic(b.0, b.1, b.2))),
    ]
}

fn difference() -> impl Strategy<Value = DifferenceType> {
    prop_oneof![
        Just(DifferenceType::Relative),
        Just(DifferenceType::Absolute)
    ]
}

fn contains(ci: [f64; 2], x: f64) -> bool {
    ci[0] <= x && x <= ci[1]
}

proptest! {
    #[test]
    fn ttest_interval_contains_estimate_and_p_is_a_probability(
        (control, treatment) in arms(),
        difference in difference(),
        alpha in 0.001f64..0.4,
    ) {
        for alternative in [Alternative::TwoSided, Alternative::Greater, Alternative::Less] {
            let config = FrequentistConfig { difference, alternative, alpha, test_value: 0.0 };
            let result = welch_t_test(&control, &treatment, &config).unwrap();
            prop_assert!(result.unavailable.is_none());
            prop_assert!(contains(result.ci, result.lift), "{result:?}");
            prop_assert!((0.0..=1.0).contains(&result.p_value), "{result:?}");
        }
    }

    #[test]
    fn two_sided_p_below_alpha_exactly_when_interval_excludes_zero(
        (control, treatment) in arms(),
        difference in difference(),
        alpha in 0.001f64..0.4,
    ) {
        let config = FrequentistConfig { difference, alpha, ..Default::default() };
        let result = welch_t_test(&control, &treatment, &config).unwrap();
        prop_assume!((result.p_value - alpha).abs() > 1e-9);
        prop_assert_eq!(result.p_value < alpha, !contains(result.ci, 0.0), "{:?}", result);
    }

    #[test]
    fn one_sided_p_values_are_complementary(
        (control, treatment) in arms(),
        difference in difference(),
    ) {
        let greater = FrequentistConfig { difference, alternative: Alternative::Greater, ..Default::default() };
        let less = FrequentistConfig { alternative: Alternative::Less, ..greater };
        let p_greater = welch_t_test(&control, &treatment, &greater).unwrap().p_value;
        let p_less = welch_t_test(&control, &treatment, &less).unwrap().p_value;
        prop_assert!((p_greater + p_less - 1.0).abs() < 1e-9);
    }

    #[test]
    fn swapping_arms_mirrors_the_absolute_effect(
        (control, treatment) in arms(),
        alpha in 0.001f64..0.4,
    ) {
        let config = FrequentistConfig { difference: DifferenceType::Absolute, alpha, ..Default::default() };
        let forward = welch_t_test(&control, &treatment, &config).unwrap();
        let backward = welch_t_test(&treatment, &control, &config).unwrap();
        let scale = forward.stddev.max(forward.lift.abs());
        prop_assert!((forward.lift + backward.lift).abs() <= 1e-9 * scale);
        prop_assert!((forward.ci[0] + backward.ci[1]).abs() <= 1e-9 * scale);
        prop_assert!((forward.ci[1] + backward.ci[0]).abs() <= 1e-9 * scale);
        prop_assert!((forward.p_value - backward.p_value).abs() <= 1e-9);
    }

    #[test]
    fn sequential_interval_is_wider_than_the_fixed_horizon_one(
        (control, treatment) in arms(),
        difference in difference(),
        alpha in 0.01f64..0.2,
        tuning_parameter in 100f64..1e6,
    ) {
        prop_assume!(control.n() >= 1000 && treatment.n() >= 1000);
        let fixed = welch_t_test(&control, &treatment, &FrequentistConfig { difference, alpha, ..Default::default() }).unwrap();
        let config = SequentialConfig { difference, alpha, test_value: 0.0, tuning_parameter };
        let sequential = sequential_test(&control, &treatment, &config).unwrap();
        prop_assert!((0.0..=1.0).contains(&sequential.p_value));
        prop_assert!(sequential.ci[0] <= fixed.ci[0] && fixed.ci[1] <= sequential.ci[1], "{fixed:?} {sequential:?}");
        prop_assert!(sequential.p_value >= fixed.p_value - 1e-12);
    }

    #[test]
    fn bayesian_answers_are_probabilities_and_losses(
        (control, treatment) in arms(),
        difference in difference(),
        inverse in any::<bool>(),
        prior_mean in -0.5f64..0.5,
        prior_stddev in 0.01f64..2.0,
        proper in any::<bool>(),
    ) {
        let config = BayesianConfig {
            difference,
            inverse,
            prior: GaussianPrior { mean: prior_mean, variance: prior_stddev * prior_stddev, proper },
            ..Default::default()
        };
        let result = bayesian_test(&control, &treatment, &config).unwrap();
        prop_assert!((0.0..=1.0).contains(&result.chance_to_win));
        prop_assert!(result.risk.control >= 0.0 && result.risk.treatment >= 0.0, "{result:?}");
        prop_assert!(contains(result.ci, result.lift));
        // E[max(X, 0)] - E[max(-X, 0)] = E[X]: the two risks differ by the
        // posterior mean effect (its opposite for an inverse metric).
        let expected_gain = if inverse { -result.lift } else { result.lift };
        let risk_difference = result.risk.control - result.risk.treatment;
        prop_assert!((risk_difference - expected_gain).abs() <= 1e-9 * result.lift.abs().max(result.stddev));
    }

    #[test]
    fn bayesian_swap_and_inverse_flip_the_chance_to_win(
        (control, treatment) in arms(),
    ) {
        let config = BayesianConfig { difference: DifferenceType::Absolute, ..Default::default() };
        let forward = bayesian_test(&control, &treatment, &config).unwrap();
        let backward = bayesian_test(&treatment, &control, &config).unwrap();
        prop_assert!((forward.chance_to_win + backward.chance_to_win - 1.0).abs() < 1e-9);
        let scale = forward.stddev.max(forward.lift.abs());
        prop_assert!((forward.risk.control - backward.risk.treatment).abs() <= 1e-9 * scale);
        let inverse = bayesian_test(&control, &treatment, &BayesianConfig { inverse: true, ..config }).unwrap();
        prop_assert!((forward.chance_to_win + inverse.chance_to_win - 1.0).abs() < 1e-12);
    }

    #[test]
    fn a_proper_prior_pulls_the_estimate_towards_its_mean(
        (control, treatment) in arms(),
        prior_mean in -0.5f64..0.5,
        prior_stddev in 0.01f64..2.0,
    ) {
        let flat = bayesian_test(&control, &treatment, &BayesianConfig::default()).unwrap();
        let prior = GaussianPrior { mean: prior_mean, variance: prior_stddev * prior_stddev, proper: true };
        let informed = bayesian_test(&control, &treatment, &BayesianConfig { prior, ..Default::default() }).unwrap();
        prop_assert!((informed.lift - prior_mean).abs() <= (flat.lift - prior_mean).abs() + 1e-12);
        prop_assert!(informed.stddev <= flat.stddev);
    }

    #[test]
    fn cuped_theta_is_the_pooled_least_squares_slope(
        pairs_a in prop::collection::vec((-50f64..50.0, -5f64..5.0), 3..60),
        pairs_b in prop::collection::vec((-50f64..50.0, -5f64..5.0), 3..60),
        slope in -3f64..3.0,
    ) {
        // post = slope * pre + noise
        let to_arm = |pairs: &[(f64, f64)]| {
            let pre: Vec<f64> = pairs.iter().map(|p| p.0).collect();
            let post: Vec<f64> = pairs.iter().map(|p| slope * p.0 + p.1).collect();
            RegressionAdjustedStatistic {
                n: pairs.len() as u64,
                post: BaseStatistic::Mean(SampleMeanStatistic::from_values(&post)),
                pre: BaseStatistic::Mean(SampleMeanStatistic::from_values(&pre)),
                post_pre_sum_products: pre.iter().zip(&post).map(|(x, y)| x * y).sum(),
                theta: 0.0,
            }
        };
        let theta = cuped_theta(&to_arm(&pairs_a), &to_arm(&pairs_b)).unwrap();
        let pooled: Vec<(f64, f64)> = pairs_a.iter().chain(&pairs_b).map(|&(x, e)| (x, slope * x + e)).collect();
        let n = pooled.len() as f64;
        let mean_x = pooled.iter().map(|p| p.0).sum::<f64>() / n;
        let mean_y = pooled.iter().map(|p| p.1).sum::<f64>() / n;
        let sxy: f64 = pooled.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
        let sxx: f64 = pooled.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
        prop_assume!(sxx > 1e-6);
        prop_assert!((theta - sxy / sxx).abs() <= 1e-8 * (1.0 + (sxy / sxx).abs()), "{theta} vs {}", sxy / sxx);
    }

    #[test]
    fn srm_is_a_probability_and_exact_splits_never_mismatch(
        weights in prop::collection::vec(0.05f64..1.0, 2..6),
        scale in 1u64..100_000,
        noise in prop::collection::vec(0u64..500, 6),
    ) {
        let counts: Vec<u64> = weights.iter().zip(&noise).map(|(w, e)| (w * scale as f64).round() as u64 + e).collect();
        let result = sample_ratio_mismatch(&counts, &weights).unwrap();
        prop_assert!((0.0..=1.0).contains(&result.p_value));
        let doubled: Vec<f64> = weights.iter().map(|w| 2.0 * w).collect();
        let same = sample_ratio_mismatch(&counts, &doubled).unwrap();
        prop_assert!((same.p_value - result.p_value).abs() < 1e-9);
        let exact = sample_ratio_mismatch(&vec![scale; weights.len()], &vec![1.0; weights.len()]).unwrap();
        prop_assert!(exact.p_value > 0.999_999 && !exact.mismatch);
    }

    #[test]
    fn multiple_testing_adjustments_are_ordered(
        p_values in prop::collection::vec(0f64..=1.0, 0..30),
    ) {
        let holm = holm_bonferroni(&p_values).unwrap();
        let bh = benjamini_hochberg(&p_values).unwrap();
        for i in 0..p_values.len() {
            prop_assert!(p_values[i] <= bh[i] + 1e-15 && bh[i] <= holm[i] + 1e-15 && holm[i] <= 1.0);
            for j in 0..p_values.len() {
                if p_values[i] <= p_values[j] {
                    prop_assert!(holm[i] <= holm[j] && bh[i] <= bh[j]);
                }
            }
        }
    }

    #[test]
    fn capping_bounds_values_and_keeps_the_rest(
        values in prop::collection::vec(-100f64..1e4, 1..200),
        percentile in 0f64..=1.0,
        ignore_zeros in any::<bool>(),
    ) {
        let mut capped = values.clone();
        let cap = apply_capping(&mut capped, &Capping::Percentile { percentile, ignore_zeros }).unwrap().unwrap();
        let max = values.iter().copied().fold(f64::MIN, f64::max);
        let min = values.iter().copied().fold(f64::MAX, f64::min);
        prop_assert!(min <= cap && cap <= max);
        for (original, now) in values.iter().zip(&capped) {
            prop_assert_eq!(*now, original.min(cap));
        }
        if percentile == 1.0 {
            prop_assert_eq!(capped, values);
        }
    }

    #[test]
    fn power_grows_with_units_and_inverts_the_mde(
        mean in 0.01f64..100.0,
        cv in 0.1f64..20.0,
        n in 1_000f64..10_000_000.0,
        variations in 2u32..5,
        target in 0.5f64..0.95,
        sequential in any::<bool>(),
    ) {
        let design = PowerDesign {
            mean,
            variance: (cv * mean).powi(2),
            n,
            variations,
            alpha: 0.05,
            sequential_tuning_parameter: sequential.then_some(5000.0),
        };
        let Ok(mde) = minimum_detectable_effect(&design, target) else {
            return Ok(());
        };
        prop_assert!(mde > 0.0);
        let achieved = power(&design, mde, true).unwrap();
        prop_assert!((achieved - target).abs() < 1e-4, "power {achieved} at mde {mde}, target {target}");
        let bigger = PowerDesign { n: 2.0 * n, ..design };
        prop_assert!(power(&bigger, mde, true).unwrap() > achieved);
    }
}
