//! Running totals of a sliding frame: count, sum and sum of squares of the non-null values, kept
//! as a frame slides forward over a key's history (values enter at its end and leave at its
//! start), so COUNT, SUM, AVG, VAR and STDDEV cost the same whatever the frame's length; and of
//! pairs of columns (their sums, squares and products), for COVAR and CORR.
//!
//! Sums are double-double (about 32 significant digits): adding and then removing a value
//! leaves no rounding behind, and the variance taken from the sums (sum of squares minus the
//! squared sum over n) keeps its precision when the mean is large beside the deviation. A frame
//! of equal values has a variance of exactly 0 (a spread below the sums' rounding counts as
//! none).
//!
//! NaN and infinities are counted apart from the sums: one added to a sum would stay in it after
//! leaving (`inf - inf` is NaN), and every later frame of the key would read NaN. A frame holding
//! one gives what SQL gives over that frame alone (a NaN sum, or an infinite one, and a NaN
//! spread).

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

/// What a spread of `n` values is divided by: `n` for the population, `n - 1` for a sample;
/// `None` when that is 0.
fn divisor(n: u64, population: bool) -> Option<u64> {
    let d = if population { n } else { n.checked_sub(1)? };
    (d > 0).then_some(d)
}

/// A count of what a frame holds, as a value enters it or leaves it.
fn step(count: &mut u64, enters: bool) {
    if enters {
        *count += 1;
    } else {
        *count -= 1;
    }
}

/// `n` times the mean product of the deviations of `a` and `b` from their means, from their
/// sums `sa` and `sb` and the sum of their products `sab`: `sab - sa * sb / n`.
fn deviations(n: u64, sa: Dd, sb: Dd, sab: Dd) -> f64 {
    sab.add(sa.mul(sb).div(n as f64).neg()).value()
}

/// The sum of the squared deviations of `n` values from their mean, from their sum `s` and sum
/// of squares `ss`. What is left below the sums' own rounding (about 1e-32 of the sum of squares
/// per value added or removed; 1e-24 allows a hundred million) is no spread at all, and rounding
/// can never make a spread negative: both are 0.
fn squared_deviations(n: u64, s: Dd, ss: Dd) -> f64 {
    let d = deviations(n, s, s, ss);
    if d <= ss.value() * 1e-24 { 0.0 } else { d }
}

/// How many NaN, +inf and -inf values a frame holds.
#[derive(Debug, Clone, Copy, Default)]
struct NonFinite {
    nan: u64,
    positive: u64,
    negative: u64,
}

impl NonFinite {
    /// Counts `v` in or out; false (nothing counted) for a finite value.
    fn count(&mut self, v: f64, enters: bool) -> bool {
        let counter = if v.is_nan() {
            &mut self.nan
        } else if v == f64::INFINITY {
            &mut self.positive
        } else if v == f64::NEG_INFINITY {
            &mut self.negative
        } else {
            return false;
        };
        step(counter, enters);
        true
    }

    fn any(&self) -> bool {
        self.nan + self.positive + self.negative > 0
    }

    /// The sum of a frame holding these, whatever its finite values: `None` when it holds none.
    fn sum(&self) -> Option<f64> {
        if self.nan > 0 || (self.positive > 0 && self.negative > 0) {
            Some(f64::NAN)
        } else if self.positive > 0 {
            Some(f64::INFINITY)
        } else if self.negative > 0 {
            Some(f64::NEG_INFINITY)
        } else {
            None
        }
    }
}

/// Totals of the non-null values in a frame.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Totals {
    n: u64,
    sum: Dd,
    squares: Dd,
    /// The values not in the sums.
    non_finite: NonFinite,
    /// The sum of integer values, exact (wrapping as SQL's BIGINT sum does in DataFusion).
    int_sum: i64,
}

impl Totals {
    /// A double value enters the frame (`enters`) or leaves it.
    pub(crate) fn add_f64(&mut self, v: Option<f64>, enters: bool) {
        let Some(v) = v else { return };
        step(&mut self.n, enters);
        if self.non_finite.count(v, enters) {
            return;
        }
        let (v, square) = if enters {
            (v, two_prod(v, v))
        } else {
            (-v, two_prod(v, v).neg())
        };
        self.sum = self.sum.add(Dd { hi: v, lo: 0.0 });
        self.squares = self.squares.add(square);
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
        (self.n > 0).then(|| self.non_finite.sum().unwrap_or(self.sum.value()))
    }

