//! Streaming aggregation: a query that groups the stream (`GROUP BY`), with Spark's output
//! modes. Each batch the query runs over the rows its open groups hold plus the batch's new
//! rows, and writes:
//!
//! - **append**: each window once, final, in the batch whose watermark passes its end (the
//!   groups must be `window()` or `session_window()` of the watermark column, as Spark asks);
//! - **update**: the groups the batch's rows changed, again each time they change;
//! - **complete**: every group, replacing the table's rows.
//!
//! The state is the rows of the groups still open: a row goes once the watermark has closed
//! every window it is in (its last window's end, or its session's end). Complete mode and
//! groups without event-time windows never close, as in Spark, so their state only grows.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::{
    SortColumn, concat_batches, filter_record_batch, lexsort_to_indices, take,
};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimestampMicrosecondType};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, ScalarValue};
use datafusion::logical_expr::{Aggregate, Expr, Filter, LogicalPlan, Projection, lit};
use datafusion::physical_expr::PhysicalExpr;
use riskstream_udfs::{
    SESSION_COLUMN, SESSION_WINDOW, TimeWindow, WINDOW, WINDOW_COLUMN, interval_us, merge_sessions,
};

use crate::error::{JobError, Result};
use crate::stream::partial::PartialState;
use crate::stream::rolling::{carry_column, with_flag};
use crate::stream::spec::OutputMode;

/// The view column saying which rows are new in this batch (update mode writes the groups that
/// have one).
pub const NEW_COLUMN: &str = "__riskstream_new";
const CHANGED_COLUMN: &str = "__riskstream_changed";

/// How a streaming aggregation's groups close.
#[derive(Debug, Clone, PartialEq)]
pub enum Grouping {
    /// `window()` of the view's column `time`: a row's windows are closed once the watermark
    /// reaches the end of its last one.
    Window {
        /// The time column's index in the view.
        time: usize,
        /// The windows.
        window: TimeWindow,
    },
    /// `session_window()` of the view's column `time` per the view's columns `keys`: a row's
    /// session is closed once the watermark reaches its end.
    Session {
        /// The time column's index in the view.
        time: usize,
        /// The gap that closes a session.
        gap: SessionGap,
        /// The indices in the view of the other grouping keys.
        keys: Vec<usize>,
    },
    /// No event-time window over the watermark column: groups never close.
    Open,
}

/// The gap of a `session_window()` over a stream.
#[derive(Debug, Clone)]
pub enum SessionGap {
    /// The same for every row, in microseconds.
    Fixed(i64),
    /// Given per row by an expression over the view's columns (as the SQL writes it, and
    /// planned over the view's rows).
    PerRow {
        /// The expression, as the SQL writes it.
        expr: Expr,
        /// The same, evaluated over the view's rows.
        physical: Arc<dyn PhysicalExpr>,
        /// The SQL file it is in, for its errors.
        file: String,
    },
}

impl PartialEq for SessionGap {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Fixed(a), Self::Fixed(b)) => a == b,
            (Self::PerRow { expr: a, .. }, Self::PerRow { expr: b, .. }) => a == b,
            _ => false,
        }
    }
}

impl std::fmt::Display for SessionGap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Fixed(us) => write!(f, "gap {us} us"),
            Self::PerRow { expr, .. } => write!(f, "gap per row: {expr}"),
        }
    }
}

impl SessionGap {
    /// `gap`, the second argument of a `session_window()` over the view `view` (rows of
    /// `input`) in the Aggregate over `agg_input`: a constant greater than 0, or an expression
    /// of the view's columns only (the state evaluates it over the rows it keeps). `None`
    /// otherwise.
    fn of_call(
        gap: &Expr,
        agg_input: &LogicalPlan,
        view: &str,
        input: &SchemaRef,
        file: &str,
    ) -> Option<Self> {
        if let Expr::Literal(v, _) = gap {
            return interval_us(v).filter(|us| *us > 0).map(Self::Fixed);
        }
        let columns = gap.column_refs();
        if !columns
            .iter()
            .all(|c| reads_view_column(agg_input, &c.name, view))
        {
            return None;
        }
        Self::per_row(gap, input, file)
    }

    /// The gap `gap`, an expression over the columns of `input`, planned over its rows as the
    /// query's own expressions are (types coerced, functions simplified).
    fn per_row(gap: &Expr, input: &SchemaRef, file: &str) -> Option<Self> {
        // The view's rows carry no qualifier.
        let unqualified = crate::stream::incremental::unqualified(gap);
        let schema = datafusion::common::DFSchema::try_from(input.as_ref().clone()).ok()?;
        let physical = datafusion::execution::SessionStateBuilder::new()
            .build()
            .create_physical_expr(unqualified, &schema)
            .ok()?;
        Some(Self::PerRow {
            expr: gap.clone(),
            physical,
            file: file.to_string(),
        })
    }

