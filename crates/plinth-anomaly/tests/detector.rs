//! Properties of the online detector.

use plinth_anomaly::{Detector, DetectorConfig, detect_series};

/// An hourly series with a daily cycle, a weekly dip, a slow trend and
/// deterministic noise.
fn hourly_series(points: usize) -> (Vec<i64>, Vec<f64>) {
    let mut state: u64 = 42;
    let timestamps = (0..points as i64)
        .map(|i| 1_700_000_000 - 1_700_000_000 % 86_400 + 3600 * i)
        .collect();
    let values = (0..points)
        .map(|i| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let noise = ((state >> 33) as f64 / (1u64 << 31) as f64) - 0.5;
            let hour = (i % 24) as f64;
            let weekend = if (i / 24) % 7 >= 5 { -15.0 } else { 0.0 };
            100.0
                + 0.01 * i as f64
                + 20.0 * (hour / 24.0 * std::f64::consts::TAU).sin()
                + weekend
                + 2.0 * noise
        })
        .collect();
    (timestamps, values)
}

#[test]
fn scores_use_only_past_points() {
    let (t, v) = hourly_series(1500);
    let config = DetectorConfig::default();
    let full = detect_series(&t, &v, &config);
    let mut altered = v.clone();
    for x in &mut altered[1000..] {
        *x *= 3.0;
    }
    let changed = detect_series(&t, &altered, &config);
    assert!(
        full[..1000] == changed[..1000],
        "a later change altered an earlier result"
    );
    assert!(full[1000..] != changed[1000..]);
}

#[test]
fn streaming_with_saved_state_equals_batch() {
    let (t, v) = hourly_series(800);
    let config = DetectorConfig::default();
    let batch = detect_series(&t, &v, &config);
    let mut detector = Detector::new(config);
    let mut streamed = Vec::new();
    for (i, (&ti, &vi)) in t.iter().zip(&v).enumerate() {
        if i % 100 == 0 {
            // A server would persist the state between requests.
            let saved = serde_json::to_string(&detector).unwrap();
            detector = serde_json::from_str(&saved).unwrap();
        }
        streamed.push(detector.update(ti, vi));
    }
    // JSON may round a float's last bit on the way back (the workspace's
    // serde_json parses fast, not bit-exact), so results agree to 1e-9.
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0);
    let first_difference = batch.iter().zip(&streamed).position(|(a, b)| {
        a.timestamp != b.timestamp
            || !close(a.expected, b.expected)
            || !close(a.low, b.low)
            || !close(a.high, b.high)
            || !close(a.score, b.score)
    });
    assert_eq!(first_difference, None);
    assert_eq!(batch.len(), streamed.len());
}

#[test]
fn spike_gets_the_top_score_and_normal_points_stay_in_band() {
    let (t, mut v) = hourly_series(24 * 7 * 6);
    let spike = 24 * 7 * 5 + 13;
    v[spike] += 60.0;
    // Without suppression: the slow trend of the fixture reaches a level
    // never seen eight hours before the spike, which is itself an alarm and
    // would silence the spike.
    let config = DetectorConfig {
        suppression_points: 0,
        ..DetectorConfig::default()
    };
    let results = detect_series(&t, &v, &config);
    assert!(results.iter().all(|r| (0.0..=1.0).contains(&r.score)));
    let top = results
        .iter()
        .enumerate()
        .skip(24 * 14)
        .max_by(|a, b| a.1.score.total_cmp(&b.1.score))
        .unwrap()
        .0;
    assert_eq!(results[top].score, results[spike].score);
    assert!(results[spike].score >= config.alarm_score);
    assert!(results[spike].value > results[spike].high);
    // After four weeks of learning the seasonal model, nearly every normal
    // point lies inside its band.
    let late = &results[24 * 28..spike];
    let inside = late
        .iter()
        .filter(|r| r.low <= r.value && r.value <= r.high)
        .count();
    assert!(
        inside as f64 >= 0.97 * late.len() as f64,
        "{inside} of {}",
        late.len()
    );
    // The expected value follows the daily cycle rather than a flat line.
    let error: f64 = late
        .iter()
        .map(|r| (r.value - r.expected).abs())
        .sum::<f64>()
        / late.len() as f64;
    assert!(error < 3.0, "mean absolute error {error}");
}

#[test]
fn non_finite_values_are_not_scored_and_do_not_poison_the_state() {
    let (t, mut v) = hourly_series(600);
    v[400] = f64::NAN;
    let results = detect_series(&t, &v, &DetectorConfig::default());
    assert_eq!(results[400].score, 0.0);
    assert!(
        results[401..]
            .iter()
            .all(|r| r.expected.is_finite() && r.score.is_finite())
    );
}
