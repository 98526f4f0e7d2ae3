//! Request-level failures and the size limits that produce some of them.
//!
//! A [`CaptureError`] rejects the whole request; one bad event inside a
//! readable request is never a `CaptureError` but a [`crate::Rejected`] item.

/// Why a whole capture request was refused. [`CaptureError::status`] gives the
/// HTTP status the server answers with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaptureError {
    /// The payload cannot be decoded (bad compression, bad base64, not JSON,
    /// not an event shape, empty batch). HTTP 400.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// No project key (PostHog `api_key`/`token`, Segment write key). HTTP 401.
    #[error("missing project API key")]
    Unauthorized,
    /// Events of one request name different project keys. HTTP 401, as PostHog answers.
    #[error("events in one request carry different API keys")]
    MultipleTokens,
    /// The body, its decompressed form, or a single-event request is larger
    /// than `limit` bytes. HTTP 413.
    #[error("payload larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit that was exceeded, in bytes.
        limit: usize,
    },
    /// The path is not a capture endpoint of this format. HTTP 404.
    #[error("not a capture endpoint: {0}")]
    UnknownEndpoint(String),
}

impl CaptureError {
    /// The HTTP status code for this error.
    pub fn status(&self) -> u16 {
        match self {
            CaptureError::BadRequest(_) => 400,
            CaptureError::Unauthorized | CaptureError::MultipleTokens => 401,
            CaptureError::PayloadTooLarge { .. } => 413,
            CaptureError::UnknownEndpoint(_) => 404,
        }
    }
}

/// Size limits, in bytes, applied to the raw body and again to every
/// decompressed or decoded form of it, so a small gzip or lz-string bomb
/// cannot expand past them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest single event: a single-event request above it is refused with
    /// 413; an event above it inside a batch becomes a `Rejected` item.
    pub max_event_bytes: usize,
    /// Largest request, compressed or decompressed.
    pub max_batch_bytes: usize,
}

impl Default for Limits {
    /// 2 MB per event, 20 MB per request.
    fn default() -> Self {
        Limits {
            max_event_bytes: 2 * 1024 * 1024,
            max_batch_bytes: 20 * 1024 * 1024,
        }
    }
}
