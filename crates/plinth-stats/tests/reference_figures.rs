//! Published reference figures: the project's REFERENCES.md numbers
//! (`data/references.json`) and GrowthBook's power calculator tests
//! (`data/growthbook_power.json`), each at the precision it is published to.

use plinth_stats::run_request;
use serde_json::{Value, json};

fn load(data: &str) -> Value {
    let file: Value = serde_json::from_str(data).unwrap();
    assert!(file["provenance"].as_str().is_some_and(|p| !p.is_empty()));
    file
}

fn assert_rounded(what: &str, actual: f64, expected: f64, decimals: i32) {
    let half_unit = 0.5 * 10f64.powi(-decimals) + 1e-12;
    assert!(
        (actual - expected).abs() <= half_unit,
        "{what}: got {actual}, published {expected} ({decimals} decimals)"
    );
}

fn number(value: &Value) -> f64 {
    value
        .as_f64()
        .unwrap_or_else(|| panic!("not a number: {value}"))
}

#[test]
fn ttest_reference_figures() {
    let file = load(include_str!("data/references.json"));
    for case in file["ttest"].as_array().unwrap() {
        let response = run_request(&case["request"]).unwrap();
        let decimals = case["decimals"].as_i64().unwrap() as i32;
        assert_rounded(
            "lift",
            number(&response["lift"]),
            number(&case["lift"]),
            decimals,
        );
        assert_rounded(
            "ci[0]",
            number(&response["ci"][0]),
            number(&case["ci"][0]),
            decimals,
        );
        assert_rounded(
            "ci[1]",
            number(&response["ci"][1]),
            number(&case["ci"][1]),
            decimals,
        );
        assert_rounded(
            "p_value",
            number(&response["p_value"]),
            number(&case["p_value"]),
            decimals,
        );
    }
}

#[test]
fn srm_reference_figure_is_not_flagged_at_strict_threshold() {
    let file = load(include_str!("data/references.json"));
    for case in file["srm"].as_array().unwrap() {
        let response = run_request(&case["request"]).unwrap();
        let decimals = case["decimals"].as_i64().unwrap() as i32;
        let p_value = number(&response["p_value"]);
        assert_rounded("p_value", p_value, number(&case["p_value"]), decimals);
        assert_eq!(response["mismatch"], json!(p_value < 0.001));
    }
}

fn adjusted(test: &str, p_values: &Value) -> Vec<f64> {
    let response = run_request(&json!({"test": test, "p_values": p_values})).unwrap();
    response["adjusted_p_values"]
        .as_array()
        .unwrap()
        .iter()
        .map(number)
        .collect()
}

#[test]
fn holm_and_benjamini_hochberg_vectors() {
    let file = load(include_str!("data/references.json"));

    let mut holm = adjusted("holm", &file["holm"]["p_values"]);
    holm.sort_by(f64::total_cmp);
    let expected: Vec<f64> = file["holm"]["adjusted_sorted_ascending"]
        .as_array()
        .unwrap()
        .iter()
        .map(number)
        .collect();
    for (actual, expected) in holm.iter().zip(&expected) {
        assert!(
            (actual - expected).abs() < 1e-12,
            "holm {holm:?} != {expected}"
        );
    }
    assert_eq!(holm.len(), expected.len());

    let mut bh = adjusted("bh", &file["bh"]["p_values"]);
    bh.sort_by(|a, b| b.total_cmp(a));
    let expected: Vec<f64> = file["bh"]["adjusted_sorted_descending"]
        .as_array()
        .unwrap()
        .iter()
        .map(number)
        .collect();
    for (actual, expected) in bh.iter().zip(&expected) {
        assert!((actual - expected).abs() < 1e-12, "bh {bh:?} != {expected}");
    }
    assert_eq!(bh.len(), expected.len());
}

#[test]
fn adjusted_p_values_keep_the_input_order() {
    // The smallest p-value is last: its adjustment must stay last.
    let adjusted = adjusted("holm", &json!([0.04, 0.5, 0.001]));
    assert!((adjusted[2] - 0.003).abs() < 1e-15);
    assert!((adjusted[0] - 0.08).abs() < 1e-15);
    assert!((adjusted[1] - 0.5).abs() < 1e-15);
}

#[test]
fn growthbook_power_calculator_single_values() {
    let file = load(include_str!("data/growthbook_power.json"));
    let decimals = file["decimals"].as_i64().unwrap() as i32;
    for case in file["single"].as_array().unwrap() {
        let what = case["what"].as_str().unwrap();
        let mut request = json!({
            "test": what,
            "metric": "mean",
            "mean": case["mean"],
            "variance": case["variance"],
            "n": case["n"],
            "variations": case["variations"],
            "alpha": case["alpha"],
            "sequential_tuning_parameter": case["sequential_tuning_parameter"],
        });
        if what == "power" {
            request["effect"] = case["effect"].clone();
        } else {
            request["power"] = case["power"].clone();
        }
        let response = run_request(&request).unwrap();
        assert_rounded(
            &format!("{case}"),
            number(&response[what]),
            number(&case["expected"]),
            decimals,
        );
    }
}

#[test]
fn growthbook_power_calculator_weekly_tables() {
    let file = load(include_str!("data/growthbook_power.json"));
    let decimals = file["decimals"].as_i64().unwrap() as i32;
    let weeks = &file["weeks"];
    let users_per_week = number(&weeks["users_per_week"]);
    let metrics = weeks["metrics"].as_array().unwrap();
    for (table, tuning) in [
        ("fixed_horizon", Value::Null),
        ("sequential_5000", json!(5000)),
    ] {
        let powers = weeks[table]["power"].as_array().unwrap();
        let mdes = weeks[table]["mde"].as_array().unwrap();
        // The tables interleave the metrics, week by week.
        for (i, (expected_power, expected_mde)) in powers.iter().zip(mdes).enumerate() {
            let week = (i / metrics.len() + 1) as f64;
            let metric = &metrics[i % metrics.len()];
            let mut request = json!({
                "metric": metric["metric"],
                "mean": metric["mean"],
                "variance": metric["variance"],
                "n": users_per_week * week,
                "variations": weeks["variations"],
                "alpha": weeks["alpha"],
                "sequential_tuning_parameter": tuning,
            });
            let label = format!("{table} week {week} {}", metric["name"]);

            request["test"] = json!("power");
            request["effect"] = metric["effect"].clone();
            let power = run_request(&request).unwrap();
            assert_rounded(
                &format!("{label} power"),
                number(&power["power"]),
                number(expected_power),
                decimals,
            );

            request["test"] = json!("mde");
            request.as_object_mut().unwrap().remove("effect");
            request["power"] = json!(0.8);
            let mde = run_request(&request).unwrap();
            assert_rounded(
                &format!("{label} mde"),
                number(&mde["mde"]),
                number(expected_mde),
                decimals,
            );
        }
    }
}
