//! Capture endpoints: where PostHog and Segment SDKs send events when only
//! their host is changed to Plinth's.
//!
//! - PostHog: `/capture`, `/batch`, `/e`, `/i/v0/e`, `/track`, `/engage`,
//!   with or without a trailing slash, GET or POST; OPTIONS answers CORS
//!   preflights so browsers may post from any origin.
//! - Segment: `POST /v1/track|identify|page|screen|group|alias|batch`.
//! - `/flags`, `/decide` and `/array/<token>/config` answer "no feature
//!   flags, default config" so posthog-js starts cleanly.
//!
//! Answers: 200 `{"status": 1}` (Segment `{"success": true}`) once the
//! events are in the write-ahead log on disk; 204 for `?beacon=1`; 400 for a
//! payload that cannot be decoded; 401 when the token is not a project write
//! key; 413 above the size limits; 503 (with `Retry-After`) when the events
//! could not be made durable, so SDKs retry.
//!
//! Decoding is `plinth-capture`'s, durability `plinth-ingest`'s: this module
//! only authenticates and translates between HTTP and the pipeline.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS,
    AUTHORIZATION, CONTENT_TYPE, ORIGIN, RETRY_AFTER,
};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use plinth_capture::{CaptureError, DecodedRequest, Limits};
use plinth_catalog::{Catalog, KeyKind};
use plinth_ingest::{CapturePipeline, CaptureRequest, EventInput, QuarantineInput};
use plinth_tracking_plan::{Mode as TrackingMode, TrackingPlan};
use serde_json::{Value, json};

use crate::AppState;

/// The size limits of capture requests, as `plinth serve` configures them.
pub use plinth_capture::Limits as CaptureLimits;

/// PostHog capture paths; each is also served with a trailing slash.
const POSTHOG_PATHS: [&str; 6] = ["/capture", "/batch", "/e", "/i/v0/e", "/track", "/engage"];
const SEGMENT_CALLS: [&str; 7] = [
    "track", "identify", "page", "screen", "group", "alias", "batch",
];
/// Bodies above this are decoded (decompressed, parsed) on a blocking
/// thread, so a large or bomb-like payload never stalls the runtime.
const INLINE_DECODE_BYTES: usize = 64 << 10;
/// How long a verified write key is trusted without asking the catalog.
/// A revoked key stops working within this time.
const KEY_CACHE_TTL: Duration = Duration::from_secs(30);
const KEY_CACHE_ENTRIES: usize = 10_000;

/// The capture side of the server: the durable pipeline and the limits.
pub struct CaptureService {
    pipeline: Arc<CapturePipeline>,
    limits: Limits,
    plan: Option<TrackingPlan>,
    verified_keys: Mutex<HashMap<String, Instant>>,
}

impl CaptureService {
    pub fn new(
        pipeline: Arc<CapturePipeline>,
        limits: Limits,
        plan: Option<TrackingPlan>,
    ) -> CaptureService {
        CaptureService {
            pipeline,
            limits,
            plan,
            verified_keys: Mutex::new(HashMap::new()),
        }
    }

    pub fn pipeline(&self) -> &Arc<CapturePipeline> {
        &self.pipeline
    }

    /// The tracking plan events are checked against, if any.
    pub fn tracking_plan(&self) -> Option<&TrackingPlan> {
        self.plan.as_ref()
    }

    /// Whether `token` is a live project write key.
    fn is_write_key(&self, catalog: &Catalog, token: &str) -> anyhow::Result<bool> {
        {
            let cache = self.verified_keys.lock().expect("key cache lock");
            if cache
                .get(token)
                .is_some_and(|at| at.elapsed() < KEY_CACHE_TTL)
            {
                return Ok(true);
            }
        }
        let key = catalog.authenticate(token)?;
        let valid = key.is_some_and(|k| k.kind == KeyKind::Capture);
        if valid {
            let mut cache = self.verified_keys.lock().expect("key cache lock");
            if cache.len() >= KEY_CACHE_ENTRIES {
                cache.clear();
            }
            cache.insert(token.to_string(), Instant::now());
        }
        Ok(valid)
    }
}

