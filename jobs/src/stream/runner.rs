//! The micro-batch runner: Spark's write-ahead protocol over a Kafka source and Delta sinks.
//!
//! For each batch: plan the offsets, read exactly those offsets, decode (bad messages become
//! dead letters), write `offsets/<batchId>` once the batch before has committed, run the SQL;
//! then commit it (`commit.rs`): write `offsets/<batchId>` if not yet written, append
//! to the sink table and the dead-letter table (each commit carrying `txn(queryId, batchId)`),
//! then write `commits/<batchId>`. After a crash the last uncommitted batch is replayed with the
//! same offsets and the same processing time; a table that already holds it skips it, so every
//! row lands once. With a backlog the stages overlap: the batch after next is read while the
//! next runs its SQL and this one commits; commits stay one at a time, in order.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;

use crate::decode::RecordDecoder;
use crate::error::{JobError, Result};
use crate::kafka::{KafkaSource, OffsetRange, PartitionRecords};
use crate::scoring::session;
use crate::stream::aggregate::AggregateState;
use crate::stream::alerts::AlertSink;
use crate::stream::block::BlockSink;
use crate::stream::checkpoint::{Checkpoint, OffsetLogEntry, OffsetSeqMetadata, PartitionOffsets};
use crate::stream::commit::{BatchCommit, Committed, Outputs, Sinks, rows};
use crate::stream::incremental::IncrementalState;
use crate::stream::models::ServedModels;
use crate::stream::offsets::{
    BatchPlan, PartitionWatermarks, latest, plan_batch, resolve_starting,
};
use crate::stream::progress::{Durations, QueryProgress, StateOperatorProgress, ms};
use crate::stream::query::{BatchQuery, add_batch_columns};
use crate::stream::rolling::{RollingState, WindowState, Windows};
use crate::stream::row_filter::RowFilter;
use crate::stream::source::RecordSource;
use crate::stream::spec::{Emit, JobSpec, OnError, OutputMode, Trigger};
use crate::stream::tables::QueryTables;
use crate::stream::watermark::EventTime;

/// How long an idle query waits before looking for new records again.
const IDLE_POLL: Duration = Duration::from_millis(50);

/// A run of a job.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The job.
    pub spec: JobSpec,
    /// The trigger (the spec's, or `--available-now`).
    pub trigger: Trigger,
    /// Static partition assignment for scale-out: read only these partition numbers.
    pub partitions: Option<Vec<i32>>,
    /// Set to stop after the batch in flight commits (a read of the next one is given up).
    pub stop: Arc<AtomicBool>,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    /// The query id (the Delta `txn` appId).
    pub query_id: String,
    /// Batches run, replays included.
    pub batches: u64,
    /// Batches that were replayed after a restart.
    pub replayed_batches: u64,
    /// Records read.
    pub input_rows: u64,
    /// Rows appended to the sink table.
    pub output_rows: u64,
    /// Rows appended to the dead-letter table.
    pub dead_letter_rows: u64,
    /// Alerts published (replays publish theirs again).
    pub alerts: u64,
}

/// Where the run stands in the checkpoint.
struct Resume {
    next_batch: i64,
    start: PartitionOffsets,
    /// An uncommitted batch to run again with its logged offsets.
    replay: Option<OffsetLogEntry>,
    /// The watermark the next new batch runs with (ms since the epoch).
    watermark_ms: i64,
}

async fn resume(
    checkpoint: &Checkpoint,
    source: &impl RecordSource,
    spec: &JobSpec,
) -> Result<Resume> {
    let latest_offsets = checkpoint.latest_offsets_batch().await?;
    let latest_commit = checkpoint.latest_commit().await?;
    let start_of = |batch: i64| async move {
        if batch == 0 {
            match checkpoint.initial_offsets().await? {
                Some(o) => Ok(o),
                None => Err(JobError::Checkpoint {
                    location: format!("{}/sources/0/0", checkpoint.location()),
                    reason: "missing, but batch 0 was planned".into(),
                }),
            }
        } else {
            checkpoint
                .offsets(batch - 1)
                .await?
                .map(|e| e.end)
                .ok_or_else(|| JobError::Checkpoint {
                    location: format!("{}/offsets/{}", checkpoint.location(), batch - 1),
                    reason: "missing: the offset log has a hole".into(),
                })
        }
    };
    match latest_offsets {
        None => {
            let start = match checkpoint.initial_offsets().await? {
                Some(o) => o,
                None => {
                    let marks = tokio::task::block_in_place(|| source.log_ends())?;
                    let start =
                        resolve_starting(&spec.source.starting_offsets, &marks).map_err(|e| {
                            JobError::config(spec.key("readStream.options.startingOffsets"), e)
                        })?;
                    checkpoint.set_initial_offsets(&start).await?
                }
            };
            Ok(Resume {
                next_batch: 0,
                start,
                replay: None,
                watermark_ms: 0,
            })
        }
        Some(n) if latest_commit.is_some_and(|c| c >= n) => {
            let entry = checkpoint
                .offsets(n)
                .await?
                .ok_or_else(|| JobError::Checkpoint {
                    location: format!("{}/offsets/{n}", checkpoint.location()),
                    reason: "vanished while reading the checkpoint".into(),
                })?;
            // The commit records the watermark after the batch; a commit written before
            // watermarks were recorded falls back to the one the batch ran with.
            let watermark_ms = checkpoint
                .next_watermark(n)
                .await?
                .unwrap_or(entry.metadata.batch_watermark_ms);
            Ok(Resume {
                next_batch: n + 1,
                start: entry.end,
                replay: None,
                watermark_ms,
            })
        }
        Some(n) => {
            let entry = checkpoint
                .offsets(n)
                .await?
                .ok_or_else(|| JobError::Checkpoint {
                    location: format!("{}/offsets/{n}", checkpoint.location()),
                    reason: "vanished while reading the checkpoint".into(),
                })?;
            Ok(Resume {
                next_batch: n,
                start: start_of(n).await?,
                watermark_ms: entry.metadata.batch_watermark_ms,
                replay: Some(entry),
            })
        }
    }
}

