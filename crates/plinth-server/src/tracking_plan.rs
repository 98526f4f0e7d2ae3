//! `GET /api/v1/tracking-plan/violations`: how well the events that arrive
//! keep the tracking plan, per event.
//!
//! Violations are data, not counters: an event stored in `record` mode
//! carries them in its `$plan_violations` property, and an event refused in
//! `enforce` mode sits in `quarantine` with them in its payload. The report
//! is therefore two SQL aggregates over the store: it survives restarts,
//! counts what replay fixed, and agrees with what anyone can query.
//!
//! Query: `?days=N` (default 7) limits the report to events received in the
//! last N days.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use plinth_engine::{Privileges, format};
use plinth_tracking_plan::{QUARANTINE_REASON_PREFIX, VIOLATIONS_PROPERTY};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{ApiError, AppState, User};

const DEFAULT_DAYS: u32 = 7;
const MAX_DAYS: u32 = 3_650;

#[derive(Deserialize)]
pub struct ViolationsQuery {
    days: Option<u32>,
}

/// One event's standing against the plan.
#[derive(Debug, Default, Serialize)]
struct EventReport {
    event: String,
    /// Whether the plan describes this event.
    planned: bool,
    /// `record` or `enforce`, as the plan applies to this event now.
    mode: Option<String>,
    /// Events stored in the window, violating or not.
    stored: u64,
    /// Stored events that carry violations (`record` mode).
    stored_with_violations: u64,
    /// Events refused into quarantine (`enforce` mode).
    quarantined: u64,
    /// Each violation message with how often it occurred, most frequent first.
    violations: Vec<ViolationCount>,
    last_seen: Option<Value>,
}

#[derive(Debug, Serialize)]
struct ViolationCount {
    violation: String,
    count: u64,
}

pub async fn violations(
    State(state): State<AppState>,
    _user: User,
    Query(query): Query<ViolationsQuery>,
) -> Result<Json<Value>, ApiError> {
    let days = query.days.unwrap_or(DEFAULT_DAYS);
    if days == 0 || days > MAX_DAYS {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("days must be between 1 and {MAX_DAYS}"),
        ));
    }
    let plan = state.capture.as_ref().and_then(|c| c.tracking_plan());
    let since = format!("now() - INTERVAL '{days} days'");
    let stored_sql =
        format!("SELECT event, count(*) FROM events WHERE timestamp >= {since} GROUP BY event");
    let recorded_sql = format!(
        "SELECT event, json_get_json(properties, '{VIOLATIONS_PROPERTY}') AS violations, \
         count(*), max(timestamp) FROM events \
         WHERE timestamp >= {since} AND json_contains(properties, '{VIOLATIONS_PROPERTY}') \
         GROUP BY 1, 2"
    );
    let quarantined_sql = format!(
        "SELECT json_get_str(payload, 'event') AS event, \
         json_get_json(payload, 'properties', '{VIOLATIONS_PROPERTY}') AS violations, \
         count(*), max(received_at) FROM quarantine \
         WHERE received_at >= {since} AND starts_with(reason, '{QUARANTINE_REASON_PREFIX}') \
         GROUP BY 1, 2"
    );

    let mut reports: BTreeMap<String, EventReport> = BTreeMap::new();
    let mut counts: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for row in rows(&state, &stored_sql).await? {
        let event = text(&row[0]);
        reports.entry(event.clone()).or_default().stored = number(&row[1]);
    }
    for (sql, recorded) in [(recorded_sql, true), (quarantined_sql, false)] {
        for row in rows(&state, &sql).await? {
            let event = text(&row[0]);
            let n = number(&row[2]);
            let report = reports.entry(event.clone()).or_default();
            if recorded {
                report.stored_with_violations += n;
            } else {
                report.quarantined += n;
            }
            if report.last_seen.as_ref().is_none_or(|seen| {
                seen.as_str().unwrap_or_default() < row[3].as_str().unwrap_or_default()
            }) {
                report.last_seen = Some(row[3].clone());
            }
            let messages: Vec<String> = row[1]
                .as_str()
                .and_then(|array| serde_json::from_str(array).ok())
                .unwrap_or_default();
            let per_event = counts.entry(event).or_default();
            for message in messages {
                *per_event.entry(message).or_default() += n;
            }
        }
    }

    let mut events = Vec::new();
    for (event, mut report) in reports {
        let planned = plan.is_some_and(|plan| plan.events().contains_key(&event));
        if !planned && report.stored_with_violations + report.quarantined == 0 {
            continue;
        }
        let mut violations: Vec<ViolationCount> = counts
            .remove(&event)
            .unwrap_or_default()
            .into_iter()
            .map(|(violation, count)| ViolationCount { violation, count })
            .collect();
        violations.sort_by(|a, b| b.count.cmp(&a.count).then(a.violation.cmp(&b.violation)));
        report.mode = plan.map(|plan| plan.mode_of(&event).to_string());
        report.planned = planned;
        report.violations = violations;
        report.event = event;
        events.push(report);
    }
    // Planned events that never arrived are worth seeing too.
    if let Some(plan) = plan {
        for event in plan.events().keys() {
            if !events.iter().any(|report| &report.event == event) {
                events.push(EventReport {
                    event: event.clone(),
                    planned: true,
                    mode: Some(plan.mode_of(event).to_string()),
                    ..EventReport::default()
                });
            }
        }
    }
    events.sort_by(|a, b| {
        let bad = |r: &EventReport| r.stored_with_violations + r.quarantined;
        bad(b).cmp(&bad(a)).then(a.event.cmp(&b.event))
    });
    Ok(Json(json!({
        "tracking_plan": plan.is_some(),
        "days": days,
        "events": events,
    })))
}

async fn rows(state: &AppState, sql: &str) -> Result<Vec<Vec<Value>>, ApiError> {
    let result = state.engine.query(sql, Privileges::ReadStore).await?;
    let internal =
        |e: &dyn std::fmt::Display| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    let mut rendered = format::json(&result).map_err(|e| internal(&e))?;
    serde_json::from_value(rendered["rows"].take()).map_err(|e| internal(&e))
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_string()
}

fn number(value: &Value) -> u64 {
    value.as_u64().unwrap_or_default()
}
