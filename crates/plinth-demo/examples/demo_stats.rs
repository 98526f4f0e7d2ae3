//! Measures the generator and summarises what it generated.
//!
//! `cargo run --release --example demo_stats -- [users] [days] [seed]` prints the
//! throughput (events per second on this one thread), events per user, counts per event
//! name, the experiment's measured activation rates and the daily series of checkouts.

use chrono::{Days, NaiveDate};
use plinth_demo::{
    ACTIVATION_EVENT, CHECKOUT_EVENT, DemoConfig, EXPERIMENT_FLAG, generate, write_posthog_ndjson,
};
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|arg| arg.parse::<u64>().expect("a number"));
    let users = args.next().unwrap_or(DemoConfig::DEFAULT_USERS);
    let days = args
        .next()
        .map_or(DemoConfig::DEFAULT_DAYS, |days| days as u32);
    let seed = args.next().unwrap_or(DemoConfig::DEFAULT_SEED);
    let end_date = NaiveDate::from_ymd_opt(2025, 6, 30).expect("a valid date");
    let config = DemoConfig::new(users, days, seed, end_date);

    let started = Instant::now();
    let mut events = 0u64;
    let mut property_bytes = 0usize;
    for event in generate(&config) {
        events += 1;
        property_bytes += event.properties_json.len();
    }
    let generation = started.elapsed().as_secs_f64();
    println!(
        "generate: {events} events for {users} users ({:.1} per user) in {generation:.3} s = {:.2} M events/s, {:.0} bytes of properties per event",
        events as f64 / users as f64,
        events as f64 / generation / 1e6,
        property_bytes as f64 / events as f64,
    );

    let started = Instant::now();
    let written = write_posthog_ndjson(&config, std::io::sink()).expect("a sink accepts all");
    let writing = started.elapsed().as_secs_f64();
    println!(
        "write_posthog_ndjson to a sink: {written} events in {writing:.3} s = {:.2} M events/s",
        written as f64 / writing / 1e6
    );

    let mut per_name: BTreeMap<&str, u64> = BTreeMap::new();
    let mut variant_of: HashMap<String, String> = HashMap::new();
    let mut activated: Vec<String> = Vec::new();
    let mut checkouts_per_day: BTreeMap<NaiveDate, u64> = BTreeMap::new();
    for event in generate(&config) {
        *per_name.entry(event.event).or_default() += 1;
        if event.event == "$feature_flag_called" {
            let properties: serde_json::Value =
                serde_json::from_str(&event.properties_json).expect("valid JSON");
            assert_eq!(properties["$feature_flag"], EXPERIMENT_FLAG);
            let variant = properties["$feature_flag_response"]
                .as_str()
                .unwrap()
                .to_owned();
            variant_of.insert(event.distinct_id, variant);
        } else if event.event == ACTIVATION_EVENT {
            activated.push(event.distinct_id);
        } else if event.event == CHECKOUT_EVENT {
            let day = chrono::DateTime::from_timestamp_micros(event.timestamp_micros)
                .unwrap()
                .date_naive();
            *checkouts_per_day.entry(day).or_default() += 1;
        }
    }
    for (name, count) in &per_name {
        println!("{count:>10}  {name}");
    }
    for variant in ["control", "test"] {
        let exposed = variant_of.values().filter(|v| *v == variant).count();
        let converted = activated
            .iter()
            .filter(|id| variant_of.get(*id).is_some_and(|v| v == variant))
            .count();
        println!(
            "{variant}: {exposed} exposed, activation {:.4}",
            converted as f64 / exposed as f64
        );
    }
    println!("outage date: {}", config.outage_date());
    let mut day = config.start_date();
    while day <= config.end_date {
        let count = checkouts_per_day.get(&day).copied().unwrap_or(0);
        println!(
            "{day} {:<3} {count:>6} {}",
            day.format("%a"),
            "#".repeat((count as usize).min(120))
        );
        day = day + Days::new(1);
    }
}
