//! Command-line behaviour: errors are one clear line and a non-zero exit.

mod common;

use common::run;

fn stderr_line(output: &std::process::Output) -> String {
    let text = String::from_utf8_lossy(&output.stderr).to_string();
    let lines: Vec<_> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line of error, got:\n{text}");
    lines[0].to_string()
}

#[test]
fn sql_on_a_missing_directory_says_what_to_do() {
    let output = run(&["sql", "--data", "/nonexistent/plinth", "SELECT 1"]);
    assert_eq!(output.status.code(), Some(1));
    let line = stderr_line(&output);
    assert!(
        line.starts_with("error: ") && line.contains("plinth demo"),
        "{line}"
    );
}

#[test]
fn bad_sql_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    common::run_ok(&["keys", "create", "--data", data, "--capture"]);
    std::fs::create_dir_all(dir.path().join("tables")).unwrap();
    let output = run(&["sql", "--data", data, "SELEC 1"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr_line(&output).starts_with("error: "));
}

#[test]
fn keys_need_a_role_or_capture() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(&["keys", "create", "--data", dir.path().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let output = run(&[
        "keys",
        "create",
        "--data",
        dir.path().to_str().unwrap(),
        "--role",
        "owner",
    ]);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn every_command_has_help() {
    for command in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["keys", "create", "--help"],
        vec!["sql", "--help"],
        vec!["import", "--help"],
        vec!["demo", "--help"],
        vec!["maintain", "--help"],
        vec!["experiment", "results", "--help"],
        vec!["experiment", "create", "--help"],
        vec!["alert", "create", "--help"],
    ] {
        let output = run(&command);
        assert!(output.status.success(), "{command:?}");
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("Usage:"),
            "{command:?}"
        );
    }
}

#[test]
fn a_second_writer_is_told_who_holds_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let _server = common::Server::start(dir.path());
    let file = dir.path().join("e.ndjson");
    std::fs::write(&file, "{\"event\":\"x\",\"distinct_id\":\"a\"}\n").unwrap();
    let output = run(&[
        "import",
        "--data",
        dir.path().to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let line = stderr_line(&output);
    assert!(line.contains("plinth serve on 127.0.0.1:"), "{line}");
}

#[test]
fn import_of_an_unknown_format_asks_for_format() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.txt");
    std::fs::write(&file, "x").unwrap();
    let output = run(&[
        "import",
        "--data",
        dir.path().to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr_line(&output).contains("--format"));
}

#[test]
fn stats_answers_a_json_request_on_stdin() {
    let output = common::run_with_stdin(
        &["stats"],
        br#"{"test": "ttest", "metric": "proportion", "difference": "relative",
            "control": {"n": 1000, "sum": 100}, "treatment": {"n": 1000, "sum": 120}}"#,
    );
    assert!(output.status.success());
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    // GrowthBook's gbstats gives lift 0.2, CI [-0.100768, 0.500768], p 0.192350.
    assert!((answer["lift"].as_f64().unwrap() - 0.2).abs() < 1e-9);
    assert!((answer["ci"][0].as_f64().unwrap() + 0.100768).abs() < 1e-6);
    assert!((answer["p_value"].as_f64().unwrap() - 0.192350).abs() < 1e-6);
}

#[test]
fn stats_names_the_bad_field() {
    let output = common::run_with_stdin(
        &["stats"],
        br#"{"test": "ttest", "metric": "proportion", "control": {"n": 10}, "treatment": {"n": 10, "sum": 2}}"#,
    );
    assert_eq!(output.status.code(), Some(1));
    let line = stderr_line(&output);
    assert!(line.contains("control.sum"), "{line}");
}

#[test]
fn a_relative_data_directory_works_for_import_and_sql() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    std::fs::write(
        &events,
        "{\"event\":\"$pageview\",\"distinct_id\":\"u1\",\"timestamp\":\"2026-01-02T03:04:05Z\"}\n",
    )
    .unwrap();
    let in_dir = |args: &[&str]| {
        let output = common::plinth()
            .current_dir(dir.path())
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    in_dir(&["import", "--data", "data", "events.ndjson"]);
    let printed = in_dir(&[
        "sql",
        "--data",
        "data",
        "--format",
        "csv",
        "SELECT count(*) AS n FROM events",
    ]);
    assert_eq!(printed.trim(), "n\n1");
}

