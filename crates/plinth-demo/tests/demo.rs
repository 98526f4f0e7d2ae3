//! Properties of the generated demo: determinism, identity, the planted experiment and
//! outage, the calendar shape, and the NDJSON form.

use chrono::{DateTime, Datelike, Days, NaiveDate, Weekday};
use plinth_demo::{
    ACTIVATION_EVENT, CHECKOUT_EVENT, CHECKOUT_FAILED_EVENT, DemoConfig, DemoEvent,
    EXPERIMENT_FLAG, EXPERIMENT_VARIANTS, SIGNUP_EVENT, TRUE_ACTIVATION_LIFT, generate,
    generate_users, write_posthog_ndjson,
};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};

fn end_date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 6, 30).unwrap()
}

fn properties(event: &DemoEvent) -> Value {
    serde_json::from_str(&event.properties_json).expect("properties are JSON")
}

fn date_of(event: &DemoEvent) -> NaiveDate {
    DateTime::from_timestamp_micros(event.timestamp_micros)
        .unwrap()
        .date_naive()
}

#[test]
fn same_config_same_events_other_seed_other_events() {
    let config = DemoConfig::new(300, 30, 7, end_date());
    let first: Vec<DemoEvent> = generate(&config).collect();
    let second: Vec<DemoEvent> = generate(&config).collect();
    assert!(first.len() > 1_000, "{} events", first.len());
    assert_eq!(first, second);

    let reseeded: Vec<DemoEvent> = generate(&DemoConfig {
        seed: 8,
        ..config.clone()
    })
    .collect();
    assert_ne!(first.len(), 0);
    let uuids: HashSet<_> = first.iter().map(|e| e.uuid).collect();
    assert!(
        reseeded.iter().all(|e| !uuids.contains(&e.uuid)),
        "uuids repeat across seeds"
    );
    assert_ne!(
        first.iter().map(|e| e.timestamp_micros).collect::<Vec<_>>(),
        reseeded
            .iter()
            .map(|e| e.timestamp_micros)
            .collect::<Vec<_>>()
    );
}

#[test]
fn user_ranges_concatenate_to_the_whole() {
    let config = DemoConfig::new(200, 20, 3, end_date());
    let whole: Vec<DemoEvent> = generate(&config).collect();
    let mut pieces: Vec<DemoEvent> = generate_users(&config, 0..70).collect();
    pieces.extend(generate_users(&config, 70..150));
    pieces.extend(generate_users(&config, 150..1_000)); // clipped to the config's 200 users
    assert_eq!(whole, pieces);
}

#[test]
fn streams_lazily_at_any_size() {
    // Ten million users: a generator that built the data set up front would not return.
    let config = DemoConfig::new(10_000_000, 90, 1, end_date());
    assert_eq!(generate(&config).take(5_000).count(), 5_000);
}

#[test]
fn events_lie_in_the_window_in_time_order_per_user_with_unique_uuids() {
    let config = DemoConfig::new(2_000, 45, 11, end_date());
    let start = config
        .start_date()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp_micros();
    let end = (config.end_date + Days::new(1))
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp_micros();
    let mut uuids = HashSet::new();
    let mut last_seen: HashMap<String, i64> = HashMap::new();
    let mut anonymous_of: HashMap<String, String> = HashMap::new();
    for event in generate(&config) {
        assert!((start..end).contains(&event.timestamp_micros), "{event:?}");
        assert!(uuids.insert(event.uuid), "duplicate uuid {}", event.uuid);
        assert_eq!(event.uuid.get_version_num(), 7);
        assert!(event.session_id.is_some());
        // One person's events, under either id, never go back in time.
        let person = if event.event == "$identify" {
            let anonymous = properties(&event)["$anon_distinct_id"]
                .as_str()
                .unwrap()
                .to_owned();
            anonymous_of.insert(event.distinct_id.clone(), anonymous.clone());
            anonymous
        } else {
            anonymous_of
                .get(&event.distinct_id)
                .cloned()
                .unwrap_or(event.distinct_id.clone())
        };
        let previous = last_seen.insert(person, event.timestamp_micros);
        assert!(
            previous.is_none_or(|p| p <= event.timestamp_micros),
            "{event:?}"
        );
    }
}

