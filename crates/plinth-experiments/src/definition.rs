//! What an experiment is: its flag, variants and weights, how exposure is
//! recorded, its window, and the metrics it is judged on. Definitions are
//! YAML (or the same shape as JSON); [`ExperimentDefinition::parse`] reads
//! and validates one, [`ExperimentDefinition::to_json`] is the form the
//! catalog stores.
//!
//! ```yaml
//! name: new-onboarding
//! flag: new-onboarding
//! variants: [control, test]        # the first is the control
//! weights: [0.5, 0.5]              # default: equal
//! exposure:                        # these are the defaults
//!   event: $feature_flag_called
//!   flag_property: $feature_flag
//!   variant_property: $feature_flag_response
//! start: 2026-04-02                # a UTC date (from its start) or an RFC 3339 time
//! end: 2026-06-30                  # a UTC date (to its end) or an RFC 3339 time
//! primary_metrics:
//!   - {name: activation, kind: conversion, event: project created, window_days: 14}
//! secondary_metrics:
//!   - {name: pageviews, kind: count, event: $pageview}
//!   - {name: revenue, kind: sum, event: checkout completed, property: amount_usd}
//!   - name: revenue per checkout
//!     kind: ratio
//!     numerator: {kind: sum, event: checkout completed, property: amount_usd}
//!     denominator: {kind: count, event: checkout completed}
//! guardrails:
//!   - {name: failed checkouts, kind: count, event: checkout failed, higher_is_better: false}
//! cuped: {pre_period_days: 14}     # adjust by the same metric before exposure
//! sequential: {tuning: 5000}       # always-valid intervals; `true` for the default N*
//! alpha: 0.05
//! min_units: 100                   # fewer units in a variant is a warning
//! multiple_testing: holm           # none (default) | holm | bh, across primary and secondary metrics
//! ```
//!
//! Metric kinds, each measured per person from their first exposure to
//! `window_days` later (or to the experiment's end), never counting events
//! after the experiment's `end`: `conversion` (did the
//! person send `event`; a proportion), `count` (how many `event`s), `sum`
//! (the sum of the numeric `property` of their `event`s), and `ratio` (the
//! sum of a numerator component over the sum of a denominator component,
//! by the delta method).
//!
//! `multiple_testing` corrects the p-values of every comparison of a
//! treatment with the control on a primary or secondary metric (not the
//! guardrails), as one family, as GrowthBook does: `holm`
//! (Holm–Bonferroni, which controls the chance of any false positive) or
//! `bh` (Benjamini–Hochberg, which controls the expected share of false
//! positives among the significant results); `none`, GrowthBook's default,
//! is the default. `holm-bonferroni` and `benjamini-hochberg` are accepted
//! as GrowthBook spells them. What the results then report is described in
//! [`crate::analysis`].

use chrono::{DateTime, NaiveDate, TimeDelta};
use serde::{Deserialize, Serialize};

/// Why a definition was refused, and where in its text when known.
#[derive(Debug, Clone, thiserror::Error)]
pub struct DefinitionError {
    pub message: String,
    at: Option<At>,
}

impl std::fmt::Display for DefinitionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid experiment definition: {}", self.message)?;
        if let Some(At::Position { line, column }) = self.at {
            write!(f, " at line {line} column {column}")?;
        }
        Ok(())
    }
}

/// Where a [`DefinitionError`] is: a position the YAML parser reported,
/// or what validation was checking (a top-level key, or a metric by name).
#[derive(Debug, Clone, PartialEq)]
enum At {
    Position {
        line: usize,
        column: usize,
    },
    Key(&'static str),
    /// The `occurrence`-th (from 1) metric called `name`.
    Metric {
        name: String,
        occurrence: usize,
    },
}

fn invalid(message: impl Into<String>) -> DefinitionError {
    DefinitionError {
        message: message.into(),
        at: None,
    }
}

/// An error about the top-level `key`.
fn invalid_key(key: &'static str, message: impl Into<String>) -> DefinitionError {
    DefinitionError {
        message: message.into(),
        at: Some(At::Key(key)),
    }
}

impl DefinitionError {
    fn from_yaml(error: serde_norway::Error) -> DefinitionError {
        let mut message = error.to_string();
        let at = error.location().map(|l| {
            // The parser appends the position to its message; it is kept
            // apart, for callers that put the line in front.
            let suffix = format!(" at line {} column {}", l.line(), l.column());
            if let Some(stripped) = message.strip_suffix(&suffix) {
                message = stripped.to_string();
            }
            At::Position {
                line: l.line(),
                column: l.column(),
            }
        });
        DefinitionError { message, at }
    }

