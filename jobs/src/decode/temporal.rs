//! Dates and timestamps in JSON strings. The shape producers almost always send (RFC 3339,
//! `2026-11-22T11:21:10.993Z`, and `2026-11-22`) is read directly; anything else goes to arrow's
//! parser, which accepts the other forms Spark and Postgres users write (a space for `T`, no
//! zone meaning UTC, a bare date).

use chrono::Utc;
use datafusion::arrow::compute::kernels::cast_utils::{Parser, string_to_datetime};
use datafusion::arrow::datatypes::Date32Type;

/// Microseconds since the epoch, UTC, of a string's text (UTF-8, as the scanner gives it);
/// digits past the microsecond are dropped, as Spark does.
pub fn timestamp_micros(text: &[u8]) -> Option<i64> {
    rfc3339_micros(text).or_else(|| {
        string_to_datetime(&Utc, std::str::from_utf8(text).ok()?)
            .ok()
            .map(|t| t.timestamp_micros())
    })
}

/// Days since the epoch, of a string's text.
pub fn date_days(b: &[u8]) -> Option<i32> {
    if b.len() == 10 && b[4] == b'-' && b[7] == b'-' {
        let (y, m, d) = (digits(&b[0..4])?, digits(&b[5..7])?, digits(&b[8..10])?);
        if let Some(days) = civil_days(y as i64, m, d) {
            return i32::try_from(days).ok();
        }
    }
    Date32Type::parse(std::str::from_utf8(b).ok()?)
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, or `None` for any other shape.
fn rfc3339_micros(b: &[u8]) -> Option<i64> {
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let days = civil_days(
        i64::from(digits(&b[0..4])?),
        digits(&b[5..7])?,
        digits(&b[8..10])?,
    )?;
    let (h, mi, s) = (
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    );
    if h > 23 || mi > 59 || s > 59 {
        return None;
    }
    let mut at = 19;
    let mut micros = 0i64;
    if b[at] == b'.' {
        at += 1;
        let first = at;
        while at < b.len() && b[at].is_ascii_digit() {
            if at - first < 6 {
                micros = micros * 10 + i64::from(b[at] - b'0');
            }
            at += 1;
        }
        let n = at - first;
        if n == 0 {
            return None;
        }
        for _ in n..6 {
            micros *= 10;
        }
    }
    let offset_seconds = match &b[at..] {
        [b'Z'] => 0,
        [sign @ (b'+' | b'-'), zone @ ..] if zone.len() == 5 && zone[2] == b':' => {
            let (zh, zm) = (digits(&zone[0..2])?, digits(&zone[3..5])?);
            if zh > 23 || zm > 59 {
                return None;
            }
            let secs = i64::from(zh * 3600 + zm * 60);
            if *sign == b'-' { -secs } else { secs }
        }
        _ => return None,
    };
    let seconds = days * 86_400 + i64::from(h * 3600 + mi * 60 + s) - offset_seconds;
    Some(seconds * 1_000_000 + micros)
}

fn digits(b: &[u8]) -> Option<u32> {
    b.iter().try_fold(0u32, |v, &d| {
        d.is_ascii_digit().then(|| v * 10 + u32::from(d - b'0'))
    })
}

/// Days from 1970-01-01 to a valid proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_days(year: i64, month: u32, day: u32) -> Option<i64> {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if day == 0 || day > month_days {
        return None;
    }
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y.rem_euclid(400);
    let m = i64::from(month);
    let day_of_year = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    Some(era * 146_097 + day_of_era - 719_468)
}

#[cfg(test)]
#[expect(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn arrow_micros(text: &str) -> Option<i64> {
        string_to_datetime(&Utc, text)
            .ok()
            .map(|t| t.timestamp_micros())
    }

    #[test]
    fn the_fast_path_agrees_with_arrows_parser() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        for _ in 0..20_000 {
            let year = 1600 + next(800);
            let (month, day) = (1 + next(12), 1 + next(31));
            let (h, m, s) = (next(24), next(60), next(60));
            let fraction = match next(4) {
                0 => String::new(),
                1 => format!(".{:03}", next(1000)),
                2 => format!(".{:06}", next(1_000_000)),
                _ => format!(".{:09}", next(1_000_000_000)),
            };
            let zone = match next(3) {
                0 => "Z".to_string(),
                1 => format!("+{:02}:{:02}", next(15), next(60)),
                _ => format!("-{:02}:{:02}", next(12), next(60)),
            };
            let text =
                format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}{fraction}{zone}");
            // Impossible dates (30 February) are refused by both.
            assert_eq!(
                rfc3339_micros(text.as_bytes()),
                arrow_micros(&text),
                "{text}"
            );
            let date = &text[..10];
            assert_eq!(
                date_days(date.as_bytes()),
                Date32Type::parse(date),
                "{date}"
            );
        }
    }

    #[test]
    fn other_shapes_fall_back_to_arrows_parser() {
        assert_eq!(
            timestamp_micros(b"2026-11-22 11:21:10"),
            arrow_micros("2026-11-22T11:21:10Z")
        );
        assert_eq!(
            timestamp_micros(b"2026-11-22"),
            arrow_micros("2026-11-22T00:00:00Z")
        );
        assert_eq!(timestamp_micros(b"1970-01-01T00:00:00.000001Z"), Some(1));
        assert_eq!(timestamp_micros(b"1969-12-31T23:59:59.999999Z"), Some(-1));
        assert_eq!(timestamp_micros(b"last tuesday"), None);
        assert_eq!(timestamp_micros(b"2026-02-30T00:00:00Z"), None);
        assert_eq!(date_days(b"1970-01-02"), Some(1));
        assert_eq!(date_days(b"2026-11-2"), Date32Type::parse("2026-11-2"));
        assert!(date_days(b"2026-13-01").is_none());
        assert_eq!(civil_days(2000, 2, 29), Some(11_016));
        assert!(civil_days(1900, 2, 29).is_none());
        assert_eq!(
            timestamp_micros(b"2026-11-22T11:21:10.993Z").unwrap() % 1_000_000,
            993_000
        );
    }
}
