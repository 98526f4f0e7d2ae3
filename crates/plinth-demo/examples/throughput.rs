//! One pass of the generator, for timing under `perf stat -e task-clock` (CPU time, which
//! other work on a busy machine does not inflate the way it inflates wall time).
//!
//! `cargo run --release --example throughput -- generate|ndjson [users] [days] [seed]`
//! consumes `generate` (counting events) or writes `write_posthog_ndjson` to a sink, and
//! prints the event count and the wall-clock rate.

use chrono::NaiveDate;
use plinth_demo::{DemoConfig, generate, write_posthog_ndjson};
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "generate".to_owned());
    let mut numbers = args.map(|arg| arg.parse::<u64>().expect("a number"));
    let users = numbers.next().unwrap_or(DemoConfig::DEFAULT_USERS);
    let days = numbers
        .next()
        .map_or(DemoConfig::DEFAULT_DAYS, |days| days as u32);
    let seed = numbers.next().unwrap_or(DemoConfig::DEFAULT_SEED);
    let end_date = NaiveDate::from_ymd_opt(2025, 6, 30).expect("a valid date");
    let config = DemoConfig::new(users, days, seed, end_date);

    let started = Instant::now();
    let events = match mode.as_str() {
        "generate" => generate(&config).count() as u64,
        "ndjson" => write_posthog_ndjson(&config, std::io::sink()).expect("a sink accepts all"),
        other => panic!("unknown mode {other:?}: use generate or ndjson"),
    };
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{mode}: {events} events, {users} users, {:.1} events/user, {:.2} M events/s wall clock",
        events as f64 / users as f64,
        events as f64 / seconds / 1e6
    );
}