/// The ranges a replayed batch reads: from the last batch's end to its logged end. A partition
/// the batch's plan started afresh (new since the last batch, or reset after its topic was
/// recreated) starts where the plan started it, at the partition's earliest offset.
fn replay_ranges(
    start: &PartitionOffsets,
    end: &PartitionOffsets,
    marks: &PartitionWatermarks,
) -> Vec<OffsetRange> {
    let mut ranges = Vec::new();
    for (topic, partitions) in end {
        for (&partition, &stop) in partitions {
            let earliest = || {
                marks
                    .get(topic)
                    .and_then(|ps| ps.get(&partition))
                    .map_or(0, |w| w.low)
            };
            let begin = match start.get(topic).and_then(|ps| ps.get(&partition)) {
                Some(&b) if b <= stop => b,
                _ => earliest(),
            };
            if stop > begin {
                ranges.push(OffsetRange {
                    topic: topic.clone(),
                    partition,
                    start: begin,
                    end: stop,
                });
            }
        }
    }
    ranges
}

/// A batch planned and read, ready to run.
struct ReadBatch {
    /// When its planning started.
    started: Instant,
    /// The same instant on the clock, for the progress report.
    timestamp: chrono::DateTime<chrono::Utc>,
    plan: BatchPlan,
    metadata: OffsetSeqMetadata,
    /// The log ends seen when planning.
    latest: PartitionOffsets,
    /// The records, decoded.
    decoded: DecodedBatch,
    /// A replay of a batch the checkpoint logged but did not commit.
    replayed: bool,
    get_offsets: u64,
    get_batch: u64,
}

/// What planning the next batch found.
enum Planned {
    Batch(Box<ReadBatch>),
    /// Nothing to read. `end` is where the partitions stand, past records lost (with
    /// `failOnDataLoss = false`) when `lost`.
    Nothing {
        end: PartitionOffsets,
        lost: bool,
    },
}

/// Decoded records of a batch.
#[derive(Default)]
struct DecodedBatch {
    rows: Vec<RecordBatch>,
    /// Rows the decoder set apart as late, whole.
    late: Vec<RecordBatch>,
    dead_letters: Vec<RecordBatch>,
    input_rows: u64,
    /// Offsets lost while reading (`failOnDataLoss = false`).
    lost: u64,
    /// Time spent decoding, summed over the reading threads.
    decode_ms: u64,
}

/// When planning a batch began, on both clocks.
struct PlanningClock {
    started: Instant,
    timestamp: chrono::DateTime<chrono::Utc>,
}

impl PlanningClock {
    fn start() -> Self {
        Self {
            started: Instant::now(),
            timestamp: chrono::Utc::now(),
        }
    }
}

/// Plans batches and reads them. Cloned onto a blocking thread to read the next batch while the
/// runner finishes the current one.
struct Planner<S> {
    source: Arc<S>,
    /// The declared schema's decoder; `None` hands the raw Kafka columns to the query.
    decoder: Option<Arc<RecordDecoder>>,
    /// `maxOffsetsPerTrigger`.
    limit: Option<u64>,
    /// Where availableNow and once stop.
    target: Option<PartitionOffsets>,
    fail_on_data_loss: bool,
    /// Set when the runner leaves (stopped, done, or on an error): a read of the next batch
    /// gives up. The batch in flight is never given up: a stop lets it commit.
    abandoned: Arc<AtomicBool>,
}

// Not derived: a derive would ask for `S: Clone`, and the source is shared, not cloned.
impl<S> Clone for Planner<S> {
    fn clone(&self) -> Self {
        Self {
            source: Arc::clone(&self.source),
            decoder: self.decoder.clone(),
            limit: self.limit,
            target: self.target.clone(),
            fail_on_data_loss: self.fail_on_data_loss,
            abandoned: Arc::clone(&self.abandoned),
        }
    }
}

