//! PostHog-shaped newline-delimited JSON: the demo as a file that `plinth import`, PostHog's
//! batch import or any NDJSON reader accepts.

use crate::json::push_decimal;
use crate::{DemoConfig, generate};
use chrono::{DateTime, Datelike};
use std::io::{self, BufWriter, Write};

/// Writes every event of `config` as one PostHog-shaped JSON object per line
/// (see [`DemoEvent::to_posthog_json`](crate::DemoEvent::to_posthog_json)) and returns how
/// many were written. `out` is buffered here; it is flushed before returning.
pub fn write_posthog_ndjson(config: &DemoConfig, out: impl Write) -> io::Result<u64> {
    let mut out = BufWriter::with_capacity(1 << 16, out);
    let mut line = String::with_capacity(1024);
    let mut timestamps = TimestampFormatter::new();
    let mut written = 0;
    for event in generate(config) {
        line.clear();
        event.append_posthog_json(&mut line, &mut timestamps);
        line.push('\n');
        out.write_all(line.as_bytes())?;
        written += 1;
    }
    out.flush()?;
    Ok(written)
}

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Formats UTC microsecond timestamps as `YYYY-MM-DDTHH:MM:SS.ffffffZ`, reusing the date part
/// while consecutive timestamps share a day (one user's events mostly do).
pub(crate) struct TimestampFormatter {
    day: i64,
    date_part: String,
}

impl TimestampFormatter {
    pub(crate) fn new() -> Self {
        Self {
            day: i64::MIN,
            date_part: String::with_capacity(11),
        }
    }

    pub(crate) fn append(&mut self, buf: &mut String, micros: i64) {
        let day = micros.div_euclid(MICROS_PER_DAY);
        if day != self.day {
            let date = DateTime::from_timestamp(day * 86_400, 0)
                .expect("demo timestamps lie between the years 1 and 9999")
                .date_naive();
            self.date_part.clear();
            push_decimal(&mut self.date_part, date.year() as u64, 4);
            self.date_part.push('-');
            push_decimal(&mut self.date_part, u64::from(date.month()), 2);
            self.date_part.push('-');
            push_decimal(&mut self.date_part, u64::from(date.day()), 2);
            self.date_part.push('T');
            self.day = day;
        }
        buf.push_str(&self.date_part);
        let micros_of_day = micros.rem_euclid(MICROS_PER_DAY) as u64;
        let seconds_of_day = micros_of_day / 1_000_000;
        push_decimal(buf, seconds_of_day / 3_600, 2);
        buf.push(':');
        push_decimal(buf, seconds_of_day / 60 % 60, 2);
        buf.push(':');
        push_decimal(buf, seconds_of_day % 60, 2);
        buf.push('.');
        push_decimal(buf, micros_of_day % 1_000_000, 6);
        buf.push('Z');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_format_like_chrono_rfc3339() {
        let mut formatter = TimestampFormatter::new();
        let day = 86_400_000_000;
        let samples = [
            0,
            1,
            999_999,
            day - 1,
            day,
            1_735_689_599_123_456,
            1_735_689_599_123_457,
        ];
        let extremes = [-1, -day, -day - 1, 253_402_300_799_999_999];
        for micros in samples.into_iter().chain(extremes) {
            let mut ours = String::new();
            formatter.append(&mut ours, micros);
            let chrono = DateTime::from_timestamp_micros(micros)
                .unwrap()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            assert_eq!(ours, chrono);
        }
    }
}
