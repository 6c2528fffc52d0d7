//! Corruptions that turn a good event into a message a decoder must reject: the kinds of bad
//! bytes real producers send (cut-off writes, wrong serialisers, schema drift).

use super::rng::Rng;

/// How a message was corrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Corruption {
    /// The JSON stops half-way.
    Truncated,
    /// Bytes that are not JSON at all (not even UTF-8).
    NotJson,
    /// `event_time` is present but not a timestamp.
    BadTimestamp,
    /// The required `event_time` field is missing.
    MissingEventTime,
}

const EVENT_TIME: &[u8] = b",\"event_time\":\"";

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Corrupts `value` in place (a JSON event with an `event_time` field) and says how.
pub fn corrupt(rng: &mut Rng, value: &mut Vec<u8>) -> Corruption {
    let kind = rng.below(4);
    let field = find(value, EVENT_TIME);
    match (kind, field) {
        (2, Some(start)) => {
            let from = start + EVENT_TIME.len();
            if let Some(len) = value[from..].iter().position(|b| *b == b'"') {
                value.splice(from..from + len, b"last tuesday".iter().copied());
                return Corruption::BadTimestamp;
            }
            truncate(rng, value)
        }
        (3, Some(start)) => {
            let from = start + EVENT_TIME.len();
            if let Some(len) = value[from..].iter().position(|b| *b == b'"') {
                value.drain(start..from + len + 1);
                return Corruption::MissingEventTime;
            }
            truncate(rng, value)
        }
        (1, _) => {
            // A binary frame from a producer with the wrong serialiser.
            let len = value.len().clamp(8, 64);
            value.clear();
            value.push(0xff);
            value.push(0x00);
            for _ in 2..len {
                value.push(rng.next_u64() as u8);
            }
            Corruption::NotJson
        }
        _ => truncate(rng, value),
    }
}

fn truncate(rng: &mut Rng, value: &mut Vec<u8>) -> Corruption {
    // Cut inside the object, never after its closing brace.
    let cut = 1 + rng.below(value.len().saturating_sub(2).max(1) as u64) as usize;
    value.truncate(cut);
    Corruption::Truncated
}
