//! What the runner reads from: partitioned, offset logs. Kafka in production; an in-process log
//! of generated events to measure the engine without a broker.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{AsArray, RecordBatch, StringArray};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::Int32Type;

use crate::error::{JobError, Result};
use crate::generator::{
    Generator, GeneratorConfig, GeneratorStats, LABELS_PARTITIONS, LABELS_TOPIC, Message, Source,
    Stream,
};
use crate::kafka::{OffsetRange, PartitionRecords, Watermarks};
use crate::records::InProcessTopic;
use crate::schemas::kafka_records_schema;
use crate::stream::offsets::PartitionWatermarks;

/// A source of records in partitioned, offset logs, as the runner sees it.
pub trait RecordSource: Send + Sync + 'static {
    /// Spark-style description for progress reports.
    fn description(&self) -> String;

    /// The subscribed topics' partitions, sorted.
    fn partitions(&self) -> Result<BTreeMap<String, Vec<i32>>>;

    /// The earliest and end offsets of every given partition.
    fn watermarks(&self, partitions: &BTreeMap<String, Vec<i32>>) -> Result<PartitionWatermarks>;

    /// The earliest and end offsets of every subscribed partition now.
    fn log_ends(&self) -> Result<PartitionWatermarks> {
        self.watermarks(&self.partitions()?)
    }

    /// Reads every range on every core, handing records to `finish` (on the reading thread) in
    /// chunks; returns what `finish` made in the order of `ranges`, and of offsets within one.
    /// Gives up with [`JobError::Cancelled`] soon after `cancelled` turns true, even while it
    /// waits for records that do not come.
    fn read<T: Send>(
        &self,
        ranges: &[OffsetRange],
        finish: &(dyn Fn(PartitionRecords) -> Result<T> + Sync),
        cancelled: &(dyn Fn() -> bool + Sync),
    ) -> Result<Vec<T>>;
}

/// Records of a range handed to `finish` at a time, so decoding starts while the rest is read.
pub const CHUNK_ROWS: usize = 32_768;

/// Splits `ranges` across `workers` (largest first, each to the least loaded), runs `read_share`
/// on one thread per worker, and returns its results in the order of `ranges`. `read_share`
/// returns, per range of its share, what it made of it.
pub fn read_in_parallel<W: Sync, T: Send>(
    workers: &[W],
    ranges: &[OffsetRange],
    read_share: impl Fn(&W, &[OffsetRange]) -> Result<Vec<Vec<T>>> + Sync,
) -> Result<Vec<T>> {
    let mut order: Vec<usize> = (0..ranges.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(ranges[i].end - ranges[i].start));
    let mut shares: Vec<(i64, Vec<usize>)> = vec![(0, Vec::new()); workers.len()];
    for i in order {
        if let Some(share) = shares.iter_mut().min_by_key(|(load, _)| *load) {
            share.0 += ranges[i].end - ranges[i].start;
            share.1.push(i);
        }
    }
    // Per thread: (index in `ranges`, what was made of it) for each of its ranges.
    type Made<T> = Vec<(usize, Vec<T>)>;
    let read_share = &read_share;
    let results: Vec<Result<Made<T>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = workers
            .iter()
            .zip(shares)
            .filter(|(_, (_, share))| !share.is_empty())
            .map(|(worker, (_, share))| {
                scope.spawn(move || {
                    let mine: Vec<OffsetRange> = share.iter().map(|&i| ranges[i].clone()).collect();
                    let made = read_share(worker, &mine)?;
                    Ok(share.into_iter().zip(made).collect())
                })
            })
            .collect();
        crate::decode::join_decoders(handles)
    });
    let mut all: Made<T> = Vec::with_capacity(ranges.len());
    for result in results {
        all.extend(result?);
    }
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().flat_map(|(_, t)| t).collect())
}

/// An in-process topic of generated events, fully written before the job starts: the engine
/// benchmark's source, so that decoding, SQL and Delta are measured without a broker.
#[derive(Clone)]
pub struct MemorySource {
    topic: String,
    /// Each partition's records, with Spark's Kafka columns, offsets from 0.
    partitions: Vec<RecordBatch>,
    threads: usize,
}

impl MemorySource {
    /// `events` events of `config` (labels left out) in topic `topic`, partitioned by key as
    /// Kafka's default partitioner would.
    pub fn generate(
        topic: &str,
        partitions: i32,
        config: GeneratorConfig,
        events: u64,
    ) -> Result<Self> {
        Self::generate_in_chunks(topic, partitions, config, events, LOG_CHUNK)
    }

    fn generate_in_chunks(
        topic: &str,
        partitions: i32,
        config: GeneratorConfig,
        events: u64,
        chunk: usize,
    ) -> Result<Self> {
        let mut generator =
            Generator::new(config).map_err(|reason| JobError::config("generator", reason))?;
        let mut log = ChunkedLog::new(topic, partitions, chunk);
        let mut msg = Message::default();
        let mut made = 0;
        while made < events {
            generator.next_message(&mut msg);
            if let Some(Stream::Events(_)) = msg.stream {
                log.append(&msg.key, &msg.value)?;
                made += 1;
            }
        }
        log.finish()
    }

