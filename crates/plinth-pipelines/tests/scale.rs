//! A generated project of a few hundred models loads and compiles. Timing is
//! measured by `cargo bench --bench parse_compile`, never asserted here.

#[path = "support/generate.rs"]
mod generate;

use plinth_pipelines::{CompileContext, LoadOptions, Project, ResourceType, compile, select};

#[test]
fn generated_project_loads_compiles_and_selects() {
    let dir = tempfile::tempdir().unwrap();
    generate::generate_project(dir.path(), 200).unwrap();
    let project = Project::load(dir.path(), &LoadOptions::default()).unwrap();
    let compiled = compile(&project, &CompileContext::default()).unwrap();
    let count = |t: ResourceType| {
        compiled
            .nodes
            .values()
            .filter(|n| n.node.resource_type == t)
            .count()
    };
    assert_eq!(count(ResourceType::Model), 200);
    assert_eq!(count(ResourceType::Test), 400);
    // Four layers of models after the seed, tests one level later.
    assert_eq!(compiled.levels.len(), 6);
    let top = compiled
        .nodes
        .values()
        .find(|n| n.node.name == "m_003_000")
        .unwrap();
    assert_eq!(top.node.refs.len(), 3);
    // m_002_009 is ephemeral (and so are its ephemeral parents): inlined,
    // dependencies first, never referenced by relation name.
    let sql = &compiled
        .nodes
        .values()
        .find(|n| n.node.name == "m_003_002")
        .unwrap()
        .compiled_sql;
    assert!(
        sql.trim_start()
            .starts_with("with __dbt__cte__m_000_009 as ("),
        "{sql}"
    );
    let chain: Vec<usize> = ["m_000_009", "m_001_009", "m_002_009"]
        .iter()
        .map(|m| {
            sql.find(&format!("__dbt__cte__{m} as ("))
                .unwrap_or_else(|| panic!("{m} inlined: {sql}"))
        })
        .collect();
    assert!(chain.windows(2).all(|w| w[0] < w[1]), "{sql}");
    assert!(!sql.contains("from m_002_009"), "{sql}");
    let upstream = select(&compiled, &["+m_003_000".to_string()], &[]).unwrap();
    assert!(upstream.contains("model.generated.m_000_000"));
}
