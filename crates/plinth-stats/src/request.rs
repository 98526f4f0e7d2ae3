//! The JSON entry point, [`run_request`], that the CLI (`plinth stats`) and
//! the HTTP API call. The request and response shapes are documented at the
//! crate root. Parsing is strict: a missing, mistyped or unknown field is a
//! [`StatsError`] naming it by its path (`control.sum_squares`).

use serde_json::{Map, Value, json};

use crate::bayesian::{BayesianConfig, GaussianPrior, bayesian_test};
use crate::capping::{Capping, apply_capping};
use crate::error::StatsError;
use crate::frequentist::{
    Alternative, DifferenceType, FrequentistConfig, SequentialConfig, effect_variance,
    sequential_test, welch_t_test,
};
use crate::multiple_testing::{benjamini_hochberg, holm_bonferroni};
use crate::power::{PowerDesign, minimum_detectable_effect, power};
use crate::srm::{SRM_P_VALUE_THRESHOLD, sample_ratio_mismatch};
use crate::statistic::{
    BaseStatistic, ProportionStatistic, RatioStatistic, RegressionAdjustedStatistic,
    SampleMeanStatistic, VariantStatistic, prepare_arms,
};

const TESTS: &str = "ttest, sequential, bayesian, cuped, srm, holm, bh, power, mde, cap";

/// Answers one statistics request; see the crate documentation for the
/// schema of each `test`.
pub fn run_request(request: &Value) -> Result<Value, StatsError> {
    let Value::Object(map) = request else {
        return Err(StatsError::invalid("request", "must be a JSON object"));
    };
    let mut fields = Fields::new(String::new(), map.clone());
    let test = fields.required_str("test")?;
    let response = match test.as_str() {
        "ttest" | "sequential" | "bayesian" | "cuped" => two_arm_test(&test, &mut fields)?,
        "srm" => srm(&mut fields)?,
        "holm" | "bh" => multiple_testing(&test, &mut fields)?,
        "power" | "mde" => power_analysis(&test, &mut fields)?,
        "cap" => capping(&mut fields)?,
        other => {
            return Err(StatsError::invalid(
                "test",
                format!("unknown test `{other}`, expected one of: {TESTS}"),
            ));
        }
    };
    fields.finish()?;
    Ok(response)
}

/// The fields of one JSON object, consumed as they are read so that any
/// left over can be reported as unknown.
struct Fields {
    prefix: String,
    map: Map<String, Value>,
}

impl Fields {
    fn new(prefix: String, map: Map<String, Value>) -> Self {
        Fields { prefix, map }
    }

