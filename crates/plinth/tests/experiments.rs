//! `plinth experiment` and the experiment API on real data: the demo's
//! planted A/B test, and a small hand-made fixture whose every number is
//! worked out below. Second opinions: DuckDB over the same Parquet files
//! for the per-variant sums, and `plinth stats` for the statistics.

mod common;

use std::path::Path;

use common::{
    Server, admin_and_capture_keys, demo_until_june_30, duckdb_rows, get_json, run, run_ok,
    run_with_stdin,
};
use serde_json::{Value, json};

/// `plinth experiment results NAME --format json`.
fn results_json(data: &str, name: &str) -> Value {
    let out = run_ok(&[
        "experiment",
        "results",
        name,
        "--data",
        data,
        "--format",
        "json",
    ]);
    serde_json::from_str(&out).expect("results are JSON")
}

/// The metric called `name` in results.
fn metric<'a>(results: &'a Value, name: &str) -> &'a Value {
    results["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("no metric {name} in {results:#}"))
}

/// `plinth stats` on one request.
fn stats(request: Value) -> Value {
    let output = run_with_stdin(&["stats"], request.to_string().as_bytes());
    assert!(output.status.success(), "plinth stats failed on {request}");
    serde_json::from_slice(&output.stdout).unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// The experiment's comparison of `test` against control agrees with
/// `plinth stats` on the same sums.
fn assert_same_test(comparison: &Value, expected: &Value) {
    for field in ["lift", "p_value"] {
        let (a, b) = (comparison[field].as_f64(), expected[field].as_f64());
        assert!(
            close(a.unwrap(), b.unwrap()),
            "{field}: {comparison} vs {expected}"
        );
    }
    for i in 0..2 {
        let (a, b) = (comparison["ci"][i].as_f64(), expected["ci"][i].as_f64());
        assert!(
            close(a.unwrap(), b.unwrap()),
            "ci: {comparison} vs {expected}"
        );
    }
}

fn demo(dir: &Path) -> String {
    let data = dir.to_str().unwrap().to_string();
    demo_until_june_30(&data);
    data
}

#[test]
fn the_demo_experiment_shows_the_planted_lift_and_agrees_with_duckdb_and_http() {
    let dir = tempfile::tempdir().unwrap();
    let data = demo(dir.path());
    // The generator saves `persons` now and then and at its end: every
    // person with events is in it, once.
    let persons = run_ok(&[
        "sql",
        "--data",
        &data,
        "--format",
        "csv",
        "SELECT (SELECT count(DISTINCT person_id) FROM events), count(*), count(DISTINCT person_id) \
         FROM persons WHERE person_id IN (SELECT person_id FROM events)",
    ]);
    let counts: Vec<u64> = persons
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .map(|n| n.parse().unwrap())
        .collect();
    assert!(counts[0] > 1000, "{persons}");
    assert_eq!(counts, vec![counts[0]; 3], "{persons}");
    let results = results_json(&data, "new-onboarding");

    // The planted lift on activation is inside the interval, and detected.
    let activation = metric(&results, "activation");
    let test = &activation["comparisons"][0];
    let (low, high) = (
        test["ci"][0].as_f64().unwrap(),
        test["ci"][1].as_f64().unwrap(),
    );
    let planted = plinth_demo::TRUE_ACTIVATION_LIFT;
    assert!(low < planted && planted < high, "{test}");
    assert_eq!(test["significant"], true, "{test}");
    assert!(test["chance_to_win"].as_f64().unwrap() > 0.95, "{test}");
    // Assignment is a fair hash: no sample ratio mismatch, nobody saw both.
    assert_eq!(results["srm"]["mismatch"], false, "{results:#}");
    assert_eq!(results["multiple_variant_persons"], 0);
    assert!(
        results["warnings"].as_array().unwrap().is_empty(),
        "{results:#}"
    );

    // DuckDB, from the Parquet files, resolving persons through `persons`
    // itself: exposures, activation within 14 days, and pageviews after
    // and in the 14 days before first exposure (CUPED's covariate).
    let root = dir.path().display();
    let (start, end, day) = (
        1_775_088_000_000_000i64,
        1_782_863_999_999_999i64,
        86_400_000_000i64,
    );
    let rows = duckdb_rows(&format!(
        "WITH ids AS (SELECT unnest(distinct_ids) AS distinct_id, person_id FROM read_parquet('{root}/tables/persons/**/*.parquet')),
              ev AS (SELECT e.event, coalesce(i.person_id, e.person_id) AS person, epoch_us(e.timestamp) AS ts, e.properties
                     FROM read_parquet('{root}/tables/events/**/*.parquet') e LEFT JOIN ids i USING (distinct_id)),
              x AS (SELECT person, min(ts) AS t0,
                           min(json_extract_string(properties, '$.\"$feature_flag_response\"')) AS v,
                           max(json_extract_string(properties, '$.\"$feature_flag_response\"')) AS v2
                    FROM ev WHERE event = '$feature_flag_called'
                      AND json_extract_string(properties, '$.\"$feature_flag\"') = 'new-onboarding'
                      AND ts BETWEEN {start} AND {end} GROUP BY person),
              pp AS (SELECT x.v,
                       max(CASE WHEN e.event = 'project created' AND e.ts >= x.t0 AND e.ts < x.t0 + 14 * {day} AND e.ts <= {end} THEN 1 ELSE 0 END) AS act,
                       sum(CASE WHEN e.event = '$pageview' AND e.ts >= x.t0 AND e.ts <= {end} THEN 1 ELSE 0 END) AS pv,
                       sum(CASE WHEN e.event = '$pageview' AND e.ts < x.t0 AND e.ts >= x.t0 - 14 * {day} THEN 1 ELSE 0 END) AS pre
                     FROM x LEFT JOIN ev e ON e.person = x.person WHERE x.v = x.v2 GROUP BY x.person, x.v)
         SELECT v, count(*), sum(act), sum(pv), sum(pv * pv), sum(pre), sum(pre * pre), sum(pv * pre)
         FROM pp GROUP BY v ORDER BY v"
    ));
    assert_eq!(rows.len(), 2, "{rows:?}");
    let arm = |row: &[Value], kind: &str| -> Value {
        let number = |i: usize| row[i].as_f64().unwrap();
        match kind {
            "activation" => json!({"n": number(1), "sum": number(2)}),
            _ => json!({"n": number(1), "sum": number(3), "sum_squares": number(4),
                        "covariate_sum": number(5), "covariate_sum_squares": number(6),
                        "main_covariate_sum_product": number(7)}),
        }
    };
    let units: Vec<f64> = results["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["units"].as_f64().unwrap())
        .collect();
    assert_eq!(
        units,
        vec![rows[0][1].as_f64().unwrap(), rows[1][1].as_f64().unwrap()]
    );
    let expected = stats(json!({"test": "ttest", "metric": "proportion",
        "control": arm(&rows[0], "activation"), "treatment": arm(&rows[1], "activation")}));
    assert_same_test(test, &expected);
    let pageviews = &metric(&results, "pageviews")["comparisons"][0];
    let expected = stats(json!({"test": "cuped", "metric": "mean",
        "control": arm(&rows[0], "pageviews"), "treatment": arm(&rows[1], "pageviews")}));
    assert_same_test(pageviews, &expected);
    assert!(
        close(
            pageviews["cuped"]["theta"].as_f64().unwrap(),
            expected["cuped"]["theta"].as_f64().unwrap()
        ),
        "{pageviews} vs {expected}"
    );

    // The API answers the same results, and lists the experiment.
    let (admin, _) = admin_and_capture_keys(&data);
    let server = Server::start(dir.path());
    let get = |path: &str| get_json(&server.url, &admin, path);
    assert_eq!(get("/api/v1/experiments/new-onboarding/results"), results);
    assert_eq!(get("/api/v1/experiments")[0]["name"], "new-onboarding");
}

/// The codes of the warnings in results.
fn warning_codes(results: &Value) -> Vec<&str> {
    results["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["code"].as_str().unwrap())
        .collect()
}

fn create(data: &str, dir: &Path, definition: &str) {
    let file = dir.join("definition.yml");
    std::fs::write(&file, definition).unwrap();
    run_ok(&[
        "experiment",
        "create",
        "--data",
        data,
        file.to_str().unwrap(),
    ]);
}

#[test]
fn warnings_follow_the_definition_and_sequential_widens_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let data = demo(&dir.path().join("data"));
    // Declared 70/30 while the flag splits 50/50; no end, so still running;
    // pageviews rise in `test`, which this guardrail counts as worse.
    let skewed = "
name: skewed
flag: new-onboarding
variants: [control, test]
weights: [0.7, 0.3]
primary_metrics:
  - {name: activation, kind: conversion, event: project created, window_days: 14}
guardrails:
  - {name: pageviews, kind: count, event: $pageview, higher_is_better: false}
";
    create(&data, dir.path(), skewed);
    let results = results_json(&data, "skewed");
    assert_eq!(results["srm"]["mismatch"], true);
    assert_eq!(warning_codes(&results), ["srm", "peeking", "guardrail"]);

    // Sequential: the always-valid interval of plinth stats on the same
    // sums, wider than the fixed-horizon one; no peeking warning
    let sequential = format!(
        "{}sequential: {{tuning: 3000}}\n",
        skewed
            .replace("skewed", "sequential")
            .replace("weights: [0.7, 0.3]", "weights: [0.5, 0.5]")
    );
    create(&data, dir.path(), &sequential);
    let results = results_json(&data, "sequential");
    // (and the guardrail's rise is no longer significant at its width).
    assert!(warning_codes(&results).is_empty(), "{results:#}");
    let activation = metric(&results, "activation");
    let comparison = &activation["comparisons"][0];
    assert_eq!(comparison["test"], "sequential");
    let arm = |i: usize| {
        let statistic = &activation["variants"][i]["statistic"];
        json!({"n": statistic["n"], "sum": statistic["sum"]})
    };
    let expected = stats(json!({"test": "sequential", "metric": "proportion",
        "sequential_tuning_parameter": 3000, "control": arm(0), "treatment": arm(1)}));
    assert_same_test(comparison, &expected);
    let fixed = stats(json!({"test": "ttest", "metric": "proportion",
        "control": arm(0), "treatment": arm(1)}));
    let width = |v: &Value| v["ci"][1].as_f64().unwrap() - v["ci"][0].as_f64().unwrap();
    assert!(width(comparison) > width(&fixed), "{comparison} vs {fixed}");
}

const DAY: &str = "2026-03-";

/// One PostHog-shaped event line.
fn event(name: &str, distinct_id: &str, day: u32, hour: u32, properties: Value) -> String {
    json!({
        "event": name,
        "distinct_id": distinct_id,
        "timestamp": format!("{DAY}{day:02}T{hour:02}:00:00Z"),
        "properties": properties,
    })
    .to_string()
}

fn exposure(distinct_id: &str, day: u32, hour: u32, variant: &str) -> String {
    exposure_to("checkout-copy", distinct_id, day, hour, variant)
}

fn exposure_to(flag: &str, distinct_id: &str, day: u32, hour: u32, variant: &str) -> String {
    event(
        "$feature_flag_called",
        distinct_id,
        day,
        hour,
        json!({"$feature_flag": flag, "$feature_flag_response": variant}),
    )
}

fn purchase(distinct_id: &str, day: u32, amount: f64) -> String {
    event("purchase", distinct_id, day, 12, json!({"amount": amount}))
}

fn view(distinct_id: &str, day: u32) -> String {
    event("view", distinct_id, day, 13, json!({}))
}

fn identify(user: &str, anonymous: &str, day: u32, hour: u32) -> String {
    event(
        "$identify",
        user,
        day,
        hour,
        json!({"$anon_distinct_id": anonymous}),
    )
}

const FIXTURE_EXPERIMENT: &str = "
name: checkout-copy
flag: checkout-copy
variants: [control, test]
start: 2026-03-01
end: 2026-03-31
min_units: 1
primary_metrics:
  - {name: bought, kind: conversion, event: purchase, window_days: 7}
secondary_metrics:
  - {name: revenue, kind: sum, event: purchase, property: amount}
  - {name: views, kind: count, event: view}
  - name: revenue per purchase
    kind: ratio
    numerator: {kind: sum, event: purchase, property: amount}
    denominator: {kind: count, event: purchase}
";

/// Every case the exposure rules distinguish, with the numbers they give.
fn fixture_events() -> Vec<String> {
    vec![
        // control
        exposure("c1", 1, 10, "control"), // bought (15 within 7 days), 2 purchases, 2 views
        purchase("c1", 2, 10.0),
        purchase("c1", 3, 5.0),
        view("c1", 2),
        view("c1", 4),
        exposure("c2", 1, 10, "control"), // bought on day 9: after the window, revenue 30
        purchase("c2", 9, 30.0),
        purchase("c3", 1, 7.0), // before exposure (12:00 < 14:00): counts nowhere
        exposure("c3", 1, 14, "control"),
        exposure("c4", 2, 10, "control"), // exposed twice: the first counts
        purchase("c4", 4, 20.0),
        exposure("c4", 5, 10, "control"),
        exposure("c5", 3, 10, "control"), // 3 views
        view("c5", 3),
        view("c5", 4),
        view("c5", 5),
        exposure("anon6", 3, 9, "control"), // exposed anonymously, buys once identified
        identify("c6", "anon6", 3, 10),
        purchase("c6", 4, 8.0),
        // test
        exposure("t1", 1, 10, "test"), // 40
        purchase("t1", 2, 40.0),
        exposure("t2", 1, 10, "test"), // 12 + 18, 1 view
        purchase("t2", 2, 12.0),
        purchase("t2", 3, 18.0),
        view("t2", 3),
        exposure("t3", 2, 10, "test"), // nothing
        exposure("t4", 2, 10, "test"), // 5 views
        view("t4", 3),
        view("t4", 3),
        view("t4", 4),
        view("t4", 5),
        view("t4", 6),
        // excluded: both variants, once under one id, once across a merge
        exposure("m1", 1, 10, "control"),
        exposure("m1", 2, 10, "test"),
        purchase("m1", 3, 100.0),
        exposure("anon-m2", 1, 9, "control"),
        identify("m2", "anon-m2", 1, 10),
        exposure("m2", 2, 10, "test"),
        // not in the experiment: after its end, another flag, an undeclared variant
        event(
            "$feature_flag_called",
            "late",
            1,
            10,
            json!({"$feature_flag": "checkout-copy", "$feature_flag_response": "test"}),
        )
        .replace("2026-03-01", "2026-04-05"),
        exposure_to("other-flag", "o1", 1, 10, "control"),
        exposure("o2", 1, 10, "holdout"),
    ]
}

#[test]
fn a_hand_made_fixture_gives_the_worked_out_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let events = dir.path().join("events.ndjson");
    std::fs::write(&events, fixture_events().join("\n") + "\n").unwrap();
    run_ok(&["import", "--data", data, events.to_str().unwrap()]);
    let definition = dir.path().join("checkout-copy.yml");
    std::fs::write(&definition, FIXTURE_EXPERIMENT).unwrap();
    run_ok(&[
        "experiment",
        "create",
        "--data",
        data,
        definition.to_str().unwrap(),
    ]);
    let listed = run_ok(&["experiment", "list", "--data", data]);
    assert!(listed.starts_with("checkout-copy\t"), "{listed}");

    let results = results_json(data, "checkout-copy");
    let units: Vec<&Value> = results["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| &v["units"])
        .collect();
    assert_eq!(units, [&json!(6), &json!(4)], "{results:#}");
    assert_eq!(results["multiple_variant_persons"], 2);
    assert_eq!(
        warning_codes(&results),
        ["multiple_variants"],
        "{results:#}"
    );

    // Worked out by hand from fixture_events().
    let bought = json!({"test": "ttest", "metric": "proportion",
        "control": {"n": 6, "sum": 3}, "treatment": {"n": 4, "sum": 2}});
    let revenue = json!({"test": "ttest", "metric": "mean",
        "control": {"n": 6, "sum": 73, "sum_squares": 1589},
        "treatment": {"n": 4, "sum": 70, "sum_squares": 2500}});
    let views = json!({"test": "ttest", "metric": "mean",
        "control": {"n": 6, "sum": 5, "sum_squares": 13},
        "treatment": {"n": 4, "sum": 6, "sum_squares": 26}});
    let per_purchase = json!({"test": "ttest", "metric": "ratio",
        "control": {"n": 6, "sum": 73, "sum_squares": 1589, "denominator_sum": 5,
                    "denominator_sum_squares": 7, "main_denominator_sum_product": 88},
        "treatment": {"n": 4, "sum": 70, "sum_squares": 2500, "denominator_sum": 3,
                      "denominator_sum_squares": 5, "main_denominator_sum_product": 100}});
    for (name, request) in [
        ("bought", bought),
        ("revenue", revenue),
        ("views", views),
        ("revenue per purchase", per_purchase),
    ] {
        let expected = stats(request);
        let result = metric(&results, name);
        assert_same_test(&result["comparisons"][0], &expected);
        for (arm, variant) in [("control", 0), ("treatment", 1)] {
            let mean = result["variants"][variant]["mean"].as_f64().unwrap();
            assert!(
                close(mean, expected[arm]["mean"].as_f64().unwrap()),
                "{name} {arm}: {mean} vs {expected}"
            );
        }
    }

    // A variant below `min_units` is named.
    let small = FIXTURE_EXPERIMENT
        .replace("name: checkout-copy", "name: small")
        .replace("min_units: 1", "min_units: 5");
    create(data, dir.path(), &small);
    let results = results_json(data, "small");
    assert_eq!(
        warning_codes(&results),
        ["too_few_units", "multiple_variants"]
    );
    assert!(
        results["warnings"][0]["message"]
            .as_str()
            .unwrap()
            .contains("`test` has 4 units"),
        "{results:#}"
    );

    // The table says the same in words.
    let table = run_ok(&["experiment", "results", "checkout-copy", "--data", data]);
    assert!(
        table.contains("persons served several variants (excluded): 2"),
        "{table}"
    );
    assert!(table.contains("[multiple_variants]"), "{table}");
}

#[test]
fn experiments_are_created_over_http_by_analysts_and_refused_when_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let (admin, _) = admin_and_capture_keys(data);
    let viewer = run_ok(&["keys", "create", "--data", data, "--role", "viewer"])
        .trim()
        .to_string();
    let server = Server::start(dir.path());
    let client = reqwest::blocking::Client::new();
    let post = |key: &str, body: &str| {
        client
            .post(format!("{}/api/v1/experiments", server.url))
            .bearer_auth(key)
            .body(body.to_string())
            .send()
            .unwrap()
    };
    assert_eq!(post(&viewer, FIXTURE_EXPERIMENT).status(), 403);
    let refused = post(
        &admin,
        &FIXTURE_EXPERIMENT.replace("kind: sum", "kind: total"),
    );
    assert_eq!(refused.status(), 400);
    let message = refused.json::<Value>().unwrap()["error"].to_string();
    assert!(message.contains("total"), "{message}");
    assert_eq!(post(&admin, FIXTURE_EXPERIMENT).status(), 201);

    let get = |path: &str| {
        client
            .get(format!("{}{path}", server.url))
            .bearer_auth(&viewer)
            .send()
            .unwrap()
    };
    let definition: Value = get("/api/v1/experiments/checkout-copy").json().unwrap();
    assert_eq!(definition["variants"], json!(["control", "test"]));
    assert_eq!(get("/api/v1/experiments/nope/results").status(), 404);
    // No events yet: every variant is empty, and the answer says so.
    let results: Value = get("/api/v1/experiments/checkout-copy/results")
        .json()
        .unwrap();
    assert_eq!(results["variants"][0]["units"], 0);
    let error = run(&["experiment", "results", "nope", "--data", data]);
    assert!(!error.status.success());
    assert!(
        String::from_utf8_lossy(&error.stderr).contains("no experiment named \"nope\""),
        "{error:?}"
    );
}

/// The fixture with its events imported into `dir/data`; the data path.
fn fixture_data(dir: &Path) -> String {
    let data = dir.join("data");
    let events = dir.join("events.ndjson");
    std::fs::write(&events, fixture_events().join("\n") + "\n").unwrap();
    let data = data.to_str().unwrap().to_string();
    run_ok(&["import", "--data", &data, events.to_str().unwrap()]);
    data
}

/// A key with `role` for `data`.
fn key(data: &str, role: &str) -> String {
    run_ok(&["keys", "create", "--data", data, "--role", role])
        .trim()
        .to_string()
}

/// `plinth serve` on `data`, which must refuse to start: its stderr.
fn serve_refused(data: &str) -> String {
    use std::io::Read;
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let mut child = common::plinth()
        .args(["serve", "--data", data, "--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("plinth serve started although an experiment file is broken");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    stderr
}

/// An HTTP request with a key and a body; the status and the JSON answer.
fn send(method: reqwest::Method, url: &str, key: &str, body: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::blocking::Client::new()
        .request(method, url)
        .bearer_auth(key);
    if let Some(body) = body {
        request = request.body(body.to_string());
    }
    let response = request.send().unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

#[test]
fn experiment_files_are_read_on_every_use_read_only_through_the_api_and_never_dropped_in_silence() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixture_data(dir.path());
    let (admin, _) = admin_and_capture_keys(&data);
    // Stored before the files exist: one stays visible, one is hidden by
    // a file of the same name.
    create(
        &data,
        dir.path(),
        &FIXTURE_EXPERIMENT.replace("name: checkout-copy", "name: stored-one"),
    );
    create(
        &data,
        dir.path(),
        &FIXTURE_EXPERIMENT.replace("name: checkout-copy", "name: as-json"),
    );
    let files = Path::new(&data).join("experiments");
    std::fs::create_dir_all(&files).unwrap();
    let yaml = files.join("checkout-copy.yml");
    std::fs::write(&yaml, FIXTURE_EXPERIMENT).unwrap();
    let json_file = files.join("as-json.json");
    std::fs::write(
        &json_file,
        r#"{"name": "as-json", "flag": "checkout-copy", "variants": ["control", "test"],
 "start": "2026-03-01", "end": "2026-03-31", "min_units": 5,
 "primary_metrics": [{"name": "bought", "kind": "conversion", "event": "purchase"}]}"#,
    )
    .unwrap();
    std::fs::write(files.join("README.md"), "not a definition").unwrap();

    // The CLI sees the files, says where each experiment comes from, uses
    // them, and will not overwrite or delete them.
    let listed = run_ok(&["experiment", "list", "--data", &data]);
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 3, "{listed}");
    assert!(lines[0].starts_with("as-json\t"), "{listed}");
    assert!(
        lines[0].ends_with(&format!(
            "\tfile {} (shadows the stored definition)",
            json_file.display()
        )),
        "{listed}"
    );
    assert!(
        lines[1].ends_with(&format!("\tfile {}", yaml.display())),
        "{listed}"
    );
    assert!(
        lines[2].starts_with("stored-one\t") && lines[2].ends_with("\tstored"),
        "{listed}"
    );
    let results = results_json(&data, "checkout-copy");
    assert_eq!(results["variants"][1]["units"], 4, "{results:#}");
    // The file's min_units (5), not the stored definition's (1).
    assert_eq!(
        warning_codes(&results_json(&data, "as-json")),
        ["too_few_units", "multiple_variants"]
    );
    let copy = dir.path().join("copy.yml");
    std::fs::write(&copy, FIXTURE_EXPERIMENT).unwrap();
    for args in [
        vec![
            "experiment",
            "create",
            "--data",
            &data,
            copy.to_str().unwrap(),
        ],
        vec!["experiment", "delete", "checkout-copy", "--data", &data],
    ] {
        let refused = run(&args);
        assert!(!refused.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            stderr.contains(&format!("defined by the file {}", yaml.display())),
            "{stderr}"
        );
    }

    // The server: the same list and results; 409 for writes to a file's
    // experiment, naming the file.
    let server = Server::start(Path::new(&data));
    let url = |path: &str| format!("{}{path}", server.url);
    let list = get_json(&server.url, &admin, "/api/v1/experiments");
    let summary: Vec<(&str, &str)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e["source"].as_str().unwrap()))
        .collect();
    assert_eq!(
        summary,
        [
            ("as-json", "file"),
            ("checkout-copy", "file"),
            ("stored-one", "stored")
        ]
    );
    assert_eq!(list[0]["shadows_stored"], true);
    assert_eq!(list[1]["path"], yaml.to_str().unwrap());
    assert_eq!(list[1]["definition"]["min_units"], 1);
    assert_eq!(
        get_json(
            &server.url,
            &admin,
            "/api/v1/experiments/checkout-copy/results"
        ),
        results
    );
    for (method, path, body) in [
        (
            reqwest::Method::POST,
            "/api/v1/experiments",
            Some(FIXTURE_EXPERIMENT),
        ),
        (
            reqwest::Method::PUT,
            "/api/v1/experiments/checkout-copy",
            Some(FIXTURE_EXPERIMENT),
        ),
        (
            reqwest::Method::DELETE,
            "/api/v1/experiments/checkout-copy",
            None,
        ),
    ] {
        let (status, answer) = send(method.clone(), &url(path), &admin, body);
        assert_eq!(status, 409, "{method} {path}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(yaml.to_str().unwrap()), "{error}");
    }

    // An edit shows at once, without a restart.
    std::fs::write(
        &yaml,
        FIXTURE_EXPERIMENT.replace("min_units: 1", "min_units: 5"),
    )
    .unwrap();
    let results = get_json(
        &server.url,
        &admin,
        "/api/v1/experiments/checkout-copy/results",
    );
    assert_eq!(
        warning_codes(&results),
        ["too_few_units", "multiple_variants"]
    );

    // Broken while serving: the experiment answers the error, with the
    // file and line (the metric `bought` is on line 9); it is still
    // listed, and still the file's.
    let broken = FIXTURE_EXPERIMENT.replace("kind: conversion", "kind: sum");
    std::fs::write(&yaml, &broken).unwrap();
    let where_ = format!("{} line 9: ", yaml.display());
    let (status, answer) = send(
        reqwest::Method::GET,
        &url("/api/v1/experiments/checkout-copy/results"),
        &admin,
        None,
    );
    assert_eq!(status, 500, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(
        error.contains(&where_) && error.contains("`sum` needs a `property`"),
        "{error}"
    );
    let list = get_json(&server.url, &admin, "/api/v1/experiments");
    assert_eq!(list[1]["name"], "checkout-copy");
    assert!(list[1]["definition"].is_null(), "{list:#}");
    assert!(
        list[1]["error"].as_str().unwrap().contains(&where_),
        "{list:#}"
    );
    let (status, _) = send(
        reqwest::Method::POST,
        &url("/api/v1/experiments"),
        &admin,
        Some(FIXTURE_EXPERIMENT),
    );
    assert_eq!(status, 409);
    drop(server);

    // Broken at start: serve refuses, naming the file and line; the CLI
    // lists what it can and fails the same way.
    let stderr = serve_refused(&data);
    assert!(stderr.contains(&where_), "{stderr}");
    let listing = run(&["experiment", "list", "--data", &data]);
    assert!(!listing.status.success());
    let stdout = String::from_utf8_lossy(&listing.stdout);
    assert!(stdout.starts_with("as-json\t"), "{stdout}");
    assert!(
        String::from_utf8_lossy(&listing.stderr).contains(&where_),
        "{listing:?}"
    );
    let results = run(&["experiment", "results", "checkout-copy", "--data", &data]);
    assert!(!results.status.success());
    assert!(
        String::from_utf8_lossy(&results.stderr).contains(&where_),
        "{results:?}"
    );

    // Without the files, the stored definition shows again.
    std::fs::remove_file(&json_file).unwrap();
    std::fs::remove_file(&yaml).unwrap();
    assert_eq!(
        warning_codes(&results_json(&data, "as-json")),
        ["multiple_variants"]
    );
    let error = run(&["experiment", "results", "checkout-copy", "--data", &data]);
    assert!(
        String::from_utf8_lossy(&error.stderr).contains("no experiment named \"checkout-copy\""),
        "{error:?}"
    );
}

#[test]
fn experiments_are_deleted_and_replaced_by_analysts_over_http_and_with_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let viewer = key(data, "viewer");
    let analyst = key(data, "analyst");
    create(data, dir.path(), FIXTURE_EXPERIMENT);
    create(
        data,
        dir.path(),
        &FIXTURE_EXPERIMENT.replace("name: checkout-copy", "name: other"),
    );
    let server = Server::start(dir.path());
    let url = |path: &str| format!("{}{path}", server.url);
    let names = || -> Vec<String> {
        get_json(&server.url, &viewer, "/api/v1/experiments")
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(), ["checkout-copy", "other"]);
    let delete = |key: &str, name: &str| {
        send(
            reqwest::Method::DELETE,
            &url(&format!("/api/v1/experiments/{name}")),
            key,
            None,
        )
    };

    let (status, answer) = delete(&viewer, "checkout-copy");
    assert_eq!(status, 403, "{answer}");
    assert_eq!(names(), ["checkout-copy", "other"]);
    let (status, answer) = delete(&analyst, "checkout-copy");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, json!({"name": "checkout-copy", "deleted": true}));
    assert_eq!(names(), ["other"]);
    for path in [
        "/api/v1/experiments/checkout-copy",
        "/api/v1/experiments/checkout-copy/results",
    ] {
        let (status, _) = send(reqwest::Method::GET, &url(path), &viewer, None);
        assert_eq!(status, 404, "{path}");
    }
    assert_eq!(delete(&analyst, "checkout-copy").0, 404);
    assert_eq!(delete(&analyst, "never-was").0, 404);

    // PUT creates (201), then replaces (200), under the URL's name only.
    let put = |key: &str, name: &str, body: &str| {
        send(
            reqwest::Method::PUT,
            &url(&format!("/api/v1/experiments/{name}")),
            key,
            Some(body),
        )
    };
    assert_eq!(put(&viewer, "checkout-copy", FIXTURE_EXPERIMENT).0, 403);
    assert_eq!(put(&analyst, "checkout-copy", FIXTURE_EXPERIMENT).0, 201);
    let changed = FIXTURE_EXPERIMENT.replace("min_units: 1", "min_units: 7");
    assert_eq!(put(&analyst, "checkout-copy", &changed).0, 200);
    let definition = get_json(&server.url, &viewer, "/api/v1/experiments/checkout-copy");
    assert_eq!(definition["min_units"], 7);
    let (status, answer) = put(&analyst, "elsewhere", FIXTURE_EXPERIMENT);
    assert_eq!(status, 400);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("not \"elsewhere\""),
        "{answer}"
    );

    // The CLI deletes from the same catalog, which the server reads.
    let out = run_ok(&["experiment", "delete", "other", "--data", data]);
    assert_eq!(out.trim(), "deleted experiment other");
    assert_eq!(names(), ["checkout-copy"]);
    let again = run(&["experiment", "delete", "other", "--data", data]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("no experiment named \"other\""),
        "{again:?}"
    );
}

