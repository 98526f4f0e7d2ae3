//! A whole project run, as the command line and the server start one: load
//! and compile the project, select, run, and write dbt's artifacts.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use plinth_engine::Engine;
use plinth_pipelines::{
    CompileContext, CompiledProject, LoadOptions, Project, compile, parse_cli_vars, select,
    write_manifest,
};
use plinth_warehouse::{Relation, Warehouse};
use serde_json::json;

use crate::{Command, Outcome, Progress, RunRequest, execute};

/// How long replaced warehouse files stay for queries that still read them.
const VACUUM_GRACE: Duration = Duration::from_secs(300);

/// What to run, as the command line says it.
#[derive(Debug, Clone)]
pub struct ProjectRun {
    pub command: Command,
    pub project_dir: PathBuf,
    /// `--vars`, YAML or JSON.
    pub vars: Option<String>,
    pub select: Vec<String>,
    pub exclude: Vec<String>,
    pub full_refresh: bool,
    pub threads: usize,
    pub store_failures: bool,
}

/// Loads and compiles the project in `dir`. `warehouse`'s published tables
/// decide `is_incremental()`.
pub fn load_project(
    dir: &Path,
    vars: Option<&str>,
    full_refresh: bool,
    warehouse: &Warehouse,
) -> Result<(Project, CompiledProject)> {
    let mut options = LoadOptions::default();
    if let Some(vars) = vars {
        options.vars = parse_cli_vars(vars)?;
    }
    let project = Project::load(dir, &options)?;
    let existing_relations: HashSet<String> = warehouse
        .latest()?
        .relations
        .into_iter()
        .filter(|(_, r)| matches!(r, Relation::Table { .. }))
        .map(|(name, _)| name)
        .collect();
    let context = CompileContext {
        existing_relations,
        full_refresh,
        invocation_id: uuid::Uuid::new_v4().to_string(),
        ..Default::default()
    };
    let compiled = compile(&project, &context)?;
    Ok((project, compiled))
}

/// Runs `run` on `warehouse` (opened for writing) and writes
/// `target/manifest.json` and `target/run_results.json` into the project.
/// Returns the outcome and the project's load warnings.
pub async fn run_project(
    engine: &Engine,
    warehouse: &Warehouse,
    run: &ProjectRun,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<(Outcome, Vec<String>)> {
    let (project, compiled) = load_project(
        &run.project_dir,
        run.vars.as_deref(),
        run.full_refresh,
        warehouse,
    )?;
    let selected = select(&compiled, &run.select, &run.exclude)?;
    let unbuilt = if compiled.unit_tests.is_empty() {
        None
    } else {
        let context = CompileContext {
            run_started_at: compiled.run_started_at.clone(),
            invocation_id: compiled.invocation_id.clone(),
            ephemerals_as_relations: true,
            ..Default::default()
        };
        Some(compile(&project, &context)?)
    };
    let target = project.root.join(&project.target_path);
    write_manifest(&compiled, &target)?;
    let request = RunRequest {
        command: run.command,
        compiled: &compiled,
        unbuilt: unbuilt.as_ref(),
        project_root: project.root.clone(),
        selected,
        threads: run.threads,
        store_failures: run.store_failures,
        args: json!({
            "which": run.command.as_str(),
            "select": run.select,
            "exclude": run.exclude,
            "full_refresh": run.full_refresh,
            "vars": run.vars,
        }),
    };
    let outcome = execute(engine, warehouse, &request, progress).await?;
    outcome.results.write(&target)?;
    warehouse.vacuum(VACUUM_GRACE)?;
    Ok((outcome, project.warnings))
}
