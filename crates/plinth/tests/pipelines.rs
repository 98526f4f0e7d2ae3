//! `plinth ls` and `plinth compile` on a real dbt project.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{count, python, run, run_ok};
use serde_json::{Value, json};

fn shop() -> PathBuf {
    let root = common::manifest_dir().join("../plinth-pipelines/tests/fixtures/shop");
    // Compile writes target/; work on a copy so the fixture stays clean.
    let dir = tempfile::tempdir().unwrap().keep();
    copy_dir(&root, &dir);
    dir
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn ls_lists_nodes_in_run_order_and_honours_selection() {
    let project = shop();
    let all = run_ok(&["ls", "--project", project.to_str().unwrap()]);
    let position = |id: &str| {
        all.lines()
            .position(|l| l == id)
            .unwrap_or_else(|| panic!("{id} not in:\n{all}"))
    };
    assert!(position("model.shop.stg_orders") < position("model.shop.orders"));
    assert!(position("seed.shop.raw_orders") < position("model.shop.stg_orders"));

    let upstream = run_ok(&[
        "ls",
        "--project",
        project.to_str().unwrap(),
        "--select",
        "+orders",
    ]);
    assert!(upstream.lines().any(|l| l == "model.shop.orders"));
    assert!(upstream.lines().any(|l| l == "model.shop.stg_orders"));
    assert!(
        !upstream.lines().any(|l| l == "model.shop.customers"),
        "{upstream}"
    );
}

#[test]
fn compile_renders_refs_and_writes_a_manifest() {
    let project = shop();
    let out = run_ok(&[
        "compile",
        "--project",
        project.to_str().unwrap(),
        "--select",
        "stg_orders",
    ]);
    assert!(out.contains("-- model.shop.stg_orders"), "{out}");
    assert!(!out.contains("{{"), "unrendered Jinja in:\n{out}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(project.join("target/manifest.json")).unwrap())
            .unwrap();
    assert!(manifest["nodes"]["model.shop.orders"]["compiled_code"].is_string());
}

#[test]
fn a_missing_ref_names_the_file() {
    let project = shop();
    std::fs::write(
        project.join("models/broken.sql"),
        "select * from {{ ref('nowhere') }}\n",
    )
    .unwrap();
    let output = run(&["compile", "--project", project.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("broken.sql") && stderr.contains("nowhere"),
        "{stderr}"
    );
}

/// A copy of the small project of BENCHMARKS.md (3 seeds, 5 models, 20 tests).
fn small_shop() -> PathBuf {
    let root = common::manifest_dir().join("tests/fixtures/small_shop");
    let dir = tempfile::tempdir().unwrap().keep();
    copy_dir(&root, &dir);
    dir
}

fn build(project: &Path, data: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "build",
        "--project",
        project.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run(&args)
}

fn build_ok(project: &Path, data: &Path, extra: &[&str]) -> String {
    let output = build(project, data, extra);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "build failed:\n{stderr}");
    stderr
}

/// The rows of `sql` as `plinth sql --format json` prints them.
fn rows(data: &Path, sql: &str) -> Vec<Vec<Value>> {
    let out = run_ok(&[
        "sql",
        "--data",
        data.to_str().unwrap(),
        "--format",
        "json",
        sql,
    ]);
    let parsed: Value = serde_json::from_str(&out).unwrap();
    parsed["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_array().unwrap().clone())
        .collect()
}

fn append(path: &Path, text: &str) {
    let mut content = std::fs::read_to_string(path).unwrap();
    content.push_str(text);
    std::fs::write(path, content).unwrap();
}

#[test]
fn build_publishes_seeds_models_and_tests_that_sql_reads() {
    let project = small_shop();
    let data = tempfile::tempdir().unwrap();
    let stderr = build_ok(&project, data.path(), &[]);
    assert!(stderr.contains("20 pass"), "{stderr}");
    assert_eq!(count(data.path(), "select count(*) from orders"), 12);
    assert_eq!(count(data.path(), "select count(*) from stg_payments"), 15);
    assert_eq!(
        rows(
            data.path(),
            "select lifetime_value, number_of_orders from customers where customer_id = 1"
        ),
        vec![vec![json!(61.83), json!(3)]]
    );
    let results: Value =
        serde_json::from_slice(&std::fs::read(project.join("target/run_results.json")).unwrap())
            .unwrap();
    assert_eq!(results["results"].as_array().unwrap().len(), 28);
    assert!(project.join("target/manifest.json").is_file());

    run_ok(&[
        "docs",
        "generate",
        "--project",
        project.to_str().unwrap(),
        "--data",
        data.path().to_str().unwrap(),
    ]);
    let catalog: Value =
        serde_json::from_slice(&std::fs::read(project.join("target/catalog.json")).unwrap())
            .unwrap();
    let customers = catalog["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "customers")
        .unwrap();
    assert_eq!(customers["rows"], 8);
    assert_eq!(
        customers["description"],
        "One row per customer, with their order count and lifetime value."
    );
}

#[test]
fn a_failing_error_test_leaves_production_unchanged_and_stores_its_rows() {
    let project = small_shop();
    let data = tempfile::tempdir().unwrap();
    build_ok(&project, data.path(), &[]);
    // Order 12 twice, and a new customer: the build stages both, but the
    // uniqueness test on stg_orders fails, so neither is published.
    append(
        &project.join("seeds/raw_orders.csv"),
        "12,4,2018-01-16,placed\n",
    );
    append(
        &project.join("seeds/raw_customers.csv"),
        "9,Ann,B.,2018-01-08\n",
    );
    let output = build(&project, data.path(), &["--store-failures"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("unique_stg_orders_order_id"), "{stderr}");
    assert!(stderr.contains("production is unchanged"), "{stderr}");
    assert_eq!(count(data.path(), "select count(*) from raw_orders"), 12);
    assert_eq!(count(data.path(), "select count(*) from raw_customers"), 8);
    assert_eq!(count(data.path(), "select count(*) from customers"), 8);
    assert_eq!(
        rows(
            data.path(),
            "select unique_field, n_records from dbt_test__audit.unique_stg_orders_order_id"
        ),
        vec![vec![json!(12), json!(2)]]
    );
}

#[test]
fn a_warning_publishes() {
    let project = small_shop();
    let data = tempfile::tempdir().unwrap();
    append(
        &project.join("dbt_project.yml"),
        "\ndata_tests:\n  small_shop:\n    +severity: warn\n",
    );
    append(
        &project.join("seeds/raw_orders.csv"),
        "12,4,2018-01-16,placed\n",
    );
    let stderr = build_ok(&project, data.path(), &[]);
    assert!(stderr.contains("WARN"), "{stderr}");
    assert_eq!(count(data.path(), "select count(*) from raw_orders"), 13);
}

/// Writes a small project of `files` (path, content) into a new folder.
fn project_of(files: &[(&str, &str)]) -> PathBuf {
    let dir = tempfile::tempdir().unwrap().keep();
    std::fs::write(
        dir.join("dbt_project.yml"),
        "name: inline\nversion: '1.0.0'\nconfig-version: 2\nprofile: inline\n",
    )
    .unwrap();
    for (path, content) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    dir
}

#[test]
fn incremental_merge_keeps_old_rows_until_a_full_refresh() {
    let model =
        "{{ config(materialized='incremental', unique_key='id', incremental_strategy='merge') }}
select id, value, updated from {{ ref('src') }}
{% if is_incremental() %}
where updated > (select max(updated) from {{ this }})
{% endif %}
";
    let project = project_of(&[
        ("seeds/src.csv", "id,value,updated\n1,a,1\n2,b,1\n3,c,1\n"),
        ("models/latest.sql", model),
    ]);
    let data = tempfile::tempdir().unwrap();
    let values = || rows(data.path(), "select id, value from latest order by id");
    build_ok(&project, data.path(), &[]);
    assert_eq!(values().len(), 3);

    // Row 2 changes, row 4 arrives, row 1 leaves the source.
    std::fs::write(
        project.join("seeds/src.csv"),
        "id,value,updated\n2,b2,2\n3,c,1\n4,d,2\n",
    )
    .unwrap();
    build_ok(&project, data.path(), &[]);
    assert_eq!(
        values(),
        vec![
            vec![json!(1), json!("a")],
            vec![json!(2), json!("b2")],
            vec![json!(3), json!("c")],
            vec![json!(4), json!("d")],
        ]
    );
    build_ok(&project, data.path(), &["--full-refresh"]);
    assert_eq!(values().len(), 3);
    assert_eq!(values()[0], vec![json!(2), json!("b2")]);
}

#[test]
fn snapshots_keep_every_version_of_a_row() {
    let timestamp = "{% snapshot people_history %}
{{ config(unique_key='id', strategy='timestamp', updated_at='updated_at') }}
select * from {{ ref('people') }}
{% endsnapshot %}
";
    let check = "{% snapshot people_checked %}
{{ config(unique_key='id', strategy='check', check_cols=['name']) }}
select id, name from {{ ref('people') }}
{% endsnapshot %}
";
    let project = project_of(&[
        (
            "seeds/people.csv",
            "id,name,updated_at\n1,Ann,2024-01-01T10:00:00\n2,Bob,2024-01-01T10:00:00\n",
        ),
        ("snapshots/history.sql", timestamp),
        ("snapshots/checked.sql", check),
        (
            "snapshots/deletes.sql",
            "{% snapshot people_deletes %}\n\
             {{ config(unique_key='id', strategy='timestamp', updated_at='updated_at', hard_deletes='invalidate') }}\n\
             select * from {{ ref('people') }}\n\
             {% endsnapshot %}\n",
        ),
    ]);
    let data = tempfile::tempdir().unwrap();
    build_ok(&project, data.path(), &[]);
    assert_eq!(
        count(
            data.path(),
            "select count(*) from people_history where dbt_valid_to is null"
        ),
        2
    );
    std::fs::write(
        project.join("seeds/people.csv"),
        "id,name,updated_at\n1,Anna,2024-02-01T10:00:00\n2,Bob,2024-01-01T10:00:00\n",
    )
    .unwrap();
    build_ok(&project, data.path(), &[]);
    for snapshot in ["people_history", "people_checked"] {
        let versions = rows(
            data.path(),
            &format!(
                "select name, dbt_valid_to is null from {snapshot} where id = 1 order by dbt_valid_from"
            ),
        );
        assert_eq!(
            versions,
            vec![
                vec![json!("Ann"), json!(false)],
                vec![json!("Anna"), json!(true)]
            ],
            "{snapshot}"
        );
        assert_eq!(
            count(data.path(), &format!("select count(*) from {snapshot}")),
            3
        );
    }
    assert_eq!(
        rows(
            data.path(),
            "select cast(dbt_valid_to as varchar) from people_history where name = 'Ann'"
        ),
        vec![vec![json!("2024-02-01T10:00:00")]]
    );

    // Bob leaves the source: only the snapshot that invalidates hard
    // deletes closes his row.
    std::fs::write(
        project.join("seeds/people.csv"),
        "id,name,updated_at\n1,Anna,2024-02-01T10:00:00\n",
    )
    .unwrap();
    build_ok(&project, data.path(), &[]);
    let bob_current = |snapshot: &str| {
        count(
            data.path(),
            &format!("select count(*) from {snapshot} where id = 2 and dbt_valid_to is null"),
        )
    };
    assert_eq!(bob_current("people_history"), 1);
    assert_eq!(bob_current("people_deletes"), 0);
    assert_eq!(count(data.path(), "select count(*) from people_deletes"), 3);
}

/// Runs `dbt build` (dbt-core and dbt-duckdb from the test venv) in `project`.
fn dbt_build(project: &Path) {
    let script = "import sys\nfrom dbt.cli.main import dbtRunner\n\
        r = dbtRunner().invoke(['build', '--profiles-dir', '.', '--project-dir', '.'])\n\
        sys.exit(0 if r.success else 1)";
    let output = Command::new(python())
        .args(["-c", script])
        .current_dir(project)
        .output()
        .expect("run python");
    assert!(
        output.status.success(),
        "dbt build failed (run the tests through .ci/run, which installs dbt-duckdb): {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Asserts that each relation holds the same rows in dbt's DuckDB file
/// `database` (in `dbt_project`) and in Plinth's `data`: the same columns,
/// and the same multiset of rows, numbers compared to 1e-9 and timestamps
/// as text.
fn assert_same_rows(dbt_project: &Path, database: &str, data: &Path, relations: &[&str]) {
    let dump = format!(
        "import duckdb, json, decimal\n\
         con = duckdb.connect({database:?}, read_only=True)\n\
         out = {{}}\n\
         for t in {relations:?}:\n\
         \x20   cur = con.execute(f'select * from main.{{t}}')\n\
         \x20   out[t] = {{'columns': [d[0] for d in cur.description], 'rows': [[float(v) if isinstance(v, decimal.Decimal) else v for v in row] for row in cur.fetchall()]}}\n\
         print(json.dumps(out, default=str))"
    );
    let output = Command::new(python())
        .args(["-c", &dump])
        .current_dir(dbt_project)
        .output()
        .expect("run python");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let dbt: Value = serde_json::from_slice(&output.stdout).unwrap();
    let canonical = |rows: &Value| -> Vec<Vec<String>> {
        let mut rows: Vec<Vec<String>> = rows
            .as_array()
            .unwrap()
            .iter()
            .map(|row| {
                row.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| match v {
                        Value::Number(n) => format!("{:.9}", n.as_f64().unwrap()),
                        // `2024-01-01T10:00:00` (Arrow) is `2024-01-01 10:00:00` (Python).
                        Value::String(s) if s.len() >= 19 && s.as_bytes()[10] == b'T' => {
                            s.replacen('T', " ", 1)
                        }
                        Value::String(s) => s.clone(),
                        Value::Null => "NULL".to_string(),
                        other => other.to_string(),
                    })
                    .collect()
            })
            .collect();
        rows.sort();
        rows
    };
    for relation in relations {
        let ours: Value = serde_json::from_str(&run_ok(&[
            "sql",
            "--data",
            data.to_str().unwrap(),
            "--format",
            "json",
            &format!("select * from {relation}"),
        ]))
        .unwrap();
        let our_columns: Vec<&str> = ours["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        let their_columns: Vec<&str> = dbt[relation]["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert_eq!(our_columns, their_columns, "{relation}");
        let (ours, theirs) = (canonical(&ours["rows"]), canonical(&dbt[*relation]["rows"]));
        assert!(!ours.is_empty(), "{relation} is empty");
        assert_eq!(
            ours, theirs,
            "{relation}: Plinth's rows differ from dbt-duckdb's"
        );
    }
}

/// Every model and seed of the small project, built by dbt-duckdb and by
/// Plinth, holds the same rows.
#[test]
fn dbt_duckdb_and_plinth_build_the_same_rows() {
    let dbt_project = small_shop();
    dbt_build(&dbt_project);
    let project = small_shop();
    let data = tempfile::tempdir().unwrap();
    build_ok(&project, data.path(), &[]);
    assert_same_rows(
        &dbt_project,
        "small_shop.duckdb",
        data.path(),
        &[
            "raw_customers",
            "raw_orders",
            "raw_payments",
            "stg_customers",
            "stg_orders",
            "stg_payments",
            "orders",
            "customers",
        ],
    );
}

/// A timestamp snapshot, merge-incremental models (one updating only some
/// columns) and a model over an external CSV source, built twice with the
/// source changed in between, agree with dbt-duckdb row for row, dbt_scd_id
/// included.
#[test]
fn dbt_duckdb_and_plinth_agree_on_snapshots_and_incremental_runs() {
    let files = [
        (
            "profiles.yml",
            "inline:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n      path: inline.duckdb\n      schema: main\n      threads: 1\n",
        ),
        (
            "seeds/people.csv",
            "id,name,updated_at\n1,Ann,2024-01-01 10:00:00\n2,Bob,2024-01-01 10:00:00\n3,Cy,2024-01-01 10:00:00\n",
        ),
        (
            "snapshots/people_history.sql",
            "{% snapshot people_history %}\n\
             {{ config(unique_key='id', strategy='timestamp', updated_at='updated_at', target_schema='main') }}\n\
             select * from {{ ref('people') }}\n\
             {% endsnapshot %}\n",
        ),
        (
            "models/latest.sql",
            "{{ config(materialized='incremental', unique_key='id', incremental_strategy='merge') }}\n\
             select id, name, updated_at from {{ ref('people') }}\n\
             {% if is_incremental() %}where updated_at > (select max(updated_at) from {{ this }}){% endif %}\n",
        ),
        ("data/raw_items.csv", "id,label,price\n1,pen,1.5\n2,ink,3\n"),
        (
            "models/sources.yml",
            "version: 2\nsources:\n  - name: raw\n    meta:\n      external_location: \"data/{name}.csv\"\n    tables:\n      - name: raw_items\n",
        ),
        (
            "models/items.sql",
            "select id, label, price * 2 as doubled from {{ source('raw', 'raw_items') }}\n",
        ),
        (
            "models/names_only.sql",
            "{{ config(materialized='incremental', unique_key='id', incremental_strategy='merge', merge_update_columns=['name']) }}\n\
             select id, name, updated_at from {{ ref('people') }}\n",
        ),
    ];
    let dbt_project = project_of(&files);
    let project = project_of(&files);
    let data = tempfile::tempdir().unwrap();
    dbt_build(&dbt_project);
    build_ok(&project, data.path(), &[]);
    let changed = "id,name,updated_at\n1,Anna,2024-02-01 10:00:00\n2,Bob,2024-01-01 10:00:00\n4,Di,2024-02-01 09:00:00\n";
    for dir in [&dbt_project, &project] {
        std::fs::write(dir.join("seeds/people.csv"), changed).unwrap();
    }
    dbt_build(&dbt_project);
    build_ok(&project, data.path(), &[]);
    assert_same_rows(
        &dbt_project,
        "inline.duckdb",
        data.path(),
        &["people", "people_history", "latest", "names_only", "items"],
    );
    // The merge took only the name of the changed row.
    assert_eq!(
        rows(
            data.path(),
            "select name, cast(updated_at as varchar) from names_only where id = 1"
        ),
        vec![vec![json!("Anna"), json!("2024-01-01T10:00:00")]]
    );
}

#[test]
fn lineage_follows_columns_through_views_and_tables() {
    let project = small_shop();
    let data = tempfile::tempdir().unwrap();
    build_ok(&project, data.path(), &[]);
    let out = run_ok(&[
        "lineage",
        "orders.credit_card_amount",
        "--project",
        project.to_str().unwrap(),
        "--data",
        data.path().to_str().unwrap(),
    ]);
    let (upstream, downstream) = out.split_once("downstream").unwrap();
    for column in [
        "  stg_payments.amount",
        "  stg_payments.payment_method",
        "    raw_payments.amount",
        "    raw_payments.payment_method",
    ] {
        assert!(upstream.contains(column), "{column} not in:\n{out}");
    }
    assert!(!upstream.contains("raw_orders"), "{out}");
    assert!(downstream.contains("(none)"), "{out}");
    let out = run_ok(&[
        "lineage",
        "raw_orders.order_date",
        "--project",
        project.to_str().unwrap(),
        "--data",
        data.path().to_str().unwrap(),
    ]);
    for column in [
        "stg_orders.order_date",
        "orders.order_date",
        "customers.first_order",
    ] {
        assert!(out.contains(column), "{column} not in:\n{out}");
    }
}

#[test]
fn serve_runs_the_project_on_request_and_serves_catalog_lineage_and_history() {
    let project = small_shop();
    let data = tempfile::tempdir().unwrap();
    let (admin, _) = common::admin_and_capture_keys(data.path().to_str().unwrap());
    let server = common::Server::start_with(data.path(), &["--project", project.to_str().unwrap()]);
    let client = reqwest::blocking::Client::new();
    let get = |path: &str| common::get_json(&server.url, &admin, path);

    let run: Value = client
        .post(format!("{}/api/v1/pipelines/run", server.url))
        .bearer_auth(&admin)
        .json(&json!({"command": "build"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(run["failed"], json!(false), "{run}");
    assert_eq!(run["results"].as_array().unwrap().len(), 28);

    let answer: Value = client
        .post(format!("{}/api/v1/query", server.url))
        .bearer_auth(&admin)
        .json(&json!({"sql": "select count(*) as n from orders"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(answer["rows"], json!([[12]]), "{answer}");

    let history = get("/api/v1/pipelines/runs");
    assert_eq!(history["runs"][0]["trigger"], "api");

    let catalog = get("/api/v1/catalog");
    let orders = catalog["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "orders")
        .unwrap();
    assert_eq!(orders["owner"], "data@example.com");
    assert_eq!(orders["rows"], 12);
    assert_eq!(orders["tags"], json!(["finance"]));
    let order_id = orders["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "order_id")
        .unwrap();
    assert_eq!(order_id["tests"].as_array().unwrap().len(), 2, "{order_id}");

    let lineage = get("/api/v1/lineage");
    assert!(
        lineage["edges"]
            .as_array()
            .unwrap()
            .contains(&json!({"from": "orders.amount", "to": "customers.lifetime_value"})),
        "{lineage}"
    );
}

#[test]
fn source_freshness_compares_the_newest_row_with_its_thresholds() {
    let data = tempfile::tempdir().unwrap();
    let three_hours_ago = chrono::Utc::now() - chrono::Duration::hours(3);
    let events = data.path().join("events.ndjson");
    std::fs::write(
        &events,
        format!(
            "{}\n",
            json!({"event": "signed up", "distinct_id": "u1", "timestamp": three_hours_ago.to_rfc3339()})
        ),
    )
    .unwrap();
    run_ok(&[
        "import",
        "--data",
        data.path().to_str().unwrap(),
        events.to_str().unwrap(),
    ]);
    let sources = |error_after: &str| {
        format!(
            "version: 2\nsources:\n  - name: plinth\n    loaded_at_field: timestamp\n    freshness:\n      warn_after: {{count: 1, period: hour}}\n      error_after: {error_after}\n    tables:\n      - name: events\n"
        )
    };
    let freshness = |project: &Path| {
        run(&[
            "source",
            "freshness",
            "--project",
            project.to_str().unwrap(),
            "--data",
            data.path().to_str().unwrap(),
        ])
    };
    let lenient = project_of(&[("models/sources.yml", &sources("{count: 1, period: day}"))]);
    let output = freshness(&lenient);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.starts_with("WARN  source.inline.plinth.events"),
        "{stdout}"
    );
    assert!(lenient.join("target/sources.json").is_file());

    let strict = project_of(&[("models/sources.yml", &sources("{count: 2, period: hour}"))]);
    let output = freshness(&strict);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stdout).starts_with("ERROR source.inline.plinth.events")
    );
}

#[test]
fn unit_tests_run_a_model_over_fixture_rows_before_it_is_built() {
    let unit_tests = |expected: &str| {
        format!(
            "version: 2
unit_tests:
  - name: doubles_amounts
    model: doubled
    given:
      - input: ref('src')
        rows:
          - {{id: 1, amount: 5}}
          - {{id: 2}}
    expect:
      rows:
        - {{id: 1, doubled: {expected}}}
        - {{id: 2, doubled: null}}
  - name: doubles_from_csv
    model: doubled
    given:
      - input: ref('src')
        format: csv
        rows: |
          id,amount
          3,7
    expect:
      format: csv
      rows: |
          id,doubled
          3,14
  - name: fakes_an_ephemeral_input
    model: tripled
    given:
      - input: ref('positive')
        format: sql
        rows: select 2 as id, 4 as amount
    expect:
      rows:
        - {{id: 2, tripled: 12}}
"
        )
    };
    let files = |expected: &str| {
        vec![
            (
                "seeds/src.csv".to_string(),
                "id,amount,note\n1,2,a\n".to_string(),
            ),
            (
                "models/doubled.sql".to_string(),
                "select id, amount * 2 as doubled from {{ ref('src') }}\n".to_string(),
            ),
            (
                "models/positive.sql".to_string(),
                "{{ config(materialized='ephemeral') }}\nselect id, amount from {{ ref('src') }} where amount > 0\n".to_string(),
            ),
            (
                "models/tripled.sql".to_string(),
                "select id, amount * 3 as tripled from {{ ref('positive') }}\n".to_string(),
            ),
            ("models/unit_tests.yml".to_string(), unit_tests(expected)),
        ]
    };
    let as_refs = |files: &[(String, String)]| -> PathBuf {
        let borrowed: Vec<(&str, &str)> = files
            .iter()
            .map(|(p, c)| (p.as_str(), c.as_str()))
            .collect();
        project_of(&borrowed)
    };
    let data = tempfile::tempdir().unwrap();
    let passing = as_refs(&files("10"));
    let stderr = build_ok(&passing, data.path(), &[]);
    assert!(stderr.contains("3 pass"), "{stderr}");
    assert_eq!(
        rows(data.path(), "select doubled from doubled"),
        vec![vec![json!(4)]]
    );

    let failing = as_refs(&files("11"));
    std::fs::write(failing.join("seeds/src.csv"), "id,amount,note\n1,3,a\n").unwrap();
    let output = build(&failing, data.path(), &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("unit_test.inline.doubled.doubles_amounts"),
        "{stderr}"
    );
    assert!(stderr.contains("SKIP"), "{stderr}");
    assert_eq!(
        rows(data.path(), "select doubled from doubled"),
        vec![vec![json!(4)]]
    );
}

#[test]
fn incremental_schema_changes_follow_on_schema_change() {
    let model = |on_schema_change: &str, columns: &str| {
        format!(
            "{{{{ config(materialized='incremental', unique_key='id', on_schema_change='{on_schema_change}') }}}}\n\
             select {columns} from {{{{ ref('src') }}}}\n\
             {{% if is_incremental() %}}where id > (select max(id) from {{{{ this }}}}){{% endif %}}\n"
        )
    };
    let project = project_of(&[
        ("seeds/src.csv", "id,a,b\n1,x,10\n"),
        ("models/strict.sql", &model("fail", "id, a")),
        ("models/growing.sql", &model("append_new_columns", "id, a")),
    ]);
    let data = tempfile::tempdir().unwrap();
    build_ok(&project, data.path(), &[]);
    std::fs::write(project.join("seeds/src.csv"), "id,a,b\n1,x,10\n2,y,20\n").unwrap();
    std::fs::write(
        project.join("models/growing.sql"),
        model("append_new_columns", "id, a, b"),
    )
    .unwrap();
    std::fs::write(project.join("models/strict.sql"), model("fail", "id, a, b")).unwrap();
    let output = build(&project, data.path(), &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("out of sync"), "{stderr}");

    // `seed` then `run` keep what succeeded: the growing model gains its
    // column, the strict one fails and keeps its rows.
    run_ok(&[
        "seed",
        "--project",
        project.to_str().unwrap(),
        "--data",
        data.path().to_str().unwrap(),
    ]);
    let output = run(&[
        "run",
        "--project",
        project.to_str().unwrap(),
        "--data",
        data.path().to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        rows(data.path(), "select id, a, b from growing order by id"),
        vec![
            vec![json!(1), json!("x"), Value::Null],
            vec![json!(2), json!("y"), json!(20)],
        ]
    );
    assert_eq!(count(data.path(), "select count(*) from strict"), 1);
}

#[test]
fn seed_and_test_commands_do_only_their_part() {
    let project = small_shop();
    let data = tempfile::tempdir().unwrap();
    let project_arg = project.to_str().unwrap();
    let data_arg = data.path().to_str().unwrap();
    run_ok(&["seed", "--project", project_arg, "--data", data_arg]);
    assert_eq!(count(data.path(), "select count(*) from raw_orders"), 12);
    assert!(
        !run(&["sql", "--data", data_arg, "select * from orders"])
            .status
            .success()
    );

    run_ok(&["run", "--project", project_arg, "--data", data_arg]);
    assert_eq!(count(data.path(), "select count(*) from orders"), 12);
    let output = run(&["test", "--project", project_arg, "--data", data_arg]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("20 pass") && stderr.contains("nothing published"),
        "{stderr}"
    );
}

/// A build killed (SIGKILL) at random moments never leaves production half
/// built: every model holds the same generation, the old one or the new one;
/// and the next build removes what the killed one staged.
#[test]
fn a_killed_build_leaves_production_whole() {
    const MODELS: usize = 40;
    let mut files: Vec<(String, String)> = vec![("seeds/base.csv".into(), "id\n1\n2\n3\n".into())];
    for i in 0..MODELS {
        let input = if i == 0 {
            "{{ ref('base') }}".to_string()
        } else {
            format!("{{{{ ref('m{}') }}}}", i - 1)
        };
        files.push((
            format!("models/m{i}.sql"),
            format!(
                "{{{{ config(materialized='table') }}}}\nselect id, {{{{ var('generation') }}}} as generation from {input}\n"
            ),
        ));
    }
    let borrowed: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    let project = project_of(&borrowed);
    let data = tempfile::tempdir().unwrap();
    let generation = |n: usize| format!("{{generation: {n}}}");
    build_ok(&project, data.path(), &["--vars", &generation(1)]);
    let every_model: Vec<String> = (0..MODELS)
        .map(|i| format!("select generation from m{i}"))
        .collect();
    let generations = format!(
        "select count(distinct generation) from ({})",
        every_model.join(" union all ")
    );

    let mut moments = common::Moments::from_env_or_clock();
    for round in 2..6 {
        let mut child = common::plinth()
            .args([
                "build",
                "--project",
                project.to_str().unwrap(),
                "--data",
                data.path().to_str().unwrap(),
                "--vars",
                &generation(round),
            ])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(moments.next_ms(20, 600)));
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(count(data.path(), &generations), 1, "round {round}");
    }
    build_ok(&project, data.path(), &["--vars", &generation(9)]);
    assert_eq!(
        rows(
            data.path(),
            &format!("select distinct generation from m{}", MODELS - 1)
        ),
        vec![vec![json!(9)]]
    );
    // Nothing on disk but what the log names (live or waiting for vacuum).
    let warehouse = data.path().join("warehouse");
    let latest = std::fs::read_dir(warehouse.join("_log"))
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().into_string().ok())
        .filter(|n| n.ends_with(".json"))
        .max()
        .unwrap();
    let log = std::fs::read_to_string(warehouse.join("_log").join(latest)).unwrap();
    for model in std::fs::read_dir(&warehouse).unwrap() {
        let model = model.unwrap();
        if model.file_name() == "_log" {
            continue;
        }
        for file in std::fs::read_dir(model.path()).unwrap() {
            let name = file.unwrap().file_name().into_string().unwrap();
            assert!(log.contains(&name), "{name} is on disk but not in the log");
        }
    }
}

#[test]
fn serve_builds_on_the_schedule_in_plinth_yml() {
    let project = small_shop();
    std::fs::write(project.join("plinth.yml"), "build_every: 1h\n").unwrap();
    let data = tempfile::tempdir().unwrap();
    let (admin, _) = common::admin_and_capture_keys(data.path().to_str().unwrap());
    let server = common::Server::start_with(data.path(), &["--project", project.to_str().unwrap()]);
    let client = reqwest::blocking::Client::new();
    // The first scheduled build starts at once.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let runs: Value = client
            .get(format!("{}/api/v1/pipelines/runs", server.url))
            .bearer_auth(&admin)
            .send()
            .unwrap()
            .json()
            .unwrap();
        if let Some(run) = runs["runs"].as_array().unwrap().first() {
            assert_eq!(run["trigger"], "schedule");
            assert_eq!(run["failed"], false, "{run}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no scheduled run");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(data.path().join("pipeline_runs.jsonl").is_file());
}

#[test]
fn test_configs_decide_pass_warn_and_fail() {
    let project = project_of(&[
        ("seeds/src.csv", "id,v,w\n1,1,a\n2,-1,\n3,-2,\n4,5,b\n"),
        ("models/m.sql", "select id, v, w from {{ ref('src') }}\n"),
        (
            "tests/few_negatives.sql",
            "{{ config(warn_if='>1', error_if='>2') }}\nselect * from {{ ref('m') }} where v < 0\n",
        ),
        (
            "models/schema.yml",
            "version: 2
models:
  - name: m
    columns:
      - name: w
        data_tests:
          - not_null:
              config:
                where: \"v > 0\"
      - name: v
        data_tests:
          - accepted_values:
              arguments:
                values: [1, 5]
                quote: false
              config:
                severity: warn
                limit: 1
                store_failures: true
",
        ),
    ]);
    let data = tempfile::tempdir().unwrap();
    let stderr = build_ok(&project, data.path(), &[]);
    assert!(stderr.contains("1 pass, 2 warn"), "{stderr}");
    // `limit` caps the stored failing rows.
    assert_eq!(
        count(
            data.path(),
            "select count(*) from dbt_test__audit.accepted_values_m_v__False__1__5"
        ),
        1
    );

    std::fs::write(
        project.join("seeds/src.csv"),
        "id,v,w\n1,1,a\n2,-1,\n3,-2,\n4,-5,b\n",
    )
    .unwrap();
    let output = build(&project, data.path(), &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("few_negatives (FAIL 3)"), "{stderr}");
    assert_eq!(count(data.path(), "select count(*) from m where v < 0"), 2);
}
