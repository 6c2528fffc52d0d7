//! Running totals of a sliding frame: count, sum and sum of squares of the non-null values, kept
//! as a frame slides forward over a key's history (values enter at its end and leave at its
//! start), so COUNT, SUM, AVG, VAR and STDDEV cost the same whatever the frame's length.
//!
//! Sums are double-double (about 32 significant digits): adding and then removing a value
//! leaves no rounding behind, and the variance taken from the sums (sum of squares minus the
//! squared sum over n) keeps its precision when the mean is large beside the deviation. A frame
//! of equal values has a variance of exactly 0 (a spread below the sums' rounding counts as
//! none).

/// A double-double: `hi + lo`, with `|lo|` below half an ulp of `hi`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Dd {
    hi: f64,
    lo: f64,
}

/// `a + b` exactly, as a rounded sum and its error.
fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    (s, (a - (s - bb)) + (b - bb))
}

/// `a + b` exactly, when `|a| >= |b|` (or `a` is 0).
fn fast_two_sum(a: f64, b: f64) -> Dd {
    let s = a + b;
    Dd {
        hi: s,
        lo: b - (s - a),
    }
}

/// `a * b` exactly.
fn two_prod(a: f64, b: f64) -> Dd {
    let p = a * b;
    Dd {
        hi: p,
        lo: a.mul_add(b, -p),
    }
}

impl Dd {
    fn add(self, o: Dd) -> Dd {
        let (s, e) = two_sum(self.hi, o.hi);
        fast_two_sum(s, e + self.lo + o.lo)
    }

    fn neg(self) -> Dd {
        Dd {
            hi: -self.hi,
            lo: -self.lo,
        }
    }

    fn mul(self, o: Dd) -> Dd {
        let p = two_prod(self.hi, o.hi);
        fast_two_sum(p.hi, p.lo + self.hi * o.lo + self.lo * o.hi)
    }

    fn div(self, d: f64) -> Dd {
        let q1 = self.hi / d;
        let r = self.add(two_prod(q1, d).neg());
        fast_two_sum(q1, r.hi / d)
    }

    fn value(self) -> f64 {
        self.hi + self.lo
    }
}

/// Totals of the non-null values in a frame.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Totals {
    n: u64,
    sum: Dd,
    squares: Dd,
    /// The sum of integer values, exact (wrapping as SQL's BIGINT sum does in DataFusion).
    int_sum: i64,
}

impl Totals {
    /// A double value enters the frame (`enters`) or leaves it.
    pub(crate) fn add_f64(&mut self, v: Option<f64>, enters: bool) {
        let Some(v) = v else { return };
        let (v, square) = if enters {
            (v, two_prod(v, v))
        } else {
            (-v, two_prod(v, v).neg())
        };
        self.sum = self.sum.add(Dd { hi: v, lo: 0.0 });
        self.squares = self.squares.add(square);
        if enters {
            self.n += 1;
        } else {
            self.n -= 1;
        }
    }

    /// An integer value enters or leaves the frame.
    pub(crate) fn add_i64(&mut self, v: Option<i64>, enters: bool) {
        let Some(v) = v else { return };
        self.int_sum = if enters {
            self.int_sum.wrapping_add(v)
        } else {
            self.int_sum.wrapping_sub(v)
        };
        // As a double too, for the mean and the deviation (exact below 2^53).
        self.add_f64(Some(v as f64), enters);
    }

    /// Non-null values in the frame.
    pub(crate) fn count(&self) -> u64 {
        self.n
    }

    /// The sum of a double column; `None` for a frame without values.
    pub(crate) fn sum(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum.value())
    }

    /// The sum of an integer column; `None` for a frame without values.
    pub(crate) fn int_sum(&self) -> Option<i64> {
        (self.n > 0).then_some(self.int_sum)
    }

    /// The mean; `None` for a frame without values.
    pub(crate) fn mean(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum.div(self.n as f64).value())
    }

    /// The variance, of the population or of a sample (`None` for fewer than two values).
    pub(crate) fn variance(&self, population: bool) -> Option<f64> {
        let divisor = if population {
            self.n
        } else {
            self.n.checked_sub(1)?
        };
        if divisor == 0 {
            return None;
        }
        let deviations = self
            .squares
            .add(self.sum.mul(self.sum).div(self.n as f64).neg())
            .value();
        // What is left below the sums' own rounding (about 1e-32 of the sum of squares per
        // value added or removed; 1e-24 allows a hundred million) is no spread at all, and
        // rounding can never make a spread negative.
        if deviations <= self.squares.value() * 1e-24 {
            return Some(0.0);
        }
        Some(deviations / divisor as f64)
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn two_pass(values: &[f64], population: bool) -> f64 {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let squares: f64 = values.iter().map(|v| (v - mean) * (v - mean)).sum();
        squares / if population { n } else { n - 1.0 }
    }

    #[test]
    fn a_sliding_frame_keeps_the_precision_of_computing_it_afresh() {
        // A large mean, a small spread, and a long slide: naive running sums lose the variance.
        let values: Vec<f64> = (0..50_000)
            .map(|i| 1.0e9 + ((i * 7919) % 1000) as f64 * 0.001)
            .collect();
        let width = 1000;
        let mut totals = Totals::default();
        for (i, v) in values.iter().enumerate() {
            totals.add_f64(Some(*v), true);
            if i >= width {
                totals.add_f64(Some(values[i - width]), false);
            }
            if i >= width && i % 997 == 0 {
                let frame = &values[i + 1 - width..=i];
                let expected = two_pass(frame, false);
                let got = totals.variance(false).unwrap();
                assert!(
                    (got - expected).abs() <= 1e-9 * expected,
                    "{got} vs {expected}"
                );
                let mean = frame.iter().sum::<f64>() / width as f64;
                assert!((totals.mean().unwrap() - mean).abs() <= 1e-6);
            }
        }
    }

    #[test]
    fn equal_values_have_no_spread_and_empty_frames_no_values() {
        let mut totals = Totals::default();
        for _ in 0..3 {
            totals.add_f64(Some(670.814), true);
        }
        totals.add_f64(Some(12.5), true);
        totals.add_f64(Some(12.5), false);
        assert_eq!(totals.variance(false), Some(0.0));
        assert_eq!(totals.count(), 3);
        let mut empty = Totals::default();
        assert_eq!(
            (empty.sum(), empty.mean(), empty.variance(true)),
            (None, None, None)
        );
        empty.add_i64(Some(i64::MAX), true);
        empty.add_i64(Some(1), true);
        assert_eq!(empty.int_sum(), Some(i64::MIN), "wraps as BIGINT does");
        assert_eq!(empty.variance(false).map(|v| v > 0.0), Some(true));
    }
}