/// Tells a read of the next batch to give up when the runner leaves, however it leaves.
struct AbandonOnDrop(Arc<AtomicBool>);

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl<S: RecordSource> Planner<S> {
    /// Plans the batch that starts at `start` from the log ends now, and reads it. Blocking.
    fn plan_and_read(
        &self,
        start: &PartitionOffsets,
        batch_id: i64,
        watermark_ms: i64,
    ) -> Result<Planned> {
        let clock = PlanningClock::start();
        let marks = self.source.log_ends()?;
        let plan = plan_batch(
            start,
            &marks,
            self.limit,
            self.target.as_ref(),
            self.fail_on_data_loss,
        )?;
        for loss in &plan.lost {
            tracing::warn!(
                topic = %loss.topic,
                partition = loss.partition,
                lost = loss.records,
                "data loss: {}; going on (failOnDataLoss = false)",
                loss.reason
            );
        }
        if plan.ranges.is_empty() {
            return Ok(Planned::Nothing {
                lost: !plan.lost.is_empty(),
                end: plan.end,
            });
        }
        let metadata = OffsetSeqMetadata {
            batch_watermark_ms: watermark_ms,
            batch_timestamp_ms: clock.timestamp.timestamp_millis(),
        };
        let batch = self.read_planned(clock, plan, metadata, latest(&marks), batch_id, false)?;
        Ok(Planned::Batch(Box::new(batch)))
    }

    /// Reads the uncommitted batch `entry` again, from `start` to its logged end. Blocking.
    fn replay(
        &self,
        start: &PartitionOffsets,
        entry: OffsetLogEntry,
        batch_id: i64,
    ) -> Result<ReadBatch> {
        let clock = PlanningClock::start();
        let marks = self.source.log_ends()?;
        let plan = BatchPlan {
            ranges: replay_ranges(start, &entry.end, &marks),
            end: entry.end.clone(),
            lost: Vec::new(),
        };
        self.read_planned(clock, plan, entry.metadata, entry.end, batch_id, true)
    }

    /// Reads and decodes a planned batch; planning took from `clock` until now.
    fn read_planned(
        &self,
        clock: PlanningClock,
        plan: BatchPlan,
        metadata: OffsetSeqMetadata,
        latest: PartitionOffsets,
        batch_id: i64,
        replayed: bool,
    ) -> Result<ReadBatch> {
        let get_offsets = ms(clock.started.elapsed());
        let read_start = Instant::now();
        let decoded = self.read(&plan, batch_id, &metadata)?;
        Ok(ReadBatch {
            started: clock.started,
            timestamp: clock.timestamp,
            plan,
            metadata,
            latest,
            decoded,
            replayed,
            get_offsets,
            get_batch: ms(read_start.elapsed()),
        })
    }

    /// Reads the plan's ranges on every core, each thread decoding a range as soon as it has
    /// read it (messages that do not decode become dead letters of `batch_id`).
    fn read(
        &self,
        plan: &BatchPlan,
        batch_id: i64,
        metadata: &OffsetSeqMetadata,
    ) -> Result<DecodedBatch> {
        let recorded_at_micros = metadata.batch_timestamp_ms * 1000;
        let decoder = self.decoder.as_deref();
        let decode = |records: PartitionRecords| -> Result<DecodedBatch> {
            let start = Instant::now();
            let input_rows = records.records.num_rows() as u64;
            let mut out = DecodedBatch {
                input_rows,
                lost: records.lost,
                ..DecodedBatch::default()
            };
            match decoder {
                // No declared schema: the query sees Spark's raw Kafka columns.
                None => out.rows.push(records.records),
                Some(decoder) => {
                    let decoded = decoder.decode(
                        &records.records,
                        batch_id,
                        recorded_at_micros,
                        metadata.batch_watermark_ms,
                    )?;
                    out.rows = decoded.rows;
                    out.late = decoded.late;
                    if decoded.dead_letters.num_rows() > 0 {
                        out.dead_letters.push(decoded.dead_letters);
                    }
                }
            }
            out.decode_ms = ms(start.elapsed());
            Ok(out)
        };
        let mut batch = DecodedBatch {
            lost: plan.lost.iter().map(|l| l.records).sum(),
            ..DecodedBatch::default()
        };
        let cancelled = || self.abandoned.load(Ordering::SeqCst);
        for part in self.source.read(&plan.ranges, &decode, &cancelled)? {
            batch.rows.extend(part.rows);
            batch.late.extend(part.late);
            batch.dead_letters.extend(part.dead_letters);
            batch.input_rows += part.input_rows;
            batch.lost += part.lost;
            batch.decode_ms += part.decode_ms;
        }
        Ok(batch)
    }
}

/// The first dead letter of a batch as an error, for `onError = "fail"`.
fn first_bad_record(dead_letters: &[RecordBatch]) -> Option<JobError> {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::{Int32Type, Int64Type};
    let batch = dead_letters.iter().find(|b| b.num_rows() > 0)?;
    let topic = batch
        .column_by_name("topic")?
        .as_string_opt::<i32>()?
        .value(0);
    let partition = batch
        .column_by_name("partition")?
        .as_primitive_opt::<Int32Type>()?
        .value(0);
    let offset = batch
        .column_by_name("offset")?
        .as_primitive_opt::<Int64Type>()?
        .value(0);
    let reason = batch
        .column_by_name("error")?
        .as_string_opt::<i32>()?
        .value(0);
    Some(JobError::BadRecord {
        topic: topic.to_string(),
        partition,
        offset,
        reason: reason.to_string(),
    })
}

/// Waits `d`, or less when asked to stop. Returns false when stopping.
async fn wait(d: Duration, stop: &AtomicBool) -> bool {
    let deadline = Instant::now() + d;
    loop {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        tokio::time::sleep(left.min(Duration::from_millis(100))).await;
    }
}

