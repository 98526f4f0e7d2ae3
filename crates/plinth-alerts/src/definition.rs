//! What an alert watches and whom it tells. Definitions are YAML (or the
//! same shape as JSON):
//!
//! ```yaml
//! name: checkout-outage
//! event: checkout completed
//! measure: count              # count | persons (unique) | sum | average
//! # property: amount_usd      # what sum and average aggregate
//! interval: day               # day | hour
//! breakdown: $browser         # optional: a property whose values explain a flag
//! direction: down             # down | up | both (default)
//! threshold: 0.9              # the detector's score from which a point is flagged
//! warmup: 21                  # points the detector learns from before it scores
//! lookback: 1                 # newest complete buckets whose flags notify
//! every_seconds: 3600         # how often the server evaluates the alert
//! webhook:
//!   url: http://127.0.0.1:9000/hooks/plinth
//!   max_attempts: 5           # with exponential backoff between attempts
//!   backoff_seconds: 1        # the first wait; each next one doubles
//! ```

use serde::{Deserialize, Serialize};

/// Why a definition was refused.
#[derive(Debug, thiserror::Error)]
#[error("invalid alert definition: {0}")]
pub struct DefinitionError(pub String);

fn invalid(message: impl Into<String>) -> DefinitionError {
    DefinitionError(message.into())
}

/// An alert as its author writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertDefinition {
    pub name: String,
    pub event: String,
    #[serde(default)]
    pub measure: Measure,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property: Option<String>,
    #[serde(default)]
    pub interval: Interval,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breakdown: Option<String>,
    #[serde(default)]
    pub direction: Direction,
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    #[serde(default = "default_warmup")]
    pub warmup: usize,
    #[serde(default = "default_lookback")]
    pub lookback: usize,
    #[serde(default = "default_every")]
    pub every_seconds: f64,
    pub webhook: Webhook,
}

fn default_threshold() -> f64 {
    0.9
}

fn default_warmup() -> usize {
    21
}

fn default_lookback() -> usize {
    1
}

fn default_every() -> f64 {
    3600.0
}

/// The aggregate of the watched event per bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    /// Events.
    #[default]
    Count,
    /// Distinct persons who sent the event.
    Persons,
    /// Sum of a numeric property.
    Sum,
    /// Average of a numeric property.
    Average,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interval {
    #[default]
    Day,
    Hour,
}

impl Interval {
    pub fn micros(self) -> i64 {
        match self {
            Interval::Day => 86_400_000_000,
            Interval::Hour => 3_600_000_000,
        }
    }

    /// The unit `date_trunc` takes.
    pub fn unit(self) -> &'static str {
        match self {
            Interval::Day => "day",
            Interval::Hour => "hour",
        }
    }
}

/// Which surprises to flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Values below the expected one (drops, outages).
    Down,
    /// Values above it (spikes).
    Up,
    #[default]
    Both,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// An `http://` URL; the flagged point is POSTed to it as JSON.
    pub url: String,
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_backoff")]
    pub backoff_seconds: f64,
}

fn default_attempts() -> u32 {
    5
}

fn default_backoff() -> f64 {
    1.0
}

impl AlertDefinition {
    /// Reads a definition from YAML (JSON is YAML too) and validates it.
    pub fn parse(text: &str) -> Result<AlertDefinition, DefinitionError> {
        let definition: AlertDefinition =
            serde_norway::from_str(text).map_err(|e| invalid(e.to_string()))?;
        definition.validate()?;
        Ok(definition)
    }

    /// The definition as JSON, the form the catalog stores.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("definitions serialize")
    }

    fn validate(&self) -> Result<(), DefinitionError> {
        if self.name.trim().is_empty() || self.name.contains('/') {
            return Err(invalid("`name` must be non-empty and must not contain `/`"));
        }
        if self.event.is_empty() {
            return Err(invalid("`event` must be non-empty"));
        }
        match (self.measure, &self.property) {
            (Measure::Sum | Measure::Average, None) => {
                return Err(invalid("`sum` and `average` need a `property`"));
            }
            (Measure::Count | Measure::Persons, Some(_)) => {
                return Err(invalid("only `sum` and `average` take a `property`"));
            }
            _ => {}
        }
        if self.measure == Measure::Average && self.breakdown.is_some() {
            return Err(invalid(
                "an average does not split over breakdown values; watch a sum or a count",
            ));
        }
        if !(self.threshold > 0.0 && self.threshold <= 1.0) {
            return Err(invalid("`threshold` must be in (0, 1]"));
        }
        if self.lookback == 0 {
            return Err(invalid("`lookback` must be at least 1"));
        }
        if !(self.every_seconds.is_finite() && self.every_seconds >= 1.0) {
            return Err(invalid("`every_seconds` must be at least 1"));
        }
        if !self.webhook.url.starts_with("http://") {
            return Err(invalid("`webhook.url` must be an http:// URL"));
        }
        if self.webhook.max_attempts == 0 {
            return Err(invalid("`webhook.max_attempts` must be at least 1"));
        }
        if !(self.webhook.backoff_seconds.is_finite() && self.webhook.backoff_seconds >= 0.0) {
            return Err(invalid(
                "`webhook.backoff_seconds` must be a non-negative number",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "
name: checkout-outage
event: checkout completed
webhook: {url: 'http://127.0.0.1:9/hook'}
";

    #[test]
    fn defaults_watch_a_daily_count_in_both_directions() {
        let alert = AlertDefinition::parse(MINIMAL).unwrap();
        assert_eq!(alert.measure, Measure::Count);
        assert_eq!(alert.interval, Interval::Day);
        assert_eq!(alert.direction, Direction::Both);
        assert_eq!((alert.lookback, alert.webhook.max_attempts), (1, 5));
        assert_eq!(AlertDefinition::parse(&alert.to_json()).unwrap(), alert);
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            (format!("{MINIMAL}measure: sum\n"), "need a `property`"),
            (format!("{MINIMAL}direction: sideways\n"), "sideways"),
            (MINIMAL.replace("http://", "https://"), "http:// URL"),
            (format!("{MINIMAL}thresold: 0.5\n"), "thresold"),
        ];
        for (text, expected) in cases {
            let error = AlertDefinition::parse(&text).unwrap_err().to_string();
            assert!(error.contains(expected), "{expected:?} not in {error:?}");
        }
    }
}
