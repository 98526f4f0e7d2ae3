//! Pipelines over HTTP: the project `plinth serve --project DIR` runs, on a
//! schedule and on request, with its run history, catalog and lineage.
//!
//! Routes (any secret key unless said otherwise):
//! - `GET /api/v1/catalog`: descriptions, owners, tags, columns (with the
//!   built relation's types) and tests of every model, seed, snapshot and
//!   source (`plinth_runner::catalog`);
//! - `GET /api/v1/lineage`: the column lineage graph, `{"edges": [{"from",
//!   "to"}], "unplanned": {...}}`;
//! - `POST /api/v1/pipelines/run` (admin): `{"command": "build" | "run" |
//!   "test" | "seed", "select": [...], "exclude": [...], "full_refresh":
//!   bool, "vars": "YAML", "store_failures": bool}`, all optional (a full
//!   build by default); answers the finished run, 409 while another run is
//!   under way;
//! - `GET /api/v1/pipelines/runs`: the run history, newest first.
//!
//! One run at a time; each run is appended to `pipeline_runs.jsonl` in the
//! data directory, so the history outlives the server.

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use plinth_catalog::Role;
use plinth_engine::Engine;
use plinth_runner::{Command, ProjectRun, load_project, run_project};
use plinth_warehouse::Warehouse;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{ApiError, AppState, User};

/// Runs kept in memory for `GET /api/v1/pipelines/runs`.
const KEPT_RUNS: usize = 100;
const HISTORY_FILE: &str = "pipeline_runs.jsonl";

/// One finished run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    /// `schedule` or `api`.
    pub trigger: String,
    pub command: String,
    pub started_at: String,
    pub elapsed_seconds: f64,
    /// The warehouse version the run published.
    pub published: Option<u64>,
    pub failed: bool,
    /// Why the run could not start or finish (project errors, I/O).
    pub error: Option<String>,
    /// `[{unique_id, status, message, failures, execution_time}]`.
    pub results: Vec<Value>,
}

/// The project a server runs, and its history.
pub struct PipelineService {
    engine: Engine,
    warehouse: Warehouse,
    project_dir: PathBuf,
    history_path: PathBuf,
    running: tokio::sync::Mutex<()>,
    history: Mutex<VecDeque<RunRecord>>,
}

/// The body of `POST /api/v1/pipelines/run`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunBody {
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default)]
    pub select: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub full_refresh: bool,
    /// `--vars`, YAML or JSON text.
    #[serde(default)]
    pub vars: Option<String>,
    #[serde(default)]
    pub store_failures: bool,
}