/// The capture routes, merged into the API router.
pub fn routes() -> Router<AppState> {
    let mut router = Router::new();
    for path in POSTHOG_PATHS {
        router = router
            .route(path, any(posthog))
            .route(&format!("{path}/"), any(posthog));
    }
    for call in SEGMENT_CALLS {
        let path = format!("/v1/{call}");
        router = router
            .route(&path, post(segment).options(preflight))
            .route(&format!("{path}/"), post(segment).options(preflight));
    }
    for path in ["/flags", "/decide"] {
        router = router
            .route(path, any(flags))
            .route(&format!("{path}/"), any(flags));
    }
    router
        .route("/array/{token}/config", any(remote_config))
        .route("/array/{token}/config.js", any(remote_config_script))
        // Handlers read the body themselves, under the configured limit.
        .layer(DefaultBodyLimit::disable())
}

#[derive(Clone, Copy)]
enum Format {
    PostHog,
    Segment,
}

async fn posthog(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let response = if method == Method::OPTIONS {
        preflight_response(&headers)
    } else if method == Method::GET || method == Method::POST {
        capture(state, Format::PostHog, uri, &headers, body).await
    } else {
        error(StatusCode::METHOD_NOT_ALLOWED, "use GET or POST")
    };
    with_cors(response, &headers)
}

async fn segment(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let response = capture(state, Format::Segment, uri, &headers, body).await;
    with_cors(response, &headers)
}

async fn preflight(headers: HeaderMap) -> Response {
    with_cors(preflight_response(&headers), &headers)
}

async fn capture(
    state: AppState,
    format: Format,
    uri: Uri,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let Some(service) = state.capture.clone() else {
        return unavailable("this server does not accept events");
    };
    let limits = service.limits;
    let body = match axum::body::to_bytes(body, limits.max_batch_bytes).await {
        Ok(body) => body,
        Err(_) => {
            let message = format!("request larger than {} bytes", limits.max_batch_bytes);
            return error(StatusCode::PAYLOAD_TOO_LARGE, &message);
        }
    };
    let received_at = chrono::Utc::now().timestamp_micros();
    let header = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(str::to_string)
    };
    let (content_type, authorization) = (header(CONTENT_TYPE), header(AUTHORIZATION));
    let inline = body.len() <= INLINE_DECODE_BYTES;
    let decode_request = move || {
        decode(
            format,
            &uri,
            content_type,
            authorization,
            &body,
            received_at,
            &limits,
        )
    };
    let decoded = if inline {
        decode_request()
    } else {
        match tokio::task::spawn_blocking(decode_request).await {
            Ok(decoded) => decoded,
            Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "decoding failed"),
        }
    };
    let (path, decoded) = match decoded {
        Ok(decoded) => decoded,
        Err(e) => {
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
            return error(status, &e.to_string());
        }
    };
    let token = decoded.token.clone().unwrap_or_default();
    match service.is_write_key(&state.catalog, &token) {
        Ok(true) => {}
        Ok(false) => {
            return error(
                StatusCode::UNAUTHORIZED,
                "the API key is not a project write key of this server (create one with \
                 `plinth keys create --capture`)",
            );
        }
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
    let beacon = decoded.beacon;
    let request = to_request(format, &path, decoded, received_at, service.plan.as_ref());
    match service.pipeline.submit(request).await {
        Ok(_) if beacon => StatusCode::NO_CONTENT.into_response(),
        Ok(_) => match format {
            Format::PostHog => axum::Json(json!({"status": 1})).into_response(),
            Format::Segment => axum::Json(json!({"success": true})).into_response(),
        },
        Err(e) => unavailable(&e.to_string()),
    }
}

fn decode(
    format: Format,
    uri: &Uri,
    content_type: Option<String>,
    authorization: Option<String>,
    body: &Bytes,
    received_at: i64,
    limits: &Limits,
) -> Result<(String, DecodedRequest), CaptureError> {
    let path = uri.path().to_string();
    let decoded = match format {
        Format::PostHog => plinth_capture::decode_posthog(
            &path,
            uri.query().unwrap_or(""),
            content_type.as_deref(),
            body,
            received_at,
            limits,
        ),
        Format::Segment => plinth_capture::decode_segment(
            &path,
            authorization.as_deref(),
            body,
            received_at,
            limits,
        ),
    }?;
    Ok((path, decoded))
}

