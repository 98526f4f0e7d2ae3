//! Writes a synthetic dbt project of any size, for the scale test and the
//! benchmark: seeds, a macro, and `models` models in layers of 50, each
//! model `ref`ing up to three models of the layer below (every tenth one
//! ephemeral, every fifth incremental), with a property file per layer
//! giving each model a description and `unique` / `not_null` tests.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

const LAYER: usize = 50;

pub fn generate_project(dir: &Path, models: usize) -> std::io::Result<()> {
    fs::create_dir_all(dir.join("models"))?;
    fs::create_dir_all(dir.join("seeds"))?;
    fs::create_dir_all(dir.join("macros"))?;
    fs::write(
        dir.join("dbt_project.yml"),
        "name: generated\nversion: '1.0'\nconfig-version: 2\nprofile: generated\nvars:\n  floor: 0\nmodels:\n  generated:\n    +materialized: table\n",
    )?;
    fs::write(dir.join("seeds/raw_items.csv"), "id,amount\n1,10\n2,20\n")?;
    fs::write(
        dir.join("macros/scaled.sql"),
        "{% macro scaled(column, factor=2) -%}\n  ({{ column }} * {{ factor }})\n{%- endmacro %}\n",
    )?;
    let layers = models.div_ceil(LAYER);
    for layer in 0..layers {
        let folder = dir.join(format!("models/layer_{layer:03}"));
        fs::create_dir_all(&folder)?;
        let mut yaml = String::from("version: 2\nmodels:\n");
        for i in 0..LAYER.min(models - layer * LAYER) {
            let name = format!("m_{layer:03}_{i:03}");
            let mut sql = String::new();
            if i % 10 == 9 {
                sql.push_str("{{ config(materialized='ephemeral') }}\n");
            } else if i % 5 == 4 {
                sql.push_str("{{ config(materialized='incremental', unique_key='id') }}\n");
            }
            if layer == 0 {
                sql.push_str(
                    "select id, {{ scaled('amount') }} as amount from {{ ref('raw_items') }}\n",
                );
            } else {
                let parents: Vec<String> = (0..3)
                    .map(|k| format!("m_{:03}_{:03}", layer - 1, (i + k * 7) % LAYER))
                    .collect();
                sql.push_str("{% set parents = [");
                let quoted: Vec<String> = parents.iter().map(|p| format!("'{p}'")).collect();
                sql.push_str(&quoted.join(", "));
                sql.push_str("] %}\n");
                sql.push_str("{% for parent in parents %}\nselect id, {{ scaled('amount', loop.index) }} as amount from {{ ref(parent) }}\nwhere amount >= {{ var('floor') }}\n{% if not loop.last %}union all{% endif %}\n{% endfor %}\n");
            }
            if i % 5 == 4 {
                sql.push_str("{% if is_incremental() %}\n-- only new rows\n{% endif %}\n");
            }
            fs::write(folder.join(format!("{name}.sql")), sql)?;
            let _ = write!(
                yaml,
                "  - name: {name}\n    description: Model {name}.\n    columns:\n      - name: id\n        tests: [unique, not_null]\n"
            );
        }
        fs::write(folder.join("_models.yml"), yaml)?;
    }
    Ok(())
}