/// What a caller hears of a run, as Spark's `StreamingQueryListener` does: the start, once the
/// query is planned, its tables open and its checkpoint read, and every batch's progress. A
/// closure taking the progress is an observer.
pub trait RunObserver {
    /// The query has started (its id: the Delta `txn` appId).
    fn started(&mut self, _query_id: &str) {}
    /// A batch committed.
    fn progress(&mut self, progress: &QueryProgress);
}

impl<F: FnMut(&QueryProgress)> RunObserver for F {
    fn progress(&mut self, progress: &QueryProgress) {
        self(progress);
    }
}

/// What the job reads: its query, the rows the query reads, the watermark over them, and the
/// decoder that gives them (none for Kafka's raw columns).
struct JobInput {
    query: BatchQuery,
    schema: SchemaRef,
    event_time: Option<EventTime>,
    decoder: Option<RecordDecoder>,
}

impl JobInput {
    /// The same input narrowed to the columns the query needs (and the watermark's) when it
    /// decodes a declared schema: the others are checked but not built, nor kept in state. The
    /// decoder then sets late rows apart, whole.
    async fn narrowed(self) -> Result<Self> {
        let Self {
            query,
            schema,
            mut event_time,
            decoder,
        } = self;
        let (query, schema, decoder) = match (decoder, query.read_columns().await?) {
            (Some(whole), Some(mut columns)) => {
                // The watermark's column, and one column at least to carry the rows.
                let keep = match &event_time {
                    Some(et) => Some(et.column_index()),
                    None => columns.is_empty().then_some(0),
                };
                if let Some(keep) = keep
                    && let Err(at) = columns.binary_search(&keep)
                {
                    columns.insert(at, keep);
                }
                let narrow = Arc::new(
                    schema
                        .project(&columns)
                        .map_err(JobError::arrow("narrowing the query's input"))?,
                );
                let names: Vec<&str> = narrow.fields().iter().map(|f| f.name().as_str()).collect();
                tracing::info!(
                    target: "riskstream::plan",
                    "input: builds {} of {} columns ({}); late rows whole",
                    columns.len(),
                    schema.fields().len(),
                    names.join(", ")
                );
                event_time = event_time.map(|et| et.narrowed(&narrow)).transpose()?;
                let decoder = whole.narrowed(&columns)?;
                (
                    query.narrowed(Arc::clone(&narrow)).await?,
                    narrow,
                    Some(decoder),
                )
            }
            (decoder, _) => (query, schema, decoder),
        };
        let decoder = match (decoder, &event_time) {
            (Some(d), Some(et)) => Some(d.with_event_time(et.column_index())),
            (d, _) => d,
        };
        Ok(Self {
            query,
            schema,
            event_time,
            decoder,
        })
    }
}

/// Runs the job from Kafka until its trigger says stop (availableNow, once) or `stop` is set,
/// telling `observer` of its start and every batch.
pub async fn run(options: RunOptions, observer: impl RunObserver) -> Result<RunSummary> {
    let source = KafkaSource::new(&options.spec.source, options.partitions.clone())?;
    run_observed(options, source, observer).await
}

/// Runs the job from `source` (the spec's `readStream` gives its options, such as
/// `maxOffsetsPerTrigger`, but not where records come from), calling `on_progress` after every
/// batch.
pub async fn run_with<S: RecordSource>(
    options: RunOptions,
    source: S,
    on_progress: impl FnMut(&QueryProgress),
) -> Result<RunSummary> {
    run_observed(options, source, on_progress).await
}

