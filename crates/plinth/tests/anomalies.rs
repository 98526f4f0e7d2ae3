//! `plinth anomalies` on the demo product and on the Numenta Anomaly Benchmark.

mod common;

use common::{demo_until_june_30, run_ok};

#[test]
fn the_planted_checkout_outage_is_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    // The demo plants the outage on the Wednesday on or before 20 days
    // before the end: 2026-06-10 for an end on 2026-06-30.
    demo_until_june_30(data);
    let out = run_ok(&["anomalies", "--data", data, "--event", "checkout completed"]);
    let outage = out
        .lines()
        .find(|l| l.starts_with("2026-06-10"))
        .unwrap_or_else(|| panic!("the outage day was not flagged:\n{out}"));
    assert!(outage.contains("flagged"), "{outage}");
    assert_eq!(outage.split_whitespace().nth(1), Some("0"), "{outage}");
}

#[test]
fn nab_scores_the_detector_on_the_shared_benchmark() {
    let nab = common::manifest_dir().join("../../../shared/data/nab");
    assert!(
        nab.is_dir(),
        "the NAB data is expected at {}",
        nab.display()
    );
    let out = run_ok(&["anomalies", "nab", "--nab", nab.to_str().unwrap()]);
    let score = |profile: &str| -> f64 {
        out.lines()
            .find(|l| l.starts_with(profile))
            .unwrap_or_else(|| panic!("no {profile} line in:\n{out}"))
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap()
    };
    // Published: Numenta HTM 70.5, Twitter ADVec 47.1, windowed Gaussian 39.6.
    assert!(score("standard") > 60.0, "{out}");
    assert!(score("reward_low_FP_rate") > 45.0, "{out}");
    assert!(score("reward_low_FN_rate") > 65.0, "{out}");
}
