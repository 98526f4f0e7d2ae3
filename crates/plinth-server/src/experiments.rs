//! Experiment routes, for any secret key (creating, replacing and deleting
//! need analyst or admin):
//!
//! - `GET /api/v1/experiments`: by name, `[{"name", "source", "definition"}]`;
//!   `source` is `stored` (created through the API or the CLI) or `file`
//!   (then with `path`, and `shadows_stored: true` when a stored definition
//!   of the same name is hidden by it); a broken file is listed with
//!   `error` (its path and line) instead of `definition`;
//! - `POST /api/v1/experiments`: a definition as YAML or JSON (the schema
//!   of `plinth_experiments::definition`); creates or replaces it by name,
//!   answers 201 `{"name"}`, or 400 naming what is wrong;
//! - `PUT /api/v1/experiments/{name}`: the same for that name (the body's
//!   `name` must be it); 201 when created, 200 when replaced;
//! - `DELETE /api/v1/experiments/{name}`: 200 `{"name", "deleted": true}`,
//!   404 when there is no such experiment;
//! - `GET /api/v1/experiments/{name}`: the definition;
//! - `GET /api/v1/experiments/{name}/results`: the results, the same JSON
//!   as `plinth experiment results NAME --format json`.
//!
//! Definitions live in the catalog under `plinth_experiments::CATALOG_KIND`,
//! and in files in `<data>/experiments/` (`plinth_experiments::files`),
//! read again on every request. A file's experiment wins over a stored one
//! of the same name and is read-only here: POST, PUT and DELETE of its name
//! answer 409 naming the file. A broken file answers 500 naming the file
//! and line to whoever asks for its experiment (the server refused to start
//! with it; it was broken since).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use plinth_catalog::Role;
use plinth_experiments::{
    CATALOG_KIND, DefinitionFiles, Experiment, ExperimentDefinition, FileError, ResultsError,
};
use serde_json::{Value, json};

use crate::{ApiError, AppState, User};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/experiments", get(list).post(create))
        .route(
            "/api/v1/experiments/{name}",
            get(definition).put(replace).delete(delete),
        )
        .route("/api/v1/experiments/{name}/results", get(results))
}

fn internal(error: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
}

/// A stored definition; stored ones were validated, so a failure is ours.
fn parse_stored(body: &str) -> Result<Experiment, ApiError> {
    ExperimentDefinition::parse(body).map_err(internal)
}

/// The definition files as they are now.
fn files(state: &AppState) -> Result<DefinitionFiles, ApiError> {
    DefinitionFiles::load(state.engine.store().root()).map_err(internal)
}

fn broken(errors: &[FileError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// 409 when a file defines `name`: the API must not change it.
fn refuse_file(files: &DefinitionFiles, name: &str, doing: &str) -> Result<(), ApiError> {
    match files.path_of(name) {
        Some(path) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "experiment {name:?} is defined by the file {}, which the API cannot {doing}; edit or remove the file instead (it is read again on every request)",
                path.display()
            ),
        )),
        None => Ok(()),
    }
}

fn load(state: &AppState, name: &str) -> Result<Experiment, ApiError> {
    match files(state)?.get(name) {
        Some(Ok(file)) => return Ok(file.experiment.clone()),
        Some(Err(errors)) => return Err(internal(broken(errors))),
        None => {}
    }
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
    let files = files(&state)?;
    let stored = state.catalog.definitions(CATALOG_KIND).map_err(internal)?;
    let mut experiments = Vec::new();
    for (name, file) in files.iter() {
        let shadows = stored.iter().any(|(n, _)| n == name);
        let mut entry = match file {
            Ok(file) => json!({"name": name, "source": "file", "path": file.path,
                               "definition": file.experiment.definition}),
            Err(errors) => json!({"name": name, "source": "file", "path": errors[0].path,
                                  "error": broken(errors)}),
        };
        if shadows {
            entry["shadows_stored"] = json!(true);
        }
        experiments.push((name.to_string(), entry));
    }
    for (name, body) in stored {
        if files.get(&name).is_none() {
            let experiment = parse_stored(&body)?;
            let entry =
                json!({"name": name, "source": "stored", "definition": experiment.definition});
            experiments.push((name, entry));
        }
    }
    experiments.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Json(Value::Array(
        experiments.into_iter().map(|(_, entry)| entry).collect(),
    )))
}

fn parse(body: &str) -> Result<Experiment, ApiError> {
    ExperimentDefinition::parse(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))
}

/// Stores `experiment` unless a file owns its name; returns whether it
/// replaced a stored one.
fn store(state: &AppState, experiment: &Experiment) -> Result<bool, ApiError> {
    let name = &experiment.definition.name;
    refuse_file(&files(state)?, name, "replace")?;
    let existed = state
        .catalog
        .definition(CATALOG_KIND, name)
        .map_err(internal)?
        .is_some();
    state
        .catalog
        .put_definition(CATALOG_KIND, name, &experiment.definition.to_json())
        .map_err(internal)?;
    Ok(existed)
}

async fn create(
    State(state): State<AppState>,
    user: User,
    body: String,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    user.require(Role::Analyst, "creating experiments")?;
    let experiment = parse(&body)?;
    store(&state, &experiment)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"name": experiment.definition.name})),
    ))
}

async fn replace(
    State(state): State<AppState>,
    user: User,
    Path(name): Path<String>,
    body: String,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    user.require(Role::Analyst, "replacing experiments")?;
    refuse_file(&files(&state)?, &name, "replace")?;
    let experiment = parse(&body)?;
    if experiment.definition.name != name {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "the definition is named {:?}, not {name:?} as the URL says",
                experiment.definition.name
            ),
        ));
    }
    let status = if store(&state, &experiment)? {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(json!({"name": name}))))
}

async fn delete(
    State(state): State<AppState>,
    user: User,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    user.require(Role::Analyst, "deleting experiments")?;
    refuse_file(&files(&state)?, &name, "delete")?;
    if !state
        .catalog
        .delete_definition(CATALOG_KIND, &name)
        .map_err(internal)?
    {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no experiment named {name:?}"),
        ));
    }
    Ok(Json(json!({"name": name, "deleted": true})))
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
