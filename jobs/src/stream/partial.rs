//! Streaming aggregation over partial aggregates: when every aggregate of the query's GROUP BY
//! is COUNT, SUM, MIN, MAX or AVG (no DISTINCT, FILTER or ORDER BY) and its groups are fixed
//! (not sessions, which merge), the state is one row per open group holding the aggregates'
//! partial values (counts, sums, minima, maxima), as Spark keeps it, instead of the groups' input
//! rows. Each batch aggregates its new rows to partials, merges them with the state's, and
//! replaces the query's Aggregate with the merged groups' final values, so the SQL above it runs
//! unchanged.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StructArray, TimestampMicrosecondArray,
    UInt32Array,
};
use datafusion::arrow::compute::{filter_record_batch, take};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimestampMicrosecondType};
use datafusion::common::Column;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::datasource::{MemTable, provider_as_source};
use datafusion::execution::SessionState;
use datafusion::functions::core::expr_fn::get_field;
use datafusion::functions_aggregate::expr_fn;
use datafusion::logical_expr::expr::{AggregateFunction, AggregateFunctionParams};
use datafusion::logical_expr::{
    Aggregate, Expr, ExprSchemable, LogicalPlan, LogicalPlanBuilder, cast,
};

use riskstream_udfs::TimeWindow;

use crate::error::{JobError, Result};
use crate::stream::aggregate::{reads_stream, window_key};
use crate::stream::spec::OutputMode;

const TABLE: &str = "__riskstream_partials";
const CHANGED: &str = "__riskstream_changed";

/// How one aggregate is split into partials and put back together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Count,
    Sum,
    Min,
    Max,
    Avg,
}

/// Whether every aggregate of `agg` can be kept as partials (and its output columns have
/// distinct names, as the state's table needs). Sessions merge, so their groups are not fixed:
/// the caller keeps their rows whatever this says.
pub fn decomposable(agg: &Aggregate) -> bool {
    let mut names: Vec<&String> = agg.schema.fields().iter().map(|f| f.name()).collect();
    names.sort();
    names.dedup();
    names.len() == agg.schema.fields().len() && agg.aggr_expr.iter().all(|e| part_of(e).is_some())
}

fn part_of(expr: &Expr) -> Option<(Part, &AggregateFunction)> {
    let inner = match expr {
        Expr::Alias(a) => a.expr.as_ref(),
        other => other,
    };
    let Expr::AggregateFunction(f) = inner else {
        return None;
    };
    let AggregateFunctionParams {
        args,
        distinct,
        filter,
        order_by,
        ..
    } = &f.params;
    if *distinct || filter.is_some() || !order_by.is_empty() || args.len() != 1 {
        return None;
    }
    let part = match f.func.name() {
        "count" => Part::Count,
        "sum" => Part::Sum,
        "min" => Part::Min,
        "max" => Part::Max,
        "avg" => Part::Avg,
        _ => return None,
    };
    Some((part, f))
}

/// The partial aggregates of the open groups.
#[derive(Debug, Default)]
pub struct PartialState {
    /// One row per open group: the group's keys, then the partial columns (`__p<i>_<part>`).
    rows: Vec<RecordBatch>,
    schema: Option<SchemaRef>,
}

impl PartialState {
    /// Groups held.
    pub fn rows(&self) -> usize {
        self.rows.iter().map(RecordBatch::num_rows).sum()
    }

    /// Bytes held in memory.
    pub fn bytes(&self) -> usize {
        self.rows
            .iter()
            .map(RecordBatch::get_array_memory_size)
            .sum()
    }

    /// The state as one Arrow IPC file (empty before the first batch).
    pub fn snapshot(&self) -> Result<Vec<u8>> {
        match &self.schema {
            None => Ok(Vec::new()),
            Some(schema) => crate::stream::checkpoint::ipc_file(schema, &self.rows),
        }
    }