    fn at_key(mut self, key: &'static str) -> DefinitionError {
        self.at = Some(At::Key(key));
        self
    }

    /// The line (from 1) of `text`, the definition this error is about,
    /// where the problem is: the parser's position for errors of syntax
    /// and types, else the line of the key or metric validation refused.
    /// `None` when the error concerns no one line.
    pub fn line(&self, text: &str) -> Option<usize> {
        match self.at.as_ref()? {
            At::Position { line, .. } => Some(*line),
            At::Key(key) => find_line(text, |line| has_key(line, key)),
            At::Metric { name, occurrence } => text
                .lines()
                .enumerate()
                .filter(|(_, line)| names(line, name))
                .nth(occurrence.saturating_sub(1))
                .map(|(i, _)| i + 1),
        }
    }
}

fn find_line(text: &str, matches: impl Fn(&str) -> bool) -> Option<usize> {
    text.lines().position(matches).map(|i| i + 1)
}

/// Where `key` is set on `line` (YAML in block or flow style, or JSON):
/// the text after its colon.
fn after_key<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    for quote in ["", "\""] {
        let pattern = format!("{quote}{key}{quote}");
        for (index, _) in line.match_indices(&pattern) {
            let before = line[..index].trim_end();
            let starts_key = before.is_empty()
                || before.ends_with(['-', '{', ','])
                || (quote.is_empty() && before.ends_with('"'));
            let rest = line[index + pattern.len()..].trim_start();
            if starts_key && let Some(value) = rest.strip_prefix(':') {
                return Some(value);
            }
        }
    }
    None
}

/// Whether `line` sets `key`.
fn has_key(line: &str, key: &str) -> bool {
    after_key(line, key).is_some()
}

/// Whether `line` gives a metric (or the experiment) the name `name`.
pub(crate) fn names(line: &str, name: &str) -> bool {
    after_key(line, "name").is_some_and(|value| {
        let value = value.split(['#', ',', '}']).next().unwrap_or("").trim();
        value.trim_matches(['"', '\'']) == name
    })
}

const MICROS_PER_DAY: f64 = 86_400_000_000.0;

/// The most variants an experiment may have: results keep a person's
/// variant positions in 16 bits, and no test needs more.
pub const MAX_VARIANTS: usize = 1_000;

/// An experiment as its author writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentDefinition {
    pub name: String,
    /// The feature flag key exposures name.
    pub flag: String,
    /// Variant names as the exposure event reports them; the first is the control.
    pub variants: Vec<String>,
    /// Planned share of each variant, for the sample ratio check; equal by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<Vec<f64>>,
    #[serde(default)]
    pub exposure: Exposure,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    #[serde(default)]
    pub primary_metrics: Vec<MetricDefinition>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secondary_metrics: Vec<MetricDefinition>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guardrails: Vec<MetricDefinition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cuped: Option<Cuped>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequential: Option<Sequential>,
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    #[serde(default = "default_min_units")]
    pub min_units: u64,
    #[serde(default, skip_serializing_if = "MultipleTesting::is_none")]
    pub multiple_testing: MultipleTesting,
}

/// The correction of p-values across an experiment's primary and
/// secondary metrics (and its treatments).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MultipleTesting {
    /// Each comparison at `alpha` on its own (GrowthBook's default).
    #[default]
    None,
    /// Holm–Bonferroni: the family-wise error rate stays below `alpha`.
    #[serde(alias = "holm-bonferroni")]
    Holm,
    /// Benjamini–Hochberg: the false discovery rate stays below `alpha`.
    #[serde(alias = "benjamini-hochberg")]
    Bh,
}

