//! Fixed-length intervals as SQL and Spark write them, in microseconds: frame bounds
//! (`INTERVAL '5' MINUTE`), window durations (`'10 minutes'`, `'1 hour 30 minutes'`).

use datafusion::common::ScalarValue;

/// A day in microseconds.
pub(crate) const DAY_US: i64 = 86_400_000_000;

/// A fixed interval in microseconds; `None` for months and years (no fixed length), nulls and
/// anything that is not an interval.
pub fn interval_us(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::IntervalDayTime(Some(d)) => {
            Some(i64::from(d.days) * DAY_US + i64::from(d.milliseconds) * 1000)
        }
        ScalarValue::IntervalMonthDayNano(Some(d)) if d.months == 0 => {
            Some(i64::from(d.days) * DAY_US + d.nanoseconds / 1000)
        }
        ScalarValue::DurationSecond(Some(s)) => Some(s * 1_000_000),
        ScalarValue::DurationMillisecond(Some(ms)) => Some(ms * 1000),
        ScalarValue::DurationMicrosecond(Some(us)) => Some(*us),
        ScalarValue::DurationNanosecond(Some(ns)) => Some(ns / 1000),
        // Before type coercion, the planner keeps an INTERVAL bound as its text ("5 MINUTE");
        // Spark's window functions take their durations as text ("10 minutes").
        ScalarValue::Utf8(Some(text))
        | ScalarValue::LargeUtf8(Some(text))
        | ScalarValue::Utf8View(Some(text)) => interval_text_us(text),
        _ => None,
    }
}

/// An interval's text (`5 MINUTE`, `1 millisecond`, `2 hours 30 minutes`, Spark's
/// `interval 10 minutes`) in microseconds; `None` for months and years, which have no fixed
/// length, and for text that is not an interval.
pub fn interval_text_us(text: &str) -> Option<i64> {
    let mut words: Vec<String> = text
        .split_whitespace()
        .map(str::to_ascii_lowercase)
        .collect();
    if words.first().is_some_and(|w| w == "interval") {
        words.remove(0);
    }
    if words.is_empty() || !words.len().is_multiple_of(2) {
        return None;
    }
    let mut total = 0f64;
    for pair in words.chunks(2) {
        let n: f64 = pair[0].trim_matches('\'').parse().ok()?;
        // Units as SQL and arrow write them: `m` is a minute, `ms` a millisecond.
        let us = match pair[1].as_str() {
            "us" | "usec" | "usecs" | "microsecond" | "microseconds" => 1.0,
            "ms" | "msec" | "msecs" | "millisecond" | "milliseconds" => 1e3,
            "s" | "sec" | "secs" | "second" | "seconds" => 1e6,
            "m" | "min" | "mins" | "minute" | "minutes" => 60e6,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3_600e6,
            "d" | "day" | "days" => 86_400e6,
            "w" | "week" | "weeks" => 604_800e6,
            _ => return None,
        };
        total += n * us;
    }
    (total.is_finite() && total >= 0.0).then(|| total.round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_texts_become_microseconds() {
        assert_eq!(interval_text_us("5 MINUTE"), Some(300_000_000));
        assert_eq!(interval_text_us("1 millisecond"), Some(1_000));
        assert_eq!(interval_text_us("2 hours 30 minutes"), Some(9_000_000_000));
        assert_eq!(interval_text_us("interval 10 minutes"), Some(600_000_000));
        assert_eq!(interval_text_us("0.5 SECOND"), Some(500_000));
        assert_eq!(interval_text_us("10 m"), Some(600_000_000));
        assert_eq!(interval_text_us("10 ms"), Some(10_000));
        assert_eq!(interval_text_us("2 mins 3 secs"), Some(123_000_000));
        assert_eq!(interval_text_us("1 MONTH"), None);
        assert_eq!(interval_text_us("soon"), None);
        assert_eq!(interval_us(&ScalarValue::Utf8(None)), None);
    }
}
