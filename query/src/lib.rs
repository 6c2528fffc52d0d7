//! The lake as a query service: a SQL session over every Delta table under a root (Spark's and
//! Delta's SQL: time travel, `DESCRIBE HISTORY`; read-only), and the Arrow Flight SQL server
//! that BI tools connect to. `riskstream sql` and `riskstream serve` both query through
//! [`LakeSession`], so they give the same answers.

pub mod dialect;
mod error;
pub mod flight;
mod session;

pub use error::{QueryError, Result};
pub use session::{CATALOG, LakeSession, SCHEMA};
