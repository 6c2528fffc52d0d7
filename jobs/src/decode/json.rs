//! A JSON scanner over one message: whitespace, strings with their escapes, numbers, literals,
//! and skipping whole values. It checks the syntax of everything it passes over, so a message is
//! either read whole or turned away with the reason before anything reaches a column.
//!
//! Outside strings valid JSON is ASCII, and every string is checked to be UTF-8 as it is read,
//! so every span the scanner hands out is UTF-8, and a message it reads whole is UTF-8.

use memchr::memchr2;

/// Why a message was turned away, in words.
pub type Reason = String;

/// The message stops before its JSON does.
pub const TRUNCATED: &str = "truncated JSON: the message ends inside a value";

/// Objects and arrays nested deeper than this in a field we skip are refused rather than risk
/// the stack on a hostile message.
const MAX_DEPTH: usize = 64;

/// Where a string's text is: a span of the message (no escapes), or of the scratch buffer its
/// escapes were resolved into.
///
/// One word (the start in bits 32 to 62, the end in the low 32, bit 63 set for the scratch
/// buffer) rather than an enum of two spans: an enum is put together in memory from parts and
/// read back whole on its way into a slot, which the processor cannot forward from the stores
/// and which cost about 15% of the decoding time. Messages come from Arrow binary arrays,
/// whose offsets are below 2^31, so every position fits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Text(u64);

impl Text {
    const SCRATCH: u64 = 1 << 63;

    /// `message[start..end]`.
    #[inline(always)]
    pub fn message(start: usize, end: usize) -> Self {
        Self(((start as u64) << 32) | end as u64)
    }

    /// `scratch[start..end]`.
    pub fn scratch(start: usize, end: usize) -> Self {
        Self(Self::message(start, end).0 | Self::SCRATCH)
    }

    /// The text's bytes.
    #[inline(always)]
    pub fn bytes<'a>(self, message: &'a [u8], scratch: &'a [u8]) -> &'a [u8] {
        let start = ((self.0 >> 32) as u32 & !(1 << 31)) as usize;
        let end = self.0 as u32 as usize;
        if self.0 & Self::SCRATCH == 0 {
            &message[start..end]
        } else {
            &scratch[start..end]
        }
    }
}

/// A number as written: its span, and what a fast conversion needs.
#[derive(Debug, Clone, Copy)]
pub struct Number {
    pub start: usize,
    pub end: usize,
    /// No fraction and no exponent.
    pub integer: bool,
    negative: bool,
    /// The significant digits, when there are at most 19 of them.
    mantissa: Option<u64>,
    /// Digits after the decimal point.
    fraction_digits: u32,
    exponent: bool,
}

/// Powers of ten that are exact in an f64.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

impl Number {
    /// The nearest f64 (or an error for a number beyond f64's range).
    #[inline(always)]
    pub fn to_f64(self, message: &[u8]) -> Result<f64, Reason> {
        // Clinger's fast path: an integer below 2^53 divided by an exact power of ten is
        // correctly rounded by one IEEE division. Prices and coordinates almost always fit.
        if let Some(m) = self.mantissa
            && !self.exponent
            && m < (1 << 53)
            && (self.fraction_digits as usize) < POW10.len()
        {
            let v = m as f64 / POW10[self.fraction_digits as usize];
            return Ok(if self.negative { -v } else { v });
        }
        self.parsed_f64(message)
    }

    /// [`Number::to_f64`] through the standard library's parser.
    #[cold]
    fn parsed_f64(self, message: &[u8]) -> Result<f64, Reason> {
        let text =
            std::str::from_utf8(&message[self.start..self.end]).map_err(|e| e.to_string())?;
        let v: f64 = text
            .parse()
            .map_err(|e| format!("{text} is not a number: {e}"))?;
        if v.is_finite() {
            Ok(v)
        } else {
            Err(format!("{text} is out of range for a double"))
        }
    }

    /// The value as an i64, for an integer that fits (more than 19 significant digits never
    /// does).
    pub fn to_i64(self) -> Option<i64> {
        match self.mantissa {
            Some(m) if self.integer && self.negative => 0i64.checked_sub_unsigned(m),
            Some(m) if self.integer => i64::try_from(m).ok(),
            _ => None,
        }
    }
}

