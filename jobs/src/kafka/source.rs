//! The Kafka source of streaming jobs: a `BaseConsumer` with `assign()`, reading exactly the
//! offset ranges the runner planned into Arrow batches with Spark's Kafka columns.
//!
//! Offsets belong to the checkpoint, not to a consumer group: the consumer has no group, commits
//! nothing, and resets no offsets (`auto.offset.reset = error`), so a gap is seen, never skipped.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{
    ArrayRef, BinaryBuilder, Int32Array, Int64Builder, RecordBatch, StringArray,
    TimestampMicrosecondBuilder,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, Timestamp};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use crate::error::{JobError, Result};
use crate::kafka::{CONNECT_TIMEOUT, client_config};
use crate::schemas::kafka_records_schema;
use crate::stream::source::{CHUNK_ROWS, RecordSource, read_in_parallel};
use crate::stream::spec::KafkaSourceOptions;

/// The offsets `[start, end)` of one partition that a batch reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetRange {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// First offset to read.
    pub start: i64,
    /// One past the last offset to read.
    pub end: i64,
}

/// The low and high watermarks of one partition: the first offset still in the log, and the
/// offset the next record will get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermarks {
    /// Earliest offset available.
    pub low: i64,
    /// End of the log.
    pub high: i64,
}

/// The records of one offset range.
#[derive(Debug)]
pub struct PartitionRecords {
    /// The range that was asked for.
    pub range: OffsetRange,
    /// The records, with Spark's Kafka columns.
    pub records: RecordBatch,
    /// Offsets in the range that no longer exist (only with `failOnDataLoss = false`).
    pub lost: u64,
}

/// Reads planned offset ranges from Kafka.
pub struct KafkaSource {
    options: KafkaSourceOptions,
    /// One consumer per reading thread; the first also answers metadata and offset requests.
    consumers: Vec<BaseConsumer>,
    partition_filter: Option<Vec<i32>>,
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource")
            .field("topics", &self.options.topics.describe())
            .finish()
    }
}

/// Per-range read state.
struct RangeReader {
    range: OffsetRange,
    next: i64,
    keys: BinaryBuilder,
    values: BinaryBuilder,
    offsets: Int64Builder,
    timestamps: TimestampMicrosecondBuilder,
    timestamp_types: Vec<i32>,
    lost: u64,
}

impl RangeReader {
    fn new(range: OffsetRange) -> Self {
        Self {
            next: range.start,
            range,
            keys: BinaryBuilder::new(),
            values: BinaryBuilder::new(),
            offsets: Int64Builder::new(),
            timestamps: TimestampMicrosecondBuilder::new(),
            timestamp_types: Vec::new(),
            lost: 0,
        }
    }

    fn done(&self) -> bool {
        self.next >= self.range.end
    }

    /// The records read, leaving the reader empty.
    fn take(&mut self) -> Result<PartitionRecords> {
        let timestamp_types = std::mem::take(&mut self.timestamp_types);
        let n = timestamp_types.len();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.keys.finish()),
            Arc::new(self.values.finish()),
            Arc::new(StringArray::from(vec![self.range.topic.as_str(); n])),
            Arc::new(Int32Array::from(vec![self.range.partition; n])),
            Arc::new(self.offsets.finish()),
            Arc::new(self.timestamps.finish().with_timezone("UTC")),
            Arc::new(Int32Array::from(timestamp_types)),
        ];
        let records = RecordBatch::try_new(kafka_records_schema(), columns)
            .map_err(JobError::arrow("Kafka records"))?;
        Ok(PartitionRecords {
            range: self.range.clone(),
            records,
            lost: std::mem::take(&mut self.lost),
        })
    }
}

impl RecordSource for KafkaSource {
    fn description(&self) -> String {
        format!("KafkaV2[{}]", self.options.topics.describe())
    }

    fn partitions(&self) -> Result<BTreeMap<String, Vec<i32>>> {
        // Only the partitions of this process (`--partitions`) are the job's.
        let metadata = self
            .control()
            .fetch_metadata(None, CONNECT_TIMEOUT)
            .map_err(self.kafka_err("cannot reach the broker (fetching metadata)"))?;
        let mut out = BTreeMap::new();
        for topic in metadata.topics() {
            if !self.options.topics.matches(topic.name()) {
                continue;
            }
            let mut partitions: Vec<i32> = topic
                .partitions()
                .iter()
                .map(|p| p.id())
                .filter(|p| self.partition_filter.as_ref().is_none_or(|f| f.contains(p)))
                .collect();
            partitions.sort_unstable();
            if !partitions.is_empty() {
                out.insert(topic.name().to_string(), partitions);
            }
        }
        Ok(out)
    }

