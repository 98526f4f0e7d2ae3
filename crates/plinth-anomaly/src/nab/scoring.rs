//! The NAB scoring function: sigmoid-weighted window credit, a threshold swept
//! over a whole corpus, and the normalisation against the null detector.
//!
//! Semantics follow numenta/NAB `nab/sweeper.py`, `nab/optimizer.py`,
//! `nab/scorer.py` and `Runner.normalize` (commit ea702d7):
//! - the first `min(floor(0.15 n), 750)` rows of a file are probationary and
//!   not scored;
//! - a detection inside a window earns `tp_weight * S(p) / S(-1)` where `p` is
//!   its relative position (−1 at the left edge, 0 past the right edge) and
//!   `S(p) = 2 sigmoid(−5p) − 1`; only a window's best detection counts, and a
//!   window without one costs `fn_weight`;
//! - a detection outside windows costs `fp_weight * S(d)` where `d` is its
//!   distance past the preceding window in window widths (−1 × `fp_weight`
//!   when no window precedes it);
//! - a score `s` is a detection at threshold `t` when `s >= t`.

use serde::{Deserialize, Serialize};

/// NAB's probationary share of each file.
pub const PROBATION_FRACTION: f64 = 0.15;

/// The weights of one scoring profile (NAB `config/profiles.json`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CostMatrix {
    pub tp_weight: f64,
    pub fp_weight: f64,
    pub fn_weight: f64,
}

/// A named scoring profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub name: String,
    pub costs: CostMatrix,
}

impl Profile {
    /// NAB's three application profiles, in the order NAB reports them.
    pub fn nab_profiles() -> Vec<Profile> {
        let profile = |name: &str, fp_weight, fn_weight| Profile {
            name: name.to_string(),
            costs: CostMatrix {
                tp_weight: 1.0,
                fp_weight,
                fn_weight,
            },
        };
        vec![
            profile("standard", 0.11, 1.0),
            profile("reward_low_FP_rate", 0.22, 1.0),
            profile("reward_low_FN_rate", 0.11, 2.0),
        ]
    }
}

/// An anomaly window as inclusive row indices into its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowRows {
    pub first: usize,
    pub last: usize,
}

/// One file's detector output and truth, ready to score.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredSeries {
    /// Detector scores in [0, 1], one per row.
    pub anomaly_scores: Vec<f64>,
    /// Windows sorted by time and disjoint.
    pub windows: Vec<WindowRows>,
}

/// Number of leading rows NAB leaves unscored in a file of `rows` rows.
pub fn probation_length(rows: usize) -> usize {
    let by_share = (PROBATION_FRACTION * rows as f64).floor();
    by_share.min(PROBATION_FRACTION * 5000.0) as usize
}

/// NAB's scaled sigmoid of a relative position.
pub fn scaled_sigmoid(relative_position: f64) -> f64 {
    if relative_position > 3.0 {
        -1.0
    } else {
        2.0 / (1.0 + (5.0 * relative_position).exp()) - 1.0
    }
}

/// A scorable row: its detector score, what a detection there would be worth,
/// and the window it belongs to (`None` outside windows).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SweepPoint {
    pub anomaly_score: f64,
    pub weighted_score: f64,
    pub window: Option<usize>,
}

/// The outcome of one threshold: detections are scores `>= threshold`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ThresholdScore {
    pub threshold: f64,
    pub score: f64,
    pub tp: usize,
    pub tn: usize,
    pub fp: usize,
    pub fn_: usize,
}

/// The sweep points of one file's non-probationary rows. Window ids start at
/// `first_window_id` so several files can be swept together.
pub fn sweep_points(
    series: &ScoredSeries,
    costs: &CostMatrix,
    first_window_id: usize,
) -> Vec<SweepPoint> {
    let rows = series.anomaly_scores.len();
    let probation = probation_length(rows);
    let max_tp = scaled_sigmoid(-1.0);
    let mut points = Vec::with_capacity(rows.saturating_sub(probation));
    let mut next_window = 0;
    let mut current: Option<(usize, WindowRows)> = None;
    let mut previous: Option<WindowRows> = None;
    for (row, &anomaly_score) in series.anomaly_scores.iter().enumerate() {
        // NAB enters the next window at its first row even while inside one
        // (only possible with overlapping windows, which its labeler merges).
        if let Some(window) = series.windows.get(next_window)
            && window.first == row
        {
            current = Some((first_window_id + next_window, *window));
            next_window += 1;
        }
        let weighted_score = match current {
            Some((_, window)) => {
                let width = (window.last - window.first + 1) as f64;
                let position = -((window.last as f64 - row as f64 + 1.0) / width);
                scaled_sigmoid(position) * costs.tp_weight / max_tp
            }
            None => match previous {
                None => -costs.fp_weight,
                Some(window) => {
                    let width = (window.last - window.first + 1) as f64;
                    // A one-row window has no width to measure distance by
                    // (NAB divides by zero there): count it as far away.
                    let past = (row - window.last) as f64 / (width - 1.0);
                    let past = if past.is_finite() {
                        past
                    } else {
                        f64::INFINITY
                    };
                    scaled_sigmoid(past) * costs.fp_weight
                }
            },
        };
        if row >= probation {
            points.push(SweepPoint {
                anomaly_score,
                weighted_score,
                window: current.map(|(id, _)| id),
            });
        }
        if let Some((_, window)) = current
            && window.last == row
        {
            previous = Some(window);
            current = None;
        }
    }
    points
}