/// Conversions per metric and arm of the multiple-testing fixture, of 1000
/// units each; the control converts 200 on every metric. Against 200, the
/// t-test's p-values are about: 280: 0.0004, 270: 0.0016, 255: 0.0096,
/// 250: 0.017, 242: 0.040, 235: 0.081, 225: 0.20, 215: 0.43.
const CONVERSIONS: [(&str, [u64; 3]); 5] = [
    ("m1", [200, 280, 225]),
    ("m2", [200, 215, 270]),
    ("m3", [200, 255, 242]),
    ("m4", [200, 235, 250]),
    ("harm", [200, 260, 200]),
];

const MANY_METRICS: &str = "
name: many-metrics
flag: many-metrics
variants: [control, a, b]
start: 2026-03-01
end: 2026-03-31
primary_metrics:
  - {name: m1, kind: conversion, event: m1}
  - {name: m2, kind: conversion, event: m2}
secondary_metrics:
  - {name: m3, kind: conversion, event: m3}
  - {name: m4, kind: conversion, event: m4}
guardrails:
  - {name: harm, kind: conversion, event: harm, higher_is_better: false}
";

/// Holm's adjusted p-values from the textbook definition:
/// p~(i) = max over j <= i of min(1, (m - j + 1) p(j)), p(j) ascending.
fn holm_by_hand(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut adjusted = vec![0.0; m];
    for i in 0..m {
        adjusted[order[i]] = (0..=i)
            .map(|j| ((m - j) as f64 * p[order[j]]).min(1.0))
            .fold(0.0, f64::max);
    }
    adjusted
}

