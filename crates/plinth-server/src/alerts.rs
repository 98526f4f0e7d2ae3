//! Alert routes, for any secret key (creating and deleting need analyst or
//! admin):
//!
//! - `GET /api/v1/alerts`: `[{"name", "definition", "points"}]` by name,
//!   `points` being the flagged points (newest first) with their
//!   contributing breakdown values, as POSTed to the webhook;
//! - `POST /api/v1/alerts`: a definition as YAML or JSON (the schema of
//!   `plinth_alerts::definition`); creates or replaces it by name and
//!   answers 201 `{"name"}`, or 400 naming what is wrong; the server's
//!   scheduler evaluates it at once;
//! - `DELETE /api/v1/alerts/{name}` (analyst or admin): deletes the
//!   definition and answers 200 `{"name", "deleted": true, "kept":
//!   {"points", "deliveries"}}`, or 404 when there is no such alert;
//! - `GET /api/v1/alerts/{name}/deliveries`: every webhook attempt, oldest
//!   first: `{"bucket", "attempt", "url", "status", "error", "delivered", "at"}`;
//!   for a deleted alert too, as long as it has a history.
//!
//! Definitions, points and the delivery log live in the catalog.
//!
//! Deleting an alert stops it: the scheduler of a running server reads the
//! definitions every second and drops the ones that are gone, so it is
//! not evaluated again and its undelivered points are not resumed after a
//! restart. (An evaluation already running, or a delivery already
//! retrying, finishes.) Its history, the points it flagged and the
//! delivery log, is kept: it is the record of who was told what and when,
//! it stays readable at `/api/v1/alerts/{name}/deliveries`, and an alert
//! created again under the same name takes it up, so that it does not
//! notify again a bucket already notified.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use plinth_alerts::{AlertDefinition, CATALOG_KIND};
use plinth_catalog::Role;
use serde_json::{Value, json};

use crate::{ApiError, AppState, User};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/alerts", get(list).post(create))
        .route("/api/v1/alerts/{name}", delete(remove))
        .route("/api/v1/alerts/{name}/deliveries", get(deliveries))
}

fn internal(error: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
}

async fn list(State(state): State<AppState>, _user: User) -> Result<Json<Value>, ApiError> {
    let mut alerts = Vec::new();
    for (name, body) in state.catalog.definitions(CATALOG_KIND).map_err(internal)? {
        let definition: Value = serde_json::from_str(&body).map_err(internal)?;
        let points = state
            .catalog
            .alert_points(&name)
            .map_err(internal)?
            .iter()
            .map(|p| serde_json::from_str(p))
            .collect::<Result<Vec<Value>, _>>()
            .map_err(internal)?;
        alerts.push(json!({"name": name, "definition": definition, "points": points}));
    }
    Ok(Json(Value::Array(alerts)))
}

async fn create(
    State(state): State<AppState>,
    user: User,
    body: String,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    user.require(Role::Analyst, "creating alerts")?;
    let alert = AlertDefinition::parse(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    state
        .catalog
        .put_definition(CATALOG_KIND, &alert.name, &alert.to_json())
        .map_err(internal)?;
    Ok((StatusCode::CREATED, Json(json!({"name": alert.name}))))
}

fn not_found(name: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no alert named {name:?}"))
}

async fn remove(
    State(state): State<AppState>,
    user: User,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    user.require(Role::Analyst, "deleting alerts")?;
    if !state
        .catalog
        .delete_definition(CATALOG_KIND, &name)
        .map_err(internal)?
    {
        return Err(not_found(&name));
    }
    let points = state.catalog.alert_points(&name).map_err(internal)?.len();
    let deliveries = state.catalog.deliveries(&name).map_err(internal)?.len();
    Ok(Json(json!({"name": name, "deleted": true,
                   "kept": {"points": points, "deliveries": deliveries}})))
}

async fn deliveries(
    State(state): State<AppState>,
    _user: User,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let log = state.catalog.deliveries(&name).map_err(internal)?;
    let known = !log.is_empty()
        || state
            .catalog
            .definition(CATALOG_KIND, &name)
            .map_err(internal)?
            .is_some()
        || !state
            .catalog
            .alert_points(&name)
            .map_err(internal)?
            .is_empty();
    if !known {
        return Err(not_found(&name));
    }
    Ok(Json(Value::Array(
        log.into_iter()
            .map(|d| {
                json!({"bucket": d.bucket, "attempt": d.attempt, "url": d.url, "status": d.status,
                       "error": d.error, "delivered": d.delivered, "at": d.at})
            })
            .collect(),
    )))
}