#[test]
fn every_signed_up_user_is_identified_once_from_a_known_anonymous_id() {
    let config = DemoConfig::new(3_000, 60, 5, end_date());
    let events: Vec<DemoEvent> = generate(&config).collect();
    let anonymous_ids: HashSet<&str> = events
        .iter()
        .filter(|e| e.event == "$pageview" && !e.distinct_id.starts_with("user_"))
        .map(|e| e.distinct_id.as_str())
        .collect();
    let mut identifies: HashMap<&str, Vec<&DemoEvent>> = HashMap::new();
    for event in events.iter().filter(|e| e.event == "$identify") {
        identifies
            .entry(event.distinct_id.as_str())
            .or_default()
            .push(event);
    }
    let signed_up: Vec<&DemoEvent> = events.iter().filter(|e| e.event == SIGNUP_EVENT).collect();
    assert!(signed_up.len() > 500, "{} sign-ups", signed_up.len());
    let mut linked_anonymous_ids = HashSet::new();
    for signup in &signed_up {
        let [identify] = identifies[signup.distinct_id.as_str()][..] else {
            panic!(
                "{} is identified {} times",
                signup.distinct_id,
                identifies[signup.distinct_id.as_str()].len()
            );
        };
        assert!(identify.timestamp_micros <= signup.timestamp_micros);
        let props = properties(identify);
        let anonymous = props["$anon_distinct_id"]
            .as_str()
            .expect("$anon_distinct_id");
        assert!(
            anonymous_ids.contains(anonymous),
            "{anonymous} never visited"
        );
        assert!(
            linked_anonymous_ids.insert(anonymous.to_owned()),
            "{anonymous} linked twice"
        );
        for key in ["email", "name", "company", "company_size", "plan"] {
            assert!(
                props["$set"][key].is_string(),
                "$set.{key} missing: {props}"
            );
        }
        assert_eq!(props["$set"]["plan"], "free");
    }
    // Nobody sends an event under a user id before being identified.
    let identified_at: HashMap<&str, i64> = identifies
        .iter()
        .map(|(id, list)| (*id, list[0].timestamp_micros))
        .collect();
    for event in events.iter().filter(|e| e.distinct_id.starts_with("user_")) {
        assert!(event.timestamp_micros >= identified_at[event.distinct_id.as_str()]);
    }
}

#[test]
fn visits_carry_campaign_device_and_country_properties() {
    let config = DemoConfig::new(1_000, 30, 9, end_date());
    let mut with_utm = 0;
    let mut countries = HashSet::new();
    let mut devices = HashSet::new();
    for event in generate(&config).filter(|e| e.event == "$pageview") {
        let props = properties(&event);
        devices.insert(props["$device_type"].as_str().unwrap().to_owned());
        countries.insert(props["$geoip_country_code"].as_str().unwrap().to_owned());
        assert!(props["$browser"].is_string() && props["$os"].is_string());
        assert!(
            props["$current_url"]
                .as_str()
                .unwrap()
                .starts_with("https://")
        );
        if let Some(source) = props["utm_source"].as_str() {
            with_utm += 1;
            assert!(
                props["$current_url"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("utm_source={source}"))
            );
            assert!(props["utm_medium"].is_string() && props["utm_campaign"].is_string());
        }
    }
    assert!(with_utm > 200, "{with_utm} pageviews with UTM parameters");
    assert_eq!(
        devices,
        HashSet::from(["Desktop", "Mobile", "Tablet"].map(String::from))
    );
    assert!(countries.len() >= 15, "{countries:?}");
}

