//! Progress reports shaped like Spark's `StreamingQueryProgress`, one per micro-batch: logged as
//! a JSON line, stored under `<checkpoint>/progress/`, and shown on a terminal's status line.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::stream::checkpoint::PartitionOffsets;
use crate::stream::scores::ScoreProgress;

/// Time spent in each phase of a batch, in ms (Spark's `durationMs`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Durations {
    /// Listing the log ends and planning the batch's offsets (Spark's `latestOffset`).
    #[serde(rename = "getOffsets")]
    pub get_offsets: u64,
    /// Writing `offsets/<batchId>` (Spark's `walCommit`).
    #[serde(rename = "walCommit")]
    pub wal_commit: u64,
    /// Reading the records from Kafka.
    #[serde(rename = "getBatch")]
    pub get_batch: u64,
    /// Decoding JSON values to typed columns.
    pub decode: u64,
    /// Running the SQL.
    pub query: u64,
    /// Appending to the Delta tables (Spark's `addBatch` is decode + query + commit).
    pub commit: u64,
    /// Riskstream's addition: publishing the batch's alerts and waiting for their acks.
    pub alerts: u64,
    /// Writing `commits/<batchId>` (Spark's `commitOffsets`).
    #[serde(rename = "commitOffsets")]
    pub commit_offsets: u64,
    /// The whole batch.
    #[serde(rename = "triggerExecution")]
    pub trigger_execution: u64,
}

/// Milliseconds in `d`.
pub fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// A source's part of a report.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceProgress {
    /// Spark's description, such as `KafkaV2[Subscribe[transactions]]`.
    pub description: String,
    /// Where the batch started.
    pub start_offset: PartitionOffsets,
    /// Where it ended.
    pub end_offset: PartitionOffsets,
    /// The log ends seen when planning.
    pub latest_offset: PartitionOffsets,
    /// Records read.
    pub num_input_rows: u64,
    /// Records arriving per second since the last batch.
    pub input_rows_per_second: f64,
    /// Records processed per second of this batch.
    pub processed_rows_per_second: f64,
    /// Riskstream's addition: offsets lost to truncation with `failOnDataLoss = false`.
    pub num_lost_offsets: u64,
}

/// A sink's part of a report.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SinkProgress {
    /// Such as `DeltaSink[s3://lake/risk_scores]`.
    pub description: String,
    /// Rows appended by this batch (0 when it was a replay already in the table).
    pub num_output_rows: u64,
    /// Riskstream's addition: rows appended to the dead-letter table.
    pub num_dead_letter_rows: u64,
    /// Riskstream's addition: rows appended to the late-events table (jobs with a watermark).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_late_rows: Option<u64>,
    /// Riskstream's addition: the table versions this batch created.
    pub table_versions: BTreeMap<String, u64>,
}

/// A stateful operator's part of a report (Spark's `StateOperatorProgress`). The watermark is
/// reported as one: it is what decides which rows are dropped.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StateOperatorProgress {
    /// Such as `watermark`.
    pub operator_name: String,
    /// Rows held in state after the batch.
    pub num_rows_total: u64,
    /// Rows of state the batch added or changed.
    pub num_rows_updated: u64,
    /// Bytes of state held in memory.
    pub memory_used_bytes: u64,
    /// Input rows at or before the watermark (Spark drops them; here they go to `late_events`).
    pub num_rows_dropped_by_watermark: u64,
    /// Milliseconds spent writing the state's snapshot into the checkpoint.
    pub commit_time_ms: u64,
}

/// The alert sink's part of a report (Riskstream's addition).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertProgress {
    /// Such as `KafkaSink[risk-alerts]`.
    pub description: String,
    /// Alerts published and acknowledged by this batch (a replay publishes its alerts again);
    /// 0 for a table alone.
    pub num_output_rows: u64,
    /// Rows the alerts' `where` selected, per severity (when the output has one).
    pub by_severity: BTreeMap<String, u64>,
}

/// One batch's report: Spark's `StreamingQueryProgress` fields.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryProgress {
    /// The query id (stable across restarts).
    pub id: String,
    /// This run's id.
    pub run_id: String,
    /// The job's name.
    pub name: String,
    /// When the batch started (ISO 8601).
    pub timestamp: String,
    /// The batch id.
    pub batch_id: i64,
    /// The batch's duration in ms.
    pub batch_duration: u64,
    /// Records read.
    pub num_input_rows: u64,
    /// Records arriving per second since the last batch.
    pub input_rows_per_second: f64,
    /// Records processed per second of this batch.
    pub processed_rows_per_second: f64,
    /// Time per phase.
    pub duration_ms: Durations,
    /// Event-time figures: `min`, `max`, `avg` and `watermark` for jobs with a watermark.
    pub event_time: BTreeMap<String, String>,
    /// Stateful operators (the watermark, for jobs with one).
    pub state_operators: Vec<StateOperatorProgress>,
    /// The sources.
    pub sources: Vec<SourceProgress>,
    /// The sink.
    pub sink: SinkProgress,
    /// The alert sink, when the job has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alerts: Option<AlertProgress>,
    /// Riskstream's addition: the batch's scores, when the output has a `risk_score`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scores: Option<ScoreProgress>,
    /// Riskstream's addition: the batch was replayed after a restart.
    pub replayed: bool,
}

impl QueryProgress {
    /// The report as one JSON value.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}