    /// Restores the state a snapshot holds.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        if bytes.is_empty() {
            *self = Self::default();
            return Ok(());
        }
        let (schema, rows) = crate::stream::checkpoint::read_ipc_file(bytes)?;
        self.schema = Some(schema);
        self.rows = rows;
        Ok(())
    }

    /// `plan` (analyzed, its view `view` holding only this batch's rows) with its Aggregate of
    /// the stream replaced by
    /// what `mode` writes of the groups merged with this batch: append, the windows whose end
    /// lies in `(watermarks.0, watermarks.1]` (ms); update, the groups this batch changed;
    /// complete, all. The state moves on to the groups the next watermark leaves open (all of
    /// them in complete mode or without windows).
    pub async fn run(
        &mut self,
        session: &SessionState,
        plan: LogicalPlan,
        view: &str,
        mode: OutputMode,
        watermarks: (i64, i64),
    ) -> Result<LogicalPlan> {
        let agg = aggregate_of(&plan, view)?;
        let parts: Vec<(Part, AggregateFunction)> = agg
            .aggr_expr
            .iter()
            .map(|e| part_of(e).map(|(p, f)| (p, f.clone())))
            .collect::<Option<_>>()
            .ok_or_else(|| JobError::internal("an aggregate without partials".into()))?;
        // The state names the group columns `__g<i>`: the names the Aggregate gives them would
        // meet the same names above it.
        let groups = agg.group_expr.len();
        let group_names: Vec<String> = (0..groups).map(|i| format!("__g{i}")).collect();
        let group_exprs: Vec<Expr> = agg
            .group_expr
            .iter()
            .zip(&group_names)
            .map(|(e, name)| e.clone().unalias().alias(name))
            .collect();
        let window = agg.group_expr.iter().position(|e| window_key(e).is_some());
        let split = match window {
            Some(w) => Some(WindowKey {
                index: w,
                name: group_names[w].clone(),
                data_type: agg.group_expr[w]
                    .get_type(agg.input.schema())
                    .map_err(internal)?,
            }),
            None => None,
        };

        // This batch's partials.
        let mut partial_exprs = Vec::new();
        for (i, (part, f)) in parts.iter().enumerate() {
            let arg = f.params.args[0].clone();
            let same =
                |name: &str| Expr::AggregateFunction(f.clone()).alias(format!("__p{i}_{name}"));
            match part {
                Part::Count => partial_exprs.push(same("n")),
                Part::Sum => partial_exprs.push(same("s")),
                Part::Min | Part::Max => partial_exprs.push(same("m")),
                Part::Avg => {
                    partial_exprs.push(
                        expr_fn::sum(cast(arg.clone(), DataType::Float64))
                            .alias(format!("__p{i}_s")),
                    );
                    partial_exprs.push(expr_fn::count(arg).alias(format!("__p{i}_n")));
                }
            }
        }
        // A sliding window's rows are aggregated per pane, then each pane's partials are put
        // in every window holding it: a row is hashed once, not once per window.
        let panes = per_pane(&agg)?;
        let input = match &panes {
            Some((plan, _)) => plan.clone(),
            None => agg.input.as_ref().clone(),
        };
        let partial_plan = grouped(
            LogicalPlanBuilder::from(input),
            group_exprs,
            split.as_ref(),
            partial_exprs,
        )?;
        let new_schema = joined_schema(partial_plan.schema().as_arrow(), split.as_ref());
        let schema = match &self.schema {
            Some(s) => Arc::clone(s),
            None => nullable(&new_schema),
        };
        let mut new = joined(
            collect(session, partial_plan).await?,
            split.as_ref(),
            &new_schema,
        )?;
        if let (Some((_, window)), Some(w)) = (&panes, &split) {
            new = new
                .iter()
                .map(|batch| pane_windows(batch, w.index, window))
                .collect::<Result<_>>()?;
        }
        // Merge: the state's groups and the batch's, flagged, summed per group.
        let flagged = with_flag(&schema);
        let mut input = Vec::new();
        for (batches, changed) in [(&self.rows, false), (&new, true)] {
            for b in batches.iter().filter(|b| b.num_rows() > 0) {
                let mut columns = b.columns().to_vec();
                columns.push(Arc::new(BooleanArray::from(vec![changed; b.num_rows()])));
                input.push(
                    RecordBatch::try_new(Arc::clone(&flagged), columns)
                        .map_err(JobError::arrow("merging partial aggregates"))?,
                );
            }
        }
        let table = MemTable::try_new(Arc::clone(&flagged), vec![input]).map_err(internal)?;
        let column = |name: &str| Expr::Column(Column::from_name(name));
        let keys: Vec<Expr> = group_names.iter().map(|n| column(n)).collect();
        let mut merges = Vec::new();
        for (i, (part, _)) in parts.iter().enumerate() {
            let named = |e: Expr, name: &str| e.alias(format!("__p{i}_{name}"));
            match part {
                Part::Count => merges.push(named(expr_fn::sum(column(&format!("__p{i}_n"))), "n")),
                Part::Sum => merges.push(named(expr_fn::sum(column(&format!("__p{i}_s"))), "s")),
                Part::Min => merges.push(named(expr_fn::min(column(&format!("__p{i}_m"))), "m")),
                Part::Max => merges.push(named(expr_fn::max(column(&format!("__p{i}_m"))), "m")),
                Part::Avg => {
                    merges.push(named(expr_fn::sum(column(&format!("__p{i}_s"))), "s"));
                    merges.push(named(expr_fn::sum(column(&format!("__p{i}_n"))), "n"));
                }
            }
        }
        merges.push(
            datafusion::functions_aggregate::expr_fn::bool_or(column(CHANGED)).alias(CHANGED),
        );
        let merge_plan = grouped(
            LogicalPlanBuilder::scan(TABLE, provider_as_source(Arc::new(table)), None)
                .map_err(internal)?,
            keys,
            split.as_ref(),
            merges,
        )?;
        let merged_schema = joined_schema(merge_plan.schema().as_arrow(), split.as_ref());
        let merged = joined(
            collect(session, merge_plan).await?,
            split.as_ref(),
            &merged_schema,
        )?;

        // What this batch writes, and what the state keeps.
        let (after_us, until_us) = (
            watermarks.0.saturating_mul(1000),
            watermarks.1.saturating_mul(1000),
        );
        let mut emitted = Vec::new();
        let mut kept = Vec::new();
        for batch in merged.iter().filter(|b| b.num_rows() > 0) {
            let ends = window.map(|w| window_ends(batch, w)).transpose()?;
            let changed = batch.column(batch.num_columns() - 1).as_boolean().clone();
            let emit: BooleanArray = match (mode, &ends) {
                (OutputMode::Complete, _) | (OutputMode::Append, None) => {
                    BooleanArray::from(vec![true; batch.num_rows()])
                }
                (OutputMode::Update, _) => changed.clone(),
                (OutputMode::Append, Some(ends)) => ends
                    .iter()
                    .map(|e| Some(e.is_some_and(|e| e > after_us && e <= until_us)))
                    .collect(),
            };
            let keep: BooleanArray = match (mode, &ends) {
                (OutputMode::Complete, _) | (_, None) => {
                    BooleanArray::from(vec![true; batch.num_rows()])
                }
                (_, Some(ends)) => ends
                    .iter()
                    .map(|e| Some(e.is_some_and(|e| e > until_us)))
                    .collect(),
            };
            let mut without_flag = batch.clone();
            without_flag.remove_column(batch.num_columns() - 1);
            let without_flag =
                RecordBatch::try_new(Arc::clone(&schema), without_flag.columns().to_vec())
                    .map_err(JobError::arrow("keeping partial aggregates"))?;
            emitted.push(filter(&without_flag, &emit)?);
            kept.push(filter(&without_flag, &keep)?);
        }
        // One compact batch: the merge's output batches are slices of larger buffers, which
        // would stay alive (and be counted) whole.
        kept.retain(|b| b.num_rows() > 0);
        self.rows = if kept.is_empty() {
            Vec::new()
        } else {
            vec![
                datafusion::arrow::compute::concat_batches(&schema, &kept)
                    .map_err(JobError::arrow("keeping partial aggregates"))?,
            ]
        };
        self.schema = Some(Arc::clone(&schema));

        // The Aggregate's output: the groups' keys and the aggregates' final values, named and
        // typed as the Aggregate names and types them.
        let table = MemTable::try_new(Arc::clone(&schema), vec![emitted]).map_err(internal)?;
        let scan = LogicalPlanBuilder::scan(TABLE, provider_as_source(Arc::new(table)), None)
            .and_then(|b| b.build())
            .map_err(internal)?;
        let mut finals = Vec::new();
        for (i, (q, field)) in agg.schema.iter().enumerate() {
            let value = if i < groups {
                column(&group_names[i])
            } else {
                let j = i - groups;
                match parts[j].0 {
                    Part::Count => column(&format!("__p{j}_n")),
                    Part::Sum => column(&format!("__p{j}_s")),
                    Part::Min | Part::Max => column(&format!("__p{j}_m")),
                    Part::Avg => {
                        column(&format!("__p{j}_s"))
                            / cast(column(&format!("__p{j}_n")), DataType::Float64)
                    }
                }
            };
            let typed = if value.get_type(scan.schema()).map_err(internal)? == *field.data_type() {
                value
            } else {
                cast(value, field.data_type().clone())
            };
            finals.push(typed.alias_qualified(q.cloned(), field.name()));
        }
        let replacement = LogicalPlanBuilder::from(scan)
            .project(finals)
            .and_then(|b| b.build())
            .map_err(internal)?;
        // Only the stream's: a GROUP BY over a table read beside it runs whole, as planned.
        plan.transform_up(|node| {
            Ok(match node {
                LogicalPlan::Aggregate(a) if reads_stream(&a.input, view) => {
                    Transformed::yes(replacement.clone())
                }
                other => Transformed::no(other),
            })
        })
        .map(|t| t.data)
        .map_err(internal)
    }
}

