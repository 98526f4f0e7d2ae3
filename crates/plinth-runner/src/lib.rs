//! Running a compiled dbt-compatible project on Plinth: materialise models,
//! seeds and snapshots into the warehouse, run data tests against what was
//! just built, and publish (write-audit-publish).
//!
//! Nodes run as soon as everything they depend on is done, at most
//! `threads` at a time. A node reads the *staged* state: the published
//! version plus what this run built so far, registered in its own DataFusion
//! session ([`plinth_engine::Engine::session`]). Ephemeral models are
//! already inlined by compilation and never run.
//!
//! What each command publishes:
//! - `build` (seeds, models, snapshots, tests): everything, in one version,
//!   only if no node errored and no error-severity test failed; otherwise
//!   production stays as it was (only stored test failures are published,
//!   under `dbt_test__audit.<test>`). As in `dbt build`, a node waits for
//!   the tests of its ancestors and is skipped when one of them fails.
//! - `run` (models) and `seed` (seeds): every node that succeeded, as dbt
//!   keeps what succeeded; a failure skips the nodes downstream of it.
//! - `test` (tests, against production): only stored failures.
//!
//! Sources with dbt-duckdb's `meta.external_location` are staged as
//! relations over those files, and published with the run.
//!
//! `build` and `test` also run the unit tests of the selected models, once
//! the model's inputs are built and before the model; a model whose unit
//! test fails is not built (nor anything downstream).
//!
//! Beside runs: the catalog of a project over the warehouse ([`catalog`]),
//! column lineage from DataFusion logical plans ([`lineage`]) and source
//! freshness ([`freshness`]).
//!
//! This crate owns no storage format and no SQL dialect: relations are the
//! warehouse's, SQL is DataFusion's (with `plinth_warehouse::dialect`
//! applied to pipeline plans), projects are `plinth-pipelines`'.

pub mod catalog;
pub mod freshness;
pub mod lineage;
mod materialize;
mod project_run;
mod schedule;
mod snapshot;
mod unit_tests;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use plinth_engine::Engine;
use plinth_pipelines::{
    CompiledProject, NodeId, ResourceType, RunResult, RunResults, RunStatus, TimingInfo, UnitTest,
    utc_timestamp_now,
};
use plinth_warehouse::{Relation, Version, Warehouse};
use serde_json::{Value, json};

pub use project_run::{ProjectRun, load_project, run_project};
pub use schedule::Command;

/// The schema that holds the failing rows of tests with `store_failures`.
pub const AUDIT_SCHEMA: &str = "dbt_test__audit";

/// What to run.
pub struct RunRequest<'a> {
    pub command: Command,
    pub compiled: &'a CompiledProject,
    /// The same project compiled as if nothing were built yet
    /// (`is_incremental()` false) and with ephemeral models left as
    /// relations to fake, for unit tests; `compiled` when `None`.
    pub unbuilt: Option<&'a CompiledProject>,
    /// The project folder (seeds are read from it).
    pub project_root: PathBuf,
    /// Nodes chosen by `--select` / `--exclude`.
    pub selected: BTreeSet<NodeId>,
    /// Nodes running at once.
    pub threads: usize,
    /// `--store-failures`: store every test's failing rows.
    pub store_failures: bool,
    /// The invocation's arguments, as `run_results.json` records them.
    pub args: Value,
}

/// A node that started or finished, for progress lines.
pub enum Progress<'a> {
    Started {
        id: &'a str,
    },
    Finished {
        result: &'a RunResult,
        /// How many nodes finished so far, and how many will run.
        done: usize,
        total: usize,
    },
}

/// What a run did.
pub struct Outcome {
    pub results: RunResults,
    /// The warehouse version this run published, if it published one (when
    /// `failed` after a build, or after `test`, it holds only stored test
    /// failures).
    pub published: Option<u64>,
    /// True when something errored or an error-severity test failed.
    pub failed: bool,
}

impl Outcome {
    /// The tests that failed with severity error, and the nodes that errored.
    pub fn failures(&self) -> Vec<&RunResult> {
        self.results
            .results
            .iter()
            .filter(|r| is_failure(r.status))
            .collect()
    }
}

fn is_failure(status: RunStatus) -> bool {
    matches!(
        status,
        RunStatus::Error | RunStatus::Fail | RunStatus::RuntimeError
    )
}

/// What one node produced.
pub(crate) struct NodeResult {
    pub status: RunStatus,
    pub message: String,
    pub failures: Option<u64>,
    pub rows: Option<u64>,
    /// The node's relation, to stage.
    pub relation: Option<(String, Relation)>,
    /// Stored test failures, to stage under [`AUDIT_SCHEMA`].
    pub audit: Option<(String, Relation)>,
}

