//! Properties of the pattern-novelty memory and of its part in the detector.

use plinth_anomaly::novelty::PatternNovelty;
use plinth_anomaly::{DetectorConfig, detect_series};

/// A square wave alternating between 0 and 10 every `half` points.
fn square_wave(points: usize, half: usize) -> Vec<f64> {
    (0..points)
        .map(|i| {
            if (i / half).is_multiple_of(2) {
                0.0
            } else {
                10.0
            }
        })
        .collect()
}

#[test]
fn repeated_shapes_are_not_novel_and_a_new_level_is() {
    let mut memory = PatternNovelty::new(100, 10.0, 2);
    let values = square_wave(400, 10);
    let scores: Vec<f64> = values.iter().map(|&v| memory.observe(v)).collect();
    assert!(scores[..100].iter().all(|&s| s == 0.0), "warm-up is silent");
    assert!(
        scores[100..].iter().all(|&s| s == 0.0),
        "the wave was learnt during warm-up"
    );
    // Far above the warm-up range: a level never visited.
    assert_eq!(memory.observe(25.0), 1.0);
    // Seen once, it is known.
    memory.observe(25.0);
    assert_eq!(memory.observe(25.0), 0.0);
}

#[test]
fn a_new_transition_between_known_levels_is_partly_novel() {
    // Levels 0 and 10 alternate slowly; 5 appears only in warm-up, after 0.
    let mut values = square_wave(100, 10);
    values[5] = 5.0;
    let mut memory = PatternNovelty::new(100, 10.0, 2);
    for v in &values {
        memory.observe(*v);
    }
    // Going from the high level to 5 was never seen; both levels were.
    memory.observe(10.0);
    let score = memory.observe(5.0);
    assert!(score > 0.0 && score < 1.0, "{score}");
}

#[test]
fn novelty_state_round_trips_through_serde() {
    let values = square_wave(600, 7);
    let mut whole = PatternNovelty::new(150, 12.0, 3);
    let expected: Vec<f64> = values.iter().map(|&v| whole.observe(v)).collect();
    let mut memory = PatternNovelty::new(150, 12.0, 3);
    let mut streamed = Vec::new();
    for (i, &v) in values.iter().enumerate() {
        if i % 97 == 0 {
            let saved = serde_json::to_string(&memory).unwrap();
            memory = serde_json::from_str(&saved).unwrap();
        }
        streamed.push(memory.observe(v));
    }
    assert_eq!(expected, streamed);
    assert_eq!(memory, whole);
}

#[test]
fn a_level_shift_is_flagged_once_at_its_start() {
    // Noisy but bounded minute data, then a lasting shift up.
    let points = 2000;
    let shift_at = 1500;
    let timestamps: Vec<i64> = (0..points as i64).map(|i| 1_700_000_000 + 60 * i).collect();
    let mut state: u64 = 7;
    let values: Vec<f64> = (0..points)
        .map(|i| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let noise = (state >> 33) as f64 / (1u64 << 31) as f64;
            50.0 + 4.0 * noise + if i >= shift_at { 30.0 } else { 0.0 }
        })
        .collect();
    let config = DetectorConfig::default();
    let results = detect_series(&timestamps, &values, &config);
    assert!(results[shift_at].score >= config.alarm_score);
    let alarms_before = results[config.warmup_points..shift_at]
        .iter()
        .filter(|r| r.score >= config.alarm_score)
        .count();
    assert_eq!(alarms_before, 0);
    // Suppression silences the points right after the alarm.
    assert!(
        results[shift_at + 1..=shift_at + config.suppression_points]
            .iter()
            .all(|r| r.score == 0.0)
    );
}

#[test]
fn detection_is_deterministic() {
    let timestamps: Vec<i64> = (0..3000).map(|i| 1_600_000_000 + 300 * i).collect();
    let values: Vec<f64> = (0..3000)
        .map(|i| ((i * i) % 97) as f64 + if i == 2500 { 400.0 } else { 0.0 })
        .collect();
    let config = DetectorConfig::default();
    let first = detect_series(&timestamps, &values, &config);
    let second = detect_series(&timestamps, &values, &config);
    assert!(first == second);
    assert!(first[2500].score > 0.5);
}
