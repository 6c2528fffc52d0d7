//! Riskstream's streaming room: the event generators, Kafka plumbing, Spark's Kafka record
//! columns built in process, JSON decoding with dead letters, the scoring stage, and the embedded
//! demo job.

pub mod decode;
pub mod demo;
pub mod error;
pub mod generate;
pub mod generator;
pub mod kafka;
pub mod lake_sink;
pub mod records;
pub mod schemas;
pub mod scoring;
pub mod stream;

pub use error::{Fault, JobError, Result};
