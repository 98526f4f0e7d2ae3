//! `plinth ls` and `plinth compile` on a real dbt project.

mod common;

use std::path::PathBuf;

use common::{run, run_ok};

fn shop() -> PathBuf {
    let root =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plinth-pipelines/tests/fixtures/shop");
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
