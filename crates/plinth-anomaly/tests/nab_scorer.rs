//! The NAB scorer against NAB's own published numbers and its defining
//! properties (perfect detector = 100, null detector = 0).

use std::collections::BTreeMap;
use std::path::PathBuf;

use plinth_anomaly::nab::corpus::{parse_timestamp, windows_from_label_rows};
use plinth_anomaly::nab::scoring::{probation_length, scaled_sigmoid, score_at_threshold};
use plinth_anomaly::nab::{NabCorpus, Profile, ScoredSeries, WindowRows, score_corpus};

/// This package's folder, read when the test runs: a test binary that
/// cargo reuses from a clone elsewhere keeps that clone's compile-time path.
fn manifest_dir() -> PathBuf {
    PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"),
    )
}

fn data(name: &str) -> PathBuf {
    manifest_dir().join("tests/data").join(name)
}

#[test]
fn scaled_sigmoid_matches_nab_documentation() {
    // Values quoted in NAB's sweeper.py docstring.
    assert!((scaled_sigmoid(-1.0) - 0.98661).abs() < 1e-5);
    assert!((scaled_sigmoid(-0.5) - 0.84828).abs() < 1e-5);
    assert!(scaled_sigmoid(0.0).abs() < 1e-12);
    assert!((scaled_sigmoid(1.0) + 0.98661).abs() < 1e-5);
    assert_eq!(scaled_sigmoid(3.5), -1.0);
}

#[test]
fn probation_is_fifteen_percent_capped_at_750() {
    assert_eq!(probation_length(1127), 169);
    assert_eq!(probation_length(4032), 604);
    assert_eq!(probation_length(22695), 750);
}

/// NAB's published per-file results for its "numenta" detector on
/// realTraffic/speed_7578.csv, for all three profiles.
#[test]
fn reproduces_published_per_file_scores_of_numenta_detector() {
    let text = std::fs::read_to_string(data("numenta_speed_7578.csv")).unwrap();
    let mut timestamps = Vec::new();
    let mut scores = Vec::new();
    for line in text.lines().skip(1) {
        let (time, score) = line.split_once(',').unwrap();
        timestamps.push(parse_timestamp(time).unwrap());
        scores.push(score.parse::<f64>().unwrap());
    }
    let windows: BTreeMap<String, Vec<[String; 2]>> =
        serde_json::from_str(&std::fs::read_to_string(data("speed_7578_windows.json")).unwrap())
            .unwrap();
    let row = |t: &str| {
        let t = parse_timestamp(t).unwrap();
        timestamps.iter().position(|x| *x == t).unwrap()
    };
    let windows: Vec<WindowRows> = windows["realTraffic/speed_7578.csv"]
        .iter()
        .map(|[a, b]| WindowRows {
            first: row(a),
            last: row(b),
        })
        .collect();
    let series = [ScoredSeries {
        anomaly_scores: scores,
        windows,
    }];

    let published = std::fs::read_to_string(data("numenta_speed_7578_published.csv")).unwrap();
    let profiles = Profile::nab_profiles();
    let mut checked = 0;
    for line in published.lines().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        let profile = profiles.iter().find(|p| p.name == fields[1]).unwrap();
        let threshold: f64 = fields[3].parse().unwrap();
        let result = score_at_threshold(&series, &profile.costs, threshold);
        let expected_score: f64 = fields[4].parse().unwrap();
        assert!(
            (result.score - expected_score).abs() < 1e-9,
            "{}: {} vs published {expected_score}",
            profile.name,
            result.score
        );
        let counts: Vec<usize> = fields[5..9].iter().map(|f| f.parse().unwrap()).collect();
        assert_eq!(
            vec![result.tp, result.tn, result.fp, result.fn_],
            counts,
            "{}",
            profile.name
        );
        checked += 1;
    }
    assert_eq!(checked, 3);
}

/// A tiny NAB directory: two files with a daily pattern, three windows.
struct TinyNab {
    dir: PathBuf,
    labels: BTreeMap<String, Vec<String>>,
}

