//! Pattern novelty: how new the shape of the last few points is.
//!
//! Values are cut into coarse levels on a grid fixed from the warm-up points
//! (their range split into `levels` steps; later values outside that range
//! simply get levels beyond it). Every run of the last 1..=`orders` levels is
//! a pattern, remembered in a set. A point's novelty is the weighted share of
//! its patterns never seen before, so a series that keeps repeating its
//! shapes scores 0 and a new regime, a jump to a never-visited level or a
//! never-seen transition scores up to 1 — once: the pattern is learnt as soon
//! as it is seen.
//!
//! The memory is a set of 64-bit pattern hashes, so it grows with the number
//! of distinct patterns met, not with the number of points: a series that
//! stays in its range keeps it small, a series that drifts without bound
//! adds a few entries per new level.

use std::collections::{HashSet, VecDeque};

use serde::{Deserialize, Serialize};

/// The level grid, fixed once the warm-up points are in.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Grid {
    origin: f64,
    step: f64,
}

impl Grid {
    /// A grid over the range of `values` with `levels` steps, shifted half a
    /// step down so the warm-up extremes sit mid-level: a later value just
    /// beyond the warm-up minimum or maximum is not a new level. A flat warm-up
    /// gets a step of a thousandth of its magnitude (or an absolute epsilon),
    /// so later small moves are still told apart without every float
    /// wobble becoming a level.
    fn over(values: &[f64], levels: f64) -> Grid {
        let (low, high) = values
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        let magnitude = low.abs().max(high.abs());
        let floor = (magnitude * 1e-3).max(1e-9);
        let step = ((high - low) / levels.max(1.0)).max(floor);
        Grid {
            origin: low - step / 2.0,
            step,
        }
    }

    fn level(&self, value: f64) -> i64 {
        // Saturating float-to-int conversion: absurd values share the extreme level.
        ((value - self.origin) / self.step).floor() as i64
    }
}

/// Streaming pattern memory; serialisable with the detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatternNovelty {
    warmup_points: usize,
    levels: f64,
    orders: usize,
    /// Warm-up values, kept until the grid is fixed and then replayed.
    warmup: Vec<f64>,
    grid: Option<Grid>,
    /// The last `orders` levels, newest last.
    recent: VecDeque<i64>,
    /// Hashes of every pattern seen.
    seen: HashSet<u64>,
}

impl PatternNovelty {
    /// `levels` steps over the warm-up range, patterns of 1..=`orders`
    /// points, grid fixed after `warmup_points` finite values.
    pub fn new(warmup_points: usize, levels: f64, orders: usize) -> Self {
        PatternNovelty {
            warmup_points: warmup_points.max(1),
            levels,
            orders: orders.max(1),
            warmup: Vec::new(),
            grid: None,
            recent: VecDeque::new(),
            seen: HashSet::new(),
        }
    }

    /// Novelty of `value` in [0, 1] given the points before it (0 during
    /// warm-up), then learns it. Non-finite values are ignored.
    pub fn observe(&mut self, value: f64) -> f64 {
        if !value.is_finite() {
            return 0.0;
        }
        let Some(grid) = self.grid else {
            self.warmup.push(value);
            if self.warmup.len() >= self.warmup_points {
                let grid = Grid::over(&self.warmup, self.levels);
                self.grid = Some(grid);
                for v in std::mem::take(&mut self.warmup) {
                    self.step(grid, v);
                }
            }
            return 0.0;
        };
        self.step(grid, value)
    }

    /// Pushes one value's level, returns the share of new patterns and
    /// remembers them. Longer patterns weigh more: a new long shape made of
    /// known short pieces is the subtle kind of novelty, a new level makes
    /// every order new at once and scores 1.
    fn step(&mut self, grid: Grid, value: f64) -> f64 {
        let orders = self.orders;
        self.recent.push_back(grid.level(value));
        if self.recent.len() > orders {
            self.recent.pop_front();
        }
        let mut hash = FNV_OFFSET;
        let mut novelty = 0.0;
        let mut total_weight = 0.0;
        for (k, level) in self.recent.iter().rev().enumerate() {
            // The hash of the last k + 1 levels, newest first.
            hash = fnv_mix(hash, *level as u64);
            let weight = (k + 1) as f64;
            total_weight += weight;
            if self.seen.insert(hash) {
                novelty += weight;
            }
        }
        if self.recent.len() < orders {
            // The first points after the grid is fixed have no long patterns yet.
            return 0.0;
        }
        novelty / total_weight
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a over the eight bytes of `word`: a fixed, platform-independent hash,
/// so saved state means the same thing after a restart.
fn fnv_mix(mut hash: u64, word: u64) -> u64 {
    for byte in word.to_le_bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}
