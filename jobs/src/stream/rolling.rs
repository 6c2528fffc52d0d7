//! Per-event rolling features over a stream: SQL window functions such as
//! `COUNT(*) OVER (PARTITION BY user_id ORDER BY event_time RANGE BETWEEN INTERVAL '5' MINUTE
//! PRECEDING AND CURRENT ROW)`, where every event sees its key's history from earlier batches.
//!
//! The SQL is the specification: the result for an event is what the same SQL gives over the
//! whole input run once as a batch. Two things make that hold over a stream:
//!
//! - An event is emitted only once the watermark has passed its event time. Until then an
//!   out-of-order event could still arrive and belong in its frame; after it, any such event is
//!   late and goes to `late_events` instead. Events wait in `pending` meanwhile.
//! - Rows are kept as long as some event still to be emitted can have them in its frame: every
//!   such event is after the watermark, so history older than the watermark minus the longest
//!   lookback of the query's frames is dropped.
//!
//! This module evaluates the SQL with DataFusion's own window operator over the retained rows
//! and the batch (the generic path), marking the rows to emit with a hidden column that the
//! query is rewritten to carry through its projections. Frames that need unbounded history
//! (`UNBOUNDED PRECEDING`, ranking functions, `LAG`) are refused at start, naming the function.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::kernels::cmp::{gt, gt_eq};
use datafusion::arrow::compute::{and, filter_record_batch, not};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimestampMicrosecondType};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::expr::WindowFunction;
use datafusion::logical_expr::{
    Expr, LogicalPlan, Projection, WindowFrameBound, WindowFrameUnits, WindowFunctionDefinition,
};
use datafusion::prelude::Column;

use crate::error::{JobError, Result};
use crate::stream::aggregate::{AggregateState, aggregates_stream, reads_stream};
use crate::stream::checkpoint::Checkpoint;
use crate::stream::incremental::{IncrementalState, Snapshot};

/// The hidden column marking the rows a batch emits.
pub const EMIT_COLUMN: &str = "__riskstream_emit";

/// What a query's window functions need from the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Windows {
    /// The longest lookback of the query's frames, in microseconds.
    pub lookback_us: i64,
    /// One line per window function: what it is and how it is evaluated.
    pub explain: Vec<String>,
}

