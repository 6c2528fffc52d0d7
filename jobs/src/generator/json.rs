//! A minimal JSON object writer for the generator's hot path: appends fields to a reused buffer
//! without building a value tree, with timestamps and dates in the forms Spark and arrow-json parse.

/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;

/// Writes one JSON object into a buffer, field by field.
pub struct JsonObject<'a> {
    buf: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> JsonObject<'a> {
    /// Starts an object at the end of `buf`.
    pub fn begin(buf: &'a mut Vec<u8>) -> Self {
        buf.push(b'{');
        Self { buf, first: true }
    }

    fn key(&mut self, key: &str) {
        if !self.first {
            self.buf.push(b',');
        }
        self.first = false;
        self.buf.push(b'"');
        self.buf.extend_from_slice(key.as_bytes());
        self.buf.extend_from_slice(b"\":");
    }

    /// A string field, escaped.
    pub fn str(&mut self, key: &str, value: &str) -> &mut Self {
        self.key(key);
        write_json_string(self.buf, value);
        self
    }

    /// A string field whose bytes are already known to need no escaping (ids we wrote ourselves).
    pub fn key_raw_str(&mut self, key: &str, value: &[u8]) -> &mut Self {
        self.key(key);
        self.buf.push(b'"');
        self.buf.extend_from_slice(value);
        self.buf.push(b'"');
        self
    }

    /// A string field made of a prefix and a number, such as `u_1234`, without an allocation.
    pub fn id(&mut self, key: &str, prefix: &str, n: u64) -> &mut Self {
        self.key(key);
        self.buf.push(b'"');
        self.buf.extend_from_slice(prefix.as_bytes());
        write_u64(self.buf, n);
        self.buf.push(b'"');
        self
    }

    /// An event id, `PREFIX-RUNHEX-SEQ`: unique within a run, identical across runs of one seed.
    pub fn event_id(&mut self, key: &str, prefix: &str, run: u64, seq: u64) -> &mut Self {
        self.key(key);
        self.buf.push(b'"');
        write_event_id(self.buf, prefix, run, seq);
        self.buf.push(b'"');
        self
    }

    /// A string field joined from parts, such as a merchant's brand and kind.
    pub fn str_parts(&mut self, key: &str, parts: &[&str]) -> &mut Self {
        self.key(key);
        self.buf.push(b'"');
        for part in parts {
            self.buf.extend_from_slice(part.as_bytes());
        }
        self.buf.push(b'"');
        self
    }

    /// An IPv4 address field from its four octets.
    pub fn ipv4(&mut self, key: &str, octets: [u8; 4]) -> &mut Self {
        self.key(key);
        self.buf.push(b'"');
        for (i, o) in octets.iter().enumerate() {
            if i > 0 {
                self.buf.push(b'.');
            }
            write_u64(self.buf, u64::from(*o));
        }
        self.buf.push(b'"');
        self
    }

    /// An integer field.
    pub fn int(&mut self, key: &str, value: i64) -> &mut Self {
        self.key(key);
        if value < 0 {
            self.buf.push(b'-');
        }
        write_u64(self.buf, value.unsigned_abs());
        self
    }

    /// A number with a fixed count of decimals (at most 6), written without float formatting.
    pub fn fixed(&mut self, key: &str, value: f64, decimals: u32) -> &mut Self {
        self.key(key);
        write_fixed(self.buf, value, decimals);
        self
    }

    /// A boolean field.
    pub fn bool(&mut self, key: &str, value: bool) -> &mut Self {
        self.key(key);
        self.buf
            .extend_from_slice(if value { b"true" } else { b"false" });
        self
    }

    /// A null field.
    pub fn null(&mut self, key: &str) -> &mut Self {
        self.key(key);
        self.buf.extend_from_slice(b"null");
        self
    }

    /// A UTC timestamp with milliseconds, `2026-11-22T02:53:05.123Z`.
    pub fn timestamp(&mut self, key: &str, epoch_ms: i64) -> &mut Self {
        self.key(key);
        self.buf.push(b'"');
        write_timestamp(self.buf, epoch_ms);
        self.buf.push(b'"');
        self
    }

    /// A calendar date, `2026-11-22`, from days since the Unix epoch.
    pub fn date(&mut self, key: &str, epoch_days: i64) -> &mut Self {
        self.key(key);
        self.buf.push(b'"');
        write_date(self.buf, epoch_days);
        self.buf.push(b'"');
        self
    }

    /// Closes the object.
    pub fn end(self) {
        self.buf.push(b'}');
    }
}

