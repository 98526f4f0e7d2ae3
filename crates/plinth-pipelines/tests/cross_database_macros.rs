//! dbt's cross-database macros (`dbt.datediff`, `dbt.type_string`, ...) render
//! in models and in project macros, and errors still point at the right line.

use std::fs;

use plinth_pipelines::{CompileContext, LoadOptions, PipelineError, Project, compile};

fn compiled_sql(files: &[(&str, &str)], model: &str) -> Result<String, PipelineError> {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("dbt_project.yml"),
        "name: macros\nprofile: macros\nconfig-version: 2\n",
    )
    .unwrap();
    for (path, content) in files {
        let path = dir.path().join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }
    let project = Project::load(dir.path(), &LoadOptions::default())?;
    let compiled = compile(&project, &CompileContext::default())?;
    Ok(compiled.nodes[&format!("model.macros.{model}")]
        .compiled_sql
        .clone())
}

#[test]
fn dbt_namespace_macros_render_in_models_and_project_macros() {
    let sql = compiled_sql(
        &[
            (
                "models/m.sql",
                "select {{ dbt.datediff('a', 'b', 'day') }} as days,\n\
                 {{ dbt.safe_cast('x', dbt.type_string()) }} as s,\n\
                 {{ dbt.concat(['a', \"'-'\", 'b']) }} as c,\n\
                 {{ twice('y') }} as t",
            ),
            (
                "macros/twice.sql",
                "{% macro twice(col) %}{{ dbt.cast(col, dbt.type_bigint()) }} * 2{% endmacro %}",
            ),
        ],
        "m",
    )
    .unwrap();
    assert!(
        sql.contains("(cast(b as date) - cast(a as date)) as days"),
        "{sql}"
    );
    assert!(sql.contains("try_cast(x as varchar) as s"), "{sql}");
    assert!(sql.contains("a || '-' || b as c"), "{sql}");
    assert!(sql.contains("cast(y as bigint) * 2 as t"), "{sql}");
}

#[test]
fn errors_after_the_import_keep_their_line() {
    let err = compiled_sql(&[("models/m.sql", "select 1\n\n{{ nope( }}\n")], "m").unwrap_err();
    assert_eq!(err.file(), Some("models/m.sql"));
    assert_eq!(err.line(), Some(3), "{err}");
}
