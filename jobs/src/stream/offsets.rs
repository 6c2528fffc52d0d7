//! Planning a micro-batch's offsets: where each partition starts (the last batch's end, or
//! `startingOffsets` for the first), where it ends (the log end, capped by `maxOffsetsPerTrigger`
//! split across partitions by backlog, and by the availableNow target), and what data loss there
//! was in between. Pure functions over offsets, so every rule is unit-tested without a broker.

use std::collections::BTreeMap;

use crate::error::{JobError, Result};
use crate::kafka::{OffsetRange, Watermarks};
use crate::stream::checkpoint::PartitionOffsets;
use crate::stream::spec::StartingOffsets;

/// Watermarks of every partition, by topic.
pub type PartitionWatermarks = BTreeMap<String, BTreeMap<i32, Watermarks>>;

/// Offsets lost between batches (truncated or recreated topics), with `failOnDataLoss = false`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataLoss {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// Records that can no longer be read (0 when unknown, as after a topic was recreated).
    pub records: u64,
    /// What happened.
    pub reason: String,
}

/// A planned micro-batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchPlan {
    /// The ranges to read (only partitions with something to read).
    pub ranges: Vec<OffsetRange>,
    /// Where every partition ends after the batch: the next batch's start.
    pub end: PartitionOffsets,
    /// Data loss found while planning.
    pub lost: Vec<DataLoss>,
}

impl BatchPlan {
    /// Records the batch will read.
    pub fn records(&self) -> u64 {
        self.ranges.iter().map(|r| (r.end - r.start) as u64).sum()
    }
}

/// The latest offset (log end) of every partition.
pub fn latest(marks: &PartitionWatermarks) -> PartitionOffsets {
    marks
        .iter()
        .map(|(t, ps)| (t.clone(), ps.iter().map(|(p, w)| (*p, w.high)).collect()))
        .collect()
}

/// Resolves `startingOffsets` against the partitions found at query start.
pub fn resolve_starting(
    starting: &StartingOffsets,
    marks: &PartitionWatermarks,
) -> std::result::Result<PartitionOffsets, String> {
    let mut out = PartitionOffsets::new();
    for (topic, partitions) in marks {
        for (p, w) in partitions {
            let offset = match starting {
                StartingOffsets::Earliest => w.low,
                StartingOffsets::Latest => w.high,
                StartingOffsets::Specific(map) => match map.get(topic).and_then(|ps| ps.get(p)) {
                    Some(-2) => w.low,
                    Some(-1) => w.high,
                    Some(o) => *o,
                    None => {
                        return Err(format!(
                            "names no offset for {topic} partition {p}: as in Spark, give every partition (-2 for earliest, -1 for latest)"
                        ));
                    }
                },
            };
            out.entry(topic.clone()).or_default().insert(*p, offset);
        }
    }
    if let StartingOffsets::Specific(map) = starting {
        for (topic, partitions) in map {
            for p in partitions.keys() {
                if !marks.get(topic).is_some_and(|ps| ps.contains_key(p)) {
                    return Err(format!("{topic} partition {p} does not exist"));
                }
            }
        }
    }
    Ok(out)
}

/// Plans the next batch from `start` (the last batch's end). `limit` is `maxOffsetsPerTrigger`;
/// `target`, when given (availableNow, once), caps every partition and leaves partitions it does
/// not name unread.
pub fn plan_batch(
    start: &PartitionOffsets,
    marks: &PartitionWatermarks,
    limit: Option<u64>,
    target: Option<&PartitionOffsets>,
    fail_on_data_loss: bool,
) -> Result<BatchPlan> {
    let mut lost = Vec::new();
    let mut from: Vec<(String, i32, i64, i64)> = Vec::new();
    for (topic, partitions) in marks {
        for (&p, w) in partitions {
            let mut begin = match start.get(topic).and_then(|ps| ps.get(&p)) {
                Some(o) => *o,
                // A partition that appeared since the last batch: read it from its start, as
                // Spark does.
                None => w.low,
            };
            if begin < w.low || begin > w.high {
                let (records, reason) = if begin < w.low {
                    (
                        (w.low - begin) as u64,
                        format!(
                            "offsets {begin} to {} were deleted before they were read (retention or truncation)",
                            w.low - 1
                        ),
                    )
                } else {
                    (
                        0,
                        format!(
                            "offset {begin} is past the log end {} (the topic was recreated?); resuming at {}",
                            w.high, w.low
                        ),
                    )
                };
                if fail_on_data_loss {
                    return Err(JobError::DataLoss {
                        topic: topic.clone(),
                        partition: p,
                        reason,
                    });
                }
                lost.push(DataLoss {
                    topic: topic.clone(),
                    partition: p,
                    records,
                    reason,
                });
                begin = w.low;
            }
            let upper = match target {
                None => w.high,
                Some(t) => t
                    .get(topic)
                    .and_then(|ps| ps.get(&p))
                    .map_or(begin, |o| (*o).min(w.high)),
            };
            from.push((topic.clone(), p, begin, upper.max(begin)));
        }
    }
    let ends = cap_by_backlog(&from, limit);
    let mut end = PartitionOffsets::new();
    // Partitions no longer listed (another instance's, or deleted) keep their last offsets.
    for (topic, partitions) in start {
        for (p, o) in partitions {
            end.entry(topic.clone()).or_default().insert(*p, *o);
        }
    }
    let mut ranges = Vec::new();
    for ((topic, p, begin, _), stop) in from.into_iter().zip(ends) {
        end.entry(topic.clone()).or_default().insert(p, stop);
        if stop > begin {
            ranges.push(OffsetRange {
                topic,
                partition: p,
                start: begin,
                end: stop,
            });
        }
    }
    Ok(BatchPlan { ranges, end, lost })
}