/// The request the pipeline logs: accepted events, and the rejected ones
/// (undecodable, or refused by an enforced tracking plan) for quarantine.
fn to_request(
    format: Format,
    path: &str,
    decoded: DecodedRequest,
    received_at: i64,
    plan: Option<&TrackingPlan>,
) -> CaptureRequest {
    let source = match format {
        Format::PostHog => format!("posthog {path}"),
        Format::Segment => format!("segment {path}"),
    };
    let mut request = CaptureRequest {
        received_at_micros: received_at,
        ..CaptureRequest::default()
    };
    for item in decoded.events {
        match item {
            Ok(mut event) => {
                let verdict =
                    plan.and_then(|plan| plan.check_and_mark(&event.event, &mut event.properties));
                match verdict {
                    Some(verdict) if verdict.mode == TrackingMode::Enforce => {
                        request.quarantine.push(QuarantineInput {
                            source: source.clone(),
                            reason: verdict.quarantine_reason(),
                            payload: event.to_posthog_json().to_string(),
                        });
                    }
                    _ => request.events.push(EventInput::from(event)),
                }
            }
            Err(rejected) => request.quarantine.push(QuarantineInput {
                source: source.clone(),
                reason: rejected.reason,
                payload: rejected.raw,
            }),
        }
    }
    request
}

/// What posthog-js asks before it sends: no flags, default config.
async fn flags(headers: HeaderMap) -> Response {
    let body = json!({
        "featureFlags": {},
        "featureFlagPayloads": {},
        "flags": {},
        "errorsWhileComputingFlags": false,
        "quotaLimited": [],
        "config": {"enable_collect_everything": true},
        "supportedCompression": ["gzip", "gzip-js"],
        "sessionRecording": false,
        "toolbarParams": {},
        "siteApps": [],
        "surveys": false,
        "heatmaps": false,
        "capturePerformance": false,
        "autocapture_opt_out": false,
    });
    with_cors(axum::Json(body).into_response(), &headers)
}

async fn remote_config(headers: HeaderMap, uri: Uri) -> Response {
    let token = uri.path().split('/').nth(2).unwrap_or_default();
    let body: Value = json!({
        "token": token,
        "supportedCompression": ["gzip", "gzip-js"],
        "hasFeatureFlags": false,
        "sessionRecording": false,
        "heatmaps": false,
        "surveys": false,
        "siteApps": [],
        "autocaptureExceptions": false,
        "defaultIdentifiedOnly": true,
    });
    with_cors(axum::Json(body).into_response(), &headers)
}

/// posthog-js may load the config as a script; an empty one is "defaults".
async fn remote_config_script(headers: HeaderMap) -> Response {
    let response = ([(CONTENT_TYPE, "application/javascript")], "").into_response();
    with_cors(response, &headers)
}

fn preflight_response(headers: &HeaderMap) -> Response {
    let allowed_headers = headers
        .get(ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("content-type"));
    (
        StatusCode::NO_CONTENT,
        [
            (
                ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST, OPTIONS"),
            ),
            (ACCESS_CONTROL_ALLOW_HEADERS, allowed_headers),
            (ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400")),
        ],
    )
        .into_response()
}

/// Browsers send events from the product's own origin: echo it, with
/// credentials allowed, as PostHog does; `*` when there is none.
fn with_cors(mut response: Response, request: &HeaderMap) -> Response {
    let headers = response.headers_mut();
    match request.get(ORIGIN) {
        Some(origin) => {
            headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            headers.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        None => {
            headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        }
    }
    response
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({"error": message}))).into_response()
}

/// 503 with `Retry-After`: every SDK retries it.
fn unavailable(message: &str) -> Response {
    let mut response = error(StatusCode::SERVICE_UNAVAILABLE, message);
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    response
}
