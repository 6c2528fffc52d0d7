//! The Kafka alert sink: the rows of a batch's output that match the spec's `where` predicate,
//! published as JSON objects to a topic (`risk-alerts`) by an idempotent producer.
//!
//! Delivery is at least once. The runner publishes a batch's alerts after its Delta commit and
//! before `commits/<batchId>`, and waits for every acknowledgement; the idempotent producer keeps
//! its own retries from duplicating or reordering. A crash after some alerts of a batch were
//! acknowledged but before the batch's commit record replays the batch, and publishes its alerts
//! again. Every alert carries the query id and batch id as headers, and the row's own columns
//! (the event id) so a consumer can drop those repeats.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};

use crate::error::{JobError, Result};
use crate::kafka::{client_config, ensure_topics};
use crate::stream::spec::KafkaAlertOptions;

/// Partitions of an alert topic the job creates because it is missing.
const NEW_TOPIC_PARTITIONS: i32 = 6;

/// How much longer than the producer's message timeout a batch waits for its acknowledgements:
/// librdkafka reports every message, delivered or failed, within the timeout, so this is only a
/// backstop.
const ACK_GRACE: Duration = Duration::from_secs(10);

/// The Kafka header holding the query id of the job that published an alert.
pub const QUERY_ID_HEADER: &str = "riskstream.queryId";
/// The Kafka header holding the micro-batch id an alert came from.
pub const BATCH_ID_HEADER: &str = "riskstream.batchId";

/// Remembers the first failed delivery; the producer's thread reports deliveries here.
#[derive(Default)]
struct DeliveryContext {
    first_failure: Mutex<Option<KafkaError>>,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((err, _)) = result
            && let Ok(mut first) = self.first_failure.lock()
        {
            first.get_or_insert_with(|| err.clone());
        }
    }
}

/// A job's alert sink.
pub struct AlertSink {
    brokers: String,
    topic: String,
    key_column: Option<usize>,
    producer: BaseProducer<DeliveryContext>,
    /// How long a batch waits for its alerts' reports; `None` when messages never time out.
    ack_timeout: Option<Duration>,
}

impl AlertSink {
    /// Checks the key column against the sink's `schema`, creates the topic when it is missing
    /// and connects the producer. `key` names the spec's section in errors.
    pub async fn open(
        options: &KafkaAlertOptions,
        schema: &SchemaRef,
        key: impl Fn(&str) -> String,
    ) -> Result<Self> {
        let key_column = match &options.key_column {
            None => None,
            Some(name) => Some(schema.index_of(name).map_err(|_| {
                JobError::config(
                    key("options.keyColumn"),
                    format!("the query has no column `{name}`"),
                )
            })?),
        };
        ensure_topics(
            &options.bootstrap_servers,
            &[(options.topic.as_str(), NEW_TOPIC_PARTITIONS)],
        )
        .await?;
        let mut config = client_config(&options.bootstrap_servers);
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // A batch's alerts are sent together and awaited at once: a short linger suffices.
            .set("linger.ms", "1")
            .set("compression.type", "lz4")
            .set(
                "message.timeout.ms",
                options.message_timeout.as_millis().to_string(),
            );
        for (name, value) in &options.kafka_options {
            config.set(name, value);
        }
        let producer = config
            .create_with_context(DeliveryContext::default())
            .map_err(|e| {
                JobError::kafka(&options.bootstrap_servers, "creating the alert producer", e)
            })?;
        Ok(Self {
            brokers: options.bootstrap_servers.clone(),
            topic: options.topic.clone(),
            key_column,
            producer,
            // Zero: messages never time out, and neither does the wait.
            ack_timeout: (!options.message_timeout.is_zero())
                .then(|| options.message_timeout + ACK_GRACE),
        })
    }

    /// Spark-style description for progress reports.
    pub fn description(&self) -> String {
        format!("KafkaSink[{}]", self.topic)
    }