impl MultipleTesting {
    pub fn is_none(&self) -> bool {
        *self == MultipleTesting::None
    }
}

fn default_alpha() -> f64 {
    0.05
}

fn default_min_units() -> u64 {
    100
}

/// How an exposure is recorded: an event naming the flag and the variant
/// the person was served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Exposure {
    pub event: String,
    pub flag_property: String,
    pub variant_property: String,
}

impl Default for Exposure {
    fn default() -> Self {
        Exposure {
            event: "$feature_flag_called".into(),
            flag_property: "$feature_flag".into(),
            variant_property: "$feature_flag_response".into(),
        }
    }
}

/// CUPED: each metric is adjusted by its own value over the days before
/// the person's first exposure.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cuped {
    pub pre_period_days: f64,
}

/// Always-valid (sequential) intervals, so that results may be read at any
/// time. `true` takes the default tuning; `{tuning: N}` sets N*, the total
/// units at which the interval is tightest.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Sequential {
    Enabled(bool),
    Tuned { tuning: f64 },
}

impl Sequential {
    pub const DEFAULT_TUNING: f64 = 5000.0;

    /// N*, or `None` when sequential testing is off.
    pub fn tuning(&self) -> Option<f64> {
        match *self {
            Sequential::Enabled(true) => Some(Self::DEFAULT_TUNING),
            Sequential::Enabled(false) => None,
            Sequential::Tuned { tuning } => Some(tuning),
        }
    }
}

/// What a metric counts per person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    Conversion,
    Count,
    Sum,
    Ratio,
}

/// One metric as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricDefinition {
    pub name: String,
    pub kind: MetricKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numerator: Option<ComponentDefinition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denominator: Option<ComponentDefinition>,
    /// Days after first exposure that count; to the experiment's end by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_days: Option<f64>,
    #[serde(default = "default_true")]
    pub higher_is_better: bool,
}

fn default_true() -> bool {
    true
}

/// The numerator or denominator of a ratio metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentDefinition {
    pub kind: MetricKind,
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property: Option<String>,
}

/// Which list of the definition a metric came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricRole {
    Primary,
    Secondary,
    Guardrail,
}

/// A per-person quantity computed from events: one side of a metric.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Component {
    /// Conversion, count or sum (never ratio).
    pub kind: MetricKind,
    pub event: String,
    /// The property summed, for `sum`.
    pub property: Option<String>,
}

/// What a metric compares.
#[derive(Debug, Clone, PartialEq)]
pub enum Measure {
    Single(Component),
    Ratio {
        numerator: Component,
        denominator: Component,
    },
}

/// A validated metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub name: String,
    pub role: MetricRole,
    pub measure: Measure,
    /// Microseconds after first exposure that count; `None`: to the end.
    pub window_micros: Option<i64>,
    pub higher_is_better: bool,
}

/// A validated experiment, ready to query.
#[derive(Debug, Clone, PartialEq)]
pub struct Experiment {
    pub definition: ExperimentDefinition,
    /// Planned shares, summing to 1, one per variant.
    pub weights: Vec<f64>,
    /// Inclusive bounds of exposure times, UTC microseconds.
    pub start_micros: Option<i64>,
    pub end_micros: Option<i64>,
    pub metrics: Vec<Metric>,
    /// Length of the CUPED pre-period, when enabled.
    pub pre_period_micros: Option<i64>,
    pub sequential_tuning: Option<f64>,
}

impl ExperimentDefinition {
    /// Reads a definition from YAML (JSON is YAML too) and validates it.
    pub fn parse(text: &str) -> Result<Experiment, DefinitionError> {
        let definition: ExperimentDefinition =
            serde_norway::from_str(text).map_err(DefinitionError::from_yaml)?;
        definition.validate()
    }