#[test]
fn ndjson_lines_that_are_not_utf8_or_not_json_are_quarantined_and_the_rest_imported() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let events = dir.path().join("events.ndjson");
    let line = |id: &str| {
        format!(
            r#"{{"event":"$pageview","distinct_id":"{id}","timestamp":"2026-01-02T03:04:05Z"}}"#
        )
    };
    let mut text = format!("{}\n", line("u1")).into_bytes();
    // A distinct id with a byte that UTF-8 never uses.
    let mut bad = line("u?2").into_bytes();
    let at = bad.iter().position(|&b| b == b'?').unwrap();
    bad[at] = 0xff;
    text.extend(bad);
    text.extend(b"\nnot json\n");
    text.extend(format!("{}\n", line("u4")).into_bytes());
    std::fs::write(&events, &text).unwrap();

    let printed = common::run_ok(&["import", "--data", data, events.to_str().unwrap()]);
    assert!(printed.contains("2 events, 2 quarantined"), "{printed}");
    let sql = |q: &str| common::run_ok(&["sql", "--data", data, "--format", "csv", q]);
    assert_eq!(
        sql("SELECT distinct_id FROM events ORDER BY distinct_id"),
        "distinct_id\nu1\nu4\n"
    );
    let quarantined = sql("SELECT split_part(source, ':', 2) AS line, \
         split_part(reason, ':', 1) AS reason, \
         strpos(payload, chr(65533)) > 0 AS replaced \
         FROM quarantine ORDER BY line");
    assert_eq!(
        quarantined,
        "line,reason,replaced\n2,not UTF-8,true\n3,not valid JSON,false\n"
    );
}

#[test]
fn csv_and_parquet_rows_import_with_their_properties_and_bad_rows_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    // 3,000 rows: several slices per batch on every core. Row 1,500 has no
    // distinct id and must be quarantined with its place in the file.
    let rows = "SELECT 'purchase' AS event,
                       CASE WHEN i = 1499 THEN NULL ELSE 'u' || (i % 700) END AS distinct_id,
                       strftime(TIMESTAMP '2026-01-01' + i * INTERVAL 1 MINUTE, '%Y-%m-%dT%H:%M:%SZ') AS timestamp,
                       '{\"plan\": \"p' || (i % 3) || '\", \"amount\": ' || i || '}' AS properties
                FROM range(3000) t(i)";
    let mut files = Vec::new();
    for (name, options) in [
        ("rows.csv", "(HEADER)"),
        ("rows.parquet", "(FORMAT parquet)"),
    ] {
        let path = dir.path().join(name);
        common::duckdb_rows(&format!("COPY ({rows}) TO '{}' {options}", path.display()));
        files.push(path);
    }
    for file in &files {
        common::run_ok(&["import", "--data", data, file.to_str().unwrap()]);
    }
    let sql = |q: &str| common::run_ok(&["sql", "--data", data, "--format", "csv", q]);
    assert_eq!(
        sql(
            "SELECT count(*) AS n, sum(json_get_int(properties, 'amount')) AS amount, \
             count(DISTINCT person_id) AS persons FROM events"
        ),
        format!("n,amount,persons\n5998,{},700\n", 2 * (4_498_500 - 1499))
    );
    assert_eq!(
        sql(
            "SELECT properties->>'plan' AS plan, count(*) AS n FROM events GROUP BY plan ORDER BY plan"
        ),
        "plan,n\np0,2000\np1,2000\np2,1998\n"
    );
    let quarantined = sql("SELECT source FROM quarantine ORDER BY source");
    let expected: String = files
        .iter()
        .map(|f| format!("{}:1500\n", f.display()))
        .collect();
    assert_eq!(quarantined, format!("source\n{expected}"));
}

#[test]
fn a_demo_whose_generation_was_interrupted_is_refused_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let demo = [
        "demo",
        "--data",
        data,
        "--users",
        "30",
        "--days",
        "3",
        "--no-serve",
    ];
    common::run_ok(&demo);
    // A finished demo is reused as it is.
    assert!(common::run_ok(&demo).contains("already holds"));
    // What a generation killed between two chunks leaves behind.
    {
        let store =
            plinth_store::Store::open(dir.path(), plinth_store::Mode::Writer, "test").unwrap();
        let stored = store.events.read_all().unwrap();
        let unfinished = std::collections::BTreeMap::from([("demo_generated".to_string(), 0)]);
        store
            .events
            .append(&[stored[0].slice(0, 1)], &unfinished)
            .unwrap();
    }
    let output = run(&demo);
    assert_eq!(output.status.code(), Some(1));
    let line = stderr_line(&output);
    assert!(
        line.starts_with("error: ") && line.contains("interrupted") && line.contains("remove"),
        "{line}"
    );
}
