//! Delivering a flagged point: an HTTP/1.1 POST of its JSON to the alert's
//! webhook, retried with exponential backoff until a 2xx answer or the last
//! attempt; every attempt is logged in the catalog.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use plinth_catalog::{Catalog, Delivery};

use crate::definition::Webhook;

/// Longest wait for one attempt (connect, send, answer).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// POSTs `body` until it is accepted or `webhook.max_attempts` have failed,
/// waiting `backoff_seconds`, then twice as long, and so on, between them.
/// `attempts_made` earlier attempts (before a restart) count towards the
/// maximum and the backoff. Returns whether it was delivered.
pub async fn deliver(
    catalog: &Arc<Catalog>,
    alert: &str,
    bucket: i64,
    webhook: &Webhook,
    body: String,
    attempts_made: u32,
) -> bool {
    let mut wait = Duration::from_secs_f64(webhook.backoff_seconds)
        * 2u32.saturating_pow(attempts_made.min(16));
    for attempt in attempts_made + 1..=webhook.max_attempts {
        if attempt > attempts_made + 1 && !still_defined(catalog, alert) {
            tracing::info!("alert {alert}: deleted, so its delivery stops");
            return false;
        }
        let outcome = match tokio::time::timeout(ATTEMPT_TIMEOUT, post(&webhook.url, &body)).await {
            Ok(outcome) => outcome,
            Err(_) => Err((None, format!("no answer within {ATTEMPT_TIMEOUT:?}"))),
        };
        let (status, error) = match &outcome {
            Ok(status) => (Some(*status), None),
            Err((status, error)) => (*status, Some(error.clone())),
        };
        let delivery = Delivery {
            alert: alert.to_string(),
            bucket,
            attempt,
            url: webhook.url.clone(),
            status,
            error,
            delivered: outcome.is_ok(),
            at: chrono::Utc::now().to_rfc3339(),
        };
        if let Err(e) = catalog.log_delivery(&delivery) {
            tracing::error!("alert {alert}: cannot log a delivery: {e:#}");
        }
        if outcome.is_ok() {
            return true;
        }
        if attempt < webhook.max_attempts {
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
    }
    tracing::warn!(
        "alert {alert}: gave up delivering to {} after {} attempts",
        webhook.url,
        webhook.max_attempts
    );
    false
}

/// Whether the alert still exists: a deleted alert's retries stop. When
/// the catalog cannot tell, delivery goes on (at least once wins).
fn still_defined(catalog: &Catalog, alert: &str) -> bool {
    !matches!(catalog.definition(crate::CATALOG_KIND, alert), Ok(None))
}

/// One POST; the status when it is 2xx, else the status (if any) and why.
async fn post(url: &str, body: &str) -> Result<u16, (Option<u16>, String)> {
    let failed = |e: &dyn std::fmt::Display| (None, e.to_string());
    let uri: Uri = url.parse().map_err(|e| failed(&e))?;
    let host = uri
        .host()
        .ok_or_else(|| (None, "the URL has no host".into()))?;
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| failed(&e))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| failed(&e))?;
    tokio::spawn(connection);
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or(host);
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let request = Request::post(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::USER_AGENT, "plinth-alerts")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| failed(&e))?;
    let response = sender.send_request(request).await.map_err(|e| failed(&e))?;
    let status = response.status();
    // Read the answer to its end so the connection closes cleanly.
    let _ = response.into_body().collect().await;
    if status.is_success() {
        Ok(status.as_u16())
    } else {
        Err((Some(status.as_u16()), format!("answered {status}")))
    }
}
