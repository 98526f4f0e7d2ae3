//! The catalog: what a project documents (descriptions, owners, tags, meta,
//! columns and their tests) joined with what the warehouse holds (whether a
//! relation is built, its columns' types, its rows).

use std::collections::BTreeMap;

use anyhow::Result;
use plinth_engine::Engine;
use plinth_pipelines::{CompiledProject, ResourceType};
use plinth_warehouse::Version;
use serde_json::{Value, json};

/// The catalog of `compiled` over the published `version` of the warehouse,
/// as JSON: `nodes` (models, seeds, snapshots), `sources` and `exposures`.
pub async fn catalog(
    engine: &Engine,
    compiled: &CompiledProject,
    version: &Version,
) -> Result<Value> {
    let ctx = engine.session(Some(version)).await?;
    // Tests by the node they are attached to, then by column.
    let mut tests: BTreeMap<&str, BTreeMap<Option<&str>, Vec<&str>>> = BTreeMap::new();
    for (id, node) in &compiled.nodes {
        if let Some(meta) = &node.node.test_metadata
            && let Some(attached) = &meta.attached_node
        {
            tests
                .entry(attached.as_str())
                .or_default()
                .entry(meta.column_name.as_deref())
                .or_default()
                .push(id.as_str());
        }
    }
    let mut nodes = Vec::new();
    for (id, compiled_node) in &compiled.nodes {
        let node = &compiled_node.node;
        if node.resource_type == ResourceType::Test || compiled_node.is_ephemeral() {
            continue;
        }
        let relation = node.relation_name().unwrap_or_default();
        let types: Vec<(String, String)> = match ctx.table(relation.as_str()).await {
            Ok(frame) => frame
                .schema()
                .fields()
                .iter()
                .map(|f| (f.name().clone(), f.data_type().to_string()))
                .collect(),
            Err(_) => Vec::new(),
        };
        let attached = tests.get(id.as_str());
        let tests_of = |column: Option<&str>| -> Vec<&str> {
            attached
                .and_then(|t| t.get(&column))
                .cloned()
                .unwrap_or_default()
        };
        let mut columns: Vec<Value> = types
            .iter()
            .map(|(name, data_type)| {
                let documented = node.columns.get(name);
                json!({
                    "name": name,
                    "type": data_type,
                    "description": documented.map(|c| c.description.as_str()).unwrap_or(""),
                    "tags": documented.map(|c| c.tags.clone()).unwrap_or_default(),
                    "meta": documented.map(|c| c.meta.clone()).unwrap_or_default(),
                    "tests": tests_of(Some(name)),
                })
            })
            .collect();
        // Documented columns the relation does not have (or not yet).
        for (name, documented) in &node.columns {
            if !types.iter().any(|(n, _)| n == name) {
                columns.push(json!({
                    "name": name,
                    "type": documented.data_type,
                    "description": documented.description,
                    "tags": documented.tags,
                    "meta": documented.meta,
                    "tests": tests_of(Some(name)),
                }));
            }
        }
        let published = version.relations.get(&relation);
        nodes.push(json!({
            "unique_id": id,
            "name": node.name,
            "resource_type": node.resource_type.as_str(),
            "relation": relation,
            "materialized": node.config.materialized,
            "description": node.description,
            "owner": node.config.meta.get("owner"),
            "tags": node.config.tags,
            "meta": node.config.meta,
            "original_file_path": node.original_file_path,
            "depends_on": node.depends_on().collect::<Vec<_>>(),
            "built": published.is_some(),
            "rows": published.and_then(|r| r.rows()),
            "columns": columns,
            "tests": tests_of(None),
        }));
    }
    let sources: Vec<Value> = compiled
        .sources
        .values()
        .map(|s| {
            json!({
                "unique_id": s.unique_id,
                "source_name": s.source_name,
                "name": s.name,
                "relation": s.identifier,
                "description": s.description,
                "owner": s.meta.get("owner"),
                "tags": s.tags,
                "meta": s.meta,
                "loaded_at_field": s.loaded_at_field,
                "freshness": s.freshness,
                "columns": s.columns.values().collect::<Vec<_>>(),
                "tests": tests.get(s.unique_id.as_str()).map(|t| t.values().flatten().collect::<Vec<_>>()),
            })
        })
        .collect();
    Ok(json!({
        "project": compiled.project_name,
        "warehouse_version": version.version,
        "nodes": nodes,
        "sources": sources,
        "exposures": compiled.exposures.values().collect::<Vec<_>>(),
    }))
}