    /// `records` (key, value) in topic `topic`, partitioned by key as Kafka's default
    /// partitioner would.
    pub fn from_records(
        topic: &str,
        partitions: i32,
        records: impl Iterator<Item = (Vec<u8>, Vec<u8>)>,
    ) -> Result<Self> {
        let mut log = ChunkedLog::new(topic, partitions, LOG_CHUNK);
        for (key, value) in records {
            log.append(&key, &value)?;
        }
        log.finish()
    }

    /// Every stream of `config` — the events of each source and the labels — as one log per
    /// topic, until `events` events are made; the labels still due are drained after them.
    /// Returns each stream's log and the generator's totals.
    pub fn generate_streams(
        config: GeneratorConfig,
        events: u64,
    ) -> Result<(Vec<(Stream, Self)>, GeneratorStats)> {
        let mut generator =
            Generator::new(config).map_err(|reason| JobError::config("generator", reason))?;
        let mut logs: Vec<(Stream, ChunkedLog)> = Source::ALL
            .iter()
            .map(|s| {
                (
                    Stream::Events(*s),
                    ChunkedLog::new(s.topic(), s.partitions(), LOG_CHUNK),
                )
            })
            .chain([(
                Stream::Labels,
                ChunkedLog::new(LABELS_TOPIC, LABELS_PARTITIONS, LOG_CHUNK),
            )])
            .collect();
        let mut msg = Message::default();
        let mut append = |msg: &Message| -> Result<()> {
            if let Some(stream) = msg.stream
                && let Some((_, log)) = logs.iter_mut().find(|(s, _)| *s == stream)
            {
                log.append(&msg.key, &msg.value)?;
            }
            Ok(())
        };
        let mut made = 0;
        while made < events {
            generator.next_message(&mut msg);
            if matches!(msg.stream, Some(Stream::Events(_))) {
                made += 1;
            }
            append(&msg)?;
        }
        while generator.drain_labels(&mut msg) {
            append(&msg)?;
        }
        let logs = logs
            .into_iter()
            .map(|(stream, log)| Ok((stream, log.finish()?)))
            .collect::<Result<_>>()?;
        Ok((logs, generator.stats().clone()))
    }

    /// A log of `chunks` of records with Spark's Kafka columns, split by their partition.
    fn from_chunks(topic: &str, partitions: i32, chunks: &[RecordBatch]) -> Result<Self> {
        let mut split = Vec::with_capacity(partitions.max(1) as usize);
        for p in 0..partitions.max(1) {
            let mut parts = Vec::with_capacity(chunks.len());
            for chunk in chunks {
                let partition_of = chunk
                    .column_by_name("partition")
                    .and_then(|c| c.as_primitive_opt::<Int32Type>())
                    .ok_or_else(|| {
                        JobError::internal("records without a partition column".into())
                    })?;
                let mask = partition_of.iter().map(|v| Some(v == Some(p))).collect();
                parts.push(
                    filter_record_batch(chunk, &mask)
                        .map_err(JobError::arrow("partitioning records"))?,
                );
            }
            split.push(
                datafusion::arrow::compute::concat_batches(&kafka_records_schema(), &parts)
                    .map_err(JobError::arrow("partitioning records"))?,
            );
        }
        Ok(Self {
            topic: topic.to_string(),
            partitions: split,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        })
    }

    /// The same log under the topic name `topic` (a job subscribes by name), its records' topic
    /// column included.
    pub fn renamed(mut self, topic: &str) -> Result<Self> {
        for records in &mut self.partitions {
            let at = records
                .schema()
                .index_of("topic")
                .map_err(JobError::arrow("records"))?;
            let mut columns = records.columns().to_vec();
            columns[at] = Arc::new(StringArray::from(vec![topic; records.num_rows()]));
            *records = RecordBatch::try_new(records.schema(), columns)
                .map_err(JobError::arrow("records"))?;
        }
        self.topic = topic.to_string();
        Ok(self)
    }

    /// Each partition's records, with Spark's Kafka columns.
    pub fn records(&self) -> &[RecordBatch] {
        &self.partitions
    }

    /// Records in the log.
    pub fn len(&self) -> usize {
        self.partitions.iter().map(RecordBatch::num_rows).sum()
    }

    /// Whether the log is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Records per chunk of an in-process log (see [`ChunkedLog`]).
const LOG_CHUNK: usize = 1 << 20;

/// An in-process topic taken out in chunks as it grows: one binary array of every value would
/// pass the 2 GiB its 32-bit offsets can address (about 4,000,000 events).
struct ChunkedLog {
    topic: InProcessTopic,
    name: String,
    partitions: i32,
    chunk: usize,
    chunks: Vec<RecordBatch>,
}

impl ChunkedLog {
    fn new(topic: &str, partitions: i32, chunk: usize) -> Self {
        Self {
            topic: InProcessTopic::new(topic, partitions),
            name: topic.to_string(),
            partitions,
            chunk,
            chunks: Vec::new(),
        }
    }