/// The streaming aggregation's Aggregate in `plan` (analysed): the one reading the stream's view
/// `view` (one only, as `aggregate::analyze` checks), not a GROUP BY over a table beside it.
fn aggregate_of(plan: &LogicalPlan, view: &str) -> Result<Aggregate> {
    let mut found = None;
    plan.apply(|node| {
        Ok(match node {
            LogicalPlan::Aggregate(a) if reads_stream(&a.input, view) => {
                found = Some(a.clone());
                TreeNodeRecursion::Stop
            }
            _ => TreeNodeRecursion::Continue,
        })
    })
    .map_err(internal)?;
    found.ok_or_else(|| JobError::internal("the aggregation has no Aggregate".into()))
}

/// The sliding window whose rows [`PartialState::run`] aggregates per pane in `plan` (analysed:
/// the query's plan, its view `view` holding any rows), for the job's plan output. The one
/// decision both go by, [`per_pane`].
pub fn pane_window(plan: &LogicalPlan, view: &str) -> Result<Option<TimeWindow>> {
    Ok(per_pane(&aggregate_of(plan, view)?)?.map(|(_, window)| window))
}

/// When `agg` groups by a sliding `window()` that neither its aggregates nor its other keys
/// read, its input aggregated per pane instead of per window (see
/// `riskstream_udfs::panes_of`), and the window.
fn per_pane(agg: &Aggregate) -> Result<Option<(LogicalPlan, TimeWindow)>> {
    match agg.group_expr.iter().position(|e| window_key(e).is_some()) {
        Some(w) if !reads_window(agg, w) => riskstream_udfs::panes_of(&agg.input).map_err(internal),
        _ => Ok(None),
    }
}

