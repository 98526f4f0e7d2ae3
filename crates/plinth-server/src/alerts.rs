//! Alert routes, for any secret key (creating needs analyst or admin):
//!
//! - `GET /api/v1/alerts`: `[{"name", "definition", "points"}]` by name,
//!   `points` being the flagged points (newest first) with their
//!   contributing breakdown values, as POSTed to the webhook;
//! - `POST /api/v1/alerts`: a definition as YAML or JSON (the schema of
//!   `plinth_alerts::definition`); creates or replaces it by name and
//!   answers 201 `{"name"}`, or 400 naming what is wrong; the server's
//!   scheduler evaluates it at once;
//! - `GET /api/v1/alerts/{name}/deliveries`: every webhook attempt, oldest
//!   first: `{"bucket", "attempt", "url", "status", "error", "delivered", "at"}`.
//!
//! Definitions, points and the delivery log live in the catalog.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use plinth_alerts::{AlertDefinition, CATALOG_KIND};
use plinth_catalog::Role;
use serde_json::{Value, json};

use crate::{ApiError, AppState, User};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/alerts", get(list).post(create))
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

async fn deliveries(
    State(state): State<AppState>,
    _user: User,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if state
        .catalog
        .definition(CATALOG_KIND, &name)
        .map_err(internal)?
        .is_none()
    {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no alert named {name:?}"),
        ));
    }
    let log = state.catalog.deliveries(&name).map_err(internal)?;
    Ok(Json(Value::Array(
        log.into_iter()
            .map(|d| {
                json!({"bucket": d.bucket, "attempt": d.attempt, "url": d.url, "status": d.status,
                       "error": d.error, "delivered": d.delivered, "at": d.at})
            })
            .collect(),
    )))
}