    fn append(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        // The record timestamp is the append time, as a broker's CreateTime would be.
        self.topic
            .append(key, value, chrono::Utc::now().timestamp_millis());
        if self.topic.pending_rows() == self.chunk {
            self.chunks.push(self.topic.take_batch()?);
        }
        Ok(())
    }

    fn finish(mut self) -> Result<MemorySource> {
        self.chunks.push(self.topic.take_batch()?);
        MemorySource::from_chunks(&self.name, self.partitions, &self.chunks)
    }
}

impl RecordSource for MemorySource {
    fn description(&self) -> String {
        format!("MemoryStream[{}]", self.topic)
    }

    fn partitions(&self) -> Result<BTreeMap<String, Vec<i32>>> {
        let ids = (0..self.partitions.len() as i32).collect();
        Ok(BTreeMap::from([(self.topic.clone(), ids)]))
    }

    fn watermarks(&self, partitions: &BTreeMap<String, Vec<i32>>) -> Result<PartitionWatermarks> {
        let mut out = PartitionWatermarks::new();
        for (topic, ids) in partitions {
            for &p in ids {
                let high = self
                    .partitions
                    .get(p as usize)
                    .filter(|_| *topic == self.topic)
                    .map_or(0, |b| b.num_rows() as i64);
                out.entry(topic.clone())
                    .or_default()
                    .insert(p, Watermarks { low: 0, high });
            }
        }
        Ok(out)
    }

    fn read<T: Send>(
        &self,
        ranges: &[OffsetRange],
        finish: &(dyn Fn(PartitionRecords) -> Result<T> + Sync),
        cancelled: &(dyn Fn() -> bool + Sync),
    ) -> Result<Vec<T>> {
        let workers = vec![(); self.threads];
        read_in_parallel(&workers, ranges, |(), share| {
            share
                .iter()
                .map(|range| {
                    let log = self
                        .partitions
                        .get(range.partition as usize)
                        .filter(|_| range.topic == self.topic)
                        .ok_or_else(|| {
                            JobError::internal(format!(
                                "{} partition {} is not in the in-process log",
                                range.topic, range.partition
                            ))
                        })?;
                    let end = (range.end as usize).min(log.num_rows());
                    let mut made = Vec::new();
                    let mut at = range.start as usize;
                    while at < end {
                        if cancelled() {
                            return Err(JobError::Cancelled);
                        }
                        let n = CHUNK_ROWS.min(end - at);
                        made.push(finish(PartitionRecords {
                            range: range.clone(),
                            records: log.slice(at, n),
                            lost: 0,
                        })?);
                        at += n;
                    }
                    Ok(made)
                })
                .collect()
        })
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use crate::generator::Source;
    use datafusion::arrow::datatypes::Int64Type;

    const START_MS: i64 = 1_767_225_600_000;

    pub(crate) fn log(events: u64) -> MemorySource {
        let config = GeneratorConfig::new(7, START_MS).with_sources(&[Source::Transactions]);
        MemorySource::generate("financial-transactions", 12, config, events).unwrap()
    }

    #[test]
    fn a_log_generated_in_chunks_is_the_same_log() {
        let config = GeneratorConfig::new(7, START_MS).with_sources(&[Source::Transactions]);
        let chunked =
            MemorySource::generate_in_chunks("financial-transactions", 12, config, 5_000, 700)
                .unwrap();
        let whole = log(5_000);
        assert_eq!(chunked.len(), 5_000);
        for (a, b) in chunked.partitions.iter().zip(&whole.partitions) {
            // Timestamps are append times; everything else matches record for record.
            for column in ["key", "value", "partition", "offset"] {
                assert_eq!(
                    a.column_by_name(column),
                    b.column_by_name(column),
                    "{column}"
                );
            }
        }
    }

    #[test]
    fn reads_come_back_in_range_and_offset_order_whatever_thread_read_them() {
        let source = log(100_000);
        let partitions = source.partitions().unwrap();
        let marks = source.watermarks(&partitions).unwrap();
        let ranges: Vec<OffsetRange> = marks["financial-transactions"]
            .iter()
            .map(|(&p, w)| OffsetRange {
                topic: "financial-transactions".into(),
                partition: p,
                start: 3,
                end: w.high,
            })
            .collect();
        let firsts = source
            .read(
                &ranges,
                &|records: PartitionRecords| {
                    let offsets = records.records.column_by_name("offset").unwrap();
                    let offsets = offsets.as_primitive::<Int64Type>();
                    Ok((records.range.partition, offsets.value(0), offsets.len()))
                },
                &|| false,
            )
            .unwrap();
        let mut expected = Vec::new();
        for range in &ranges {
            let mut at = range.start;
            while at < range.end {
                let n = (CHUNK_ROWS as i64).min(range.end - at);
                expected.push((range.partition, at, n as usize));
                at += n;
            }
        }
        assert_eq!(firsts, expected);
        assert_eq!(source.len(), 100_000);
    }
}