/// The same, telling `observer` of the start too.
pub async fn run_observed<S: RecordSource>(
    options: RunOptions,
    source: S,
    mut observer: impl RunObserver,
) -> Result<RunSummary> {
    let spec = &options.spec;
    let stop = Arc::clone(&options.stop);
    // The SQL is checked first: bad SQL fails before anything is created or connected.
    let input_schema = spec.query.input_schema();
    let file = spec.query.sql.as_ref().map_or_else(
        || spec.file.display().to_string(),
        |f| f.path.display().to_string(),
    );
    let event_time = spec
        .query
        .watermark
        .as_ref()
        .map(|w| EventTime::resolve(w, &input_schema, &spec.key("query.watermark")))
        .transpose()?;
    let ctx = session()?;
    riskstream_udfs::register_scoring(&ctx, &spec.rule_sets, &spec.severity);
    // Kept until the run ends: dropping it stops the model refreshers.
    let _models = ServedModels::start(&spec.models, &ctx).await?;
    let mut lake_tables = QueryTables::open(spec, &ctx).await?;
    let query = BatchQuery::new(
        ctx,
        &spec.query.view,
        Arc::clone(&input_schema),
        &file,
        spec.query.sql.as_ref().map(|f| f.sql.clone()),
    )
    .await?;
    let decoder = spec
        .query
        .schema
        .as_ref()
        .map(|s| {
            let metadata = spec.query.metadata.iter().map(|m| m.kafka.clone());
            RecordDecoder::new(s.schema(), metadata.collect(), Arc::clone(&input_schema))
        })
        .transpose()?;
    let JobInput {
        query,
        schema: input_schema,
        event_time,
        decoder,
    } = JobInput {
        query,
        schema: input_schema,
        event_time,
        decoder,
    }
    .narrowed()
    .await?;
    // Aggregations and window functions make the query stateful: it keeps rows between batches.
    let time_column = spec.query.watermark.as_ref().map(|w| w.column.as_str());
    let mode = spec.sink.output_mode;
    let aggregation = query.aggregation(time_column, mode).await?;
    let windows = query.windows(time_column).await?;
    if aggregation.is_none() && mode != OutputMode::Append {
        return Err(JobError::config(
            spec.key("writeStream.outputMode"),
            format!(
                "`{}` needs a streaming aggregation (a GROUP BY in the query); a query without \
                 one appends its rows",
                mode.as_str()
            ),
        ));
    }
    if aggregation.is_some() && windows.is_some() {
        return Err(JobError::config(
            file.clone(),
            "a streaming query may have a GROUP BY or window functions (OVER), not both",
        ));
    }
    if let (Some(_), Some(et)) = (&windows, &event_time)
        && input_schema.field(et.column_index()).is_nullable()
    {
        // A row without an event time has no place in an event-time frame.
        return Err(JobError::config(
            spec.key("query.watermark.column"),
            "is nullable: window functions over a stream need an event time on every row",
        ));
    }
    let on_arrival = spec.query.emit == Emit::OnArrival;
    if on_arrival && windows.is_none() {
        return Err(JobError::config(
            spec.key("query.emit"),
            "`onArrival` is for window functions (OVER) over the stream; this query has none",
        ));
    }
    let (query, mut rolling) = match (aggregation, &windows, &event_time) {
        (Some(aggregation), _, _) => {
            for line in &aggregation.explain {
                tracing::info!(target: "riskstream::plan", "{line}");
            }
            let state = AggregateState::new(Arc::clone(&input_schema), &aggregation);
            (
                query.with_aggregation(&aggregation).await?,
                Some(WindowState::Aggregate(state)),
            )
        }
        (None, Some(w), Some(et)) => match query.incremental_plan(et.column_index()).await? {
            Ok(plan) if plan.rest().is_empty() => {
                for line in plan.explain() {
                    tracing::info!(target: "riskstream::plan", "window {line}");
                }
                let input = plan.joined_input().unwrap_or(&input_schema);
                let state = IncrementalState::new(plan.clone(), Arc::clone(input), on_arrival)?;
                (
                    query.with_incremental(plan),
                    Some(WindowState::Incremental(state)),
                )
            }
            plan if on_arrival => {
                let others = match &plan {
                    Ok(plan) => plan
                        .rest()
                        .iter()
                        .map(|(name, _)| name.as_str())
                        .collect::<Vec<_>>()
                        .join("; "),
                    Err(why) => format!("{} ({why})", w.explain.join("; ")),
                };
                return Err(JobError::config(
                    spec.key("query.emit"),
                    format!(
                        "`onArrival` needs window functions the engine evaluates incrementally \
                         (an aggregate of a column or of an expression over the row, over a \
                         RANGE frame, partitioned by columns or expressions of the row, over \
                         the view or its join with tables beside it); {file} has others: \
                         {others}"
                    ),
                ));
            }
            // Some functions incremental, the rest on the generic path over their output.
            Ok(plan) => {
                for line in plan.explain() {
                    tracing::info!(target: "riskstream::plan", "window {line}");
                }
                let rest: Vec<&str> = plan.rest().iter().map(|(name, _)| name.as_str()).collect();
                for line in &w.explain {
                    if rest
                        .iter()
                        .any(|name| line.starts_with(&format!("{name}: ")))
                    {
                        tracing::info!(target: "riskstream::plan", "window {line}");
                    }
                }
                let generic = Windows {
                    lookback_us: plan.rest().iter().map(|r| r.1).max().unwrap_or(0),
                    explain: Vec::new(),
                };
                let input = plan.joined_input().unwrap_or(&input_schema);
                let state = WindowState::Mixed(
                    IncrementalState::new(plan.clone(), Arc::clone(input), false)?,
                    RollingState::new(Arc::clone(plan.output()), plan.time_index(), &generic),
                );
                (query.with_incremental(plan), Some(state))
            }
            Err(why) => {
                tracing::info!(
                    target: "riskstream::plan",
                    "window functions on DataFusion's operator over kept rows: {why}"
                );
                for line in &w.explain {
                    tracing::info!(target: "riskstream::plan", "window {line}");
                }
                let state = RollingState::new(Arc::clone(&input_schema), et.column_index(), w);
                (
                    query.with_windows().await?,
                    Some(WindowState::Generic(state)),
                )
            }
        },
        _ => (query, None),
    };
    let sinks = Sinks::open(spec, query.output_schema(), event_time.as_ref()).await?;
    // Alerts are the output rows `where` selects: for the table, the topic, or both.
    let alert_filter = match &spec.alerts {
        None => None,
        Some(options) => Some(RowFilter::new(
            &options.filter,
            &sinks.schema,
            &session()?,
            spec.key("alerts.where"),
        )?),
    };
    let alerts_table_path = spec.alerts.as_ref().and_then(|a| a.table_path.as_deref());
    let alerts = match spec.alerts.as_ref().and_then(|a| a.kafka.as_ref()) {
        None => None,
        Some(options) => Some(
            AlertSink::open(options, &sinks.schema, |k| spec.key(&format!("alerts.{k}"))).await?,
        ),
    };
    let block = match &spec.block {
        None => None,
        Some(b) => Some(
            BlockSink::open(
                b,
                &sinks.schema,
                &session()?,
                spec.sink.checkpoint_interval,
                |k| spec.key(&format!("block.{k}")),
            )
            .await?,
        ),
    };
    let checkpoint = Checkpoint::open(&spec.checkpoint_location)?;
    let query_id = checkpoint.metadata().await?.id;
    let run_id = uuid::Uuid::new_v4().to_string();
    let source = Arc::new(source);
    let mut state = resume(&checkpoint, source.as_ref(), spec).await?;
    if let Some(rolling) = &mut rolling
        && state.next_batch > 0
    {
        // The state after the last committed batch (a replay reruns the batch after it).
        rolling.restore(&checkpoint, state.next_batch - 1).await?;
    }
    let mut summary = RunSummary {
        query_id: query_id.clone(),
        ..RunSummary::default()
    };
    tracing::info!(
        query_id = %query_id,
        run_id = %run_id,
        next_batch = state.next_batch,
        replay = state.replay.is_some(),
        checkpoint = checkpoint.location(),
        "query started"
    );
    observer.started(&query_id);

    // availableNow and once read up to the log ends seen now, then stop.
    let target = match options.trigger {
        Trigger::AvailableNow | Trigger::Once => Some(tokio::task::block_in_place(|| {
            source.log_ends().map(|m| latest(&m))
        })?),
        Trigger::Continuous | Trigger::ProcessingTime(_) => None,
    };
    let planner = Planner {
        source: Arc::clone(&source),
        decoder: decoder.map(Arc::new),
        limit: match options.trigger {
            Trigger::Once => None,
            _ => spec.source.max_offsets_per_trigger,
        },
        target,
        fail_on_data_loss: spec.source.fail_on_data_loss,
        abandoned: Arc::new(AtomicBool::new(false)),
    };
    let _abandon = AbandonOnDrop(Arc::clone(&planner.abandoned));
    // What the batch columns need: the sinks go to the batch committing.
    let (sink_schema, batch_id_column, processing_time_column) = (
        Arc::clone(&sinks.schema),
        sinks.batch_id_column,
        sinks.processing_time_column,
    );
    let mut outputs = Some(Outputs {
        sinks,
        alert_filter,
        alerts,
        alerts_table_path: alerts_table_path.map(str::to_string),
        block,
        checkpoint: checkpoint.clone(),
        mode,
        query_id: query_id.clone(),
        run_id,
        name: spec.name.clone(),
        source_description: source.description(),
        last_commit: None,
    });
    // A job reading a table it writes (its block list) sees in each batch what the batches
    // before committed, so its SQL waits for the batch committing.
    let overlap = !lake_tables.reads_own_tables();
    let mut last_batch_start: Option<Instant> = None;
    let mut next_tick = Instant::now();
    // The next batch, planned and being read while this one decodes and runs its SQL.
    let mut prefetch: Option<tokio::task::JoinHandle<Result<Planned>>> = None;
    // The batch committing while the next one runs its SQL.
    let mut committing: Option<Committing> = None;

    let ran = async {
        loop {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            // Without a read ahead the batch committing ends first: the next batch is planned
            // after it, and takes everything that arrived meanwhile.
            if prefetch.is_none() {
                settle(&mut committing, &mut outputs, &mut observer, &mut summary).await?;
                if stop.load(Ordering::SeqCst) {
                    break;
                }
            }
            let mut prefetched = false;
            let planned = if let Some(entry) = state.replay.take() {
                tokio::task::block_in_place(|| {
                    planner.replay(&state.start, entry, state.next_batch)
                })
                .map(|batch| Planned::Batch(Box::new(batch)))
            } else if let Some(mut read) = prefetch.take() {
                prefetched = true;
                // The batch committing may end before the read does: it is reported then, and a
                // stop asked on its report gives the read up.
                let read_out = match committing.take() {
                    None => read.await,
                    Some(mut task) => tokio::select! {
                        out = &mut read => {
                            committing = Some(task);
                            out
                        }
                        joined = &mut task => {
                            finish(joined, &mut outputs, &mut observer, &mut summary)?;
                            if stop.load(Ordering::SeqCst) {
                                prefetch = Some(read);
                                break;
                            }
                            read.await
                        }
                    },
                };
                read_out
                    .map_err(|e| JobError::Internal(format!("the next batch's read failed: {e}")))?
            } else {
                if let Trigger::ProcessingTime(interval) = options.trigger {
                    if !wait(next_tick.saturating_duration_since(Instant::now()), &stop).await {
                        break;
                    }
                    // A trigger is used up whether or not it finds records, as in Spark.
                    next_tick = Instant::now().max(next_tick) + interval;
                }
                tokio::task::block_in_place(|| {
                    planner.plan_and_read(&state.start, state.next_batch, state.watermark_ms)
                })
            };
            let batch = match planned? {
                Planned::Batch(batch) => *batch,
                Planned::Nothing { end, lost } => {
                    settle(&mut committing, &mut outputs, &mut observer, &mut summary).await?;
                    if planner.target.is_some() {
                        break;
                    }
                    if lost {
                        state.start = end;
                    }
                    if !wait(IDLE_POLL, &stop).await {
                        break;
                    }
                    continue;
                }
            };
            if let Trigger::ProcessingTime(interval) = options.trigger
                && prefetched
            {
                next_tick = batch.started.max(next_tick) + interval;
            }
            let ReadBatch {
                started: batch_start,
                timestamp,
                plan,
                metadata,
                latest: latest_offsets,
                decoded,
                replayed,
                get_offsets,
                get_batch,
            } = batch;
            let batch_id = state.next_batch;
            let mut durations = Durations {
                get_offsets,
                get_batch,
                decode: decoded.decode_ms,
                ..Durations::default()
            };
            // Rows behind the watermark this batch runs with go to late_events; the batch's
            // event times move the watermark for the next one (read ahead below, so decided
            // now).
            let watermark_ms = metadata.batch_watermark_ms;
            let (rows_in, late) = match &event_time {
                None => (decoded.rows, None),
                Some(et) => {
                    // A decoder splits the rows as it decodes them (it has the event time: the
                    // input was resolved with the watermark).
                    let decoded_late = planner.decoder.is_some().then_some(decoded.late);
                    let split = et.split(decoded.rows, decoded_late, watermark_ms, batch_id)?;
                    state.watermark_ms = et.next_watermark(watermark_ms, &split.stats);
                    (
                        split.on_time,
                        Some((split.late, split.late_rows, split.stats)),
                    )
                }
            };
            // Start reading the next batch now when there is a backlog (this batch stopped
            // short of the log ends it saw) and the next batch would start as soon as this one
            // ends. Without a backlog, waiting keeps latency low: the next batch then takes
            // everything that arrived meanwhile.
            let backlog = plan.end != latest_offsets;
            let next_due = match options.trigger {
                Trigger::Continuous | Trigger::AvailableNow => true,
                Trigger::ProcessingTime(_) => next_tick <= Instant::now(),
                Trigger::Once => false,
            };
            if backlog && next_due {
                let planner = planner.clone();
                let start = plan.end.clone();
                let watermark_ms = state.watermark_ms;
                prefetch = Some(tokio::task::spawn_blocking(move || {
                    planner.plan_and_read(&start, batch_id + 1, watermark_ms)
                }));
            }

            let processing_micros = metadata.batch_timestamp_ms * 1000;
            if spec.query.on_error == OnError::Fail
                && let Some(err) = first_bad_record(&decoded.dead_letters)
            {
                return Err(err);
            }
            if !overlap {
                settle(&mut committing, &mut outputs, &mut observer, &mut summary).await?;
                if stop.load(Ordering::SeqCst) {
                    break;
                }
            }
            // `offsets/N` goes out as soon as `commits/N-1` has, as in Spark: now when no batch
            // is committing, else when this one's commit starts.
            let offsets = OffsetLogEntry {
                metadata,
                end: plan.end.clone(),
            };
            let logged = replayed || committing.is_none();
            if !replayed && logged {
                let wal = Instant::now();
                checkpoint.write_offsets(batch_id, &offsets).await?;
                durations.wal_commit = ms(wal.elapsed());
            }

            let query_start = Instant::now();
            lake_tables
                .for_batch(query.session(), &checkpoint, batch_id, replayed)
                .await?;
            let on_time_rows = rows(&rows_in);
            let rows_in = match &mut rolling {
                Some(r) => r.stage(query.arriving(rows_in).await?, state.watermark_ms)?,
                None => rows_in,
            };
            let watermarks = (watermark_ms, state.watermark_ms);
            let output = match &mut rolling {
                Some(WindowState::Aggregate(AggregateState {
                    partial: Some(partial),
                    ..
                })) => query.run_partial(rows_in, watermarks, partial).await?,
                _ => query.run_between(rows_in, watermarks).await?,
            };
            let output: Vec<RecordBatch> = output
                .iter()
                .map(|b| {
                    add_batch_columns(
                        b,
                        &sink_schema,
                        batch_id_column.then_some(batch_id),
                        processing_time_column.then_some(processing_micros),
                    )
                })
                .collect::<Result<_>>()?;
            durations.query = ms(query_start.elapsed());
            // The state after this batch, taken before the next one changes it.
            let snapshot = match &mut rolling {
                Some(r) => Some(tokio::task::block_in_place(|| r.snapshot(batch_id))?),
                None => None,
            };
            let state_operator = (event_time.is_some() || rolling.is_some()).then(|| {
                StateOperatorProgress {
                    operator_name: match &rolling {
                        Some(WindowState::Incremental(_)) => "incrementalWindows".into(),
                        Some(WindowState::Generic(_)) => "windows".into(),
                        Some(WindowState::Mixed(..)) => "mixedWindows".into(),
                        // Spark's name for the operator that keeps aggregation state.
                        Some(WindowState::Aggregate(_)) => "stateStoreSave".into(),
                        None => "watermark".into(),
                    },
                    num_rows_total: rolling.as_ref().map_or(0, |r| r.rows() as u64),
                    num_rows_updated: rolling.as_ref().map_or(0, |_| on_time_rows),
                    memory_used_bytes: rolling.as_ref().map_or(0, |r| r.bytes() as u64),
                    num_rows_dropped_by_watermark: 0,
                    commit_time_ms: 0,
                }
            });
            // The batch before committed while this one ran its SQL. A stop asked meanwhile
            // leaves this one unwritten when nothing of it is (it is read again after a
            // restart, as a read ahead is); a batch whose offsets are logged commits.
            settle(&mut committing, &mut outputs, &mut observer, &mut summary).await?;
            if stop.load(Ordering::SeqCst) && !logged {
                break;
            }
            let since_last = last_batch_start
                .map(|t| batch_start.duration_since(t).as_secs_f64())
                .unwrap_or_else(|| batch_start.elapsed().as_secs_f64());
            last_batch_start = Some(batch_start);
            let commit = BatchCommit {
                batch_id,
                replayed,
                offsets,
                logged,
                output,
                dead_letters: decoded.dead_letters,
                late,
                snapshot,
                watermarks: (watermark_ms, state.watermark_ms),
                processing_micros,
                durations,
                started: batch_start,
                timestamp,
                since_last,
                input_rows: decoded.input_rows,
                lost: decoded.lost,
                start: std::mem::replace(&mut state.start, plan.end),
                latest: latest_offsets,
                state_operator,
            };
            let mut out = outputs
                .take()
                .ok_or_else(|| JobError::internal("a batch's commit kept the tables".into()))?;
            committing = Some(tokio::spawn(async move {
                let committed = out.commit(commit).await;
                (out, committed)
            }));
            state.next_batch = batch_id + 1;
            if options.trigger == Trigger::Once && !replayed {
                break;
            }
        }
        Ok::<_, JobError>(())
    }
    .await;
    // The commit under way ends before the run does, whatever stopped it.
    let settled = settle(&mut committing, &mut outputs, &mut observer, &mut summary).await;
    ran?;
    settled?;
    // A read of the next batch may be under way: it gives up at once (it has written nothing),
    // and is waited for so that the consumers are free when the runner returns.
    if let Some(handle) = prefetch {
        planner.abandoned.store(true, Ordering::SeqCst);
        drop(handle.await);
    }
    tracing::info!(
        query_id = %query_id,
        batches = summary.batches,
        input_rows = summary.input_rows,
        "query stopped"
    );
    Ok(summary)
}

