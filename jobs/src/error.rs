//! Errors of the streaming room. Each says whose fault it is ([`Fault`]), so a runner knows
//! whether retrying can help, and names what it was working on.

use riskstream_lake::LakeError;

/// Who is at fault for an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Bad input from the user: configuration, flags, SQL. Retrying will not help.
    User,
    /// An outside system (broker, object store) failed or is unreachable; a retry may help.
    External,
    /// A bug in Riskstream.
    Internal,
}

/// An error of a job, a generator run or a source.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// A flag or configuration key has a bad value.
    #[error("{key}: {reason}")]
    Config {
        /// The flag or key, such as `--rate` or `kafka.bootstrap.servers`.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A Kafka operation failed.
    #[error("Kafka at {brokers}: {context}: {source}")]
    Kafka {
        /// The bootstrap servers.
        brokers: String,
        /// What we were doing.
        context: String,
        /// The client's error.
        #[source]
        source: Box<rdkafka::error::KafkaError>,
    },
    /// A SQL file failed to plan or run.
    #[error("SQL `{file}`: {source}")]
    Sql {
        /// The SQL file, such as `sql/scoring/transactions.sql`.
        file: String,
        /// DataFusion's error.
        #[source]
        source: Box<datafusion::error::DataFusionError>,
    },
    /// Writing or reading the lake failed.
    #[error(transparent)]
    Lake(Box<LakeError>),
    /// Reading or writing a local file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Building Arrow data failed.
    #[error("{context}: {source}")]
    Arrow {
        /// What we were building.
        context: String,
        /// Arrow's error.
        #[source]
        source: datafusion::arrow::error::ArrowError,
    },
    /// A read was given up because the query is stopping; nothing of it was logged.
    #[error("the read was cancelled: the query is stopping")]
    Cancelled,
    /// The checkpoint cannot be read or written, or another process owns it.
    #[error("checkpoint `{location}`: {reason}")]
    Checkpoint {
        /// The checkpoint file or folder.
        location: String,
        /// What went wrong.
        reason: String,
    },
    /// Offsets the query must read are gone from the topic (`failOnDataLoss`).
    #[error(
        "data loss on {topic} partition {partition}: {reason} (set failOnDataLoss = false to warn and go on)"
    )]
    DataLoss {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// What was lost.
        reason: String,
    },
    /// A message did not decode and the job says `onError = "fail"`.
    #[error("{topic} partition {partition} offset {offset}: {reason} (onError = \"fail\")")]
    BadRecord {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The message's offset.
        offset: i64,
        /// Why it did not decode.
        reason: String,
    },
    /// A bug: an invariant did not hold.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<LakeError> for JobError {
    fn from(e: LakeError) -> Self {
        Self::Lake(Box::new(e))
    }
}

impl JobError {
    /// A Kafka error for `brokers` while doing `context`.
    pub fn kafka(
        brokers: &str,
        context: impl Into<String>,
        source: rdkafka::error::KafkaError,
    ) -> Self {
        Self::Kafka {
            brokers: brokers.to_string(),
            context: context.into(),
            source: Box::new(source),
        }
    }

    /// A SQL error in `file`.
    pub fn sql(file: impl Into<String>, source: datafusion::error::DataFusionError) -> Self {
        Self::Sql {
            file: file.into(),
            source: Box::new(source),
        }
    }

    /// A configuration error for `key`.
    pub fn config(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Config {
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// An internal error.
    pub fn internal(reason: String) -> Self {
        Self::Internal(reason)
    }

    /// A closure turning an Arrow error into a [`JobError::Arrow`] with `context`.
    pub fn arrow(context: &str) -> impl FnOnce(datafusion::arrow::error::ArrowError) -> Self + '_ {
        move |source| Self::Arrow {
            context: context.to_string(),
            source,
        }
    }

    /// Whose fault the error is.
    pub fn fault(&self) -> Fault {
        match self {
            Self::Config { .. } | Self::Sql { .. } => Fault::User,
            Self::Kafka { .. }
            | Self::Lake(_)
            | Self::Io { .. }
            | Self::Checkpoint { .. }
            | Self::DataLoss { .. }
            | Self::BadRecord { .. }
            | Self::Cancelled => Fault::External,
            Self::Arrow { .. } | Self::Internal(_) => Fault::Internal,
        }
    }
}

/// Result of streaming operations.
pub type Result<T, E = JobError> = std::result::Result<T, E>;
