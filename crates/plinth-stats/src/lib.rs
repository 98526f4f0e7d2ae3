//! Experiment statistics for Plinth: pure functions of sufficient
//! statistics, with no I/O.
//!
//! This crate owns the arithmetic of A/B tests: per-arm sufficient
//! statistics ([`statistic`]), Welch's t-test and the always-valid
//! sequential test ([`frequentist`]), Bayesian analysis with a Gaussian
//! prior ([`bayesian`]), CUPED regression adjustment
//! ([`RegressionAdjustedStatistic`], [`cuped_theta`]), the sample ratio
//! mismatch check ([`srm`]), multiple-testing corrections
//! ([`multiple_testing`]), capping of outliers ([`capping`]), and power and
//! minimum detectable effect ([`mod@power`]). [`run_request`] answers the same
//! questions as JSON for the CLI and the HTTP API.
//!
//! It must never depend on storage, the query engine, HTTP or any runtime:
//! callers compute the sums (in SQL, with DataFusion) and hand them in.
//!
//! The numbers match GrowthBook's gbstats 0.8.0 (the published test vectors
//! of its suite and random cases generated with it, to 1e-6 relative; see
//! `tests/data/`), except for one deliberate fix: the one-sided "less"
//! interval is `(-inf, estimate + width]` (gbstats 0.8.0 subtracts the
//! width, excluding its own estimate). Power and minimum detectable effect
//! follow GrowthBook's frequentist power calculator.
//!
//! # JSON requests
//!
//! Every request is an object with a `test` field. Unknown fields are
//! rejected (a misspelt option would otherwise be silently ignored); an
//! invalid request gives a [`StatsError`] naming the field by its path,
//! e.g. `invalid field `control.sum`: ...`. Numbers that cannot be
//! represented in JSON (the infinite end of a one-sided interval) are
//! `null`.
//!
//! ## Two-arm tests: `ttest`, `sequential`, `bayesian`, `cuped`
//!
//! ```json
//! {"test": "ttest", "metric": "proportion", "difference": "relative",
//!  "control": {"n": 1000, "sum": 100}, "treatment": {"n": 1000, "sum": 120}}
//! ```
//!
//! | field | meaning |
//! | --- | --- |
//! | `metric` | required: `proportion` (`sum` = converted units), `mean` (`sum`, `sum_squares`), `ratio` (numerator `sum`, `sum_squares`; `denominator_sum`, `denominator_sum_squares`; `main_denominator_sum_product`) |
//! | `control`, `treatment` | required arm objects: `n` (units) and the sums of `metric` |
//! | `difference` | `relative` (default, lift over control) or `absolute` |
//! | `alpha` | default 0.05: intervals have coverage `1 - alpha` |
//! | `numerator_metric`, `denominator_metric` | ratio only: `mean` (default) or `proportion` (then no `sum_squares`) |
//! | covariate sums | optional in any arm of a proportion or mean metric (required for `cuped`): `covariate_sum`, `covariate_sum_squares` (if the covariate is a mean), `main_covariate_sum_product`; applies CUPED with the pooled coefficient |
//! | `covariate_metric` | `proportion` or `mean`; defaults to the kind of `metric` |
//! | `alternative` | `ttest`/`cuped`: `two-sided` (default), `greater`, `less` |
//! | `test_value` | `ttest`/`cuped`/`sequential`: the effect under the null, default 0 |
//! | `sequential_tuning_parameter` | `sequential`: N*, the total units at which the interval is tightest, default 5000 |
//! | `prior` | `bayesian`: `{"mean": 0, "stddev": 0.1, "proper": true}` (`mean` defaults to 0, `proper` to true); without it the prior is flat |
//! | `prior_type` | `bayesian`: the scale of `prior`, `relative` (default) or `absolute` |
//! | `inverse` | `bayesian`: lower is better, default false |
//!
//! `ttest`, `cuped` and `sequential` answer
//! `{"test", "difference", "lift", "ci": [low, high], "p_value", "stddev", "unavailable", "control", "treatment"}`;
//! `bayesian` answers `lift`, `ci` (credible interval), `stddev`
//! (posterior), `chance_to_win`, `risk: {"control", "treatment"}`,
//! `risk_type`, `unavailable`, `control`, `treatment`. `control` and
//! `treatment` are `{"n", "mean", "stddev"}` with the observed mean. With
//! covariates the answer adds `"cuped": {"theta", "variance_reduction"}`.
//! `unavailable` is `null`, or the reason no estimate exists
//! (`ZERO_NEGATIVE_BASELINE_VARIATION`, `ZERO_NEGATIVE_VARIANCE`,
//! `NO_UNITS_IN_VARIATION`), in which case the numbers are uninformative.
//!
//! ## `srm`
//!
//! `{"test": "srm", "counts": [1000, 1100], "weights": [0.5, 0.5]}`
//! (`weights` default to equal) answers `{"test", "p_value", "chi_square",
//! "degrees_of_freedom", "mismatch", "threshold"}`; `mismatch` is
//! `p_value < 0.001`.
//!
//! ## `holm`, `bh`
//!
//! `{"test": "holm", "p_values": [0.01, 0.04]}` answers
//! `{"test", "adjusted_p_values"}` in the order given.
//!
//! ## `power`, `mde`
//!
//! `{"test": "power", "metric": "mean", "mean": 10, "variance": 3910,
//! "n": 400000, "variations": 3, "effect": 0.05}` answers
//! `{"test", "power"}`; `mde` takes `power` (default 0.8) instead of
//! `effect` and answers `{"test", "mde"}`. `metric` is `proportion` (the
//! variance is then `mean (1 - mean)`) or `mean` (give `variance`); `n` is
//! the total over all `variations` (default 2); `effect` and `mde` are
//! relative lifts. Optional: `alpha` (0.05), `two_sided` (true, `power`
//! only; `mde` is two-sided), `sequential_tuning_parameter`.
//!
//! ## `cap`
//!
//! `{"test": "cap", "values": [..], "capping": {"type": "percentile",
//! "percentile": 0.99, "ignore_zeros": false}}` or `"capping": {"type":
//! "absolute", "cap": 100}` answers `{"test", "cap", "values", "n", "sum",
//! "sum_squares"}`: the capped values and their sufficient statistics.

pub mod bayesian;
pub mod capping;
mod dist;
mod error;
pub mod frequentist;
pub mod multiple_testing;
pub mod power;
mod request;
pub mod srm;
pub mod statistic;

pub use bayesian::{BayesianConfig, BayesianResult, GaussianPrior, Risk, bayesian_test};
pub use capping::{Capping, apply_capping, cap_threshold};
pub use error::StatsError;
pub use frequentist::{
    Alternative, DifferenceType, FrequentistConfig, FrequentistResult, SequentialConfig,
    Unavailable, sequential_test, welch_t_test,
};
pub use multiple_testing::{benjamini_hochberg, holm_bonferroni};
pub use power::{PowerDesign, minimum_detectable_effect, power};
pub use request::run_request;
pub use srm::{SRM_P_VALUE_THRESHOLD, SrmResult, sample_ratio_mismatch};
pub use statistic::{
    BaseStatistic, ProportionStatistic, RatioStatistic, RegressionAdjustedStatistic,
    SampleMeanStatistic, VariantStatistic, cuped_theta,
};