    /// Each row's gap in microseconds; `None` for a row in no session (its gap null or not
    /// greater than 0).
    fn of_rows(&self, rows: &RecordBatch) -> Result<Vec<Option<i64>>> {
        match self {
            Self::Fixed(us) => Ok(vec![Some(*us); rows.num_rows()]),
            Self::PerRow { physical, file, .. } => physical
                .evaluate(rows)
                .and_then(|v| v.into_array(rows.num_rows()))
                .and_then(|gaps| riskstream_udfs::session_gaps_us(&gaps))
                .map_err(|e| JobError::sql(file.as_str(), e)),
        }
    }
}

/// A query's streaming aggregation, as the engine runs it.
#[derive(Debug, Clone)]
pub struct Aggregation {
    /// How its groups close.
    pub grouping: Grouping,
    /// Which rows each batch writes.
    pub mode: OutputMode,
    /// Whether the state holds partial aggregates per group (`partial.rs`) rather than the
    /// groups' rows.
    pub partial: bool,
    /// How it runs, for the job's plan output.
    pub explain: Vec<String>,
}

impl Aggregation {
    /// Says in the plan output that a sliding `window`'s rows are aggregated per pane, as
    /// `partial.rs` decides for the analysed plan.
    pub fn explain_panes(&mut self, window: &TimeWindow) {
        let line = format!(
            "sliding windows: each batch's rows aggregated per {} us pane, each pane's partials \
             then added to every window holding it",
            window.pane_us()
        );
        self.explain.insert(1.min(self.explain.len()), line);
    }
}

/// Whether `plan` reads the view `view` (the stream), subqueries included.
pub(crate) fn reads_stream(plan: &LogicalPlan, view: &str) -> bool {
    scans_of(plan, view) > 0
}

/// Whether `plan` has an aggregation of the stream `view` in it: window functions above one are
/// over its groups, not over the stream's rows.
pub(crate) fn aggregates_stream(plan: &LogicalPlan, view: &str) -> bool {
    plan.exists(|node| {
        Ok(matches!(node, LogicalPlan::Aggregate(a) if reads_stream(&a.input, view)))
    })
    .unwrap_or(false)
}

