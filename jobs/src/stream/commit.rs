//! A batch's commit, the runner's second stage: `offsets/<batchId>` written ahead (unless the
//! runner wrote it before the batch's SQL, no batch committing then), the batch's rows appended
//! to the job's tables side by side with its state snapshot written, its alerts published, then
//! `commits/<batchId>` and its progress. Batches commit one at a time and in order, each step in
//! the order it had when batches ran one after another, so a crash leaves the checkpoint and the
//! tables as it did then; what changed is that the runner runs the next batch's SQL meanwhile
//! (`runner.rs`).

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use riskstream_lake::{AppendOutcome, DeltaAppender, TableSpec};

use crate::error::{JobError, Result};
use crate::lake_sink::{table_location, table_spec};
use crate::schemas::{dead_letters_schema, timestamp_type};
use crate::stream::alerts::AlertSink;
use crate::stream::block::BlockSink;
use crate::stream::checkpoint::{Checkpoint, OffsetLogEntry, PartitionOffsets};
use crate::stream::incremental::Snapshot;
use crate::stream::progress::{
    AlertProgress, Durations, QueryProgress, SinkProgress, SourceProgress, StateOperatorProgress,
    ms,
};
use crate::stream::row_filter::RowFilter;
use crate::stream::scores::{ScoreProgress, severity_counts};
use crate::stream::spec::{JobSpec, OutputMode};
use crate::stream::watermark::{EventTime, EventTimeStats};

/// The sink tables of a job.
pub(crate) struct Sinks {
    table: DeltaAppender,
    pub(crate) table_path: String,
    dead_letters: DeltaAppender,
    /// Rows behind the watermark, for jobs with one.
    late_events: Option<DeltaAppender>,
    /// The alerts' table (`alerts.options.path`), if any.
    alerts: Option<DeltaAppender>,
    pub(crate) schema: SchemaRef,
    pub(crate) batch_id_column: bool,
    pub(crate) processing_time_column: bool,
}

impl Sinks {
    pub(crate) async fn open(
        spec: &JobSpec,
        output: &SchemaRef,
        event_time: Option<&EventTime>,
    ) -> Result<Self> {
        let sink = &spec.sink;
        let mut fields: Vec<Field> = output.fields().iter().map(|f| f.as_ref().clone()).collect();
        for name in [&sink.batch_id_column, &sink.processing_time_column]
            .into_iter()
            .flatten()
        {
            if output.field_with_name(name).is_ok() {
                return Err(JobError::config(
                    spec.key("writeStream.options"),
                    format!(
                        "the query already has a column `{name}`; the batch column would repeat it"
                    ),
                ));
            }
        }
        if let Some(name) = &sink.batch_id_column {
            fields.push(Field::new(name, DataType::Int64, false));
        }
        if let Some(name) = &sink.processing_time_column {
            fields.push(Field::new(name, timestamp_type(), false));
        }
        let schema: SchemaRef = Arc::new(Schema::new(fields));
        for column in &sink.partition_by {
            if schema.field_with_name(column).is_err() {
                return Err(JobError::config(
                    spec.key("writeStream.partitionBy"),
                    format!("the query has no column `{column}`"),
                ));
            }
        }
        let (lake, name) = table_location(&sink.path, &spec.key("writeStream.options.path"))?;
        // Every table the job writes takes the sink's checkpoint interval and codec.
        let sink_table = |name: &str, schema: SchemaRef, partition_by: Vec<String>| TableSpec {
            checkpoint_interval: Some(sink.checkpoint_interval),
            compression: sink.compression,
            ..table_spec(name, schema, partition_by)
        };
        let main_spec = TableSpec {
            merge_schema: sink.merge_schema,
            ..sink_table(&name, Arc::clone(&schema), sink.partition_by.clone())
        };
        let table = DeltaAppender::open_or_create(&lake, main_spec).await?;
        let (dl_lake, dl_name) = table_location(
            &sink.dead_letter_path,
            &spec.key("writeStream.options.deadLetterPath"),
        )?;
        let dl_spec = sink_table(&dl_name, dead_letters_schema(), Vec::new());
        let dead_letters = DeltaAppender::open_or_create(&dl_lake, dl_spec).await?;
        let late_events = match event_time {
            None => None,
            Some(et) => {
                let (lake, name) = table_location(
                    &sink.late_events_path,
                    &spec.key("writeStream.options.lateEventsPath"),
                )?;
                let late_spec = sink_table(&name, Arc::clone(et.late_schema()), Vec::new());
                Some(DeltaAppender::open_or_create(&lake, late_spec).await?)
            }
        };
        let alerts = match spec.alerts.as_ref().and_then(|a| a.table_path.as_ref()) {
            None => None,
            Some(path) => {
                let key = spec.key("alerts.options.path");
                let same = |other: &str| path.trim_end_matches('/') == other.trim_end_matches('/');
                if same(&sink.path) || same(&sink.dead_letter_path) || same(&sink.late_events_path)
                {
                    return Err(JobError::config(
                        key,
                        "must differ from the job's other tables",
                    ));
                }
                let (lake, name) = table_location(path, &key)?;
                let alerts_spec = sink_table(&name, Arc::clone(&schema), Vec::new());
                Some(DeltaAppender::open_or_create(&lake, alerts_spec).await?)
            }
        };
        Ok(Self {
            table,
            table_path: sink.path.clone(),
            dead_letters,
            late_events,
            alerts,
            schema,
            batch_id_column: sink.batch_id_column.is_some(),
            processing_time_column: sink.processing_time_column.is_some(),
        })
    }
}

