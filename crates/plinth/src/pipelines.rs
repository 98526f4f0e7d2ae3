//! `plinth compile` and `plinth ls`: dbt-compatible projects, parsed,
//! rendered and selected. Running models on the store comes next.

use std::collections::HashSet;
use std::time::Instant;

use anyhow::Result;
use plinth_pipelines::{
    CompileContext, LoadOptions, Project, compile, parse_cli_vars, select, write_manifest,
};

use crate::cli::ProjectArgs;

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