    fn path(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn take(&mut self, key: &str) -> Option<Value> {
        self.map.remove(key).filter(|v| !v.is_null())
    }

    fn has(&self, key: &str) -> bool {
        self.map.get(key).is_some_and(|v| !v.is_null())
    }

    fn required(&mut self, key: &str) -> Result<Value, StatsError> {
        self.take(key)
            .ok_or_else(|| StatsError::missing(self.path(key)))
    }

    fn as_f64(&self, key: &str, value: &Value) -> Result<f64, StatsError> {
        value.as_f64().ok_or_else(|| {
            StatsError::invalid(self.path(key), format!("must be a number, got {value}"))
        })
    }

    fn required_f64(&mut self, key: &str) -> Result<f64, StatsError> {
        let value = self.required(key)?;
        self.as_f64(key, &value)
    }

    fn optional_f64(&mut self, key: &str) -> Result<Option<f64>, StatsError> {
        match self.take(key) {
            Some(value) => self.as_f64(key, &value).map(Some),
            None => Ok(None),
        }
    }

    fn f64_or(&mut self, key: &str, default: f64) -> Result<f64, StatsError> {
        Ok(self.optional_f64(key)?.unwrap_or(default))
    }

    fn as_count(&self, key: &str, value: &Value) -> Result<u64, StatsError> {
        let whole = value.as_u64().or_else(|| {
            value
                .as_f64()
                .filter(|v| *v >= 0.0 && v.fract() == 0.0 && *v < u64::MAX as f64)
                .map(|v| v as u64)
        });
        whole.ok_or_else(|| {
            StatsError::invalid(
                self.path(key),
                format!("must be a non-negative integer, got {value}"),
            )
        })
    }

    fn required_count(&mut self, key: &str) -> Result<u64, StatsError> {
        let value = self.required(key)?;
        self.as_count(key, &value)
    }

    fn bool_or(&mut self, key: &str, default: bool) -> Result<bool, StatsError> {
        match self.take(key) {
            Some(Value::Bool(b)) => Ok(b),
            Some(other) => Err(StatsError::invalid(
                self.path(key),
                format!("must be true or false, got {other}"),
            )),
            None => Ok(default),
        }
    }

    fn required_str(&mut self, key: &str) -> Result<String, StatsError> {
        match self.required(key)? {
            Value::String(s) => Ok(s),
            other => Err(StatsError::invalid(
                self.path(key),
                format!("must be a string, got {other}"),
            )),
        }
    }

    /// A string field that names one of `choices`.
    fn choice<T: Copy>(
        &mut self,
        key: &str,
        choices: &[(&str, T)],
        default: Option<T>,
    ) -> Result<T, StatsError> {
        let name = match (self.has(key), default) {
            (false, Some(default)) => return Ok(default),
            _ => self.required_str(key)?,
        };
        choices
            .iter()
            .find(|(label, _)| *label == name)
            .map(|(_, value)| *value)
            .ok_or_else(|| {
                let labels: Vec<&str> = choices.iter().map(|(label, _)| *label).collect();
                StatsError::invalid(
                    self.path(key),
                    format!(
                        "unknown value `{name}`, expected one of: {}",
                        labels.join(", ")
                    ),
                )
            })
    }

    fn object(&mut self, key: &str) -> Result<Fields, StatsError> {
        match self.required(key)? {
            Value::Object(map) => Ok(Fields::new(format!("{}.", self.path(key)), map)),
            other => Err(StatsError::invalid(
                self.path(key),
                format!("must be an object, got {other}"),
            )),
        }
    }

    fn array(&mut self, key: &str) -> Result<Vec<Value>, StatsError> {
        match self.required(key)? {
            Value::Array(items) => Ok(items),
            other => Err(StatsError::invalid(
                self.path(key),
                format!("must be an array, got {other}"),
            )),
        }
    }

    fn f64_array(&mut self, key: &str) -> Result<Vec<f64>, StatsError> {
        let items = self.array(key)?;
        items
            .iter()
            .enumerate()
            .map(|(i, item)| self.as_f64(&format!("{key}[{i}]"), item))
            .collect()
    }

    fn count_array(&mut self, key: &str) -> Result<Vec<u64>, StatsError> {
        let items = self.array(key)?;
        items
            .iter()
            .enumerate()
            .map(|(i, item)| self.as_count(&format!("{key}[{i}]"), item))
            .collect()
    }

    /// Errors on the first field nobody read: most likely a misspelling.
    /// A `null` field counts as absent, here as everywhere.
    fn finish(self) -> Result<(), StatsError> {
        match self.map.iter().find(|(_, value)| !value.is_null()) {
            Some((key, _)) => Err(StatsError::invalid(self.path(key), "unknown field")),
            None => Ok(()),
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum BaseKind {
    Proportion,
    Mean,
}

#[derive(Clone, Copy, PartialEq)]
enum MetricKind {
    Proportion,
    Mean,
    Ratio,
}

const BASE_KINDS: &[(&str, BaseKind)] = &[
    ("proportion", BaseKind::Proportion),
    ("mean", BaseKind::Mean),
];
const METRIC_KINDS: &[(&str, MetricKind)] = &[
    ("proportion", MetricKind::Proportion),
    ("mean", MetricKind::Mean),
    ("ratio", MetricKind::Ratio),
];
const DIFFERENCES: &[(&str, DifferenceType)] = &[
    ("relative", DifferenceType::Relative),
    ("absolute", DifferenceType::Absolute),
];

/// How to read each arm of a two-arm request.
struct ArmSchema {
    metric: MetricKind,
    numerator: BaseKind,
    denominator: BaseKind,
    covariate: BaseKind,
    covariate_required: bool,
}

/// Reads one variable of an arm: `<prefix>sum` and, for means,
/// `<prefix>sum_squares`.
fn read_base(
    arm: &mut Fields,
    kind: BaseKind,
    n: u64,
    prefix: &str,
) -> Result<BaseStatistic, StatsError> {
    let sum_key = format!("{prefix}sum");
    let sum = arm.required_f64(&sum_key)?;
    match kind {
        BaseKind::Proportion => {
            if !(0.0..=n as f64).contains(&sum) {
                return Err(StatsError::invalid(
                    arm.path(&sum_key),
                    format!("is a count of converted units, so must be in [0, n = {n}], got {sum}"),
                ));
            }
            Ok(BaseStatistic::Proportion(ProportionStatistic { n, sum }))
        }
        BaseKind::Mean => {
            let squares_key = format!("{prefix}sum_squares");
            let sum_squares = arm.required_f64(&squares_key)?;
            if sum_squares < 0.0 {
                return Err(StatsError::invalid(
                    arm.path(&squares_key),
                    format!("is a sum of squares, so must be non-negative, got {sum_squares}"),
                ));
            }
            Ok(BaseStatistic::Mean(SampleMeanStatistic {
                n,
                sum,
                sum_squares,
            }))
        }
    }
}

fn read_arm(mut arm: Fields, schema: &ArmSchema) -> Result<VariantStatistic, StatsError> {
    let n = arm.required_count("n")?;
    let main = match schema.metric {
        MetricKind::Proportion => read_base(&mut arm, BaseKind::Proportion, n, "")?,
        MetricKind::Mean => read_base(&mut arm, BaseKind::Mean, n, "")?,
        MetricKind::Ratio => read_base(&mut arm, schema.numerator, n, "")?,
    };
    let statistic = if schema.metric == MetricKind::Ratio {
        if arm.has("covariate_sum") {
            return Err(StatsError::invalid(
                arm.path("covariate_sum"),
                "CUPED is not available for ratio metrics",
            ));
        }
        let denominator = read_base(&mut arm, schema.denominator, n, "denominator_")?;
        VariantStatistic::Ratio(RatioStatistic {
            n,
            numerator: main,
            denominator,
            numerator_denominator_sum_products: arm.required_f64("main_denominator_sum_product")?,
        })
    } else if schema.covariate_required || arm.has("covariate_sum") {
        let pre = read_base(&mut arm, schema.covariate, n, "covariate_")?;
        VariantStatistic::RegressionAdjusted(RegressionAdjustedStatistic {
            n,
            post: main,
            pre,
            post_pre_sum_products: arm.required_f64("main_covariate_sum_product")?,
            theta: 0.0,
        })
    } else {
        match main {
            BaseStatistic::Proportion(s) => VariantStatistic::Proportion(s),
            BaseStatistic::Mean(s) => VariantStatistic::Mean(s),
        }
    };
    arm.finish()?;
    Ok(statistic)
}

/// What the response says of each arm: its size and observed metric.
fn arm_summary(statistic: &VariantStatistic) -> Value {
    json!({
        "n": statistic.n(),
        "mean": statistic.unadjusted_mean(),
        "stddev": statistic.stddev(),
    })
}

/// For CUPED arms: the coefficient and the share of the effect's variance
/// the adjustment removed.
fn cuped_summary(
    control: &VariantStatistic,
    treatment: &VariantStatistic,
    difference: DifferenceType,
) -> Result<Option<Value>, StatsError> {
    let (VariantStatistic::RegressionAdjusted(a), VariantStatistic::RegressionAdjusted(b)) =
        prepare_arms(control, treatment)?
    else {
        return Ok(None);
    };
    let adjusted = effect_variance(
        &VariantStatistic::RegressionAdjusted(a),
        &VariantStatistic::RegressionAdjusted(b),
        difference,
    );
    let unadjusted = effect_variance(
        &VariantStatistic::RegressionAdjusted(RegressionAdjustedStatistic { theta: 0.0, ..a }),
        &VariantStatistic::RegressionAdjusted(RegressionAdjustedStatistic { theta: 0.0, ..b }),
        difference,
    );
    let reduction = if unadjusted > 0.0 {
        1.0 - adjusted / unadjusted
    } else {
        0.0
    };
    Ok(Some(
        json!({ "theta": a.theta, "variance_reduction": reduction }),
    ))
}

fn two_arm_test(test: &str, fields: &mut Fields) -> Result<Value, StatsError> {
    let metric = fields.choice("metric", METRIC_KINDS, None)?;
    let numerator = fields.choice("numerator_metric", BASE_KINDS, Some(BaseKind::Mean))?;
    let denominator = fields.choice("denominator_metric", BASE_KINDS, Some(BaseKind::Mean))?;
    let same_as_metric = if metric == MetricKind::Proportion {
        BaseKind::Proportion
    } else {
        BaseKind::Mean
    };
    let covariate = fields.choice("covariate_metric", BASE_KINDS, Some(same_as_metric))?;
    if metric == MetricKind::Ratio && test == "cuped" {
        return Err(StatsError::invalid(
            "metric",
            "CUPED is not available for ratio metrics",
        ));
    }
    let schema = ArmSchema {
        metric,
        numerator,
        denominator,
        covariate,
        covariate_required: test == "cuped",
    };
    let control = read_arm(fields.object("control")?, &schema)?;
    let treatment = read_arm(fields.object("treatment")?, &schema)?;
    let difference = fields.choice("difference", DIFFERENCES, Some(DifferenceType::Relative))?;
    let alpha = fields.f64_or("alpha", 0.05)?;

    let mut response = match test {
        "bayesian" => {
            let prior = if fields.has("prior") {
                let mut prior_fields = fields.object("prior")?;
                let mean = prior_fields.f64_or("mean", 0.0)?;
                let stddev = prior_fields.required_f64("stddev")?;
                let proper = prior_fields.bool_or("proper", true)?;
                prior_fields.finish()?;
                GaussianPrior {
                    mean,
                    variance: stddev * stddev,
                    proper,
                }
            } else {
                GaussianPrior::default()
            };
            let config = BayesianConfig {
                difference,
                alpha,
                inverse: fields.bool_or("inverse", false)?,
                prior,
                prior_type: fields.choice(
                    "prior_type",
                    DIFFERENCES,
                    Some(DifferenceType::Relative),
                )?,
            };
            serde_json::to_value(bayesian_test(&control, &treatment, &config)?)
        }
        "sequential" => {
            let config = SequentialConfig {
                difference,
                alpha,
                test_value: fields.f64_or("test_value", 0.0)?,
                tuning_parameter: fields.f64_or("sequential_tuning_parameter", 5000.0)?,
            };
            serde_json::to_value(sequential_test(&control, &treatment, &config)?)
        }
        _ => {
            let config = FrequentistConfig {
                difference,
                alpha,
                test_value: fields.f64_or("test_value", 0.0)?,
                alternative: fields.choice(
                    "alternative",
                    &[
                        ("two-sided", Alternative::TwoSided),
                        ("greater", Alternative::Greater),
                        ("less", Alternative::Less),
                    ],
                    Some(Alternative::TwoSided),
                )?,
            };
            serde_json::to_value(welch_t_test(&control, &treatment, &config)?)
        }
    }
    .expect("test results serialize");

    let object = response.as_object_mut().expect("test results are objects");
    object.insert("test".into(), json!(test));
    object.insert(
        "difference".into(),
        serde_json::to_value(difference).expect("serializes"),
    );
    object.insert("control".into(), arm_summary(&control));
    object.insert("treatment".into(), arm_summary(&treatment));
    if let Some(cuped) = cuped_summary(&control, &treatment, difference)? {
        object.insert("cuped".into(), cuped);
    }
    Ok(response)
}

fn srm(fields: &mut Fields) -> Result<Value, StatsError> {
    let counts = fields.count_array("counts")?;
    let weights = if fields.has("weights") {
        fields.f64_array("weights")?
    } else {
        vec![1.0; counts.len()]
    };
    let result = sample_ratio_mismatch(&counts, &weights)?;
    Ok(json!({
        "test": "srm",
        "p_value": result.p_value,
        "chi_square": result.chi_square,
        "degrees_of_freedom": result.degrees_of_freedom,
        "mismatch": result.mismatch,
        "threshold": SRM_P_VALUE_THRESHOLD,
    }))
}

fn multiple_testing(test: &str, fields: &mut Fields) -> Result<Value, StatsError> {
    let p_values = fields.f64_array("p_values")?;
    let adjusted = if test == "holm" {
        holm_bonferroni(&p_values)?
    } else {
        benjamini_hochberg(&p_values)?
    };
    Ok(json!({ "test": test, "adjusted_p_values": adjusted }))
}

fn power_analysis(test: &str, fields: &mut Fields) -> Result<Value, StatsError> {
    let metric = fields.choice("metric", BASE_KINDS, None)?;
    let mean = fields.required_f64("mean")?;
    let variance = match metric {
        BaseKind::Proportion => {
            if !(mean > 0.0 && mean < 1.0) {
                return Err(StatsError::invalid(
                    "mean",
                    format!(
                        "is a conversion rate, so must be strictly between 0 and 1, got {mean}"
                    ),
                ));
            }
            mean * (1.0 - mean)
        }
        BaseKind::Mean => fields.required_f64("variance")?,
    };
    let variations = fields.f64_or("variations", 2.0)?;
    if !(variations.fract() == 0.0 && (2.0..=f64::from(u32::MAX)).contains(&variations)) {
        return Err(StatsError::invalid(
            "variations",
            "must be an integer of at least 2",
        ));
    }
    let design = PowerDesign {
        mean,
        variance,
        n: fields.required_f64("n")?,
        variations: variations as u32,
        alpha: fields.f64_or("alpha", 0.05)?,
        sequential_tuning_parameter: fields.optional_f64("sequential_tuning_parameter")?,
    };
    if test == "power" {
        let effect = fields.required_f64("effect")?;
        let two_sided = fields.bool_or("two_sided", true)?;
        Ok(json!({ "test": "power", "power": power(&design, effect, two_sided)? }))
    } else {
        let target_power = fields.f64_or("power", 0.8)?;
        Ok(json!({ "test": "mde", "mde": minimum_detectable_effect(&design, target_power)? }))
    }
}

fn capping(fields: &mut Fields) -> Result<Value, StatsError> {
    let mut values = fields.f64_array("values")?;
    let mut capping_fields = fields.object("capping")?;
    let kind = capping_fields.required_str("type")?;
    let capping = match kind.as_str() {
        "absolute" => Capping::Absolute {
            cap: capping_fields.required_f64("cap")?,
        },
        "percentile" => Capping::Percentile {
            percentile: capping_fields.required_f64("percentile")?,
            ignore_zeros: capping_fields.bool_or("ignore_zeros", false)?,
        },
        other => {
            return Err(StatsError::invalid(
                capping_fields.path("type"),
                format!("unknown value `{other}`, expected one of: absolute, percentile"),
            ));
        }
    };
    capping_fields.finish()?;
    let cap = apply_capping(&mut values, &capping)?;
    let statistic = SampleMeanStatistic::from_values(&values);
    Ok(json!({
        "test": "cap",
        "cap": cap,
        "values": values,
        "n": statistic.n,
        "sum": statistic.sum,
        "sum_squares": statistic.sum_squares,
    }))
}
