//! The online detector. Each point gets an expected value, a band and a
//! score in [0, 1] computed only from the points before it and itself:
//!
//! - a robust Holt-Winters style forecaster (level, trend, time-of-day and
//!   day-of-week offsets) gives the expected value and the band; its
//!   residuals, in units of their own running scale, are smoothed and
//!   compared with the record of the recent past (the *forecast score*);
//! - a pattern memory ([`crate::novelty`]) scores how new the value's level
//!   and its recent run of levels are (the *novelty score*);
//! - the raw score is the larger of the two; once a raw score reaches
//!   `alarm_score`, the following `suppression_points` scores are damped by
//!   `suppression_factor`. The damping keys on the raw score, so a restless
//!   stretch stays quiet and only the first surprise after a calm one
//!   stands out: one incident raises one early alarm.
//!
//! The state is one plain struct ([`Detector`]): feed points one at a time
//! with [`Detector::update`], serialise it between calls (serde) to keep
//! streaming state, or run a whole series with [`detect_series`].

use serde::{Deserialize, Serialize};

use crate::novelty::PatternNovelty;

const SECONDS_PER_DAY: i64 = 86_400;
const DAYS_PER_WEEK: usize = 7;
/// Most time-of-day slots kept (5-minute resolution).
const MAX_DAILY_SLOTS: i64 = 288;
/// A normal variable's standard deviation is 1.2533 times its mean absolute deviation.
const MEAN_ABSOLUTE_TO_SIGMA: f64 = 1.253_314;

/// Tuning of the detector. The defaults are what the NAB evaluation uses;
/// the scoring ones (`short_smoothing`, `ratio_power`, `warmup_points`,
/// `suppression_*`, `alarm_score`, `novelty_*`, `forecast_weight`) were chosen
/// by a coarse grid search on the full NAB corpus (see the crate docs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DetectorConfig {
    /// Smoothing of the level (0..1]; larger adapts faster to level shifts.
    pub level_smoothing: f64,
    /// Smoothing of the trend (0..1]; 0 disables the trend.
    pub trend_smoothing: f64,
    /// Smoothing of the seasonal offsets (0..1]; 0 disables seasonality.
    pub seasonal_smoothing: f64,
    /// Smoothing of the residual scale (0..1].
    pub scale_smoothing: f64,
    /// Residuals beyond this many scales are clipped before they update the
    /// model, so one outlier does not drag the forecast.
    pub clip_sigmas: f64,
    /// Half-width of the band, in residual standard deviations.
    pub band_sigmas: f64,
    /// Smoothing of the short-term mean of surprises (0..1].
    pub short_smoothing: f64,
    /// Per-point decay of the record short-term surprise (0..1].
    pub record_decay: f64,
    /// Steepness of the score in the ratio surprise / record.
    pub ratio_power: f64,
    /// Factor applied to scores during suppression (0 silences them).
    pub suppression_factor: f64,
    /// Points seen before any score above 0 is given; the novelty grid is
    /// fixed from their range.
    pub warmup_points: usize,
    /// After a raw score reaches `alarm_score`, this many following points
    /// are damped so one incident raises one alarm.
    pub suppression_points: usize,
    /// Raw score from which a point counts as an alarm and starts suppression.
    pub alarm_score: f64,
    /// Level steps the warm-up range is cut into for pattern novelty.
    pub novelty_levels: f64,
    /// Longest run of levels (in points) the novelty memory compares.
    pub novelty_orders: usize,
    /// Weight of the forecast score against the novelty score (0 scores by
    /// novelty alone).
    pub forecast_weight: f64,
    /// Weight of the novelty score (0 scores by the forecast alone, for
    /// business metrics whose growth makes every new level look novel).
    pub novelty_weight: f64,
}

impl DetectorConfig {
    /// The detector for daily or hourly product metrics. The defaults are
    /// tuned for NAB's machine series; counts of a product differ: they grow
    /// (every new level would look novel), have few points (a day's surprise
    /// must count at once, not be smoothed away) and a strong weekly rhythm.
    pub fn product_metrics(warmup_points: usize) -> DetectorConfig {
        DetectorConfig {
            warmup_points,
            novelty_weight: 0.0,
            short_smoothing: 1.0,
            level_smoothing: 0.3,
            trend_smoothing: 0.05,
            seasonal_smoothing: 0.6,
            clip_sigmas: 3.0,
            ratio_power: 4.0,
            record_decay: 0.9,
            suppression_points: 3,
            ..DetectorConfig::default()
        }
    }
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            level_smoothing: 0.05,
            trend_smoothing: 0.0,
            seasonal_smoothing: 0.1,
            scale_smoothing: 0.002,
            clip_sigmas: 4.0,
            band_sigmas: 3.0,
            short_smoothing: 0.1,
            record_decay: 0.9999,
            ratio_power: 12.0,
            suppression_factor: 0.0,
            warmup_points: 250,
            suppression_points: 30,
            alarm_score: 0.9,
            novelty_levels: 8.0,
            novelty_orders: 2,
            forecast_weight: 1.0,
            novelty_weight: 1.0,
        }
    }
}