/// What a batch's appends gave, table by table (`None` for tables the job does not have).
struct Appended {
    table: AppendOutcome,
    dead_letters: AppendOutcome,
    late_rows: u64,
    late: Option<AppendOutcome>,
    event_stats: Option<EventTimeStats>,
    alerts: Option<AppendOutcome>,
    blocked: Option<AppendOutcome>,
}

/// What commits a job's batches: its tables, its alerts and its checkpoint. The batch being
/// committed holds them, and gives them back when its commit ends.
pub(crate) struct Outputs {
    pub(crate) sinks: Sinks,
    /// Selects the alerts among the output rows (`alerts.where`).
    pub(crate) alert_filter: Option<RowFilter>,
    /// The alerts' topic.
    pub(crate) alerts: Option<AlertSink>,
    pub(crate) alerts_table_path: Option<String>,
    pub(crate) block: Option<BlockSink>,
    pub(crate) checkpoint: Checkpoint,
    pub(crate) mode: OutputMode,
    pub(crate) query_id: String,
    pub(crate) run_id: String,
    pub(crate) name: String,
    pub(crate) source_description: String,
    /// When the last batch committed: with a backlog the next batch is read and run while the
    /// last one commits, and its processing rate counts only the time after that.
    pub(crate) last_commit: Option<Instant>,
}

/// How long a batch that started at `started` and committed at `now` had the job to itself:
/// from its start, or from the commit of the batch before if that came later. Consecutive
/// batches' spans add up to the time they took together, so rows over span is the rate the job
/// kept up (Spark's `processedRowsPerSecond`, whose batches never overlap); rows over the whole
/// `triggerExecution` would undercount it by the overlap.
fn processing_span(started: Instant, last_commit: Option<Instant>, now: Instant) -> f64 {
    let from = last_commit.map_or(started, |last| last.max(started));
    now.saturating_duration_since(from).as_secs_f64().max(1e-9)
}

/// A batch whose query has run, to commit.
pub(crate) struct BatchCommit {
    pub(crate) batch_id: i64,
    /// A replay of a batch the checkpoint logged.
    pub(crate) replayed: bool,
    /// What `offsets/<batchId>` holds.
    pub(crate) offsets: OffsetLogEntry,
    /// Whether it is written already (a replay's, or one written before the batch's SQL).
    pub(crate) logged: bool,
    /// The query's rows, with the batch's columns added.
    pub(crate) output: Vec<RecordBatch>,
    pub(crate) dead_letters: Vec<RecordBatch>,
    /// Rows behind the watermark, how many, and the batch's event-time statistics (jobs with
    /// a watermark).
    pub(crate) late: Option<(Vec<RecordBatch>, u64, EventTimeStats)>,
    /// The state after the batch (stateful queries).
    pub(crate) snapshot: Option<Snapshot>,
    /// The watermark the batch ran with, and the one the next batch runs with (ms).
    pub(crate) watermarks: (i64, i64),
    pub(crate) processing_micros: i64,
    pub(crate) durations: Durations,
    /// When the batch's planning started, on both clocks.
    pub(crate) started: Instant,
    pub(crate) timestamp: chrono::DateTime<chrono::Utc>,
    /// Seconds since the batch before started (this batch's own time for the first).
    pub(crate) since_last: f64,
    pub(crate) input_rows: u64,
    pub(crate) lost: u64,
    /// Where the batch started, and the log ends seen when planning it.
    pub(crate) start: PartitionOffsets,
    pub(crate) latest: PartitionOffsets,
    /// The state operator's report, its commit time and late rows left to fill.
    pub(crate) state_operator: Option<StateOperatorProgress>,
}

