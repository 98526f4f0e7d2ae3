//! What to generate: how many users, over which days, from which seed.

use chrono::{Datelike, Days, NaiveDate};

/// Longest look-back of the planted checkout outage from the last day.
const OUTAGE_DAYS_BEFORE_END: u32 = 20;

/// The demo data set to generate. Equal configs give identical events.
///
/// The window is the `days` calendar days (UTC) ending with `end_date`, both ends included;
/// a `days` of 0 is treated as 1.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DemoConfig {
    /// Distinct people who visit the site; each starts anonymous, and some sign up.
    pub users: u64,
    /// Length of the window in days.
    pub days: u32,
    /// Seed of every random choice.
    pub seed: u64,
    /// Last day of the window (UTC).
    pub end_date: NaiveDate,
}

impl DemoConfig {
    /// The default size: 10,000 users.
    pub const DEFAULT_USERS: u64 = 10_000;
    /// The default window: 90 days.
    pub const DEFAULT_DAYS: u32 = 90;
    /// The seed `plinth demo` uses unless told otherwise.
    pub const DEFAULT_SEED: u64 = 42;

    pub fn new(users: u64, days: u32, seed: u64, end_date: NaiveDate) -> Self {
        Self {
            users,
            days,
            seed,
            end_date,
        }
    }

    /// Number of days in the window, at least 1.
    pub fn day_count(&self) -> u32 {
        self.days.max(1)
    }

    /// First day of the window (UTC).
    pub fn start_date(&self) -> NaiveDate {
        self.end_date - Days::new(u64::from(self.day_count() - 1))
    }

    /// The day (UTC) on which checkout is down: the Wednesday on or before 20 days before
    /// `end_date` (a third of the window back when the window is shorter than 60 days). A
    /// weekday, because a lost weekend day hides in weekend noise; the plain date when the
    /// Wednesday would fall outside the window.
    pub fn outage_date(&self) -> NaiveDate {
        let back = OUTAGE_DAYS_BEFORE_END.min(self.day_count() / 3);
        let candidate = self.end_date - Days::new(u64::from(back));
        let since_wednesday = (candidate.weekday().num_days_from_monday() + 7 - 2) % 7;
        let wednesday = candidate - Days::new(u64::from(since_wednesday));
        if wednesday >= self.start_date() {
            wednesday
        } else {
            candidate
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn window_includes_both_ends() {
        let config = DemoConfig::new(10, 90, 1, date(2025, 3, 31));
        assert_eq!(config.start_date(), date(2025, 1, 1));
        // 20 days back is Tuesday 2025-03-11; the outage takes the Wednesday before.
        assert_eq!(config.outage_date(), date(2025, 3, 5));
        assert_eq!(config.outage_date().weekday(), chrono::Weekday::Wed);
    }

    #[test]
    fn outage_stays_inside_short_windows() {
        for days in 0..70 {
            let config = DemoConfig::new(10, days, 1, date(2025, 3, 31));
            let outage = config.outage_date();
            assert!(
                config.start_date() <= outage && outage <= config.end_date,
                "{days} days"
            );
        }
        assert_eq!(
            DemoConfig::new(1, 0, 1, date(2025, 3, 31)).start_date(),
            date(2025, 3, 31)
        );
    }
}
