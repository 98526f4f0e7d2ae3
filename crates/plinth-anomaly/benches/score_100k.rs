//! Wall-clock of the detector over 100,000 points (a 5-minute series with a
//! daily cycle, noise and a few spikes): `cargo bench --bench score_100k`.
//! A plain timing loop (no criterion) keeps the crate's dependencies light.

use std::hint::black_box;
use std::time::Instant;

use plinth_anomaly::{DetectorConfig, detect_series};

fn main() {
    const POINTS: usize = 100_000;
    let timestamps: Vec<i64> = (0..POINTS as i64)
        .map(|i| 1_600_000_000 + 300 * i)
        .collect();
    // A deterministic pseudo-random noise (xorshift) keeps the bench reproducible.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let values: Vec<f64> = (0..POINTS)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let noise = (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
            let daily = (i as f64 * std::f64::consts::TAU / 288.0).sin();
            let spike = if i % 10_007 == 0 { 25.0 } else { 0.0 };
            100.0 + 10.0 * daily + 2.0 * noise + spike
        })
        .collect();
    let config = DetectorConfig::default();
    let mut best = f64::INFINITY;
    for _ in 0..20 {
        let start = Instant::now();
        let results = detect_series(black_box(&timestamps), black_box(&values), &config);
        let elapsed = start.elapsed().as_secs_f64();
        black_box(results);
        best = best.min(elapsed);
    }
    println!(
        "detect_series, {POINTS} points: best of 20 runs {:.2} ms ({:.1} ns/point)",
        best * 1e3,
        best * 1e9 / POINTS as f64
    );
}