/// What the detector says about one point.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PointResult {
    /// Seconds since the Unix epoch.
    pub timestamp: i64,
    pub value: f64,
    /// The forecast made before seeing the value.
    pub expected: f64,
    pub low: f64,
    pub high: f64,
    /// Anomaly score in [0, 1]; 0 during warm-up and for non-finite values.
    pub score: f64,
}

/// Streaming detector state; serialisable so a server can keep it between
/// batches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detector {
    config: DetectorConfig,
    points_seen: usize,
    last_timestamp: Option<i64>,
    /// Seconds per time-of-day slot, fixed from the first sampling interval.
    slot_seconds: Option<i64>,
    level: f64,
    trend: f64,
    daily: Vec<f64>,
    weekly: Vec<f64>,
    /// Exponentially weighted mean absolute residual.
    mean_absolute_residual: f64,
    short_surprise: f64,
    /// The highest short-term surprise seen, decaying towards zero.
    record: f64,
    points_since_alarm: usize,
    novelty: PatternNovelty,
}

impl Detector {
    pub fn new(config: DetectorConfig) -> Self {
        Detector {
            config,
            points_seen: 0,
            last_timestamp: None,
            slot_seconds: None,
            level: 0.0,
            trend: 0.0,
            daily: Vec::new(),
            weekly: Vec::new(),
            mean_absolute_residual: 0.0,
            short_surprise: 0.0,
            record: 0.0,
            points_since_alarm: usize::MAX,
            novelty: PatternNovelty::new(
                config.warmup_points,
                config.novelty_levels,
                config.novelty_orders,
            ),
        }
    }

    pub fn config(&self) -> &DetectorConfig {
        &self.config
    }

    /// Scores one point against the state built from the points before it,
    /// then learns from it. Timestamps are seconds since the Unix epoch and
    /// should increase.
    pub fn update(&mut self, timestamp: i64, value: f64) -> PointResult {
        if self.slot_seconds.is_none()
            && let Some(previous) = self.last_timestamp
            && timestamp > previous
        {
            self.set_sampling_interval(timestamp - previous);
        }
        self.last_timestamp = Some(timestamp);

        let (daily_slot, weekly_slot) = self.slots(timestamp);
        let seasonal =
            daily_slot.map_or(0.0, |s| self.daily[s]) + weekly_slot.map_or(0.0, |s| self.weekly[s]);
        let expected = if self.points_seen == 0 {
            value
        } else {
            self.level + self.trend + seasonal
        };
        let sigma = self.mean_absolute_residual * MEAN_ABSOLUTE_TO_SIGMA;
        let half_band = self.config.band_sigmas * sigma;
        let mut result = PointResult {
            timestamp,
            value,
            expected,
            low: expected - half_band,
            high: expected + half_band,
            score: 0.0,
        };
        if !value.is_finite() {
            return result;
        }
        let novelty = self.novelty.observe(value);
        if self.points_seen == 0 {
            self.level = value;
            self.points_seen = 1;
            return result;
        }

        let residual = value - expected;
        let scale = self.scale_floor(sigma);
        let forecast = self.score_surprise(residual.abs() / scale);
        result.score = self.combine(forecast, novelty);
        self.learn(residual, scale, seasonal, daily_slot, weekly_slot);
        self.points_seen += 1;
        result
    }

    fn set_sampling_interval(&mut self, interval: i64) {
        // Time-of-day offsets only make sense with several points a day.
        if interval <= SECONDS_PER_DAY / 4 {
            let slots = (SECONDS_PER_DAY / interval).clamp(1, MAX_DAILY_SLOTS);
            self.slot_seconds = Some(SECONDS_PER_DAY / slots);
            self.daily = vec![0.0; slots as usize];
        } else {
            self.slot_seconds = Some(SECONDS_PER_DAY);
        }
        if interval <= SECONDS_PER_DAY {
            self.weekly = vec![0.0; DAYS_PER_WEEK];
        }
    }