    /// The sum of an integer column; `None` for a frame without values.
    pub(crate) fn int_sum(&self) -> Option<i64> {
        (self.n > 0).then_some(self.int_sum)
    }

    /// The mean; `None` for a frame without values.
    pub(crate) fn mean(&self) -> Option<f64> {
        (self.n > 0).then(|| {
            self.non_finite
                .sum()
                .unwrap_or(self.sum.div(self.n as f64).value())
        })
    }

    /// The variance, of the population or of a sample (`None` for fewer than two values).
    pub(crate) fn variance(&self, population: bool) -> Option<f64> {
        let divisor = divisor(self.n, population)?;
        if self.non_finite.any() {
            return Some(f64::NAN);
        }
        Some(squared_deviations(self.n, self.sum, self.squares) / divisor as f64)
    }
}

/// Totals of the pairs of a frame where both values are non-null: the sums, sums of squares
/// and the sum of products, for covariance and correlation.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CoTotals {
    n: u64,
    /// Pairs with a NaN or an infinity, counted in `n` but not in the sums.
    non_finite: u64,
    x: Dd,
    y: Dd,
    xx: Dd,
    yy: Dd,
    xy: Dd,
}

impl CoTotals {
    /// A pair enters the frame (`enters`) or leaves it; a pair with a null is not counted, as in
    /// SQL.
    pub(crate) fn add(&mut self, x: Option<f64>, y: Option<f64>, enters: bool) {
        let (Some(x), Some(y)) = (x, y) else { return };
        step(&mut self.n, enters);
        if !x.is_finite() || !y.is_finite() {
            step(&mut self.non_finite, enters);
            return;
        }
        let sign = |d: Dd| if enters { d } else { d.neg() };
        self.x = self.x.add(sign(Dd { hi: x, lo: 0.0 }));
        self.y = self.y.add(sign(Dd { hi: y, lo: 0.0 }));
        self.xx = self.xx.add(sign(two_prod(x, x)));
        self.yy = self.yy.add(sign(two_prod(y, y)));
        self.xy = self.xy.add(sign(two_prod(x, y)));
    }

    /// The covariance, of the population or of a sample (`None` for no pairs, or one pair of
    /// a sample).
    pub(crate) fn covariance(&self, population: bool) -> Option<f64> {
        let divisor = divisor(self.n, population)?;
        if self.non_finite > 0 {
            return Some(f64::NAN);
        }
        let products = deviations(self.n, self.x, self.y, self.xy);
        // Below the sums' rounding (see `squared_deviations`) there is no co-variation.
        let scale = (self.xx.value() * self.yy.value()).sqrt();
        if products.abs() <= scale * 1e-24 {
            return Some(0.0);
        }
        Some(products / divisor as f64)
    }

