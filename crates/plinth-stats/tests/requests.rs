//! The JSON entry point: answer shapes and errors that name the bad field.

use plinth_stats::{StatsError, run_request};
use serde_json::{Value, json};

fn field_of(error: StatsError) -> String {
    match error {
        StatsError::MissingField { field } | StatsError::InvalidField { field, .. } => field,
        StatsError::Infeasible(message) => panic!("expected a field error, got: {message}"),
    }
}

fn proportion_request() -> Value {
    json!({"test": "ttest", "metric": "proportion",
           "control": {"n": 1000, "sum": 100}, "treatment": {"n": 1000, "sum": 120}})
}

#[test]
fn invalid_requests_name_the_field() {
    let cases: Vec<(Value, &str)> = vec![
        (json!([1, 2]), "request"),
        (json!({"metric": "mean"}), "test"),
        (json!({"test": "anova"}), "test"),
        (
            json!({"test": "ttest", "control": {"n": 1, "sum": 1}, "treatment": {"n": 1, "sum": 1}}),
            "metric",
        ),
        (
            json!({"test": "ttest", "metric": "median", "control": {}, "treatment": {}}),
            "metric",
        ),
        (
            json!({"test": "ttest", "metric": "mean",
                "control": {"n": 10, "sum": 5}, "treatment": {"n": 10, "sum": 5, "sum_squares": 9}}),
            "control.sum_squares",
        ),
        (
            json!({"test": "ttest", "metric": "proportion",
                "control": {"n": 10, "sum": 11}, "treatment": {"n": 10, "sum": 5}}),
            "control.sum",
        ),
        (
            json!({"test": "ttest", "metric": "proportion",
                "control": {"n": -3, "sum": 1}, "treatment": {"n": 10, "sum": 5}}),
            "control.n",
        ),
        (
            json!({"test": "ttest", "metric": "proportion",
                "control": {"n": 10.5, "sum": 1}, "treatment": {"n": 10, "sum": 5}}),
            "control.n",
        ),
        (
            json!({"test": "ttest", "metric": "proportion",
                "control": {"n": 10, "sum": "1"}, "treatment": {"n": 10, "sum": 5}}),
            "control.sum",
        ),
        (
            json!({"test": "ttest", "metric": "proportion",
                "control": {"n": 10, "sum": 1, "sume": 2}, "treatment": {"n": 10, "sum": 5}}),
            "control.sume",
        ),
        (
            json!({"test": "ttest", "metric": "proportion", "alpah": 0.1,
                "control": {"n": 10, "sum": 1}, "treatment": {"n": 10, "sum": 5}}),
            "alpah",
        ),
        (
            json!({"test": "ttest", "metric": "proportion", "alpha": 1.5,
                "control": {"n": 10, "sum": 1}, "treatment": {"n": 10, "sum": 5}}),
            "alpha",
        ),
        (
            json!({"test": "ttest", "metric": "proportion", "alternative": "bigger",
                "control": {"n": 10, "sum": 1}, "treatment": {"n": 10, "sum": 5}}),
            "alternative",
        ),
        (
            json!({"test": "cuped", "metric": "mean",
                "control": {"n": 10, "sum": 5, "sum_squares": 9},
                "treatment": {"n": 10, "sum": 5, "sum_squares": 9}}),
            "control.covariate_sum",
        ),
        (
            json!({"test": "ttest", "metric": "mean",
                "control": {"n": 10, "sum": 5, "sum_squares": 9, "covariate_sum": 1, "covariate_sum_squares": 1, "main_covariate_sum_product": 1},
                "treatment": {"n": 10, "sum": 5, "sum_squares": 9}}),
            "treatment",
        ),
        (
            json!({"test": "ttest", "metric": "ratio",
                "control": {"n": 10, "sum": 5, "sum_squares": 9, "denominator_sum": 3, "denominator_sum_squares": 3},
                "treatment": {"n": 10, "sum": 5, "sum_squares": 9}}),
            "control.main_denominator_sum_product",
        ),
        (
            json!({"test": "sequential", "metric": "proportion", "sequential_tuning_parameter": 0,
                "control": {"n": 10, "sum": 1}, "treatment": {"n": 10, "sum": 5}}),
            "sequential_tuning_parameter",
        ),
        (
            json!({"test": "bayesian", "metric": "proportion", "prior": {"mean": 0.1},
                "control": {"n": 10, "sum": 1}, "treatment": {"n": 10, "sum": 5}}),
            "prior.stddev",
        ),
        (json!({"test": "srm", "counts": [10]}), "counts"),
        (
            json!({"test": "srm", "counts": [10, 12], "weights": [1]}),
            "weights",
        ),
        (json!({"test": "srm", "counts": [10, -12]}), "counts[1]"),
        (
            json!({"test": "holm", "p_values": [0.1, 1.2]}),
            "p_values[1]",
        ),
        (json!({"test": "bh"}), "p_values"),
        (
            json!({"test": "power", "metric": "proportion", "mean": 1.5, "n": 100, "effect": 0.1}),
            "mean",
        ),
        (
            json!({"test": "power", "metric": "mean", "mean": 1, "n": 100, "effect": 0.1}),
            "variance",
        ),
        (
            json!({"test": "mde", "metric": "mean", "mean": 1, "variance": 1, "n": 100, "power": 0.01}),
            "power",
        ),
        (
            json!({"test": "mde", "metric": "mean", "mean": 1, "variance": 1, "n": 100, "variations": 1}),
            "variations",
        ),
        (
            json!({"test": "cap", "values": [1, 2], "capping": {"type": "median"}}),
            "capping.type",
        ),
        (
            json!({"test": "cap", "values": [1, 2], "capping": {"type": "absolute"}}),
            "capping.cap",
        ),
    ];
    for (request, field) in cases {
        let error = run_request(&request).expect_err(&format!("accepted {request}"));
        let message = error.to_string();
        assert_eq!(field_of(error), field, "{request} gave: {message}");
        assert!(
            message.contains(field),
            "message `{message}` does not name `{field}`"
        );
    }
}

