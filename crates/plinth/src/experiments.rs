//! `plinth experiment`: store experiment definitions in the catalog, list
//! and delete them, and compute an experiment's results from the events.
//! Definitions in files of `DIR/experiments/` count too, and win over
//! stored ones of the same name (`plinth_experiments::files`).

use std::fmt::Write;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use plinth_catalog::Catalog;
use plinth_engine::Engine;
use plinth_experiments::analysis::{Comparison, MetricResult};
use plinth_experiments::{
    CATALOG_KIND, DefinitionFiles, Experiment, ExperimentDefinition, ExperimentResults,
    MultipleTesting,
};
use plinth_store::{Mode, Store};

use crate::cli::{ExperimentCommand, ResultsFormat};

/// Fails when a file defines `name`: it is the file's to change.
fn refuse_file(files: &DefinitionFiles, name: &str, doing: &str) -> Result<()> {
    if let Some(path) = files.path_of(name) {
        bail!(
            "experiment {name:?} is defined by the file {}, which `plinth experiment {doing}` cannot change; edit or remove the file instead (files in that directory are read on every use, no `create` needed)",
            path.display()
        );
    }
    Ok(())
}

/// Says on stderr which files are broken, so that none is dropped in silence.
fn warn_broken(files: &DefinitionFiles) {
    if let Err(broken) = files.check() {
        eprintln!("warning: {broken}");
    }
}

pub fn run(command: ExperimentCommand) -> Result<()> {
    match command {
        ExperimentCommand::Create { data, file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let experiment = ExperimentDefinition::parse(&text)?;
            let name = &experiment.definition.name;
            refuse_file(&DefinitionFiles::load(&data.dir)?, name, "create")?;
            let catalog = Catalog::open(&data.dir)?;
            catalog.put_definition(CATALOG_KIND, name, &experiment.definition.to_json())?;
            println!("saved experiment {name}");
            Ok(())
        }
        ExperimentCommand::List { data } => {
            let files = DefinitionFiles::load(&data.dir)?;
            let catalog = Catalog::open(&data.dir)?;
            let stored = catalog.definitions(CATALOG_KIND)?;
            let mut lines = Vec::new();
            for (name, file) in files.iter() {
                if let Ok(file) = file {
                    let mut source = format!("file {}", file.path.display());
                    if stored.iter().any(|(n, _)| n == name) {
                        source.push_str(" (shadows the stored definition)");
                    }
                    lines.push((name.to_string(), line(&file.experiment, &source)));
                }
            }
            for (name, body) in stored {
                if files.get(&name).is_none() {
                    let experiment = ExperimentDefinition::parse(&body)?;
                    lines.push((name, line(&experiment, "stored")));
                }
            }
            lines.sort();
            for (_, line) in lines {
                println!("{line}");
            }
            files.check()?;
            Ok(())
        }
        ExperimentCommand::Delete { data, name } => {
            refuse_file(&DefinitionFiles::load(&data.dir)?, &name, "delete")?;
            if !Catalog::open(&data.dir)?.delete_definition(CATALOG_KIND, &name)? {
                bail!("no experiment named {name:?} in {}", data.dir.display());
            }
            println!("deleted experiment {name}");
            Ok(())
        }
        ExperimentCommand::Results {
            data,
            name,
            format,
            limits,
        } => {
            let files = DefinitionFiles::load(&data.dir)?;
            let experiment = match files.get(&name) {
                Some(Ok(file)) => {
                    warn_broken(&files);
                    file.experiment.clone()
                }
                Some(Err(errors)) => {
                    let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
                    bail!("experiment {name:?} cannot be read: {}", errors.join("; "));
                }
                None => {
                    warn_broken(&files);
                    stored(&data.dir, &name)?
                }
            };
            if let Some(holder) = Store::writer(&data.dir) {
                eprintln!(
                    "note: {} is open by {}; these results read what it has published, \
                     not its last few seconds of buffered events (GET /api/v1/experiments/{name}/results sees those)",
                    data.dir.display(),
                    holder.trim()
                );
            }
            let store = Arc::new(Store::open(&data.dir, Mode::Reader, "plinth experiment")?);
            let engine = Engine::new(store, limits.limits());
            let runtime = tokio::runtime::Runtime::new()?;
            let now = chrono::Utc::now().timestamp_micros();
            let results =
                runtime.block_on(plinth_experiments::results(&engine, &experiment, now))?;
            match format {
                ResultsFormat::Json => println!("{}", serde_json::to_string_pretty(&results)?),
                ResultsFormat::Table => print!("{}", table(&results)),
            }
            Ok(())
        }
    }
}

/// The stored experiment `name`.
fn stored(dir: &std::path::Path, name: &str) -> Result<Experiment> {
    let catalog = Catalog::open(dir)?;
    let Some(body) = catalog.definition(CATALOG_KIND, name)? else {
        bail!(
            "no experiment named {name:?} in {}; create one with `plinth experiment create FILE.yml`, or put the file in {}",
            dir.display(),
            dir.join(plinth_experiments::files::DIRECTORY).display()
        );
    };
    Ok(ExperimentDefinition::parse(&body)?)
}