fn stamp(row: usize) -> String {
    let t =
        parse_timestamp("2020-01-01 00:00:00").unwrap() + chrono::Duration::minutes(5 * row as i64);
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

fn tiny_nab(name: &str, label_rows: &[(&str, &[usize])]) -> TinyNab {
    let dir = std::env::temp_dir().join(format!("plinth-anomaly-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("data/synthetic")).unwrap();
    std::fs::create_dir_all(dir.join("labels")).unwrap();
    let mut labels = BTreeMap::new();
    for (file, rows) in label_rows {
        let mut csv = String::from("timestamp,value\n");
        for row in 0..2000 {
            let value = 10.0 + (row as f64 / 288.0 * std::f64::consts::TAU).sin();
            csv.push_str(&format!("{},{value}\n", stamp(row)));
        }
        std::fs::write(dir.join("data/synthetic").join(file), csv).unwrap();
        labels.insert(
            format!("synthetic/{file}"),
            rows.iter()
                .map(|&r| format!("{}.000000", stamp(r)))
                .collect(),
        );
    }
    TinyNab { dir, labels }
}

#[test]
fn perfect_detector_scores_100_and_null_detector_0() {
    let nab = tiny_nab("perfect", &[("a.csv", &[700, 1500]), ("b.csv", &[1200])]);
    std::fs::write(
        nab.dir.join("labels/combined_labels.json"),
        serde_json::to_string(&nab.labels).unwrap(),
    )
    .unwrap();
    let corpus = NabCorpus::load(&nab.dir).unwrap();
    assert_eq!(corpus.window_count(), 3);

    let perfect: Vec<Vec<f64>> = corpus
        .files
        .iter()
        .map(|f| {
            let mut scores = vec![0.0; f.timestamps.len()];
            for w in &f.windows {
                scores[w.first] = 1.0;
            }
            scores
        })
        .collect();
    let null: Vec<Vec<f64>> = corpus
        .files
        .iter()
        .map(|f| vec![0.5; f.timestamps.len()])
        .collect();
    let profiles = Profile::nab_profiles();
    let perfect = score_corpus(&corpus, perfect, &profiles);
    let null = score_corpus(&corpus, null, &profiles);
    for (p, n) in perfect.profiles.iter().zip(&null.profiles) {
        assert!((p.normalized_score - 100.0).abs() < 1e-9, "{p:?}");
        assert!(n.normalized_score.abs() < 1e-9, "{n:?}");
    }
    // Detecting late in the window earns less than detecting early.
    let late: Vec<Vec<f64>> = corpus
        .files
        .iter()
        .map(|f| {
            let mut scores = vec![0.0; f.timestamps.len()];
            for w in &f.windows {
                scores[w.last] = 1.0;
            }
            scores
        })
        .collect();
    let late = score_corpus(&corpus, late, &profiles);
    assert!(late.profile("standard").unwrap().normalized_score < 60.0);
    std::fs::remove_dir_all(&nab.dir).unwrap();
}

#[test]
fn windows_from_labels_follow_nab_labeler() {
    // 2000 rows, two labels: each window is floor(0.1 * 2000 / 2) = 100 rows
    // long, centred (50 either side).
    let windows = windows_from_label_rows(&[700, 1500], 2000);
    assert_eq!(
        windows,
        vec![
            WindowRows {
                first: 650,
                last: 750
            },
            WindowRows {
                first: 1450,
                last: 1550
            }
        ]
    );
    // Three labels: windows of floor(200 / 3) = 66 rows, 33 either side. The
    // first starts inside probation (300 rows) and is dropped; the other two
    // overlap and are merged.
    let windows = windows_from_label_rows(&[100, 1000, 1020], 2000);
    assert_eq!(
        windows,
        vec![WindowRows {
            first: 967,
            last: 1053
        }]
    );
    // The window file and the label file give the same corpus.
    let nab = tiny_nab("windows", &[("a.csv", &[700, 1500])]);
    let windows: BTreeMap<&str, Vec<[String; 2]>> = BTreeMap::from([(
        "synthetic/a.csv",
        vec![
            [
                format!("{}.000000", stamp(650)),
                format!("{}.000000", stamp(750)),
            ],
            [
                format!("{}.000000", stamp(1450)),
                format!("{}.000000", stamp(1550)),
            ],
        ],
    )]);
    std::fs::write(
        nab.dir.join("labels/combined_windows.json"),
        serde_json::to_string(&windows).unwrap(),
    )
    .unwrap();
    let from_windows = NabCorpus::load(&nab.dir).unwrap();
    std::fs::remove_file(nab.dir.join("labels/combined_windows.json")).unwrap();
    std::fs::write(
        nab.dir.join("labels/combined_labels.json"),
        serde_json::to_string(&nab.labels).unwrap(),
    )
    .unwrap();
    let from_labels = NabCorpus::load(&nab.dir).unwrap();
    assert_eq!(from_windows, from_labels);
    std::fs::remove_dir_all(&nab.dir).unwrap();
}

#[test]
fn run_nab_reports_all_profiles() {
    let nab = tiny_nab("run", &[("a.csv", &[1500])]);
    std::fs::write(
        nab.dir.join("labels/combined_labels.json"),
        serde_json::to_string(&nab.labels).unwrap(),
    )
    .unwrap();
    // Put a clear level shift at the label.
    let path = nab.dir.join("data/synthetic/a.csv");
    let shifted: String = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .enumerate()
        .map(|(i, line)| match line.split_once(',') {
            Some((t, v)) if i > 1500 => format!("{t},{}\n", v.parse::<f64>().unwrap() + 20.0),
            _ => format!("{line}\n"),
        })
        .collect();
    std::fs::write(&path, shifted).unwrap();
    let report = plinth_anomaly::run_nab(&nab.dir, &Default::default()).unwrap();
    let names: Vec<&str> = report.profiles.iter().map(|p| p.profile.as_str()).collect();
    assert_eq!(
        names,
        ["standard", "reward_low_FP_rate", "reward_low_FN_rate"]
    );
    assert!(
        report.profile("standard").unwrap().normalized_score > 50.0,
        "{report}"
    );
    let table = report.to_string();
    assert!(
        table.contains("reward_low_FN_rate") && table.contains("1 windows"),
        "{table}"
    );
    std::fs::remove_dir_all(&nab.dir).unwrap();
}
