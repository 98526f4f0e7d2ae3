//! dbt-compatible pipeline projects, the engine-independent half: load a
//! project (`dbt_project.yml`, models, seeds, snapshots, singular and generic
//! tests, macros, docs blocks, sources, exposures, unit tests), render its
//! Jinja with `minijinja`, resolve every node's configuration, build the DAG,
//! compile each node to SQL (ephemeral models inlined as CTEs, data tests as
//! queries returning failing rows), select nodes with dbt's selector syntax,
//! and write `manifest.json` / `run_results.json`.
//!
//! This crate never executes SQL and must never depend on DataFusion, Arrow,
//! tokio or the store: materialisation, running tests and write-audit-publish
//! belong to the engine side, which consumes [`CompiledProject`].
//!
//! dbt's cross-database macros are the `dbt` namespace in every node and
//! macro (`dbt.datediff(...)`, `dbt.type_string()`), rendering DuckDB's
//! meaning in DataFusion SQL, since projects come from dbt-duckdb.
//!
//! Relation names: models, seeds and snapshots live in Plinth's store as plain
//! table names, so `ref('x')` renders as x's alias (or name), `source('s', 't')`
//! as the table's `identifier` (or name), and `this` as the node's own
//! relation name. The event store's tables `events`, `persons` and
//! `quarantine` are the built-in source `plinth` (`source('plinth', 'events')`).
//!
//! ```no_run
//! use plinth_pipelines::{CompileContext, LoadOptions, Project, compile, select, write_manifest};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let project = Project::load(std::path::Path::new("my_project"), &LoadOptions::default())?;
//! let compiled = compile(&project, &CompileContext::default())?;
//! let chosen = select(&compiled, &["+orders".to_string()], &[])?;
//! for level in &compiled.levels {
//!     for id in level.iter().filter(|id| chosen.contains(*id)) {
//!         println!("{id}: {}", compiled.nodes[id].compiled_sql);
//!     }
//! }
//! write_manifest(&compiled, &project.root.join(&project.target_path))?;
//! # Ok(()) }
//! ```

mod artifacts;
mod blocks;
mod compile;
mod config;
mod error;
mod project;
mod render;
mod select;

pub use artifacts::{
    RunResult, RunResults, RunStatus, TimingInfo, utc_timestamp_now, write_manifest,
};
pub use compile::{CompileContext, CompiledNode, CompiledProject, compile};
pub use config::{NodeConfig, Severity, TestStatus};
pub use error::PipelineError;
pub use project::{
    BUILTIN_SOURCE, BUILTIN_SOURCE_TABLES, ColumnInfo, DocBlock, Exposure, Freshness,
    FreshnessThreshold, LoadOptions, MacroInfo, Node, NodeId, PLINTH_SETTINGS_FILE, Project,
    ResourceType, SourceTable, Target, TestMetadata, UnitTest, UnitTestExpect, UnitTestInput,
    build_schedule, parse_cli_vars,
};
pub use render::ephemeral_cte_name;
pub use select::select;
