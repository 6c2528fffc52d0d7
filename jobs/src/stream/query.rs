//! The SQL of a job, run over each micro-batch: the batch's rows are registered as a view, the
//! query's output is what the sink appends. Checked against the input schema before the first
//! batch, so bad SQL fails at start, naming its file.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;

use crate::error::{JobError, Result};
use crate::stream::aggregate::{self, Aggregation};
use crate::stream::incremental::IncrementalPlan;
use crate::stream::rolling::{self, Windows};
use crate::stream::spec::OutputMode;

/// A query over one view, reused batch after batch.
pub struct BatchQuery {
    ctx: SessionContext,
    view: String,
    input: SchemaRef,
    file: String,
    sql: Option<String>,
    output: SchemaRef,
    /// How the query's window functions (if any) are evaluated.
    windows: WindowPath,
}

/// How a query's window functions are evaluated.
#[derive(Debug, Clone)]
enum WindowPath {
    /// No window functions.
    None,
    /// DataFusion's operator over a view with the emit column (`rolling.rs`).
    Generic,
    /// The engine computes them; the window operators are replaced by a scan of the result.
    Incremental(IncrementalPlan),
    /// A streaming aggregation over a view with the new-row column (`aggregate.rs`).
    Aggregate(OutputMode),
}

impl std::fmt::Debug for BatchQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchQuery")
            .field("view", &self.view)
            .field("file", &self.file)
            .finish()
    }
}

impl BatchQuery {
    /// A query reading `view` (rows of `input`) with `sql` from `file`; without SQL the rows pass
    /// through as they are. Plans the query once over no rows to check it and learn its output.
    pub async fn new(
        ctx: SessionContext,
        view: &str,
        input: SchemaRef,
        file: &str,
        sql: Option<String>,
    ) -> Result<Self> {
        let mut query = Self {
            ctx,
            view: view.to_string(),
            output: Arc::clone(&input),
            input,
            file: file.to_string(),
            // Read as Spark reads it, once (the text is planned again every batch).
            sql: sql.map(|s| riskstream_udfs::spark_sql(&s)),
            windows: WindowPath::None,
        };
        if query.sql.is_some() {
            let df = query.dataframe(Vec::new()).await?;
            query.output = Arc::new(df.schema().as_arrow().clone());
            query.release()?;
        }
        Ok(query)
    }

    /// The query's window functions, checked against the watermark column `time_column`;
    /// `None` when it has none.
    pub async fn windows(&self, time_column: Option<&str>) -> Result<Option<Windows>> {
        if self.sql.is_none() {
            return Ok(None);
        }
        let df = self.dataframe(Vec::new()).await?;
        let windows = rolling::analyze(df.logical_plan(), &self.view, time_column, &self.file);
        self.release()?;
        windows
    }

    /// The query's streaming aggregation (its GROUP BY over the view), checked for `mode` and
    /// the watermark column `time_column`; `None` when it does not aggregate.
    pub async fn aggregation(
        &self,
        time_column: Option<&str>,
        mode: OutputMode,
    ) -> Result<Option<Aggregation>> {
        if self.sql.is_none() {
            return Ok(None);
        }
        let df = self.dataframe(Vec::new()).await?;
        let found = aggregate::analyze(
            df.logical_plan(),
            &self.view,
            &self.input,
            time_column,
            mode,
            &self.file,
        );
        self.release()?;
        found
    }

    /// The same query as a streaming aggregation: its view gets the new-row column, and
    /// [`run_between`](Self::run_between) returns what the output mode writes.
    pub async fn with_aggregation(mut self, aggregation: &Aggregation) -> Result<Self> {
        self.input = crate::stream::rolling::with_flag(&self.input, aggregate::NEW_COLUMN);
        self.windows = WindowPath::Aggregate(aggregation.mode);
        let df = self.dataframe(Vec::new()).await?;
        self.output = Arc::new(df.schema().as_arrow().clone());
        self.release()?;
        Ok(self)
    }

    /// The incremental plan of the query's window functions, ordered by input column
    /// `time_index`, when some of them have the shape it evaluates (the others are its
    /// `rest`).
    pub async fn incremental_plan(&self, time_index: usize) -> Result<Option<IncrementalPlan>> {
        let (_, logical) = self.analyzed(self.dataframe(Vec::new()).await?)?;
        let plan = IncrementalPlan::try_new(&logical, &self.view, &self.input, time_index);
        self.release()?;
        Ok(plan)
    }

    /// The query's plan with types resolved, as the window rewrites need it: a plan rewritten
    /// before type coercion would recompute some output types wrongly.
    fn analyzed(
        &self,
        df: datafusion::dataframe::DataFrame,
    ) -> Result<(
        datafusion::execution::SessionState,
        datafusion::logical_expr::LogicalPlan,
    )> {
        let (state, plan) = df.into_parts();
        let plan = state
            .analyzer()
            .execute_and_check(plan, state.config_options(), |_, _| {})
            .map_err(self.sql_err())?;
        Ok((state, plan))
    }

    /// The same query with its window functions computed by the engine: `run` takes the emitted
    /// rows with their computed window columns (and, when the plan leaves some functions to
    /// the generic path, those rows staged by it: kept rows too, and the emit column).
    pub fn with_incremental(mut self, plan: IncrementalPlan) -> Self {
        self.windows = WindowPath::Incremental(plan);
        self
    }

    /// The same query over a stream with window functions: its view gets the emit column, and
    /// `run` returns only the rows it marks.
    pub async fn with_windows(mut self) -> Result<Self> {
        self.input = rolling::view_schema(&self.input);
        self.windows = WindowPath::Generic;
        let df = self.dataframe(Vec::new()).await?;
        let mut fields = df.schema().as_arrow().fields().to_vec();
        fields.retain(|f| f.name() != rolling::EMIT_COLUMN);
        self.output = Arc::new(datafusion::arrow::datatypes::Schema::new(fields));
        self.release()?;
        Ok(self)
    }