/// A cursor over one message.
pub struct Scanner<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Scanner<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    pub fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.pos += 1;
        }
    }

    /// Steps over `byte`, which must come next (after whitespace).
    #[inline]
    pub fn expect(&mut self, byte: u8, context: &str) -> Result<(), Reason> {
        // Compact JSON has the byte right here.
        if self.peek() == Some(byte) {
            self.pos += 1;
            return Ok(());
        }
        self.expect_after_ws(byte, context)
    }

    #[cold]
    fn expect_after_ws(&mut self, byte: u8, context: &str) -> Result<(), Reason> {
        self.skip_ws();
        match self.peek() {
            Some(b) if b == byte => {
                self.pos += 1;
                Ok(())
            }
            Some(b) => Err(format!(
                "expected '{}' {context}, found {}",
                byte as char,
                shown(b)
            )),
            None => Err(TRUNCATED.into()),
        }
    }

    /// Steps over the literal `word` (`true`, `false`, `null`).
    pub fn literal(&mut self, word: &[u8]) -> Result<(), Reason> {
        let rest = &self.bytes[self.pos..];
        if rest.starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else if word.starts_with(rest) {
            Err(TRUNCATED.into())
        } else {
            Err(format!("invalid literal at byte {}", self.pos))
        }
    }

    /// Steps over `"text"` when it is next exactly as written (no escapes); otherwise stays.
    #[inline]
    pub fn take_quoted(&mut self, text: &[u8]) -> bool {
        let end = self.pos + text.len() + 1;
        let found = self.bytes.get(self.pos) == Some(&b'"')
            && self.bytes.get(end) == Some(&b'"')
            && same_short(&self.bytes[self.pos + 1..end], text);
        if found {
            self.pos = end + 1;
        }
        found
    }

    /// Steps over `token` when it is next exactly as written; otherwise stays.
    #[inline(always)]
    pub fn take(&mut self, token: &[u8]) -> bool {
        let found = self
            .bytes
            .get(self.pos..self.pos + token.len())
            .is_some_and(|next| same_short(next, token));
        if found {
            self.pos += token.len();
        }
        found
    }

    /// Reads a string whose opening quote is next, resolving escapes into `scratch` when it has
    /// any, and checking that its text is UTF-8.
    ///
    /// Inlined: returned from a call, the text's span went through memory in parts and was read
    /// back whole, which the processor cannot forward from the stores.
    #[inline(always)]
    pub fn string(&mut self, scratch: &mut Vec<u8>) -> Result<Text, Reason> {
        self.pos += 1; // the opening quote
        let start = self.pos;
        let end = start + plain_run(&self.bytes[start..]);
        match self.bytes.get(end) {
            Some(b'"') => {
                self.pos = end + 1;
                Ok(Text::message(start, end))
            }
            None => Err(TRUNCATED.into()),
            // An escape or a byte beyond ASCII.
            Some(_) => self.string_with_escapes_or_utf8(start, scratch),
        }
    }

    /// The rest of [`Scanner::string`] when its text is not plain ASCII.
    #[cold]
    fn string_with_escapes_or_utf8(
        &mut self,
        start: usize,
        scratch: &mut Vec<u8>,
    ) -> Result<Text, Reason> {
        let Some(i) = memchr2(b'"', b'\\', &self.bytes[start..]) else {
            return Err(TRUNCATED.into());
        };
        if self.bytes[start + i] == b'"' {
            self.pos = start + i + 1;
            self.check_utf8(start)?;
            return Ok(Text::message(start, start + i));
        }
        let from = scratch.len();
        scratch.extend_from_slice(&self.bytes[start..start + i]);
        self.pos = start + i;
        loop {
            // At a backslash.
            self.escape(scratch)?;
            let rest = &self.bytes[self.pos..];
            let Some(i) = memchr2(b'"', b'\\', rest) else {
                return Err(TRUNCATED.into());
            };
            scratch.extend_from_slice(&rest[..i]);
            self.pos += i;
            if rest[i] == b'"' {
                self.pos += 1;
                self.check_utf8(start)?;
                return Ok(Text::scratch(from, scratch.len()));
            }
        }
    }

    /// Checks the string from `start` to the quote just passed. Outside strings only ASCII is
    /// valid JSON, so checking the strings checks the whole message (escapes are ASCII too).
    fn check_utf8(&self, start: usize) -> Result<(), Reason> {
        std::str::from_utf8(&self.bytes[start..self.pos - 1])
            .map(|_| ())
            .map_err(|e| {
                format!(
                    "not UTF-8 text: invalid byte at {}",
                    start + e.valid_up_to()
                )
            })
    }

    fn escape(&mut self, scratch: &mut Vec<u8>) -> Result<(), Reason> {
        let Some(&kind) = self.bytes.get(self.pos + 1) else {
            return Err(TRUNCATED.into());
        };
        self.pos += 2;
        let byte = match kind {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let unit = self.hex4()?;
                let code = if (0xD800..0xDC00).contains(&unit) {
                    // A high surrogate must be followed by an escaped low one.
                    if self.bytes.get(self.pos..self.pos + 2) != Some(b"\\u") {
                        return Err(self.bad_unicode());
                    }
                    self.pos += 2;
                    let low = self.hex4()?;
                    if !(0xDC00..0xE000).contains(&low) {
                        return Err(self.bad_unicode());
                    }
                    0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
                } else {
                    unit
                };
                let c = char::from_u32(code).ok_or_else(|| self.bad_unicode())?;
                let mut buf = [0u8; 4];
                scratch.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                return Ok(());
            }
            other => {
                return Err(format!(
                    "invalid escape '\\{}' in a string",
                    other.escape_ascii()
                ));
            }
        };
        scratch.push(byte);
        Ok(())
    }

    fn hex4(&mut self) -> Result<u32, Reason> {
        let Some(digits) = self.bytes.get(self.pos..self.pos + 4) else {
            return Err(TRUNCATED.into());
        };
        let mut v = 0;
        for &d in digits {
            let n = (d as char).to_digit(16).ok_or_else(|| self.bad_unicode())?;
            v = v * 16 + n;
        }
        self.pos += 4;
        Ok(v)
    }

    fn bad_unicode(&self) -> Reason {
        format!("invalid \\u escape before byte {}", self.pos)
    }

    /// Reads a number, which must start next.
    #[inline]
    pub fn number(&mut self) -> Result<Number, Reason> {
        let start = self.pos;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        let mut mantissa: u64 = 0;
        let mut significant = 0u32;
        let digit = |d: u8, significant: &mut u32, mantissa: &mut u64| {
            if *significant > 0 || d != b'0' {
                *significant += 1;
            }
            *mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
        };
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(d @ b'1'..=b'9') => {
                digit(d, &mut significant, &mut mantissa);
                self.pos += 1;
                while let Some(d @ b'0'..=b'9') = self.peek() {
                    digit(d, &mut significant, &mut mantissa);
                    self.pos += 1;
                }
            }
            None => return Err(TRUNCATED.into()),
            Some(_) => return Err(self.bad_number(start)),
        }
        let mut fraction_digits = 0;
        let mut integer = true;
        if self.peek() == Some(b'.') {
            integer = false;
            self.pos += 1;
            let first = self.pos;
            while let Some(d @ b'0'..=b'9') = self.peek() {
                digit(d, &mut significant, &mut mantissa);
                fraction_digits += 1;
                self.pos += 1;
            }
            if self.pos == first {
                return Err(self.truncated_or_bad(start));
            }
        }
        let mut exponent = false;
        if let Some(b'e' | b'E') = self.peek() {
            integer = false;
            exponent = true;
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            let first = self.pos;
            while let Some(b'0'..=b'9') = self.peek() {
                self.pos += 1;
            }
            if self.pos == first {
                return Err(self.truncated_or_bad(start));
            }
        }
        Ok(Number {
            start,
            end: self.pos,
            integer,
            negative,
            // Leading zeros do not count; past 19 significant digits the u64 has wrapped.
            mantissa: (significant <= 19).then_some(mantissa),
            fraction_digits,
            exponent,
        })
    }

    fn truncated_or_bad(&self, start: usize) -> Reason {
        if self.pos >= self.bytes.len() {
            TRUNCATED.into()
        } else {
            self.bad_number(start)
        }
    }

    fn bad_number(&self, start: usize) -> Reason {
        format!("invalid number at byte {start}")
    }

    /// Steps over one whole value of any kind, checking its syntax.
    pub fn skip_value(&mut self, scratch: &mut Vec<u8>) -> Result<(), Reason> {
        self.skip_nested(scratch, 0)
    }

    fn skip_nested(&mut self, scratch: &mut Vec<u8>, depth: usize) -> Result<(), Reason> {
        if depth > MAX_DEPTH {
            return Err(format!("JSON nested deeper than {MAX_DEPTH} levels"));
        }
        match self.peek() {
            None => Err(TRUNCATED.into()),
            Some(b'"') => {
                let mark = scratch.len();
                self.string(scratch)?;
                scratch.truncate(mark);
                Ok(())
            }
            Some(b'-' | b'0'..=b'9') => self.number().map(|_| ()),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'[') => {
                self.pos += 1;
                self.skip_ws();
                if self.peek() == Some(b']') {
                    self.pos += 1;
                    return Ok(());
                }
                loop {
                    self.skip_ws();
                    self.skip_nested(scratch, depth + 1)?;
                    self.skip_ws();
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b']') => {
                            self.pos += 1;
                            return Ok(());
                        }
                        None => return Err(TRUNCATED.into()),
                        Some(b) => {
                            return Err(format!(
                                "expected ',' or ']' in an array, found {}",
                                shown(b)
                            ));
                        }
                    }
                }
            }
            Some(b'{') => {
                self.pos += 1;
                self.skip_ws();
                if self.peek() == Some(b'}') {
                    self.pos += 1;
                    return Ok(());
                }
                loop {
                    self.skip_ws();
                    match self.peek() {
                        Some(b'"') => {}
                        None => return Err(TRUNCATED.into()),
                        Some(b) => {
                            return Err(format!("expected a field name, found {}", shown(b)));
                        }
                    }
                    let mark = scratch.len();
                    self.string(scratch)?;
                    scratch.truncate(mark);
                    self.expect(b':', "after a field name")?;
                    self.skip_ws();
                    self.skip_nested(scratch, depth + 1)?;
                    self.skip_ws();
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b'}') => {
                            self.pos += 1;
                            return Ok(());
                        }
                        None => return Err(TRUNCATED.into()),
                        Some(b) => {
                            return Err(format!(
                                "expected ',' or '}}' in an object, found {}",
                                shown(b)
                            ));
                        }
                    }
                }
            }
            Some(b) => Err(format!("expected a value, found {}", shown(b))),
        }
    }
}