    /// The definition as JSON, the form the catalog stores.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("definitions serialize")
    }

    /// Checks every field and resolves times, weights and metrics.
    pub fn validate(self) -> Result<Experiment, DefinitionError> {
        if self.name.trim().is_empty() || self.name.contains('/') {
            return Err(invalid_key(
                "name",
                "`name` must be non-empty and must not contain `/`",
            ));
        }
        if self.flag.is_empty() {
            return Err(invalid_key("flag", "`flag` must be non-empty"));
        }
        if self.variants.len() < 2 {
            return Err(invalid_key(
                "variants",
                "`variants` needs at least two names, the control first",
            ));
        }
        if self.variants.len() > MAX_VARIANTS {
            return Err(invalid_key(
                "variants",
                format!(
                    "`variants` lists {} names; at most {MAX_VARIANTS} are allowed",
                    self.variants.len()
                ),
            ));
        }
        for (i, variant) in self.variants.iter().enumerate() {
            if self.variants[..i].contains(variant) {
                return Err(invalid_key(
                    "variants",
                    format!("variant `{variant}` is listed twice"),
                ));
            }
        }
        let weights = match &self.weights {
            None => vec![1.0 / self.variants.len() as f64; self.variants.len()],
            Some(weights) => {
                if weights.len() != self.variants.len() {
                    return Err(invalid_key(
                        "weights",
                        format!(
                            "`weights` has {} entries for {} variants",
                            weights.len(),
                            self.variants.len()
                        ),
                    ));
                }
                if weights.iter().any(|w| !(w.is_finite() && *w > 0.0)) {
                    return Err(invalid_key("weights", "`weights` must be positive numbers"));
                }
                let total: f64 = weights.iter().sum();
                weights.iter().map(|w| w / total).collect()
            }
        };
        let start_micros = self
            .start
            .as_deref()
            .map(|t| parse_time("start", t, false))
            .transpose()?;
        let end_micros = self
            .end
            .as_deref()
            .map(|t| parse_time("end", t, true))
            .transpose()?;
        if let (Some(start), Some(end)) = (start_micros, end_micros)
            && end < start
        {
            return Err(invalid_key("end", "`end` is before `start`"));
        }
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return Err(invalid_key(
                "alpha",
                "`alpha` must be strictly between 0 and 1",
            ));
        }
        if self.primary_metrics.is_empty() {
            return Err(invalid_key(
                "primary_metrics",
                "`primary_metrics` needs at least one metric",
            ));
        }
        let mut metrics = Vec::new();
        for (role, list) in [
            (MetricRole::Primary, &self.primary_metrics),
            (MetricRole::Secondary, &self.secondary_metrics),
            (MetricRole::Guardrail, &self.guardrails),
        ] {
            for metric in list {
                if metrics.iter().any(|m: &Metric| m.name == metric.name) {
                    return Err(DefinitionError {
                        message: format!("metric `{}` is defined twice", metric.name),
                        at: Some(At::Metric {
                            name: metric.name.clone(),
                            occurrence: 2,
                        }),
                    });
                }
                metrics.push(metric.validate(role).map_err(|mut e| {
                    e.at = Some(At::Metric {
                        name: metric.name.clone(),
                        occurrence: 1,
                    });
                    e
                })?);
            }
        }
        let pre_period_micros = self
            .cuped
            .map(|c| days("cuped.pre_period_days", c.pre_period_days))
            .transpose()
            .map_err(|e| e.at_key("pre_period_days"))?;
        let sequential_tuning = self.sequential.and_then(|s| s.tuning());
        if let Some(tuning) = sequential_tuning
            && !(tuning.is_finite() && tuning > 0.0)
        {
            return Err(invalid_key(
                "sequential",
                "`sequential.tuning` must be a positive number",
            ));
        }
        Ok(Experiment {
            weights,
            start_micros,
            end_micros,
            metrics,
            pre_period_micros,
            sequential_tuning,
            definition: self,
        })
    }
}