/// Spark's split of `maxOffsetsPerTrigger`: each partition gets the limit times its share of the
/// backlog, rounded down, but at least one record when it has any.
fn cap_by_backlog(from: &[(String, i32, i64, i64)], limit: Option<u64>) -> Vec<i64> {
    let total: u64 = from.iter().map(|(_, _, b, u)| (u - b) as u64).sum();
    match limit {
        Some(limit) if total > limit => from
            .iter()
            .map(|(_, _, begin, upper)| {
                let backlog = (upper - begin) as f64;
                let share = limit as f64 * backlog / total as f64;
                let take = if share < 1.0 {
                    share.ceil()
                } else {
                    share.floor()
                };
                begin + (take as i64).min(upper - begin)
            })
            .collect(),
        _ => from.iter().map(|(_, _, _, upper)| *upper).collect(),
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn marks(entries: &[(&str, i32, i64, i64)]) -> PartitionWatermarks {
        let mut m = PartitionWatermarks::new();
        for (t, p, low, high) in entries {
            m.entry(t.to_string()).or_default().insert(
                *p,
                Watermarks {
                    low: *low,
                    high: *high,
                },
            );
        }
        m
    }

    fn offsets(entries: &[(&str, i32, i64)]) -> PartitionOffsets {
        let mut m = PartitionOffsets::new();
        for (t, p, o) in entries {
            m.entry(t.to_string()).or_default().insert(*p, *o);
        }
        m
    }

    #[test]
    fn starting_offsets_resolve_like_spark() {
        let m = marks(&[("t", 0, 10, 100), ("t", 1, 0, 50)]);
        assert_eq!(
            resolve_starting(&StartingOffsets::Earliest, &m).unwrap(),
            offsets(&[("t", 0, 10), ("t", 1, 0)])
        );
        assert_eq!(
            resolve_starting(&StartingOffsets::Latest, &m).unwrap(),
            offsets(&[("t", 0, 100), ("t", 1, 50)])
        );
        let json = crate::stream::spec::parse_partition_offsets(r#"{"t":{"0":-1,"1":7}}"#).unwrap();
        assert_eq!(
            resolve_starting(&StartingOffsets::Specific(json), &m).unwrap(),
            offsets(&[("t", 0, 100), ("t", 1, 7)])
        );
        let partial = crate::stream::spec::parse_partition_offsets(r#"{"t":{"0":-2}}"#).unwrap();
        let err = resolve_starting(&StartingOffsets::Specific(partial), &m).unwrap_err();
        assert!(err.contains("t partition 1"), "{err}");
    }

    #[test]
    fn max_offsets_per_trigger_splits_by_backlog() {
        let m = marks(&[("t", 0, 0, 1000), ("t", 1, 0, 100), ("t", 2, 0, 1)]);
        let start = offsets(&[("t", 0, 0), ("t", 1, 0), ("t", 2, 0)]);
        let plan = plan_batch(&start, &m, Some(110), None, true).unwrap();
        let takes: Vec<i64> = plan.ranges.iter().map(|r| r.end - r.start).collect();
        // 110 * 1000/1101 = 99.9 -> 99; 110 * 100/1101 = 9.99 -> 9; 0.0999 -> at least 1.
        assert_eq!(takes, vec![99, 9, 1]);
        let next = plan_batch(&plan.end, &m, None, None, true).unwrap();
        assert_eq!(next.records(), 1101 - 109);
        assert_eq!(
            next.end,
            offsets(&[("t", 0, 1000), ("t", 1, 100), ("t", 2, 1)])
        );
        let idle = plan_batch(&next.end, &m, None, None, true).unwrap();
        assert!(idle.ranges.is_empty());
    }

    #[test]
    fn data_loss_fails_or_is_counted() {
        let m = marks(&[("t", 0, 50, 80)]);
        let start = offsets(&[("t", 0, 20)]);
        let err = plan_batch(&start, &m, None, None, true).unwrap_err();
        assert!(
            matches!(err, JobError::DataLoss { partition: 0, .. }),
            "{err}"
        );
        let plan = plan_batch(&start, &m, None, None, false).unwrap();
        assert_eq!(plan.lost.len(), 1);
        assert_eq!(plan.lost[0].records, 30);
        assert_eq!(plan.ranges[0].start, 50);

        // Recreated topic: the old offset is past the new log end.
        let recreated = marks(&[("t", 0, 0, 5)]);
        let plan = plan_batch(&offsets(&[("t", 0, 80)]), &recreated, None, None, false).unwrap();
        assert_eq!((plan.ranges[0].start, plan.ranges[0].end), (0, 5));
    }

    #[test]
    fn new_partitions_start_at_earliest_and_targets_cap() {
        let m = marks(&[("t", 0, 0, 100), ("t", 1, 3, 40)]);
        let start = offsets(&[("t", 0, 60)]);
        let plan = plan_batch(&start, &m, None, None, true).unwrap();
        assert_eq!(plan.end, offsets(&[("t", 0, 100), ("t", 1, 40)]));
        assert_eq!(plan.ranges[1].start, 3);

        let target = offsets(&[("t", 0, 70)]);
        let plan = plan_batch(&start, &m, None, Some(&target), true).unwrap();
        assert_eq!(plan.end, offsets(&[("t", 0, 70), ("t", 1, 3)]));
        assert_eq!(plan.records(), 10);
    }
}
