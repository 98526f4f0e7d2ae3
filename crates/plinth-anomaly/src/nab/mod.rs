//! The Numenta Anomaly Benchmark: reading a NAB directory, NAB's scoring
//! (re-implemented from numenta/NAB `nab/labeler.py`, `nab/sweeper.py`,
//! `nab/scorer.py`), and running Plinth's detector over the benchmark.

pub mod corpus;
pub mod report;
pub mod scoring;

pub use corpus::{NabCorpus, NabError, NabFile};
pub use report::{NabReport, ProfileResult, detector_scores, run_nab, score_corpus};
pub use scoring::{CostMatrix, Profile, ScoredSeries, ThresholdScore, WindowRows};
