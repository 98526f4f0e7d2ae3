//! The behaviour model: one simulated user at a time, from the first anonymous visit to
//! churn, written as that user's events in time order.
//!
//! The life of a user:
//! 1. a first visit on a day drawn from the growth-and-seasonality curve, through an
//!    acquisition channel (UTM parameters and referrer), on one device from one country;
//! 2. sign-up, either during that visit or on a later return visit: `$identify` links the
//!    anonymous id to the new user id, then "signed up";
//! 3. onboarding: the `new-onboarding` flag is evaluated (`$feature_flag_called`), then up
//!    to three checklist steps;
//! 4. activation ([`crate::ACTIVATION_EVENT`]), with the experiment's lift
//!    for the test group, the same day or within a week;
//! 5. active days of feature use until churn; on some of them checkout: an upgrade to a
//!    paid plan for a free user, extra seats for a paid one; paid users churn more slowly
//!    and cancel when they leave.
//!
//! Visitors who never sign up browse the marketing site a few times; users who sign up but
//! do not activate come back to the app a few times and leave.

use crate::json::JsonObject;
use crate::product::{self, Acquisition, CompanySize, Feature, Plan};
use crate::random::{UserRng, flag_bucket, uuid_v7_at};
use crate::{
    ACTIVATION_EVENT, CHECKOUT_EVENT, CHECKOUT_FAILED_EVENT, CHECKOUT_STARTED_EVENT, DemoConfig,
    DemoEvent, EXPERIMENT_FLAG, SIGNUP_EVENT, TRUE_ACTIVATION_LIFT,
};
use chrono::{Datelike, Days, Weekday};

const MICROS_PER_SECOND: i64 = 1_000_000;
const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

/// New visitors per day grow by this factor from the first to the last day of the window.
const GROWTH_OVER_WINDOW: f64 = 2.5;
/// Base probability that a visitor signs up, before channel and device factors.
const BASE_SIGNUP: f64 = 0.36;
/// Probability that a visitor who signs up does so during the first visit.
const SIGNUP_ON_FIRST_VISIT: f64 = 0.55;
/// Probability that an activating user activates in the sign-up session.
const ACTIVATE_SAME_SESSION: f64 = 0.6;
/// Daily churn hazard of an activated user on the free plan, and on a paid plan.
const FREE_CHURN: f64 = 0.02;
const PAID_CHURN: f64 = 0.005;
/// Probability that an activated user uses the product on a weekday and on a weekend day,
/// before the user's own engagement factor.
const WEEKDAY_ACTIVE: f64 = 0.6;
const WEEKEND_ACTIVE: f64 = 0.25;
/// Share of annual billing among upgrades.
const ANNUAL_BILLING: f64 = 0.25;
/// Daily probability that an active paid user buys extra seats.
const SEAT_PURCHASE: f64 = 0.10;
/// Price of one extra seat per month.
const SEAT_PRICE_USD: i64 = 12;

/// Everything about the window that does not depend on the user, computed once.
pub(crate) struct Calendar {
    seed: u64,
    days: u32,
    start_micros: i64,
    end_micros: i64,
    weekend: Vec<bool>,
    first_visit_cumulative: Vec<f64>,
    hour_cumulative: [f64; 24],
    outage_day: u32,
}

impl Calendar {
    pub(crate) fn new(config: &DemoConfig) -> Self {
        let days = config.day_count();
        let start = config.start_date();
        let start_micros = start
            .and_hms_opt(0, 0, 0)
            .expect("midnight exists")
            .and_utc()
            .timestamp_micros();
        let dates = (0..days).map(|day| start + Days::new(u64::from(day)));
        let weekend: Vec<bool> = dates
            .clone()
            .map(|date| matches!(date.weekday(), Weekday::Sat | Weekday::Sun))
            .collect();
        // Linear growth: only IEEE-exact arithmetic, so the curve, unlike one through `exp`,
        // is bit-identical on every platform.
        let growth_per_day = (GROWTH_OVER_WINDOW - 1.0) / f64::from((days - 1).max(1));
        let visit_weights = dates.enumerate().map(|(day, date)| {
            let weekly = match date.weekday() {
                Weekday::Sat => 0.55,
                Weekday::Sun => 0.6,
                Weekday::Fri => 0.9,
                _ => 1.0,
            };
            weekly * (1.0 + growth_per_day * day as f64)
        });
        Self {
            seed: config.seed,
            days,
            start_micros,
            end_micros: start_micros + i64::from(days) * MICROS_PER_DAY,
            weekend,
            first_visit_cumulative: cumulative(visit_weights),
            hour_cumulative: cumulative(product::HOUR_WEIGHTS.iter().copied())
                .try_into()
                .expect("24 hours in, 24 out"),
            outage_day: (config.outage_date() - start).num_days() as u32,
        }
    }

