//! Two-fold cross-validation of a grid of detector configurations on one NAB
//! directory: `cargo run --release --example nab_cv -- NAB_DIR configs.jsonl`.
//!
//! The files (sorted by name) are split into two folds by alternating them,
//! so both folds hold every category. Each configuration (one JSONL line of
//! `DetectorConfig` overrides) is scored on the full corpus and on each fold
//! (standard profile, NAB's threshold sweep on the scored files). Then the
//! configuration that is best on one fold scores the files of the other, and
//! the whole corpus, with each file scored by the configuration chosen
//! without it, gets NAB's usual sweep: the cross-validated figure, free of
//! the choice of parameters (the threshold sweep is NAB's own protocol).

use std::path::PathBuf;

use plinth_anomaly::DetectorConfig;
use plinth_anomaly::nab::{NabCorpus, NabFile, Profile, detector_scores, score_corpus};

fn scores_of(files: &[&NabFile], config: &DetectorConfig) -> Vec<Vec<f64>> {
    let run = |file: &&NabFile| detector_scores(file, config);
    let half = files.len() / 2;
    std::thread::scope(|scope| {
        let first = scope.spawn(|| files[..half].iter().map(run).collect::<Vec<_>>());
        let mut second: Vec<Vec<f64>> = files[half..].iter().map(run).collect();
        let mut all = first.join().expect("scoring thread");
        all.append(&mut second);
        all
    })
}

fn standard(files: &[&NabFile], scores: Vec<Vec<f64>>) -> f64 {
    let corpus = NabCorpus {
        files: files.iter().map(|f| (*f).clone()).collect(),
    };
    score_corpus(&corpus, scores, &Profile::nab_profiles()[..1]).profiles[0].normalized_score
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: nab_cv NAB_DIR configs.jsonl";
    let corpus = NabCorpus::load(&PathBuf::from(args.next().ok_or(usage)?))?;
    let lines = std::fs::read_to_string(args.next().ok_or(usage)?)?;
    let all: Vec<&NabFile> = corpus.files.iter().collect();
    let folds: [Vec<usize>; 2] = [
        (0..all.len()).step_by(2).collect(),
        (1..all.len()).step_by(2).collect(),
    ];
    let pick = |fold: &[usize]| -> Vec<&NabFile> { fold.iter().map(|&i| all[i]).collect() };
    let fold_files = [pick(&folds[0]), pick(&folds[1])];

    let mut results = Vec::new();
    for line in lines.lines().filter(|l| !l.trim().is_empty()) {
        let config: DetectorConfig = serde_json::from_str(line)?;
        let scores = scores_of(&all, &config);
        let full = score_corpus(&corpus, scores.clone(), &Profile::nab_profiles());
        let fold_score = |k: usize| {
            standard(
                &fold_files[k],
                folds[k].iter().map(|&i| scores[i].clone()).collect(),
            )
        };
        let (a, b) = (fold_score(0), fold_score(1));
        let s: Vec<String> = full
            .profiles
            .iter()
            .map(|p| format!("{:6.2}", p.normalized_score))
            .collect();
        println!("{} | A {a:6.2} B {b:6.2} | {line}", s.join(" "));
        results.push((
            config,
            line.to_string(),
            full.profiles[0].normalized_score,
            a,
            b,
        ));
    }
    let best_by = |key: fn(&(DetectorConfig, String, f64, f64, f64)) -> f64| {
        results
            .iter()
            .max_by(|x, y| key(x).total_cmp(&key(y)))
            .expect("at least one configuration")
    };
    let best_full = best_by(|r| r.2);
    let best_a = best_by(|r| r.3);
    let best_b = best_by(|r| r.4);
    println!("best on full {:6.2}: {}", best_full.2, best_full.1);
    println!(
        "best on A    {:6.2} (B {:6.2}): {}",
        best_a.3, best_a.4, best_a.1
    );
    println!(
        "best on B    {:6.2} (A {:6.2}): {}",
        best_b.4, best_b.3, best_b.1
    );
    // Each file scored by the configuration tuned on the other fold.
    let from_a = scores_of(&fold_files[1], &best_a.0);
    let from_b = scores_of(&fold_files[0], &best_b.0);
    let mut cross = vec![Vec::new(); all.len()];
    for (k, s) in folds[1].iter().zip(from_a) {
        cross[*k] = s;
    }
    for (k, s) in folds[0].iter().zip(from_b) {
        cross[*k] = s;
    }
    let report = score_corpus(&corpus, cross, &Profile::nab_profiles());
    let s: Vec<String> = report
        .profiles
        .iter()
        .map(|p| format!("{:6.2}", p.normalized_score))
        .collect();
    println!("cross-validated full corpus: {}", s.join(" "));
    Ok(())
}