impl NodeResult {
    pub(crate) fn error(message: String) -> NodeResult {
        NodeResult {
            status: RunStatus::Error,
            message,
            failures: None,
            rows: None,
            relation: None,
            audit: None,
        }
    }
}

/// Runs `request` and publishes what its command publishes (see the module
/// documentation). Errors only for failures of the warehouse itself; a
/// failing node is a result, not an error.
pub async fn execute(
    engine: &Engine,
    warehouse: &Warehouse,
    request: &RunRequest<'_>,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Outcome> {
    let started = Instant::now();
    let base = warehouse.latest()?;
    let plan = schedule::Plan::new(request.compiled, &request.selected, request.command);
    let total = plan.nodes.len();
    let mut staged = base.relations.clone();
    staged.extend(external_sources(request.compiled, &request.project_root));
    let mut audits: BTreeMap<String, Relation> = BTreeMap::new();
    let mut statuses: BTreeMap<&NodeId, RunStatus> = BTreeMap::new();
    let mut results = Vec::with_capacity(total);
    let mut waiting: BTreeSet<&NodeId> = plan.nodes.iter().collect();
    let mut running = FuturesUnordered::new();
    let threads = request.threads.max(1);

    while !waiting.is_empty() || !running.is_empty() {
        // Start (or skip) every node whose dependencies are done.
        let ready: Vec<&NodeId> = waiting
            .iter()
            .copied()
            .filter(|id| plan.deps[*id].iter().all(|d| statuses.contains_key(d)))
            .collect();
        for id in ready {
            if running.len() >= threads {
                break;
            }
            waiting.remove(id);
            let blocked_by = plan.deps[id]
                .iter()
                .find(|d| is_failure(statuses[d]) || statuses[d] == RunStatus::Skipped);
            if let Some(blocker) = blocked_by {
                let result = NodeResult {
                    status: RunStatus::Skipped,
                    message: format!("skipped: {blocker} did not succeed"),
                    failures: None,
                    rows: None,
                    relation: None,
                    audit: None,
                };
                let record = record(request, id, result, utc_timestamp_now(), 0.0);
                statuses.insert(id, record.status);
                results.push(record);
                progress(Progress::Finished {
                    result: results.last().expect("pushed"),
                    done: results.len(),
                    total,
                });
                continue;
            }
            progress(Progress::Started { id });
            let version = Version {
                relations: staged.clone(),
                ..base.clone()
            };
            running.push(run_node(engine, warehouse, request, id, version));
        }
        let Some((id, result, started_at, seconds)) = running.next().await else {
            continue;
        };
        if let Some((name, relation)) = &result.relation
            && result.status == RunStatus::Success
        {
            staged.insert(name.clone(), relation.clone());
        }
        if let Some((name, relation)) = &result.audit {
            audits.insert(name.clone(), relation.clone());
        }
        let record = record(request, id, result, started_at, seconds);
        statuses.insert(id, record.status);
        results.push(record);
        progress(Progress::Finished {
            result: results.last().expect("pushed"),
            done: results.len(),
            total,
        });
    }

    let failed = results.iter().any(|r| is_failure(r.status));
    let mut to_publish = match request.command {
        Command::Build if failed => base.relations.clone(),
        Command::Test => base.relations.clone(),
        Command::Build | Command::Run | Command::Seed => staged,
    };
    to_publish.extend(audits);
    let published = if to_publish != base.relations {
        let operation = match (request.command, failed) {
            (Command::Build, true) | (Command::Test, _) => "store test failures",
            (command, _) => command.as_str(),
        };
        Some(warehouse.publish(&base, to_publish, operation)?.version)
    } else {
        None
    };
    Ok(Outcome {
        results: RunResults {
            results,
            elapsed_time: started.elapsed().as_secs_f64(),
            args: request.args.clone(),
            invocation_id: request.compiled.invocation_id.clone(),
        },
        published,
        failed,
    })
}

/// dbt-duckdb's sources with `meta.external_location`, as relations read in
/// place: `{name}` and `{identifier}` in the location are the table's; a
/// location written as a DuckDB call (`read_csv('data/x.csv', ...)`) means
/// its first quoted string; relative paths are from the project folder.
fn external_sources(compiled: &CompiledProject, root: &Path) -> BTreeMap<String, Relation> {
    compiled
        .sources
        .values()
        .filter_map(|source| {
            let template = source.meta.get("external_location")?.as_str()?;
            let text = template
                .replace("{name}", &source.name)
                .replace("{identifier}", &source.identifier);
            let path = match text.split('\'').nth(1) {
                Some(quoted) if text.contains('(') => quoted.to_string(),
                _ => text.trim().trim_matches('\'').to_string(),
            };
            // Absolute, so that later queries find it from any folder.
            let path = std::path::absolute(root.join(path)).ok()?;
            Some((
                source.identifier.clone(),
                Relation::External {
                    location: path.to_string_lossy().into_owned(),
                },
            ))
        })
        .collect()
}