    fn day_of(&self, micros: i64) -> i64 {
        (micros - self.start_micros).div_euclid(MICROS_PER_DAY)
    }
}

/// Running sums of `weights`, divided by the total: a cumulative distribution.
fn cumulative(weights: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut running = 0.0;
    let mut sums: Vec<f64> = weights
        .map(|weight| {
            running += weight;
            running
        })
        .collect();
    for sum in &mut sums {
        *sum /= running;
    }
    sums
}

/// Appends every event of user `index` to `out`, in time order.
pub(crate) fn simulate_user(calendar: &Calendar, index: u64, out: &mut Vec<DemoEvent>) {
    let mut rng = UserRng::new(calendar.seed, index);
    let acquisition = rng.pick(product::ACQUISITIONS, |a| a.weight);
    let device = rng.pick(product::DEVICES, |d| d.weight);
    let &(os, browser, _) = rng.pick(device.platforms, |p| p.2);
    let &(country, _) = rng.pick(product::COUNTRIES, |c| c.1);
    let mut common = JsonObject::with_capacity(128);
    common
        .str("$device_type", device.device_type)
        .str("$os", os)
        .str("$browser", browser)
        .str("$geoip_country_code", country)
        .str("$lib", "web");
    let signup_probability = BASE_SIGNUP * acquisition.signup_factor * device.signup_factor;
    let mut user = User {
        calendar,
        rng,
        out,
        index,
        common_properties: common.finish(),
        distinct_id: String::new(),
        clock: i64::MIN,
        session_id: String::new(),
    };
    user.live(acquisition, signup_probability);
}

/// The state of the user being simulated.
struct User<'a> {
    calendar: &'a Calendar,
    rng: UserRng,
    out: &'a mut Vec<DemoEvent>,
    index: u64,
    /// Device, browser and country properties, the same on every event of this user.
    common_properties: String,
    distinct_id: String,
    /// Time of the next event; sessions and steps move it forward only.
    clock: i64,
    session_id: String,
}

