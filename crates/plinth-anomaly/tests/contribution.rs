//! Contribution analysis.

use plinth_anomaly::{Breakdown, SegmentValue, explain_change};

fn value(value: &str, actual: f64, expected: f64) -> SegmentValue {
    SegmentValue {
        value: value.to_string(),
        actual,
        expected,
    }
}

#[test]
fn ranks_values_by_share_of_the_change() {
    // Total signups fell from 1000 to 800: nearly all of it in France.
    let breakdowns = vec![
        Breakdown {
            dimension: "country".into(),
            values: vec![
                value("US", 495.0, 500.0),
                value("FR", 105.0, 300.0),
                value("DE", 200.0, 200.0),
            ],
        },
        Breakdown {
            dimension: "device".into(),
            values: vec![
                value("mobile", 390.0, 500.0),
                value("desktop", 410.0, 500.0),
            ],
        },
    ];
    let ranked = explain_change(&breakdowns);
    assert_eq!(ranked.len(), 5);
    assert_eq!(
        (ranked[0].dimension.as_str(), ranked[0].value.as_str()),
        ("country", "FR")
    );
    assert!((ranked[0].share - 195.0 / 200.0).abs() < 1e-12);
    assert!((ranked[0].change + 195.0).abs() < 1e-12);
    assert_eq!(ranked[1].value, "mobile");
    // Shares within one dimension sum to one.
    let country: f64 = ranked
        .iter()
        .filter(|c| c.dimension == "country")
        .map(|c| c.share)
        .sum();
    assert!((country - 1.0).abs() < 1e-12);
    assert_eq!(ranked.last().unwrap().value, "DE");
}

#[test]
fn a_value_moving_against_the_change_has_a_negative_share() {
    let ranked = explain_change(&[Breakdown {
        dimension: "plan".into(),
        values: vec![value("free", 150.0, 100.0), value("pro", 90.0, 100.0)],
    }]);
    assert_eq!(ranked[0].value, "free");
    assert!((ranked[0].share - 50.0 / 40.0).abs() < 1e-12);
    assert!((ranked[1].share + 10.0 / 40.0).abs() < 1e-12);
}

#[test]
fn no_total_change_gives_zero_shares_and_non_finite_values_are_skipped() {
    let ranked = explain_change(&[Breakdown {
        dimension: "plan".into(),
        values: vec![
            value("a", 110.0, 100.0),
            value("b", 90.0, 100.0),
            value("c", f64::NAN, 1.0),
        ],
    }]);
    assert_eq!(ranked.len(), 2);
    assert!(ranked.iter().all(|c| c.share == 0.0));
    assert_eq!(ranked[0].value, "a");
}
