//! A throughput-tuned Kafka producer that counts deliveries per topic.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

use super::client_config;
use crate::error::{JobError, Result};

/// Acknowledged and failed deliveries of one topic.
#[derive(Debug, Default)]
pub struct DeliveryCounts {
    /// Messages the broker acknowledged.
    pub acknowledged: AtomicU64,
    /// Messages that could not be delivered.
    pub failed: AtomicU64,
}

struct CountingContext {
    topics: Vec<String>,
    counts: Vec<Arc<DeliveryCounts>>,
}

impl ClientContext for CountingContext {}

impl ProducerContext for CountingContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let (topic, ok) = match result {
            Ok(m) => (m.topic(), true),
            Err((_, m)) => (m.topic(), false),
        };
        if let Some(i) = self.topics.iter().position(|t| t == topic) {
            let c = &self.counts[i];
            if ok {
                c.acknowledged.fetch_add(1, Ordering::Relaxed);
            } else {
                c.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Sends keyed messages to Kafka with batching, linger and lz4 compression, `acks=1`, and Kafka's
/// default (murmur2) partitioner, so keys land where Java clients would put them.
pub struct KafkaEventSink {
    brokers: String,
    producer: ThreadedProducer<CountingContext>,
    counts: Vec<Arc<DeliveryCounts>>,
    topics: Vec<String>,
}

impl KafkaEventSink {
    /// A producer for `topics` on `brokers`.
    pub fn new(brokers: &str, topics: &[&str]) -> Result<Self> {
        let counts: Vec<Arc<DeliveryCounts>> = topics
            .iter()
            .map(|_| Arc::new(DeliveryCounts::default()))
            .collect();
        let context = CountingContext {
            topics: topics.iter().map(|t| t.to_string()).collect(),
            counts: counts.clone(),
        };
        let producer = client_config(brokers)
            .set("acks", "1")
            .set("linger.ms", "10")
            .set("batch.num.messages", "10000")
            .set("batch.size", "1000000")
            .set("compression.type", "lz4")
            .set("partitioner", "murmur2_random")
            .set("queue.buffering.max.messages", "1000000")
            .set("queue.buffering.max.kbytes", "1048576")
            .set("message.timeout.ms", "60000")
            .create_with_context(context)
            .map_err(|source| JobError::kafka(brokers, "creating a producer", source))?;
        Ok(Self {
            brokers: brokers.to_string(),
            producer,
            counts,
            topics: topics.iter().map(|t| t.to_string()).collect(),
        })
    }

    /// Queues one message, waiting while the producer's queue is full. The record's timestamp is
    /// the time it is produced (Kafka's CreateTime); the event's own time is in its JSON, and
    /// brokers reject record timestamps far from their clock.
    pub fn send(&self, topic: &str, key: &[u8], value: &[u8]) -> Result<()> {
        let mut record = BaseRecord::to(topic).key(key).payload(value);
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    self.producer.poll(Duration::from_millis(5));
                }
                Err((source, _)) => {
                    if let Some(i) = self.topics.iter().position(|t| t == topic) {
                        self.counts[i].failed.fetch_add(1, Ordering::Relaxed);
                    }
                    return Err(JobError::kafka(
                        &self.brokers,
                        format!("producing to `{topic}`"),
                        source,
                    ));
                }
            }
        }
    }

    /// Delivery counts of `topic` (zero for a topic this sink does not know).
    pub fn counts(&self, topic: &str) -> (u64, u64) {
        self.topics
            .iter()
            .position(|t| t == topic)
            .map(|i| {
                (
                    self.counts[i].acknowledged.load(Ordering::Relaxed),
                    self.counts[i].failed.load(Ordering::Relaxed),
                )
            })
            .unwrap_or_default()
    }

    /// Waits up to `timeout` for every queued message to be acknowledged or to fail.
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        self.producer
            .flush(timeout)
            .map_err(|source| JobError::kafka(&self.brokers, "waiting for deliveries", source))
    }
}
