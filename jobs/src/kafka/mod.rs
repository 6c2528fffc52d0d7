//! Kafka plumbing shared by the generator and the jobs: client configuration, reachability checks
//! and topic creation.

mod producer;
mod source;

pub use producer::{DeliveryCounts, KafkaEventSink};
pub use source::{KafkaSource, OffsetRange, PartitionRecords, Watermarks};

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use crate::error::{JobError, Result};

/// How long to wait for a broker to answer before calling it unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Parses `kafka://HOST:PORT[,HOST:PORT...]` (or a bare `HOST:PORT` list) into bootstrap servers.
pub fn parse_bootstrap(target: &str, flag: &str) -> Result<String> {
    let list = target.strip_prefix("kafka://").unwrap_or(target);
    let list = list.trim_end_matches('/');
    if list.is_empty() {
        return Err(JobError::config(
            flag,
            "no broker address given (kafka://HOST:PORT)",
        ));
    }
    for server in list.split(',') {
        let Some((host, port)) = server.rsplit_once(':') else {
            return Err(JobError::config(
                flag,
                format!("`{server}` is not HOST:PORT"),
            ));
        };
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(JobError::config(
                flag,
                format!("`{server}` is not HOST:PORT with a port number"),
            ));
        }
    }
    Ok(list.to_string())
}

/// Base client configuration for `brokers`.
pub fn client_config(brokers: &str) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", brokers)
        .set("socket.timeout.ms", "10000")
        .set("log_level", "3");
    cfg
}

/// Creates the topics that are missing, with the given partition counts; existing topics are
/// left as they are. Fails fast, naming the address, when no broker answers.
pub async fn ensure_topics(brokers: &str, topics: &[(&str, i32)]) -> Result<()> {
    let kafka_err = |context: &'static str| move |source| JobError::kafka(brokers, context, source);
    let admin: AdminClient<DefaultClientContext> = client_config(brokers)
        .create()
        .map_err(kafka_err("creating an admin client"))?;
    let metadata = admin
        .inner()
        .fetch_metadata(None, CONNECT_TIMEOUT)
        .map_err(kafka_err("cannot reach the broker (fetching metadata)"))?;
    let existing: Vec<&str> = metadata.topics().iter().map(|t| t.name()).collect();
    let missing: Vec<NewTopic<'_>> = topics
        .iter()
        .filter(|(name, _)| !existing.contains(name))
        .map(|(name, partitions)| NewTopic::new(name, *partitions, TopicReplication::Fixed(1)))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let options = AdminOptions::new()
        .operation_timeout(Some(CONNECT_TIMEOUT))
        .request_timeout(Some(CONNECT_TIMEOUT));
    let results = admin
        .create_topics(missing.iter(), &options)
        .await
        .map_err(kafka_err("creating topics"))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(JobError::kafka(
                    brokers,
                    format!("creating topic `{topic}`"),
                    rdkafka::error::KafkaError::AdminOp(code),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[expect(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_addresses_are_checked() {
        assert_eq!(
            parse_bootstrap("kafka://127.0.0.1:9092", "--to").unwrap(),
            "127.0.0.1:9092"
        );
        assert_eq!(parse_bootstrap("a:1,b:2", "--to").unwrap(), "a:1,b:2");
        let err = parse_bootstrap("kafka://localhost", "--to")
            .unwrap_err()
            .to_string();
        assert!(err.contains("--to") && err.contains("localhost"), "{err}");
        assert!(parse_bootstrap("kafka://h:port", "--to").is_err());
    }
}
