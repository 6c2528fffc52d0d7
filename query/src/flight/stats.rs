//! What the Flight SQL server has answered, for its metrics: statements run by outcome, rows
//! sent, and how long each took from the first batch asked for to the last sent.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Upper bounds (seconds) of the query duration histogram.
pub const QUERY_SECONDS_BOUNDS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];

/// How a statement's fetch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// Every batch sent.
    Ok,
    /// The query failed, or passed a limit.
    Error,
    /// Cancelled, or the client went away before the end.
    Cancelled,
}

impl Outcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Cancelled => "cancelled",
        }
    }
}

/// A copy of the figures at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatsSnapshot {
    /// Statements whose fetch ended, by outcome.
    pub queries: BTreeMap<&'static str, u64>,
    /// Rows sent.
    pub rows: u64,
    /// Fetch durations: counts per bound of `QUERY_SECONDS_BOUNDS` (not cumulative), then above.
    pub duration_counts: Vec<u64>,
    /// Their sum, in seconds.
    pub duration_sum: f64,
    /// Fetches running now.
    pub running: u64,
}

/// The server's figures, shared by its fetches.
#[derive(Debug, Default)]
pub struct QueryStats {
    inner: Mutex<StatsSnapshot>,
}

impl QueryStats {
    fn with<T>(&self, f: impl FnOnce(&mut StatsSnapshot) -> T) -> T {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if inner.duration_counts.is_empty() {
            inner.duration_counts = vec![0; QUERY_SECONDS_BOUNDS.len() + 1];
        }
        f(&mut inner)
    }

    /// A fetch started.
    pub fn started(&self) {
        self.with(|s| s.running += 1);
    }

    /// A fetch ended after `elapsed`, having sent `rows`.
    pub fn finished(&self, outcome: Outcome, rows: u64, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        self.with(|s| {
            s.running = s.running.saturating_sub(1);
            *s.queries.entry(outcome.as_str()).or_default() += 1;
            s.rows += rows;
            let at = QUERY_SECONDS_BOUNDS
                .iter()
                .position(|b| seconds <= *b)
                .unwrap_or(QUERY_SECONDS_BOUNDS.len());
            s.duration_counts[at] += 1;
            s.duration_sum += seconds;
        });
    }

    /// The figures now.
    pub fn snapshot(&self) -> StatsSnapshot {
        self.with(|s| s.clone())
    }
}
