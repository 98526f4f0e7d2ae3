//! Experiment routes, for any secret key (creating needs analyst or admin):
//!
//! - `GET /api/v1/experiments`: `[{"name", "definition"}]`, by name;
//! - `POST /api/v1/experiments`: a definition as YAML or JSON (the schema
//!   of `plinth_experiments::definition`); creates or replaces it by name,
//!   answers 201 `{"name"}`, or 400 naming what is wrong;
//! - `GET /api/v1/experiments/{name}`: the definition;
//! - `GET /api/v1/experiments/{name}/results`: the results, the same JSON
//!   as `plinth experiment results NAME --format json`.
//!
//! Definitions live in the catalog under `plinth_experiments::CATALOG_KIND`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use plinth_catalog::Role;
use plinth_experiments::{CATALOG_KIND, Experiment, ExperimentDefinition, ResultsError};
use serde_json::{Value, json};

use crate::{ApiError, AppState, User};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/experiments", get(list).post(create))
        .route("/api/v1/experiments/{name}", get(definition))
        .route("/api/v1/experiments/{name}/results", get(results))
}

fn internal(error: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
}

/// A stored definition; stored ones were validated, so a failure is ours.
fn parse_stored(body: &str) -> Result<Experiment, ApiError> {
    ExperimentDefinition::parse(body).map_err(internal)
}

fn load(state: &AppState, name: &str) -> Result<Experiment, ApiError> {
    match state
        .catalog
        .definition(CATALOG_KIND, name)
        .map_err(internal)?
    {
        Some(body) => parse_stored(&body),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no experiment named {name:?}"),
        )),
    }
}

async fn list(State(state): State<AppState>, _user: User) -> Result<Json<Value>, ApiError> {
    let mut experiments = Vec::new();
    for (name, body) in state.catalog.definitions(CATALOG_KIND).map_err(internal)? {
        let experiment = parse_stored(&body)?;
        experiments.push(json!({"name": name, "definition": experiment.definition}));
    }
    Ok(Json(Value::Array(experiments)))
}

async fn create(
    State(state): State<AppState>,
    user: User,
    body: String,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    user.require(Role::Analyst, "creating experiments")?;
    let experiment = ExperimentDefinition::parse(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let name = &experiment.definition.name;
    state
        .catalog
        .put_definition(CATALOG_KIND, name, &experiment.definition.to_json())
        .map_err(internal)?;
    Ok((StatusCode::CREATED, Json(json!({"name": name}))))
}

async fn definition(
    State(state): State<AppState>,
    _user: User,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let experiment = load(&state, &name)?;
    Ok(Json(json!(experiment.definition)))
}

async fn results(
    State(state): State<AppState>,
    _user: User,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let experiment = load(&state, &name)?;
    let now = chrono::Utc::now().timestamp_micros();
    let results = plinth_experiments::results(&state.engine, &experiment, now)
        .await
        .map_err(|e| match e {
            ResultsError::Query(e) => ApiError::from(e),
            ResultsError::Stats(e) => internal(e),
        })?;
    Ok(Json(json!(results)))
}