    fn watermarks(
        &self,
        partitions: &BTreeMap<String, Vec<i32>>,
    ) -> Result<BTreeMap<String, BTreeMap<i32, Watermarks>>> {
        // Two ListOffsets requests for all partitions (earliest, latest), not two per partition.
        let ends = |which: Offset, context: &str| -> Result<BTreeMap<(String, i32), i64>> {
            let mut tpl = TopicPartitionList::new();
            for (topic, ids) in partitions {
                for &p in ids {
                    // ListOffsets takes -2 (earliest) and -1 (latest) in place of a timestamp.
                    tpl.add_partition_offset(topic, p, which)
                        .map_err(self.kafka_err(context))?;
                }
            }
            if tpl.count() == 0 {
                return Ok(BTreeMap::new());
            }
            let answer = self
                .control()
                .offsets_for_times(tpl, CONNECT_TIMEOUT)
                .map_err(self.kafka_err(context))?;
            let mut out = BTreeMap::new();
            for elem in answer.elements() {
                elem.error().map_err(self.kafka_err(format!(
                    "{context}: {} partition {}",
                    elem.topic(),
                    elem.partition()
                )))?;
                let Offset::Offset(offset) = elem.offset() else {
                    return Err(JobError::kafka(
                        &self.options.bootstrap_servers,
                        format!("{context}: {} partition {}", elem.topic(), elem.partition()),
                        KafkaError::OffsetFetch(RDKafkaErrorCode::InvalidPartitions),
                    ));
                };
                out.insert((elem.topic().to_string(), elem.partition()), offset);
            }
            Ok(out)
        };
        let lows = ends(Offset::Beginning, "listing earliest offsets")?;
        let highs = ends(Offset::End, "listing latest offsets")?;
        let mut out: BTreeMap<String, BTreeMap<i32, Watermarks>> = BTreeMap::new();
        for ((topic, p), high) in highs {
            let low = lows.get(&(topic.clone(), p)).copied().unwrap_or(high);
            out.entry(topic)
                .or_default()
                .insert(p, Watermarks { low, high });
        }
        Ok(out)
    }

    fn read<T: Send>(
        &self,
        ranges: &[OffsetRange],
        finish: &(dyn Fn(PartitionRecords) -> Result<T> + Sync),
        cancelled: &(dyn Fn() -> bool + Sync),
    ) -> Result<Vec<T>> {
        read_in_parallel(&self.consumers, ranges, |consumer, share| {
            self.read_on(consumer, share, finish, cancelled)
        })
    }
}