/// A committed batch.
pub(crate) struct Committed {
    pub(crate) progress: QueryProgress,
    /// Alerts published.
    pub(crate) alerts: u64,
}

impl Outputs {
    /// Commits `batch`; its progress is written to the checkpoint, for the caller to report.
    pub(crate) async fn commit(&mut self, batch: BatchCommit) -> Result<Committed> {
        let BatchCommit {
            batch_id,
            replayed,
            offsets,
            logged,
            output,
            dead_letters,
            late,
            snapshot,
            watermarks: (watermark_ms, next_watermark_ms),
            processing_micros,
            mut durations,
            started,
            timestamp,
            since_last,
            input_rows,
            lost,
            start,
            latest,
            state_operator,
        } = batch;
        let Self {
            sinks,
            alert_filter,
            alerts,
            alerts_table_path,
            block,
            checkpoint,
            mode,
            query_id,
            run_id,
            name,
            source_description,
            last_commit,
        } = self;
        if !logged {
            let wal = Instant::now();
            checkpoint.write_offsets(batch_id, &offsets).await?;
            durations.wal_commit = ms(wal.elapsed());
        }
        let scores = ScoreProgress::of(&output);
        let selected_alerts = alert_filter
            .as_ref()
            .map(|f| f.select(&output))
            .transpose()?;
        let blocked = block
            .as_ref()
            .map(|b| b.rows(&output, batch_id, processing_micros))
            .transpose()?;

        // The state snapshot is written beside the tables' appends: the batch's commit record
        // needs both, neither needs the other.
        let state_write = async {
            match snapshot {
                Some(snapshot) => {
                    let start = Instant::now();
                    checkpoint
                        .write_state(batch_id, snapshot.bytes, snapshot.drop_before)
                        .await?;
                    Ok::<_, JobError>(ms(start.elapsed()))
                }
                None => Ok(0),
            }
        };
        let commit_start = Instant::now();
        let output_rows = rows(&output);
        let dead_letter_rows = rows(&dead_letters);
        // The tables' appends run side by side: each commits its own table's version with the
        // batch's transaction, and a replay skips the tables that hold it whatever the order.
        // One after another, a batch of a few thousand rows waited for five commits in turn.
        // Each runs to its end even when another fails (none is dropped halfway).
        let Sinks {
            table: table_sink,
            dead_letters: dead_letter_sink,
            late_events: late_sink,
            alerts: alert_table,
            table_path,
            ..
        } = sinks;
        let mode = *mode;
        let query_id: &str = query_id;
        let appended = async {
            let appends = tokio::join!(
                async {
                    Ok::<_, JobError>(match mode {
                        // Every group, every batch (complete needs an aggregation, checked at
                        // start): the table holds the latest result.
                        OutputMode::Complete => {
                            table_sink.overwrite(output, query_id, batch_id).await?
                        }
                        _ => table_sink.append(output, query_id, batch_id).await?,
                    })
                },
                async {
                    Ok::<_, JobError>(
                        dead_letter_sink
                            .append(dead_letters, query_id, batch_id)
                            .await?,
                    )
                },
                async {
                    Ok::<_, JobError>(match (late, late_sink.as_mut()) {
                        (Some((rows, n, stats)), Some(table)) => (
                            n,
                            Some(table.append(rows, query_id, batch_id).await?),
                            Some(stats),
                        ),
                        _ => (0, None, None),
                    })
                },
                // The alerts' table takes them exactly once, with the batch's transaction like
                // the rest.
                async {
                    Ok::<_, JobError>(match (alert_table.as_mut(), &selected_alerts) {
                        (Some(table), Some(selected)) => {
                            Some(table.append(selected.clone(), query_id, batch_id).await?)
                        }
                        _ => None,
                    })
                },
                async {
                    Ok::<_, JobError>(match (block.as_mut(), blocked) {
                        (Some(table), Some(rows)) => {
                            Some(table.append(rows, query_id, batch_id).await?)
                        }
                        _ => None,
                    })
                },
            );
            let (table, dead_letters, late, alerts, blocked) = appends;
            // The first failure in the order the tables were appended to before.
            let (table, dead_letters) = (table?, dead_letters?);
            let (late_rows, late, event_stats) = late?;
            Ok::<_, JobError>(Appended {
                table,
                dead_letters,
                late_rows,
                late,
                event_stats,
                alerts: alerts?,
                blocked: blocked?,
            })
        };
        // Both run to their end even when one fails, so that no write of this batch's state is
        // still under way when the run returns (a restart would race it).
        let (appended, state_commit_ms) = tokio::join!(
            async {
                let appended = appended.await;
                durations.commit = ms(commit_start.elapsed());
                appended
            },
            state_write
        );
        let state_commit_ms = state_commit_ms?;
        let appended = appended?;
        // Alerts go out after the tables hold the batch and before its commit record: a crash in
        // between replays the batch and publishes them again (at least once).
        let alerts_start = Instant::now();
        let alerts_published = match (&*alerts, &selected_alerts) {
            (Some(sink), Some(selected)) => {
                tokio::task::block_in_place(|| sink.publish(selected, query_id, batch_id))?;
                rows(selected)
            }
            _ => 0,
        };
        durations.alerts = ms(alerts_start.elapsed());
        let offsets_start = Instant::now();
        checkpoint.write_commit(batch_id, next_watermark_ms).await?;
        durations.commit_offsets = ms(offsets_start.elapsed());
        let committed = Instant::now();
        durations.trigger_execution = ms(committed.saturating_duration_since(started));
        let span = processing_span(started, last_commit.replace(committed), committed);

        let written = |o: AppendOutcome, n: u64| match o {
            AppendOutcome::Committed { .. } => n,
            AppendOutcome::AlreadyCommitted | AppendOutcome::Empty => 0,
        };
        let mut table_versions = std::collections::BTreeMap::new();
        for (name, outcome) in [
            ("table", Some(appended.table)),
            ("deadLetters", Some(appended.dead_letters)),
            ("lateEvents", appended.late),
            ("alerts", appended.alerts),
            ("blockedEntities", appended.blocked),
        ] {
            if let Some(AppendOutcome::Committed { table_version }) = outcome {
                table_versions.insert(name.to_string(), table_version);
            }
        }
        let since_last = since_last.max(1e-9);
        let progress = QueryProgress {
            id: query_id.to_string(),
            run_id: run_id.clone(),
            name: name.clone(),
            timestamp: timestamp.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            batch_id,
            batch_duration: durations.trigger_execution,
            num_input_rows: input_rows,
            input_rows_per_second: input_rows as f64 / since_last,
            processed_rows_per_second: input_rows as f64 / span,
            duration_ms: durations,
            event_time: appended
                .event_stats
                .map(|s| s.progress(watermark_ms))
                .unwrap_or_default(),
            state_operators: state_operator
                .map(|s| StateOperatorProgress {
                    num_rows_dropped_by_watermark: appended.late_rows,
                    commit_time_ms: state_commit_ms,
                    ..s
                })
                .into_iter()
                .collect(),
            sources: vec![SourceProgress {
                description: source_description.clone(),
                start_offset: start,
                end_offset: offsets.end,
                latest_offset: latest,
                num_input_rows: input_rows,
                input_rows_per_second: input_rows as f64 / since_last,
                processed_rows_per_second: input_rows as f64 / span,
                num_lost_offsets: lost,
            }],
            sink: SinkProgress {
                description: format!("DeltaSink[{table_path}]"),
                num_output_rows: written(appended.table, output_rows),
                num_dead_letter_rows: written(appended.dead_letters, dead_letter_rows),
                num_late_rows: appended.late.map(|o| written(o, appended.late_rows)),
                table_versions,
            },
            alerts: selected_alerts.as_ref().map(|selected| AlertProgress {
                description: alerts.as_ref().map_or_else(
                    || {
                        format!(
                            "DeltaSink[{}]",
                            alerts_table_path.as_deref().unwrap_or_default()
                        )
                    },
                    AlertSink::description,
                ),
                num_output_rows: alerts_published,
                by_severity: severity_counts(selected),
            }),
            scores,
            replayed,
        };
        let json = progress.to_json();
        checkpoint.write_progress(batch_id, &json).await?;
        checkpoint.purge_before(batch_id).await?;
        tracing::info!(target: "riskstream::progress", "{json}");
        Ok(Committed {
            progress,
            alerts: alerts_published,
        })
    }
}

/// Rows in `batches`.
pub(crate) fn rows(batches: &[RecordBatch]) -> u64 {
    batches.iter().map(|b| b.num_rows() as u64).sum()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::processing_span;

    #[test]
    fn overlapping_batches_share_the_wall_time_they_took_together() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        // The first batch runs alone: its own time.
        assert_eq!(processing_span(t0, None, t0 + s(3)), 3.0);
        // The second was read and run while the first committed: it counts from that commit,
        // so the two spans add up to the five seconds both took.
        assert_eq!(processing_span(t0 + s(1), Some(t0 + s(3)), t0 + s(5)), 2.0);
        // A batch that starts after the last commit (a trigger interval's wait) counts from
        // its own start, not across the idle time.
        assert_eq!(
            processing_span(t0 + s(10), Some(t0 + s(5)), t0 + s(12)),
            2.0
        );
    }
}
