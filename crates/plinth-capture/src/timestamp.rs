//! Event times: parsing what clients send, clock-skew correction, and the
//! range check that turns absurd times into rejections.
//!
//! Clients' clocks are wrong; the server's is trusted. When the client says
//! when it sent the request (`sent_at`), the event time becomes
//! `received_at − (sent_at − timestamp)`: the age the client measured,
//! applied to the server's clock. PostHog and Segment both do this.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde_json::Value;

const MICROS_PER_MILLI: i64 = 1_000;
const MICROS_PER_HOUR: i64 = 3_600 * 1_000_000;
/// How far past its reception an event may claim to have happened. PostHog
/// uses the same 23 hours before it distrusts a timestamp.
pub(crate) const MAX_FUTURE_MICROS: i64 = 23 * MICROS_PER_HOUR;

/// Parses a timestamp as clients send it, into UTC microseconds: RFC 3339 /
/// ISO 8601 with or without offset (no offset means UTC), a bare date, or a
/// JSON number of epoch milliseconds (JavaScript's `Date.now()`).
pub(crate) fn parse_timestamp(value: &Value) -> Option<i64> {
    match value {
        Value::String(text) => parse_text(text),
        Value::Number(number) => {
            let millis = number.as_f64()?;
            let micros = millis * MICROS_PER_MILLI as f64;
            // `as` saturates; the range check keeps only representable times.
            (micros.is_finite() && micros.abs() < i64::MAX as f64).then_some(micros as i64)
        }
        _ => None,
    }
}

