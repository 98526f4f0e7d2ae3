//! Experiments for Plinth: definitions, and their results computed from raw
//! events.
//!
//! An experiment ([`ExperimentDefinition`], YAML or JSON) names a feature
//! flag, its variants and planned weights, the exposure event, a window,
//! and primary metrics, secondary metrics and guardrails. [`results`] turns
//! it into one DataFusion query over `events` ([`query`]): first exposure
//! per person, persons served several variants set aside and counted, and
//! per variant the sufficient statistics of every metric (and of each
//! metric's pre-exposure value for CUPED). [`analysis`] hands those sums to
//! `plinth-stats`: lifts with intervals, p-values (sequential when enabled),
//! chance to win, the sample ratio check, and warnings.
//!
//! Definitions come from the catalog (created through the API or
//! `plinth experiment create`) or from files in `<data>/experiments/`
//! ([`files`]), which win over stored ones of the same name.
//!
//! This crate owns what an experiment means and how its numbers come out of
//! events. It must never depend on HTTP, the catalog or the CLI: callers
//! load definitions (the catalog stores them as [`ExperimentDefinition::to_json`])
//! and present the [`ExperimentResults`].

pub mod analysis;
pub mod definition;
pub mod files;
mod flag_json;
mod persons;
pub mod query;

pub use analysis::{ExperimentResults, analyze};
pub use definition::{DefinitionError, Experiment, ExperimentDefinition, MultipleTesting};
pub use files::{DefinitionFile, DefinitionFiles, FileError};
pub use query::QueryPlan;

use plinth_engine::{Engine, QueryError};

/// Why results could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(transparent)]
    Stats(#[from] plinth_stats::StatsError),
}

/// The results of `experiment` over the engine's events, as of `now_micros`
/// (UTC microseconds; it decides whether the experiment is still running).
pub async fn results(
    engine: &Engine,
    experiment: &Experiment,
    now_micros: i64,
) -> Result<ExperimentResults, ResultsError> {
    let plan = QueryPlan::new(experiment);
    let sums = plan.run(engine, experiment).await?;
    Ok(analyze(experiment, &plan, &sums, now_micros)?)
}

/// The kind under which the catalog stores experiment definitions.
pub const CATALOG_KIND: &str = "experiment";