/// The streaming aggregation of `plan` (as planned, before analysis) over the view `view` of
/// rows `input`, checked for what `mode` and the watermark column `time_column` need; `None`
/// when the query does not aggregate.
pub fn analyze(
    plan: &LogicalPlan,
    view: &str,
    input: &SchemaRef,
    time_column: Option<&str>,
    mode: OutputMode,
    file: &str,
) -> Result<Option<Aggregation>> {
    let refuse = |reason: String| JobError::Config {
        key: file.to_string(),
        reason,
    };
    let mut aggregates = Vec::new();
    let mut distinct = false;
    // Only what reads the stream is a streaming aggregation: a GROUP BY or DISTINCT over a
    // table read beside it (`[query] tables`) is computed whole every batch.
    plan.apply_with_subqueries(|node| {
        match node {
            LogicalPlan::Aggregate(a) if reads_stream(&a.input, view) => {
                aggregates.push(a.clone());
            }
            LogicalPlan::Distinct(d) if reads_stream(d.input(), view) => distinct = true,
            _ => {}
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .map_err(|e| JobError::sql(file, e))?;
    if distinct {
        return Err(refuse(
            "SELECT DISTINCT over a stream keeps every row it has seen: write it as a GROUP BY"
                .into(),
        ));
    }
    let agg = match aggregates.as_slice() {
        [] => return Ok(None),
        [agg] => agg,
        _ => {
            return Err(refuse(
                "a streaming query may aggregate once (one GROUP BY), as in Spark".into(),
            ));
        }
    };
    if agg
        .group_expr
        .iter()
        .any(|e| matches!(e, Expr::GroupingSet(_)))
    {
        return Err(refuse(
            "ROLLUP, CUBE and GROUPING SETS are not supported over a stream".into(),
        ));
    }
    // The stream is read through the GROUP BY only: rows read beside it (a join or a union
    // with the stream) would be each batch's new rows alone, or the open groups' rows again.
    // Spark refuses such queries too.
    if scans_of(plan, view) > scans_of(&agg.input, view) {
        return Err(refuse(
            "a streaming aggregation reads the stream only through its GROUP BY (no join or \
             union with the stream's rows beside it), as in Spark; a window function over the \
             aggregation's groups can often say the same"
                .into(),
        ));
    }
    // The window call among the keys, and the other keys.
    let (calls, keys): (Vec<&Expr>, Vec<&Expr>) = agg.group_expr.iter().partition(|e| {
        matches!(e, Expr::ScalarFunction(f) if matches!(f.func.name(), WINDOW | SESSION_WINDOW))
    });
    let view_column = |e: &Expr| match e {
        Expr::Column(c) if reads_view_column(&agg.input, &c.name, view) => {
            input.index_of(&c.name).ok()
        }
        _ => None,
    };
    let on_watermark = |e: &Expr| match e {
        Expr::Column(c) if Some(c.name.as_str()) == time_column => view_column(e),
        _ => None,
    };
    let grouping = match calls.first() {
        Some(Expr::ScalarFunction(f)) => match (f.func.name(), on_watermark(&f.args[0])) {
            (WINDOW, Some(time)) => {
                let window = TimeWindow::from_call(&f.args).map_err(|e| JobError::sql(file, e))?;
                Grouping::Window { time, window }
            }
            (SESSION_WINDOW, Some(time)) => {
                let gap = f
                    .args
                    .get(1)
                    .and_then(|gap| SessionGap::of_call(gap, &agg.input, view, input, file));
                let keys: Option<Vec<usize>> = keys.iter().map(|k| view_column(k)).collect();
                match (gap, keys) {
                    (Some(gap), Some(keys)) => Grouping::Session { time, gap, keys },
                    _ if mode == OutputMode::Complete => Grouping::Open,
                    _ => {
                        return Err(refuse(
                            "session_window() over a stream needs a gap that is a constant or \
                             computed from the stream's columns, and its other GROUP BY keys \
                             to be columns of the stream, so its state knows when a session \
                             has closed"
                                .into(),
                        ));
                    }
                }
            }
            _ => Grouping::Open,
        },
        _ => Grouping::Open,
    };
    let grouping = if mode == OutputMode::Complete {
        // Complete mode writes every group every batch: none is ever dropped.
        Grouping::Open
    } else {
        grouping
    };
    if mode == OutputMode::Append && grouping == Grouping::Open {
        return Err(refuse(format!(
            "append output mode writes each group once, final: the GROUP BY needs window() or \
             session_window() of the watermark column{}; use outputMode update or complete \
             otherwise",
            time_column.map_or(String::new(), |c| format!(" `{c}`"))
        )));
    }
    let over = windows_over_groups(plan, agg, mode, &grouping).map_err(refuse)?;
    let session = calls
        .first()
        .is_some_and(|c| matches!(c, Expr::ScalarFunction(f) if f.func.name() == SESSION_WINDOW));
    let partial = !session && crate::stream::partial::decomposable(agg);
    let kept = if partial {
        "the open groups' partial aggregates are kept"
    } else {
        "the open groups' rows are kept"
    };
    let mut explain = vec![match &grouping {
        Grouping::Window { window, .. } => format!(
            "aggregation over window({} us, slide {} us): {} mode; {kept} until the watermark \
             passes their window's end",
            window.duration_us,
            window.slide_us,
            mode.as_str()
        ),
        Grouping::Session { gap, .. } => format!(
            "aggregation over session_window({gap}): {} mode; {kept} until the \
             watermark passes their session's end",
            mode.as_str()
        ),
        Grouping::Open => format!(
            "aggregation: {} mode; its groups never close: {kept} for good",
            mode.as_str()
        ),
    }];
    if over > 0 {
        explain.push(format!(
            "{over} window function(s) over the aggregation's groups, computed over the groups \
             each batch writes"
        ));
    }
    Ok(Some(Aggregation {
        grouping,
        mode,
        partial,
        explain,
    }))
}

/// How many times `plan` reads the view `view`, subqueries included.
fn scans_of(plan: &LogicalPlan, view: &str) -> usize {
    let mut scans = 0;
    let _ = plan.apply_with_subqueries(|node| {
        if matches!(node, LogicalPlan::TableScan(scan) if scan.table_name.table() == view) {
            scans += 1;
        }
        Ok(TreeNodeRecursion::Continue)
    });
    scans
}

/// Checks the window functions (OVER) computed over the groups of the streaming aggregation
/// `agg`, and counts them. They see the groups a batch writes, so they give what the same SQL
/// gives over the whole input only when each of their partitions is written whole, in one
/// batch: complete mode writes every group; append mode writes a window's groups together,
/// when the watermark passes its end, so there a window function must be partitioned by the
/// window. Update mode writes only the groups that changed, which no window function can use.
/// (Window functions under the aggregation, over the stream's rows, are refused elsewhere.)
fn windows_over_groups(
    plan: &LogicalPlan,
    agg: &Aggregate,
    mode: OutputMode,
    grouping: &Grouping,
) -> std::result::Result<usize, String> {
    let key = agg
        .group_expr
        .iter()
        .position(|e| matches!(e, Expr::ScalarFunction(f) if f.func.name() == WINDOW))
        .map(|i| agg.schema.field(i).name().clone());
    let mut count = 0;
    let mut problem = None;
    let _ = plan.apply_with_subqueries(|node| {
        let LogicalPlan::Window(w) = node else {
            return Ok(TreeNodeRecursion::Continue);
        };
        if !contains(&w.input, agg) {
            return Ok(TreeNodeRecursion::Continue);
        }
        for e in &w.window_expr {
            count += 1;
            let partition_by = match e.clone().unalias() {
                Expr::WindowFunction(wf) => wf.params.partition_by,
                _ => Vec::new(),
            };
            let by_window = |key: &String| {
                partition_by
                    .iter()
                    .any(|p| derives_from(p, &w.input, agg, key))
            };
            let fine = match (mode, grouping, &key) {
                (OutputMode::Complete, _, _) => true,
                (OutputMode::Append, Grouping::Window { .. }, Some(key)) => by_window(key),
                _ => false,
            };
            if !fine {
                problem = Some(format!(
                    "a window function over the aggregation's groups sees the groups each batch \
                     writes: in {} mode it must be PARTITION BY the GROUP BY's window() (such as \
                     window.start), so that each of its partitions is written whole{}",
                    mode.as_str(),
                    if mode == OutputMode::Update {
                        " (update mode writes only changed groups: use append or complete)"
                    } else {
                        ""
                    }
                ));
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    match problem {
        Some(problem) => Err(problem),
        None => Ok(count),
    }
}

/// Whether `plan` has the aggregation `agg` in it.
fn contains(plan: &LogicalPlan, agg: &Aggregate) -> bool {
    plan.exists(|node| Ok(matches!(node, LogicalPlan::Aggregate(a) if a == agg)))
        .unwrap_or(false)
}

/// Whether `expr`, over the output of `plan`, is the column `key` of the aggregation `agg` or a
/// field of it (`window.start`), through projections, aliases and filters.
fn derives_from(expr: &Expr, plan: &LogicalPlan, agg: &Aggregate, key: &str) -> bool {
    match expr {
        Expr::Alias(a) => derives_from(&a.expr, plan, agg, key),
        Expr::ScalarFunction(f) if f.func.name() == "get_field" => f
            .args
            .first()
            .is_some_and(|a| derives_from(a, plan, agg, key)),
        Expr::Column(c) => match plan {
            LogicalPlan::Aggregate(a) if a == agg => c.name == key,
            LogicalPlan::Projection(p) => p
                .schema
                .index_of_column_by_name(c.relation.as_ref(), &c.name)
                .is_some_and(|i| derives_from(&p.expr[i], &p.input, agg, key)),
            LogicalPlan::SubqueryAlias(s) => derives_from(
                &Expr::Column(Column::from_name(&c.name)),
                &s.input,
                agg,
                key,
            ),
            // Not through a LIMIT: it can cut a window's groups apart.
            LogicalPlan::Filter(_) | LogicalPlan::Sort(_) | LogicalPlan::Window(_) => plan
                .inputs()
                .first()
                .is_some_and(|input| derives_from(expr, input, agg, key)),
            _ => false,
        },
        _ => false,
    }
}

/// True when `plan` passes the view's column `name` through unchanged (projections, filters,
/// aliases of the view): its values are the view's.
fn reads_view_column(plan: &LogicalPlan, name: &str, view: &str) -> bool {
    match plan {
        LogicalPlan::TableScan(t) => t.table_name.table() == view,
        LogicalPlan::Filter(f) => reads_view_column(&f.input, name, view),
        LogicalPlan::SubqueryAlias(s) => reads_view_column(&s.input, name, view),
        LogicalPlan::Projection(p) => {
            p.expr
                .iter()
                .any(|e| matches!(e, Expr::Column(c) if c.name == name))
                && reads_view_column(&p.input, name, view)
        }
        _ => false,
    }
}

/// The plan of one batch of the aggregation (`plan` analyzed, reading the view `view` with
/// [`NEW_COLUMN`]): its output is what `mode` writes. Append writes the windows whose end is
/// after `watermarks.0` (the batch's) and at or before `watermarks.1` (the next batch's).
pub fn emitting(
    plan: LogicalPlan,
    view: &str,
    mode: OutputMode,
    watermarks: (i64, i64),
) -> Result<LogicalPlan> {
    let plan = match mode {
        OutputMode::Update => carry_column(plan, NEW_COLUMN)?,
        _ => plan,
    };
    plan.transform_up_with_subqueries(|node| {
        // Only the stream's: a GROUP BY over a table read beside it runs whole, as planned.
        let agg = match node {
            LogicalPlan::Aggregate(agg) if reads_stream(&agg.input, view) => agg,
            other => return Ok(Transformed::no(other)),
        };
        let out = match mode {
            OutputMode::Complete => LogicalPlan::Aggregate(agg),
            OutputMode::Update => changed_groups(agg)?,
            OutputMode::Append => closed_windows(agg, watermarks)?,
        };
        Ok(Transformed::yes(out))
    })
    .map(|t| t.data)
    .map_err(|e| JobError::internal(format!("planning the aggregation's output: {e}")))
}

/// The groups with a new row: `bool_or(new)` beside the aggregates, kept where true, then the
/// aggregate's own columns again.
fn changed_groups(agg: Aggregate) -> datafusion::common::Result<LogicalPlan> {
    let schema = Arc::clone(&agg.schema);
    let new = agg
        .input
        .schema()
        .qualified_field_with_unqualified_name(NEW_COLUMN)
        .map(|(q, _)| Expr::Column(Column::new(q.cloned(), NEW_COLUMN)))?;
    let mut aggr = agg.aggr_expr.clone();
    aggr.push(datafusion::functions_aggregate::expr_fn::bool_or(new).alias(CHANGED_COLUMN));
    let with_flag = Aggregate::try_new(Arc::clone(&agg.input), agg.group_expr.clone(), aggr)?;
    let filtered = Filter::try_new(
        Expr::Column(Column::from_name(CHANGED_COLUMN)),
        Arc::new(LogicalPlan::Aggregate(with_flag)),
    )?;
    let columns = schema
        .iter()
        .map(|(q, f)| Expr::Column(Column::new(q.cloned(), f.name())))
        .collect();
    let projection =
        Projection::try_new_with_schema(columns, Arc::new(LogicalPlan::Filter(filtered)), schema)?;
    Ok(LogicalPlan::Projection(projection))
}

/// The windows whose end lies in `(watermarks.0, watermarks.1]` (ms).
fn closed_windows(
    agg: Aggregate,
    (after_ms, until_ms): (i64, i64),
) -> datafusion::common::Result<LogicalPlan> {
    let window = agg
        .group_expr
        .iter()
        .zip(agg.schema.iter())
        .find_map(|(e, (q, f))| {
            window_key(e).map(|_| (Column::new(q.cloned(), f.name()), f.data_type().clone()))
        });
    let Some((column, DataType::Struct(fields))) = window else {
        return datafusion::common::plan_err!("the aggregation lost its window column");
    };
    let tz = match fields[1].data_type() {
        DataType::Timestamp(_, tz) => tz.clone(),
        _ => None,
    };
    let bound = |ms: i64| {
        lit(ScalarValue::TimestampMicrosecond(
            Some(ms.saturating_mul(1000)),
            tz.clone(),
        ))
    };
    let end = datafusion::functions::core::expr_fn::get_field(Expr::Column(column), "end");
    let closed = end
        .clone()
        .gt(bound(after_ms))
        .and(end.lt_eq(bound(until_ms)));
    Ok(LogicalPlan::Filter(Filter::try_new(
        closed,
        Arc::new(LogicalPlan::Aggregate(agg)),
    )?))
}

/// The column a grouping key of an analyzed Aggregate reads its `window()` or
/// `session_window()` from (see `riskstream_udfs::TimeWindowRule`), if it is one.
pub(crate) fn window_key(key: &Expr) -> Option<&str> {
    let inner = match key {
        Expr::Alias(a) => a.expr.as_ref(),
        other => other,
    };
    match inner {
        Expr::Column(c) if c.name == WINDOW_COLUMN || c.name == SESSION_COLUMN => Some(&c.name),
        _ => None,
    }
}

/// The rows of a streaming aggregation's open groups.
#[derive(Debug)]
pub struct AggregateState {
    input: SchemaRef,
    grouping: Grouping,
    rows: Vec<RecordBatch>,
    /// The groups' partial aggregates, when the aggregation has them (then `rows` stays empty).
    pub partial: Option<PartialState>,
}

impl AggregateState {
    /// Empty state for rows of `input`.
    pub fn new(input: SchemaRef, aggregation: &Aggregation) -> Self {
        Self {
            input,
            grouping: aggregation.grouping.clone(),
            rows: Vec::new(),
            partial: aggregation.partial.then(PartialState::default),
        }
    }

    /// The view the batch's query runs over: the kept rows, then `new_rows` marked new. The state
    /// moves on to the rows whose groups the watermark after this batch (`watermark_ms`) leaves
    /// open.
    pub fn stage(
        &mut self,
        new_rows: Vec<RecordBatch>,
        watermark_ms: i64,
    ) -> Result<Vec<RecordBatch>> {
        let view = with_flag(&self.input, NEW_COLUMN);
        let flagged = |b: &RecordBatch, new: bool| {
            let mut columns = b.columns().to_vec();
            columns.push(Arc::new(BooleanArray::from(vec![new; b.num_rows()])));
            RecordBatch::try_new(Arc::clone(&view), columns)
                .map_err(JobError::arrow("staging rows"))
        };
        let mut staged = Vec::with_capacity(self.rows.len() + new_rows.len());
        for b in &self.rows {
            staged.push(flagged(b, false)?);
        }
        for b in &new_rows {
            staged.push(flagged(b, true)?);
        }
        if self.partial.is_some() {
            // Only the batch's rows: the open groups are in the partials.
            return Ok(staged);
        }
        let mut all = std::mem::take(&mut self.rows);
        all.extend(new_rows.into_iter().filter(|b| b.num_rows() > 0));
        let limit_us = watermark_ms.saturating_mul(1000);
        self.rows = match &self.grouping {
            Grouping::Open => all,
            Grouping::Window { time, window } => all
                .iter()
                .map(|b| {
                    let times = b.column(*time).as_primitive::<TimestampMicrosecondType>();
                    let open: BooleanArray = times
                        .iter()
                        .map(|t| Some(t.is_some_and(|t| window.last_end(t) > limit_us)))
                        .collect();
                    filter_record_batch(b, &open).map_err(JobError::arrow("keeping open groups"))
                })
                .filter(|b| b.as_ref().map_or(true, |b| b.num_rows() > 0))
                .collect::<Result<_>>()?,
            Grouping::Session { time, gap, keys } => {
                open_sessions(&self.input, all, *time, gap, keys, limit_us)?
            }
        };
        Ok(staged)
    }

    /// Rows (or groups, with partials) held.
    pub fn rows(&self) -> usize {
        match &self.partial {
            Some(p) => p.rows(),
            None => self.rows.iter().map(RecordBatch::num_rows).sum(),
        }
    }

    /// Bytes held in memory.
    pub fn bytes(&self) -> usize {
        match &self.partial {
            Some(p) => p.bytes(),
            None => self
                .rows
                .iter()
                .map(RecordBatch::get_array_memory_size)
                .sum(),
        }
    }

    /// The state as one Arrow IPC file of its rows (or partials).
    pub fn snapshot(&self) -> Result<Vec<u8>> {
        match &self.partial {
            Some(p) => p.snapshot(),
            None => crate::stream::checkpoint::ipc_file(&self.input, &self.rows),
        }
    }

    /// Restores the state a snapshot holds.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        if let Some(p) = &mut self.partial {
            return p.restore(bytes);
        }
        let (schema, rows) = crate::stream::checkpoint::read_ipc_file(bytes)?;
        let Some(rows) = crate::stream::checkpoint::fit_rows(&self.input, &schema, rows) else {
            return Err(JobError::internal(
                "the state snapshot's rows do not match the query's input: the job's schema \
                 changed; give it a new checkpointLocation"
                    .into(),
            ));
        };
        self.rows = rows;
        Ok(())
    }
}

/// The rows of `rows` whose session (per `keys`, over column `time` with `gap`) ends after
/// `limit_us`. Rows in no session (without a time, or a gap) are dropped, as the query drops
/// them.
fn open_sessions(
    schema: &SchemaRef,
    rows: Vec<RecordBatch>,
    time: usize,
    gap: &SessionGap,
    keys: &[usize],
    limit_us: i64,
) -> Result<Vec<RecordBatch>> {
    let all = concat_batches(schema, &rows).map_err(JobError::arrow("keeping open sessions"))?;
    if all.num_rows() == 0 {
        return Ok(Vec::new());
    }
    let gaps = gap.of_rows(&all)?;
    let columns: Vec<SortColumn> = keys
        .iter()
        .chain(std::iter::once(&time))
        .map(|&i| SortColumn {
            values: Arc::clone(all.column(i)),
            options: None,
        })
        .collect();
    let order = lexsort_to_indices(&columns, None).map_err(JobError::arrow("ordering sessions"))?;
    let sorted_keys: Vec<_> = keys
        .iter()
        .map(|&i| take(all.column(i), &order, None))
        .collect::<std::result::Result<_, _>>()
        .map_err(JobError::arrow("ordering sessions"))?;
    let times =
        take(all.column(time), &order, None).map_err(JobError::arrow("ordering sessions"))?;
    let times = times.as_primitive::<TimestampMicrosecondType>();
    // Without other keys, every row is in one partition.
    let ranges: Vec<std::ops::Range<usize>> = if sorted_keys.is_empty() {
        std::iter::once(0..all.num_rows()).collect()
    } else {
        datafusion::arrow::compute::partition(&sorted_keys)
            .map_err(JobError::arrow("grouping sessions"))?
            .ranges()
    };
    let mut open = vec![false; all.num_rows()];
    for range in ranges {
        // Rows without a time or a gap have no session (the query drops them); nulls sort
        // first.
        let rows: Vec<(usize, i64, i64)> = range
            .filter(|&r| times.is_valid(r))
            .filter_map(|r| {
                let row = order.value(r) as usize;
                gaps[row].map(|gap| (row, times.value(r), gap))
            })
            .collect();
        let events: Vec<(i64, i64)> = rows
            .iter()
            .map(|&(_, t, gap)| (t, t.saturating_add(gap)))
            .collect();
        for ((row, _, _), (_, end)) in rows.iter().zip(merge_sessions(&events)) {
            open[*row] = end > limit_us;
        }
    }
    let kept = filter_record_batch(&all, &BooleanArray::from(open))
        .map_err(JobError::arrow("keeping open sessions"))?;
    Ok(if kept.num_rows() > 0 {
        vec![kept]
    } else {
        Vec::new()
    })
}

#[cfg(test)]
#[expect(clippy::unwrap_used)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{StringArray, TimestampMicrosecondArray};
    use datafusion::arrow::datatypes::{Field, Schema, TimeUnit};

    const MIN: i64 = 60_000_000;

    fn rows(events: &[(&str, i64)]) -> (SchemaRef, RecordBatch) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("user_id", DataType::Utf8, false),
            Field::new(
                "event_time",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
        ]));
        let users = StringArray::from_iter_values(events.iter().map(|e| e.0));
        let times = TimestampMicrosecondArray::from_iter_values(events.iter().map(|e| e.1 * MIN))
            .with_timezone("UTC");
        let batch =
            RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(users), Arc::new(times)])
                .unwrap();
        (schema, batch)
    }

    fn minutes(batches: &[RecordBatch]) -> Vec<(String, i64)> {
        let mut out = Vec::new();
        for b in batches {
            let users = b.column(0).as_string::<i32>();
            let times = b.column(1).as_primitive::<TimestampMicrosecondType>();
            for i in 0..b.num_rows() {
                out.push((users.value(i).to_string(), times.value(i) / MIN));
            }
        }
        out.sort();
        out
    }

    #[test]
    fn a_sessions_rows_stay_until_the_watermark_passes_its_end() {
        // a: 0, 4 (session 0..9), 20 (20..25); b: 6, 9 (6..14).
        let (schema, batch) = rows(&[("a", 0), ("b", 6), ("a", 4), ("a", 20), ("b", 9)]);
        let kept = open_sessions(
            &schema,
            vec![batch.clone()],
            1,
            &SessionGap::Fixed(5 * MIN),
            &[0],
            10 * MIN,
        )
        .unwrap();
        assert_eq!(
            minutes(&kept),
            [("a".into(), 20), ("b".into(), 6), ("b".into(), 9)]
        );
        // Without other keys all rows share sessions: 0..14 (0, 4, 6, 9) and 20..25.
        let kept = open_sessions(
            &schema,
            vec![batch],
            1,
            &SessionGap::Fixed(5 * MIN),
            &[],
            13 * MIN,
        )
        .unwrap();
        assert_eq!(
            minutes(&kept),
            [
                ("a".into(), 0),
                ("a".into(), 4),
                ("a".into(), 20),
                ("b".into(), 6),
                ("b".into(), 9)
            ]
        );
    }

    /// With a gap per row, each row's session reaches its own gap past it; a row whose gap is
    /// null or not greater than 0 is in no session and is not kept.
    #[test]
    fn a_session_with_gaps_per_row_stays_until_the_watermark_passes_its_furthest_end() {
        use datafusion::logical_expr::{col, when};
        // a: 0 (gap 10, to 10), 4 (gap 1, to 5): one session 0..10; 20 (gap 1) 20..21.
        // b: 6 (gap 0: none), 9 (gap null: none), 12 (gap 1): 12..13.
        let (schema, batch) = rows(&[("a", 0), ("b", 6), ("a", 4), ("a", 20), ("b", 9), ("b", 12)]);
        let minute = |t: i64| {
            col("event_time").eq(lit(ScalarValue::TimestampMicrosecond(
                Some(t * MIN),
                Some("UTC".into()),
            )))
        };
        let gap = when(minute(0), lit("10 minutes"))
            .when(minute(6), lit("0 seconds"))
            .when(minute(9), lit(ScalarValue::Utf8(None)))
            .otherwise(lit("1 minute"))
            .unwrap();
        let gap = SessionGap::per_row(&gap, &schema, "q.sql").unwrap();
        assert!(gap.to_string().starts_with("gap per row: CASE"), "{gap}");
        let kept = open_sessions(&schema, vec![batch.clone()], 1, &gap, &[0], 9 * MIN).unwrap();
        assert_eq!(
            minutes(&kept),
            [
                ("a".into(), 0),
                ("a".into(), 4),
                ("a".into(), 20),
                ("b".into(), 12)
            ]
        );
        let kept = open_sessions(&schema, vec![batch.clone()], 1, &gap, &[0], 10 * MIN).unwrap();
        assert_eq!(minutes(&kept), [("a".into(), 20), ("b".into(), 12)]);
        // Text that is not an interval fails, naming the SQL file and the text.
        let bad = when(minute(4), lit("soon"))
            .otherwise(lit("1 minute"))
            .unwrap();
        let bad = SessionGap::per_row(&bad, &schema, "q.sql").unwrap();
        let err = open_sessions(&schema, vec![batch], 1, &bad, &[0], 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("q.sql") && err.contains("`soon`"), "{err}");
    }

    #[test]
    fn a_rows_windows_stay_until_the_watermark_passes_the_last_ones_end() {
        let (schema, batch) = rows(&[("a", 1), ("a", 6), ("a", 12)]);
        let aggregation = Aggregation {
            grouping: Grouping::Window {
                time: 1,
                window: TimeWindow {
                    duration_us: 10 * MIN,
                    slide_us: 5 * MIN,
                    start_us: 0,
                },
            },
            mode: OutputMode::Append,
            partial: false,
            explain: Vec::new(),
        };
        let mut state = AggregateState::new(schema, &aggregation);
        // Minute 1's windows end at 5 and 10, minute 6's at 10 and 15, minute 12's at 15 and 20:
        // a watermark at minute 10 closes only minute 1's.
        let staged = state.stage(vec![batch], 10 * 60_000).unwrap();
        assert_eq!(staged.iter().map(RecordBatch::num_rows).sum::<usize>(), 3);
        assert_eq!(minutes(&state.rows), [("a".into(), 6), ("a".into(), 12)]);
        let restored = {
            let mut s = AggregateState::new(Arc::clone(&state.input), &aggregation);
            s.restore(&state.snapshot().unwrap()).unwrap();
            s
        };
        assert_eq!(minutes(&restored.rows), minutes(&state.rows));
    }

    /// `sql` over a view `transactions` of the transaction schema, analyzed as an append-mode
    /// job's aggregation with the watermark on `event_time`, from the SQL file `q.sql`.
    async fn analyzed(sql: &str) -> Result<Option<Aggregation>> {
        let ctx = crate::scoring::session().unwrap();
        let input = crate::schemas::source_schema(crate::generator::Source::Transactions);
        let table =
            datafusion::datasource::MemTable::try_new(Arc::clone(&input), vec![vec![]]).unwrap();
        ctx.register_table("transactions", Arc::new(table)).unwrap();
        let df = ctx.sql(&riskstream_udfs::spark_sql(sql)).await.unwrap();
        analyze(
            df.logical_plan(),
            "transactions",
            &input,
            Some("event_time"),
            OutputMode::Append,
            "q.sql",
        )
    }

    #[tokio::test]
    async fn counts_sums_extremes_and_means_of_fixed_windows_are_kept_as_partials() {
        let analyzed = |sql: &'static str| async move { analyzed(sql).await.unwrap().unwrap() };
        let fixed = analyzed(
            "SELECT user_id, window.end, count(*), sum(amount), min(amount), max(amount), \
             avg(amount) FROM transactions GROUP BY user_id, window(event_time, '1 minute')",
        )
        .await;
        assert!(fixed.partial && matches!(fixed.grouping, Grouping::Window { .. }));
        let sessions = analyzed(
            "SELECT user_id, count(*) FROM transactions \
             GROUP BY user_id, session_window(event_time, '1 minute')",
        )
        .await;
        assert!(!sessions.partial, "sessions merge: their rows are kept");
        let distinct = analyzed(
            "SELECT user_id, count(DISTINCT merchant_id) FROM transactions \
             GROUP BY user_id, window(event_time, '1 minute')",
        )
        .await;
        assert!(!distinct.partial, "a distinct count has no partial here");
    }

    /// A session gap per row is evaluated over the rows the state keeps: it may read the
    /// stream's columns, not what the query computes from them.
    #[tokio::test]
    async fn a_session_gap_per_row_must_read_the_streams_columns() {
        let gap = "CASE WHEN t.amount > 100 THEN '1 minute' ELSE '5 minutes' END";
        let per_row = analyzed(&format!(
            "SELECT user_id, count(*) FROM transactions t \
             GROUP BY user_id, session_window(event_time, {gap})"
        ))
        .await
        .unwrap()
        .unwrap();
        assert!(
            matches!(
                &per_row.grouping,
                Grouping::Session { gap: SessionGap::PerRow { .. }, keys, .. } if keys.len() == 1
            ),
            "{:?}",
            per_row.grouping
        );
        assert!(
            per_row.explain[0].contains("gap per row: CASE"),
            "{:?}",
            per_row.explain
        );
        let computed = analyzed(&format!(
            "SELECT user_id, count(*) FROM (SELECT *, amount * 2 AS double FROM transactions) t \
             GROUP BY user_id, session_window(event_time, {})",
            gap.replace("t.amount", "t.double")
        ))
        .await
        .unwrap_err()
        .to_string();
        assert!(
            computed.contains("q.sql") && computed.contains("computed from the stream's columns"),
            "{computed}"
        );
    }
}
