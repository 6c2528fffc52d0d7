//! The SQL session every job (and `riskstream model predict`) runs its queries in.

use datafusion::prelude::{SessionConfig, SessionContext};

use crate::error::{JobError, Result};

/// A DataFusion session with Riskstream's functions, shared by every batch of a job.
pub fn session() -> Result<SessionContext> {
    let config = SessionConfig::new()
        .with_target_partitions(2)
        .with_batch_size(8192);
    let mut ctx = SessionContext::new_with_config(config);
    riskstream_udfs::register_all(&mut ctx)
        .map_err(|source| JobError::sql("<function registry>", source))?;
    riskstream_udfs::model::evaluate_functions_once(&ctx);
    Ok(ctx)
}