/// One line of `plinth experiment list`.
fn line(experiment: &Experiment, source: &str) -> String {
    let definition = &experiment.definition;
    format!(
        "{}\tflag {}\tvariants {}\t{} to {}\t{source}",
        definition.name,
        definition.flag,
        definition.variants.join(", "),
        definition.start.as_deref().unwrap_or("(any time)"),
        definition.end.as_deref().unwrap_or("(running)"),
    )
}

fn percent(value: f64) -> String {
    format!("{:+.1}%", value * 100.0)
}

/// The results for a terminal: units and the sample ratio check, then one
/// block per metric, then the warnings.
fn table(results: &ExperimentResults) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "experiment {} (flag {}), control {}",
        results.experiment, results.flag, results.control
    );
    let _ = writeln!(
        out,
        "\n{:<24} {:>10} {:>8} {:>9}",
        "variant", "units", "share", "planned"
    );
    for v in &results.variants {
        let _ = writeln!(
            out,
            "{:<24} {:>10} {:>7.1}% {:>8.1}%",
            v.variant,
            v.units,
            v.observed_share * 100.0,
            v.expected_share * 100.0
        );
    }
    let srm = match results.srm.p_value {
        Some(p) if results.srm.mismatch => format!("MISMATCH (p = {p:.2e})"),
        Some(p) => format!("ok (p = {p:.3})"),
        None => "no units".into(),
    };
    let _ = writeln!(
        out,
        "persons served several variants (excluded): {}\nsample ratio check: {srm}",
        results.multiple_variant_persons
    );
    let test = match results.sequential_tuning {
        Some(tuning) => format!("sequential (N* = {tuning})"),
        None => "t-test".into(),
    };
    let _ = writeln!(
        out,
        "test: {test}, {:.0}% intervals{}",
        (1.0 - results.alpha) * 100.0,
        if results.cuped { ", CUPED" } else { "" }
    );
    let corrected = results.multiple_testing.is_some();
    if let Some(correction) = &results.multiple_testing {
        let method = match correction.method {
            MultipleTesting::Holm => "Holm-Bonferroni",
            MultipleTesting::Bh => "Benjamini-Hochberg",
            MultipleTesting::None => "none",
        };
        let _ = writeln!(
            out,
            "multiple testing: {method} over {} comparisons (primary and secondary metrics, each treatment); \
             guardrails uncorrected; adjusted intervals at {:.2}%",
            correction.comparisons,
            (1.0 - correction.interval_alpha) * 100.0
        );
    }
    let _ = write!(
        out,
        "\n{:<28} {:<10} {:<16} {:>12} {:>9} {:>20} {:>8}",
        "metric", "role", "variant", "mean", "lift", "interval", "p-value"
    );
    if corrected {
        let _ = write!(out, " {:>8} {:>20}", "adj. p", "adj. interval");
    }
    let _ = writeln!(out, " {:>8}", "win");
    for metric in &results.metrics {
        metric_rows(&mut out, metric, corrected);
    }
    if !results.warnings.is_empty() {
        let _ = writeln!(out, "\nwarnings:");
        for warning in &results.warnings {
            let _ = writeln!(out, "  [{}] {}", warning.code, warning.message);
        }
    }
    out
}

fn interval(ci: [f64; 2]) -> String {
    format!("[{}, {}]", percent(ci[0]), percent(ci[1]))
}

fn metric_rows(out: &mut String, metric: &MetricResult, corrected: bool) {
    let role = serde_json::to_value(metric.role)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    for (i, variant) in metric.variants.iter().enumerate() {
        let (name, role) = if i == 0 {
            (metric.name.as_str(), role.as_str())
        } else {
            ("", "")
        };
        let comparison: Option<&Comparison> = metric
            .comparisons
            .iter()
            .find(|c| c.variant == variant.variant);
        let _ = write!(
            out,
            "{name:<28} {role:<10} {:<16} {:>12.4}",
            variant.variant, variant.mean
        );
        if let Some(c) = comparison {
            let _ = write!(
                out,
                " {:>9} {:>20} {:>8.4}",
                percent(c.lift),
                interval(c.ci),
                c.p_value
            );
            if corrected {
                match (c.p_value_adjusted, c.ci_adjusted) {
                    (Some(p), Some(ci)) => {
                        let _ = write!(out, " {p:>8.4} {:>20}", interval(ci));
                    }
                    _ => {
                        let _ = write!(out, " {:>8} {:>20}", "-", "-");
                    }
                }
            }
            let _ = write!(
                out,
                " {:>7.1}%{}",
                c.chance_to_win * 100.0,
                if c.significant { "  significant" } else { "" }
            );
        }
        let _ = writeln!(out);
        if let Some(cuped) = comparison.and_then(|c| c.cuped.as_ref()) {
            let _ = writeln!(
                out,
                "{:<56} CUPED: theta {:.4}, variance reduced {:.1}%",
                "",
                cuped.theta,
                cuped.variance_reduction * 100.0
            );
        }
    }
}