/// Finds the window functions of `plan` and checks that a stream can evaluate them: ordered by
/// the watermark column `time_column`, over a RANGE frame reaching a fixed interval back.
/// `None` when the query has none.
/// Errors name the SQL `file`.
pub fn analyze(
    plan: &LogicalPlan,
    view: &str,
    time_column: Option<&str>,
    file: &str,
) -> Result<Option<Windows>> {
    let mut found: Vec<std::result::Result<(i64, String), String>> = Vec::new();
    let mut grouped = false;
    plan.apply_with_subqueries(|node| {
        match node {
            // Window functions over a GROUP BY's groups are the aggregation's to check and
            // run (`aggregate::analyze`); these are over the stream's rows.
            LogicalPlan::Window(w) if !aggregates_stream(&w.input, view) => {
                for e in &w.window_expr {
                    found.push(check(e, time_column));
                }
            }
            // A GROUP BY over a table read beside the stream (`[query] tables`) is computed
            // whole every batch; one over the stream would aggregate rows the windows emit.
            LogicalPlan::Aggregate(a) if reads_stream(&a.input, view) => grouped = true,
            _ => {}
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .map_err(|e| JobError::internal(format!("walking the query plan: {e}")))?;
    if found.is_empty() {
        return Ok(None);
    }
    if grouped {
        return Err(JobError::config(
            file,
            "a query with both GROUP BY and OVER windows cannot run over a stream yet",
        ));
    }
    let mut windows = Windows {
        lookback_us: 0,
        explain: Vec::new(),
    };
    for f in found {
        let (lookback, line) = f.map_err(|reason| JobError::config(file, reason))?;
        windows.lookback_us = windows.lookback_us.max(lookback);
        windows.explain.push(line);
    }
    Ok(Some(windows))
}

fn check(expr: &Expr, time_column: Option<&str>) -> std::result::Result<(i64, String), String> {
    let (name, wf) = match expr {
        Expr::Alias(a) => match a.expr.as_ref() {
            Expr::WindowFunction(wf) => (a.name.clone(), wf.as_ref()),
            other => return Err(format!("unexpected window expression {other}")),
        },
        Expr::WindowFunction(wf) => (expr.schema_name().to_string(), wf.as_ref()),
        other => return Err(format!("unexpected window expression {other}")),
    };
    let WindowFunction { fun, params } = wf;
    let refuse = |why: String| format!("`{name}`: {why}");
    // Value functions read only their frame; ranking and offset functions (row_number, lag,
    // ...) read the whole partition before the row.
    if let WindowFunctionDefinition::WindowUDF(f) = fun
        && !matches!(f.name(), "first_value" | "last_value" | "nth_value")
    {
        return Err(refuse(format!(
            "{}() needs every earlier row of its partition, which a stream cannot keep; use an \
             aggregate over a RANGE frame with an INTERVAL",
            f.name()
        )));
    }
    // Spark's sketch precision is checked where a batch checks it, when its accumulator is
    // made; the incremental path makes none, so a stream checks it here, at start.
    if let WindowFunctionDefinition::AggregateUDF(f) = fun
        && f.name() == riskstream_udfs::APPROX_COUNT_DISTINCT
        && let [_, Expr::Literal(sd, _)] = params.args.as_slice()
    {
        riskstream_udfs::relative_sd_allowed(sd).map_err(refuse)?;
    }
    let Some(time_column) = time_column else {
        return Err(refuse(
            "OVER windows over a stream need a watermark (query.watermark) on their ORDER BY column"
                .into(),
        ));
    };
    match params.order_by.as_slice() {
        [sort] if sort.asc && matches!(&sort.expr, Expr::Column(c) if c.name == time_column) => {}
        _ => {
            return Err(refuse(format!(
                "a window over a stream must be ORDER BY {time_column} (the watermark column), \
                 ascending"
            )));
        }
    }
    let frame = &params.window_frame;
    if frame.units != WindowFrameUnits::Range {
        return Err(refuse(
            "only RANGE frames (RANGE BETWEEN INTERVAL ... PRECEDING AND CURRENT ROW) run over a \
             stream"
                .into(),
        ));
    }
    let lookback = match &frame.start_bound {
        WindowFrameBound::Preceding(v) if !v.is_null() => riskstream_udfs::interval_us(v)
            .ok_or_else(|| {
                refuse(format!(
                    "the frame must reach back a fixed INTERVAL (days, hours, minutes, seconds), \
                 not {v}"
                ))
            })?,
        _ => {
            return Err(refuse(
                "the frame must start a fixed INTERVAL PRECEDING: an unbounded frame needs \
                 every earlier row, which a stream cannot keep"
                    .into(),
            ));
        }
    };
    if let WindowFrameBound::Preceding(v) = &frame.end_bound
        && !v.is_null()
        && riskstream_udfs::interval_us(v).is_none_or(|us| us < 0)
    {
        return Err(refuse(format!(
            "the frame must end at CURRENT ROW or a fixed INTERVAL PRECEDING, not {v}"
        )));
    }
    if lookback < 0 {
        return Err(refuse("the frame cannot start after the row".into()));
    }
    if matches!(frame.end_bound, WindowFrameBound::Following(_)) {
        return Err(refuse(
            "the frame must end at CURRENT ROW or before: FOLLOWING rows have not arrived yet"
                .into(),
        ));
    }
    let line = format!(
        "{name}: {}() over {} back, evaluated by DataFusion's window operator over retained \
         history (generic)",
        fun.name(),
        lookback_text(lookback)
    );
    Ok((lookback, line))
}

/// A frame's lookback (µs) as the plan output says it: days and smaller units, as SQL's
/// intervals give it (`90days`, `1h 30m`), not months of an average length.
pub(crate) fn lookback_text(us: i64) -> String {
    let units = [
        (86_400_000_000, "day"),
        (3_600_000_000, "h"),
        (60_000_000, "m"),
        (1_000_000, "s"),
        (1_000, "ms"),
        (1, "us"),
    ];
    let mut left = us.max(0);
    let mut parts = Vec::new();
    for (size, unit) in units {
        let n = left / size;
        left %= size;
        if n > 0 {
            let plural = if unit == "day" && n > 1 { "s" } else { "" };
            parts.push(format!("{n}{unit}{plural}"));
        }
    }
    if parts.is_empty() {
        return "0s".into();
    }
    parts.join(" ")
}

/// Makes every projection of `plan` carry [`EMIT_COLUMN`] up from the view, so the query's
/// output says which rows this batch emits.
pub fn carry_emit_column(plan: LogicalPlan) -> Result<LogicalPlan> {
    carry_column(plan, EMIT_COLUMN)
}

/// Makes every projection of `plan` carry the view's column `name` up, as far as an operator
/// that ends rows (an aggregation) lets it.
pub(crate) fn carry_column(plan: LogicalPlan, name: &str) -> Result<LogicalPlan> {
    let has_emit = |n: &LogicalPlan| n.schema().field_with_unqualified_name(name).is_ok();
    plan.transform_up(|node| {
        let LogicalPlan::Projection(p) = &node else {
            // A node whose input now carries the column takes its schema from it again; the
            // others are left as planned, their output types untouched.
            if !has_emit(&node) && node.inputs().iter().any(|i| has_emit(i)) {
                return node.recompute_schema().map(Transformed::yes);
            }
            return Ok(Transformed::no(node));
        };
        if has_emit(&node) {
            return Ok(Transformed::no(node));
        }
        let Ok((qualifier, field)) = p.input.schema().qualified_field_with_unqualified_name(name)
        else {
            return Ok(Transformed::no(node));
        };
        let mut exprs = p.expr.clone();
        exprs.push(Expr::Column(Column::new(qualifier.cloned(), name)));
        // The planned schema plus the column: deriving the schema again from the expressions
        // could give some of them other types than the planner did.
        let mut fields: Vec<_> = p
            .schema
            .iter()
            .map(|(q, f)| (q.cloned(), Arc::clone(f)))
            .collect();
        fields.push((qualifier.cloned(), Arc::clone(field)));
        let schema =
            datafusion::common::DFSchema::new_with_metadata(fields, p.schema.metadata().clone())?;
        Projection::try_new_with_schema(exprs, Arc::clone(&p.input), Arc::new(schema))
            .map(|p| Transformed::yes(LogicalPlan::Projection(p)))
    })
    .map(|t| t.data)
    .map_err(|e| JobError::internal(format!("carrying {name} through the query: {e}")))
}

/// The view schema of a query with windows: the input and the emit column.
pub fn view_schema(input: &SchemaRef) -> SchemaRef {
    with_flag(input, EMIT_COLUMN)
}

/// `input`'s fields and a non-null boolean column `name`.
pub(crate) fn with_flag(input: &SchemaRef, name: &str) -> SchemaRef {
    let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(name, DataType::Boolean, false));
    Arc::new(Schema::new(fields))
}

/// The emitted rows of a query's output, without the emit column.
pub fn emitted(output: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
    let mut out = Vec::with_capacity(output.len());
    for batch in output {
        let index = batch
            .schema()
            .index_of(EMIT_COLUMN)
            .map_err(|_| JobError::internal("the query's output lost the emit column".into()))?;
        let emit = batch.column(index).as_boolean().clone();
        let mut batch = filter_record_batch(&batch, &emit)
            .map_err(JobError::arrow("selecting emitted rows"))?;
        batch.remove_column(index);
        if batch.num_rows() > 0 {
            out.push(batch);
        }
    }
    Ok(out)
}

/// The state of a query with window functions, on whichever path evaluates it.
#[derive(Debug)]
pub enum WindowState {
    /// DataFusion's window operator over kept rows.
    Generic(RollingState),
    /// Per-key histories of the arguments (`incremental.rs`).
    Incremental(IncrementalState),
    /// The rows of a streaming aggregation's open groups (`aggregate.rs`).
    Aggregate(AggregateState),
    /// Per-key histories for the functions the engine evaluates, then the generic path over
    /// their output for the rest.
    Mixed(IncrementalState, RollingState),
}

/// The first bytes of a snapshot of [`WindowState::Mixed`]: then the incremental part's length
/// and bytes, then the generic part's bytes.
const MIXED_MAGIC: &[u8; 6] = b"RSMIX1";

fn mixed_snapshot(incremental: &[u8], generic: &[u8]) -> Vec<u8> {
    let mut out = MIXED_MAGIC.to_vec();
    out.extend_from_slice(&(incremental.len() as u64).to_le_bytes());
    out.extend_from_slice(incremental);
    out.extend_from_slice(generic);
    out
}

/// The batches of the snapshots the incremental state after `batch_id` is restored from, in
/// order: its chain (a full snapshot, then the deltas after it) walked back by the snapshots'
/// headers, the incremental part starting `skip` bytes in.
async fn chain_of(checkpoint: &Checkpoint, batch_id: i64, skip: usize) -> Result<Vec<i64>> {
    // A delta's header: its format, then the batch it builds on.
    const HEAD: usize = 14;
    let mut chain = vec![batch_id];
    loop {
        let at = chain[chain.len() - 1];
        let head = checkpoint
            .state_head(at, (skip + HEAD) as u64)
            .await?
            .ok_or_else(|| missing_state(checkpoint, at))?;
        match head.get(skip..).and_then(IncrementalState::builds_on) {
            None => {
                chain.reverse();
                return Ok(chain);
            }
            Some(before) if before < at => chain.push(before),
            Some(_) => {
                return Err(JobError::Checkpoint {
                    location: format!("{}/state/{at}.arrow", checkpoint.location()),
                    reason: "a state snapshot building on itself or a later one".into(),
                });
            }
        }
    }
}

fn missing_state(checkpoint: &Checkpoint, id: i64) -> JobError {
    JobError::Checkpoint {
        location: format!("{}/state/{id}.arrow", checkpoint.location()),
        reason: "missing: the checkpoint was written by a job without these window functions; \
                 give this one a new checkpointLocation"
            .into(),
    }
}

/// A mixed snapshot's incremental and generic parts.
fn mixed_parts(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let rest = bytes.strip_prefix(MIXED_MAGIC.as_slice())?;
    let (len, rest) = rest.split_first_chunk::<8>()?;
    let len = usize::try_from(u64::from_le_bytes(*len)).ok()?;
    (len <= rest.len()).then(|| rest.split_at(len))
}

impl WindowState {
    /// The rows the query runs over this batch (see each path's `stage`).
    pub fn stage(&mut self, rows: Vec<RecordBatch>, watermark_ms: i64) -> Result<Vec<RecordBatch>> {
        match self {
            Self::Generic(s) => s.stage(rows, watermark_ms),
            Self::Incremental(s) => s.stage(rows, watermark_ms),
            Self::Aggregate(s) => s.stage(rows, watermark_ms),
            Self::Mixed(incremental, generic) => {
                let computed = incremental.stage(rows, watermark_ms)?;
                generic.stage(computed, watermark_ms)
            }
        }
    }

    /// The state after `batch_id`, for the checkpoint.
    pub fn snapshot(&mut self, batch_id: i64) -> Result<Snapshot> {
        match self {
            // Whole every time: a replay of this batch needs the one before.
            Self::Generic(s) => Ok(Snapshot {
                bytes: s.snapshot()?,
                drop_before: Some(batch_id - 1),
            }),
            Self::Incremental(s) => s.snapshot(batch_id),
            Self::Aggregate(s) => Ok(Snapshot {
                bytes: s.snapshot()?,
                drop_before: Some(batch_id - 1),
            }),
            // The incremental part's chain decides what can go: the generic part, whole each
            // time, needs only the batch before, which the chain always keeps.
            Self::Mixed(incremental, generic) => {
                let part = incremental.snapshot(batch_id)?;
                Ok(Snapshot {
                    bytes: mixed_snapshot(&part.bytes, &generic.snapshot()?),
                    drop_before: part.drop_before,
                })
            }
        }
    }

    /// Restores the state after `batch_id` from the checkpoint's snapshots. An incremental
    /// state's chain (a full snapshot, then the deltas after it) is found by the snapshots'
    /// headers and read one snapshot at a time: a restore holds the state and one snapshot's
    /// bytes, not the whole chain's.
    pub async fn restore(&mut self, checkpoint: &Checkpoint, batch_id: i64) -> Result<()> {
        let read = |id: i64| async move {
            checkpoint
                .state(id)
                .await?
                .ok_or_else(|| missing_state(checkpoint, id))
        };
        match self {
            Self::Generic(s) => s.restore(&read(batch_id).await?),
            Self::Aggregate(s) => s.restore(&read(batch_id).await?),
            Self::Incremental(s) => {
                let chain = chain_of(checkpoint, batch_id, 0).await?;
                let mut restoring = s.restore_full(&read(chain[0]).await?)?;
                for &id in &chain[1..] {
                    restoring.delta(&read(id).await?)?;
                }
                restoring.done(chain[0]);
                Ok(())
            }
            Self::Mixed(incremental, generic) => {
                let not_ours = |id: i64| JobError::Checkpoint {
                    location: format!("{}/state/{id}.arrow", checkpoint.location()),
                    reason: "not a snapshot of this query's window functions; give the job a \
                             new checkpointLocation"
                        .into(),
                };
                // The incremental part from the chain, the generic one whole from the last
                // snapshot.
                let chain = chain_of(checkpoint, batch_id, MIXED_MAGIC.len() + 8).await?;
                let base = chain[0];
                let mut restoring = {
                    let bytes = read(base).await?;
                    let (part, last) = mixed_parts(&bytes).ok_or_else(|| not_ours(base))?;
                    if base == batch_id {
                        generic.restore(last)?;
                    }
                    incremental.restore_full(part)?
                };
                for &id in &chain[1..] {
                    let bytes = read(id).await?;
                    let (part, last) = mixed_parts(&bytes).ok_or_else(|| not_ours(id))?;
                    restoring.delta(part)?;
                    if id == batch_id {
                        generic.restore(last)?;
                    }
                }
                restoring.done(base);
                Ok(())
            }
        }
    }

    /// Rows (or events) held.
    pub fn rows(&self) -> usize {
        match self {
            Self::Generic(s) => s.rows(),
            Self::Incremental(s) => s.rows(),
            Self::Aggregate(s) => s.rows(),
            Self::Mixed(incremental, generic) => incremental.rows() + generic.rows(),
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        match self {
            Self::Generic(s) => s.bytes(),
            Self::Incremental(s) => s.bytes(),
            Self::Aggregate(s) => s.bytes(),
            Self::Mixed(incremental, generic) => incremental.bytes() + generic.bytes(),
        }
    }
}

/// The rows a query with windows keeps between batches.
#[derive(Debug, Clone)]
pub struct RollingState {
    input: SchemaRef,
    time_index: usize,
    lookback_us: i64,
    /// Emitted rows that events still to come may have in their frames.
    history: Vec<RecordBatch>,
    /// Rows after the watermark, not emitted yet.
    pending: Vec<RecordBatch>,
}

impl RollingState {
    /// Empty state for rows of `input`, ordered by its column `time_index`.
    pub fn new(input: SchemaRef, time_index: usize, windows: &Windows) -> Self {
        Self {
            input,
            time_index,
            lookback_us: windows.lookback_us,
            history: Vec::new(),
            pending: Vec::new(),
        }
    }

    /// Rows held.
    pub fn rows(&self) -> usize {
        self.history
            .iter()
            .chain(&self.pending)
            .map(RecordBatch::num_rows)
            .sum()
    }

    /// Bytes held in memory.
    pub fn bytes(&self) -> usize {
        self.history
            .iter()
            .chain(&self.pending)
            .map(RecordBatch::get_array_memory_size)
            .sum()
    }

    /// The view a batch's query runs over: history, pending rows and the batch's new rows, with
    /// the emit column set on the rows whose event time the watermark after this batch
    /// (`watermark_ms`) has reached. The state moves on to what the next batch needs.
    pub fn stage(
        &mut self,
        new_rows: Vec<RecordBatch>,
        watermark_ms: i64,
    ) -> Result<Vec<RecordBatch>> {
        let limit_us = watermark_ms.saturating_mul(1000);
        let keep_from_us = limit_us.saturating_sub(self.lookback_us);
        let view = view_schema(&self.input);
        let mut staged = Vec::new();
        let mut history = Vec::new();
        let mut pending = Vec::new();
        for batch in std::mem::take(&mut self.history) {
            staged.push(with_emit(
                &view,
                &batch,
                &BooleanArray::from(vec![false; batch.num_rows()]),
            )?);
            let keep = self.time_at_least(&batch, keep_from_us)?;
            push_filtered(&mut history, &batch, &keep)?;
        }
        for batch in std::mem::take(&mut self.pending)
            .into_iter()
            .chain(new_rows)
        {
            // Emitted now: at or before the watermark. A row without an event time has no frame
            // to wait for.
            let waiting = self.time_after(&batch, limit_us)?;
            let emit = not(&waiting).map_err(JobError::arrow("marking emitted rows"))?;
            staged.push(with_emit(&view, &batch, &emit)?);
            push_filtered(&mut pending, &batch, &waiting)?;
            let keep = and(&emit, &self.time_at_least(&batch, keep_from_us)?)
                .map_err(JobError::arrow("keeping history"))?;
            push_filtered(&mut history, &batch, &keep)?;
        }
        self.history = history;
        self.pending = pending;
        Ok(staged)
    }

    fn times<'a>(
        &self,
        batch: &'a RecordBatch,
    ) -> Result<&'a datafusion::arrow::array::TimestampMicrosecondArray> {
        batch
            .column(self.time_index)
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or_else(|| JobError::internal("the watermark column is not a timestamp".into()))
    }

    fn bound(
        &self,
        batch: &RecordBatch,
        us: i64,
    ) -> Result<datafusion::arrow::array::Scalar<ArrayRef>> {
        let times = self.times(batch)?;
        let array: ArrayRef = Arc::new(
            datafusion::arrow::array::TimestampMicrosecondArray::from_value(us, 1)
                .with_timezone_opt(times.timezone()),
        );
        Ok(datafusion::arrow::array::Scalar::new(array))
    }

    /// Rows whose event time is after `us` (a null time is not).
    fn time_after(&self, batch: &RecordBatch, us: i64) -> Result<BooleanArray> {
        let mask = gt(self.times(batch)?, &self.bound(batch, us)?)
            .map_err(JobError::arrow("comparing event times"))?;
        Ok(no_nulls(mask))
    }

    /// Rows whose event time is at least `us` (a null time is not kept as history).
    fn time_at_least(&self, batch: &RecordBatch, us: i64) -> Result<BooleanArray> {
        let mask = gt_eq(self.times(batch)?, &self.bound(batch, us)?)
            .map_err(JobError::arrow("comparing event times"))?;
        Ok(no_nulls(mask))
    }

    /// The state as one Arrow IPC file: the rows and whether each is pending.
    pub fn snapshot(&self) -> Result<Vec<u8>> {
        let schema = snapshot_schema(&self.input);
        let mut flagged = Vec::new();
        for (batches, pending) in [(&self.history, false), (&self.pending, true)] {
            for b in batches {
                let flag = BooleanArray::from(vec![pending; b.num_rows()]);
                flagged.push(with_emit(&schema, b, &flag)?);
            }
        }
        crate::stream::checkpoint::ipc_file(&schema, &flagged)
    }

    /// Restores the state a snapshot holds.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        let (schema, batches) = crate::stream::checkpoint::read_ipc_file(bytes)?;
        let fitted =
            crate::stream::checkpoint::fit_rows(&snapshot_schema(&self.input), &schema, batches);
        let Some(batches) = fitted else {
            return Err(JobError::internal(
                "the state snapshot's rows do not match the query's input: the job's schema \
                 changed; give it a new checkpointLocation"
                    .into(),
            ));
        };
        self.history.clear();
        self.pending.clear();
        for mut batch in batches {
            let last = batch.num_columns() - 1;
            let pending = batch.column(last).as_boolean().clone();
            batch.remove_column(last);
            let history = not(&pending).map_err(JobError::arrow("reading the state snapshot"))?;
            push_filtered(&mut self.pending, &batch, &pending)?;
            push_filtered(&mut self.history, &batch, &history)?;
        }
        Ok(())
    }
}

