//! A SQL predicate over a job's rows, as `[alerts] where` and `[block] where` give it (parsed
//! and checked against the output's schema once) or as a WHERE below a query's windows does,
//! evaluated on every batch.

use std::sync::Arc;

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::DFSchema;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;

use crate::error::{JobError, Result};

/// A compiled predicate and the spec key it came from.
#[derive(Debug)]
pub struct RowFilter {
    predicate: Arc<dyn PhysicalExpr>,
    key: String,
}

impl RowFilter {
    /// `sql`, a boolean expression over `schema`'s columns; errors name `key`.
    pub fn new(sql: &str, schema: &SchemaRef, ctx: &SessionContext, key: String) -> Result<Self> {
        let bad =
            |e: datafusion::error::DataFusionError| JobError::config(key.clone(), e.to_string());
        let df_schema = DFSchema::try_from(Arc::clone(schema)).map_err(bad)?;
        let expr = ctx.parse_sql_expr(sql, &df_schema).map_err(bad)?;
        let predicate = ctx.create_physical_expr(expr, &df_schema).map_err(bad)?;
        let returns = predicate.data_type(schema).map_err(bad)?;
        if returns != DataType::Boolean {
            return Err(JobError::config(
                key,
                format!("`{sql}` is {returns}, not a boolean"),
            ));
        }
        Ok(Self { predicate, key })
    }

    /// A predicate already planned (such as a query's WHERE); errors name `key`.
    pub fn planned(predicate: Arc<dyn PhysicalExpr>, key: String) -> Self {
        Self { predicate, key }
    }

    /// The rows of `batches` the predicate holds for (a null is false), without empty batches.
    pub fn select(&self, batches: &[RecordBatch]) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        for batch in batches {
            let mask = self
                .predicate
                .evaluate(batch)
                .and_then(|v| v.into_array(batch.num_rows()))
                .map_err(|source| JobError::sql(&self.key, source))?;
            let selected = filter_record_batch(batch, mask.as_boolean())
                .map_err(JobError::arrow("selecting rows"))?;
            if selected.num_rows() > 0 {
                out.push(selected);
            }
        }
        Ok(out)
    }
}
