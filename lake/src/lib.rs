//! The lake: where Delta tables live (a local folder or an `s3://` prefix on S3 or MinIO), how
//! micro-batches are appended exactly once, and the catalog that names every table under a root.
//!
//! Nothing here knows about streaming jobs: the runner hands over record batches and a
//! `(query id, batch id)` pair, and this crate makes the append idempotent.

mod catalog;
mod codec;
mod error;
mod folder;
mod latest;
mod location;
mod maintenance;
mod models;
mod schema;
mod writer;

pub use catalog::{Catalog, TableEntry};
pub use codec::Codec;
pub use error::{LakeError, Result};
pub use folder::Folder;
pub use latest::LatestTable;
pub use location::LakeLocation;
pub use maintenance::{
    OptimizeOptions, OptimizeReport, VacuumReport, checkpoint, optimize, vacuum,
};
pub use models::{MODELS_FOLDER, ModelRegistry, ModelRole};
pub use schema::{Commit, LakeSchema, TableVersion};
pub use writer::{AppendOutcome, DeltaAppender, TableSpec};

/// Re-exported so that callers use the exact arrow and DataFusion versions deltalake is built with.
pub use deltalake::arrow;
/// See [`arrow`].
pub use deltalake::datafusion;
/// See [`arrow`]: the object store API the lake and checkpoints are reached through.
pub use deltalake::logstore::object_store;
