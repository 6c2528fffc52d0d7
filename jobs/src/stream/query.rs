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

    /// The columns of the view the query needs (ascending indexes of its input): those the
    /// optimizer's projection reads in every scan of the view, and those the SQL's text names
    /// (an unused one must still be there for the SQL to plan: a view that passes on `*` while
    /// the query names a column it does not use); `None` when it needs all of them or passes
    /// its rows through.
    pub async fn read_columns(&self) -> Result<Option<Vec<usize>>> {
        use datafusion::common::tree_node::TreeNodeRecursion;
        use datafusion::logical_expr::LogicalPlan;
        let Some(sql) = &self.sql else {
            return Ok(None);
        };
        let named = named_words(sql, &self.file)?;
        let mut needed: std::collections::BTreeSet<usize> = (0..self.input.fields().len())
            .filter(|&i| named.contains(self.input.field(i).name()))
            .collect();
        let df = self.dataframe(Vec::new()).await?;
        let optimized = df.into_optimized_plan();
        self.release()?;
        let mut all = false;
        optimized
            .map_err(self.sql_err())?
            .apply_with_subqueries(|node| {
                if let LogicalPlan::TableScan(scan) = node
                    && scan.table_name.table() == self.view
                {
                    match &scan.projection {
                        Some(columns) => needed.extend(columns.iter().copied()),
                        None => all = true,
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            })
            .map_err(self.sql_err())?;
        Ok(
            (!all && needed.len() < self.input.fields().len())
                .then(|| needed.into_iter().collect()),
        )
    }

    /// The same query over an input of fewer columns (those it reads); before any of the
    /// stateful paths is chosen.
    pub async fn narrowed(mut self, input: SchemaRef) -> Result<Self> {
        if !matches!(self.windows, WindowPath::None) {
            return Err(JobError::internal(
                "a query is narrowed before its window path is chosen".into(),
            ));
        }
        self.input = input;
        if self.sql.is_some() {
            let df = self.dataframe(Vec::new()).await?;
            let output = df.schema().as_arrow().clone();
            self.release()?;
            if output != *self.output {
                return Err(JobError::internal(format!(
                    "{}: the query's output changed when it read only its columns",
                    self.file
                )));
            }
        }
        Ok(self)
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
        )
        .and_then(|found| match found {
            // Whether its rows go per pane is decided on the plan each batch runs.
            Some(mut aggregation) if aggregation.partial => {
                let (_, logical) = self.analyzed(df)?;
                if let Some(window) = crate::stream::partial::pane_window(&logical, &self.view)? {
                    aggregation.explain_panes(&window);
                }
                Ok(Some(aggregation))
            }
            other => Ok(other),
        });
        self.release()?;
        found
    }

    /// The same query as a streaming aggregation: its view gets the new-row column, and
    /// [`run_between`](Self::run_between) returns what the output mode writes.
    pub async fn with_aggregation(mut self, aggregation: &Aggregation) -> Result<Self> {
        self.input = crate::stream::rolling::with_flag(&self.input, aggregate::NEW_COLUMN);
        self.windows = WindowPath::Aggregate(aggregation.mode);
        // One partition: a batch's rows are one in-memory partition, and splitting them by
        // group hash for two aggregating threads cost more than it gave while the other core
        // decodes the next batch (BENCHMARKS.md, "One partition for streaming aggregations").
        self.ctx
            .state_ref()
            .write()
            .config_mut()
            .options_mut()
            .execution
            .target_partitions = 1;
        let df = self.dataframe(Vec::new()).await?;
        self.output = Arc::new(df.schema().as_arrow().clone());
        self.release()?;
        Ok(self)
    }

    /// The incremental plan of the query's window functions, ordered by input column
    /// `time_index`, when some of them have the shape it evaluates (the others are its
    /// `rest`); otherwise why not.
    pub async fn incremental_plan(
        &self,
        time_index: usize,
    ) -> Result<std::result::Result<IncrementalPlan, String>> {
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
        let logical = state
            .run(&session, logical, &self.view, mode, watermarks)
            .await;
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

    /// The rows the window state takes of a batch's `rows`: the rows themselves, or, when the
    /// windows read a join of the stream with tables beside it, the rows joined (those tables
    /// as this batch reads them).
    pub async fn arriving(&self, rows: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
        let WindowPath::Incremental(plan) = &self.windows else {
            return Ok(rows);
        };
        let Some(flat) = plan.joined_input().cloned() else {
            return Ok(rows);
        };
        let (state, logical) = self.analyzed(self.dataframe(rows).await?)?;
        let out = match plan.joined_rows(&logical) {
            Some(Ok(joined)) => datafusion::dataframe::DataFrame::new(state, joined)
                .collect()
                .await
                .map_err(self.sql_err()),
            Some(Err(e)) => Err(e),
            None => Err(JobError::internal("no join below the windows".into())),
        };
        self.release()?;
        out?.into_iter()
            .filter(|b| b.num_rows() > 0)
            .map(|b| {
                RecordBatch::try_new(Arc::clone(&flat), b.columns().to_vec())
                    .map_err(JobError::arrow("the joined events"))
            })
            .collect()
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
                let logical = aggregate::emitting(logical, &self.view, *mode, watermarks)?;
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

/// Every word of `sql` that could name a column, as the planner reads it: unquoted words in
/// lower case (DataFusion folds them), quoted ones as they are. Keywords and function names
/// come along; a column of that name is kept for nothing, which costs only its decoding.
fn named_words(sql: &str, file: &str) -> Result<std::collections::HashSet<String>> {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize()
        .map_err(|e| {
            JobError::sql(
                file,
                datafusion::error::DataFusionError::SQL(Box::new(e.into()), None),
            )
        })?;
    Ok(tokens
        .into_iter()
        .filter_map(|t| match t {
            Token::Word(w) if w.quote_style.is_none() => Some(w.value.to_lowercase()),
            Token::Word(w) => Some(w.value),
            _ => None,
        })
        .collect())
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

#[cfg(test)]
#[expect(clippy::unwrap_used)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    async fn read_by(sql: &str) -> Option<Vec<usize>> {
        let input = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Utf8, false),
            Field::new("b", DataType::Int64, true),
            Field::new("c", DataType::Float64, true),
            Field::new("d", DataType::Utf8, true),
        ]));
        let ctx = crate::scoring::session().unwrap();
        let query = BatchQuery::new(ctx, "t", input, "q.sql", Some(sql.into()))
            .await
            .unwrap();
        query.read_columns().await.unwrap()
    }

    /// The plan output says a sliding window's rows go per pane exactly when the partial
    /// aggregation takes them so: not for a tumbling window, nor when an aggregate reads the
    /// window (each row's own windows are needed then).
    #[tokio::test]
    async fn the_plan_says_when_a_sliding_windows_rows_go_per_pane() {
        let input = crate::schemas::source_schema(crate::generator::Source::Transactions);
        let cases = [
            (
                "SELECT user_id, window.end, count(*), avg(amount) FROM transactions \
                 GROUP BY user_id, window(event_time, '10 minutes', '4 minutes')",
                Some("per 120000000 us pane"),
            ),
            (
                "SELECT user_id, window.end, count(*) FROM transactions \
                 GROUP BY user_id, window(event_time, '1 minute')",
                None,
            ),
            (
                "SELECT user_id, count(*), max(window.start) AS s FROM transactions \
                 GROUP BY user_id, window(event_time, '10 minutes', '5 minutes')",
                None,
            ),
        ];
        for (sql, pane) in cases {
            let ctx = crate::scoring::session().unwrap();
            let query = BatchQuery::new(
                ctx,
                "transactions",
                Arc::clone(&input),
                "q.sql",
                Some(sql.into()),
            )
            .await
            .unwrap();
            let aggregation = query
                .aggregation(Some("event_time"), crate::stream::spec::OutputMode::Update)
                .await
                .unwrap()
                .unwrap();
            assert!(aggregation.partial, "{sql}");
            let line = aggregation.explain.iter().find(|l| l.contains("pane"));
            match pane {
                Some(text) => assert!(line.is_some_and(|l| l.contains(text)), "{sql}: {line:?}"),
                None => assert_eq!(line, None, "{sql}"),
            }
        }
    }

    /// A streaming aggregation over the stream joined with a GROUP BY of a table read beside
    /// it: only the stream's aggregation is kept (as partials, or as the groups' rows) and
    /// merged; the table's runs whole, as planned.
    #[tokio::test]
    async fn a_grouped_table_beside_a_streaming_aggregation_is_aggregated_whole() {
        use crate::stream::aggregate::AggregateState;
        use datafusion::arrow::array::{
            AsArray, Float64Array, StringArray, TimestampMicrosecondArray,
        };
        use datafusion::arrow::datatypes::{Float64Type, Int64Type, TimeUnit};

        let merchants = Arc::new(Schema::new(vec![
            Field::new("merchant_id", DataType::Utf8, false),
            Field::new("risk", DataType::Float64, false),
        ]));
        let table = RecordBatch::try_new(
            Arc::clone(&merchants),
            vec![
                Arc::new(StringArray::from(vec!["m1", "m1", "m2"])),
                Arc::new(Float64Array::from(vec![0.5, 0.7, 0.1])),
            ],
        )
        .unwrap();
        let utc = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let input = Arc::new(Schema::new(vec![
            Field::new("user_id", DataType::Utf8, false),
            Field::new("merchant_id", DataType::Utf8, false),
            Field::new("amount", DataType::Float64, false),
            Field::new("event_time", utc, false),
        ]));
        let rows = RecordBatch::try_new(
            Arc::clone(&input),
            vec![
                Arc::new(StringArray::from(vec!["u1", "u1", "u2"])),
                Arc::new(StringArray::from(vec!["m1", "m2", "m1"])),
                Arc::new(Float64Array::from(vec![10.0, 5.0, 1.0])),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![0, 1_000_000, 2_000_000])
                        .with_timezone("UTC"),
                ),
            ],
        )
        .unwrap();
        // COUNT(*) keeps partials; a distinct count keeps the groups' rows.
        for (count, partial) in [("count(*)", true), ("count(DISTINCT t.amount)", false)] {
            let ctx = crate::scoring::session().unwrap();
            let side = datafusion::datasource::MemTable::try_new(
                Arc::clone(&merchants),
                vec![vec![table.clone()]],
            )
            .unwrap();
            ctx.register_table("merchants", Arc::new(side)).unwrap();
            let sql = format!(
                "SELECT t.user_id, {count} AS n, sum(t.amount) AS spend, max(r.top) AS top \
                 FROM t JOIN (SELECT merchant_id, max(risk) AS top FROM merchants \
                 GROUP BY merchant_id) r ON t.merchant_id = r.merchant_id \
                 GROUP BY t.user_id, window(t.event_time, '1 minute')"
            );
            let query = BatchQuery::new(ctx, "t", Arc::clone(&input), "q.sql", Some(sql))
                .await
                .unwrap();
            let aggregation = query
                .aggregation(Some("event_time"), OutputMode::Update)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(aggregation.partial, partial, "{count}");
            let query = query.with_aggregation(&aggregation).await.unwrap();
            let mut state = AggregateState::new(Arc::clone(&input), &aggregation);
            let staged = state.stage(vec![rows.clone()], 0).unwrap();
            let out = match state.partial.as_mut() {
                Some(partials) => query.run_partial(staged, (0, 0), partials).await,
                None => query.run_between(staged, (0, 0)).await,
            }
            .unwrap();
            let out = datafusion::arrow::compute::concat_batches(&out[0].schema(), &out).unwrap();
            let mut got: Vec<(String, i64, f64, f64)> = (0..out.num_rows())
                .map(|i| {
                    (
                        out.column(0).as_string::<i32>().value(i).to_string(),
                        out.column(1).as_primitive::<Int64Type>().value(i),
                        out.column(2).as_primitive::<Float64Type>().value(i),
                        out.column(3).as_primitive::<Float64Type>().value(i),
                    )
                })
                .collect();
            got.sort_by(|a, b| a.0.cmp(&b.0));
            assert_eq!(
                got,
                [("u1".into(), 2, 15.0, 0.7), ("u2".into(), 1, 1.0, 0.7)],
                "{count}"
            );
        }
    }

    /// The columns a query reads are those of every scan of its view: in subqueries and
    /// self-joins too; a query reading them all has nothing to narrow.
    #[tokio::test]
    async fn a_query_reads_the_columns_of_every_scan_of_its_view() {
        let read = [
            ("SELECT a, SUM(c) AS s FROM t GROUP BY a", Some(vec![0, 2])),
            (
                "SELECT a FROM t WHERE b IN (SELECT b FROM t WHERE d = 'x')",
                Some(vec![0, 1, 3]),
            ),
            (
                "SELECT x.a, y.c FROM t x JOIN t y ON x.b = y.b",
                Some(vec![0, 1, 2]),
            ),
            (
                "SELECT a, COUNT(*) OVER (PARTITION BY a ORDER BY b) AS n FROM t",
                Some(vec![0, 1]),
            ),
            // A column the SQL names is needed even where the optimizer drops it (the SQL
            // would not plan without it); a wildcard names none.
            (
                "WITH w AS (SELECT a, b + 1 AS b1, d FROM t) SELECT a, b1 FROM w",
                Some(vec![0, 1, 3]),
            ),
            (
                "WITH w AS (SELECT *, b + 1 AS b1 FROM t) SELECT a, b1 FROM w",
                Some(vec![0, 1]),
            ),
            (
                "WITH w AS (SELECT *, b + 1 AS b1 FROM t) SELECT \"a\", b1, d FROM w WHERE d IS NULL",
                Some(vec![0, 1, 3]),
            ),
            ("SELECT * FROM t", None),
            ("SELECT d, c, b, a FROM t", None),
        ];
        for (sql, columns) in read {
            assert_eq!(read_by(sql).await, columns, "{sql}");
        }
    }
}