impl MetricDefinition {
    fn validate(&self, role: MetricRole) -> Result<Metric, DefinitionError> {
        let at = |field: &str| format!("metric `{}`: {field}", self.name);
        if self.name.is_empty() {
            return Err(invalid("every metric needs a `name`"));
        }
        let measure = if self.kind == MetricKind::Ratio {
            if self.event.is_some() || self.property.is_some() {
                return Err(invalid(at(
                    "a ratio takes `numerator` and `denominator`, not `event` or `property`",
                )));
            }
            let component = |side: &Option<ComponentDefinition>, field: &str| match side {
                Some(c) => component(&at(field), c.kind, Some(&c.event), c.property.as_deref()),
                None => Err(invalid(at(&format!("a ratio needs `{field}`")))),
            };
            Measure::Ratio {
                numerator: component(&self.numerator, "numerator")?,
                denominator: component(&self.denominator, "denominator")?,
            }
        } else {
            if self.numerator.is_some() || self.denominator.is_some() {
                return Err(invalid(at(
                    "only ratio metrics take `numerator` and `denominator`",
                )));
            }
            Measure::Single(component(
                &at("kind"),
                self.kind,
                self.event.as_deref(),
                self.property.as_deref(),
            )?)
        };
        Ok(Metric {
            name: self.name.clone(),
            role,
            measure,
            window_micros: self
                .window_days
                .map(|d| days(&at("window_days"), d))
                .transpose()?,
            higher_is_better: self.higher_is_better,
        })
    }
}

fn component(
    at: &str,
    kind: MetricKind,
    event: Option<&str>,
    property: Option<&str>,
) -> Result<Component, DefinitionError> {
    let event = match event {
        Some(event) if !event.is_empty() => event.to_string(),
        _ => return Err(invalid(format!("{at}: needs an `event`"))),
    };
    match (kind, property) {
        (MetricKind::Ratio, _) => Err(invalid(format!("{at}: a ratio cannot nest a ratio"))),
        (MetricKind::Sum, None) => Err(invalid(format!("{at}: `sum` needs a `property`"))),
        (MetricKind::Conversion | MetricKind::Count, Some(_)) => {
            Err(invalid(format!("{at}: only `sum` takes a `property`")))
        }
        _ => Ok(Component {
            kind,
            event,
            property: property.map(str::to_string),
        }),
    }
}

fn days(field: &str, days: f64) -> Result<i64, DefinitionError> {
    if !(days.is_finite() && days > 0.0) {
        return Err(invalid(format!(
            "{field} must be a positive number of days"
        )));
    }
    Ok((days * MICROS_PER_DAY).round() as i64)
}