fn snapshot_schema(input: &SchemaRef) -> SchemaRef {
    with_flag(input, "__riskstream_pending")
}

/// A comparison's result with nulls (rows without an event time) as false, ready to filter with.
pub(crate) fn no_nulls(mask: BooleanArray) -> BooleanArray {
    match mask.nulls() {
        None => mask,
        Some(nulls) => BooleanArray::new(mask.values() & nulls.inner(), None),
    }
}

fn with_emit(schema: &SchemaRef, batch: &RecordBatch, emit: &BooleanArray) -> Result<RecordBatch> {
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(emit.clone()));
    RecordBatch::try_new(Arc::clone(schema), columns).map_err(JobError::arrow("staging rows"))
}

fn push_filtered(
    out: &mut Vec<RecordBatch>,
    batch: &RecordBatch,
    mask: &BooleanArray,
) -> Result<()> {
    let n = mask.true_count();
    if n == batch.num_rows() {
        out.push(batch.clone());
    } else if n > 0 {
        out.push(filter_record_batch(batch, mask).map_err(JobError::arrow("keeping rows"))?);
    }
    Ok(())
}

#[cfg(test)]
#[expect(clippy::unwrap_used)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::TimeUnit;
    use datafusion::datasource::MemTable;

    #[test]
    fn lookbacks_are_said_in_days_and_smaller_units() {
        let day = 86_400_000_000;
        assert_eq!(lookback_text(90 * day), "90days");
        assert_eq!(lookback_text(day + 90 * 60_000_000), "1day 1h 30m");
        assert_eq!(lookback_text(1_000), "1ms");
        assert_eq!(lookback_text(0), "0s");
    }

    async fn analyzed(sql: &str, time_column: Option<&str>) -> Result<Option<Windows>> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("user_id", DataType::Utf8, false),
            Field::new("amount", DataType::Float64, false),
            Field::new(
                "event_time",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new(
                "seen_at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
        ]));
        let ctx = crate::scoring::session().unwrap();
        let table = MemTable::try_new(schema, vec![vec![]]).unwrap();
        ctx.register_table("t", Arc::new(table)).unwrap();
        let df = ctx.sql(sql).await.unwrap();
        analyze(df.logical_plan(), "t", time_column, "sql/features/t.sql")
    }

    const FRAME: &str = "PARTITION BY user_id ORDER BY event_time RANGE BETWEEN";

    #[tokio::test]
    async fn the_longest_lookback_of_the_frames_is_what_the_stream_keeps() {
        let sql = format!(
            "SELECT COUNT(*) OVER ({FRAME} INTERVAL '5' MINUTE PRECEDING AND CURRENT ROW) a,
                    AVG(amount) OVER ({FRAME} INTERVAL '1' HOUR PRECEDING AND CURRENT ROW) b
             FROM t"
        );
        let w = analyzed(&sql, Some("event_time")).await.unwrap().unwrap();
        assert_eq!(w.lookback_us, 3_600_000_000);
        assert_eq!(w.explain.len(), 2);
        assert!(w.explain[0].contains("generic"), "{}", w.explain[0]);
        assert_eq!(analyzed("SELECT * FROM t", None).await.unwrap(), None);
    }

    /// A GROUP BY of rows read beside the stream does not aggregate the stream's rows: the
    /// windows run beside it, whichever side of the join they are computed on.
    #[tokio::test]
    async fn a_grouped_table_beside_the_windows_is_not_a_grouping_of_the_stream() {
        let grouped = "g AS (SELECT k, MAX(v) AS v FROM (VALUES ('a', 1.0), ('a', 2.0)) AS s(k, v) \
                       GROUP BY k)";
        for sql in [
            format!(
                "WITH {grouped} SELECT COUNT(*) OVER ({FRAME} INTERVAL '5' MINUTE PRECEDING \
                 AND CURRENT ROW) AS n, g.v FROM t JOIN g ON g.k = t.user_id"
            ),
            format!(
                "WITH w AS (SELECT user_id, COUNT(*) OVER ({FRAME} INTERVAL '5' MINUTE \
                 PRECEDING AND CURRENT ROW) AS n FROM t), {grouped} \
                 SELECT w.n, g.v FROM w JOIN g ON g.k = w.user_id"
            ),
        ] {
            let w = analyzed(&sql, Some("event_time")).await.unwrap();
            assert_eq!(w.map(|w| w.lookback_us), Some(300_000_000), "{sql}");
        }
    }

    #[tokio::test]
    async fn what_a_stream_cannot_keep_is_refused_naming_the_file_and_the_function() {
        for (sql, time_column, reason) in [
            (
                format!("SELECT COUNT(*) OVER ({FRAME} INTERVAL '5' MINUTE PRECEDING AND CURRENT ROW) n FROM t"),
                None,
                "need a watermark",
            ),
            (
                "SELECT COUNT(*) OVER (PARTITION BY user_id ORDER BY event_time) n FROM t".into(),
                Some("event_time"),
                "fixed INTERVAL PRECEDING",
            ),
            (
                "SELECT LAG(amount) OVER (PARTITION BY user_id ORDER BY event_time) p FROM t".into(),
                Some("event_time"),
                "lag() needs every earlier row",
            ),
            (
                format!("SELECT approx_count_distinct(amount, 0.5) OVER ({FRAME} INTERVAL '1' MINUTE PRECEDING AND CURRENT ROW) n FROM t"),
                Some("event_time"),
                "relativeSD must be above 0 and at most 0.39",
            ),
            (
                "SELECT COUNT(*) OVER (PARTITION BY user_id ORDER BY seen_at RANGE BETWEEN INTERVAL '1' MINUTE PRECEDING AND CURRENT ROW) n FROM t".into(),
                Some("event_time"),
                "ORDER BY event_time",
            ),
            (
                "SELECT SUM(amount) OVER (PARTITION BY user_id ORDER BY event_time ROWS BETWEEN 3 PRECEDING AND CURRENT ROW) n FROM t".into(),
                Some("event_time"),
                "only RANGE frames",
            ),
            (
                format!("SELECT COUNT(*) OVER ({FRAME} INTERVAL '1' MINUTE PRECEDING AND INTERVAL '1' MINUTE FOLLOWING) n FROM t"),
                Some("event_time"),
                "FOLLOWING",
            ),
            (
                format!("SELECT user_id, MAX(c) FROM (SELECT user_id, COUNT(*) OVER ({FRAME} INTERVAL '1' MINUTE PRECEDING AND CURRENT ROW) c FROM t) GROUP BY user_id"),
                Some("event_time"),
                "GROUP BY",
            ),
        ] {
            let err = analyzed(&sql, time_column).await.unwrap_err().to_string();
            assert!(
                err.contains("sql/features/t.sql") && err.contains(reason),
                "{sql}: {err}"
            );
        }
    }
}
