//! The scoring stage of a micro-batch: the decoders of each source's declared schema, and the
//! source's scoring SQL run over the decoded rows, whose output is stamped with the batch id and
//! scoring time as `risk_scores` rows.

use datafusion::arrow::array::RecordBatch;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::decode::JsonDecoder;
use crate::error::{JobError, Result};
use crate::generator::Source;
use crate::schemas::{risk_scores_schema, source_schema};
use crate::stream::query::{BatchQuery, add_batch_columns};

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
    riskstream_udfs::model::evaluate_functions_once(&ctx);
    Ok(ctx)
}

/// Decodes and scores micro-batches of the three sources.
pub struct ScoringStage {
    queries: Vec<BatchQuery>,
    decoders: [JsonDecoder; 3],
}

impl ScoringStage {
    /// A stage whose queries are checked against the declared schemas up front, so that bad SQL
    /// fails before the first batch, naming its file.
    pub async fn new() -> Result<Self> {
        let ctx = session()?;
        let mut queries = Vec::new();
        for source in Source::ALL {
            let query = shipped_query(source);
            queries.push(
                BatchQuery::new(
                    ctx.clone(),
                    source_table(source),
                    source_schema(source),
                    query.file,
                    Some(query.sql.to_string()),
                )
                .await?,
            );
        }
        Ok(Self {
            queries,
            decoders: [
                JsonDecoder::new(source_schema(Source::Transactions))?,
                JsonDecoder::new(source_schema(Source::Claims))?,
                JsonDecoder::new(source_schema(Source::Telemetry))?,
            ],
        })
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
        let schema = risk_scores_schema();
        self.queries[source as usize]
            .run(rows)
            .await?
            .iter()
            .map(|b| add_batch_columns(b, &schema, Some(batch_id), Some(scored_at_micros)))
            .collect()
    }
}