/// Appends `value` as a quoted JSON string.
pub fn write_json_string(buf: &mut Vec<u8>, value: &str) {
    buf.push(b'"');
    for &b in value.as_bytes() {
        match b {
            b'"' => buf.extend_from_slice(b"\\\""),
            b'\\' => buf.extend_from_slice(b"\\\\"),
            0..=0x1f => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                buf.extend_from_slice(b"\\u00");
                buf.push(HEX[(b >> 4) as usize]);
                buf.push(HEX[(b & 0xf) as usize]);
            }
            _ => buf.push(b),
        }
    }
    buf.push(b'"');
}

/// Appends `PREFIX-RUNHEX-SEQ`.
pub fn write_event_id(buf: &mut Vec<u8>, prefix: &str, run: u64, seq: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    buf.extend_from_slice(prefix.as_bytes());
    buf.push(b'-');
    for shift in (0..8).rev() {
        buf.push(HEX[((run >> (shift * 4)) & 0xf) as usize]);
    }
    buf.push(b'-');
    write_u64(buf, seq);
}

/// Appends the decimal digits of `n`.
pub fn write_u64(buf: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[i..]);
}

fn write_padded(buf: &mut Vec<u8>, n: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut v = n;
    for slot in digits[20 - width..].iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
    buf.extend_from_slice(&digits[20 - width..]);
}

/// Appends `value` rounded to `decimals` places (0 to 6), as JSON.
pub fn write_fixed(buf: &mut Vec<u8>, value: f64, decimals: u32) {
    let decimals = decimals.min(6);
    if !value.is_finite() {
        buf.extend_from_slice(b"null");
        return;
    }
    let scale = 10u64.pow(decimals);
    let scaled = (value.abs() * scale as f64).round() as u64;
    if value < 0.0 && scaled != 0 {
        buf.push(b'-');
    }
    write_u64(buf, scaled / scale);
    if decimals > 0 {
        buf.push(b'.');
        write_padded(buf, scaled % scale, decimals as usize);
    }
}

/// (year, month, day) of a day count since 1970-01-01, proleptic Gregorian.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Appends `YYYY-MM-DD`.
pub fn write_date(buf: &mut Vec<u8>, epoch_days: i64) {
    let (y, m, d) = civil_from_days(epoch_days);
    write_padded(buf, y.max(0) as u64, 4);
    buf.push(b'-');
    write_padded(buf, u64::from(m), 2);
    buf.push(b'-');
    write_padded(buf, u64::from(d), 2);
}

/// Appends `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn write_timestamp(buf: &mut Vec<u8>, epoch_ms: i64) {
    let days = epoch_ms.div_euclid(DAY_MS);
    let ms_of_day = epoch_ms.rem_euclid(DAY_MS) as u64;
    write_date(buf, days);
    buf.push(b'T');
    write_padded(buf, ms_of_day / 3_600_000, 2);
    buf.push(b':');
    write_padded(buf, ms_of_day / 60_000 % 60, 2);
    buf.push(b':');
    write_padded(buf, ms_of_day / 1000 % 60, 2);
    buf.push(b'.');
    write_padded(buf, ms_of_day % 1000, 3);
    buf.push(b'Z');
}

#[cfg(test)]
#[expect(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn writes_valid_json_with_timestamps_and_fixed_numbers() {
        let mut buf = Vec::new();
        let mut o = JsonObject::begin(&mut buf);
        o.str("s", "a\"b\\c\n")
            .id("u", "u_", 42)
            .int("i", -7)
            .fixed("amount", 12.345, 2)
            .fixed("neg", -0.5, 3)
            .bool("b", true)
            .null("n")
            .timestamp("t", 1_795_402_385_123)
            .date("d", 20_414);
        o.end();
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["s"], "a\"b\\c\n");
        assert_eq!(v["u"], "u_42");
        assert_eq!(v["i"], -7);
        assert_eq!(v["amount"].as_f64().unwrap(), 12.35);
        assert_eq!(v["neg"].as_f64().unwrap(), -0.5);
        assert_eq!(v["t"], "2026-11-23T02:53:05.123Z");
        assert_eq!(v["d"], "2025-11-22");
        assert!(v["n"].is_null() && v["b"] == true);
    }

    #[test]
    fn dates_agree_with_chrono_over_centuries() {
        for days in (-100_000i64..100_000).step_by(97) {
            let mut buf = Vec::new();
            write_date(&mut buf, days);
            let want = chrono::DateTime::from_timestamp(days * 86_400, 0)
                .unwrap()
                .format("%Y-%m-%d")
                .to_string();
            if days >= -719_162 {
                assert_eq!(String::from_utf8(buf).unwrap(), want, "day {days}");
            }
        }
    }
}