impl KafkaSource {
    /// A source for `options`; `partition_filter` restricts it to those partition numbers (static
    /// scale-out: each process of a job reads its own partitions).
    pub fn new(options: &KafkaSourceOptions, partition_filter: Option<Vec<i32>>) -> Result<Self> {
        let brokers = &options.bootstrap_servers;
        let mut cfg = client_config(brokers);
        cfg.set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "error")
            // Not used for commits; librdkafka wants one for a consumer.
            .set("group.id", "riskstream-unused")
            // Partitions are assigned only while their planned records are read, so a short
            // wait costs nothing when idle; and some brokers (tansu 0.6) hold every fetch for
            // the whole wait even when records are there: 50 ms read at 280K records/s, 1 ms at
            // 770K.
            .set("fetch.wait.max.ms", "1")
            // Records kept fetched ahead per partition: enough to keep a reading thread busy, and
            // bounded because what is fetched past a range's end is dropped at the next assign.
            .set("queued.min.messages", "30000")
            // A partition whose fetched queue is over that size waits this long before it is
            // fetched again (librdkafka's default is a whole second); a queue fills up while its
            // thread decodes an earlier range.
            .set("fetch.queue.backoff.ms", "5")
            // Kafka brokers return a record batch larger than the per-partition fetch size anyway
            // (KIP-74); tansu 0.6 does not, so the default leaves room for large messages.
            .set("fetch.message.max.bytes", "16777216");
        for (key, value) in &options.kafka_options {
            cfg.set(key, value);
        }
        let readers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let consumers = (0..readers)
            .map(|_| {
                cfg.create().map_err(|e| {
                    JobError::kafka(
                        brokers,
                        "creating the consumer (check the kafka.* options)",
                        e,
                    )
                })
            })
            .collect::<Result<Vec<BaseConsumer>>>()?;
        Ok(Self {
            options: options.clone(),
            consumers,
            partition_filter,
        })
    }

    /// The consumer that answers metadata and offset requests.
    fn control(&self) -> &BaseConsumer {
        &self.consumers[0]
    }

    fn kafka_err(&self, context: impl Into<String>) -> impl FnOnce(KafkaError) -> JobError {
        let brokers = self.options.bootstrap_servers.clone();
        let context = context.into();
        move |e| JobError::kafka(&brokers, context, e)
    }

    /// Reads `ranges` with one consumer, handing their records to `finish` every
    /// [`CHUNK_ROWS`] records and at the end of each range; results per range, in order.
    fn read_on<T>(
        &self,
        consumer: &BaseConsumer,
        ranges: &[OffsetRange],
        finish: &(dyn Fn(PartitionRecords) -> Result<T> + Sync),
        cancelled: &(dyn Fn() -> bool + Sync),
    ) -> Result<Vec<Vec<T>>> {
        let mut readers: Vec<RangeReader> = ranges.iter().cloned().map(RangeReader::new).collect();
        let mut made: Vec<Vec<T>> = readers.iter().map(|_| Vec::new()).collect();
        // Messages name their topic and partition: find the reader by topic, then partition.
        let mut topics: Vec<String> = Vec::new();
        let mut index: Vec<BTreeMap<i32, usize>> = Vec::new();
        for (i, r) in readers.iter().enumerate() {
            let t = match topics.iter().position(|t| *t == r.range.topic) {
                Some(t) => t,
                None => {
                    topics.push(r.range.topic.clone());
                    index.push(BTreeMap::new());
                    topics.len() - 1
                }
            };
            index[t].insert(r.range.partition, i);
        }
        self.assign(consumer, &readers)?;
        let mut remaining = readers.iter().filter(|r| !r.done()).count();
        let mut last_progress = Instant::now();
        // Records taken since the stall clock was last looked at: reading the clock for every
        // record costs more than the record, so it is read every so many polls.
        let mut taken = 0u32;
        let mut polls = 0u32;
        while remaining > 0 {
            polls += 1;
            if polls >= 1024 {
                polls = 0;
                // The next read assigns its own partitions, so nothing needs undoing.
                if cancelled() {
                    return Err(JobError::Cancelled);
                }
                if taken > 0 {
                    taken = 0;
                    last_progress = Instant::now();
                } else if last_progress.elapsed() > self.options.poll_timeout {
                    // Records of other partitions (skipped ones) must not hide a stall.
                    self.stalled(&mut readers)?;
                    remaining = readers.iter().filter(|r| !r.done()).count();
                    last_progress = Instant::now();
                    continue;
                }
            }
            match consumer.poll(Duration::from_millis(100)) {
                None => {
                    // An idle poll took up to 100 ms: look at the clock now.
                    polls = 1024;
                    for i in self.skip_undelivered(consumer, &mut readers)? {
                        remaining -= 1;
                        made[i].push(finish(readers[i].take()?)?);
                    }
                }
                Some(Ok(msg)) => {
                    // One topic (the usual case) needs no lookup by name.
                    let t = if topics.len() == 1 {
                        0
                    } else {
                        match topics.iter().position(|t| t == msg.topic()) {
                            Some(t) => t,
                            None => continue,
                        }
                    };
                    let Some(&i) = index[t].get(&msg.partition()) else {
                        continue;
                    };
                    let reader = &mut readers[i];
                    let offset = msg.offset();
                    if offset < reader.next || reader.done() {
                        continue;
                    }
                    if offset >= reader.range.end {
                        // A gap (compaction, transaction markers) ran past the end.
                        reader.next = reader.range.end;
                    } else {
                        reader.keys.append_option(msg.key());
                        reader.values.append_option(msg.payload());
                        reader.offsets.append_value(offset);
                        let (ts, kind) = match msg.timestamp() {
                            Timestamp::CreateTime(ms) => (Some(ms), 0),
                            Timestamp::LogAppendTime(ms) => (Some(ms), 1),
                            Timestamp::NotAvailable => (None, -1),
                        };
                        reader.timestamps.append_option(ts.map(|ms| ms * 1000));
                        reader.timestamp_types.push(kind);
                        reader.next = offset + 1;
                        taken += 1;
                    }
                    if reader.done() {
                        remaining -= 1;
                        drop(msg);
                        made[i].push(finish(readers[i].take()?)?);
                    } else if reader.timestamp_types.len() >= CHUNK_ROWS {
                        drop(msg);
                        made[i].push(finish(readers[i].take()?)?);
                    }
                }
                Some(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset)))
                | Some(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::OffsetOutOfRange))) => {
                    self.offsets_moved(consumer, &mut readers)?;
                    self.assign(consumer, &readers)?;
                    remaining = readers.iter().filter(|r| !r.done()).count();
                    last_progress = Instant::now();
                }
                Some(Err(e)) => {
                    return Err(JobError::kafka(
                        &self.options.bootstrap_servers,
                        "reading records",
                        e,
                    ));
                }
            }
        }
        consumer
            .unassign()
            .map_err(self.kafka_err("unassigning partitions"))?;
        // Ranges with nothing to read, or ended by data loss, still hold their last records.
        let mut out = Vec::with_capacity(made.len());
        for (reader, mut made) in readers.iter_mut().zip(made) {
            if made.is_empty() || !reader.timestamp_types.is_empty() || reader.lost > 0 {
                made.push(finish(reader.take()?)?);
            }
            out.push(made);
        }
        Ok(out)
    }

    fn assign(&self, consumer: &BaseConsumer, readers: &[RangeReader]) -> Result<()> {
        let mut tpl = TopicPartitionList::new();
        for r in readers.iter().filter(|r| !r.done()) {
            tpl.add_partition_offset(&r.range.topic, r.range.partition, Offset::Offset(r.next))
                .map_err(self.kafka_err("assigning partitions"))?;
        }
        // Finished partitions are not paused: with librdkafka, a partition paused and assigned
        // again waits about a second before its first fetch. What they fetch past their range
        // meanwhile is bounded by queued.min.messages and dropped at the next assign.
        consumer
            .assign(&tpl)
            .map_err(self.kafka_err("assigning partitions"))
    }

    /// Transaction markers (and, with `isolation.level = read_committed`, aborted records) take
    /// offsets but are never delivered; librdkafka moves the consumer's position past them as it
    /// polls. A range whose last offsets are such would otherwise wait for records that never
    /// come: end each range its consumer's position has reached, and return them.
    fn skip_undelivered(
        &self,
        consumer: &BaseConsumer,
        readers: &mut [RangeReader],
    ) -> Result<Vec<usize>> {
        let positions = consumer
            .position()
            .map_err(self.kafka_err("reading the consumer's positions"))?;
        let mut ended = Vec::new();
        for (i, r) in readers.iter_mut().enumerate().filter(|(_, r)| !r.done()) {
            let position = positions
                .find_partition(&r.range.topic, r.range.partition)
                .map(|e| e.offset());
            // Only a range's tail needs this: a gap inside it ends when the next record comes.
            // librdkafka resets the position when a partition is (re)assigned, so a position
            // left from an earlier read cannot skip records.
            if let Some(Offset::Offset(p)) = position
                && p >= r.range.end
            {
                r.next = r.range.end;
                ended.push(i);
            }
        }
        Ok(ended)
    }

    /// Offsets we were reading went out of range: find which, and fail or skip ahead.
    fn offsets_moved(&self, consumer: &BaseConsumer, readers: &mut [RangeReader]) -> Result<()> {
        for r in readers.iter_mut().filter(|r| !r.done()) {
            let (low, high) = consumer
                .fetch_watermarks(&r.range.topic, r.range.partition, CONNECT_TIMEOUT)
                .map_err(self.kafka_err(format!(
                    "listing offsets of {} partition {}",
                    r.range.topic, r.range.partition
                )))?;
            if r.next >= low && r.next <= high {
                continue;
            }
            // Behind the log start: skip to it. Past the log end: the topic was recreated and the
            // rest of the range is gone.
            let resume = if r.next < low { low } else { r.range.end };
            let reason = format!(
                "offset {} is out of range [{low}, {high}) while reading up to {}",
                r.next, r.range.end
            );
            self.lose(r, resume, reason)?;
        }
        Ok(())
    }

    /// No record came for `pollTimeoutMs`: the records planned are not there.
    fn stalled(&self, readers: &mut [RangeReader]) -> Result<()> {
        let timeout = self.options.poll_timeout;
        for r in readers.iter_mut().filter(|r| !r.done()) {
            let reason = format!(
                "no record at offset {} within kafkaConsumer.pollTimeoutMs ({} ms) though the batch reads up to {}",
                r.next,
                timeout.as_millis(),
                r.range.end
            );
            let end = r.range.end;
            self.lose(r, end, reason)?;
        }
        Ok(())
    }

    fn lose(&self, r: &mut RangeReader, resume: i64, reason: String) -> Result<()> {
        if self.options.fail_on_data_loss {
            return Err(JobError::DataLoss {
                topic: r.range.topic.clone(),
                partition: r.range.partition,
                reason,
            });
        }
        let resume = resume.clamp(r.next, r.range.end);
        tracing::warn!(
            topic = %r.range.topic,
            partition = r.range.partition,
            lost = resume - r.next,
            "data loss: {reason}; going on (failOnDataLoss = false)"
        );
        r.lost += (resume - r.next) as u64;
        r.next = resume;
        Ok(())
    }
}