    /// The session the query runs in.
    pub fn session(&self) -> &SessionContext {
        &self.ctx
    }

    /// The schema of the rows the query produces.
    pub fn output_schema(&self) -> &SchemaRef {
        &self.output
    }

    /// The schema of the rows it reads.
    pub fn input_schema(&self) -> &SchemaRef {
        &self.input
    }

    fn sql_err(&self) -> impl Fn(datafusion::error::DataFusionError) -> JobError + '_ {
        |source| JobError::sql(&self.file, source)
    }

    async fn dataframe(&self, rows: Vec<RecordBatch>) -> Result<datafusion::dataframe::DataFrame> {
        let mem = MemTable::try_new(Arc::clone(&self.input), vec![rows]).map_err(self.sql_err())?;
        self.ctx
            .deregister_table(&self.view)
            .map_err(self.sql_err())?;
        self.ctx
            .register_table(&self.view, Arc::new(mem))
            .map_err(self.sql_err())?;
        let sql = self.sql.as_deref().unwrap_or_default();
        let df = self.ctx.sql(sql).await.map_err(self.sql_err())?;
        if !matches!(self.windows, WindowPath::Generic) {
            return Ok(df);
        }
        let (state, plan) = self.analyzed(df)?;
        let plan = rolling::carry_emit_column(plan)?;
        Ok(datafusion::dataframe::DataFrame::new(state, plan))
    }

    fn release(&self) -> Result<()> {
        self.ctx
            .deregister_table(&self.view)
            .map_err(self.sql_err())?;
        Ok(())
    }

    /// Runs the aggregation over this batch's `rows` and the groups' partial aggregates in
    /// `state` (see [`run_between`](Self::run_between) for `watermarks`).
    pub async fn run_partial(
        &self,
        rows: Vec<RecordBatch>,
        watermarks: (i64, i64),
        state: &mut crate::stream::partial::PartialState,
    ) -> Result<Vec<RecordBatch>> {
        let WindowPath::Aggregate(mode) = self.windows else {
            return Err(JobError::internal(
                "partial aggregates without an aggregation".into(),
            ));
        };
        let (session, logical) = self.analyzed(self.dataframe(rows).await?)?;
        let logical = state.run(&session, logical, mode, watermarks).await;
        let out = match logical {
            Ok(plan) => datafusion::dataframe::DataFrame::new(session, plan)
                .collect()
                .await
                .map_err(self.sql_err()),
            Err(e) => Err(e),
        };
        self.release()?;
        Ok(out?.into_iter().filter(|b| b.num_rows() > 0).collect())
    }

    /// Runs the query over `rows`.
    pub async fn run(&self, rows: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
        self.run_between(rows, (i64::MIN, i64::MAX)).await
    }

    /// Runs the query over `rows` of a batch that runs with the watermark `watermarks.0` and
    /// leaves `watermarks.1` for the next (ms): an aggregation in append mode writes the
    /// windows that closed in between.
    pub async fn run_between(
        &self,
        rows: Vec<RecordBatch>,
        watermarks: (i64, i64),
    ) -> Result<Vec<RecordBatch>> {
        if self.sql.is_none() {
            return Ok(rows);
        }
        let df = match &self.windows {
            WindowPath::Aggregate(mode) => {
                let (state, logical) = self.analyzed(self.dataframe(rows).await?)?;
                let logical = aggregate::emitting(logical, *mode, watermarks)?;
                datafusion::dataframe::DataFrame::new(state, logical)
            }
            // The view is only there for planning: the window operators read `rows`.
            WindowPath::Incremental(plan) => {
                let (state, logical) = self.analyzed(self.dataframe(Vec::new()).await?)?;
                let mut logical = plan.replace_windows(logical, rows)?;
                if !plan.rest().is_empty() {
                    // The generic path's operators run over kept rows too: only marked rows
                    // are this batch's.
                    logical = rolling::carry_emit_column(logical)?;
                }
                datafusion::dataframe::DataFrame::new(state, logical)
            }
            _ => self.dataframe(rows).await?,
        };
        let out = df.collect().await.map_err(self.sql_err());
        self.release()?;
        let out: Vec<RecordBatch> = out?.into_iter().filter(|b| b.num_rows() > 0).collect();
        match &self.windows {
            WindowPath::Generic => rolling::emitted(out),
            WindowPath::Incremental(plan) if !plan.rest().is_empty() => rolling::emitted(out),
            _ => Ok(out),
        }
    }
}

/// Adds the batch's columns to a query's output: the batch id and then the processing time (µs
/// since the epoch, UTC), each when given, giving rows of `schema`.
pub fn add_batch_columns(
    batch: &RecordBatch,
    schema: &SchemaRef,
    batch_id: Option<i64>,
    processing_time_micros: Option<i64>,
) -> Result<RecordBatch> {
    use datafusion::arrow::array::{ArrayRef, Int64Array, TimestampMicrosecondArray};
    let n = batch.num_rows();
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    if let Some(id) = batch_id {
        columns.push(Arc::new(Int64Array::from(vec![id; n])));
    }
    if let Some(ts) = processing_time_micros {
        columns.push(Arc::new(
            TimestampMicrosecondArray::from(vec![ts; n]).with_timezone("UTC"),
        ));
    }
    RecordBatch::try_new(Arc::clone(schema), columns).map_err(JobError::arrow(
        "the query's output does not match the sink table's columns",
    ))
}