/// Exposure per user id (its variant) and the set of activated user ids.
fn experiment(config: &DemoConfig) -> (HashMap<String, String>, HashSet<String>, usize) {
    let mut variant_of = HashMap::new();
    let mut exposures = 0;
    let mut activated = HashSet::new();
    for event in generate(config) {
        if event.event == "$feature_flag_called" {
            let props = properties(&event);
            assert_eq!(props["$feature_flag"], EXPERIMENT_FLAG);
            let variant = props["$feature_flag_response"].as_str().unwrap().to_owned();
            assert!(EXPERIMENT_VARIANTS.contains(&variant.as_str()), "{variant}");
            exposures += 1;
            variant_of.insert(event.distinct_id, variant);
        } else if event.event == ACTIVATION_EVENT {
            assert!(
                variant_of.contains_key(&event.distinct_id),
                "activated before exposure"
            );
            activated.insert(event.distinct_id);
        }
    }
    (variant_of, activated, exposures)
}

#[test]
fn experiment_splits_evenly_and_shows_the_planted_lift() {
    // A short window keeps the run small while exposing many users; activation comes
    // within a week of exposure, so the window cuts both groups alike.
    let config = DemoConfig::new(100_000, 10, 2024, end_date());
    let (variant_of, activated, exposures) = experiment(&config);
    assert_eq!(exposures, variant_of.len(), "one exposure per user");
    let exposed = variant_of.len() as f64;
    assert!(exposed > 20_000.0, "{exposed} exposed");

    let test_users = variant_of.values().filter(|v| *v == "test").count() as f64;
    let test_share = test_users / exposed;
    // Four standard deviations of a fair split.
    let tolerance = 4.0 * (0.25 / exposed).sqrt();
    assert!(
        (test_share - 0.5).abs() < tolerance,
        "test share {test_share}"
    );

    let rate = |variant: &str| {
        let group: Vec<&String> = variant_of
            .iter()
            .filter(|(_, v)| *v == variant)
            .map(|(id, _)| id)
            .collect();
        let converted = group.iter().filter(|id| activated.contains(**id)).count();
        (converted as f64 / group.len() as f64, group.len() as f64)
    };
    let (control_rate, control_n) = rate("control");
    let (test_rate, test_n) = rate("test");
    let ratio = test_rate / control_rate;
    // Delta-method standard error of the ratio of two independent proportions.
    let relative_variance = (1.0 - control_rate) / (control_rate * control_n)
        + (1.0 - test_rate) / (test_rate * test_n);
    let standard_error = ratio * relative_variance.sqrt();
    let expected = 1.0 + TRUE_ACTIVATION_LIFT;
    assert!(
        (ratio - expected).abs() < 4.0 * standard_error,
        "measured ratio {ratio:.4} ± {standard_error:.4}, planted {expected}"
    );
    assert!(
        standard_error < 0.025,
        "too few users to see the lift: se {standard_error}"
    );
    assert!(
        (0.2..0.6).contains(&control_rate),
        "control activation {control_rate}"
    );
}

#[test]
fn checkout_outage_is_one_clear_day() {
    let config = DemoConfig::new(40_000, 90, 77, end_date());
    let outage = config.outage_date();
    let mut checkouts: BTreeMap<NaiveDate, f64> = BTreeMap::new();
    let mut failures = 0;
    for event in generate(&config) {
        if event.event == CHECKOUT_EVENT {
            *checkouts.entry(date_of(&event)).or_default() += 1.0;
        } else if event.event == CHECKOUT_FAILED_EVENT {
            assert_eq!(date_of(&event), outage, "a failure off the outage day");
            failures += 1;
        }
    }
    let count = |day: NaiveDate| checkouts.get(&day).copied().unwrap_or(0.0);
    assert_eq!(count(outage), 0.0);
    assert!(
        failures > 30,
        "{failures} failed checkouts on the outage day"
    );
    for neighbour in [outage - Days::new(1), outage + Days::new(1)] {
        assert!(
            count(neighbour) >= 40.0,
            "{neighbour}: {} checkouts",
            count(neighbour)
        );
    }

    // No other day stands out from the same weekday one and two weeks around it.
    let warm_up = config.start_date() + Days::new(28);
    let mut day = warm_up;
    let mut checked = 0;
    while day <= config.end_date {
        let neighbours: Vec<f64> = [-14i64, -7, 7, 14]
            .into_iter()
            .map(|offset| {
                day.checked_add_signed(chrono::Duration::days(offset))
                    .unwrap()
            })
            .filter(|d| *d != outage && *d >= warm_up && *d <= config.end_date)
            .map(count)
            .collect();
        if day != outage && neighbours.len() >= 2 {
            let baseline = neighbours.iter().sum::<f64>() / neighbours.len() as f64;
            let sd = (baseline * (1.0 + 1.0 / neighbours.len() as f64)).sqrt();
            let z = (count(day) - baseline) / sd;
            assert!(
                z.abs() < 4.5,
                "{day}: {} checkouts against {baseline:.1} (z = {z:.1})",
                count(day)
            );
            checked += 1;
        }
        day = day + Days::new(1);
    }
    assert!(checked > 50, "{checked} days checked");
}

