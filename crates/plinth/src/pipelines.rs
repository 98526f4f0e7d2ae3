//! `plinth compile`, `ls`, `build`, `run`, `test` and `seed`: dbt-compatible
//! projects parsed, rendered and selected (`plinth-pipelines`), then run on
//! the data directory's warehouse (`plinth-runner`), with a progress line
//! per node and dbt's `target/manifest.json` and `target/run_results.json`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use plinth_engine::Engine;
use plinth_pipelines::{
    CompileContext, LoadOptions, Project, RunResult, RunStatus, compile, parse_cli_vars, select,
    write_manifest,
};
use plinth_runner::{Command, Progress, RunRequest};
use plinth_store::{Mode, Store};
use plinth_warehouse::{Relation, Warehouse};
use serde_json::json;

use crate::cli::{ProjectArgs, RunArgs};

/// How long replaced warehouse files stay for queries that still read them.
const VACUUM_GRACE: Duration = Duration::from_secs(300);

fn load(args: &ProjectArgs) -> Result<(Project, plinth_pipelines::CompiledProject)> {
    load_with(args, HashSet::new())
}

/// Loads and compiles; `existing_relations` are the tables already built,
/// which decide `is_incremental()`.
fn load_with(
    args: &ProjectArgs,
    existing_relations: HashSet<String>,
) -> Result<(Project, plinth_pipelines::CompiledProject)> {
    let mut options = LoadOptions::default();
    if let Some(vars) = &args.vars {
        options.vars = parse_cli_vars(vars)?;
    }
    let project = Project::load(&args.project, &options)?;
    for warning in &project.warnings {
        eprintln!("warning: {warning}");
    }
    let context = CompileContext {
        existing_relations,
        full_refresh: args.full_refresh,
        ..Default::default()
    };
    let compiled = compile(&project, &context)?;
    Ok((project, compiled))
}

/// Renders every selected node's SQL and writes `target/manifest.json`.
pub fn compile_command(args: ProjectArgs) -> Result<()> {
    let started = Instant::now();
    let (project, compiled) = load(&args)?;
    let chosen = select(&compiled, &args.select, &args.exclude)?;
    for id in compiled.order.iter().filter(|id| chosen.contains(*id)) {
        let node = &compiled.nodes[id];
        println!(
            "-- {id} ({})\n{}\n",
            node.node.config.materialized,
            node.compiled_sql.trim_end()
        );
    }
    let target = project.root.join(&project.target_path);
    write_manifest(&compiled, &target)?;
    eprintln!(
        "compiled {} of {} nodes in {:.0} ms; wrote {}",
        chosen.len(),
        compiled.nodes.len(),
        started.elapsed().as_secs_f64() * 1000.0,
        target.join("manifest.json").display()
    );
    Ok(())
}

/// Lists the selected nodes in run order.
pub fn ls_command(args: ProjectArgs) -> Result<()> {
    let (_, compiled) = load(&args)?;
    let chosen = select(&compiled, &args.select, &args.exclude)?;
    for id in compiled.order.iter().filter(|id| chosen.contains(*id)) {
        println!("{id}");
    }
    Ok(())
}

/// `plinth build | run | test | seed`: runs the selected nodes on the data
/// directory and publishes what the command publishes (see `plinth_runner`).
/// Fails, after writing `run_results.json`, when a node errored or an
/// error-severity test failed.
pub fn run_command(command: Command, args: RunArgs) -> Result<()> {
    let started = Instant::now();
    let store = Arc::new(Store::open(
        &args.data.dir,
        Mode::Writer,
        &format!("plinth {}", command.as_str()),
    )?);
    let warehouse = Warehouse::writer(&args.data.dir)?;
    let existing: HashSet<String> = warehouse
        .latest()?
        .relations
        .into_iter()
        .filter(|(_, r)| matches!(r, Relation::Table { .. }))
        .map(|(name, _)| name)
        .collect();
    let (project, compiled) = load_with(&args.project, existing)?;
    let selected = select(&compiled, &args.project.select, &args.project.exclude)?;
    let target = project.root.join(&project.target_path);
    write_manifest(&compiled, &target)?;
    let engine = Engine::new(store, plinth_engine::Limits::default());
    let request = RunRequest {
        command,
        compiled: &compiled,
        project_root: project.root.clone(),
        selected,
        threads: args.threads,
        store_failures: args.store_failures,
        args: json!({
            "which": command.as_str(),
            "select": args.project.select,
            "exclude": args.project.exclude,
            "full_refresh": args.project.full_refresh,
            "vars": args.project.vars,
        }),
    };
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("valid template"));
    bar.enable_steady_tick(Duration::from_millis(120));
    let running = std::sync::Mutex::new(Vec::<String>::new());
    let report = |event: Progress| {
        let mut running = running.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            Progress::Started { id } => running.push(short_name(id).to_string()),
            Progress::Finished {
                result,
                done,
                total,
            } => {
                running.retain(|n| n != short_name(&result.unique_id));
                let line = progress_line(result, done, total);
                if bar.is_hidden() {
                    eprintln!("{line}");
                } else {
                    bar.println(line);
                }
            }
        }
        bar.set_message(format!("running {}", running.join(", ")));
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let outcome = runtime.block_on(plinth_runner::execute(
        &engine, &warehouse, &request, &report,
    ));
    bar.finish_and_clear();
    let outcome = outcome?;
    outcome.results.write(&target)?;
    warehouse.vacuum(VACUUM_GRACE)?;

    let count = |status: RunStatus| {
        outcome
            .results
            .results
            .iter()
            .filter(|r| r.status == status)
            .count()
    };
    eprintln!(
        "{} in {:.2}s: {} ok, {} pass, {} warn, {} error, {} fail, {} skipped; {}",
        command.as_str(),
        started.elapsed().as_secs_f64(),
        count(RunStatus::Success),
        count(RunStatus::Pass),
        count(RunStatus::Warn),
        count(RunStatus::Error) + count(RunStatus::RuntimeError),
        count(RunStatus::Fail),
        count(RunStatus::Skipped),
        match outcome.published {
            Some(version) => format!("published warehouse version {version}"),
            None => "nothing published".to_string(),
        }
    );
    if outcome.failed {
        let failures: Vec<String> = outcome
            .failures()
            .iter()
            .map(|r| {
                format!(
                    "{} ({})",
                    r.unique_id,
                    r.message.as_deref().unwrap_or_default()
                )
            })
            .collect();
        let production = if command == Command::Build {
            "; production is unchanged"
        } else {
            ""
        };
        bail!(
            "{} failed: {}{production}",
            command.as_str(),
            failures.join(", ")
        );
    }
    Ok(())
}

/// `model.shop.orders` -> `orders`; tests keep their whole name.
fn short_name(id: &str) -> &str {
    id.splitn(3, '.').nth(2).unwrap_or(id)
}

fn progress_line(result: &RunResult, done: usize, total: usize) -> String {
    let word = match result.status {
        RunStatus::Success => "OK",
        RunStatus::Pass => "PASS",
        RunStatus::Warn => "WARN",
        RunStatus::Fail => "FAIL",
        RunStatus::Error | RunStatus::RuntimeError => "ERROR",
        RunStatus::Skipped => "SKIP",
    };
    format!(
        "{done:>4} of {total} {word:<5} {:<50} {} [{:.2}s]",
        short_name(&result.unique_id),
        result.message.as_deref().unwrap_or_default(),
        result.execution_time
    )
}
