//! The HTTP server: the JSON API that the UI, scripts and BI tools use.
//!
//! Routes:
//! - `GET /healthz`: liveness, no key needed;
//! - `GET /metrics`: capture counters in Prometheus' text format, no key
//!   needed (counts only, no data);
//! - `POST /api/v1/query` `{"sql": "..."}` with `Authorization: Bearer
//!   <secret key>`: the result as JSON (`{"columns", "rows"}`), or as an
//!   Arrow IPC stream or CSV when `Accept` asks for
//!   `application/vnd.apache.arrow.stream` or `text/csv`;
//! - `GET /api/v1/tracking-plan/violations`: violations of the tracking
//!   plan per event ([`tracking_plan`]).
//!
//! Errors are JSON `{"error": "..."}` with a status that says whose fault it
//! is: 400 bad SQL, 401 no or wrong key, 403 not allowed, 404 no such
//! experiment or alert, 408 time limit, 409 an experiment that a definition
//! file owns, 413 body too large, 422 memory limit, 500 ours.
//!
//! Capture endpoints (PostHog, Segment) are in [`capture`]; experiment
//! definitions and results in [`experiments`]; alerts in [`alerts`];
//! pipeline runs, the catalog and lineage in [`pipelines`].
//!
//! This crate wires the engine and the catalog to HTTP; it owns no data.

pub mod alerts;
pub mod capture;
pub mod experiments;
pub mod pipelines;
mod tracking_plan;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequestParts, State};
use axum::http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use plinth_catalog::{Catalog, KeyKind, Role};
use plinth_engine::{Engine, Privileges, QueryError, format};
use serde::Deserialize;
use serde_json::json;

/// Largest query request body.
const MAX_QUERY_BODY: usize = 1 << 20;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    pub catalog: Arc<Catalog>,
    /// The durable capture pipeline; `None` answers capture with 503.
    pub capture: Option<Arc<capture::CaptureService>>,
    /// The pipeline project served; `None` answers its routes with 404.
    pub pipelines: Option<Arc<pipelines::PipelineService>>,
}

/// The API routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route(
            "/api/v1/query",
            post(query).layer(DefaultBodyLimit::max(MAX_QUERY_BODY)),
        )
        .route(
            "/api/v1/tracking-plan/violations",
            get(tracking_plan::violations),
        )
        .merge(capture::routes())
        .merge(experiments::routes())
        .merge(alerts::routes())
        .merge(pipelines::routes())
        .with_state(state)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut text = String::new();
    if let Some(capture) = &state.capture {
        let stats = capture.pipeline().stats();
        for (name, help, value) in [
            ("requests", "Capture requests made durable.", stats.requests),
            ("events", "Events stored.", stats.events),
            (
                "duplicates",
                "Events dropped as retries of stored ones.",
                stats.duplicates,
            ),
            (
                "fsyncs",
                "Write-ahead log syncs (one per group commit).",
                stats.fsyncs,
            ),
            ("flushes", "Buffer flushes to Parquet.", stats.flushes),
        ] {
            text.push_str(&format!(
                "# HELP plinth_capture_{name}_total {help}\n\
                 # TYPE plinth_capture_{name}_total counter\n\
                 plinth_capture_{name}_total {value}\n"
            ));
        }
    }
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// An error answered as `{"error": message}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"error": self.message}))).into_response()
    }
}

impl From<QueryError> for ApiError {
    fn from(error: QueryError) -> ApiError {
        let status = match &error {
            QueryError::Invalid(_) => StatusCode::BAD_REQUEST,
            QueryError::Refused(_) => StatusCode::FORBIDDEN,
            QueryError::TimedOut(_) => StatusCode::REQUEST_TIMEOUT,
            QueryError::OutOfMemory { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            QueryError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, error.to_string())
    }
}

/// A caller authenticated by a personal secret key.
pub struct User {
    pub role: Role,
}

impl User {
    /// Refuses (403) a caller whose role is below `least`; `doing` names
    /// the action in the message, e.g. "creating alerts".
    pub fn require(&self, least: Role, doing: &str) -> Result<(), ApiError> {
        if self.role < least {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "{doing} needs a key with the {} role or a higher one",
                    format!("{least:?}").to_lowercase()
                ),
            ));
        }
        Ok(())
    }
}

impl FromRequestParts<AppState> for User {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<User, ApiError> {
        let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, m);
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| unauthorized("missing Authorization: Bearer <secret key>"))?;
        let secret = header
            .strip_prefix("Bearer ")
            .ok_or_else(|| unauthorized("Authorization must be Bearer <secret key>"))?;
        let key = state
            .catalog
            .authenticate(secret.trim())
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
            .ok_or_else(|| unauthorized("invalid or revoked key"))?;
        match key.kind {
            KeyKind::Secret(role) => Ok(User { role }),
            KeyKind::Capture => Err(unauthorized(
                "a project write key can only send events; use a secret key",
            )),
        }
    }
}

#[derive(Deserialize)]
struct QueryRequest {
    sql: String,
}

async fn query(
    State(state): State<AppState>,
    user: User,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let request: QueryRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("body must be JSON {{\"sql\": \"...\"}}: {e}"),
        )
    })?;
    let privileges = match user.role {
        Role::Admin => Privileges::Admin,
        Role::Analyst | Role::Viewer => Privileges::ReadStore,
    };
    let result = state.engine.query(&request.sql, privileges).await?;
    let accept = headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let render_error = |e: datafusion::arrow::error::ArrowError| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    };
    if accept.contains("application/vnd.apache.arrow.stream") {
        let body = format::arrow_ipc(&result).map_err(render_error)?;
        Ok((
            [(CONTENT_TYPE, "application/vnd.apache.arrow.stream")],
            body,
        )
            .into_response())
    } else if accept.contains("text/csv") {
        let body = format::csv(&result).map_err(render_error)?;
        Ok(([(CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response())
    } else {
        Ok(Json(format::json(&result).map_err(render_error)?).into_response())
    }
}
