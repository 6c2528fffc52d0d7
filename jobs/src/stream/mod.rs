//! Streaming jobs: the job spec (`riskstream run JOB.toml`), offset planning, the checkpoint
//! (Spark's layout), the micro-batch runner, event-time watermarks, rolling windows, streaming
//! aggregation, progress reports, and the registry's models served to the SQL.

pub mod aggregate;
pub mod alerts;
mod arrival;
pub mod block;
pub mod checkpoint;
mod commit;
pub mod incremental;
pub mod models;
pub mod offsets;
pub mod partial;
pub mod progress;
pub mod query;
pub mod rolling;
pub mod row_filter;
pub mod runner;
mod running;
pub mod scores;
pub mod source;
pub mod spec;
pub mod tables;
pub mod watermark;

#[cfg(test)]
mod engine_tests;
#[cfg(test)]
mod nexmark_tests;
