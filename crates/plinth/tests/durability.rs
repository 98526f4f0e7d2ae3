//! Crash tests: the real binary is killed (SIGKILL) at random moments while
//! it imports and while it compacts; the table must stay readable, hold no
//! duplicate, and end complete.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Moments, count, duckdb_scalar, plinth, run_ok};

fn demo_ndjson(path: &Path, users: &str) -> u64 {
    run_ok(&[
        "demo",
        "--ndjson",
        path.to_str().unwrap(),
        "--users",
        users,
        "--days",
        "30",
        "--seed",
        "3",
    ]);
    std::fs::read_to_string(path).unwrap().lines().count() as u64
}

/// Starts `plinth args`, kills it after `after`, and says whether it was
/// still running (a finished run proves nothing about crashes).
fn kill_after(args: &[&str], after: Duration) -> bool {
    let mut child = plinth()
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while started.elapsed() < after {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    true
}

/// `plinth import` of `file` into `data` in small commits: many
/// checkpoints for a kill to land between.
fn import_args<'a>(data: &'a Path, file: &'a Path) -> [&'a str; 6] {
    [
        "import",
        "--data",
        data.to_str().unwrap(),
        "--commit-rows",
        "10000",
        file.to_str().unwrap(),
    ]
}

/// How long a whole run of `plinth args` takes here, in milliseconds (at
/// least 40, so that kill moments drawn within it have room).
fn whole_run_ms(args: &[&str]) -> u64 {
    let started = Instant::now();
    run_ok(args);
    (started.elapsed().as_millis() as u64).max(40)
}

fn assert_no_duplicates(data: &Path) -> u64 {
    let rows = count(data, "SELECT count(*) FROM events");
    let unique = count(data, "SELECT count(DISTINCT uuid) FROM events");
    assert_eq!(rows, unique, "a killed writer left duplicate events");
    rows
}

#[test]
fn an_import_killed_at_random_moments_resumes_to_every_event_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("demo.ndjson");
    let total = demo_ndjson(&file, "6000");
    let data = dir.path().join("data");
    let args = import_args(&data, &file);
    // How long a whole import of this file takes here, timed into other
    // folders (the faster of two: the first run also loads the binary):
    // kills drawn within that span land while one runs, however fast the
    // machine (fixed bounds let a fast import finish first).
    let whole_ms = ["probe-1", "probe-2"]
        .map(|probe| whole_run_ms(&import_args(&dir.path().join(probe), &file)))
        .into_iter()
        .min()
        .unwrap();
    let mut moments = Moments::from_env_or_clock();
    let mut kills = 0;
    for _ in 0..5 {
        let after = moments.next_ms(whole_ms / 20, whole_ms * 9 / 10);
        if kill_after(&args, Duration::from_millis(after)) {
            kills += 1;
        } else {
            // It finished first: start over, or every later run would
            // have nothing left to import.
            assert_eq!(assert_no_duplicates(&data), total);
            std::fs::remove_dir_all(&data).unwrap();
        }
        if data.join("tables").exists() {
            let rows = assert_no_duplicates(&data);
            assert!(rows <= total);
        }
    }
    assert!(kills > 0, "every import finished before it could be killed");
    let out = run_ok(&args);
    assert!(out.contains("events"), "{out}");
    assert_eq!(assert_no_duplicates(&data), total);
    assert_eq!(count(&data, "SELECT count(*) FROM quarantine"), 0);
    // Persons are saved less often than events: a resumed import applies
    // the identities of stored rows again, so every event's person (and
    // its number) is in `persons`, once.
    let orphans = "SELECT count(*) FROM events e LEFT JOIN persons p \
         ON e.person_id = p.person_id AND e.person_num = p.person_num WHERE p.person_id IS NULL";
    assert_eq!(count(&data, orphans), 0);
    assert_eq!(
        count(&data, "SELECT count(*) FROM persons"),
        count(&data, "SELECT count(DISTINCT person_id) FROM events")
    );
    assert_eq!(
        count(&data, "SELECT count(DISTINCT person_num) FROM persons"),
        count(&data, "SELECT count(*) FROM persons")
    );
}

#[test]
fn compaction_killed_at_random_moments_leaves_the_table_whole() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("demo.ndjson");
    let total = demo_ndjson(&file, "1500");
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    // Small commits: many small files per day for compaction to merge.
    run_ok(&[
        "import",
        "--data",
        data_arg,
        "--commit-rows",
        "3000",
        "--no-compact",
        file.to_str().unwrap(),
    ]);
    let days = count(
        &data,
        "SELECT count(DISTINCT date_trunc('day', timestamp)) FROM events",
    );
    let files_before = parquet_files(&data.join("tables/events"));
    assert!(
        files_before > days * 2,
        "{files_before} files for {days} days: nothing to compact"
    );
    let maintain = ["maintain", "--data", data_arg, "--vacuum-grace", "0"];
    // How long a whole compaction of this data takes here, timed on a copy:
    // kills drawn within that span land while one runs, however fast the
    // machine (fixed bounds let a fast compaction finish before any kill).
    let probe = dir.path().join("probe");
    copy_dir(&data, &probe);
    let pristine = dir.path().join("pristine");
    copy_dir(&data, &pristine);
    let whole_ms = whole_run_ms(&[
        "maintain",
        "--data",
        probe.to_str().unwrap(),
        "--vacuum-grace",
        "0",
    ]);
    let mut moments = Moments::from_env_or_clock();
    let mut kills = 0;
    for _ in 0..5 {
        let after = moments.next_ms(whole_ms / 20, whole_ms * 9 / 10);
        if kill_after(&maintain, Duration::from_millis(after)) {
            kills += 1;
        } else {
            // It finished first (the machine was quicker than the probe):
            // start over from the uncompacted files, or every later run
            // would have nothing left to compact.
            assert_eq!(assert_no_duplicates(&data), total);
            std::fs::remove_dir_all(&data).unwrap();
            copy_dir(&pristine, &data);
        }
        assert_eq!(assert_no_duplicates(&data), total);
    }
    assert!(
        kills > 0,
        "every compaction finished before it could be killed"
    );
    run_ok(&maintain);
    assert_eq!(assert_no_duplicates(&data), total);
    assert_eq!(parquet_files(&data.join("tables/events")), days);

    // DuckDB reading every Parquet file in the folder sees exactly the rows
    // Plinth counts: no orphan, no leftover of a replaced file.
    let glob = format!("{}/tables/events/**/*.parquet", data.display());
    let duck = duckdb_scalar(&format!("SELECT count(*) FROM read_parquet('{glob}')"));
    assert_eq!(duck.parse::<u64>().unwrap(), total);
    let duck_days = duckdb_scalar(&format!(
        "SELECT string_agg(d || ':' || n, ',' ORDER BY d) FROM (SELECT strftime(timestamp AT TIME ZONE 'UTC', '%Y-%m-%d') AS d, count(*) AS n FROM read_parquet('{glob}') GROUP BY d)"
    ));
    let ours = run_ok(&[
        "sql",
        "--data",
        data_arg,
        "--format",
        "csv",
        "SELECT string_agg(d || ':' || n, ',' ORDER BY d) FROM (SELECT to_char(timestamp, '%Y-%m-%d') AS d, count(*) AS n FROM events GROUP BY d)",
    ]);
    assert_eq!(ours.lines().nth(1).unwrap().trim_matches('"'), duck_days);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

fn parquet_files(dir: &Path) -> u64 {
    let mut found = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found += parquet_files(&path);
        } else if path.extension().is_some_and(|e| e == "parquet") {
            found += 1;
        }
    }
    found
}