/// A batch's commit under way: it gives back the tables it held, and what it committed.
type Committing = tokio::task::JoinHandle<(Outputs, Result<Committed>)>;

/// Waits for the batch committing, if any, and reports it.
async fn settle(
    committing: &mut Option<Committing>,
    outputs: &mut Option<Outputs>,
    observer: &mut impl RunObserver,
    summary: &mut RunSummary,
) -> Result<()> {
    match committing.take() {
        None => Ok(()),
        Some(task) => finish(task.await, outputs, observer, summary),
    }
}

/// Takes back the tables a batch's commit held, and reports what it committed.
fn finish(
    joined: std::result::Result<(Outputs, Result<Committed>), tokio::task::JoinError>,
    outputs: &mut Option<Outputs>,
    observer: &mut impl RunObserver,
    summary: &mut RunSummary,
) -> Result<()> {
    let (back, committed) =
        joined.map_err(|e| JobError::Internal(format!("a batch's commit failed: {e}")))?;
    *outputs = Some(back);
    let Committed { progress, alerts } = committed?;
    observer.progress(&progress);
    summary.batches += 1;
    summary.replayed_batches += u64::from(progress.replayed);
    summary.input_rows += progress.num_input_rows;
    summary.output_rows += progress.sink.num_output_rows;
    summary.dead_letter_rows += progress.sink.num_dead_letter_rows;
    summary.alerts += alerts;
    Ok(())
}