/// Whether an aggregate's argument, or a grouping key other than the window (at `window`),
/// reads the window: then each row's own windows are needed, not its pane.
fn reads_window(agg: &Aggregate, window: usize) -> bool {
    agg.aggr_expr
        .iter()
        .chain(
            agg.group_expr
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != window)
                .map(|(_, e)| e),
        )
        .any(|e| {
            e.column_refs()
                .iter()
                .any(|c| c.name == riskstream_udfs::WINDOW_COLUMN)
        })
}

/// Partials per pane (the window column at `index` holding each row's pane) as partials per
/// window: each row once for every window of `window` holding its pane. Rows of several panes
/// of one window stay apart; the merge with the state adds them up.
fn pane_windows(batch: &RecordBatch, index: usize, window: &TimeWindow) -> Result<RecordBatch> {
    let panes = batch
        .column(index)
        .as_struct_opt()
        .ok_or_else(|| JobError::internal("the window column is not a struct".into()))?;
    let starts = panes
        .column_by_name("start")
        .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
        .ok_or_else(|| JobError::internal("the pane has no start".into()))?;
    let mut rows = Vec::with_capacity(starts.len() * 2);
    let (mut window_starts, mut window_ends) = (Vec::new(), Vec::new());
    for (row, pane) in starts.values().iter().enumerate() {
        for (start, end) in window.windows_of(*pane) {
            rows.push(
                u32::try_from(row)
                    .map_err(|_| JobError::internal("too many panes in one batch".into()))?,
            );
            window_starts.push(start);
            window_ends.push(end);
        }
    }
    let rows = UInt32Array::from(rows);
    let tz = match starts.data_type() {
        DataType::Timestamp(_, tz) => tz.clone(),
        _ => None,
    };
    let windows = StructArray::try_new(
        panes.fields().clone(),
        vec![
            Arc::new(TimestampMicrosecondArray::from(window_starts).with_timezone_opt(tz.clone())),
            Arc::new(TimestampMicrosecondArray::from(window_ends).with_timezone_opt(tz)),
        ],
        None,
    )
    .map_err(JobError::arrow("putting panes in their windows"))?;
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (i, column) in batch.columns().iter().enumerate() {
        columns.push(if i == index {
            Arc::new(windows.clone()) as ArrayRef
        } else {
            take(column, &rows, None).map_err(JobError::arrow("putting panes in their windows"))?
        });
    }
    RecordBatch::try_new(batch.schema(), columns)
        .map_err(JobError::arrow("putting panes in their windows"))
}