/// RFC 3339 with microseconds in UTC, which [`parse_timestamp`] reads back
/// exactly. Times that `chrono` cannot represent never reach here: events
/// pass the range check before they are normalized.
pub(crate) fn format_micros(micros: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(micros)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// [`parse_timestamp`] of a JSON string.
pub(crate) fn parse_text(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(parsed) = DateTime::parse_from_rfc3339(text) {
        return Some(parsed.timestamp_micros());
    }
    const WITH_OFFSET: [&str; 4] = [
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f%z",
        "%Y-%m-%dT%H:%M:%S%.f%:z",
        "%Y-%m-%d %H:%M:%S%.f%:z",
    ];
    for format in WITH_OFFSET {
        if let Ok(parsed) = DateTime::parse_from_str(text, format) {
            return Some(parsed.timestamp_micros());
        }
    }
    const WITHOUT_OFFSET: [&str; 4] = [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ];
    for format in WITHOUT_OFFSET {
        if let Ok(parsed) = NaiveDateTime::parse_from_str(text, format) {
            return Some(parsed.and_utc().timestamp_micros());
        }
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|date| date.and_hms_opt(0, 0, 0))
        .map(|midnight| midnight.and_utc().timestamp_micros())
}

/// Renders microseconds for a rejection reason.
fn render(micros: i128) -> String {
    i64::try_from(micros)
        .ok()
        .and_then(DateTime::<Utc>::from_timestamp_micros)
        .map(|t| t.to_rfc3339())
        .unwrap_or_else(|| format!("{micros} µs since 1970"))
}

/// The event time in UTC microseconds, or the reason it is unusable.
///
/// * `timestamp` present: parsed, then skew-corrected when `sent_at` is known.
/// * absent: `received_at`, or `received_at − offset` when the client gave
///   `offset` (milliseconds since the event, as posthog-js sends).
///
/// Times before 1970 or more than 23 hours after reception are refused.
pub(crate) fn event_time(
    timestamp: Option<&Value>,
    sent_at: Option<i64>,
    offset_millis: Option<&Value>,
    received_at: i64,
) -> Result<i64, String> {
    let received = i128::from(received_at);
    let micros: i128 = match timestamp.filter(|v| !v.is_null()) {
        Some(value) => {
            let client_time =
                parse_timestamp(value).ok_or_else(|| format!("unparseable timestamp: {value}"))?;
            match sent_at {
                Some(sent) => received - (i128::from(sent) - i128::from(client_time)),
                None => i128::from(client_time),
            }
        }
        None => match offset_millis
            .and_then(Value::as_f64)
            .filter(|ms| ms.is_finite())
        {
            Some(ms) => received - (ms * MICROS_PER_MILLI as f64) as i128,
            None => received,
        },
    };
    check_range(micros, received_at)
}

/// `micros` as an event time received at `received_at`, or why it is
/// unusable: before 1970 or more than 23 hours after reception.
pub(crate) fn check_range(micros: i128, received_at: i64) -> Result<i64, String> {
    if micros < 0 {
        return Err(format!("timestamp before 1970: {}", render(micros)));
    }
    if micros > i128::from(received_at) + i128::from(MAX_FUTURE_MICROS) {
        return Err(format!(
            "timestamp more than 23 hours after reception: {}",
            render(micros)
        ));
    }
    Ok(micros as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn micros(rfc3339: &str) -> i64 {
        DateTime::parse_from_rfc3339(rfc3339)
            .unwrap()
            .timestamp_micros()
    }

    #[test]
    fn parses_the_formats_sdks_send() {
        let noon = micros("2024-05-01T12:00:00Z");
        for text in [
            "2024-05-01T12:00:00Z",
            "2024-05-01T12:00:00+00:00",
            "2024-05-01T12:00:00.000+00:00",
            "2024-05-01T14:00:00+02:00",
            "2024-05-01T14:00:00+0200",
            "2024-05-01 12:00:00",
            "2024-05-01T12:00:00",
            "2024-05-01T12:00",
        ] {
            assert_eq!(parse_timestamp(&json!(text)), Some(noon), "{text}");
        }
        assert_eq!(parse_timestamp(&json!(noon / 1000)), Some(noon));
        assert_eq!(
            parse_timestamp(&json!("2024-05-01")),
            Some(micros("2024-05-01T00:00:00Z"))
        );
        assert_eq!(
            parse_timestamp(&json!("2024-05-01T12:00:00.123456Z")),
            Some(noon + 123_456)
        );
        for bad in [
            json!("yesterday"),
            json!(""),
            json!(true),
            json!({}),
            json!("2024-13-01"),
        ] {
            assert_eq!(parse_timestamp(&bad), None, "{bad}");
        }
    }

    #[test]
    fn skew_correction_keeps_the_client_measured_age() {
        // Client clock 1 hour fast: event 10 s before sending by its clock.
        let received = micros("2024-05-01T12:00:00Z");
        let sent = micros("2024-05-01T13:00:00Z");
        let ts = json!("2024-05-01T12:59:50Z");
        assert_eq!(
            event_time(Some(&ts), Some(sent), None, received),
            Ok(received - 10_000_000)
        );
        // Without sent_at the client's time is taken as is.
        assert_eq!(
            event_time(Some(&ts), None, None, received),
            Ok(sent - 10_000_000)
        );
    }

    #[test]
    fn missing_timestamp_uses_reception_minus_offset() {
        let received = micros("2024-05-01T12:00:00Z");
        assert_eq!(event_time(None, None, None, received), Ok(received));
        assert_eq!(
            event_time(
                Some(&Value::Null),
                Some(received - 5),
                Some(&json!(1500)),
                received
            ),
            Ok(received - 1_500_000)
        );
    }

    #[test]
    fn absurd_times_are_refused() {
        let received = micros("2024-05-01T12:00:00Z");
        let before_1970 = event_time(Some(&json!("1969-12-31T23:59:59Z")), None, None, received);
        assert!(
            before_1970
                .unwrap_err()
                .starts_with("timestamp before 1970")
        );
        let future = event_time(Some(&json!("2024-05-02T11:00:01Z")), None, None, received);
        assert!(
            future
                .unwrap_err()
                .starts_with("timestamp more than 23 hours")
        );
        assert!(event_time(Some(&json!("2024-05-02T11:00:00Z")), None, None, received).is_ok());
        let garbage = event_time(Some(&json!("soon")), None, None, received);
        assert!(garbage.unwrap_err().starts_with("unparseable timestamp"));
        // Extreme values must not overflow.
        let huge = event_time(Some(&json!(1e300)), Some(i64::MIN), None, i64::MAX);
        assert!(huge.is_err());
    }
}