    /// Pearson's correlation coefficient; `None` for fewer than two pairs or a column without
    /// spread (NULL, as in DataFusion; Spark gives NaN for the latter).
    pub(crate) fn correlation(&self) -> Option<f64> {
        if self.n < 2 {
            return None;
        }
        if self.non_finite > 0 {
            return Some(f64::NAN);
        }
        let vx = squared_deviations(self.n, self.x, self.xx);
        let vy = squared_deviations(self.n, self.y, self.yy);
        if vx == 0.0 || vy == 0.0 {
            return None;
        }
        let products = deviations(self.n, self.x, self.y, self.xy);
        Some((products / vx.sqrt() / vy.sqrt()).clamp(-1.0, 1.0))
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

    #[test]
    fn sliding_covariance_and_correlation_equal_computing_them_afresh() {
        // y follows x for a while, then moves against it; one pair in seven has a null.
        let pairs: Vec<(Option<f64>, Option<f64>)> = (0..20_000)
            .map(|i| {
                let x = 5.0e5 + ((i * 7919) % 1000) as f64 * 0.01;
                let noise = ((i * 104_729) % 97) as f64 * 0.001;
                let y = if i < 10_000 {
                    2.0 * x + noise
                } else {
                    -3.0 * x + noise
                };
                (Some(x), (i % 7 != 3).then_some(y))
            })
            .collect();
        let width = 500;
        let mut totals = CoTotals::default();
        for (i, &(x, y)) in pairs.iter().enumerate() {
            totals.add(x, y, true);
            if i >= width {
                let (x, y) = pairs[i - width];
                totals.add(x, y, false);
            }
            if i >= width && i % 331 == 0 {
                let frame: Vec<(f64, f64)> = pairs[i + 1 - width..=i]
                    .iter()
                    .filter_map(|&(x, y)| Some((x?, y?)))
                    .collect();
                let n = frame.len() as f64;
                let (mx, my) = (
                    frame.iter().map(|p| p.0).sum::<f64>() / n,
                    frame.iter().map(|p| p.1).sum::<f64>() / n,
                );
                let sum = |f: &dyn Fn(&(f64, f64)) -> f64| frame.iter().map(f).sum::<f64>();
                let cxy = sum(&|p| (p.0 - mx) * (p.1 - my));
                let (cxx, cyy) = (sum(&|p| (p.0 - mx).powi(2)), sum(&|p| (p.1 - my).powi(2)));
                let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1e-12);
                let got = totals.covariance(false).unwrap();
                assert!(close(got, cxy / (n - 1.0)), "{got} vs {}", cxy / (n - 1.0));
                assert!(close(totals.covariance(true).unwrap(), cxy / n));
                let corr = cxy / (cxx * cyy).sqrt();
                let got = totals.correlation().unwrap();
                assert!((got - corr).abs() <= 1e-9, "{got} vs {corr}");
            }
        }
    }

    #[test]
    fn a_correlation_needs_two_pairs_and_a_spread_in_both_columns() {
        let mut totals = CoTotals::default();
        totals.add(Some(1.0), Some(2.0), true);
        assert_eq!(totals.correlation(), None);
        assert_eq!(totals.covariance(false), None);
        assert_eq!(totals.covariance(true), Some(0.0));
        totals.add(Some(1.0), Some(5.0), true);
        totals.add(Some(3.0), None, true);
        assert_eq!(totals.correlation(), None, "x has no spread");
        assert_eq!(totals.covariance(false), Some(0.0));
        totals.add(Some(2.0), Some(8.0), true);
        assert!((totals.correlation().unwrap() - 3.0 / 12f64.sqrt()).abs() < 1e-12);
        for (x, y) in [
            (Some(1.0), Some(2.0)),
            (Some(1.0), Some(5.0)),
            (Some(2.0), Some(8.0)),
        ] {
            totals.add(x, y, false);
        }
        assert_eq!(
            (totals.covariance(true), totals.correlation()),
            (None, None)
        );
    }

    #[test]
    fn nan_and_infinities_count_only_while_in_the_frame() {
        let values = [
            1.0,
            f64::NAN,
            2.0,
            f64::INFINITY,
            3.0,
            f64::NEG_INFINITY,
            4.0,
            5.0,
            6.0,
        ];
        let width = 2;
        let mut totals = Totals::default();
        let mut pairs = CoTotals::default();
        for (i, &v) in values.iter().enumerate() {
            totals.add_f64(Some(v), true);
            pairs.add(Some(v), Some(v * 2.0), true);
            if i >= width {
                totals.add_f64(Some(values[i - width]), false);
                pairs.add(
                    Some(values[i - width]),
                    Some(values[i - width] * 2.0),
                    false,
                );
            }
            let frame = &values[i.saturating_sub(width - 1)..=i];
            let sum: f64 = frame.iter().sum();
            let same = |a: f64, b: f64| a == b || (a.is_nan() && b.is_nan());
            assert!(
                same(totals.sum().unwrap(), sum),
                "at {i}: {:?} vs {sum}",
                totals.sum()
            );
            let mean = sum / frame.len() as f64;
            assert!(same(totals.mean().unwrap(), mean), "at {i}");
            if frame.len() == width {
                let finite = frame.iter().all(|v| v.is_finite());
                let variance = totals.variance(false).unwrap();
                assert_eq!(variance.is_nan(), !finite, "at {i}");
                assert_eq!(pairs.correlation().unwrap().is_nan(), !finite, "at {i}");
                assert_eq!(pairs.covariance(true).unwrap().is_nan(), !finite, "at {i}");
            }
        }
        assert_eq!(totals.variance(false), Some(0.5), "the last frame, 5 and 6");
        assert_eq!(totals.count(), 2);
    }
}
