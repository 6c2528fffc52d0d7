//! The scoring jobs' tables in the lake, appended once per micro-batch with the batch id as the
//! Delta `txn` version, so a replayed batch writes nothing twice.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, SchemaRef};
use riskstream_lake::{AppendOutcome, DeltaAppender, LakeLocation, TableSpec};

use crate::error::Result;
use crate::schemas::{dead_letters_schema, labels_schema, risk_scores_schema};

/// Name of the scores table.
pub const RISK_SCORES: &str = "risk_scores";
/// Name of the dead-letter table.
pub const DEAD_LETTERS: &str = "dead_letters";
/// Name of the labels table.
pub const FRAUD_LABELS: &str = "fraud_labels";

/// The rows one micro-batch adds to each table.
#[derive(Debug, Default)]
pub struct BatchOutput {
    /// `risk_scores` rows.
    pub risk_scores: Vec<RecordBatch>,
    /// `dead_letters` rows.
    pub dead_letters: Vec<RecordBatch>,
    /// `fraud_labels` rows.
    pub fraud_labels: Vec<RecordBatch>,
}

/// What committing one micro-batch did, per table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchCommit {
    /// `risk_scores`.
    pub risk_scores: AppendOutcome,
    /// `dead_letters`.
    pub dead_letters: AppendOutcome,
    /// `fraud_labels`.
    pub fraud_labels: AppendOutcome,
}

impl BatchCommit {
    /// True when every table already held the batch (a replay).
    pub fn was_replay(&self) -> bool {
        [self.risk_scores, self.dead_letters, self.fraud_labels]
            .iter()
            .all(|o| matches!(o, AppendOutcome::AlreadyCommitted | AppendOutcome::Empty))
            && [self.risk_scores, self.dead_letters, self.fraud_labels]
                .contains(&AppendOutcome::AlreadyCommitted)
    }
}

/// The spec of a table named `name` holding rows of `schema`: statistics on every column but raw
/// binary payloads (Delta keeps none for them), and Delta's defaults otherwise.
pub fn table_spec(name: &str, schema: SchemaRef, partition_by: Vec<String>) -> TableSpec {
    let binary = |f: &Arc<Field>| f.data_type() == &DataType::Binary;
    let has_binary = schema.fields().iter().any(binary);
    TableSpec {
        name: name.to_string(),
        partition_by,
        stats_columns: has_binary.then(|| {
            schema
                .fields()
                .iter()
                .filter(|f| !binary(f))
                .map(|f| f.name().clone())
                .collect()
        }),
        schema,
        merge_schema: false,
        checkpoint_interval: None,
    }
}

/// The three tables of a scoring job.
pub struct ScoringTables {
    risk_scores: DeltaAppender,
    dead_letters: DeltaAppender,
    fraud_labels: DeltaAppender,
}

impl ScoringTables {
    /// Opens (creating when missing) the tables under `lake`.
    pub async fn open(lake: &LakeLocation) -> Result<Self> {
        let spec = |name: &str, schema: SchemaRef, partition_by: &[&str]| {
            let partition_by: Vec<String> = partition_by.iter().map(|s| s.to_string()).collect();
            table_spec(name, schema, partition_by)
        };
        Ok(Self {
            risk_scores: DeltaAppender::open_or_create(
                lake,
                spec(RISK_SCORES, risk_scores_schema(), &["event_type"]),
            )
            .await?,
            dead_letters: DeltaAppender::open_or_create(
                lake,
                spec(DEAD_LETTERS, dead_letters_schema(), &[]),
            )
            .await?,
            fraud_labels: DeltaAppender::open_or_create(
                lake,
                spec(FRAUD_LABELS, labels_schema(), &[]),
            )
            .await?,
        })
    }

    /// Appends one micro-batch's rows, each table's commit carrying `txn(app_id, batch_id)`.
    pub async fn commit(
        &mut self,
        app_id: &str,
        batch_id: i64,
        output: BatchOutput,
    ) -> Result<BatchCommit> {
        Ok(BatchCommit {
            risk_scores: self
                .risk_scores
                .append(output.risk_scores, app_id, batch_id)
                .await?,
            dead_letters: self
                .dead_letters
                .append(output.dead_letters, app_id, batch_id)
                .await?,
            fraud_labels: self
                .fraud_labels
                .append(output.fraud_labels, app_id, batch_id)
                .await?,
        })
    }
}