/// A UTC date (its first microsecond, or its last when `end_of_day`) or an
/// RFC 3339 time, as microseconds since the epoch.
fn parse_time(field: &'static str, text: &str, end_of_day: bool) -> Result<i64, DefinitionError> {
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        let midnight = date.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
        let time = if end_of_day {
            midnight + TimeDelta::days(1) - TimeDelta::microseconds(1)
        } else {
            midnight
        };
        return Ok(time.timestamp_micros());
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_micros())
        .map_err(|_| {
            invalid_key(
                field,
                format!("`{field}` must be a date (YYYY-MM-DD) or an RFC 3339 time, got {text:?}"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "
name: checkout-copy
flag: checkout-copy
variants: [control, test]
primary_metrics:
  - {name: bought, kind: conversion, event: checkout completed, window_days: 7}
";

    #[test]
    fn defaults_fill_exposure_weights_and_alpha() {
        let experiment = ExperimentDefinition::parse(MINIMAL).unwrap();
        assert_eq!(experiment.weights, vec![0.5, 0.5]);
        assert_eq!(experiment.definition.exposure, Exposure::default());
        assert_eq!(experiment.definition.alpha, 0.05);
        assert_eq!(
            experiment.metrics[0].window_micros,
            Some(7 * 86_400_000_000)
        );
        assert_eq!(experiment.sequential_tuning, None);
    }

    #[test]
    fn dates_cover_whole_days_and_weights_are_normalised() {
        let text = format!(
            "{MINIMAL}start: 2026-04-02\nend: 2026-04-02\nweights: [1, 3]\nsequential: true\n"
        );
        let experiment = ExperimentDefinition::parse(&text).unwrap();
        let start = experiment.start_micros.unwrap();
        assert_eq!(experiment.end_micros.unwrap() - start, 86_400_000_000 - 1);
        assert_eq!(experiment.weights, vec![0.25, 0.75]);
        assert_eq!(experiment.sequential_tuning, Some(5000.0));
    }

    #[test]
    fn the_stored_json_parses_back_to_the_same_experiment() {
        let experiment = ExperimentDefinition::parse(MINIMAL).unwrap();
        let again = ExperimentDefinition::parse(&experiment.definition.to_json()).unwrap();
        assert_eq!(again, experiment);
    }

    #[test]
    fn multiple_testing_is_off_by_default_and_takes_growthbook_names() {
        let experiment = ExperimentDefinition::parse(MINIMAL).unwrap();
        assert_eq!(
            experiment.definition.multiple_testing,
            MultipleTesting::None
        );
        assert!(!experiment.definition.to_json().contains("multiple_testing"));
        for (written, method) in [
            ("holm", MultipleTesting::Holm),
            ("holm-bonferroni", MultipleTesting::Holm),
            ("bh", MultipleTesting::Bh),
            ("benjamini-hochberg", MultipleTesting::Bh),
            ("none", MultipleTesting::None),
        ] {
            let text = format!("{MINIMAL}multiple_testing: {written}\n");
            let experiment = ExperimentDefinition::parse(&text).unwrap();
            assert_eq!(experiment.definition.multiple_testing, method);
            let again = ExperimentDefinition::parse(&experiment.definition.to_json()).unwrap();
            assert_eq!(again, experiment);
        }
        let error =
            ExperimentDefinition::parse(&format!("{MINIMAL}multiple_testing: bonferroni\n"))
                .unwrap_err()
                .to_string();
        assert!(error.contains("unknown variant `bonferroni`"), "{error}");
    }

    #[test]
    fn errors_know_their_line() {
        let line = |text: &str| {
            let error = ExperimentDefinition::parse(text).unwrap_err();
            error.line(text)
        };
        // The parser's position: an unknown key, a wrong type.
        assert_eq!(line(&MINIMAL.replace("window_days", "windw_days")), Some(6));
        assert_eq!(
            line(&MINIMAL.replace("[control, test]", "control")),
            Some(4)
        );
        // Validation: the key, or the metric, it refused.
        assert_eq!(
            line(&MINIMAL.replace("[control, test]", "[control]")),
            Some(4)
        );
        assert_eq!(line(&format!("{MINIMAL}weights: [1]\n")), Some(7));
        assert_eq!(
            line(&format!("{MINIMAL}end: 2020-01-01\nstart: 2021-01-01\n")),
            Some(7)
        );
        assert_eq!(
            line(&MINIMAL.replace("kind: conversion", "kind: sum")),
            Some(6)
        );
        let twice =
            format!("{MINIMAL}guardrails:\n  - name: bought\n    kind: count\n    event: refund\n");
        assert_eq!(line(&twice), Some(8));
        // JSON too.
        let json = r#"{"name": "x", "flag": "x",
  "variants": ["control", "test"],
  "primary_metrics": [{"name": "m", "kind": "count", "event": "e"}],
  "alpha": 2}"#;
        assert_eq!(line(json), Some(4));
        let error = ExperimentDefinition::parse(&MINIMAL.replace("window_days", "windw_days"))
            .unwrap_err()
            .to_string();
        assert!(error.ends_with("at line 6 column 65"), "{error}");
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            (MINIMAL.replace("window_days", "windw_days"), "windw_days"),
            (
                MINIMAL.replace("[control, test]", "[control]"),
                "at least two",
            ),
            (
                MINIMAL.replace("kind: conversion", "kind: sum"),
                "needs a `property`",
            ),
            (
                MINIMAL.replace(
                    "[control, test]",
                    &format!(
                        "[{}]",
                        (0..1_001)
                            .map(|i| format!("v{i}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ),
                "1001 names; at most 1000",
            ),
            (
                format!("{MINIMAL}weights: [1]\n"),
                "1 entries for 2 variants",
            ),
            (
                format!("{MINIMAL}start: yesterday\n"),
                "`start` must be a date",
            ),
            (
                MINIMAL.replace("kind: conversion, event: checkout completed", "kind: ratio"),
                "needs `numerator`",
            ),
        ];
        for (text, expected) in cases {
            let error = ExperimentDefinition::parse(&text).unwrap_err().to_string();
            assert!(error.contains(expected), "{expected:?} not in {error:?}");
        }
    }
}
