//! `riskstream demo`: the embedded default. Generates events in process into in-process topics
//! (partitioned and offset like Kafka's), runs the scoring job over them in micro-batches, and
//! appends `risk_scores`, `dead_letters` and `fraud_labels` to Delta tables in the lake. No
//! broker, no object store server.
//!
//! The job's app id is derived from the generator configuration and batch size, so running the
//! same demo again on the same lake finds every batch already committed and writes nothing.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use riskstream_lake::LakeLocation;

use crate::decode::{DecodedRecords, JsonDecoder, decode_records, join_decoders};
use crate::error::{JobError, Result};
use crate::generator::{
    Generator, GeneratorConfig, GeneratorStats, LABELS_PARTITIONS, LABELS_TOPIC, Message, Source,
    Stream,
};
use crate::lake_sink::{BatchOutput, ScoringTables};
use crate::records::InProcessTopic;
use crate::schemas::labels_schema;
use crate::scoring::ScoringStage;

/// A demo run.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// What to generate.
    pub generator: GeneratorConfig,
    /// Events to generate (labels not counted).
    pub events: u64,
    /// Events per micro-batch.
    pub batch_events: u64,
    /// Where the tables go.
    pub lake: LakeLocation,
}

/// What a demo run did.
#[derive(Debug, Clone)]
pub struct DemoReport {
    /// The job's app id (the Delta `txn` appId).
    pub app_id: String,
    /// Micro-batches run.
    pub batches: u64,
    /// Micro-batches that were already in the lake and were skipped.
    pub replayed_batches: u64,
    /// The generator's ground truth.
    pub stats: GeneratorStats,
    /// Rows appended to `risk_scores` by this run.
    pub scored: u64,
    /// Rows appended to `dead_letters` by this run.
    pub dead_letters: u64,
    /// Rows appended to `fraud_labels` by this run.
    pub labels: u64,
    /// Wall-clock time.
    pub elapsed: Duration,
}

