//! Metric alerts for Plinth: an alert watches an event's count, unique
//! persons or a property's sum or average per day or hour, optionally with
//! a breakdown property; inside `plinth serve` a scheduler evaluates each
//! alert every `every_seconds` with the product-metric detector of
//! `plinth-anomaly`, records each newly flagged point in the catalog with
//! its contributing breakdown values, and POSTs it as JSON to the alert's
//! webhook, retrying with exponential backoff and logging every attempt.
//!
//! Definitions ([`AlertDefinition`], YAML or JSON) are stored in the
//! catalog under [`CATALOG_KIND`]; the scheduler reloads them on every tick,
//! so alerts created through the API start at once. A point is flagged (and
//! notified) once per alert and bucket, ever. Only complete buckets count:
//! the bucket still in progress is left out. Deliveries still owed when the
//! server stopped (recorded points that no attempt delivered, with attempts
//! left) resume when it starts again, counting the attempts already made:
//! a webhook gets each point at least once.
//!
//! This crate owns what an alert means, when it fires and how it is
//! delivered. It must never depend on the HTTP server or the CLI.

pub mod definition;
pub mod evaluate;
pub mod webhook;

pub use definition::{AlertDefinition, DefinitionError};
pub use evaluate::{FlaggedPoint, Series, WatchedMetric, contributors, evaluate, series};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use plinth_catalog::Catalog;
use plinth_engine::Engine;

/// The kind under which the catalog stores alert definitions.
pub const CATALOG_KIND: &str = "alert";

/// How often the scheduler looks for alerts that are due.
pub const TICK: Duration = Duration::from_secs(1);

/// Evaluates every stored alert when it is due, forever; run it as a task
/// of the server.
pub async fn run_forever(engine: Engine, catalog: Arc<Catalog>) {
    // Per alert: the definition last evaluated and when it is next due; an
    // edited definition is due at once.
    let mut schedule: HashMap<String, (String, Instant)> = HashMap::new();
    if let Err(e) = resume_deliveries(&catalog) {
        tracing::error!("alerts: cannot resume deliveries: {e:#}");
    }
    let mut ticker = tokio::time::interval(TICK);
    loop {
        ticker.tick().await;
        let definitions = match catalog.definitions(CATALOG_KIND) {
            Ok(definitions) => definitions,
            Err(e) => {
                tracing::error!("alerts: cannot read definitions: {e:#}");
                continue;
            }
        };
        schedule.retain(|name, _| definitions.iter().any(|(n, _)| n == name));
        for (name, body) in definitions {
            let now = Instant::now();
            let due = match schedule.get(&name) {
                Some((seen, next)) => *seen != body || *next <= now,
                None => true,
            };
            if !due {
                continue;
            }
            let alert = match AlertDefinition::parse(&body) {
                Ok(alert) => alert,
                Err(e) => {
                    tracing::error!("alert {name}: {e}");
                    schedule.insert(name, (body, now + Duration::from_secs(3600)));
                    continue;
                }
            };
            let next = now + Duration::from_secs_f64(alert.every_seconds);
            schedule.insert(name, (body, next));
            if let Err(e) = check(&engine, &catalog, &alert).await {
                tracing::error!("alert {}: {e:#}", alert.name);
            }
        }
    }
}

/// One evaluation: records the newly flagged points and starts their
/// deliveries.
pub async fn check(
    engine: &Engine,
    catalog: &Arc<Catalog>,
    alert: &AlertDefinition,
) -> anyhow::Result<()> {
    let now = chrono::Utc::now().timestamp_micros();
    for point in evaluate(engine, alert, now).await? {
        let body = serde_json::to_string(&point)?;
        if !catalog.record_alert_point(&alert.name, point.bucket_micros, &body)? {
            continue;
        }
        spawn_delivery(catalog, alert, point.bucket_micros, body, 0);
    }
    Ok(())
}

/// Delivers in the background, so retries do not hold up other alerts.
fn spawn_delivery(
    catalog: &Arc<Catalog>,
    alert: &AlertDefinition,
    bucket: i64,
    body: String,
    attempts_made: u32,
) {
    let catalog = catalog.clone();
    let alert = alert.clone();
    tokio::spawn(async move {
        webhook::deliver(
            &catalog,
            &alert.name,
            bucket,
            &alert.webhook,
            body,
            attempts_made,
        )
        .await
    });
}

/// Restarts the deliveries a previous run left unfinished.
fn resume_deliveries(catalog: &Arc<Catalog>) -> anyhow::Result<()> {
    for (_, body) in catalog.definitions(CATALOG_KIND)? {
        let alert = AlertDefinition::parse(&body)?;
        for (bucket, point, attempts) in catalog.undelivered_alert_points(&alert.name)? {
            if attempts < alert.webhook.max_attempts {
                spawn_delivery(catalog, &alert, bucket, point, attempts);
            }
        }
    }
    Ok(())
}
