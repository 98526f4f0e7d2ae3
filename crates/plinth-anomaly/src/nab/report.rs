//! Scoring a whole corpus for every profile, and running the Plinth detector
//! over a NAB directory (`plinth anomalies nab --nab DIR`).

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::corpus::{NabCorpus, NabError, NabFile};
use super::scoring::{
    Profile, ScoredSeries, normalized_score, null_detector_score, optimize_threshold,
};
use crate::detector::{DetectorConfig, detect_series};

/// The result of one profile over the corpus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileResult {
    pub profile: String,
    /// The threshold swept over the whole corpus that maximises the score.
    pub threshold: f64,
    /// The raw NAB score at that threshold.
    pub raw_score: f64,
    /// Raw score of NAB's null detector (constant 0.5) on the same windows.
    pub null_score: f64,
    /// Raw score of a perfect detector: windows × tp weight.
    pub perfect_score: f64,
    /// 100 × (raw − null) / (perfect − null).
    pub normalized_score: f64,
    pub true_positives: usize,
    pub false_positives: usize,
    pub false_negatives: usize,
    pub true_negatives: usize,
}

/// NAB scores of one detector on a corpus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NabReport {
    pub files: usize,
    pub rows: usize,
    pub windows: usize,
    pub profiles: Vec<ProfileResult>,
}

impl NabReport {
    /// The result of the named profile, if it was scored.
    pub fn profile(&self, name: &str) -> Option<&ProfileResult> {
        self.profiles.iter().find(|p| p.profile == name)
    }
}

impl fmt::Display for NabReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "NAB: {} files, {} rows, {} windows",
            self.files, self.rows, self.windows
        )?;
        writeln!(
            f,
            "{:<20} {:>8} {:>10} {:>10} {:>6} {:>6} {:>6}",
            "profile", "score", "threshold", "raw", "TP", "FP", "FN"
        )?;
        for p in &self.profiles {
            writeln!(
                f,
                "{:<20} {:>8.2} {:>10.4} {:>10.3} {:>6} {:>6} {:>6}",
                p.profile,
                p.normalized_score,
                p.threshold,
                p.raw_score,
                p.true_positives,
                p.false_positives,
                p.false_negatives
            )?;
        }
        Ok(())
    }
}

/// Scores one detector's output on a corpus: `anomaly_scores[i]` belongs to
/// `corpus.files[i]` and has one score per row.
///
/// # Panics
/// If the number of score series or of scores in one differs from the corpus.
pub fn score_corpus(
    corpus: &NabCorpus,
    anomaly_scores: Vec<Vec<f64>>,
    profiles: &[Profile],
) -> NabReport {
    assert_eq!(
        corpus.files.len(),
        anomaly_scores.len(),
        "one score series per file"
    );
    let series: Vec<ScoredSeries> = corpus
        .files
        .iter()
        .zip(anomaly_scores)
        .map(|(file, scores)| {
            assert_eq!(
                file.timestamps.len(),
                scores.len(),
                "one score per row of {}",
                file.name
            );
            ScoredSeries {
                anomaly_scores: scores,
                windows: file.windows.clone(),
            }
        })
        .collect();
    let windows = corpus.window_count();
    let profiles = profiles
        .iter()
        .map(|profile| {
            let best = optimize_threshold(&series, &profile.costs);
            let null_score = null_detector_score(&series, &profile.costs);
            let perfect_score = windows as f64 * profile.costs.tp_weight;
            ProfileResult {
                profile: profile.name.clone(),
                threshold: best.threshold,
                raw_score: best.score,
                null_score,
                perfect_score,
                normalized_score: normalized_score(best.score, null_score, perfect_score),
                true_positives: best.tp,
                false_positives: best.fp,
                false_negatives: best.fn_,
                true_negatives: best.tn,
            }
        })
        .collect();
    NabReport {
        files: corpus.files.len(),
        rows: corpus.row_count(),
        windows,
        profiles,
    }
}

/// The detector's score of every point of one NAB file, in order.
pub fn detector_scores(file: &NabFile, config: &DetectorConfig) -> Vec<f64> {
    let seconds: Vec<i64> = file
        .timestamps
        .iter()
        .map(|t| t.and_utc().timestamp())
        .collect();
    detect_series(&seconds, &file.values, config)
        .into_iter()
        .map(|point| point.score)
        .collect()
}

/// Runs the Plinth detector over every file of a NAB directory and scores it
/// with NAB's three profiles.
pub fn run_nab(nab_dir: &Path, config: &DetectorConfig) -> Result<NabReport, NabError> {
    let corpus = NabCorpus::load(nab_dir)?;
    let scores = corpus
        .files
        .iter()
        .map(|file| detector_scores(file, config))
        .collect();
    Ok(score_corpus(&corpus, scores, &Profile::nab_profiles()))
}