impl DemoReport {
    /// Events per second, end to end.
    pub fn events_per_second(&self) -> f64 {
        self.stats.events() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// One micro-batch of the in-process topics: Spark's Kafka columns per stream.
struct MicroBatchInput {
    batch_id: i64,
    records: Vec<(Stream, RecordBatch)>,
}

enum Produced {
    Batch(MicroBatchInput),
    Done(Box<GeneratorStats>),
}

/// A stable id for a demo run: the same options give the same id, so a rerun is recognised and
/// writes nothing. Every option that shapes the batches is in it, named, so the id does not hang
/// on a `Debug` format.
fn app_id(options: &DemoOptions) -> String {
    let g = &options.generator;
    let mix: Vec<String> = g
        .mix
        .iter()
        .map(|(s, w)| format!("{}:{w}", s.cli_name()))
        .collect();
    let text = format!(
        "seed={};mix={};fraud={};ooo={};late={};malformed={};neg={};delay={};start={};eps={};users={};policies={};devices={};events={};batch={}",
        g.seed,
        mix.join(","),
        g.fraud_rate,
        g.out_of_order_rate,
        g.late_rate,
        g.malformed_rate,
        g.negative_label_rate,
        g.label_delay_ms,
        g.start_ms,
        g.events_per_second,
        g.entities.users,
        g.entities.policies,
        g.entities.devices,
        options.events,
        options.batch_events,
    );
    // FNV-1a: stable across Rust versions, unlike the std hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("demo-{h:016x}")
}

fn spawn_generator(
    options: &DemoOptions,
    tx: SyncSender<Result<Produced>>,
) -> Result<JoinHandle<()>> {
    let mut generator = Generator::new(options.generator.clone())
        .map_err(|reason| JobError::config("generator", reason))?;
    let (events, batch_events) = (options.events, options.batch_events.max(1));
    std::thread::Builder::new()
        .name("generator".into())
        .spawn(move || {
            let mut topics: Vec<(Stream, InProcessTopic)> = Source::ALL
                .iter()
                .map(|s| {
                    (
                        Stream::Events(*s),
                        InProcessTopic::new(s.topic(), s.partitions()),
                    )
                })
                .chain([(
                    Stream::Labels,
                    InProcessTopic::new(LABELS_TOPIC, LABELS_PARTITIONS),
                )])
                .collect();
            let mut msg = Message::default();
            let mut made = 0u64;
            let mut batch_id = 0i64;
            let cut = |topics: &mut Vec<(Stream, InProcessTopic)>, batch_id: &mut i64| {
                let records: Result<Vec<(Stream, RecordBatch)>> = topics
                    .iter_mut()
                    .filter(|(_, t)| t.pending_rows() > 0)
                    .map(|(s, t)| Ok((*s, t.take_batch()?)))
                    .collect();
                let sent = tx.send(records.map(|records| {
                    Produced::Batch(MicroBatchInput {
                        batch_id: *batch_id,
                        records,
                    })
                }));
                *batch_id += 1;
                sent.is_ok()
            };
            // Record timestamps are the append (produce) time, as a broker's CreateTime would be.
            let append = |topics: &mut Vec<(Stream, InProcessTopic)>, msg: &Message| {
                if let Some(stream) = msg.stream
                    && let Some((_, t)) = topics.iter_mut().find(|(s, _)| *s == stream)
                {
                    t.append(&msg.key, &msg.value, chrono::Utc::now().timestamp_millis());
                }
            };
            while made < events {
                generator.next_message(&mut msg);
                if !matches!(msg.stream, Some(Stream::Labels)) {
                    made += 1;
                }
                append(&mut topics, &msg);
                if made.is_multiple_of(batch_events)
                    && !matches!(msg.stream, Some(Stream::Labels))
                    && !cut(&mut topics, &mut batch_id)
                {
                    return;
                }
            }
            while generator.drain_labels(&mut msg) {
                append(&mut topics, &msg);
            }
            if topics.iter().any(|(_, t)| t.pending_rows() > 0) && !cut(&mut topics, &mut batch_id)
            {
                return;
            }
            let _ = tx.send(Ok(Produced::Done(Box::new(generator.stats().clone()))));
        })
        .map_err(|e| JobError::internal(format!("starting the generator thread: {e}")))
}

/// Runs the demo to completion.
pub async fn run(options: &DemoOptions) -> Result<DemoReport> {
    let start = Instant::now();
    let app_id = app_id(options);
    let stage = ScoringStage::new().await?;
    let mut tables = ScoringTables::open(&options.lake).await?;
    let labels = JsonDecoder::new(labels_schema())?;

    // Two batches in flight: the generator fills the next while this one is scored and written.
    let (tx, rx): (SyncSender<Result<Produced>>, Receiver<Result<Produced>>) = sync_channel(2);
    let generator = spawn_generator(options, tx)?;
    let mut report = DemoReport {
        app_id: app_id.clone(),
        batches: 0,
        replayed_batches: 0,
        stats: GeneratorStats::default(),
        scored: 0,
        dead_letters: 0,
        labels: 0,
        elapsed: Duration::ZERO,
    };
    loop {
        let received = tokio::task::block_in_place(|| rx.recv());
        let input = match received {
            Ok(Ok(Produced::Batch(input))) => input,
            Ok(Ok(Produced::Done(stats))) => {
                report.stats = *stats;
                break;
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(JobError::internal(
                    "the generator thread stopped early".into(),
                ));
            }
        };
        let batch_start = Instant::now();
        let scored_at = chrono::Utc::now().timestamp_micros();
        // Decoding is the bulk of a batch's work and each stream's is independent: one thread
        // per stream.
        let decoded: Vec<Result<(Stream, DecodedRecords)>> = tokio::task::block_in_place(|| {
            std::thread::scope(|scope| {
                let handles: Vec<_> = input
                    .records
                    .iter()
                    .map(|(stream, records)| {
                        let decoder = match stream {
                            Stream::Events(source) => stage.decoder(*source),
                            Stream::Labels => &labels,
                        };
                        let batch_id = input.batch_id;
                        scope.spawn(move || {
                            decode_records(decoder, records, batch_id, scored_at)
                                .map(|d| (*stream, d))
                        })
                    })
                    .collect();
                join_decoders(handles)
            })
        });
        let mut output = BatchOutput::default();
        for result in decoded {
            let (stream, decoded) = result?;
            output.dead_letters.push(decoded.dead_letters);
            match stream {
                Stream::Events(source) => output.risk_scores.extend(
                    stage
                        .score(source, decoded.rows, input.batch_id, scored_at)
                        .await?,
                ),
                Stream::Labels => output.fraud_labels.extend(decoded.rows),
            }
        }
        let rows =
            |batches: &[RecordBatch]| batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
        let counts = (
            rows(&output.risk_scores),
            rows(&output.dead_letters),
            rows(&output.fraud_labels),
        );
        let scoring = batch_start.elapsed();
        let commit = tables.commit(&app_id, input.batch_id, output).await?;
        report.batches += 1;
        if commit.was_replay() {
            report.replayed_batches += 1;
        } else {
            report.scored += counts.0;
            report.dead_letters += counts.1;
            report.labels += counts.2;
        }
        tracing::info!(
            batch_id = input.batch_id,
            scored = counts.0,
            dead_letters = counts.1,
            labels = counts.2,
            scoring_ms = scoring.as_millis() as u64,
            commit_ms = (batch_start.elapsed() - scoring).as_millis() as u64,
            "batch committed"
        );
    }
    generator
        .join()
        .map_err(|_| JobError::internal("the generator thread panicked".into()))?;
    report.elapsed = start.elapsed();
    Ok(report)
}
