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
use plinth_runner::lineage::ColumnRef;
use plinth_runner::{Command, Progress, ProjectRun, load_project, run_project};
use plinth_store::{Mode, Store};
use plinth_warehouse::Warehouse;

use crate::cli::{DataArg, LineageArgs, ProjectArgs, ProjectDataArgs, RunArgs};

/// Loads and compiles without a data directory: nothing counts as built.
fn load(args: &ProjectArgs) -> Result<(Project, plinth_pipelines::CompiledProject)> {
    let mut options = LoadOptions::default();
    if let Some(vars) = &args.vars {
        options.vars = parse_cli_vars(vars)?;
    }
    let project = Project::load(&args.project, &options)?;
    for warning in &project.warnings {
        eprintln!("warning: {warning}");
    }
    let context = CompileContext {
        existing_relations: HashSet::new(),
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
    let engine = Engine::new(store, plinth_engine::Limits::default());
    let run = ProjectRun {
        command,
        project_dir: args.project.project.clone(),
        vars: args.project.vars.clone(),
        select: args.project.select.clone(),
        exclude: args.project.exclude.clone(),
        full_refresh: args.project.full_refresh,
        threads: args.threads,
        store_failures: args.store_failures,
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
    let outcome = runtime.block_on(run_project(&engine, &warehouse, &run, &report));
    bar.finish_and_clear();
    let (outcome, warnings) = outcome?;
    for warning in warnings {
        eprintln!("warning: {warning}");
    }

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
            Some(version) if outcome.failed && command == Command::Build => {
                format!("published only stored test failures (warehouse version {version})")
            }
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

/// What the read-only project commands (`lineage`, `docs generate`,
/// `source freshness`) share: the compiled project and an engine over the
/// published warehouse, beside a running server if there is one.
struct ProjectReader {
    project: Project,
    compiled: plinth_pipelines::CompiledProject,
    warehouse: Warehouse,
    engine: Engine,
    runtime: tokio::runtime::Runtime,
}

impl ProjectReader {
    fn open(project: &ProjectArgs, data: &DataArg, command: &str) -> Result<ProjectReader> {
        let store = Arc::new(Store::open(&data.dir, Mode::Reader, command)?);
        let warehouse = Warehouse::reader(&data.dir);
        let (project, compiled) =
            load_project(&project.project, project.vars.as_deref(), false, &warehouse)?;
        Ok(ProjectReader {
            project,
            compiled,
            warehouse,
            engine: Engine::new(store, plinth_engine::Limits::default()),
            runtime: tokio::runtime::Runtime::new()?,
        })
    }
}

/// `plinth lineage MODEL.COLUMN`: the columns it is computed from and the
/// columns computed from it, through every model, from DataFusion plans of
/// the project's SQL over the published warehouse.
pub fn lineage_command(args: LineageArgs) -> Result<()> {
    let Some((relation, column)) = args.column.rsplit_once('.') else {
        bail!("give a column as MODEL.COLUMN, e.g. orders.amount");
    };
    let target = ColumnRef {
        relation: relation.to_string(),
        column: column.to_string(),
    };
    let reader = ProjectReader::open(&args.project, &args.data, "plinth lineage")?;
    let graph = reader.runtime.block_on(plinth_runner::lineage::lineage(
        &reader.engine,
        &reader.compiled,
    ))?;
    for (model, why) in &graph.unplanned {
        eprintln!("warning: no lineage for {model}: {why}");
    }
    if !graph.knows(&target) {
        bail!("{target} is not a column of a built model or of anything a model reads");
    }
    let print = |title: &str, columns: Vec<(usize, ColumnRef)>| {
        println!("{title}:");
        if columns.is_empty() {
            println!("  (none)");
        }
        for (depth, column) in columns {
            println!("{}{column}", "  ".repeat(depth));
        }
    };
    print(&format!("upstream of {target}"), graph.ancestors(&target));
    print(
        &format!("downstream of {target}"),
        graph.descendants(&target),
    );
    Ok(())
}

/// `plinth docs generate`: `target/manifest.json` and `target/catalog.json`
/// (the catalog `GET /api/v1/catalog` serves) for the published warehouse.
pub fn docs_generate_command(args: ProjectDataArgs) -> Result<()> {
    let reader = ProjectReader::open(&args.project, &args.data, "plinth docs")?;
    let (project, compiled) = (&reader.project, &reader.compiled);
    let version = reader.warehouse.latest()?;
    let catalog = reader.runtime.block_on(plinth_runner::catalog::catalog(
        &reader.engine,
        compiled,
        &version,
    ))?;
    let target = project.root.join(&project.target_path);
    write_manifest(compiled, &target)?;
    std::fs::write(
        target.join("catalog.json"),
        serde_json::to_vec_pretty(&catalog)?,
    )?;
    eprintln!(
        "wrote {} and {}",
        target.join("manifest.json").display(),
        target.join("catalog.json").display()
    );
    Ok(())
}

/// `plinth source freshness`: one line per source table with a freshness
/// rule, and `target/sources.json`; fails when one is past `error_after`.
pub fn source_freshness_command(args: ProjectDataArgs) -> Result<()> {
    let reader = ProjectReader::open(&args.project, &args.data, "plinth source")?;
    let (project, compiled) = (&reader.project, &reader.compiled);
    let results = reader
        .runtime
        .block_on(plinth_runner::freshness::source_freshness(
            &reader.engine,
            compiled,
        ))?;
    for result in &results {
        println!(
            "{:<5} {} ({})",
            result.status.to_uppercase(),
            result.unique_id,
            result.message
        );
    }
    let target = project.root.join(&project.target_path);
    std::fs::create_dir_all(&target)?;
    std::fs::write(
        target.join("sources.json"),
        serde_json::to_vec_pretty(&serde_json::json!({
            "metadata": {"generated_at": plinth_pipelines::utc_timestamp_now()},
            "results": results,
        }))?,
    )?;
    let stale: Vec<&str> = results
        .iter()
        .filter(|r| r.status == "error" || r.status == "runtime error")
        .map(|r| r.unique_id.as_str())
        .collect();
    if !stale.is_empty() {
        bail!("sources past error_after: {}", stale.join(", "));
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