impl User<'_> {
    fn live(&mut self, acquisition: &Acquisition, signup_probability: f64) {
        let calendar = self.calendar;
        let first_day = self
            .rng
            .index_by_cumulative(&calendar.first_visit_cumulative) as u32;
        let signup_day = self.rng.chance(signup_probability).then(|| {
            if self.rng.chance(SIGNUP_ON_FIRST_VISIT) {
                first_day
            } else {
                first_day + 1 + self.rng.geometric(0.3, 19)
            }
        });

        self.start_session(first_day);
        self.distinct_id = uuid_v7_at(self.clock, &mut self.rng).to_string();
        self.landing_pageview(acquisition);
        let extra_pages = self.rng.geometric(0.45, 5);
        self.browse_marketing(extra_pages);

        match signup_day {
            Some(day) if day == first_day => self.sign_up(acquisition),
            Some(day) if day < calendar.days => {
                self.start_session(day);
                self.pageview(product::MARKETING_HOST, "/");
                let pages = self.rng.geometric(0.6, 2);
                self.browse_marketing(pages);
                self.sign_up(acquisition);
            }
            // Signs up after the window: only the first visit is seen.
            Some(_) => {}
            None => self.return_as_visitor(first_day),
        }
    }

    /// A visitor who never signs up comes back a few times to read the site.
    fn return_as_visitor(&mut self, first_day: u32) {
        let visits = self.rng.geometric(0.55, 4);
        let mut day = first_day;
        for _ in 0..visits {
            day += 1 + self.rng.geometric(0.2, 20);
            if day >= self.calendar.days {
                return;
            }
            self.start_session(day);
            self.pageview(product::MARKETING_HOST, "/");
            let pages = self.rng.geometric(0.5, 4);
            self.browse_marketing(pages);
        }
    }

    fn sign_up(&mut self, acquisition: &Acquisition) {
        let signup_day = self.calendar.day_of(self.clock) as u32;
        self.pageview(product::MARKETING_HOST, "/signup");
        self.advance(20, 120);

        let anonymous_id =
            std::mem::replace(&mut self.distinct_id, format!("user_{:06}", self.index));
        let size = self.rng.pick(product::COMPANY_SIZES, |s| s.weight);
        let &(role, _) = self.rng.pick(product::ROLES, |r| r.1);
        let &(signup_method, _) = self.rng.pick(product::SIGNUP_METHODS, |m| m.1);
        let first =
            product::FIRST_NAMES[self.rng.below(product::FIRST_NAMES.len() as u64) as usize];
        let last = product::LAST_NAMES[self.rng.below(product::LAST_NAMES.len() as u64) as usize];
        let company = product::COMPANIES[self.rng.below(product::COMPANIES.len() as u64) as usize];
        let email = format!("{first}.{last}.{}@{company}.example", self.index);

        let mut identify = self.properties(384);
        identify.str("$anon_distinct_id", &anonymous_id);
        identify
            .begin_object("$set")
            .str("email", &email)
            .str(
                "name",
                &format!("{} {}", capitalised(first), capitalised(last)),
            )
            .str("company", company)
            .str("company_size", size.label)
            .str("role", role)
            .str("plan", "free")
            .str("signup_method", signup_method)
            .end_object();
        identify.begin_object("$set_once");
        identify.str("$initial_referring_domain", acquisition.referring_domain);
        if let Some((source, medium, campaign)) = acquisition.utm {
            identify
                .str("$initial_utm_source", source)
                .str("$initial_utm_medium", medium)
                .str("$initial_utm_campaign", campaign);
        }
        identify.end_object();
        self.emit("$identify", identify.finish());

        self.advance(0, 1);
        let mut signed_up = self.properties(192);
        signed_up
            .str("signup_method", signup_method)
            .str("company_size", size.label);
        self.emit(SIGNUP_EVENT, signed_up.finish());

        self.onboard(size, signup_day);
    }

    fn onboard(&mut self, size: &CompanySize, signup_day: u32) {
        let variant = if flag_bucket(EXPERIMENT_FLAG, &self.distinct_id) < 0.5 {
            "control"
        } else {
            "test"
        };
        self.advance(1, 3);
        let mut exposure = self.properties(256);
        exposure
            .str("$feature_flag", EXPERIMENT_FLAG)
            .str("$feature_flag_response", variant)
            .str(FEATURE_PROPERTY, variant);
        self.emit("$feature_flag_called", exposure.finish());

        let lift = if variant == "test" {
            1.0 + TRUE_ACTIVATION_LIFT
        } else {
            1.0
        };
        let activates = self.rng.chance(size.activation * lift);
        // Activating users work through the checklist; the others drop off along it.
        let step_odds: [f64; 3] = if activates {
            [1.0, 0.97, 0.85]
        } else {
            [0.7, 0.55, 0.35]
        };
        self.pageview(product::APP_HOST, "/onboarding");
        for (step, (&name, &odds)) in product::ONBOARDING_STEPS.iter().zip(&step_odds).enumerate() {
            if !self.rng.chance(odds) {
                break;
            }
            self.advance(15, 240);
            let mut completed = self.properties(256);
            completed
                .int("step", step as i64 + 1)
                .str("step_name", name)
                .str(FEATURE_PROPERTY, variant);
            self.emit("onboarding step completed", completed.finish());
        }

        if !activates {
            self.drift_away(signup_day);
            return;
        }
        let activation_day = if self.rng.chance(ACTIVATE_SAME_SESSION) {
            signup_day
        } else {
            let day = signup_day + 1 + self.rng.geometric(0.45, 6);
            if day >= self.calendar.days {
                return;
            }
            self.start_session(day);
            self.pageview(product::APP_HOST, "/home");
            day
        };
        self.pageview(product::APP_HOST, "/projects/new");
        self.advance(20, 180);
        let &(project_type, _) = self.rng.pick(product::PROJECT_TYPES, |p| p.1);
        let mut created = self.properties(256);
        created
            .str("project_type", project_type)
            .bool("from_onboarding", activation_day == signup_day)
            .str(FEATURE_PROPERTY, variant);
        self.emit(ACTIVATION_EVENT, created.finish());
        let first_actions = 1 + self.rng.geometric(0.35, 10);
        self.use_features(first_actions);
        self.stay_active(size, activation_day);
    }

    /// A signed-up user who did not activate looks around the app a few times, then leaves.
    fn drift_away(&mut self, signup_day: u32) {
        let visits = self.rng.geometric(0.5, 3);
        let mut day = signup_day;
        for _ in 0..visits {
            day += 1 + self.rng.geometric(0.3, 12);
            if day >= self.calendar.days {
                return;
            }
            self.start_session(day);
            let pages = 1 + self.rng.geometric(0.5, 3);
            for _ in 0..pages {
                let &(path, _) = self.rng.pick(product::ONBOARDING_PAGES, |p| p.1);
                self.pageview(product::APP_HOST, path);
            }
        }
    }

    /// Active days from the day after activation until churn or the end of the window.
    fn stay_active(&mut self, size: &CompanySize, activation_day: u32) {
        // Some users live in the product, others drop by: scales the daily activity.
        let engagement = 0.5 + self.rng.unit();
        let mut paid: Option<Plan> = None;
        for day in activation_day + 1..self.calendar.days {
            let churn = if paid.is_some() {
                PAID_CHURN
            } else {
                FREE_CHURN
            };
            if self.rng.chance(churn) {
                if let Some(plan) = paid {
                    self.cancel(day, plan);
                }
                return;
            }
            let base = if self.calendar.weekend[day as usize] {
                WEEKEND_ACTIVE
            } else {
                WEEKDAY_ACTIVE
            };
            if !self.rng.chance(base * engagement) {
                continue;
            }
            self.start_session(day);
            self.pageview(product::APP_HOST, "/home");
            let actions = 2 + self.rng.geometric(0.11, 60);
            self.use_features(actions);
            if paid.is_none() {
                if self.rng.chance(size.upgrade) && self.checkout(Purchase::Upgrade(size.plan)) {
                    paid = Some(size.plan);
                }
            } else if self.rng.chance(SEAT_PURCHASE) {
                let seats = 1 + self.rng.geometric(0.5, 8);
                self.checkout(Purchase::Seats(seats));
            }
        }
    }

    fn use_features(&mut self, actions: u32) {
        for _ in 0..actions {
            let feature: &Feature = self.rng.pick(product::FEATURES, |f| f.weight);
            self.pageview(product::APP_HOST, feature.path);
            if self.rng.chance(0.75) {
                self.advance(3, 90);
                let detail = feature.detail_values
                    [self.rng.below(feature.detail_values.len() as u64) as usize];
                let mut used = self.properties(192);
                used.str(feature.detail_key, detail);
                self.emit(feature.event, used.finish());
            }
        }
    }

    /// Checkout of `purchase`; returns whether it went through. On the outage day the
    /// payment step fails for everyone.
    fn checkout(&mut self, purchase: Purchase) -> bool {
        let (item, period, amount) = match purchase {
            Purchase::Upgrade(plan) if self.rng.chance(ANNUAL_BILLING) => {
                (plan.name, "annual", plan.annual_usd)
            }
            Purchase::Upgrade(plan) => (plan.name, "monthly", plan.monthly_usd),
            Purchase::Seats(seats) => ("extra seats", "monthly", i64::from(seats) * SEAT_PRICE_USD),
        };
        self.pageview(product::APP_HOST, "/settings/billing");
        self.advance(10, 60);
        let mut started = self.properties(192);
        started
            .str("item", item)
            .str("billing_period", period)
            .int("amount_usd", amount);
        self.emit(CHECKOUT_STARTED_EVENT, started.finish());

        self.advance(20, 150);
        if self.calendar.day_of(self.clock) == i64::from(self.calendar.outage_day) {
            let mut failed = self.properties(192);
            failed
                .str("item", item)
                .str("error", "payment_provider_unavailable");
            self.emit(CHECKOUT_FAILED_EVENT, failed.finish());
            return false;
        }
        let mut completed = self.properties(192);
        completed
            .str("item", item)
            .str("billing_period", period)
            .int("amount_usd", amount)
            .str("currency", "USD");
        self.emit(CHECKOUT_EVENT, completed.finish());
        let Purchase::Upgrade(plan) = purchase else {
            return true;
        };

        self.advance(1, 3);
        let mut upgraded = self.properties(192);
        upgraded.str("plan", plan.name).str("previous_plan", "free");
        upgraded
            .begin_object("$set")
            .str("plan", plan.name)
            .end_object();
        self.emit("subscription upgraded", upgraded.finish());
        true
    }

    fn cancel(&mut self, day: u32, plan: Plan) {
        self.start_session(day);
        self.pageview(product::APP_HOST, "/settings/billing");
        self.advance(20, 200);
        let &(reason, _) = self.rng.pick(product::CHURN_REASONS, |r| r.1);
        let mut cancelled = self.properties(192);
        cancelled.str("plan", plan.name).str("reason", reason);
        cancelled
            .begin_object("$set")
            .str("plan", "free")
            .end_object();
        self.emit("subscription cancelled", cancelled.finish());
    }

    fn landing_pageview(&mut self, acquisition: &Acquisition) {
        let home = ["https://", product::MARKETING_HOST, "/"];
        let mut view = self.properties(384);
        match acquisition.utm {
            Some((source, medium, campaign)) => view.str_joined(
                "$current_url",
                &[
                    home[0],
                    home[1],
                    home[2],
                    "?utm_source=",
                    source,
                    "&utm_medium=",
                    medium,
                    "&utm_campaign=",
                    campaign,
                ],
            ),
            None => view.str_joined("$current_url", &home),
        };
        view.str("$host", product::MARKETING_HOST)
            .str("$pathname", "/")
            .str("$referrer", acquisition.referrer)
            .str("$referring_domain", acquisition.referring_domain);
        // posthog-js copies campaign parameters onto the event without a `$`.
        if let Some((source, medium, campaign)) = acquisition.utm {
            view.str("utm_source", source)
                .str("utm_medium", medium)
                .str("utm_campaign", campaign);
        }
        self.emit("$pageview", view.finish());
    }

    fn browse_marketing(&mut self, pages: u32) {
        for _ in 0..pages {
            let &(path, _) = self.rng.pick(product::MARKETING_PAGES, |p| p.1);
            self.pageview(product::MARKETING_HOST, path);
        }
    }

    fn pageview(&mut self, host: &str, path: &str) {
        self.advance(5, 120);
        let mut view = self.properties(256);
        view.str_joined("$current_url", &["https://", host, path])
            .str("$host", host)
            .str("$pathname", path);
        self.emit("$pageview", view.finish());
    }

    /// Starts a session on `day` at an hour drawn from the daily rhythm, never before the
    /// end of the user's previous session.
    fn start_session(&mut self, day: u32) {
        let hour = self.rng.index_by_cumulative(&self.calendar.hour_cumulative) as i64;
        let drawn = self.calendar.start_micros
            + i64::from(day) * MICROS_PER_DAY
            + hour * 3_600 * MICROS_PER_SECOND
            + self.rng.between(0, 3_600 * MICROS_PER_SECOND - 1);
        let earliest = self.clock.saturating_add(30 * 60 * MICROS_PER_SECOND);
        self.clock = drawn.max(earliest);
        self.session_id = uuid_v7_at(self.clock, &mut self.rng).to_string();
    }

    /// Moves the clock on by a random pause of `min_seconds..=max_seconds` seconds.
    fn advance(&mut self, min_seconds: i64, max_seconds: i64) {
        self.clock += self.rng.between(
            min_seconds * MICROS_PER_SECOND,
            max_seconds * MICROS_PER_SECOND,
        );
    }

    /// A properties object that already holds the user's common properties.
    fn properties(&self, capacity: usize) -> JsonObject {
        JsonObject::extending(&self.common_properties, capacity)
    }

    /// Records an event at the clock; events past the end of the window are not recorded.
    fn emit(&mut self, event: &'static str, properties_json: String) {
        if self.clock >= self.calendar.end_micros {
            return;
        }
        self.out.push(DemoEvent {
            uuid: uuid_v7_at(self.clock, &mut self.rng),
            event,
            distinct_id: self.distinct_id.clone(),
            timestamp_micros: self.clock,
            session_id: Some(self.session_id.clone()),
            properties_json,
        });
    }
}

/// What a checkout buys: a paid plan for a free user, extra seats for a paid one.
#[derive(Clone, Copy)]
enum Purchase {
    Upgrade(Plan),
    Seats(u32),
}

/// posthog-js adds `$feature/<flag>` with the variant to events after a flag is evaluated.
const FEATURE_PROPERTY: &str = "$feature/new-onboarding";

fn capitalised(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_property_names_the_experiment_flag() {
        assert_eq!(FEATURE_PROPERTY, format!("$feature/{EXPERIMENT_FLAG}"));
    }

    #[test]
    fn lifted_activation_stays_a_probability() {
        for size in product::COMPANY_SIZES {
            assert!(
                size.activation * (1.0 + TRUE_ACTIVATION_LIFT) < 1.0,
                "{}",
                size.label
            );
        }
    }

    #[test]
    fn cumulative_weights_end_at_one_and_keep_proportions() {
        let sums = cumulative([1.0, 3.0, 4.0].into_iter());
        assert_eq!(sums, vec![0.125, 0.5, 1.0]);
    }
}
