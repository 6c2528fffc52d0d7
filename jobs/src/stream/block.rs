//! The automated response (`[block]`): the entities of a batch's output rows that match the
//! spec's predicate are appended to a blocklist Delta table, exactly once, with the batch's other
//! tables. A scoring query reads the table back through `[query] tables`, so from the next batch
//! on an entity's events can see that it is blocked. Unblocking is deleting its rows.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, TimestampMicrosecondArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::prelude::SessionContext;
use riskstream_lake::{AppendOutcome, DeltaAppender};

use crate::error::{JobError, Result};
use crate::lake_sink::{table_location, table_spec};
use crate::schemas::blocked_entities_schema;
use crate::stream::row_filter::RowFilter;
use crate::stream::spec::BlockSpec;

/// The columns a blocklist row takes from the output row that blocked its entity.
const FROM_OUTPUT: [&str; 7] = [
    "entity_id",
    "event_type",
    "event_id",
    "event_time",
    "risk_score",
    "severity",
    "reasons",
];

/// A job's blocklist sink.
pub struct BlockSink {
    filter: RowFilter,
    /// The output's index of each of `FROM_OUTPUT`.
    columns: Vec<usize>,
    table: DeltaAppender,
}

impl BlockSink {
    /// Checks the predicate and the columns against the output `schema` and opens (or creates)
    /// the table. `key` names the spec's section in errors.
    pub async fn open(
        spec: &BlockSpec,
        schema: &SchemaRef,
        ctx: &SessionContext,
        checkpoint_interval: u64,
        key: impl Fn(&str) -> String,
    ) -> Result<Self> {
        let filter = RowFilter::new(&spec.filter, schema, ctx, key("where"))?;
        let wanted = blocked_entities_schema();
        let columns = FROM_OUTPUT
            .iter()
            .map(|name| {
                let at = schema.index_of(name).map_err(|_| {
                    JobError::config(
                        key("where"),
                        format!("blocking needs the output column `{name}`, which the query lacks"),
                    )
                })?;
                let to = wanted
                    .field_with_name(name)
                    .map_err(JobError::arrow("blocked_entities"))?;
                let from = schema.field(at).data_type();
                if !datafusion::arrow::compute::can_cast_types(from, to.data_type()) {
                    return Err(JobError::config(
                        key("where"),
                        format!("output column `{name}` is {from}, not {}", to.data_type()),
                    ));
                }
                Ok(at)
            })
            .collect::<Result<Vec<_>>>()?;
        let table = open_table(&spec.path, checkpoint_interval, &key("path")).await?;
        Ok(Self {
            filter,
            columns,
            table,
        })
    }

    /// The blocklist rows of `output` (the rows the job writes, batch columns included).
    pub fn rows(
        &self,
        output: &[RecordBatch],
        batch_id: i64,
        processing_micros: i64,
    ) -> Result<Vec<RecordBatch>> {
        let schema = blocked_entities_schema();
        let mut out = Vec::new();
        for selected in self.filter.select(output)? {
            let n = selected.num_rows();
            let mut columns = Vec::with_capacity(schema.fields().len());
            for (&at, field) in self.columns.iter().zip(schema.fields()) {
                columns.push(
                    cast(selected.column(at), field.data_type())
                        .map_err(JobError::arrow("blocked_entities"))?,
                );
            }
            let blocked_at: ArrayRef = Arc::new(
                TimestampMicrosecondArray::from(vec![processing_micros; n]).with_timezone("UTC"),
            );
            columns.push(blocked_at);
            columns.push(Arc::new(Int64Array::from(vec![batch_id; n])));
            out.push(
                RecordBatch::try_new(Arc::clone(&schema), columns)
                    .map_err(JobError::arrow("blocked_entities"))?,
            );
        }
        Ok(out)
    }

    /// Appends a batch's rows, once per (query, batch).
    pub async fn append(
        &mut self,
        rows: Vec<RecordBatch>,
        query_id: &str,
        batch_id: i64,
    ) -> Result<AppendOutcome> {
        Ok(self.table.append(rows, query_id, batch_id).await?)
    }
}

/// Opens the blocklist table at `path`, creating it when missing.
pub async fn open_table(path: &str, checkpoint_interval: u64, key: &str) -> Result<DeltaAppender> {
    let (lake, name) = table_location(path, key)?;
    let mut spec = table_spec(&name, blocked_entities_schema(), Vec::new());
    spec.checkpoint_interval = Some(checkpoint_interval);
    Ok(DeltaAppender::open_or_create(&lake, spec).await?)
}
