//! A small, fast, seedable random number generator (xoshiro256++ seeded by SplitMix64) with the
//! distributions the event models draw from.
//!
//! Ours rather than a crate's so that `--seed` reproduces the same events across dependency
//! upgrades: a crate is free to change its output stream between versions.

/// SplitMix64 step: used to seed, and to derive stable per-entity values from a hash.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Mixes several values into one well-spread 64-bit hash.
pub fn mix(values: &[u64]) -> u64 {
    let mut state = 0x2545_F491_4F6C_DD1D;
    let mut out = 0;
    for v in values {
        state ^= *v;
        out ^= splitmix64(&mut state);
    }
    out
}

/// xoshiro256++.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator whose stream depends only on `seed`.
    pub fn new(seed: u64) -> Self {
        let mut sm = seed;
        Self {
            s: [
                splitmix64(&mut sm),
                splitmix64(&mut sm),
                splitmix64(&mut sm),
                splitmix64(&mut sm),
            ],
        }
    }

    /// A generator for one entity's stable profile: the same `(seed, kind, id)` always gives the
    /// same stream.
    pub fn for_entity(seed: u64, kind: u64, id: u64) -> Self {
        Self::new(mix(&[seed, kind, id]))
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    #[inline]
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [lo, hi).
    #[inline]
    pub fn range_f64(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.f64()
    }

    /// Uniform integer in [0, n); 0 when n is 0.
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform integer in [lo, hi] (inclusive).
    #[inline]
    pub fn between(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1).max(1) as u64) as i64
    }

    /// True with probability `p`.
    #[inline]
    pub fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }

    /// One element of a non-empty slice, uniformly.
    #[inline]
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    /// An index drawn with the given (not necessarily normalised) weights.
    pub fn weighted(&mut self, weights: &[f64]) -> usize {
        self.weighted_by(weights, |_, w| *w)
    }

    /// An index into `items` drawn with weight `weight(index, item)`, without allocating.
    pub fn weighted_by<T>(&mut self, items: &[T], weight: impl Fn(usize, &T) -> f64) -> usize {
        let total: f64 = items.iter().enumerate().map(|(i, t)| weight(i, t)).sum();
        let mut x = self.f64() * total;
        for (i, t) in items.iter().enumerate() {
            let w = weight(i, t);
            if x < w {
                return i;
            }
            x -= w;
        }
        items.len().saturating_sub(1)
    }

    /// Standard normal (Box–Muller; the second value is dropped to keep the state simple).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.f64().max(f64::MIN_POSITIVE);
        let u2 = self.f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Normal with the given mean and standard deviation.
    pub fn gauss(&mut self, mean: f64, sd: f64) -> f64 {
        mean + sd * self.normal()
    }

    /// Log-normal whose median is `median`, with shape `sigma`.
    pub fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        median * (sigma * self.normal()).exp()
    }

    /// Exponential with the given mean.
    pub fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.f64()).ln()
    }

    /// A skewed index in [0, n): low indices are drawn more often, as a few customers make most
    /// transactions.
    pub fn skewed(&mut self, n: u64) -> u64 {
        let u = self.f64();
        ((u * u * n as f64) as u64).min(n.saturating_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_ranges_hold() {
        let mut a = Rng::new(42);
        let mut b = Rng::new(42);
        for _ in 0..1000 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let mut r = Rng::new(7);
        let mut sum = 0.0;
        for _ in 0..100_000 {
            let x = r.f64();
            assert!((0.0..1.0).contains(&x));
            sum += x;
            assert!(r.below(10) < 10);
            let y = r.between(-3, 3);
            assert!((-3..=3).contains(&y));
        }
        let mean = sum / 100_000.0;
        assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
    }
}
