//! Errors of the query service, each saying what was asked and why it was refused.

use riskstream_lake::LakeError;
use riskstream_lake::datafusion::error::DataFusionError;

/// A query or a server setting that failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The lake could not be listed or a table read.
    #[error(transparent)]
    Lake(#[from] LakeError),
    /// The SQL does not parse or plan (the message names the table or column).
    #[error("{message}")]
    Sql {
        /// What is wrong, with the planner's words.
        message: String,
    },
    /// A statement that would change something: the lake is served read-only.
    #[error(
        "read-only: {what} is refused; the lake is served for queries (SELECT, EXPLAIN, SHOW, DESCRIBE)"
    )]
    ReadOnly {
        /// The kind of statement, as the planner names it.
        what: String,
    },
    /// Running a planned query failed.
    #[error("query failed: {0}")]
    Execution(#[from] DataFusionError),
    /// A setting of `riskstream serve` is wrong.
    #[error("{file}: `{key}`: {message}")]
    Config {
        /// The config file (or `--flag`).
        file: String,
        /// The key.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// Reading a file or binding a socket failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, naming the path or address.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Result of the query service.
pub type Result<T, E = QueryError> = std::result::Result<T, E>;
