//! The demo product: a deterministic generator of PostHog-shaped events for a fictional
//! SaaS app ("Hatchboard"), for `plinth demo`, tests and benchmarks.
//!
//! Over a window of days it simulates anonymous visits (UTM parameters, referrers, devices,
//! countries), sign-up with `$identify` linking the anonymous id to the user id, onboarding,
//! activation, feature use, checkout and upgrade to a paid plan, and churn, with weekly
//! seasonality and growth in new visitors. Planted on top, for the rest of Plinth to find:
//!
//! - an A/B test, [`EXPERIMENT_FLAG`], split 50/50 by a hash of the user id, exposed with
//!   `$feature_flag_called`, whose `test` variant raises the probability of
//!   [`ACTIVATION_EVENT`] by exactly [`TRUE_ACTIVATION_LIFT`] (relative);
//! - a one-day outage of checkout on [`DemoConfig::outage_date`]: no [`CHECKOUT_EVENT`] that
//!   day, [`CHECKOUT_FAILED_EVENT`] instead, all other traffic normal.
//!
//! Output is a pure function of [`DemoConfig`]: every random draw comes from a ChaCha8
//! stream keyed by the seed and the user's index, so users are generated one at a time
//! (bounded memory at any size), in any order or in parallel ranges ([`generate_users`]).
//! Events of one user come out together in time order; the stream as a whole is not in
//! global time order.
//!
//! This crate owns the behaviour model and the PostHog event shape of the demo. It must
//! never depend on the store, the engine, the server or any I/O beyond `std::io::Write`:
//! callers decide where events go.

mod config;
mod json;
mod ndjson;
mod product;
mod random;
mod simulate;

pub use config::DemoConfig;
pub use ndjson::write_posthog_ndjson;

use simulate::{Calendar, simulate_user};
use std::ops::Range;

/// The feature flag of the planted A/B test; its variants are "control" and "test".
pub const EXPERIMENT_FLAG: &str = "new-onboarding";
/// The variants of [`EXPERIMENT_FLAG`], assigned 50/50.
pub const EXPERIMENT_VARIANTS: [&str; 2] = ["control", "test"];
/// The planted relative lift of the activation probability of "test" over "control":
/// a test user activates with probability `p × (1 + TRUE_ACTIVATION_LIFT)` where a control
/// user with the same profile activates with probability `p`.
pub const TRUE_ACTIVATION_LIFT: f64 = 0.15;

/// Sent once when a user signs up, right after `$identify`.
pub const SIGNUP_EVENT: &str = "signed up";
/// Activation: the user's first project. Only activated users ever send it, once.
pub const ACTIVATION_EVENT: &str = "project created";
/// Start of checkout, on the billing page.
pub const CHECKOUT_STARTED_EVENT: &str = "checkout started";
/// A successful payment (`item`: a plan, or "extra seats"); absent on the outage day.
pub const CHECKOUT_EVENT: &str = "checkout completed";
/// What users who reach payment on the outage day get instead of [`CHECKOUT_EVENT`].
pub const CHECKOUT_FAILED_EVENT: &str = "checkout failed";

/// One generated event.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoEvent {
    /// A UUIDv7 at the event's millisecond whose random bits come from the seed.
    pub uuid: uuid::Uuid,
    /// PostHog-style name: "$pageview", "$identify", "$feature_flag_called", "signed up", ...
    pub event: &'static str,
    /// The anonymous id (a UUIDv7 string) before sign-up, the user id (`user_000123`) from
    /// `$identify` on; `$identify` carries the anonymous id as `$anon_distinct_id`.
    pub distinct_id: String,
    /// UTC microseconds since the Unix epoch, inside the config's window.
    pub timestamp_micros: i64,
    /// The session (a UUIDv7 string); every generated event has one.
    pub session_id: Option<String>,
    /// A JSON object of the event's properties, without `$session_id` (that is
    /// `session_id`; [`DemoEvent::to_posthog_json`] adds it).
    pub properties_json: String,
}

impl DemoEvent {
    /// The event as PostHog's capture API shapes it: `{"uuid", "event", "distinct_id",
    /// "timestamp" (RFC 3339, microseconds, `Z`), "properties"}`, with `$session_id` in the
    /// properties. One line, no trailing newline.
    pub fn to_posthog_json(&self) -> String {
        let mut line = String::with_capacity(self.properties_json.len() + 192);
        self.append_posthog_json(&mut line, &mut ndjson::TimestampFormatter::new());
        line
    }

    pub(crate) fn append_posthog_json(
        &self,
        line: &mut String,
        timestamps: &mut ndjson::TimestampFormatter,
    ) {
        line.push_str("{\"uuid\":\"");
        line.push_str(
            self.uuid
                .hyphenated()
                .encode_lower(&mut uuid::Uuid::encode_buffer()),
        );
        line.push_str("\",\"event\":");
        json::write_string(line, self.event);
        line.push_str(",\"distinct_id\":");
        json::write_string(line, &self.distinct_id);
        line.push_str(",\"timestamp\":\"");
        timestamps.append(line, self.timestamp_micros);
        line.push_str("\",\"properties\":");
        match &self.session_id {
            Some(session_id) => {
                let open = &self.properties_json[..self.properties_json.len() - 1];
                line.push_str(open);
                if open.len() > 1 {
                    line.push(',');
                }
                line.push_str("\"$session_id\":");
                json::write_string(line, session_id);
                line.push('}');
            }
            None => line.push_str(&self.properties_json),
        }
        line.push('}');
    }
}

/// Every event of the demo data set, user by user. Memory stays bounded by one user's
/// events, whatever `config.users`.
pub fn generate(config: &DemoConfig) -> impl Iterator<Item = DemoEvent> + Send + use<> {
    generate_users(config, 0..config.users)
}

/// The events of users `users` (indexes into `0..config.users`, clipped to it), exactly as
/// [`generate`] yields them: splitting `0..config.users` into ranges and generating them on
/// separate threads gives the same events.
pub fn generate_users(
    config: &DemoConfig,
    users: Range<u64>,
) -> impl Iterator<Item = DemoEvent> + Send + use<> {
    let users = users.start.min(config.users)..users.end.min(config.users);
    DemoEvents {
        calendar: Calendar::new(config),
        users,
        pending: Vec::new(),
    }
}

struct DemoEvents {
    calendar: Calendar,
    users: Range<u64>,
    /// The current user's remaining events, last event first so `pop` yields time order.
    pending: Vec<DemoEvent>,
}

impl Iterator for DemoEvents {
    type Item = DemoEvent;

    fn next(&mut self) -> Option<DemoEvent> {
        loop {
            if let Some(event) = self.pending.pop() {
                return Some(event);
            }
            let user = self.users.next()?;
            simulate_user(&self.calendar, user, &mut self.pending);
            self.pending.reverse();
        }
    }
}