/// How many bytes at the start of `bytes` are plain string text: ASCII, neither `"` nor `\`.
///
/// Eight bytes at a time: most strings in events are short, and a word's test costs less than
/// the setup of a vectorised search. For each byte, `x - 1` borrows into its top bit only when
/// `x` is zero (and `!x` keeps the top bit only when `x` is below 0x80), so the lowest flagged
/// byte of the word is the first quote, backslash or non-ASCII byte exactly; bytes above it may
/// be flagged by the borrow, which does not matter.
#[inline(always)]
fn plain_run(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const TOPS: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x;
    let mut i = 0;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        let flagged = (zero_byte(w ^ (ONES * u64::from(b'"')))
            | zero_byte(w ^ (ONES * u64::from(b'\\')))
            | w)
            & TOPS;
        if flagged != 0 {
            return i + (flagged.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    i + bytes[i..]
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || !b.is_ascii())
        .unwrap_or(bytes.len() - i)
}

/// Whether `a` and `b`, of the same length, are equal: a field name against the message.
///
/// Names are short; overlapping words cover up to 32 bytes without a loop, and a call to
/// `memcmp` costs more than the comparison.
#[inline(always)]
fn same_short(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |s: &[u8], at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&s[at..at + 8]);
        u64::from_le_bytes(w)
    };
    let half = |s: &[u8], at: usize| {
        let mut w = [0u8; 4];
        w.copy_from_slice(&s[at..at + 4]);
        u32::from_le_bytes(w)
    };
    match n {
        0..4 => a == b,
        4..8 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        17..=32 => {
            word(a, 0) == word(b, 0)
                && word(a, 8) == word(b, 8)
                && word(a, n - 16) == word(b, n - 16)
                && word(a, n - 8) == word(b, n - 8)
        }
        _ => a == b,
    }
}