#[cfg(test)]
#[expect(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::lake_sink::table_location;

    #[test]
    fn table_paths_split_into_lake_and_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lake/risk_scores");
        let (lake, name) = table_location(path.to_str().unwrap(), "path").unwrap();
        assert_eq!(name, "risk_scores");
        assert!(lake.root().path().ends_with("/lake/"));
        let (lake, name) = table_location("s3://bucket/lake/scores/", "path").unwrap();
        assert_eq!(
            (lake.root().as_str(), name.as_str()),
            ("s3://bucket/lake/", "scores")
        );
        let err = table_location("s3://bucket", "path")
            .unwrap_err()
            .to_string();
        assert!(err.contains("bucket"), "{err}");
    }

    #[test]
    fn a_replay_reads_new_and_reset_partitions_from_their_start() {
        use crate::kafka::Watermarks;
        let offsets = |entries: &[(i32, i64)]| {
            let mut m = PartitionOffsets::new();
            m.insert("t".to_string(), entries.iter().copied().collect());
            m
        };
        let mut marks = PartitionWatermarks::new();
        marks.insert(
            "t".to_string(),
            [
                (0, Watermarks { low: 0, high: 90 }),
                (1, Watermarks { low: 3, high: 9 }),
            ]
            .into_iter()
            .collect(),
        );
        // Partition 0 went on from 50; partition 1 appeared after the last batch.
        let ranges = replay_ranges(&offsets(&[(0, 50)]), &offsets(&[(0, 80), (1, 9)]), &marks);
        let spans: Vec<(i32, i64, i64)> = ranges
            .iter()
            .map(|r| (r.partition, r.start, r.end))
            .collect();
        assert_eq!(spans, vec![(0, 50, 80), (1, 3, 9)]);
        // The topic was recreated: the logged end is below the last start.
        let ranges = replay_ranges(&offsets(&[(0, 500)]), &offsets(&[(0, 80)]), &marks);
        assert_eq!((ranges[0].start, ranges[0].end), (0, 80));
    }
}
