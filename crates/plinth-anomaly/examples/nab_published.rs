//! Scores a published detector's raw results with this crate's NAB scorer, to
//! compare with NAB's `results/final_results.json`:
//! `cargo run --release --example nab_published -- /path/to/NAB-checkout DETECTOR`.
//! Reads `results/DETECTOR/<category>/DETECTOR_<file>.csv` (column
//! `anomaly_score`) for every data file of the checkout.

use std::path::PathBuf;

use plinth_anomaly::nab::{NabCorpus, Profile, score_corpus};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: nab_published NAB_CHECKOUT DETECTOR";
    let dir = PathBuf::from(args.next().ok_or(usage)?);
    let detector = args.next().ok_or(usage)?;
    let corpus = NabCorpus::load(&dir)?;
    let mut all_scores = Vec::new();
    for file in &corpus.files {
        let (category, name) = file
            .name
            .rsplit_once('/')
            .ok_or("file outside a category")?;
        let path = dir
            .join("results")
            .join(&detector)
            .join(category)
            .join(format!("{detector}_{name}"));
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut lines = text.lines();
        let header = lines.next().ok_or("empty results file")?;
        let column = header
            .split(',')
            .position(|c| c == "anomaly_score")
            .ok_or("no anomaly_score column")?;
        let scores = lines
            .filter(|l| !l.is_empty())
            .map(|l| l.split(',').nth(column).unwrap_or("").parse::<f64>())
            .collect::<Result<Vec<_>, _>>()?;
        all_scores.push(scores);
    }
    print!(
        "{}",
        score_corpus(&corpus, all_scores, &Profile::nab_profiles())
    );
    Ok(())
}
