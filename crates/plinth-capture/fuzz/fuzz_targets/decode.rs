//! Feeds arbitrary bytes to both capture decoders and to the file-event
//! normaliser. The first byte picks the path, query and content type; the
//! second and third the length of the query taken from the input; the rest
//! is the body. Run with `cargo +nightly fuzz run decode` from the crate.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plinth_capture::{Limits, decode_posthog, decode_segment, normalize_json_event};

const POSTHOG_PATHS: [&str; 6] = [
    "/e/", "/batch/", "/capture", "/engage/", "/i/v0/e", "/track",
];
const SEGMENT_PATHS: [&str; 4] = ["/v1/batch", "/v1/track", "/v1/identify", "/v1/group"];
const CONTENT_TYPES: [Option<&str>; 4] = [
    None,
    Some("text/plain"),
    Some("application/json"),
    Some("application/x-www-form-urlencoded"),
];
const QUERIES: [&str; 5] = [
    "",
    "compression=gzip-js",
    "compression=lz64",
    "compression=base64",
    "beacon=1&_=1714564800000",
];

fuzz_target!(|input: &[u8]| {
    let Some((&selector, rest)) = input.split_first() else {
        return;
    };
    let selector = usize::from(selector);
    // Some inputs carry their own query string: a length, then the query.
    let (query, body) = match rest.split_first() {
        Some((&len, tail)) if selector & 0x80 != 0 => {
            let len = usize::from(len).min(tail.len());
            (
                String::from_utf8_lossy(&tail[..len]).into_owned(),
                &tail[len..],
            )
        }
        _ => (QUERIES[selector % QUERIES.len()].to_owned(), rest),
    };
    let limits = Limits {
        max_event_bytes: 64 * 1024,
        max_batch_bytes: 1024 * 1024,
    };
    let received = 1_714_564_800_000_000;
    let _ = decode_posthog(
        POSTHOG_PATHS[selector % POSTHOG_PATHS.len()],
        &query,
        CONTENT_TYPES[(selector / 8) % CONTENT_TYPES.len()],
        body,
        received,
        &limits,
    );
    let authorization = String::from_utf8_lossy(&body[..body.len().min(32)]).into_owned();
    let _ = decode_segment(
        SEGMENT_PATHS[selector % SEGMENT_PATHS.len()],
        Some(&authorization),
        body,
        received,
        &limits,
    );
    if let Ok(value) = serde_json::from_slice(body) {
        let _ = normalize_json_event(value, received);
    }
});