/// Benjamini–Hochberg's adjusted p-values from the textbook definition:
/// p~(i) = min over j >= i of min(1, m p(j) / j), p(j) ascending, j from 1.
fn bh_by_hand(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut adjusted = vec![0.0; m];
    for i in 0..m {
        adjusted[order[i]] = (i..m)
            .map(|j| (m as f64 * p[order[j]] / (j + 1) as f64).min(1.0))
            .fold(1.0, f64::min);
    }
    adjusted
}

/// The comparisons of `results` as (metric, variant, comparison), in order.
fn comparisons(results: &Value) -> Vec<(String, String, Value)> {
    let mut all = Vec::new();
    for metric in results["metrics"].as_array().unwrap() {
        for comparison in metric["comparisons"].as_array().unwrap() {
            all.push((
                metric["name"].as_str().unwrap().to_string(),
                comparison["variant"].as_str().unwrap().to_string(),
                comparison.clone(),
            ));
        }
    }
    all
}

#[test]
fn holm_and_bh_correct_primary_and_secondary_metrics_across_treatments_but_not_guardrails() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let mut events = Vec::new();
    for (arm, variant) in ["control", "a", "b"].iter().enumerate() {
        for unit in 0..1000u64 {
            let id = format!("{variant}-{unit}");
            events.push(exposure_to("many-metrics", &id, 1, 10, variant));
            for (metric, conversions) in CONVERSIONS {
                if unit < conversions[arm] {
                    events.push(event(metric, &id, 2, 10, json!({})));
                }
            }
        }
    }
    let file = dir.path().join("events.ndjson");
    std::fs::write(&file, events.join("\n") + "\n").unwrap();
    run_ok(&["import", "--data", data, file.to_str().unwrap()]);
    // The arms' sums, known by construction.
    let request = |metric: &str, variant: &str, alpha: f64| {
        let conversions = CONVERSIONS.iter().find(|c| c.0 == metric).unwrap().1;
        let arm = ["control", "a", "b"]
            .iter()
            .position(|v| *v == variant)
            .unwrap();
        json!({"test": "ttest", "metric": "proportion", "alpha": alpha,
               "control": {"n": 1000, "sum": conversions[0]},
               "treatment": {"n": 1000, "sum": conversions[arm]}})
    };

    // Uncorrected: five of the eight primary and secondary comparisons are
    // significant at 0.05 on their own, and the guardrail's harm in `a`.
    create(data, dir.path(), MANY_METRICS);
    let plain = results_json(data, "many-metrics");
    assert!(plain["multiple_testing"].is_null());
    let all = comparisons(&plain);
    assert_eq!(all.len(), 10);
    for (metric, variant, comparison) in &all {
        assert_same_test(comparison, &stats(request(metric, variant, 0.05)));
        assert!(comparison["p_value_adjusted"].is_null() && comparison["ci_adjusted"].is_null());
    }
    let family: Vec<&(String, String, Value)> = all.iter().filter(|c| c.0 != "harm").collect();
    let p: Vec<f64> = family
        .iter()
        .map(|c| c.2["p_value"].as_f64().unwrap())
        .collect();
    let significant = |results: &Value| -> Vec<(String, String)> {
        comparisons(results)
            .into_iter()
            .filter(|c| c.2["significant"] == true)
            .map(|c| (c.0, c.1))
            .collect()
    };
    let pair = |m: &str, v: &str| (m.to_string(), v.to_string());
    assert_eq!(
        significant(&plain),
        [
            pair("m1", "a"),
            pair("m2", "b"),
            pair("m3", "a"),
            pair("m3", "b"),
            pair("m4", "b"),
            pair("harm", "a")
        ]
    );
    assert_eq!(warning_codes(&plain), ["guardrail"]);

    for (method, by_hand, expected) in [
        (
            "holm",
            holm_by_hand(&p),
            vec![pair("m1", "a"), pair("m2", "b"), pair("harm", "a")],
        ),
        (
            "bh",
            bh_by_hand(&p),
            vec![
                pair("m1", "a"),
                pair("m2", "b"),
                pair("m3", "a"),
                pair("m4", "b"),
                pair("harm", "a"),
            ],
        ),
    ] {
        let name = format!("many-{method}");
        create(
            data,
            dir.path(),
            &format!(
                "{}multiple_testing: {method}\n",
                MANY_METRICS.replace("name: many-metrics", &format!("name: {name}"))
            ),
        );
        let results = results_json(data, &name);
        // Holm keeps the chance of any false positive below 0.05: two
        // survive; BH its expected share: four survive. The guardrail is
        // judged alone, as GrowthBook does, and still warns.
        assert_eq!(significant(&results), expected, "{method}");
        assert_eq!(warning_codes(&results), ["guardrail"]);
        let all = comparisons(&results);
        let discoveries = expected.len() - 1;
        let interval_alpha = match method {
            "holm" => 0.05 / 8.0,
            _ => 0.05 * discoveries as f64 / 8.0,
        };
        assert_eq!(
            results["multiple_testing"],
            json!({"method": method, "comparisons": 8, "interval_alpha": interval_alpha})
        );
        let family: Vec<&(String, String, Value)> = all.iter().filter(|c| c.0 != "harm").collect();
        for ((metric, variant, comparison), by_hand) in family.iter().zip(&by_hand) {
            let adjusted = comparison["p_value_adjusted"].as_f64().unwrap();
            assert!(
                close(adjusted, *by_hand),
                "{method} {metric} {variant}: {adjusted} vs {by_hand}"
            );
            assert_eq!(comparison["significant"], *by_hand < 0.05);
            // The interval of the same test at the corrected level: wider,
            // and for BH excluding 0 exactly when significant.
            let expected = stats(request(metric, variant, interval_alpha));
            let ci = &comparison["ci_adjusted"];
            for i in 0..2 {
                assert!(
                    close(ci[i].as_f64().unwrap(), expected["ci"][i].as_f64().unwrap()),
                    "{method} {metric} {variant}: {ci} vs {expected}"
                );
            }
            let (low, high) = (ci[0].as_f64().unwrap(), ci[1].as_f64().unwrap());
            assert!(low < comparison["ci"][0].as_f64().unwrap());
            assert!(high > comparison["ci"][1].as_f64().unwrap());
            if method == "bh" {
                assert_eq!(comparison["significant"], low > 0.0 || high < 0.0);
            }
        }
        let harm = &all.iter().find(|c| c.0 == "harm").unwrap().2;
        assert!(harm["p_value_adjusted"].is_null() && harm["ci_adjusted"].is_null());
        assert_eq!(harm["significant"], true);
    }

    // The table shows both p-values and both intervals; HTTP answers the
    // same JSON.
    let table = run_ok(&["experiment", "results", "many-holm", "--data", data]);
    assert!(
        table.contains("multiple testing: Holm-Bonferroni over 8 comparisons"),
        "{table}"
    );
    assert!(
        table.contains("adj. p") && table.contains("adj. interval"),
        "{table}"
    );
    let (admin, _) = admin_and_capture_keys(data);
    let results = results_json(data, "many-bh");
    let server = Server::start(Path::new(data));
    assert_eq!(
        get_json(&server.url, &admin, "/api/v1/experiments/many-bh/results"),
        results
    );
}
