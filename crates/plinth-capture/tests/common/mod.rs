//! Helpers shared by the integration tests.
// Each test crate uses a different subset of these helpers.
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;

use chrono::DateTime;
use flate2::Compression;
use flate2::write::GzEncoder;
use plinth_capture::{DecodedRequest, NormalizedEvent, Rejected};
use serde_json::Value;

/// This package's folder, read when the test runs: a test binary that
/// cargo reuses from a clone elsewhere keeps that clone's compile-time path.
pub fn manifest_dir() -> PathBuf {
    PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"),
    )
}

/// A request recorded from a real SDK by `tests/fixtures/gen_fixtures.py`.
pub struct Fixture {
    pub method: String,
    pub path: String,
    pub content_type: Option<String>,
    pub authorization: Option<String>,
    pub body: Vec<u8>,
}

pub fn fixture(name: &str) -> Fixture {
    let dir = manifest_dir().join("tests/fixtures");
    let meta: Value =
        serde_json::from_slice(&std::fs::read(dir.join(format!("{name}.json"))).unwrap()).unwrap();
    let header = |key: &str| meta["headers"][key].as_str().map(str::to_owned);
    Fixture {
        method: meta["method"].as_str().unwrap().to_owned(),
        path: meta["path"].as_str().unwrap().to_owned(),
        content_type: header("Content-Type"),
        authorization: header("Authorization"),
        body: std::fs::read(dir.join(format!("{name}.body"))).unwrap(),
    }
}

/// UTC microseconds of an RFC 3339 time.
pub fn micros(rfc3339: &str) -> i64 {
    DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .timestamp_micros()
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// The single accepted event of a request, failing the test otherwise.
pub fn only_event(decoded: &DecodedRequest) -> &NormalizedEvent {
    assert_eq!(decoded.events.len(), 1, "{:?}", decoded.events);
    match &decoded.events[0] {
        Ok(event) => event,
        Err(rejected) => panic!("event rejected: {rejected:?}"),
    }
}

/// The single rejected item of a request, failing the test otherwise.
pub fn only_rejection(decoded: &DecodedRequest) -> &Rejected {
    assert_eq!(decoded.events.len(), 1, "{:?}", decoded.events);
    match &decoded.events[0] {
        Ok(event) => panic!("event accepted: {event:?}"),
        Err(rejected) => rejected,
    }
}