/// The score at every distinct threshold, highest threshold first, starting
/// with 1.1 (no detection at all), as NAB's `calcScoreByThreshold`.
pub fn scores_by_threshold(points: &[SweepPoint], costs: &CostMatrix) -> Vec<ThresholdScore> {
    let mut order: Vec<&SweepPoint> = points.iter().collect();
    order.sort_by(|a, b| b.anomaly_score.total_cmp(&a.anomaly_score));

    let window_count = points
        .iter()
        .filter_map(|p| p.window)
        .max()
        .map_or(0, |m| m + 1);
    // Per window: its current credit, or None if it has no scorable row.
    let mut window_credit: Vec<Option<f64>> = vec![None; window_count];
    for point in points {
        if let Some(id) = point.window {
            window_credit[id] = Some(-costs.fn_weight);
        }
    }
    let mut false_positive_sum = 0.0;
    let mut window_sum: f64 = window_credit.iter().flatten().sum();

    let mut tn = points.iter().filter(|p| p.window.is_none()).count();
    let mut fn_ = points.len() - tn;
    let (mut tp, mut fp) = (0, 0);
    let mut threshold = 1.1;
    let mut result = Vec::new();
    for point in order {
        if point.anomaly_score != threshold {
            result.push(ThresholdScore {
                threshold,
                score: false_positive_sum + window_sum,
                tp,
                tn,
                fp,
                fn_,
            });
            threshold = point.anomaly_score;
        }
        match point.window {
            Some(id) => {
                tp += 1;
                fn_ -= 1;
                let credit = window_credit[id].get_or_insert(-costs.fn_weight);
                if point.weighted_score > *credit {
                    window_sum += point.weighted_score - *credit;
                    *credit = point.weighted_score;
                }
            }
            None => {
                fp += 1;
                tn -= 1;
                false_positive_sum += point.weighted_score;
            }
        }
    }
    result.push(ThresholdScore {
        threshold,
        score: false_positive_sum + window_sum,
        tp,
        tn,
        fp,
        fn_,
    });
    result
}

/// Sweep points of several files with distinct window ids.
pub fn corpus_points(files: &[ScoredSeries], costs: &CostMatrix) -> Vec<SweepPoint> {
    let mut points = Vec::new();
    let mut first_window_id = 0;
    for series in files {
        points.extend(sweep_points(series, costs, first_window_id));
        first_window_id += series.windows.len();
    }
    points
}

/// The best threshold over a corpus (NAB's optimizer): the highest score, and
/// among equal scores the highest threshold.
pub fn optimize_threshold(files: &[ScoredSeries], costs: &CostMatrix) -> ThresholdScore {
    let points = corpus_points(files, costs);
    let mut best: Option<ThresholdScore> = None;
    for candidate in scores_by_threshold(&points, costs) {
        if best.is_none_or(|b| candidate.score > b.score) {
            best = Some(candidate);
        }
    }
    best.expect("the sweep always yields the no-detection row")
}

/// The score of a set of files at a fixed threshold.
pub fn score_at_threshold(
    files: &[ScoredSeries],
    costs: &CostMatrix,
    threshold: f64,
) -> ThresholdScore {
    let points = corpus_points(files, costs);
    let mut counts = ThresholdScore {
        threshold,
        score: 0.0,
        tp: 0,
        tn: 0,
        fp: 0,
        fn_: 0,
    };
    let window_count = points
        .iter()
        .filter_map(|p| p.window)
        .max()
        .map_or(0, |m| m + 1);
    let mut window_credit: Vec<Option<f64>> = vec![None; window_count];
    for point in &points {
        let detected = point.anomaly_score >= threshold;
        match (point.window, detected) {
            (Some(id), true) => {
                counts.tp += 1;
                let credit = window_credit[id].get_or_insert(-costs.fn_weight);
                *credit = credit.max(point.weighted_score);
            }
            (Some(id), false) => {
                counts.fn_ += 1;
                window_credit[id].get_or_insert(-costs.fn_weight);
            }
            (None, true) => {
                counts.fp += 1;
                counts.score += point.weighted_score;
            }
            (None, false) => counts.tn += 1,
        }
    }
    counts.score += window_credit.iter().flatten().sum::<f64>();
    counts
}

/// NAB's normalisation: 100 for a perfect detector, 0 for the null detector.
pub fn normalized_score(raw: f64, null_score: f64, perfect_score: f64) -> f64 {
    100.0 * (raw - null_score) / (perfect_score - null_score)
}

/// The raw score of NAB's null detector (a constant 0.5) on these windows,
/// after the same threshold sweep every detector gets.
pub fn null_detector_score(files: &[ScoredSeries], costs: &CostMatrix) -> f64 {
    let constant: Vec<ScoredSeries> = files
        .iter()
        .map(|series| ScoredSeries {
            anomaly_scores: vec![0.5; series.anomaly_scores.len()],
            windows: series.windows.clone(),
        })
        .collect();
    optimize_threshold(&constant, costs).score
}
