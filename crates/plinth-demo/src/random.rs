//! Seeded randomness: one ChaCha8 stream per simulated user, and the bucketing hash of the
//! experiment.
//!
//! Every draw goes through these few functions, written out here rather than taken from
//! `rand`'s distributions, so that the demo data set depends only on the ChaCha8 algorithm
//! (whose output is fixed by its specification) and never changes with a crate update.

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

/// Domain separation: the key holds the seed and this tag, so another use of the same seed
/// with ChaCha8 elsewhere in Plinth never yields the same stream.
const KEY_TAG: &[u8; 24] = b"plinth-demo/user-stream\0";

/// The random stream of one simulated user: a function of (seed, user index) alone, so users
/// can be generated in any order, in parallel, or one range at a time.
pub(crate) struct UserRng(ChaCha8Rng);

impl UserRng {
    pub(crate) fn new(seed: u64, user_index: u64) -> Self {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        key[8..].copy_from_slice(KEY_TAG);
        let mut rng = ChaCha8Rng::from_seed(key);
        rng.set_stream(user_index);
        Self(rng)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in [0, 1) with 53 bits of precision.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    pub(crate) fn chance(&mut self, probability: f64) -> bool {
        self.unit() < probability
    }

    /// Uniform in [0, n) by a 128-bit multiply; the bias, below n / 2^64, is irrelevant here.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in [low, high] (inclusive).
    pub(crate) fn between(&mut self, low: i64, high: i64) -> i64 {
        debug_assert!(low <= high);
        low + self.below((high - low) as u64 + 1) as i64
    }

    /// Failures before the first success of a Bernoulli(p) trial, capped at `cap`.
    pub(crate) fn geometric(&mut self, success: f64, cap: u32) -> u32 {
        let mut failures = 0;
        while failures < cap && !self.chance(success) {
            failures += 1;
        }
        failures
    }

    /// One entry of a table, chosen with probability proportional to `weight_of(entry)`.
    pub(crate) fn pick<'t, T>(&mut self, table: &'t [T], weight_of: impl Fn(&T) -> u32) -> &'t T {
        let total: u64 = table.iter().map(|entry| u64::from(weight_of(entry))).sum();
        let mut ticket = self.below(total);
        for entry in table {
            let weight = u64::from(weight_of(entry));
            if ticket < weight {
                return entry;
            }
            ticket -= weight;
        }
        unreachable!("a ticket below the total weight falls inside one entry")
    }

    /// Index into a cumulative distribution (non-decreasing, last entry 1.0).
    pub(crate) fn index_by_cumulative(&mut self, cumulative: &[f64]) -> usize {
        let u = self.unit();
        cumulative
            .partition_point(|&c| c <= u)
            .min(cumulative.len() - 1)
    }

    /// Ten random bytes, the random part of a UUIDv7.
    pub(crate) fn uuid_random_bytes(&mut self) -> [u8; 10] {
        let high = self.next_u64().to_le_bytes();
        let low = self.next_u64().to_le_bytes();
        let mut bytes = [0u8; 10];
        bytes[..8].copy_from_slice(&high);
        bytes[8..].copy_from_slice(&low[..2]);
        bytes
    }
}

/// A UUIDv7 at `micros` whose random part comes from the user's stream.
pub(crate) fn uuid_v7_at(micros: i64, rng: &mut UserRng) -> uuid::Uuid {
    let millis = u64::try_from(micros.div_euclid(1000)).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(millis, &rng.uuid_random_bytes()).into_uuid()
}

/// Position of `distinct_id` in [0, 1) for the flag `flag_key`: FNV-1a over
/// "flag_key.distinct_id" (the key layout PostHog uses for bucketing) finished by the
/// SplitMix64 mixer so nearby ids land far apart. Independent of the seed: a user's variant
/// is a property of the user id, as with a real flag service.
pub(crate) fn flag_bucket(flag_key: &str, distinct_id: &str) -> f64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = FNV_OFFSET;
    let bytes = flag_key
        .bytes()
        .chain(std::iter::once(b'.'))
        .chain(distinct_id.bytes());
    for byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    (splitmix64_mix(hash) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

fn splitmix64_mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_differ_by_user_and_by_seed_and_repeat_exactly() {
        let draw = |seed, user| {
            let mut rng = UserRng::new(seed, user);
            [rng.next_u64(), rng.next_u64()]
        };
        assert_eq!(draw(7, 3), draw(7, 3));
        assert_ne!(draw(7, 3), draw(7, 4));
        assert_ne!(draw(7, 3), draw(8, 3));
    }

    #[test]
    fn unit_and_below_stay_in_range() {
        let mut rng = UserRng::new(1, 1);
        for _ in 0..10_000 {
            let u = rng.unit();
            assert!((0.0..1.0).contains(&u));
            assert!(rng.below(7) < 7);
            let x = rng.between(-3, 3);
            assert!((-3..=3).contains(&x));
        }
    }

    #[test]
    fn pick_follows_weights() {
        let table = [("a", 1u32), ("b", 3), ("c", 0)];
        let mut rng = UserRng::new(2, 0);
        let mut counts = [0u32; 3];
        for _ in 0..40_000 {
            let picked = rng.pick(&table, |entry| entry.1).0;
            counts[table.iter().position(|entry| entry.0 == picked).unwrap()] += 1;
        }
        assert_eq!(counts[2], 0);
        let share_b = f64::from(counts[1]) / 40_000.0;
        assert!((share_b - 0.75).abs() < 0.015, "share of b: {share_b}");
    }

    #[test]
    fn index_by_cumulative_never_returns_past_the_end() {
        let mut rng = UserRng::new(3, 0);
        let cumulative = [0.25, 0.5, 1.0];
        let mut seen = [false; 3];
        for _ in 0..1_000 {
            seen[rng.index_by_cumulative(&cumulative)] = true;
        }
        assert_eq!(seen, [true; 3]);
    }

    #[test]
    fn flag_bucket_is_uniform_and_stable() {
        assert_eq!(flag_bucket("f", "user_1"), flag_bucket("f", "user_1"));
        assert_ne!(flag_bucket("f", "user_1"), flag_bucket("g", "user_1"));
        let below_half = (0..100_000)
            .filter(|i| flag_bucket("new-onboarding", &format!("user_{i}")) < 0.5)
            .count();
        let share = below_half as f64 / 100_000.0;
        // 4 standard deviations of a fair split of 100k (sd = 0.0016).
        assert!(
            (share - 0.5).abs() < 0.0064,
            "share below one half: {share}"
        );
    }
}
