//! The scoring stage of a micro-batch: the decoders of each source's declared schema, and the
//! source's scoring SQL run over the decoded rows, whose output is stamped with the batch id and
//! scoring time as `risk_scores` rows.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, TimestampMicrosecondArray};
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::decode::JsonDecoder;
use crate::error::{JobError, Result};
use crate::generator::Source;
use crate::schemas::{risk_scores_schema, source_schema};

/// A scoring query: where it came from (for error messages) and its text.
#[derive(Debug, Clone)]
pub struct ScoringQuery {
    /// The file the SQL is shipped in, relative to the repository root.
    pub file: &'static str,
    /// The SQL text.
    pub sql: &'static str,
}

/// The shipped scoring query of a source, compiled into the binary from `sql/scoring/`.
pub fn shipped_query(source: Source) -> ScoringQuery {
    match source {
        Source::Transactions => ScoringQuery {
            file: "sql/scoring/transactions.sql",
            sql: include_str!("../../sql/scoring/transactions.sql"),
        },
        Source::Claims => ScoringQuery {
            file: "sql/scoring/claims.sql",
            sql: include_str!("../../sql/scoring/claims.sql"),
        },
        Source::Telemetry => ScoringQuery {
            file: "sql/scoring/telemetry.sql",
            sql: include_str!("../../sql/scoring/telemetry.sql"),
        },
    }
}

/// The SQL table name a source's decoded events are visible under.
pub fn source_table(source: Source) -> &'static str {
    match source {
        Source::Transactions => "transactions",
        Source::Claims => "claims",
        Source::Telemetry => "telemetry",
    }
}

/// A DataFusion session with Riskstream's functions, shared by every batch of a job.
pub fn session() -> Result<SessionContext> {
    let config = SessionConfig::new()
        .with_target_partitions(2)
        .with_batch_size(8192);
    let mut ctx = SessionContext::new_with_config(config);
    riskstream_udfs::register_all(&mut ctx)
        .map_err(|source| JobError::sql("<function registry>", source))?;
    Ok(ctx)
}

/// Decodes and scores micro-batches of the three sources.
pub struct ScoringStage {
    ctx: SessionContext,
    decoders: [JsonDecoder; 3],
}

impl ScoringStage {
    /// A stage whose queries are checked against the declared schemas up front, so that bad SQL
    /// fails before the first batch, naming its file.
    pub async fn new() -> Result<Self> {
        let stage = Self {
            ctx: session()?,
            decoders: Source::ALL.map(|s| JsonDecoder::new(source_schema(s))),
        };
        for source in Source::ALL {
            stage.run_query(source, Vec::new()).await?;
        }
        Ok(stage)
    }

    async fn run_query(&self, source: Source, rows: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
        let query = shipped_query(source);
        let sql_err = |source| JobError::sql(query.file, source);
        let table = source_table(source);
        let mem = MemTable::try_new(source_schema(source), vec![rows]).map_err(sql_err)?;
        self.ctx.deregister_table(table).map_err(sql_err)?;
        self.ctx
            .register_table(table, Arc::new(mem))
            .map_err(sql_err)?;
        let out = self
            .ctx
            .sql(query.sql)
            .await
            .map_err(sql_err)?
            .collect()
            .await
            .map_err(sql_err);
        self.ctx.deregister_table(table).map_err(sql_err)?;
        out
    }

    /// The decoder of `source`'s declared schema.
    pub fn decoder(&self, source: Source) -> &JsonDecoder {
        &self.decoders[source as usize]
    }

    /// Scores decoded rows of `source`, giving `risk_scores` rows.
    pub async fn score(
        &self,
        source: Source,
        rows: Vec<RecordBatch>,
        batch_id: i64,
        scored_at_micros: i64,
    ) -> Result<Vec<RecordBatch>> {
        self.run_query(source, rows)
            .await?
            .iter()
            .filter(|b| b.num_rows() > 0)
            .map(|b| stamp(b, batch_id, scored_at_micros))
            .collect()
    }
}

/// Adds `batch_id` and `scored_at` to a scoring query's output, giving it `risk_scores`' schema.
fn stamp(batch: &RecordBatch, batch_id: i64, scored_at_micros: i64) -> Result<RecordBatch> {
    let n = batch.num_rows();
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    columns.push(Arc::new(Int64Array::from(vec![batch_id; n])));
    columns.push(Arc::new(
        TimestampMicrosecondArray::from(vec![scored_at_micros; n]).with_timezone("UTC"),
    ));
    RecordBatch::try_new(risk_scores_schema(), columns).map_err(JobError::arrow(
        "scoring output does not match the risk_scores columns",
    ))
}
