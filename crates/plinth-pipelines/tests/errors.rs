//! Errors name the file and line: Jinja errors, missing refs, cycles.

use std::fs;
use std::path::Path;

use plinth_pipelines::{CompileContext, LoadOptions, PipelineError, Project, compile};

/// Writes a minimal project with the given files (path, content).
fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("dbt_project.yml"),
        "name: broken\nprofile: broken\nconfig-version: 2\n",
    )
    .unwrap();
    for (path, content) in files {
        let path = dir.path().join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }
    dir
}

fn load_and_compile(dir: &Path) -> Result<(), PipelineError> {
    let p = Project::load(dir, &LoadOptions::default())?;
    compile(&p, &CompileContext::default()).map(|_| ())
}

#[test]
fn jinja_syntax_error_names_file_and_line() {
    let dir = project(&[
        ("models/ok.sql", "select 1 as id"),
        (
            "models/sub/bad.sql",
            "select\n  id,\n  {{ ref('ok' }}\nfrom x",
        ),
    ]);
    let err = load_and_compile(dir.path()).unwrap_err();
    assert!(matches!(err, PipelineError::Jinja { .. }), "{err}");
    assert_eq!(err.file(), Some("models/sub/bad.sql"));
    assert_eq!(err.line(), Some(3));
    assert!(
        err.to_string()
            .starts_with("models/sub/bad.sql:3: Jinja error"),
        "{err}"
    );
}

#[test]
fn error_inside_a_macro_names_the_macro_file_and_line() {
    let dir = project(&[
        (
            "macros/helpers.sql",
            "{% macro first() %}select 1{% endmacro %}\n\n{% macro broken() %}\n  {{ exceptions.raise_compiler_error('no luck') }}\n{% endmacro %}\n",
        ),
        ("models/m.sql", "{{ broken() }}"),
    ]);
    let err = load_and_compile(dir.path()).unwrap_err();
    assert_eq!(err.file(), Some("macros/helpers.sql"), "{err}");
    assert_eq!(err.line(), Some(4), "{err}");
    assert!(err.to_string().contains("no luck"), "{err}");
}

#[test]
fn missing_ref_names_file_and_line() {
    let dir = project(&[
        ("models/a.sql", "select 1 as id"),
        (
            "models/b.sql",
            "select *\nfrom {{ ref('a') }}\njoin {{ ref('nope') }} using (id)",
        ),
    ]);
    let err = load_and_compile(dir.path()).unwrap_err();
    assert!(
        matches!(err, PipelineError::MissingReference { .. }),
        "{err}"
    );
    assert_eq!(err.file(), Some("models/b.sql"));
    assert_eq!(err.line(), Some(3));
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn missing_source_and_missing_var_are_errors() {
    let dir = project(&[(
        "models/a.sql",
        "select * from {{ source('crm', 'accounts') }}",
    )]);
    let err = load_and_compile(dir.path()).unwrap_err();
    assert!(
        matches!(err, PipelineError::MissingReference { .. }),
        "{err}"
    );
    assert_eq!(err.line(), Some(1));

    let dir = project(&[("models/a.sql", "select 1\nwhere x > {{ var('cutoff') }}")]);
    let err = load_and_compile(dir.path()).unwrap_err();
    assert_eq!(
        (err.file(), err.line()),
        (Some("models/a.sql"), Some(2)),
        "{err}"
    );
    assert!(err.to_string().contains("cutoff"), "{err}");
}

#[test]
fn ref_to_a_disabled_model_is_an_error() {
    let dir = project(&[
        (
            "models/a.sql",
            "{{ config(enabled=false) }}\nselect 1 as id",
        ),
        ("models/b.sql", "select *\nfrom {{ ref('a') }}"),
    ]);
    let err = load_and_compile(dir.path()).unwrap_err();
    assert!(
        matches!(err, PipelineError::MissingReference { .. }),
        "{err}"
    );
    assert_eq!(
        (err.file(), err.line()),
        (Some("models/b.sql"), Some(2)),
        "{err}"
    );
    assert!(err.to_string().contains("disabled"), "{err}");
}

#[test]
fn cycle_names_every_node_and_file() {
    let dir = project(&[
        ("models/a.sql", "select * from {{ ref('c') }}"),
        ("models/b.sql", "select * from {{ ref('a') }}"),
        ("models/c.sql", "select * from {{ ref('b') }}"),
        ("models/d.sql", "select 1 as id"),
    ]);
    let err = load_and_compile(dir.path()).unwrap_err();
    let PipelineError::Cycle { cycle } = &err else {
        panic!("{err}")
    };
    assert_eq!(cycle.len(), 4, "{err}");
    assert_eq!(cycle.first(), cycle.last());
    let files: Vec<&str> = cycle.iter().map(|(_, f)| f.as_str()).collect();
    for file in ["models/a.sql", "models/b.sql", "models/c.sql"] {
        assert!(files.contains(&file), "{err}");
    }
    // Each step reads "x -> y" where y depends on x.
    let text = err.to_string();
    assert!(
        text.contains("model.broken.a (models/a.sql) -> model.broken.b (models/b.sql)"),
        "{text}"
    );
}

#[test]
fn yaml_error_names_file_and_line() {
    let dir = project(&[
        ("models/a.sql", "select 1 as id"),
        (
            "models/schema.yml",
            "version: 2\nmodels:\n  - name: a\n    columns: [\n",
        ),
    ]);
    let err = load_and_compile(dir.path()).unwrap_err();
    assert!(matches!(err, PipelineError::Invalid { .. }), "{err}");
    assert_eq!(err.file(), Some("models/schema.yml"));
    assert!(err.line().is_some(), "{err}");
}

#[test]
fn unknown_generic_test_is_an_error() {
    let dir = project(&[
        ("models/a.sql", "select 1 as id"),
        (
            "models/schema.yml",
            "version: 2\nmodels:\n  - name: a\n    columns:\n      - name: id\n        tests: [is_even]\n",
        ),
    ]);
    let err = load_and_compile(dir.path()).unwrap_err();
    assert_eq!(
        (err.file(), err.line()),
        (Some("models/schema.yml"), Some(6)),
        "{err}"
    );
    assert!(err.to_string().contains("is_even"), "{err}");
}

#[test]
fn duplicate_model_names_are_an_error() {
    let dir = project(&[
        ("models/x/a.sql", "select 1"),
        ("models/y/a.sql", "select 2"),
    ]);
    let err = load_and_compile(dir.path()).unwrap_err();
    assert!(
        err.to_string().contains("models/x/a.sql") && err.to_string().contains("models/y/a.sql"),
        "{err}"
    );
}
