//! What a batch scored, for its progress report and the metrics built from it: a histogram of
//! `risk_score` and the rows per `severity`, for any job whose output has those columns.

use std::collections::BTreeMap;

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type};
use serde::Serialize;

/// Upper bounds of the `risk_score` histogram's buckets; the last is 1.
pub const SCORE_BOUNDS: [f64; 10] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0];

/// A batch's scores.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScoreProgress {
    /// Scores in each bucket of `SCORE_BOUNDS` (not cumulative): bucket i holds the scores above
    /// bound i-1 up to bound i.
    pub risk_score_buckets: Vec<u64>,
    /// The sum of the scores.
    pub risk_score_sum: f64,
    /// Rows per severity tier.
    pub severity: BTreeMap<String, u64>,
}

impl ScoreProgress {
    /// The scores of `batches`; `None` when they have no `risk_score` column.
    pub fn of(batches: &[RecordBatch]) -> Option<Self> {
        let first = batches.first()?;
        first.schema().index_of("risk_score").ok()?;
        let mut out = Self {
            risk_score_buckets: vec![0; SCORE_BOUNDS.len()],
            ..Self::default()
        };
        for batch in batches {
            let Some(scores) = batch
                .column_by_name("risk_score")
                .and_then(|c| cast(c, &DataType::Float64).ok())
            else {
                continue;
            };
            for score in scores.as_primitive::<Float64Type>().iter().flatten() {
                let bucket = SCORE_BOUNDS
                    .iter()
                    .position(|b| score <= *b)
                    .unwrap_or(SCORE_BOUNDS.len() - 1);
                out.risk_score_buckets[bucket] += 1;
                out.risk_score_sum += score;
            }
        }
        out.severity = severity_counts(batches);
        Some(out)
    }
}

/// Rows per value of the `severity` column of `batches` (none without one).
pub fn severity_counts(batches: &[RecordBatch]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for batch in batches {
        let Some(tiers) = batch
            .column_by_name("severity")
            .and_then(|c| cast(c, &DataType::Utf8).ok())
        else {
            continue;
        };
        // Counted by borrowed text: a handful of tiers, not a string per row.
        let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
        for tier in tiers.as_string::<i32>().iter().flatten() {
            *counts.entry(tier).or_default() += 1;
        }
        for (tier, n) in counts {
            *out.entry(tier.to_string()).or_default() += n;
        }
    }
    out
}

#[cfg(test)]
#[expect(clippy::unwrap_used)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Float64Array, StringArray};
    use datafusion::arrow::datatypes::{Field, Schema};
    use std::sync::Arc;

    #[test]
    fn scores_fall_in_their_buckets_and_tiers_are_counted() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("risk_score", DataType::Float64, true),
            Field::new("severity", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Float64Array::from(vec![
                    Some(0.0),
                    Some(0.1),
                    Some(0.15),
                    None,
                    Some(1.0),
                ])),
                Arc::new(StringArray::from(vec![
                    Some("low"),
                    Some("low"),
                    Some("low"),
                    None,
                    Some("critical"),
                ])),
            ],
        )
        .unwrap();
        let p = ScoreProgress::of(&[batch]).unwrap();
        assert_eq!(p.risk_score_buckets, vec![2, 1, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert!((p.risk_score_sum - 1.25).abs() < 1e-12);
        assert_eq!(p.severity["low"], 3);
        assert_eq!(p.severity["critical"], 1);
        assert_eq!(p.severity.len(), 2);
        assert_eq!(ScoreProgress::of(&[]), None);
    }
}