/// The window among an aggregation's group keys: its place, the state's name for it, and its
/// struct type.
struct WindowKey {
    index: usize,
    name: String,
    data_type: DataType,
}

/// `input` aggregated by `keys` (each named as the state names it), with the window's key (`split`)
/// grouped as two columns, its `start` and `end` ([`joined`] puts them back together).
/// DataFusion groups primitive columns column by column, but a struct through its row format,
/// which cost about a fifth of the query's time.
fn grouped(
    input: LogicalPlanBuilder,
    keys: Vec<Expr>,
    split: Option<&WindowKey>,
    aggregates: Vec<Expr>,
) -> Result<LogicalPlan> {
    let mut group = Vec::new();
    for (i, key) in keys.into_iter().enumerate() {
        match split {
            Some(w) if w.index == i => {
                let inner = key.unalias();
                group.push(get_field(inner.clone(), "start").alias(format!("{}_start", w.name)));
                group.push(get_field(inner, "end").alias(format!("{}_end", w.name)));
            }
            _ => group.push(key),
        }
    }
    input
        .aggregate(group, aggregates)
        .and_then(|b| b.build())
        .map_err(internal)
}

/// The schema of [`grouped`]'s output once [`joined`]: the window's two columns one struct
/// again, under the key's name.
fn joined_schema(schema: &Schema, split: Option<&WindowKey>) -> SchemaRef {
    let Some(w) = split else {
        return Arc::new(schema.clone());
    };
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.drain(w.index..w.index + 2);
    fields.insert(w.index, Field::new(&w.name, w.data_type.clone(), true));
    Arc::new(Schema::new(fields))
}

/// [`grouped`]'s output batches with the window's `start` and `end` one struct column again, of
/// the key's type (built here rather than cast in the plan: a cast may not make a column's
/// fields non-null, and the window's fields are).
fn joined(
    batches: Vec<RecordBatch>,
    split: Option<&WindowKey>,
    schema: &SchemaRef,
) -> Result<Vec<RecordBatch>> {
    let Some(w) = split else {
        return Ok(batches);
    };
    let DataType::Struct(fields) = &w.data_type else {
        return Err(JobError::internal(format!(
            "the window key is a {}, not a struct",
            w.data_type
        )));
    };
    batches
        .into_iter()
        .map(|batch| {
            let mut columns = batch.columns().to_vec();
            let start = columns.remove(w.index);
            let end = columns.remove(w.index);
            let window = StructArray::try_new(fields.clone(), vec![start, end], None)
                .map_err(JobError::arrow("putting windows back together"))?;
            columns.insert(w.index, Arc::new(window));
            RecordBatch::try_new(Arc::clone(schema), columns)
                .map_err(JobError::arrow("putting windows back together"))
        })
        .collect()
}

fn internal(e: datafusion::error::DataFusionError) -> JobError {
    JobError::internal(format!("aggregating partials: {e}"))
}

async fn collect(session: &SessionState, plan: LogicalPlan) -> Result<Vec<RecordBatch>> {
    datafusion::dataframe::DataFrame::new(session.clone(), plan)
        .collect()
        .await
        .map_err(internal)
}

fn nullable(schema: &SchemaRef) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<Field>>(),
    ))
}

fn with_flag(schema: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(CHANGED, DataType::Boolean, false));
    Arc::new(Schema::new(fields))
}

/// The `end` of each group's window (column `index`, a struct), in microseconds.
fn window_ends(
    batch: &RecordBatch,
    index: usize,
) -> Result<datafusion::arrow::array::PrimitiveArray<TimestampMicrosecondType>> {
    let windows = batch
        .column(index)
        .as_struct_opt()
        .ok_or_else(|| JobError::internal("the window column is not a struct".into()))?;
    windows
        .column_by_name("end")
        .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
        .cloned()
        .ok_or_else(|| JobError::internal("the window has no end".into()))
}

fn filter(batch: &RecordBatch, mask: &BooleanArray) -> Result<RecordBatch> {
    filter_record_batch(batch, mask).map_err(JobError::arrow("selecting groups"))
}