#[test]
fn ttest_answer_has_the_documented_fields() {
    let response = run_request(&proportion_request()).unwrap();
    for key in [
        "test",
        "difference",
        "lift",
        "ci",
        "p_value",
        "stddev",
        "unavailable",
        "control",
        "treatment",
    ] {
        assert!(response.get(key).is_some(), "missing {key} in {response}");
    }
    assert_eq!(response["difference"], "relative");
    assert_eq!(response["unavailable"], Value::Null);
    assert_eq!(response["control"]["n"], 1000);
    assert!((response["treatment"]["mean"].as_f64().unwrap() - 0.12).abs() < 1e-15);
}

#[test]
fn one_sided_interval_has_an_open_end() {
    let mut request = proportion_request();
    request["alternative"] = json!("greater");
    let response = run_request(&request).unwrap();
    assert!(response["ci"][0].is_f64());
    assert_eq!(response["ci"][1], Value::Null);
}

#[test]
fn degenerate_inputs_answer_unavailable_not_an_error() {
    let request = json!({"test": "ttest", "metric": "proportion",
                         "control": {"n": 1000, "sum": 0}, "treatment": {"n": 1000, "sum": 12}});
    let response = run_request(&request).unwrap();
    assert_eq!(response["unavailable"], "ZERO_NEGATIVE_BASELINE_VARIATION");
    assert_eq!(response["p_value"], 1.0);
}

#[test]
fn bayesian_answer_has_chance_to_win_and_risk() {
    let mut request = proportion_request();
    request["test"] = json!("bayesian");
    request["prior"] = json!({"stddev": 0.3});
    let response = run_request(&request).unwrap();
    let chance = response["chance_to_win"].as_f64().unwrap();
    assert!(chance > 0.5 && chance < 1.0);
    assert!(
        response["risk"]["control"].as_f64().unwrap()
            > response["risk"]["treatment"].as_f64().unwrap()
    );
    assert_eq!(response["risk_type"], "relative");
}

#[test]
fn cuped_reports_its_coefficient_and_variance_reduction() {
    // Post-period values track pre-period ones closely: most variance goes.
    let arm = |n: u64, post_sum: f64, pre_sum: f64| {
        let (post_sd, pre_sd, correlation) = (10.0, 10.0, 0.9);
        let nf = n as f64;
        json!({
            "n": n,
            "sum": post_sum,
            "sum_squares": (nf - 1.0) * post_sd * post_sd + post_sum * post_sum / nf,
            "covariate_sum": pre_sum,
            "covariate_sum_squares": (nf - 1.0) * pre_sd * pre_sd + pre_sum * pre_sum / nf,
            "main_covariate_sum_product": (nf - 1.0) * correlation * post_sd * pre_sd + post_sum * pre_sum / nf,
        })
    };
    let request = json!({"test": "cuped", "metric": "mean",
                         "control": arm(5000, 100_000.0, 100_000.0),
                         "treatment": arm(5000, 101_000.0, 100_000.0)});
    let response = run_request(&request).unwrap();
    let reduction = response["cuped"]["variance_reduction"].as_f64().unwrap();
    // 1 - rho^2 = 0.19 of the variance remains.
    assert!((reduction - 0.81).abs() < 0.01, "{response}");
    assert!((response["cuped"]["theta"].as_f64().unwrap() - 0.9).abs() < 0.01);
}

#[test]
fn cap_answers_capped_values_and_their_sums() {
    let request = json!({"test": "cap", "values": [0, 0, 1, 2, 3, 100],
                         "capping": {"type": "percentile", "percentile": 0.5, "ignore_zeros": true}});
    let response = run_request(&request).unwrap();
    // Median of the non-zero values [1, 2, 3, 100] is 2.5.
    assert_eq!(response["cap"], 2.5);
    assert_eq!(response["values"], json!([0.0, 0.0, 1.0, 2.0, 2.5, 2.5]));
    assert_eq!(response["sum"], 8.0);
}

#[test]
fn unreachable_mde_is_infeasible() {
    let request = json!({"test": "mde", "metric": "proportion", "mean": 0.01, "n": 20});
    assert!(matches!(
        run_request(&request),
        Err(StatsError::Infeasible(_))
    ));
}