impl PipelineService {
    /// `warehouse` must be open for writing by this process (the server
    /// holds the data directory's writer lock).
    pub fn new(engine: Engine, warehouse: Warehouse, project_dir: PathBuf) -> PipelineService {
        let history_path = engine.store().root().join(HISTORY_FILE);
        let history = std::fs::read_to_string(&history_path)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<RunRecord>(line).ok())
            .collect::<Vec<_>>();
        let kept = history.into_iter().rev().take(KEPT_RUNS).collect();
        PipelineService {
            engine,
            warehouse,
            project_dir,
            history_path,
            running: tokio::sync::Mutex::new(()),
            history: Mutex::new(kept),
        }
    }

    /// Runs the project now; 409 if a run is under way, 400 for an unknown
    /// command. Project errors are part of the record, not an error.
    pub async fn run(&self, trigger: &str, body: RunBody) -> Result<RunRecord, ApiError> {
        let command = match body.command.as_deref().unwrap_or("build") {
            "build" => Command::Build,
            "run" => Command::Run,
            "test" => Command::Test,
            "seed" => Command::Seed,
            other => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("command must be build, run, test or seed, not {other:?}"),
                ));
            }
        };
        let Ok(_running) = self.running.try_lock() else {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "a pipeline run is under way; try again when it is done",
            ));
        };
        let run = ProjectRun {
            command,
            project_dir: self.project_dir.clone(),
            vars: body.vars,
            select: body.select,
            exclude: body.exclude,
            full_refresh: body.full_refresh,
            threads: 4,
            store_failures: body.store_failures,
        };
        let started_at = chrono::Utc::now().to_rfc3339();
        let clock = Instant::now();
        let outcome = run_project(&self.engine, &self.warehouse, &run, &|_| {}).await;
        let mut record = RunRecord {
            trigger: trigger.to_string(),
            command: command.as_str().to_string(),
            started_at,
            elapsed_seconds: 0.0,
            published: None,
            failed: true,
            error: None,
            results: Vec::new(),
        };
        match outcome {
            Ok((outcome, _)) => {
                record.published = outcome.published;
                record.failed = outcome.failed;
                record.results = outcome
                    .results
                    .results
                    .iter()
                    .map(|r| {
                        json!({
                            "unique_id": r.unique_id,
                            "status": r.status,
                            "message": r.message,
                            "failures": r.failures,
                            "execution_time": r.execution_time,
                        })
                    })
                    .collect();
            }
            Err(e) => record.error = Some(format!("{e:#}")),
        }
        record.elapsed_seconds = clock.elapsed().as_secs_f64();
        self.remember(&record);
        Ok(record)
    }

    fn remember(&self, record: &RunRecord) {
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.history_path)
            .and_then(|mut file| {
                let line = serde_json::to_string(record).map_err(std::io::Error::other)?;
                writeln!(file, "{line}")
            });
        if let Err(e) = appended {
            tracing::error!(
                "cannot record the pipeline run in {}: {e}",
                self.history_path.display()
            );
        }
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        history.push_front(record.clone());
        history.truncate(KEPT_RUNS);
    }

    /// Builds the project every `every`, the first time at once.
    pub async fn run_every(self: Arc<Self>, every: Duration) {
        let mut ticker = tokio::time::interval(every);
        loop {
            ticker.tick().await;
            match self.run("schedule", RunBody::default()).await {
                Ok(record) if record.failed => tracing::warn!(
                    "scheduled pipeline run failed: {}",
                    record
                        .error
                        .unwrap_or_else(|| "a test or model failed".to_string())
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!("scheduled pipeline run skipped: {e:?}"),
            }
        }
    }

    fn history(&self) -> Vec<RunRecord> {
        let history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        history.iter().cloned().collect()
    }

    async fn catalog(&self) -> anyhow::Result<Value> {
        let (_, compiled) = load_project(&self.project_dir, None, false, &self.warehouse)?;
        let version = self.warehouse.latest()?;
        plinth_runner::catalog::catalog(&self.engine, &compiled, &version).await
    }

    async fn lineage(&self) -> anyhow::Result<Value> {
        let (_, compiled) = load_project(&self.project_dir, None, false, &self.warehouse)?;
        let graph = plinth_runner::lineage::lineage(&self.engine, &compiled).await?;
        let edges: Vec<Value> = graph
            .upstream
            .iter()
            .flat_map(|(to, sources)| {
                sources
                    .iter()
                    .map(move |from| json!({"from": from.to_string(), "to": to.to_string()}))
            })
            .collect();
        Ok(json!({"edges": edges, "unplanned": graph.unplanned}))
    }
}

/// The pipeline routes; they answer 404 when the server runs no project.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/catalog", get(catalog))
        .route("/api/v1/lineage", get(lineage))
        .route("/api/v1/pipelines/run", post(run))
        .route("/api/v1/pipelines/runs", get(runs))
}

fn service(state: &AppState) -> Result<&Arc<PipelineService>, ApiError> {
    state.pipelines.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "this server runs no pipeline project (start it with plinth serve --project DIR)",
        )
    })
}

fn internal(error: anyhow::Error) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{error:#}"))
}

async fn catalog(State(state): State<AppState>, _user: User) -> Result<Json<Value>, ApiError> {
    Ok(Json(service(&state)?.catalog().await.map_err(internal)?))
}

async fn lineage(State(state): State<AppState>, _user: User) -> Result<Json<Value>, ApiError> {
    Ok(Json(service(&state)?.lineage().await.map_err(internal)?))
}

async fn run(
    State(state): State<AppState>,
    user: User,
    body: axum::body::Bytes,
) -> Result<Json<RunRecord>, ApiError> {
    if user.role != Role::Admin {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "only admins may run pipelines",
        ));
    }
    let body: RunBody = if body.is_empty() {
        RunBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, format!("invalid run request: {e}"))
        })?
    };
    Ok(Json(service(&state)?.run("api", body).await?))
}

async fn runs(State(state): State<AppState>, _user: User) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({"runs": service(&state)?.history()})))
}