    /// Publishes `alerts` and waits until the broker acknowledged every one.
    pub fn publish(&self, alerts: &[RecordBatch], query_id: &str, batch_id: i64) -> Result<()> {
        if alerts.iter().all(|b| b.num_rows() == 0) {
            return Ok(());
        }
        let batch_text = batch_id.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: QUERY_ID_HEADER,
                value: Some(query_id),
            })
            .insert(Header {
                key: BATCH_ID_HEADER,
                value: Some(&batch_text),
            });
        for batch in alerts {
            let values = json_rows(batch)?;
            let keys = match self.key_column {
                None => None,
                Some(i) => Some(cast(batch.column(i), &DataType::Utf8).map_err(|source| {
                    JobError::Arrow {
                        context: "alert keys".to_string(),
                        source,
                    }
                })?),
            };
            let keys = keys.as_ref().map(|k| k.as_string::<i32>());
            for (row, value) in values.iter().enumerate() {
                let key = keys.and_then(|k| (!k.is_null(row)).then(|| k.value(row)));
                let mut record: BaseRecord<'_, str, [u8]> = BaseRecord::to(&self.topic)
                    .payload(value.as_slice())
                    .headers(headers.clone());
                if let Some(key) = key {
                    record = record.key(key);
                }
                self.send(record)?;
            }
        }
        // Served here rather than with `flush`, which waits in steps of 100 ms: a batch with
        // alerts would take that much longer.
        let deadline = self.ack_timeout.map(|t| Instant::now() + t);
        while self.producer.in_flight_count() > 0 {
            if deadline.is_some_and(|d| Instant::now() > d) {
                return Err(JobError::kafka(
                    &self.brokers,
                    self.context("acknowledging"),
                    KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut),
                ));
            }
            self.producer.poll(Duration::from_millis(5));
        }
        let failure = self
            .producer
            .context()
            .first_failure
            .lock()
            .map(|mut f| f.take())
            .unwrap_or(None);
        match failure {
            None => Ok(()),
            Some(e) => Err(JobError::kafka(
                &self.brokers,
                self.context("delivering"),
                e,
            )),
        }
    }

    fn context(&self, what: &str) -> String {
        format!("{what} alerts on `{}`", self.topic)
    }

    /// Queues one record, waiting for room when the producer's queue is full.
    fn send<'a>(&self, mut record: BaseRecord<'a, str, [u8]>) -> Result<()> {
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    self.producer.poll(Duration::from_millis(50));
                }
                Err((e, _)) => {
                    return Err(JobError::kafka(&self.brokers, self.context("queueing"), e));
                }
            }
        }
    }
}

/// Each row of `batch` as a JSON object, with every column present (null as null).
fn json_rows(batch: &RecordBatch) -> Result<Vec<Vec<u8>>> {
    use datafusion::arrow::json::writer::{LineDelimited, WriterBuilder};
    let mut buffer = Vec::with_capacity(batch.num_rows() * 256);
    let mut writer = WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, LineDelimited>(&mut buffer);
    writer
        .write(batch)
        .and_then(|()| writer.finish())
        .map_err(|source| JobError::Arrow {
            context: "alerts as JSON".to_string(),
            source,
        })?;
    drop(writer);
    Ok(buffer
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .map(<[u8]>::to_vec)
        .collect())
}

#[cfg(test)]
#[expect(clippy::unwrap_used)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Float64Array, StringArray};
    use datafusion::arrow::datatypes::{Field, Schema};
    use std::sync::Arc;

    #[test]
    fn rows_become_one_json_object_each_with_nulls_kept() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("event_id", DataType::Utf8, true),
            Field::new("risk_score", DataType::Float64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![Some("a"), None])),
                Arc::new(Float64Array::from(vec![0.5, 0.9])),
            ],
        )
        .unwrap();
        let rows = json_rows(&batch).unwrap();
        let rows: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| serde_json::from_slice(r).unwrap())
            .collect();
        assert_eq!(
            rows,
            vec![
                serde_json::json!({"event_id": "a", "risk_score": 0.5}),
                serde_json::json!({"event_id": null, "risk_score": 0.9}),
            ]
        );
    }
}
