//! Scores many detector configurations on one NAB directory, loading it
//! once: `cargo run --release --example nab_grid -- NAB_DIR configs.jsonl`.
//! Each line of the JSONL file overrides fields of `DetectorConfig`; one line
//! of output per configuration: the three normalised scores, then the line.

use std::path::PathBuf;

use plinth_anomaly::nab::scoring::score_at_threshold;
use plinth_anomaly::nab::{NabCorpus, Profile, ScoredSeries, score_corpus};
use plinth_anomaly::{DetectorConfig, detect_series};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: nab_grid NAB_DIR configs.jsonl";
    let corpus = NabCorpus::load(&PathBuf::from(args.next().ok_or(usage)?))?;
    let lines = std::fs::read_to_string(args.next().ok_or(usage)?)?;
    let seconds: Vec<Vec<i64>> = corpus
        .files
        .iter()
        .map(|f| {
            f.timestamps
                .iter()
                .map(|t| t.and_utc().timestamp())
                .collect()
        })
        .collect();
    for line in lines.lines().filter(|l| !l.trim().is_empty()) {
        let config: DetectorConfig = serde_json::from_str(line)?;
        let scores: Vec<Vec<f64>> = corpus
            .files
            .iter()
            .zip(&seconds)
            .map(|(file, t)| {
                detect_series(t, &file.values, &config)
                    .into_iter()
                    .map(|p| p.score)
                    .collect()
            })
            .collect();
        let report = score_corpus(&corpus, scores.clone(), &Profile::nab_profiles());
        if std::env::var_os("NAB_PER_FILE").is_some() {
            // Per-file standard score at the corpus threshold, to see where points are lost.
            let standard = &report.profiles[0];
            let costs = Profile::nab_profiles()[0].costs;
            for (file, s) in corpus.files.iter().zip(&scores) {
                let series = [ScoredSeries {
                    anomaly_scores: s.clone(),
                    windows: file.windows.clone(),
                }];
                let r = score_at_threshold(&series, &costs, standard.threshold);
                println!(
                    "{:8.3} {:3} fp={:4} tprows={:5} {}",
                    r.score,
                    file.windows.len(),
                    r.fp,
                    r.tp,
                    file.name
                );
            }
        }
        let s: Vec<String> = report
            .profiles
            .iter()
            .map(|p| format!("{:6.2}", p.normalized_score))
            .collect();
        println!("{} {line}", s.join(" "));
    }
    Ok(())
}