    fn slots(&self, timestamp: i64) -> (Option<usize>, Option<usize>) {
        if self.config.seasonal_smoothing <= 0.0 {
            return (None, None);
        }
        let daily = self
            .slot_seconds
            .filter(|_| !self.daily.is_empty())
            .map(|width| (timestamp.rem_euclid(SECONDS_PER_DAY) / width) as usize);
        let weekly = (!self.weekly.is_empty()).then(|| {
            // 1970-01-01 was a Thursday; the slot index only needs to be stable.
            (timestamp.div_euclid(SECONDS_PER_DAY) as usize) % DAYS_PER_WEEK
        });
        (daily, weekly)
    }

    /// A scale that never collapses to zero on flat series: at least a
    /// millionth of the level, and an absolute epsilon.
    fn scale_floor(&self, sigma: f64) -> f64 {
        sigma.max(self.level.abs() * 1e-6).max(1e-9)
    }

    /// The forecast score: the short-term mean surprise compared with its
    /// (slowly forgotten) record so far, so 0.5 means "as unusual as the
    /// most unusual recent stretch".
    fn score_surprise(&mut self, surprise: f64) -> f64 {
        let c = self.config;
        let short = warm_smoothing(c.short_smoothing, self.points_seen);
        self.short_surprise += short * (surprise - self.short_surprise);
        if self.points_seen < c.warmup_points {
            // The scale settles during most of the warm-up: earlier
            // surprises would set a record no later point could reach. The
            // last quarter seeds the record, so the first scored point is
            // not compared with nothing.
            if 4 * self.points_seen >= 3 * c.warmup_points {
                self.record = (self.record * c.record_decay).max(self.short_surprise);
            }
            return 0.0;
        }
        let ratio = self.short_surprise / self.record.max(1e-9);
        self.record = (self.record * c.record_decay).max(self.short_surprise);
        ratio.powf(c.ratio_power) / (1.0 + ratio.powf(c.ratio_power))
    }

    /// The final score: the larger of the weighted forecast score and the
    /// novelty, silenced (or damped) for `suppression_points` after any raw
    /// score at or above `alarm_score` — including raw scores that were
    /// themselves suppressed, so a stretch of constant surprises yields one
    /// alarm at its start rather than one every `suppression_points`.
    fn combine(&mut self, forecast: f64, novelty: f64) -> f64 {
        let c = self.config;
        if self.points_seen < c.warmup_points {
            return 0.0;
        }
        let raw = (c.forecast_weight * forecast)
            .max(c.novelty_weight * novelty)
            .min(1.0);
        let mut score = raw;
        if self.points_since_alarm < c.suppression_points {
            score *= c.suppression_factor;
        }
        self.points_since_alarm = self.points_since_alarm.saturating_add(1);
        if raw >= c.alarm_score {
            self.points_since_alarm = 0;
        }
        score
    }

    fn learn(
        &mut self,
        residual: f64,
        scale: f64,
        seasonal: f64,
        daily_slot: Option<usize>,
        weekly_slot: Option<usize>,
    ) {
        let c = self.config;
        // While the series has been flat, the residual scale sits at its
        // floor; clipping there would pin the level forever (a count that is
        // zero for weeks, then starts). Learn the first movement unclipped.
        let flat = self.mean_absolute_residual * MEAN_ABSOLUTE_TO_SIGMA < scale;
        let limit = if flat {
            f64::INFINITY
        } else {
            c.clip_sigmas * scale
        };
        let clipped = residual.clamp(-limit, limit);
        let previous_level = self.level;
        self.level += self.trend + c.level_smoothing * clipped;
        if c.trend_smoothing > 0.0 {
            self.trend += c.trend_smoothing * (self.level - previous_level - self.trend);
        }
        let observed = previous_level + self.trend + seasonal + clipped;
        let seasonal_error = observed - self.level - seasonal;
        if let Some(slot) = daily_slot {
            self.daily[slot] += c.seasonal_smoothing * seasonal_error;
        }
        if let Some(slot) = weekly_slot {
            self.weekly[slot] += c.seasonal_smoothing / 4.0 * seasonal_error;
        }
        let absolute = residual.abs().min(limit);
        let smoothing = warm_smoothing(c.scale_smoothing, self.points_seen);
        self.mean_absolute_residual += smoothing * (absolute - self.mean_absolute_residual);
    }
}

/// Runs a fresh detector over a whole series.
pub fn detect_series(
    timestamps: &[i64],
    values: &[f64],
    config: &DetectorConfig,
) -> Vec<PointResult> {
    let mut detector = Detector::new(*config);
    timestamps
        .iter()
        .zip(values)
        .map(|(&t, &v)| detector.update(t, v))
        .collect()
}

/// The smoothing for the `n`-th update (n from 1): a plain running mean until
/// enough points exist for the exponential weight, so early estimates are
/// not biased towards their zero start.
fn warm_smoothing(smoothing: f64, n: usize) -> f64 {
    smoothing.max(1.0 / n.max(1) as f64)
}
