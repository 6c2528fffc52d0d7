//! Errors of the lake, saying which table or location was involved.

/// Something went wrong reading or writing the lake.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    /// The lake root or a table location is not a usable path or URL.
    #[error("bad lake location `{location}`: {reason}")]
    Location {
        /// What the user gave.
        location: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// A Delta operation on a table failed.
    #[error("Delta table `{table}`: {source}")]
    Delta {
        /// The table's name or location.
        table: String,
        /// The underlying error.
        #[source]
        source: Box<deltalake::DeltaTableError>,
    },
    /// Listing or reading the object store failed.
    #[error("object store at `{location}`: {source}")]
    Store {
        /// The location being listed or read.
        location: String,
        /// The underlying error.
        #[source]
        source: Box<deltalake::ObjectStoreError>,
    },
    /// A request about a table that cannot be met as asked.
    #[error("table `{table}`: {reason}")]
    Table {
        /// The table.
        table: String,
        /// What is wrong.
        reason: String,
    },
    /// A query or command named a table that is not under the lake root.
    #[error("no table `{table}` under {root} (tables: {known})")]
    NoSuchTable {
        /// The name asked for.
        table: String,
        /// The lake root.
        root: String,
        /// The tables that are there, comma separated.
        known: String,
    },
    /// A model registry request that cannot be met.
    #[error("model `{model}`: {reason}")]
    Model {
        /// The model (`name` or `name/version`).
        model: String,
        /// What is wrong.
        reason: String,
    },
    /// Registering a table with DataFusion failed.
    #[error("registering table `{table}`: {source}")]
    DataFusion {
        /// The table's name.
        table: String,
        /// The underlying error.
        #[source]
        source: Box<deltalake::datafusion::error::DataFusionError>,
    },
}

impl LakeError {
    /// Wraps a Delta error of `table`, for `map_err`.
    pub fn delta(table: &str) -> impl Fn(deltalake::DeltaTableError) -> LakeError + '_ {
        move |source| LakeError::Delta {
            table: table.to_string(),
            source: Box::new(source),
        }
    }
}

/// Result of lake operations.
pub type Result<T, E = LakeError> = std::result::Result<T, E>;
