//! Kafka records as Arrow: Spark's Kafka source columns, built in process for the embedded
//! default, partitioned and offset as a Kafka topic would be.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BinaryBuilder, Int32Builder, Int64Builder, RecordBatch, StringArray,
    TimestampMicrosecondBuilder,
};

use crate::error::{JobError, Result};
use crate::schemas::kafka_records_schema;

/// Kafka's default partitioner hash (murmur2, as in the Java client), so that keys land on the
/// same partitions as they would with Spark's or Kafka's own producers.
pub fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() == 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition Kafka's default partitioner picks for `key`.
pub fn partition_for(key: &[u8], partitions: i32) -> i32 {
    ((murmur2(key) & 0x7fff_ffff) % partitions.max(1) as u32) as i32
}

/// An in-process topic: assigns partitions by key and offsets per partition, and collects
/// records into Arrow batches with Spark's Kafka columns.
#[derive(Debug)]
pub struct InProcessTopic {
    name: String,
    next_offsets: Vec<i64>,
    keys: BinaryBuilder,
    values: BinaryBuilder,
    partitions: Int32Builder,
    offsets: Int64Builder,
    timestamps: TimestampMicrosecondBuilder,
    rows: usize,
}

impl InProcessTopic {
    /// A topic with `partitions` partitions, all starting at offset 0.
    pub fn new(name: &str, partitions: i32) -> Self {
        Self {
            name: name.to_string(),
            next_offsets: vec![0; partitions.max(1) as usize],
            keys: BinaryBuilder::new(),
            values: BinaryBuilder::new(),
            partitions: Int32Builder::new(),
            offsets: Int64Builder::new(),
            timestamps: TimestampMicrosecondBuilder::new(),
            rows: 0,
        }
    }

    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Records appended since the last [`InProcessTopic::take_batch`].
    pub fn pending_rows(&self) -> usize {
        self.rows
    }

    /// The next offset of every partition: the end of the log.
    pub fn end_offsets(&self) -> &[i64] {
        &self.next_offsets
    }

    /// Appends a record, as a producer with Kafka's default partitioner would.
    pub fn append(&mut self, key: &[u8], value: &[u8], timestamp_ms: i64) {
        let partition = partition_for(key, self.next_offsets.len() as i32);
        let offset = &mut self.next_offsets[partition as usize];
        self.keys.append_value(key);
        self.values.append_value(value);
        self.partitions.append_value(partition);
        self.offsets.append_value(*offset);
        self.timestamps.append_value(timestamp_ms * 1000);
        *offset += 1;
        self.rows += 1;
    }

    /// The records appended since the last call, as one batch with Spark's Kafka columns.
    pub fn take_batch(&mut self) -> Result<RecordBatch> {
        let n = self.rows;
        self.rows = 0;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.keys.finish()),
            Arc::new(self.values.finish()),
            Arc::new(StringArray::from(vec![self.name.as_str(); n])),
            Arc::new(self.partitions.finish()),
            Arc::new(self.offsets.finish()),
            Arc::new(self.timestamps.finish().with_timezone("UTC")),
            // Spark's timestampType 0: the producer's CreateTime.
            Arc::new(datafusion::arrow::array::Int32Array::from(vec![0; n])),
        ];
        RecordBatch::try_new(kafka_records_schema(), columns).map_err(JobError::arrow("records"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_the_java_client() {
        // Values from Kafka's own partitioner tests (org.apache.kafka.common.utils.UtilsTest).
        assert_eq!(murmur2(b"21") as i32, -973_932_308);
        assert_eq!(murmur2(b"foobar") as i32, -790_332_482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985_981_536);
        assert_eq!(
            murmur2(b"a-little-bit-longer-string") as i32,
            -1_486_304_829
        );
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32,
            -58_897_971
        );
        assert_eq!(murmur2(b"abc") as i32, 479_470_107);
    }

    #[test]
    fn records_get_partition_and_offsets_per_partition() {
        let mut topic = InProcessTopic::new("t", 4);
        for i in 0..100 {
            topic.append(format!("k{}", i % 7).as_bytes(), b"{}", 1_000 + i);
        }
        let batch = topic.take_batch().unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(batch.num_rows(), 100);
        assert_eq!(topic.end_offsets().iter().sum::<i64>(), 100);
        assert_eq!(topic.pending_rows(), 0);
    }
}