async fn run_node<'a>(
    engine: &Engine,
    warehouse: &Warehouse,
    request: &RunRequest<'_>,
    id: &'a NodeId,
    staged: Version,
) -> (&'a NodeId, NodeResult, String, f64) {
    let started_at = utc_timestamp_now();
    let clock = Instant::now();
    if let Some(unit) = request.compiled.unit_tests.get(id) {
        let result = run_unit_test(engine, request, unit, &staged).await;
        return (id, result, started_at, clock.elapsed().as_secs_f64());
    }
    let node = &request.compiled.nodes[id];
    let result = match engine.session(Some(&staged)).await {
        Err(e) => NodeResult::error(e.to_string()),
        Ok(ctx) => {
            let work = materialize::Work {
                ctx: &ctx,
                warehouse,
                node,
                staged: &staged,
                project_root: &request.project_root,
                run_started_at: &request.compiled.run_started_at,
            };
            let outcome = match node.node.resource_type {
                ResourceType::Test => {
                    materialize::data_test(
                        &work,
                        request.store_failures || node.node.config.store_failures == Some(true),
                    )
                    .await
                }
                ResourceType::Seed => materialize::seed(&work).await,
                ResourceType::Snapshot => snapshot::snapshot(&work).await,
                ResourceType::Model => materialize::model(&work).await,
            };
            let hooks = node.pre_hooks.len() + node.post_hooks.len();
            outcome
                .map(|mut result| {
                    // Hooks are warehouse statements (grants, indexes) that
                    // Plinth's warehouse has no use for; say so rather than
                    // fail the node.
                    if hooks > 0 {
                        result
                            .message
                            .push_str(&format!(" ({hooks} hooks not run)"));
                    }
                    result
                })
                .unwrap_or_else(|e| {
                    let mut result = NodeResult::error(one_line(&e));
                    if node.node.resource_type == ResourceType::Test {
                        result.status = RunStatus::RuntimeError;
                    }
                    result
                })
        }
    };
    (id, result, started_at, clock.elapsed().as_secs_f64())
}

async fn run_unit_test(
    engine: &Engine,
    request: &RunRequest<'_>,
    unit: &UnitTest,
    staged: &Version,
) -> NodeResult {
    let incremental = unit
        .overrides
        .as_ref()
        .and_then(|o| o.pointer("/macros/is_incremental"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let (compiled, ephemerals_replaceable) = match request.unbuilt {
        Some(unbuilt) if !incremental => (unbuilt, true),
        _ => (request.compiled, false),
    };
    let Some(model) = compiled.nodes.get(&unit.model) else {
        return NodeResult::error(format!(
            "{} tests {}, which is not enabled",
            unit.unique_id, unit.model
        ));
    };
    let outcome = match engine.session(Some(staged)).await {
        Ok(ctx) => {
            unit_tests::unit_test(
                &ctx,
                request.compiled,
                unit,
                &model.compiled_sql,
                ephemerals_replaceable,
            )
            .await
        }
        Err(e) => Err(e.into()),
    };
    outcome.unwrap_or_else(|e| NodeResult {
        status: RunStatus::RuntimeError,
        ..NodeResult::error(one_line(&e))
    })
}

/// An error and its causes on one line, each cause once (DataFusion's
/// messages already include their sources).
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn record(
    request: &RunRequest<'_>,
    id: &NodeId,
    result: NodeResult,
    started_at: String,
    seconds: f64,
) -> RunResult {
    // Unit tests are not nodes: no rows, SQL or relation of their own.
    let (adapter_response, compiled, compiled_code, relation_name) =
        match request.compiled.nodes.get(id) {
            Some(node) if !request.compiled.unit_tests.contains_key(id) => (
                match result.rows {
                    Some(rows) => json!({"rows_affected": rows}),
                    None => json!({}),
                },
                node.node.resource_type != ResourceType::Seed,
                (!node.compiled_sql.is_empty()).then(|| node.compiled_sql.clone()),
                node.relation_name(),
            ),
            _ => (json!({}), true, None, None),
        };
    RunResult {
        unique_id: id.clone(),
        status: result.status,
        timing: vec![TimingInfo {
            name: "execute".to_string(),
            started_at,
            completed_at: utc_timestamp_now(),
        }],
        thread_id: "Thread-1".to_string(),
        execution_time: seconds,
        message: Some(result.message),
        failures: result.failures,
        adapter_response,
        compiled,
        compiled_code,
        relation_name,
    }
}