#[test]
fn new_visitors_grow_and_prefer_weekdays() {
    let config = DemoConfig::new(8_000, 84, 13, end_date());
    let mut first_visit: HashMap<String, NaiveDate> = HashMap::new();
    for event in generate(&config).filter(|e| e.event == "$pageview") {
        let date = date_of(&event);
        first_visit
            .entry(event.distinct_id)
            .and_modify(|d| *d = (*d).min(date))
            .or_insert(date);
    }
    let mut per_day: BTreeMap<NaiveDate, f64> = BTreeMap::new();
    for date in first_visit.values() {
        *per_day.entry(*date).or_default() += 1.0;
    }
    let mean = |days: Vec<f64>| days.iter().sum::<f64>() / days.len() as f64;
    let weekend = |d: &NaiveDate| matches!(d.weekday(), Weekday::Sat | Weekday::Sun);
    let weekdays = mean(
        per_day
            .iter()
            .filter(|(d, _)| !weekend(d))
            .map(|(_, n)| *n)
            .collect(),
    );
    let weekends = mean(
        per_day
            .iter()
            .filter(|(d, _)| weekend(d))
            .map(|(_, n)| *n)
            .collect(),
    );
    assert!(
        weekends < 0.75 * weekdays,
        "weekend {weekends:.0} vs weekday {weekdays:.0}"
    );
    let first_weeks = mean(per_day.values().take(28).copied().collect());
    let last_weeks = mean(per_day.values().rev().take(28).copied().collect());
    assert!(
        last_weeks > 1.5 * first_weeks,
        "first {first_weeks:.0} vs last {last_weeks:.0}"
    );
}

#[test]
fn ndjson_lines_are_posthog_events() {
    let config = DemoConfig::new(400, 30, 21, end_date());
    let mut buffer = Vec::new();
    let written = write_posthog_ndjson(&config, &mut buffer).unwrap();
    let text = String::from_utf8(buffer).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(written, lines.len() as u64);
    let events: Vec<DemoEvent> = generate(&config).collect();
    assert_eq!(events.len(), lines.len());
    for (line, event) in lines.iter().zip(&events) {
        let json: Value = serde_json::from_str(line).expect("each line is JSON");
        let object = json.as_object().unwrap();
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["distinct_id", "event", "properties", "timestamp", "uuid"]
        );
        assert_eq!(
            json["uuid"]
                .as_str()
                .unwrap()
                .parse::<uuid::Uuid>()
                .unwrap(),
            event.uuid
        );
        assert_eq!(json["event"], event.event);
        assert_eq!(json["distinct_id"], event.distinct_id.as_str());
        let timestamp = json["timestamp"].as_str().unwrap();
        assert!(
            timestamp.ends_with('Z') && timestamp.len() == 27,
            "{timestamp}"
        );
        let parsed = DateTime::parse_from_rfc3339(timestamp).unwrap();
        assert_eq!(parsed.timestamp_micros(), event.timestamp_micros);
        let mut expected_properties = properties(event);
        expected_properties["$session_id"] = event.session_id.clone().unwrap().into();
        assert_eq!(json["properties"], expected_properties);
        assert_eq!(event.to_posthog_json(), *line);
    }
}