/// What kind of value starts with `b`, for messages.
pub fn kind_of(b: u8) -> &'static str {
    match b {
        b'"' => "a string",
        b'{' => "an object",
        b'[' => "an array",
        b't' | b'f' => "a boolean",
        b'n' => "null",
        b'-' | b'0'..=b'9' => "a number",
        _ => "something that is not JSON",
    }
}

/// A byte as it reads in a message.
fn shown(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("'{}'", b as char)
    } else {
        format!("byte 0x{b:02x}")
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn f64_of(text: &str) -> f64 {
        let mut s = Scanner::new(text.as_bytes());
        s.number().unwrap().to_f64(text.as_bytes()).unwrap()
    }

    #[test]
    fn numbers_convert_exactly_as_the_standard_library_parses_them() {
        for text in [
            "0",
            "-0",
            "1",
            "58.80",
            "-122.36519",
            "0.1",
            "0.30000000000000004",
            "1e3",
            "1E-3",
            "-2.5e+10",
            "123456789012345678",
            "1234567890123456789012",
            "9007199254740993",
            "0.000001",
            "3.141592653589793238",
            "17976931348623157e292",
            "4.9e-324",
            "0.00000000000000000000000000001",
        ] {
            let std: f64 = text.parse().unwrap();
            assert_eq!(f64_of(text).to_bits(), std.to_bits(), "{text}");
        }
    }

    #[test]
    fn integers_are_exact_and_bounded() {
        let int = |text: &str| {
            let mut s = Scanner::new(text.as_bytes());
            s.number().unwrap().to_i64()
        };
        assert_eq!(int("0"), Some(0));
        assert_eq!(int("-52"), Some(-52));
        assert_eq!(int("9223372036854775807"), Some(i64::MAX));
        assert_eq!(int("-9223372036854775808"), Some(i64::MIN));
        assert_eq!(int("9223372036854775808"), None);
        assert_eq!(int("123456789012345678901"), None);
        assert_eq!(int("1.0"), None);
        assert_eq!(int("1e2"), None);
    }

    #[test]
    fn bad_numbers_are_refused_and_cut_ones_called_truncated() {
        for bad in ["-", "1.", "1e", "1e+", "-x", "+1", ".5"] {
            let mut s = Scanner::new(bad.as_bytes());
            let e = s.number();
            assert!(e.is_err(), "{bad}");
        }
        let mut s = Scanner::new(b"1.");
        assert_eq!(s.number().unwrap_err(), TRUNCATED);
        let mut s = Scanner::new(b"1.x");
        assert!(s.number().unwrap_err().contains("invalid number"));
    }

    #[test]
    fn strings_resolve_every_escape() {
        let text = br#""a\"b\\c\/d\b\f\n\r\t\u00e9\ud83d\ude00 end" tail"#;
        let mut s = Scanner::new(text);
        let mut scratch = Vec::new();
        let read = s.string(&mut scratch).unwrap();
        assert_eq!(read, Text::scratch(0, scratch.len()));
        assert_eq!(
            std::str::from_utf8(read.bytes(&[], &scratch)).unwrap(),
            "a\"b\\c/d\u{8}\u{c}\n\r\té😀 end"
        );
        assert_eq!(&text[s.pos()..], b" tail");
        for bad in [
            r#""\x""#,
            r#""\u12""#,
            r#""\ud83d""#,
            r#""\ud83dx""#,
            r#""\ude00""#,
        ] {
            let mut s = Scanner::new(bad.as_bytes());
            assert!(s.string(&mut Vec::new()).is_err(), "{bad}");
        }
        let mut s = Scanner::new(br#""abc\"#);
        assert_eq!(s.string(&mut Vec::new()).unwrap_err(), TRUNCATED);
    }

    #[test]
    fn plain_runs_stop_at_the_first_quote_backslash_or_non_ascii_byte() {
        // Every length around a word, every place of the stop, and stops after stops (which a
        // word's borrow may also flag).
        for len in 0..20 {
            for at in 0..=len {
                for stop in [b'"', b'\\', 0x80, 0xc3, 0xff] {
                    for after in [b'a', b'"', 0, 0xe9] {
                        let mut bytes: Vec<u8> = (0..len).map(|i| b' ' + (i % 90) as u8).collect();
                        bytes.retain(|&b| b != b'"' && b != b'\\');
                        let at = at.min(bytes.len());
                        bytes.insert(at, stop);
                        bytes.insert(at + 1, after);
                        assert_eq!(plain_run(&bytes), at, "{bytes:?}");
                        assert_eq!(plain_run(&bytes[..at]), at, "{bytes:?}");
                    }
                }
            }
        }
        // Control characters and zero bytes are plain text to the scan.
        assert_eq!(plain_run(b"\0\x01\x1f\x7f\0\0\0\0\0\0\""), 10);
    }

    #[test]
    fn text_spans_say_where_their_bytes_are() {
        let message = b"0123456789";
        let scratch = b"abcdefghij";
        for (a, b) in [(0, 0), (0, 10), (3, 7), (10, 10)] {
            assert_eq!(Text::message(a, b).bytes(message, scratch), &message[a..b]);
            assert_eq!(Text::scratch(a, b).bytes(message, scratch), &scratch[a..b]);
            assert_ne!(Text::message(a, b), Text::scratch(a, b));
        }
        // The largest positions an Arrow binary array can hold keep both ends apart.
        let far = (1usize << 31) - 1;
        assert_ne!(Text::message(far, far), Text::scratch(far, far));
        assert_ne!(Text::message(far, 0), Text::message(0, far));
    }

    #[test]
    fn short_comparisons_see_every_byte() {
        for n in 0..40 {
            let a: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
            assert!(same_short(&a, &a.clone()));
            for i in 0..n {
                let mut b = a.clone();
                b[i] ^= 0x20;
                assert!(!same_short(&a, &b), "{n} {i}");
            }
            assert!(!same_short(&a, &[a.as_slice(), b"x"].concat()));
        }
    }

    #[test]
    fn strings_are_utf8_or_turned_away_where_they_are_not() {
        for text in [
            "\"caf\u{e9} \u{1f600} \u{4e2d}\"",
            "\"\\u00e9 \u{e9}\"",
            "\"\u{e9}\\n\"",
        ] {
            let mut s = Scanner::new(text.as_bytes());
            let mut scratch = Vec::new();
            let read = s.string(&mut scratch).unwrap();
            let bytes = read.bytes(text.as_bytes(), &scratch);
            let expected: String = serde_json::from_str(text).unwrap();
            assert_eq!(std::str::from_utf8(bytes).unwrap(), expected);
            assert_eq!(s.pos(), text.len());
        }
        for (bad, at) in [
            (&b"\"abc\xc3\x28\""[..], 4),
            (b"\"\xe9t\xc3\xa9\"", 1),
            (b"\"caf\xc3\xa9 \xff\"", 7),
            (b"\"\\n\xc3\"", 3),
            (b"\"\xf0\x9f\x98\"", 1),
        ] {
            let mut s = Scanner::new(bad);
            assert_eq!(
                s.string(&mut Vec::new()).unwrap_err(),
                format!("not UTF-8 text: invalid byte at {at}"),
                "{bad:?}"
            );
        }
        let mut s = Scanner::new(b"\"caf\xc3");
        assert_eq!(s.string(&mut Vec::new()).unwrap_err(), TRUNCATED);
    }

    #[test]
    fn skipping_checks_syntax_and_depth() {
        let ok = br#"{"a":[1,2,{"b":null,"c":[true,false,"x\"y"]}],"d":{}} ,"#;
        let mut s = Scanner::new(ok);
        s.skip_value(&mut Vec::new()).unwrap();
        assert_eq!(&ok[s.pos()..], b" ,");
        for bad in [
            &br#"{"a" 1}"#[..],
            br#"[1 2]"#,
            br#"{"a":tru}"#,
            br#"{1:2}"#,
        ] {
            let mut s = Scanner::new(bad);
            assert!(s.skip_value(&mut Vec::new()).is_err());
        }
        let deep = "[".repeat(100) + &"]".repeat(100);
        let mut s = Scanner::new(deep.as_bytes());
        assert!(
            s.skip_value(&mut Vec::new())
                .unwrap_err()
                .contains("nested")
        );
        let mut s = Scanner::new(br#"{"a":[1,"#);
        assert_eq!(s.skip_value(&mut Vec::new()).unwrap_err(), TRUNCATED);
    }
}
