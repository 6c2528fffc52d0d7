//! Rolling features evaluated incrementally: for the common shape of feature SQL (COUNT, SUM,
//! AVG, MIN, MAX, VAR, STDDEV and more of a column, or of an expression over the row, and COVAR
//! and CORR of two, over
//! `RANGE BETWEEN INTERVAL ... PRECEDING AND CURRENT ROW` or
//! `... AND INTERVAL ... PRECEDING`, partitioned by columns or expressions of the row, over the
//! job's view), the
//! engine keeps per key only the event times and the argument columns within the lookback, and
//! computes each emitted event's frame from them. The query's window operators are then replaced
//! by a scan of the emitted rows with their computed columns, and the rest of the SQL runs as
//! written. Window functions of other shapes stay in window operators over that scan, on the
//! generic path (`rolling.rs`): it keeps the emitted rows, computed columns included, for their
//! frames. A query whose windows this path cannot replace at all runs on the generic path alone.
//!
//! By default emission follows the same rule as the generic path: an event is emitted once the
//! watermark after its batch has passed it, so the frames it sees are complete, and emitted event
//! times only grow from batch to batch. With `emit = "onArrival"` every on-time event is emitted
//! in the batch it arrives in, its frames read over the events received by the end of that batch;
//! an event out of order then joins its key's history in the middle, keeping it sorted, and the
//! watermark only says how far back history must reach.

use std::collections::{HashMap, VecDeque};
use std::io::{Cursor, Read};
use std::ops::Range;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, BooleanArray, BooleanBufferBuilder, Float64Array,
    Float64Builder, Int64Array, Int64Builder, RecordBatch, RecordBatchOptions,
    TimestampMicrosecondArray, UInt32Array,
};
use datafusion::arrow::buffer::{Buffer, NullBuffer, ScalarBuffer};
use datafusion::arrow::compute::kernels::boolean::not;
use datafusion::arrow::compute::{
    cast, concat, filter, filter_record_batch, sort_to_indices, take_record_batch,
};
use datafusion::arrow::datatypes::{
    DataType, Field, Float64Type, Int64Type, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType,
};
use datafusion::arrow::ipc::writer::FileWriter;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, TableReference};
use datafusion::datasource::{MemTable, provider_as_source};
use datafusion::execution::context::ExecutionProps;
use datafusion::logical_expr::expr::WindowFunction;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{
    Expr, Filter as LogicalFilter, LogicalPlan, LogicalPlanBuilder, Projection, SubqueryAlias,
    WindowFrameBound, WindowFrameUnits, WindowFunctionDefinition,
};
use datafusion::logical_expr::{ExprSchemable, Volatility};
use datafusion::optimizer::simplify_expressions::{ExprSimplifier, SimplifyContext};
use datafusion::physical_expr::{PhysicalExpr, create_physical_expr};
use datafusion::prelude::Column;

use rayon::prelude::*;

use riskstream_udfs::APPROX_COUNT_DISTINCT;

use crate::error::{JobError, Result};
use crate::stream::arrival::{ARRIVAL_VIEW, Arrival};
use crate::stream::row_filter::RowFilter;
use crate::stream::running::{CoTotals, Totals};

/// An aggregate the engine keeps incrementally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Agg {
    CountRows,
    Count,
    Sum,
    Avg,
    Min,
    Max,
    /// The value of the first or last event of the frame (`first_value`, `last_value`).
    First,
    Last,
    /// `COUNT(DISTINCT x)` and `approx_count_distinct(x)`, over hashes of the values.
    CountDistinct,
    /// `COUNT(*)` partitioned by the group's keys and one more column: the rows of the group's
    /// frame whose value of that column (the argument, hashed) is the row's own. Read from the
    /// coarser group's histories, the finer partitioning needs no index or history of its own.
    KeyRows,
    /// Sample and population standard deviation and variance.
    StddevSamp,
    StddevPop,
    VarSamp,
    VarPop,
    /// Of two columns: sample and population covariance, and Pearson's correlation.
    CovarSamp,
    CovarPop,
    Corr,
}

impl Agg {
    /// True for the functions of two arguments.
    fn pairs(self) -> bool {
        matches!(self, Agg::CovarSamp | Agg::CovarPop | Agg::Corr)
    }

    /// How many of the call's arguments are columns it reads (COUNT(*) reads none).
    fn arity(self) -> usize {
        match self {
            Agg::CountRows => 0,
            _ if self.pairs() => 2,
            _ => 1,
        }
    }
}

/// How an argument column is kept: as doubles, as 64-bit integers (timestamps included), or as
/// a 64-bit hash of each value (kept with the integers) for distinct counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    F64,
    I64,
    Hash,
}

/// One window function of the query.
#[derive(Debug, Clone)]
struct Spec {
    /// The output column's name, as the window operator names it.
    name: String,
    output: DataType,
    agg: Agg,
    /// Index into the group's kept argument columns.
    arg: Option<usize>,
    /// The second argument of a function of two (COVAR, CORR).
    arg2: Option<usize>,
    lookback_us: i64,
    /// How far before the event the frame ends (0: at the event, its peers included).
    end_us: i64,
}

/// Window functions partitioned by the same keys, sharing one keyed history.
#[derive(Debug, Clone)]
struct GroupPlan {
    /// The partition keys: columns of the view, or expressions over its row (`PARTITION BY
    /// substr(card_id, 1, 6)`, or a CTE's column computed so).
    keys: Vec<ArgSource>,
    /// The arguments kept per key, and how.
    args: Vec<ArgColumn>,
    specs: Vec<Spec>,
}

impl GroupPlan {
    /// The arguments in the order a snapshot lists their columns: the doubles, then the
    /// integers and hashes, each in the group's order.
    fn snapshot_order(&self) -> Vec<usize> {
        let doubles = (0..self.args.len()).filter(|&p| self.args[p].1 == Kind::F64);
        let others = (0..self.args.len()).filter(|&p| self.args[p].1 != Kind::F64);
        doubles.chain(others).collect()
    }
}

/// What the incremental path evaluates for a query.
#[derive(Debug, Clone)]
pub struct IncrementalPlan {
    view: String,
    time_index: usize,
    groups: Vec<GroupPlan>,
    /// The rows this path emits: the view's columns, then the computed ones.
    output: SchemaRef,
    lookback_us: i64,
    /// The window functions left to DataFusion's operator (the generic path, over the emitted
    /// rows and the rows kept for their frames), by output name, with their lookback.
    rest: Vec<(String, i64)>,
    /// The keys of each partitioning in the order versions that kept finer row counts in
    /// groups of their own wrote them to snapshots (see `fold_finer_counts`).
    unfolded: Vec<Vec<ArgSource>>,
    /// The WHERE between the view and the window operators (simplified), if any: only the
    /// rows it keeps join histories and are emitted. (Boxed: an `Expr` is large.)
    filter: Option<Box<Expr>>,
    /// What the window operators read, as planned: the view's scan under the WHEREs,
    /// projections and aliases between them (rebuilt over the computed rows when the windows
    /// are replaced). (Boxed: a plan is large.)
    below: Box<LogicalPlan>,
    /// What runs on each batch's rows as they arrive, if anything must (a join of the stream
    /// with tables beside it, a WHERE reading a subquery): then the state takes those rows, and
    /// the rest of this plan is planned over them (the view [`ARRIVAL_VIEW`]).
    arrival: Option<Box<Arrival>>,
}

impl IncrementalPlan {
    /// The plan for `plan`'s window functions (`plan` analyzed: the types of argument
    /// expressions coerced) over the view `view` (rows of `input`), ordered by the column
    /// `time_index`: those of the shapes it evaluates, and the rest left to the
    /// generic path (see [`rest`](Self::rest)). Why not, for the plan output, when it evaluates
    /// none of them, when the query's shape keeps it from replacing them (windows in
    /// subqueries, or not over the view's only scan), or when a partitioning's functions read
    /// more than 64 arguments: the generic path then takes them all.
    pub fn try_new(
        plan: &LogicalPlan,
        view: &str,
        input: &SchemaRef,
        time_index: usize,
    ) -> std::result::Result<Self, String> {
        Self::planned(plan, view, input, time_index, true)
    }

    /// [`try_new`](Self::try_new), with finer row counts read from coarser groups or (as
    /// versions before that did, for tests of their snapshots) each in a group of its own.
    fn planned(
        plan: &LogicalPlan,
        view: &str,
        input: &SchemaRef,
        time_index: usize,
        fold_counts: bool,
    ) -> std::result::Result<Self, String> {
        let odd = |what: &str| format!("{what} is not what the engine's rewrite expects");
        // Windows inside subquery expressions are left to the generic path: the rewrite below
        // does not reach into them.
        let [top] = window_tops(plan)[..] else {
            return Err(
                "window functions in more than one part of the query, or in a subquery".into(),
            );
        };
        // The window operators are the only reader of the view: it is empty when the query runs
        // (they read the computed rows), so any other scan of it would see nothing.
        let mut scans = 0;
        let _ = plan.apply_with_subqueries(|node| {
            if let LogicalPlan::TableScan(scan) = node
                && scan.table_name.table() == view
            {
                scans += 1;
            }
            Ok(TreeNodeRecursion::Continue)
        });
        if scans != 1 {
            return Err("the query reads the stream more than once".into());
        }
        // Between the windows and the view's scan: WHEREs, which pick the rows the windows see
        // (the state applies them to the view's rows before anything else), aliases, and
        // projections (a CTE computing columns, or keeping some), whose columns the windows'
        // arguments and the WHEREs above them are read through: each is taken as an expression
        // of the view's columns.
        if let Some(root) = arriving_root(top) {
            return Arrival::plan(plan, root, view, input, time_index).and_then(
                |(rewritten, arrival)| {
                    let flat = Arc::clone(&arrival.flat);
                    let mut planned = Self::planned(
                        &rewritten,
                        ARRIVAL_VIEW,
                        &flat,
                        arrival.time_index,
                        fold_counts,
                    )?;
                    planned.arrival = Some(Box::new(arrival));
                    Ok(planned)
                },
            );
        }
        let (exprs, below, chain, node) = under_windows(top);
        let scanned = match node {
            LogicalPlan::TableScan(scan) => scan,
            _ => {
                let below = match node {
                    LogicalPlan::Union(_) => "a union",
                    LogicalPlan::Aggregate(_) | LogicalPlan::Distinct(_) => "a grouping",
                    _ => "another operator",
                };
                return Err(format!(
                    "the windows read something other than the stream's own rows ({below} below \
                     them); computed over `{view}` itself (or a join of it with tables beside \
                     it), then combined, they run incrementally"
                ));
            }
        };
        if scanned.table_name.table() != view
            || scanned
                .projection
                .as_ref()
                .is_some_and(|p| p.len() != input.fields().len())
            || !scanned.filters.is_empty()
        {
            return Err(odd("the stream's scan"));
        }
        let top_schema = top.schema();
        let view_schema =
            DFSchema::try_from_qualified_schema(view, input).map_err(|e| e.to_string())?;
        let mut columns = ColumnExprs::of_view(&view_schema);
        let mut predicates = Vec::new();
        for node in chain.iter().rev() {
            match node {
                LogicalPlan::Filter(f) => predicates.push(inlined(&f.predicate, &columns)),
                LogicalPlan::Projection(p) => {
                    columns = ColumnExprs(
                        p.expr
                            .iter()
                            .zip(p.schema.iter())
                            .map(|(e, (q, f))| {
                                ((q.cloned(), f.name().clone()), inlined(e, &columns))
                            })
                            .collect(),
                    );
                }
                LogicalPlan::SubqueryAlias(a) => columns.requalify(&a.alias),
                _ => {}
            }
        }
        let filter = match predicates.into_iter().reduce(Expr::and) {
            Some(p) if row_local(&p) => Some(Box::new(
                simplified(&p, &view_schema).ok_or_else(|| odd("the WHERE below the windows"))?,
            )),
            Some(_) => {
                return Err(
                    "the WHERE below the windows reads a value fixed when the query is \
                            planned (such as now())"
                        .into(),
                );
            }
            None => None,
        };
        let mut groups: Vec<GroupPlan> = Vec::new();
        let mut rest = Vec::new();
        let mut lookback_us = 0;
        for expr in &exprs {
            let (name, wf) = match expr {
                Expr::Alias(a) => match a.expr.as_ref() {
                    Expr::WindowFunction(wf) => (a.name.clone(), wf.as_ref()),
                    _ => return Err(odd("a window expression")),
                },
                Expr::WindowFunction(wf) => (expr.schema_name().to_string(), wf.as_ref()),
                _ => return Err(odd("a window expression")),
            };
            let output = top_schema
                .field_with_unqualified_name(&name)
                .map_err(|e| e.to_string())?
                .data_type()
                .clone();
            let plain = inlined(&Expr::WindowFunction(Box::new(wf.clone())), &columns);
            let Expr::WindowFunction(plain) = &plain else {
                return Err(odd("a window expression"));
            };
            let Some((keys, args, spec)) =
                spec_of(name.clone(), output, plain, input, &view_schema)
            else {
                // The generic path's own check (`rolling::analyze`) has accepted the frame.
                let lookback = match &wf.params.window_frame.start_bound {
                    WindowFrameBound::Preceding(v) => riskstream_udfs::interval_us(v),
                    _ => None,
                }
                .ok_or_else(|| odd("a window frame"))?;
                rest.push((name, lookback));
                continue;
            };
            lookback_us = lookback_us.max(spec.lookback_us);
            let group = match groups.iter_mut().position(|g| g.keys == keys) {
                Some(i) => &mut groups[i],
                None => {
                    groups.push(GroupPlan {
                        keys,
                        args: Vec::new(),
                        specs: Vec::new(),
                    });
                    groups.last_mut().ok_or_else(|| odd("a partitioning"))?
                }
            };
            let mut at = Vec::with_capacity(args.len());
            for column in args {
                at.push(match group.args.iter().position(|a| *a == column) {
                    Some(i) => i,
                    None => {
                        group.args.push(column);
                        group.args.len() - 1
                    }
                });
            }
            let (arg, arg2) = (at.first().copied(), at.get(1).copied());
            group.specs.push(Spec { arg, arg2, ..spec });
        }
        let unfolded = groups.iter().map(|g| g.keys.clone()).collect();
        if fold_counts {
            fold_finer_counts(&mut groups, input, &view_schema);
        }
        if groups.is_empty() {
            return Err(
                "none of the window functions has a shape the engine evaluates incrementally"
                    .into(),
            );
        }
        // A history entry's validity word has a bit per argument column.
        if groups.iter().any(|g| g.args.len() > MAX_COLUMNS) {
            return Err(format!(
                "the functions of one partitioning read more than {MAX_COLUMNS} columns"
            ));
        }
        // The emitted rows: the view's columns, then the computed ones in the order the top
        // operator lists them.
        let computed = computed_names(&groups);
        let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
        for (qualifier, field) in top_schema.iter() {
            if qualifier.is_none() && computed.contains(&field.name().as_str()) {
                fields.push(field.as_ref().clone());
            }
        }
        if fields.len() != input.fields().len() + computed.len() {
            return Err(odd("the window operators' output"));
        }
        Ok(Self {
            view: view.to_string(),
            time_index,
            groups,
            output: Arc::new(Schema::new(fields)),
            lookback_us,
            rest,
            unfolded,
            filter,
            below: Box::new(below.clone()),
            arrival: None,
        })
    }

    /// The window functions left to the generic path, by output name, with their lookback
    /// (µs); empty when the engine evaluates them all.
    pub fn rest(&self) -> &[(String, i64)] {
        &self.rest
    }

    /// The rows this path emits: the view's columns and the computed window columns.
    pub fn output(&self) -> &SchemaRef {
        &self.output
    }

    /// The rows the state takes: the view's, or (`Some`) the stream's as they are joined with
    /// tables beside it, or filtered by a subquery, as the events arrive (see
    /// [`joined_rows`](Self::joined_rows)).
    pub fn joined_input(&self) -> Option<&SchemaRef> {
        self.arrival.as_ref().map(|a| &a.flat)
    }

    /// Where the event time is among the columns of the rows the state takes, and of those it
    /// emits.
    pub fn time_index(&self) -> usize {
        self.time_index
    }

    /// When the windows read a join of the stream or a WHERE reading a subquery: `plan` (the
    /// query planned over a batch's rows) cut down to that part, giving the rows the state takes
    /// of the batch.
    pub fn joined_rows(&self, plan: &LogicalPlan) -> Option<Result<LogicalPlan>> {
        self.arrival.as_ref().map(|a| a.joined(plan))
    }

    /// One line per window function, for the job's plan output.
    pub fn explain(&self) -> Vec<String> {
        self.groups
            .iter()
            .flat_map(|g| {
                g.specs.iter().map(move |s| {
                    let back = crate::stream::rolling::lookback_text(s.lookback_us);
                    let keys = g.keys.len();
                    let by = |source: &ArgSource| match source {
                        ArgSource::Column(c) => self.output.field(*c).name().clone(),
                        ArgSource::Expr(e) => e.to_string(),
                    };
                    match (s.agg, s.arg.map(|a| &g.args[a].0)) {
                        (Agg::KeyRows, Some(key)) => format!(
                            "{}: CountRows over {back} back, by {keys} key(s) and `{}`, \
                             read from the history of the {keys}, evaluated incrementally",
                            s.name,
                            by(key)
                        ),
                        _ => format!(
                            "{}: {:?} over {back} back, by {keys} key(s), evaluated \
                             incrementally",
                            s.name, s.agg
                        ),
                    }
                })
            })
            .chain(self.filter.iter().map(|f| {
                format!("over the rows where {f} (filtered as they arrive, before the state)")
            }))
            .chain(self.arrival.iter().map(|a| {
                format!(
                    "over the stream's rows as they arrive through {}, the tables as each batch \
                     reads them",
                    a.what
                )
            }))
            .collect()
    }

    /// Replaces the window operators of `plan` (the query planned over its view) by a scan of
    /// `rows`: emitted rows of the view with their computed window columns. The functions left
    /// to the generic path stay, in window operators over that scan; their rows then also carry
    /// the generic path's emit column (`rows` are what `rolling::RollingState::stage` made of
    /// the emitted rows).
    pub fn replace_windows(
        &self,
        plan: LogicalPlan,
        rows: Vec<RecordBatch>,
    ) -> Result<LogicalPlan> {
        let schema = if self.rest.is_empty() {
            Arc::clone(&self.output)
        } else {
            crate::stream::rolling::view_schema(&self.output)
        };
        let table = MemTable::try_new(Arc::clone(&schema), vec![rows])
            .map_err(|e| JobError::internal(format!("staging computed windows: {e}")))?;
        let source = provider_as_source(Arc::new(table));
        let view = self.view.clone();
        let computed = computed_names(&self.groups);
        let scan = LogicalPlanBuilder::scan(view.as_str(), Arc::clone(&source), None)
            .and_then(|b| b.build())
            .map_err(|e| JobError::internal(format!("staging computed windows: {e}")))?;
        // What the window operators read, over the computed rows: its WHEREs already applied,
        // its projections and aliases as planned, the computed columns carried through them.
        let mut input = self
            .below
            .as_ref()
            .clone()
            .transform_up(|node| {
                Ok(match node {
                    LogicalPlan::TableScan(t) if t.table_name.table() == view => {
                        Transformed::yes(scan.clone())
                    }
                    LogicalPlan::Filter(f) => Transformed::yes(Arc::unwrap_or_clone(f.input)),
                    other => Transformed::yes(other.recompute_schema()?),
                })
            })
            .map(|t| t.data)
            .map_err(|e| JobError::internal(format!("rebuilding the windows' input: {e}")))?;
        for name in &computed {
            input = crate::stream::rolling::carry_column(input, name)?;
        }
        // Every column as the window operators' input has it, then the computed ones in the
        // order the top operator lists them, unqualified as the window operators leave them
        // (then the generic path's emit column, if any).
        let emit = crate::stream::rolling::EMIT_COLUMN;
        let read = input.schema();
        let column = |name: &str| {
            read.qualified_field_with_unqualified_name(name)
                .map(|(qualifier, _)| Expr::Column(Column::new(qualifier.cloned(), name)))
                .map_err(|e| JobError::internal(format!("rebuilding the windows' input: {e}")))
        };
        let mut exprs = Vec::new();
        for (qualifier, f) in read.iter() {
            if !computed.contains(&f.name().as_str()) && f.name() != emit {
                exprs.push(Expr::Column(Column::new(qualifier.cloned(), f.name())));
            }
        }
        for f in &self.output.fields()[self.output.fields().len() - computed.len()..] {
            exprs.push(column(f.name())?.alias(f.name()));
        }
        if read.field_with_unqualified_name(emit).is_ok() {
            exprs.push(column(emit)?);
        }
        let input = LogicalPlanBuilder::from(input)
            .project(exprs)
            .and_then(|b| b.build())
            .map_err(|e| JobError::internal(format!("rebuilding the windows' input: {e}")))?;
        plan.transform_down(|node| {
            let LogicalPlan::Window(_) = &node else {
                return Ok(Transformed::no(node));
            };
            let mut replaced = input.clone();
            // The chain of window operators, top first; what the engine computes leaves them,
            // and those left with nothing go.
            let mut chain = Vec::new();
            let mut at = &node;
            while let LogicalPlan::Window(w) = at {
                chain.push(w.window_expr.clone());
                at = w.input.as_ref();
            }
            for exprs in chain.into_iter().rev() {
                let kept: Vec<Expr> = exprs
                    .into_iter()
                    .filter(|e| !computed.contains(&e.schema_name().to_string().as_str()))
                    .collect();
                if !kept.is_empty() {
                    replaced = LogicalPlanBuilder::from(replaced).window(kept)?.build()?;
                }
            }
            Ok(Transformed::new(replaced, true, TreeNodeRecursion::Jump))
        })
        // The computed columns keep the window operators' names, so nothing above changes.
        .map(|t| t.data)
        .map_err(|e| JobError::internal(format!("replacing the window operators: {e}")))
    }
}

/// Moves each group that only counts rows (`COUNT(*)`) and is partitioned by another group's
/// keys and one more column into that group, as counts of the rows sharing the row's value of
/// that column (`user_id, device_id` into `user_id`: "has this user used this device in the last
/// day"). A RANGE frame bounds rows by time alone, so the finer partition's frame is the coarser
/// one's rows with the row's value; the coarser group keeps that column's hashes (as for
/// `COUNT(DISTINCT ..)`), and the finer keys need no index or histories of their own, which
/// would cost a key lookup and a history per event. Values match by a 64-bit hash: two values
/// of a frame share one with odds of about n^2 / 2^65, as for distinct counts. Only columns whose
/// text tells their values apart (strings, integers, dates, timestamps, booleans) are read so.
fn fold_finer_counts(groups: &mut Vec<GroupPlan>, input: &SchemaRef, view: &DFSchema) {
    let mut g = 0;
    while g < groups.len() {
        let finer = &groups[g];
        let coarser = finer
            .specs
            .iter()
            .all(|s| s.agg == Agg::CountRows)
            .then(|| {
                groups.iter().enumerate().find_map(|(p, coarser)| {
                    let extra: Vec<&ArgSource> = finer
                        .keys
                        .iter()
                        .filter(|k| !coarser.keys.contains(k))
                        .collect();
                    let nested = p != g
                        && !coarser.keys.is_empty()
                        && coarser.keys.len() + 1 == finer.keys.len()
                        && coarser.keys.iter().all(|k| finer.keys.contains(k));
                    match extra[..] {
                        [key]
                            if nested
                                && source_type(key, input, view)
                                    .is_some_and(|t| hashed_as_text(&t)) =>
                        {
                            Some((p, key.clone()))
                        }
                        _ => None,
                    }
                })
            })
            .flatten();
        let Some((p, key)) = coarser else {
            g += 1;
            continue;
        };
        let finer = groups.remove(g);
        let coarser = &mut groups[if p > g { p - 1 } else { p }];
        let hashed = (key, Kind::Hash);
        let arg = match coarser.args.iter().position(|a| *a == hashed) {
            Some(i) => i,
            None => {
                coarser.args.push(hashed);
                coarser.args.len() - 1
            }
        };
        coarser.specs.extend(finer.specs.into_iter().map(|s| Spec {
            agg: Agg::KeyRows,
            arg: Some(arg),
            ..s
        }));
    }
}

/// True for the types whose values are equal when their texts are (floats are left out: their
/// text and SQL's equality of them need not agree).
fn hashed_as_text(t: &DataType) -> bool {
    t.is_integer()
        || matches!(
            t,
            DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Utf8View
                | DataType::Boolean
                | DataType::Date32
                | DataType::Date64
                | DataType::Timestamp(..)
        )
}

/// The names of the columns the groups' window functions compute.
fn computed_names(groups: &[GroupPlan]) -> Vec<&str> {
    groups
        .iter()
        .flat_map(|g| g.specs.iter().map(|s| s.name.as_str()))
        .collect()
}

/// What a window function reads, or is partitioned by: a column of the view, or an expression
/// over the view's columns (`SUM(amount * rate)`, `COUNT(CASE WHEN ... END)`, `PARTITION BY
/// substr(card_id, 1, 6)`), evaluated on each batch's due rows and kept like a column.
#[derive(Debug, Clone, PartialEq)]
enum ArgSource {
    Column(usize),
    Expr(Expr),
}

/// The type of what `source` reads from rows of `input` (the view `view`).
fn source_type(source: &ArgSource, input: &Schema, view: &DFSchema) -> Option<DataType> {
    match source {
        ArgSource::Column(index) => Some(input.field(*index).data_type().clone()),
        ArgSource::Expr(e) => e.get_type(view).ok(),
    }
}

/// `e` as a window's argument or key: the view's column it names, or else, when its value
/// depends on its row alone, the expression as the physical planner takes it; `None` if neither.
fn source_of(e: &Expr, input: &Schema, view: &DFSchema) -> Option<ArgSource> {
    match e {
        Expr::Column(c) => input.index_of(&c.name).ok().map(ArgSource::Column),
        e if row_local(e) => simplified(e, view).map(ArgSource::Expr),
        _ => None,
    }
}

/// An argument a window function reads, and how it is kept.
type ArgColumn = (ArgSource, Kind);

/// The chains of window operators of `plan` not inside a subquery expression, each by its top.
fn window_tops(plan: &LogicalPlan) -> Vec<&LogicalPlan> {
    let mut tops = Vec::new();
    let _ = plan.apply(|node| {
        if let LogicalPlan::Window(_) = node {
            tops.push(node);
            return Ok(TreeNodeRecursion::Jump);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    tops
}

/// Under the chain of window operators `top`: their expressions, the node they read, the
/// WHEREs, aliases and projections from there down, and the first other node below them.
fn under_windows(top: &LogicalPlan) -> (Vec<Expr>, &LogicalPlan, Vec<&LogicalPlan>, &LogicalPlan) {
    let mut exprs = Vec::new();
    let mut node = top;
    while let LogicalPlan::Window(w) = node {
        exprs.extend(w.window_expr.iter().cloned());
        node = w.input.as_ref();
    }
    let below = node;
    let mut chain = Vec::new();
    while let LogicalPlan::Filter(LogicalFilter { input, .. })
    | LogicalPlan::SubqueryAlias(SubqueryAlias { input, .. })
    | LogicalPlan::Projection(Projection { input, .. }) = node
    {
        chain.push(node);
        node = input.as_ref();
    }
    (exprs, below, chain, node)
}

/// Of the nodes between the chain of windows `top` and the stream's scan, the highest that must
/// run on each batch's rows as they arrive, before the state (see `arrival.rs`): a WHERE reading
/// a subquery, or else a join of the stream with tables beside it, with the WHEREs right above
/// it: a comma join's condition (`FROM transactions t, merchants m WHERE t.merchant_id = m.id`)
/// is then planned into the join, not applied to a cross product of the batch and the table.
fn arriving_root(top: &LogicalPlan) -> Option<&LogicalPlan> {
    let (_, _, chain, bottom) = under_windows(top);
    if let Some(filter) = chain
        .iter()
        .find(|n| matches!(n, LogicalPlan::Filter(f) if filters_by_subquery(&f.predicate)))
    {
        return Some(filter);
    }
    if !matches!(bottom, LogicalPlan::Join(_)) {
        return None;
    }
    let wheres = chain
        .iter()
        .rev()
        .take_while(|n| matches!(n, LogicalPlan::Filter(_)));
    Some(wheres.last().copied().unwrap_or(bottom))
}

/// [`arriving_root`] of the windows of `plan` (one chain of them).
pub(crate) fn arriving_in(plan: &LogicalPlan) -> Option<&LogicalPlan> {
    match window_tops(plan)[..] {
        [top] => arriving_root(top),
        _ => None,
    }
}

/// True for an expression whose value depends on its row alone: no subquery, aggregate, window
/// function, variable, or function that is not immutable (`random()`, or `now()`, fixed when
/// planned, would differ between a stream and a batch).
pub(crate) fn row_local(e: &Expr) -> bool {
    !e.exists(|e| Ok(subquery(e) || not_of_the_row(e)))
        .unwrap_or(true)
}

/// True for a WHERE that reads a subquery (`user_id IN (SELECT ...)`) and is otherwise fixed by
/// its row: a batch's rows can be filtered by it as they arrive (the subquery reading the
/// tables as that batch does), as Spark evaluates a stream's filter each batch.
pub(crate) fn filters_by_subquery(e: &Expr) -> bool {
    e.exists(|e| Ok(subquery(e))).unwrap_or(false)
        && !e.exists(|e| Ok(not_of_the_row(e))).unwrap_or(true)
}

fn subquery(e: &Expr) -> bool {
    matches!(
        e,
        Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_)
    )
}

/// An expression node whose value is not its row's alone (a subquery apart).
fn not_of_the_row(e: &Expr) -> bool {
    match e {
        Expr::ScalarFunction(f) => f.func.signature().volatility != Volatility::Immutable,
        Expr::OuterReferenceColumn(..)
        | Expr::AggregateFunction(_)
        | Expr::WindowFunction(_)
        | Expr::ScalarVariable(..)
        | Expr::Placeholder(_) => true,
        _ => false,
    }
}

/// `e` with its columns named without their table: between the view and the windows the same
/// column may carry the view's name or an alias.
pub(crate) fn unqualified(e: &Expr) -> Expr {
    e.clone()
        .transform(|e| {
            Ok(match e {
                Expr::Column(c) if c.relation.is_some() => {
                    Transformed::yes(Expr::Column(Column::from_name(c.name)))
                }
                other => Transformed::no(other),
            })
        })
        .map_or_else(|_| e.clone(), |t| t.data)
}

/// The columns of a node between the view and the windows, by qualifier and name, each as an
/// expression of the view's columns (unqualified).
struct ColumnExprs(Vec<((Option<TableReference>, String), Expr)>);

impl ColumnExprs {
    /// The view's own columns.
    fn of_view(view: &DFSchema) -> Self {
        Self(
            view.iter()
                .map(|(q, f)| {
                    let name = f.name().clone();
                    (
                        (q.cloned(), name.clone()),
                        Expr::Column(Column::from_name(name)),
                    )
                })
                .collect(),
        )
    }

    /// The same columns under an alias (`FROM transactions t`).
    fn requalify(&mut self, alias: &TableReference) {
        for ((q, _), _) in &mut self.0 {
            *q = Some(alias.clone());
        }
    }

    /// The expression of column `c`: the one of its name, or, where two share it (a join's
    /// two sides), the one of its qualifier too.
    fn get(&self, c: &Column) -> Option<&Expr> {
        let mut named = self.0.iter().filter(|((_, name), _)| *name == c.name);
        let first = named.next()?;
        match named.next() {
            None => Some(&first.1),
            Some(_) => self
                .0
                .iter()
                .find(|((q, name), _)| *name == c.name && *q == c.relation)
                .map(|(_, e)| e),
        }
    }
}

/// `e` (aliases dropped) with each column replaced by its expression in `columns`: an
/// expression of the view's columns, unqualified.
fn inlined(e: &Expr, columns: &ColumnExprs) -> Expr {
    e.clone()
        .unalias_nested()
        .data
        .transform(|e| {
            Ok(match e {
                Expr::Column(c) => match columns.get(&c) {
                    Some(inner) => Transformed::yes(inner.clone()),
                    None => Transformed::no(Expr::Column(c)),
                },
                other => Transformed::no(other),
            })
        })
        .map_or_else(|_| e.clone(), |t| t.data)
}

/// `e` as the physical planner takes it: simplified, which some functions need before they can
/// run (`coalesce` becomes a CASE); `None` if it cannot be.
fn simplified(e: &Expr, view: &DFSchema) -> Option<Expr> {
    let context = SimplifyContext::builder()
        .with_schema(Arc::new(view.clone()))
        .build();
    ExprSimplifier::new(context).simplify(e.clone()).ok()
}

fn spec_of(
    name: String,
    output: DataType,
    wf: &WindowFunction,
    input: &SchemaRef,
    view: &DFSchema,
) -> Option<(Vec<ArgSource>, Vec<ArgColumn>, Spec)> {
    let WindowFunction { fun, params } = wf;
    let function = match fun {
        WindowFunctionDefinition::AggregateUDF(f) => f.name(),
        WindowFunctionDefinition::WindowUDF(f) => f.name(),
    };
    if params.filter.is_some() || (params.distinct && function != "count") {
        return None;
    }
    // Keys the row format encodes (all but a few nested types).
    let keys = params
        .partition_by
        .iter()
        .map(|e| {
            let key = source_of(e, input, view)?;
            let t = source_type(&key, input, view)?;
            RowConverter::supports_fields(&[SortField::new(t)]).then_some(key)
        })
        .collect::<Option<Vec<_>>>()?;
    let agg = match (function, params.args.as_slice()) {
        ("count", [_]) if params.distinct => Agg::CountDistinct,
        // Spark's sketch, counted exactly (by the values' hashes, as COUNT(DISTINCT) is): within
        // any error it allows. Its second argument (the sketch's precision) is not a column.
        (APPROX_COUNT_DISTINCT, [_] | [_, Expr::Literal(..)]) => Agg::CountDistinct,
        ("count", [Expr::Literal(v, _)]) if !v.is_null() => Agg::CountRows,
        ("count", [_]) => Agg::Count,
        ("sum", [_]) => Agg::Sum,
        ("avg", [_]) => Agg::Avg,
        ("min", [_]) => Agg::Min,
        ("max", [_]) => Agg::Max,
        ("first_value", [_]) if params.null_treatment.is_none() => Agg::First,
        ("last_value", [_]) if params.null_treatment.is_none() => Agg::Last,
        ("stddev", [_]) => Agg::StddevSamp,
        ("stddev_pop", [_]) => Agg::StddevPop,
        ("var", [_]) => Agg::VarSamp,
        ("var_pop", [_]) => Agg::VarPop,
        ("covar_samp", [_, _]) => Agg::CovarSamp,
        ("covar_pop", [_, _]) => Agg::CovarPop,
        ("corr", [_, _]) => Agg::Corr,
        _ => return None,
    };
    let read = |e: &Expr| {
        let source = source_of(e, input, view)?;
        let arg_type = source_type(&source, input, view)?;
        let kind = match arg_type {
            _ if agg == Agg::CountDistinct => Kind::Hash,
            DataType::Float64 => Kind::F64,
            // Covariances read doubles (DataFusion casts their arguments to them).
            _ if agg.pairs() => return None,
            DataType::Int64 | DataType::Timestamp(TimeUnit::Microsecond, _) => Kind::I64,
            _ => return None,
        };
        Some(((source, kind), arg_type))
    };
    let (args, arg_type): (Vec<ArgColumn>, Option<DataType>) = match agg {
        Agg::CountRows => (Vec::new(), None),
        _ => {
            let read: Vec<(ArgColumn, DataType)> = params.args[..agg.arity()]
                .iter()
                .map(read)
                .collect::<Option<_>>()?;
            let arg_type = read.first().map(|(_, t)| t.clone());
            (read.into_iter().map(|(arg, _)| arg).collect(), arg_type)
        }
    };
    // The output types these aggregates give in DataFusion; anything else is left to it.
    let expected = match (agg, &arg_type) {
        (Agg::CountRows | Agg::Count | Agg::CountDistinct, _) => DataType::Int64,
        (
            Agg::Avg
            | Agg::StddevSamp
            | Agg::StddevPop
            | Agg::VarSamp
            | Agg::VarPop
            | Agg::CovarSamp
            | Agg::CovarPop
            | Agg::Corr,
            _,
        ) => DataType::Float64,
        (Agg::First | Agg::Last, Some(t)) => t.clone(),
        (Agg::Sum, Some(DataType::Float64)) => DataType::Float64,
        (Agg::Sum, Some(DataType::Int64)) => DataType::Int64,
        (Agg::Min | Agg::Max, Some(t)) => t.clone(),
        _ => return None,
    };
    if output != expected {
        return None;
    }
    let frame = &params.window_frame;
    if frame.units != WindowFrameUnits::Range {
        return None;
    }
    let lookback_us = match &frame.start_bound {
        WindowFrameBound::Preceding(v) => riskstream_udfs::interval_us(v)?,
        _ => return None,
    };
    let end_us = match &frame.end_bound {
        WindowFrameBound::CurrentRow => 0,
        WindowFrameBound::Preceding(v) => riskstream_udfs::interval_us(v).filter(|us| *us >= 0)?,
        WindowFrameBound::Following(_) => return None,
    };
    Some((
        keys,
        args,
        Spec {
            name,
            output,
            agg,
            arg: None,
            arg2: None,
            lookback_us,
            end_us,
        },
    ))
}

/// One key's kept events in time order, all in one ring buffer of words: entry after entry, each
/// `stride` words long — the event time, then (when the group keeps argument columns) a word of
/// validity bits (bit `c` set: column `c` holds a value), then the columns' values, doubles by
/// their bits. A million keys with a few entries each cost mostly what each key costs: one
/// buffer per key, instead of one per column of 16-byte `Option`s, is what keeps that small.
#[derive(Debug, Default, Clone)]
struct History {
    words: VecDeque<u64>,
    /// The key's frames as its last row left them, once the history is long
    /// ([`CARRY_FROM`] entries): the key's next row slides them on instead of walking each of
    /// its frames from its start, so a key's rows cost the same however much history its
    /// frames hold. Moved past the entries the history drops; dropped when an entry joins
    /// before the last (an event out of order, emitted on arrival).
    #[expect(
        clippy::box_collection,
        reason = "one word per key rather than three: most keys carry none"
    )]
    carried: Option<Box<Vec<Frame>>>,
}

/// Entries a key's history holds before its frames are carried from one batch to the next:
/// a shorter history is walked again for less than carried frames cost to keep.
#[cfg(not(test))]
const CARRY_FROM: usize = 64;
/// Every key carries its frames in tests, so that the invariants cover carried frames.
#[cfg(test)]
const CARRY_FROM: usize = 1;

/// A history with its group's entry width, as frames read it.
#[derive(Clone, Copy)]
struct Entries<'a> {
    h: &'a History,
    stride: usize,
}

impl Entries<'_> {
    fn f64(self, i: usize, c: usize) -> Option<f64> {
        self.h.word(self.stride, i, c).map(f64::from_bits)
    }

    fn i64(self, i: usize, c: usize) -> Option<i64> {
        self.h.word(self.stride, i, c).map(|w| w as i64)
    }
}

/// Argument columns a group can keep: one validity word holds their bits.
const MAX_COLUMNS: usize = 64;

/// The words one entry takes, for a group keeping `columns` argument columns.
fn stride_of(columns: usize) -> usize {
    if columns == 0 { 1 } else { 2 + columns }
}

/// Each row's history entry (its time, the validity bits of its arguments, their words; as a
/// history holds it), row after row, `stride` words each, made in batch order. Rows join
/// their keys' histories key by key, in no order of their own: each then reads one entry,
/// where reading a word from each argument column would wait for memory once per column.
fn entries_of(times: &[i64], args: &[Arg], stride: usize) -> Vec<u64> {
    let mut words = vec![0u64; times.len() * stride];
    for (row, (entry, &time)) in words.chunks_exact_mut(stride).zip(times).enumerate() {
        entry[0] = time as u64;
        for (c, arg) in args.iter().enumerate() {
            if let Some(word) = arg.word(row) {
                entry[1] |= 1 << c;
                entry[2 + c] = word;
            }
        }
    }
    words
}

impl History {
    /// Entries held, at `stride` words each.
    fn len(&self, stride: usize) -> usize {
        self.words.len() / stride
    }

    fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    fn time(&self, stride: usize, i: usize) -> i64 {
        self.words[i * stride] as i64
    }

    /// Column `c` of entry `i`, as its raw word; `None` when null.
    fn word(&self, stride: usize, i: usize, c: usize) -> Option<u64> {
        let at = i * stride;
        (self.words[at + 1] >> c & 1 == 1).then(|| self.words[at + 2 + c])
    }

    /// How many entries come before the first whose time is not `before`.
    fn partition_point(&self, stride: usize, before: impl Fn(i64) -> bool) -> usize {
        let (mut lo, mut hi) = (0, self.len(stride));
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if before(self.time(stride, mid)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// The first entry from `at` on whose time is not `before` (or the end).
    fn step_while(&self, stride: usize, mut at: usize, before: impl Fn(i64) -> bool) -> usize {
        let len = self.len(stride);
        while at < len && before(self.time(stride, at)) {
            at += 1;
        }
        at
    }

    /// Adds `entry` (`stride` words, its time first) at its place in time order: after the
    /// entries at the same or an earlier time. Entries mostly arrive in order, so this is
    /// mostly a push at the back.
    fn insert(&mut self, stride: usize, entry: &[u64]) {
        let time = entry[0] as i64;
        let len = self.len(stride);
        let at = if len > 0 && self.time(stride, len - 1) > time {
            self.partition_point(stride, |t| t <= time)
        } else {
            len
        };
        // Carried frames were left by the key's latest event: one before it (out of order,
        // emitted on arrival) would move them back.
        if at < len {
            self.carried = None;
        }
        // Growing by half, not doubling, keeps the slack of a million small buffers down.
        if self.words.len() + stride > self.words.capacity() {
            self.words
                .reserve_exact((self.words.capacity() / 2).max(2 * stride));
        }
        if at == len {
            self.words.extend(entry);
        } else {
            // Out of order: into the middle, word by word.
            for (k, &word) in entry.iter().enumerate() {
                self.words.insert(at * stride + k, word);
            }
        }
    }

    /// Drops the entries before `keep_from`, and gives back memory the history no longer
    /// needs. Carried frames (of `plan`) first let those entries leave: no later row's frame
    /// reaches them.
    fn cut_before(&mut self, stride: usize, keep_from: i64, plan: &FrameNeeds) -> usize {
        let cut = self.partition_point(stride, |t| t < keep_from);
        if cut == 0 {
            return 0;
        }
        if let Some(mut frames) = self.carried.take() {
            let h = Entries { h: self, stride };
            for (k, frame) in frames.iter_mut().enumerate() {
                let bounds = (cut.max(frame.lo), cut.max(frame.hi));
                frame.slide(h, bounds, false, plan.wants(k));
                frame.shift(cut);
            }
            self.carried = Some(frames);
        }
        self.words.drain(..cut * stride);
        if self.words.is_empty() {
            *self = Self::default();
            return cut;
        }
        if self.words.len() * 4 < self.words.capacity() {
            self.words.shrink_to(self.words.len() * 2);
        }
        // A key gone quiet walks its few entries again rather than keep frames sized for many.
        if self.len(stride) * 4 < CARRY_FROM {
            self.carried = None;
        }
        cut
    }

    fn bytes(&self) -> usize {
        let carried = self.carried.as_ref().map_or(0, |frames| {
            std::mem::size_of::<Vec<Frame>>() + frames.iter().map(Frame::bytes).sum::<usize>()
        });
        std::mem::size_of::<Self>() + self.words.capacity() * 8 + carried
    }

    /// Keeps `frames`, the key's as its last row of the batch left them, for its next rows
    /// when the history is long enough; gives back in their place frames for the next key
    /// (the ones [`take_carried`](Self::take_carried) left, or `fresh` ones).
    fn carry(&mut self, stride: usize, frames: &mut Vec<Frame>, fresh: impl Fn() -> Vec<Frame>) {
        let long = self.len(stride) >= CARRY_FROM;
        match self.carried.as_deref_mut() {
            Some(kept) => std::mem::swap(kept, frames),
            None if long => self.carried = Some(Box::new(std::mem::replace(frames, fresh()))),
            None => {}
        }
    }

    /// Swaps the key's carried frames into `frames` (which [`carry`](Self::carry) puts back):
    /// false when it has none, and its first row must walk its frames from their starts.
    fn take_carried(&mut self, frames: &mut Vec<Frame>) -> bool {
        match self.carried.as_deref_mut() {
            Some(kept) => {
                std::mem::swap(kept, frames);
                true
            }
            None => false,
        }
    }
}

/// The metadata key of a snapshot's history part naming its group's key and argument columns.
const GROUP_COLUMNS: &str = "riskstream.group.columns";

/// A group's keyed histories: each key's history in an arena slot, found by its encoded key,
/// which is held once (in the index).
struct GroupState {
    plan: GroupPlan,
    /// The group's frames and what each keeps, derived once from its plan.
    frames: FrameNeeds,
    /// The group's key and argument columns by name, as its snapshots name them.
    columns: String,
    /// How each key, and each argument, is read from a batch's rows.
    key_readers: Vec<ArgReader>,
    readers: Vec<ArgReader>,
    /// Words per history entry.
    stride: usize,
    /// The longest lookback of the group's frames.
    lookback_us: i64,
    converter: RowConverter,
    index: HashMap<Box<[u8]>, u32, foldhash::fast::RandomState>,
    histories: Vec<History>,
    /// Slots whose key's history ran out, for the next new keys.
    free: Vec<u32>,
    /// The entries the histories hold, the bytes they hold ([`History::bytes`] over every
    /// slot) and the bytes of the index's keys, kept as they change: a batch of a few rows
    /// does not visit every key to report the state's size.
    entries: usize,
    held: usize,
    key_bytes: usize,
    /// The watermark the histories were last cut at.
    evicted_at: i64,
    /// How long the group's last batch took: groups start longest first.
    last_cost: std::time::Duration,
}

/// Each group's computed columns over a batch's due `rows`. Groups keep their own histories, so
/// they are evaluated side by side, one per core: while a batch's windows are computed, the next
/// batch's decoding leaves most of the other core idle. The threads are rayon's, which outlive
/// the batch: what a group allocates as it grows is reused by the same threads batch after batch
/// rather than left to the allocator by threads that end.
///
/// One group (a user's dozens of functions) can cost as much as all the others: each thread
/// takes the next group as it frees up, the groups that took longest last batch first, so that
/// the longest does not start last and leave one core to finish it alone.
fn evaluate_groups(
    groups: &mut [GroupState],
    rows: &RecordBatch,
    time_index: usize,
    joining: &UInt32Array,
) -> Result<Vec<Vec<ArrayRef>>> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let mut order: Vec<usize> = (0..groups.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(groups[i].last_cost));
    // Each group with what its evaluation gave.
    type Slot<'a> = (&'a mut GroupState, Option<Result<Vec<ArrayRef>>>);
    let slots: Vec<Mutex<Slot<'_>>> = groups.iter_mut().map(|g| Mutex::new((g, None))).collect();
    let next = AtomicUsize::new(0);
    let workers = rayon::current_num_threads().min(slots.len());
    rayon::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|_| {
                while let Some(&i) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
                    // Each slot is taken by one thread only: the lock is never contended.
                    let mut slot = slots[i].lock().unwrap_or_else(|e| e.into_inner());
                    let started = std::time::Instant::now();
                    let computed = slot.0.evaluate(rows, time_index, joining);
                    slot.0.last_cost = started.elapsed();
                    slot.1 = Some(computed);
                }
            });
        }
    });
    slots
        .into_iter()
        .map(|slot| {
            let (_, computed) = slot.into_inner().unwrap_or_else(|e| e.into_inner());
            computed.unwrap_or_else(|| {
                Err(JobError::internal(
                    "a window group was not evaluated".into(),
                ))
            })
        })
        .collect()
}

/// A due row joined to its key's history: the key's arena slot, the row, and its event time
/// (carried along: once the rows are sorted by key, reading the time from the batch's column
/// would be a cache miss per row).
#[derive(Debug, Clone, Copy)]
struct Run {
    slot: u32,
    row: u32,
    time: i64,
}

/// Adds `run`'s row to its key's history `h`, its entry read from the batch's `entries`.
fn add_entry(h: &mut History, stride: usize, run: &Run, entries: &[u64]) -> usize {
    let at = run.row as usize * stride;
    h.insert(stride, &entries[at..at + stride]);
    at
}

impl GroupState {
    /// The arena slot of `key`, made when new.
    fn slot(&mut self, key: &[u8]) -> usize {
        if let Some(&slot) = self.index.get(key) {
            return slot as usize;
        }
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.histories.push(History::default());
                self.held += std::mem::size_of::<History>();
                (self.histories.len() - 1) as u32
            }
        };
        self.index.insert(key.into(), slot);
        self.key_bytes += key.len();
        slot as usize
    }

    /// Drops the entries no event after `watermark_us` can reach, and keys left with none.
    /// Each group keeps only its own longest lookback: a per-card frame of two minutes keeps
    /// two minutes, whatever the per-user frames beside it keep.
    ///
    /// Cutting visits every key, so it waits until the watermark has moved on by a
    /// [`EVICT_STEPS`]th of the lookback: histories then hold at most that much more than
    /// their frames can reach, and a batch of a few rows does not pay for every key (a day's
    /// lookback is cut every 22 minutes of event time, a minute's every second).
    fn evict(&mut self, watermark_us: i64) {
        let step = self.lookback_us / EVICT_STEPS;
        if watermark_us <= self.evicted_at.saturating_add(step) {
            return;
        }
        self.evicted_at = watermark_us;
        let keep_from = watermark_us.saturating_sub(self.lookback_us);
        let mut emptied = false;
        for h in &mut self.histories {
            if !h.is_empty() {
                let before = h.bytes();
                let cut = h.cut_before(self.stride, keep_from, &self.frames);
                if cut > 0 {
                    self.entries -= cut;
                    self.held = self.held + h.bytes() - before;
                    emptied |= h.is_empty();
                }
            }
        }
        if emptied {
            let (histories, free) = (&self.histories, &mut self.free);
            let mut key_bytes = self.key_bytes;
            self.index.retain(|key, slot| {
                let kept = !histories[*slot as usize].is_empty();
                if !kept {
                    free.push(*slot);
                    key_bytes -= key.len();
                }
                kept
            });
            self.key_bytes = key_bytes;
        }
    }

    /// Adds `entry` to history `slot`, counting it and the bytes it takes.
    fn insert(&mut self, slot: usize, entry: &[u64]) {
        let h = &mut self.histories[slot];
        let before = h.bytes();
        h.insert(self.stride, entry);
        self.held = self.held + h.bytes() - before;
        self.entries += 1;
    }
}

/// The incremental path's state: per group of window functions, each key's history; and the
/// rows waiting for the watermark.
pub struct IncrementalState {
    plan: IncrementalPlan,
    input: SchemaRef,
    groups: Vec<GroupState>,
    pending: Vec<RecordBatch>,
    /// How many rows at the front of `pending` the last snapshot holds (the rest started
    /// waiting since), and the watermark the last batch released pending rows at: a delta holds
    /// only the rows that started waiting, and a restore releases the older ones at that
    /// watermark, where every delta held every waiting row (a minute of events, with a
    /// minute's delay, rewritten each batch).
    pending_base: usize,
    released_at: i64,
    /// Emit every row in the batch it arrives in (`emit = "onArrival"`), not once the
    /// watermark passes it.
    on_arrival: bool,
    /// The watermark minus the query's longest lookback: where the group with that lookback
    /// last cut its history (each group cuts at its own lookback from the same watermark).
    keep_from: i64,
    /// The batch of the full snapshot the last snapshot builds on, how many deltas since, and
    /// how many joined rows they hold.
    base: Option<i64>,
    deltas: usize,
    delta_rows: usize,
    /// The input columns histories are built from (keys, event time, arguments and what
    /// argument expressions read), in input order; groups read rows of these columns only.
    kept: Vec<usize>,
    /// Those columns' schema, and where the event time is among them.
    kept_schema: SchemaRef,
    kept_time: usize,
    /// The rows that joined the histories since the last snapshot, of `kept_schema`, in the
    /// order they joined: what the next delta holds, once for every group.
    joined: Vec<RecordBatch>,
    /// The plan's WHERE below the windows, over the view's rows.
    filter: Option<RowFilter>,
}

/// Histories are cut once the watermark has moved on by this fraction of their lookback (see
/// [`GroupState::evict`]).
const EVICT_STEPS: i64 = 64;

/// At most this many deltas after a full snapshot: a restore reads one file per batch of its
/// chain, each a request to an object store.
const MAX_DELTAS: usize = 50;

/// Entries per record batch of a full snapshot's histories (few in tests, so that the restart
/// tests read histories written in many batches).
#[cfg(not(test))]
const SNAPSHOT_ROWS: usize = 65_536;
#[cfg(test)]
const SNAPSHOT_ROWS: usize = 1_000;

/// What a snapshot of the state is written as, and which older snapshots it makes unneeded.
#[derive(Debug)]
pub struct Snapshot {
    /// The bytes of `state/<batchId>.arrow`.
    pub bytes: Vec<u8>,
    /// Snapshots of batches before this one are no longer needed, neither by a restart after
    /// this batch commits nor by a replay of it.
    pub drop_before: Option<i64>,
}

impl std::fmt::Debug for IncrementalState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncrementalState")
            .field("rows", &self.rows())
            .finish()
    }
}

impl IncrementalState {
    /// Empty state for `plan` over rows of `input`, emitting rows on arrival or once the
    /// watermark passes them.
    pub fn new(plan: IncrementalPlan, input: SchemaRef, on_arrival: bool) -> Result<Self> {
        let view = DFSchema::try_from_qualified_schema(plan.view.as_str(), &input)
            .map_err(|e| JobError::internal(format!("the view's schema: {e}")))?;
        let mut kept = vec![plan.time_index];
        for g in &plan.groups {
            for source in g.keys.iter().chain(g.args.iter().map(|(source, _)| source)) {
                match source {
                    ArgSource::Column(index) => kept.push(*index),
                    ArgSource::Expr(expr) => {
                        for column in expr.column_refs() {
                            kept.push(view.index_of_column(column).map_err(|e| {
                                JobError::internal(format!("the window's `{expr}`: {e}"))
                            })?);
                        }
                    }
                }
            }
        }
        kept.sort_unstable();
        kept.dedup();
        let kept_schema = Arc::new(
            input
                .project(&kept)
                .map_err(JobError::arrow("the window state's columns"))?,
        );
        let kept_view = DFSchema::try_from_qualified_schema(plan.view.as_str(), &kept_schema)
            .map_err(|e| JobError::internal(format!("the window state's columns: {e}")))?;
        // Where an input column is among the kept ones.
        let at = |index: usize| {
            kept.binary_search(&index).map_err(|_| {
                JobError::internal(format!(
                    "input column {index} is not among the window state's"
                ))
            })
        };
        let groups = plan
            .groups
            .iter()
            .map(|g| {
                let mut g = g.clone();
                for source in g.keys.iter_mut().chain(g.args.iter_mut().map(|(s, _)| s)) {
                    if let ArgSource::Column(index) = source {
                        *index = at(*index)?;
                    }
                }
                let fields = g
                    .keys
                    .iter()
                    .map(|k| {
                        source_type(k, &kept_schema, &kept_view)
                            .map(SortField::new)
                            .ok_or_else(|| JobError::internal("a window key's type".into()))
                    })
                    .collect::<Result<_>>()?;
                let reader = |source: &ArgSource| ArgReader::new(source, &kept_view);
                let key_readers = g.keys.iter().map(reader).collect::<Result<_>>()?;
                let readers = g
                    .args
                    .iter()
                    .map(|(s, _)| reader(s))
                    .collect::<Result<_>>()?;
                let name = |source: &ArgSource| match source {
                    ArgSource::Column(index) => kept_schema.field(*index).name().clone(),
                    // By the columns it reads: an expression's text may change with
                    // DataFusion's versions, which must not refuse a job's own snapshots.
                    ArgSource::Expr(expr) => {
                        let mut read: Vec<String> =
                            expr.column_refs().iter().map(|c| c.name.clone()).collect();
                        read.sort();
                        format!("({})", read.join(" "))
                    }
                };
                let keys: Vec<String> = g.keys.iter().map(name).collect();
                let args: Vec<String> = g.args.iter().map(|(s, _)| name(s)).collect();
                let kinds: Vec<Kind> = g.args.iter().map(|a| a.1).collect();
                Ok(GroupState {
                    frames: FrameNeeds::of(&g.specs, &kinds),
                    columns: format!("keys {}; arguments {}", keys.join(" "), args.join(" ")),
                    stride: stride_of(g.args.len()),
                    lookback_us: g.specs.iter().map(|s| s.lookback_us).max().unwrap_or(0),
                    converter: RowConverter::new(fields)
                        .map_err(JobError::arrow("encoding window keys"))?,
                    plan: g,
                    key_readers,
                    readers,
                    index: HashMap::default(),
                    histories: Vec::new(),
                    free: Vec::new(),
                    last_cost: std::time::Duration::ZERO,
                    entries: 0,
                    held: 0,
                    key_bytes: 0,
                    evicted_at: i64::MIN,
                })
            })
            .collect::<Result<_>>()?;
        let filter = match &plan.filter {
            Some(predicate) => Some(RowFilter::planned(
                create_physical_expr(
                    predicate,
                    &view,
                    &ExecutionProps::new(),
                    &PhysicalPlanningContext::default(),
                )
                .map_err(|e| JobError::internal(format!("the WHERE `{predicate}`: {e}")))?,
                format!("WHERE {predicate}"),
            )),
            None => None,
        };
        Ok(Self {
            kept_time: at(plan.time_index)?,
            filter,
            plan,
            input,
            groups,
            pending: Vec::new(),
            pending_base: 0,
            released_at: i64::MIN,
            on_arrival,
            keep_from: i64::MIN,
            base: None,
            deltas: 0,
            delta_rows: 0,
            kept,
            kept_schema,
            joined: Vec::new(),
        })
    }

    /// Events held: kept history entries and pending rows.
    pub fn rows(&self) -> usize {
        let kept: usize = self.groups.iter().map(GroupState::entries).sum();
        kept + self
            .pending
            .iter()
            .map(RecordBatch::num_rows)
            .sum::<usize>()
    }

    /// Approximate bytes held: histories with their buffers, keys with their index entries.
    pub fn bytes(&self) -> usize {
        let kept: usize = self.groups.iter().map(GroupState::bytes).sum();
        kept + self
            .pending
            .iter()
            .chain(&self.joined)
            .map(RecordBatch::get_array_memory_size)
            .sum::<usize>()
    }

    /// Splits the pending rows and `new_rows` into those the watermark (`limit_us`) has reached,
    /// as one batch in the order they came, and those still waiting for it (rows are not
    /// copied while none is due, nor when all of a single batch are).
    ///
    /// Each batch is filtered by a mask (runs of rows are copied whole) and the pieces joined,
    /// the columns side by side: gathering the rows one by one, column after column on one
    /// core, was the longest stretch of a feature batch with a core idle (BENCHMARKS.md, "The
    /// state written beside the tables").
    fn split_due(
        &mut self,
        new_rows: Vec<RecordBatch>,
        limit_us: i64,
    ) -> Result<(Option<RecordBatch>, Vec<RecordBatch>)> {
        let batches: Vec<RecordBatch> = std::mem::take(&mut self.pending)
            .into_iter()
            .chain(new_rows)
            .filter(|b| b.num_rows() > 0)
            .collect();
        // Per batch, which rows are due; a row without an event time has no frame to wait for.
        let due: Vec<BooleanArray> = batches
            .iter()
            .map(|batch| {
                let times = times_of(batch, self.plan.time_index)?;
                Ok(times
                    .iter()
                    .map(|t| Some(t.is_none_or(|t| t <= limit_us)))
                    .collect())
            })
            .collect::<Result<_>>()?;
        // The rows the last snapshot holds come first, and those still waiting stay first.
        let (mut older, mut still_waiting) = (self.pending_base, 0);
        for (batch, due) in batches.iter().zip(&due) {
            let n = batch.num_rows().min(older);
            still_waiting += n - due.slice(0, n).true_count();
            older -= n;
        }
        self.pending_base = still_waiting;
        self.released_at = limit_us;
        let due_rows: usize = due.iter().map(BooleanArray::true_count).sum();
        let all_rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        if due_rows == 0 {
            // Everything waits, as it came.
            return Ok((None, batches));
        }
        let gather = |masks: &[BooleanArray], rows: usize| -> Result<RecordBatch> {
            // The batches with rows to give, counted once rather than per column.
            let giving: Vec<(&RecordBatch, &BooleanArray)> = batches
                .iter()
                .zip(masks)
                .filter(|(_, m)| m.true_count() > 0)
                .collect();
            let columns = (0..self.input.fields().len())
                .into_par_iter()
                .map(|c| {
                    let pieces = giving
                        .iter()
                        .map(|(b, m)| filter(b.column(c), m))
                        .collect::<std::result::Result<Vec<ArrayRef>, _>>()?;
                    match &pieces[..] {
                        [one] => Ok(Arc::clone(one)),
                        _ => concat(&pieces.iter().map(AsRef::as_ref).collect::<Vec<_>>()),
                    }
                })
                .collect::<std::result::Result<Vec<ArrayRef>, _>>()
                .map_err(JobError::arrow("emitting rows"))?;
            RecordBatch::try_new_with_options(
                Arc::clone(&self.input),
                columns,
                &RecordBatchOptions::new().with_row_count(Some(rows)),
            )
            .map_err(JobError::arrow("emitting rows"))
        };
        let waiting_rows = all_rows - due_rows;
        let due_batch = match &batches[..] {
            [only] if waiting_rows == 0 => only.clone(),
            _ => gather(&due, due_rows)?,
        };
        let pending = if waiting_rows == 0 {
            Vec::new()
        } else {
            let waiting: Vec<BooleanArray> = due
                .iter()
                .map(not)
                .collect::<std::result::Result<_, _>>()
                .map_err(JobError::arrow("emitting rows"))?;
            vec![gather(&waiting, waiting_rows)?]
        };
        Ok((Some(due_batch), pending))
    }

    /// Takes a batch's on-time rows; returns the rows the watermark after the batch
    /// (`watermark_ms`) has reached (on arrival: all of them) with the computed window
    /// columns, and forgets history no event still to come can reach.
    pub fn stage(
        &mut self,
        new_rows: Vec<RecordBatch>,
        watermark_ms: i64,
    ) -> Result<Vec<RecordBatch>> {
        let watermark_us = watermark_ms.saturating_mul(1000);
        let new_rows = match &self.filter {
            Some(filter) => filter.select(&new_rows)?,
            None => new_rows,
        };
        let (due, pending) = if self.on_arrival {
            // Nothing waits: every row is due now.
            let rows: Vec<RecordBatch> =
                new_rows.into_iter().filter(|b| b.num_rows() > 0).collect();
            let rows = (!rows.is_empty())
                .then(|| datafusion::arrow::compute::concat_batches(&self.input, &rows))
                .transpose()
                .map_err(JobError::arrow("emitting rows"))?;
            (rows, Vec::new())
        } else {
            self.split_due(new_rows, watermark_us)?
        };
        self.pending = pending;
        let mut out = Vec::new();
        if let Some(rows) = due {
            // Rows join their keys' histories in event-time order, which keeps every history
            // sorted as it grows; the rows themselves stay where they are.
            let order = sort_to_indices(rows.column(self.plan.time_index), None, None)
                .map_err(JobError::arrow("ordering emitted rows"))?;
            // The rows with an event time, in the order they join every group's histories (a
            // row without one has no key's history); kept for the next delta snapshot.
            let times = times_of(&rows, self.plan.time_index)?;
            let joining: UInt32Array = order
                .values()
                .iter()
                .copied()
                .filter(|&r| times.is_valid(r as usize))
                .collect();
            let kept = rows
                .project(&self.kept)
                .map_err(JobError::arrow("emitting rows"))?;
            let mut columns = rows.columns().to_vec();
            // The joined rows are gathered for the next delta while the groups are evaluated:
            // a core that runs out of groups takes it rather than wait for the last group.
            let (computed, joined) = rayon::join(
                || evaluate_groups(&mut self.groups, &kept, self.kept_time, &joining),
                || take_record_batch(&kept, &joining),
            );
            for computed in computed? {
                columns.extend(computed);
            }
            self.joined
                .push(joined.map_err(JobError::arrow("recording window entries"))?);
            // Computed columns in the order the plan's output lists them.
            let input_len = self.input.fields().len();
            let mut ordered = columns[..input_len].to_vec();
            for field in &self.plan.output.fields()[input_len..] {
                let at = self
                    .groups
                    .iter()
                    .flat_map(|g| g.plan.specs.iter())
                    .position(|s| s.name == *field.name())
                    .ok_or_else(|| {
                        JobError::internal(format!("no computed column `{}`", field.name()))
                    })?;
                ordered.push(Arc::clone(&columns[input_len + at]));
            }
            out.push(
                RecordBatch::try_new(Arc::clone(&self.plan.output), ordered)
                    .map_err(JobError::arrow("emitting computed windows"))?,
            );
        }
        // Events still to come are after the watermark, so their frames start after it minus
        // the lookback.
        self.keep_from = watermark_us.saturating_sub(self.plan.lookback_us);
        for g in &mut self.groups {
            g.evict(watermark_us);
        }
        Ok(out)
    }

    /// The state after `batch_id` as bytes: full (each group's histories and the pending
    /// rows, as Arrow IPC files), or a delta holding only what changed since the snapshot
    /// before (the rows that joined the histories, in the order they joined and in the columns
    /// histories are built from; where history was cut; and the pending rows), which is what
    /// makes snapshots cheap when the lookback is long.
    ///
    /// A snapshot is full when the deltas since the last full one, this one included, would
    /// hold as many rows as the histories hold entries (those of the group keeping the most),
    /// or after [`MAX_DELTAS`]. So the chain a restore reads holds at most about twice the
    /// state, and full snapshots write at most about as much as deltas. A full snapshot every
    /// tenth batch wrote the whole state that often however little had changed: a state that
    /// only grows (a day's lookback, in its first day) was written whole again and again, each
    /// time stalling its batch longer (BENCHMARKS.md, "State snapshots in full only when the
    /// deltas outweigh them").
    pub fn snapshot(&mut self, batch_id: i64) -> Result<Snapshot> {
        let delta_rows =
            self.delta_rows + self.joined.iter().map(RecordBatch::num_rows).sum::<usize>();
        let entries = self
            .groups
            .iter()
            .map(GroupState::entries)
            .max()
            .unwrap_or(0);
        let full = self.base.is_none() || self.deltas + 1 > MAX_DELTAS || delta_rows >= entries;
        let size = |batches: &[RecordBatch]| -> usize {
            batches.iter().map(RecordBatch::get_array_memory_size).sum()
        };
        let mut out = if full {
            b"RSINC1".to_vec()
        } else {
            let mut out = b"RSDLT3".to_vec();
            out.extend_from_slice(&(batch_id - 1).to_le_bytes());
            out.extend_from_slice(&self.keep_from.to_le_bytes());
            out.extend_from_slice(&self.released_at.to_le_bytes());
            out
        };
        // A full snapshot holds every waiting row; a delta those that started waiting since.
        let pending = if full {
            self.pending.clone()
        } else {
            rows_after(&self.pending, self.pending_base)
        };
        self.pending_base = self.pending.iter().map(RecordBatch::num_rows).sum();
        // Sized for what the snapshot holds, with room for the files' framing and padding: a
        // buffer of tens of megabytes outgrowing its estimate by a few kilobytes was copied
        // into one twice its size, every batch.
        let held = size(&pending)
            + if full {
                self.groups.iter().map(GroupState::snapshot_bytes).sum()
            } else {
                size(&self.joined)
            };
        out.reserve(held + held / 32 + (1 << 20));
        write_batches(&mut out, &self.input, &pending)?;
        if full {
            for g in &self.groups {
                g.write_history(&mut out)?;
            }
        } else {
            write_batches(&mut out, &self.kept_schema, &self.joined)?;
        }
        self.joined.clear();
        let drop_before = if full {
            // The previous chain is still needed until this batch commits.
            let before = self.base.unwrap_or(batch_id);
            self.base = Some(batch_id);
            self.deltas = 0;
            self.delta_rows = 0;
            Some(before)
        } else {
            self.deltas += 1;
            self.delta_rows = delta_rows;
            None
        };
        Ok(Snapshot {
            bytes: out,
            drop_before,
        })
    }

    /// The batch whose snapshot a delta snapshot builds on; `None` for a full one.
    pub fn builds_on(bytes: &[u8]) -> Option<i64> {
        matches!(bytes.get(..6)?, b"RSDLT1" | b"RSDLT2" | b"RSDLT3").then(|| {
            let mut id = [0u8; 8];
            id.copy_from_slice(bytes.get(6..14)?);
            Some(i64::from_le_bytes(id))
        })?
    }

    /// Restores the state after `batch_id` from its chain of snapshots: a full one first, then
    /// the deltas of the batches after it, in order.
    pub fn restore<B: AsRef<[u8]>>(&mut self, batch_id: i64, chain: &[B]) -> Result<()> {
        let Some((full, deltas)) = chain.split_first() else {
            return Err(mismatch());
        };
        let mut restoring = self.restore_full(full.as_ref())?;
        for delta in deltas {
            restoring.delta(delta.as_ref())?;
        }
        restoring.done(batch_id - deltas.len() as i64);
        Ok(())
    }

    /// Starts a restore from the full snapshot `full`; the deltas after it follow one by one
    /// (so a restore holds one snapshot's bytes at a time, not its whole chain).
    pub fn restore_full(&mut self, full: &[u8]) -> Result<Restoring<'_>> {
        self.joined.clear();
        self.delta_rows = 0;
        let mut cursor = Cursor::new(full);
        let mut magic = [0u8; 6];
        cursor.read_exact(&mut magic).map_err(|_| mismatch())?;
        if &magic != b"RSINC1" {
            return Err(mismatch());
        }
        self.pending = self.read_pending(&mut cursor).ok_or_else(mismatch)?;
        self.pending_base = self.pending.iter().map(RecordBatch::num_rows).sum();
        let parts = part_starts(&mut cursor).ok_or_else(mismatch)?;
        let written = parts.len();
        // A part per group; or, written before finer row counts were read from coarser
        // groups' histories, a part per partitioning, of which the coarser ones are read.
        let layout: Vec<usize> = if parts.len() == self.groups.len() {
            (0..parts.len()).collect()
        } else if parts.len() == self.plan.unfolded.len() {
            self.plan
                .groups
                .iter()
                .map(|g| self.plan.unfolded.iter().position(|keys| *keys == g.keys))
                .collect::<Option<_>>()
                .ok_or_else(mismatch)?
        } else {
            return Err(mismatch());
        };
        for (g, &part) in self.groups.iter_mut().zip(&layout) {
            cursor.set_position(parts[part]);
            let (schema, batches) = read_part_file(&mut cursor).ok_or_else(mismatch)?;
            if !g.wrote(&schema) {
                return Err(mismatch());
            }
            g.clear();
            for batch in &batches {
                g.append_entries(batch).map_err(|_| mismatch())?;
            }
        }
        Ok(Restoring {
            state: self,
            written,
            layout,
            deltas: 0,
        })
    }

    /// The waiting rows of a snapshot (in the input's columns of now), none or one batch.
    fn read_pending(&self, cursor: &mut Cursor<&[u8]>) -> Option<Vec<RecordBatch>> {
        let pending = read_part(cursor)?;
        let pending =
            crate::stream::checkpoint::fit_rows(&self.input, &pending.schema(), vec![pending])?
                .pop()?;
        Some(if pending.num_rows() > 0 {
            vec![pending]
        } else {
            Vec::new()
        })
    }

    /// The waiting rows after a delta that holds those that started waiting (`started`): the
    /// older ones the delta's batch did not release (at `released_at`), then those.
    fn still_waiting(
        &self,
        started: Vec<RecordBatch>,
        released_at: i64,
    ) -> Result<Vec<RecordBatch>> {
        let mut pending = Vec::new();
        for batch in &self.pending {
            let times = times_of(batch, self.plan.time_index)?;
            let waits: BooleanArray = times
                .iter()
                .map(|t| Some(t.is_some_and(|t| t > released_at)))
                .collect();
            let batch = filter_record_batch(batch, &waits)
                .map_err(JobError::arrow("restoring waiting rows"))?;
            if batch.num_rows() > 0 {
                pending.push(batch);
            }
        }
        pending.extend(started);
        Ok(pending)
    }
}

/// A restore under way: the full snapshot read, the deltas after it applied one by one.
pub struct Restoring<'a> {
    state: &'a mut IncrementalState,
    /// How many parts the full snapshot held, and which of them each group read (see
    /// [`IncrementalState::restore_full`]): deltas of the kind before `RSDLT2` are laid out
    /// the same way.
    written: usize,
    layout: Vec<usize>,
    deltas: usize,
}

impl Restoring<'_> {
    /// Applies the next delta of the chain.
    pub fn delta(&mut self, delta: &[u8]) -> Result<()> {
        let state = &mut *self.state;
        let mut cursor = Cursor::new(delta);
        let mut head = [0u8; 22];
        cursor.read_exact(&mut head).map_err(|_| mismatch())?;
        let format = &head[..6];
        if format != b"RSDLT1" && format != b"RSDLT2" && format != b"RSDLT3" {
            return Err(mismatch());
        }
        let word = |bytes: &[u8]| {
            let mut word = [0u8; 8];
            word.copy_from_slice(bytes);
            i64::from_le_bytes(word)
        };
        let keep_from = word(&head[14..22]);
        let released_at = if format == b"RSDLT3" {
            let mut released_at = [0u8; 8];
            cursor
                .read_exact(&mut released_at)
                .map_err(|_| mismatch())?;
            Some(word(&released_at))
        } else {
            None
        };
        let waiting = state.read_pending(&mut cursor).ok_or_else(mismatch)?;
        state.pending = match released_at {
            // Rows that started waiting; the older ones wait on unless the batch released them.
            Some(at) => state.still_waiting(waiting, at)?,
            // Every waiting row.
            None => waiting,
        };
        state.pending_base = state.pending.iter().map(RecordBatch::num_rows).sum();
        // Deltas hold where the query's longest lookback cut history; each group cuts at
        // its own lookback from the same watermark.
        let watermark_us = keep_from.saturating_add(state.plan.lookback_us);
        if format != b"RSDLT1" {
            // The rows that joined, in the order they joined, join again.
            let joined = read_part(&mut cursor).ok_or_else(mismatch)?;
            if joined.schema() != state.kept_schema {
                return Err(mismatch());
            }
            state.delta_rows += joined.num_rows();
            let order: Vec<u32> = (0..joined.num_rows() as u32).collect();
            for g in &mut state.groups {
                g.join(&joined, state.kept_time, &order)?;
                g.evict(watermark_us);
            }
        } else {
            // RSDLT1, written before deltas held the joined rows: each group's new entries,
            // a part per group as in the full snapshot.
            let parts = part_starts(&mut cursor).ok_or_else(mismatch)?;
            if parts.len() != self.written {
                return Err(mismatch());
            }
            let mut most = 0;
            for (g, &part) in state.groups.iter_mut().zip(&self.layout) {
                cursor.set_position(*parts.get(part).ok_or_else(mismatch)?);
                let batch = read_part(&mut cursor).ok_or_else(mismatch)?;
                most = most.max(batch.num_rows());
                g.append_entries(&batch).map_err(|_| mismatch())?;
                g.evict(watermark_us);
            }
            state.delta_rows += most;
        }
        state.keep_from = keep_from;
        self.deltas += 1;
        Ok(())
    }

    /// Ends the restore; `base` is the batch of its full snapshot.
    pub fn done(self, base: i64) {
        self.state.base = Some(base);
        self.state.deltas = self.deltas;
    }
}

/// The error of a snapshot this query's state cannot have written.
fn mismatch() -> JobError {
    JobError::internal(
        "the state snapshot does not match the query's window functions: the job changed; give \
         it a new checkpointLocation"
            .into(),
    )
}

impl GroupState {
    /// Finds (or makes) the history of each of rows `order` of `rows` (rows with an event
    /// time); returns each row with its key's slot, in that order, and every row's history
    /// entry (see [`entries_of`]).
    fn locate(
        &mut self,
        rows: &RecordBatch,
        time_index: usize,
        order: &[u32],
    ) -> Result<(Vec<Run>, Vec<u64>)> {
        let key_columns: Vec<ArrayRef> = self
            .key_readers
            .iter()
            .map(|reader| reader.read(rows))
            .collect::<Result<_>>()?;
        let encoded = self
            .converter
            .convert_columns(&key_columns)
            .map_err(JobError::arrow("encoding window keys"))?;
        let times = times_of(rows, time_index)?;
        let args: Vec<Arg> = self
            .readers
            .iter()
            .zip(&self.plan.args)
            .map(|(reader, (_, kind))| Arg::of(&reader.read(rows)?, *kind))
            .collect::<Result<_>>()?;
        let mut runs: Vec<Run> = Vec::with_capacity(order.len());
        for &row in order {
            debug_assert!(
                times.is_valid(row as usize),
                "a row without an event time joins"
            );
            let slot = self.slot(encoded.row(row as usize).as_ref());
            runs.push(Run {
                slot: slot as u32,
                row,
                time: times.value(row as usize),
            });
        }
        Ok((runs, entries_of(times.values(), &args, self.stride)))
    }

    /// Adds rows `order` of `rows` (rows with an event time) to their keys' histories in that
    /// order.
    fn join(&mut self, rows: &RecordBatch, time_index: usize, order: &[u32]) -> Result<()> {
        let (runs, entries) = self.locate(rows, time_index, order)?;
        for run in &runs {
            let at = run.row as usize * self.stride;
            self.insert(run.slot as usize, &entries[at..at + self.stride]);
        }
        Ok(())
    }

    /// Appends `rows` (due; `joining` lists those with an event time, in event-time order) to
    /// their keys' histories and computes the group's window columns for them (rows without an
    /// event time get what an empty frame gives).
    fn evaluate(
        &mut self,
        rows: &RecordBatch,
        time_index: usize,
        joining: &UInt32Array,
    ) -> Result<Vec<ArrayRef>> {
        let n = rows.num_rows();
        // Each due row is matched with its key's history, and joins it below: all of a key's
        // rows first, so peers of an event (same time) are in its frame whichever comes first;
        // then each row's frame is read from its key's history.
        let (mut runs, entries) = self.locate(rows, time_index, joining.values())?;
        let kinds: Vec<Kind> = self.plan.args.iter().map(|a| a.1).collect();
        let specs = &self.plan.specs;
        let layout = RowLayout::new(specs);
        // The due rows by key, each key's in time order (a stable sort of rows in time order),
        // so a key's frames only slide forward.
        runs.sort_by_key(|r| r.slot);
        let visits = Visits {
            stride: self.stride,
            entries: &entries,
            plan: &self.frames,
            kinds: &kinds,
            specs,
            layout: &layout,
        };
        // Keys' histories are apart from each other, so the rows are split between the cores
        // at key boundaries: the runs are sorted by slot, so each part holds a stretch of the
        // slots, and takes that stretch of the histories for its own, and its share of each
        // bucket of the values.
        let cut = key_parts(&runs, rayon::current_num_threads() * PARTS_PER_THREAD);
        let buckets = Buckets::of(&runs, &cut, n, layout.stride);
        let mut words = vec![0u64; runs.len() * layout.stride];
        let shares = buckets.shares(&mut words, layout.stride);
        let mut parts = Vec::new();
        let mut histories = &mut self.histories[..];
        let mut base = 0;
        for (&(from, to), out) in cut.iter().zip(shares) {
            let (first, last) = (runs[from].slot as usize, runs[to - 1].slot as usize);
            let (own_histories, rest_histories) =
                std::mem::take(&mut histories)[first - base..].split_at_mut(last + 1 - first);
            parts.push((from, to, first, own_histories, out));
            (histories, base) = (rest_histories, last + 1);
        }
        let grew: isize = parts
            .into_par_iter()
            .map(|(from, to, first, histories, out)| {
                visits.visit(histories, first, &runs[from..to], buckets.rows, out)
            })
            .sum();
        self.entries += runs.len();
        self.held = self.held.saturating_add_signed(grew);
        layout.finish(&words, &buckets, n, specs)
    }

    /// The columns of history entries in snapshots: the encoded key, the time, then the
    /// group's double and integer arguments.
    fn history_schema(&self) -> SchemaRef {
        let f64_count = self.plan.args.iter().filter(|a| a.1 == Kind::F64).count();
        let mut fields = vec![
            Field::new("key", DataType::Binary, false),
            Field::new("time", DataType::Int64, false),
        ];
        for c in 0..f64_count {
            fields.push(Field::new(format!("f{c}"), DataType::Float64, true));
        }
        for c in 0..self.plan.args.len() - f64_count {
            fields.push(Field::new(format!("i{c}"), DataType::Int64, true));
        }
        let columns = HashMap::from([(GROUP_COLUMNS.to_string(), self.columns.clone())]);
        Arc::new(Schema::new(fields).with_metadata(columns))
    }

    /// Whether a snapshot's history part of `schema` was written by this group: the same
    /// columns, and the same key and argument columns where the snapshot names them (those
    /// written before did not). Without the names, a query partitioned by another column of
    /// the same type would restore the other's histories as its own.
    fn wrote(&self, schema: &Schema) -> bool {
        schema.fields() == self.history_schema().fields()
            && schema
                .metadata()
                .get(GROUP_COLUMNS)
                .is_none_or(|written| *written == self.columns)
    }

    /// Writes every key's history into `out` as one part: an Arrow IPC file written in place,
    /// in record batches of [`SNAPSHOT_ROWS`] entries, so that a full snapshot holds no second
    /// copy of a group's history beside its own bytes.
    fn write_history(&self, out: &mut Vec<u8>) -> Result<()> {
        let arrow = || JobError::arrow("writing the state snapshot");
        let schema = self.history_schema();
        write_part(out, &schema, |writer| {
            let kinds: Vec<Kind> = self.plan.args.iter().map(|a| a.1).collect();
            let mut slice = HistorySlice::new(&kinds);
            for (key, &slot) in &self.index {
                let h = Entries {
                    h: &self.histories[slot as usize],
                    stride: self.stride,
                };
                for j in 0..h.h.len(self.stride) {
                    slice.push(key, h, j, &kinds);
                    if slice.rows == SNAPSHOT_ROWS {
                        writer.write(&slice.finish(&schema)?).map_err(arrow())?;
                    }
                }
            }
            if slice.rows > 0 {
                writer.write(&slice.finish(&schema)?).map_err(arrow())?;
            }
            Ok(())
        })
    }

    /// The entries its histories hold.
    fn entries(&self) -> usize {
        debug_assert_eq!(
            self.entries,
            self.histories
                .iter()
                .map(|h| h.len(self.stride))
                .sum::<usize>()
        );
        self.entries
    }

    /// The bytes its histories, their index and their free slots hold.
    fn bytes(&self) -> usize {
        // An index entry: the boxed key and the slot, padded, and a control byte.
        const ENTRY: usize = 24 + 1;
        debug_assert_eq!(
            (self.held, self.key_bytes),
            (
                self.histories.iter().map(History::bytes).sum::<usize>(),
                self.index.keys().map(|k| k.len()).sum::<usize>()
            )
        );
        self.held + self.free.capacity() * 4 + self.index.capacity() * ENTRY + self.key_bytes
    }

    /// About the bytes [`write_history`](Self::write_history) writes: per entry, its key (and
    /// the key's offset), its time, validity and argument words.
    fn snapshot_bytes(&self) -> usize {
        self.index
            .iter()
            .map(|(key, &slot)| {
                let entries = self.histories[slot as usize].len(self.stride);
                entries * (key.len() + 4 + self.stride * 8)
            })
            .sum()
    }

    fn clear(&mut self) {
        self.index.clear();
        self.histories.clear();
        self.free.clear();
        (self.entries, self.held, self.key_bytes) = (0, 0, 0);
        self.evicted_at = i64::MIN;
    }

    /// Adds snapshot entries to their keys' histories, each at its place in time order.
    fn append_entries(&mut self, batch: &RecordBatch) -> Result<()> {
        if !self.wrote(&batch.schema()) {
            return Err(JobError::internal("snapshot columns".into()));
        }
        let keys = batch.column(0).as_binary::<i32>();
        let times = batch.column(1).as_primitive::<Int64Type>();
        // The argument columns in the group's order.
        let mut columns: Vec<&ArrayRef> = vec![batch.column(0); self.plan.args.len()];
        for (at, p) in self.plan.snapshot_order().into_iter().enumerate() {
            columns[p] = batch.column(2 + at);
        }
        let args: Vec<Arg> = columns
            .iter()
            .map(|c| match c.data_type() {
                DataType::Float64 => Arg::F64(c.as_primitive::<Float64Type>().clone()),
                _ => Arg::I64(c.as_primitive::<Int64Type>().clone()),
            })
            .collect();
        let entries = entries_of(times.values(), &args, self.stride);
        for (row, entry) in entries.chunks_exact(self.stride).enumerate() {
            let slot = self.slot(keys.value(row));
            self.insert(slot, entry);
        }
        Ok(())
    }
}

/// Entries of a group's histories on their way into a snapshot, column by column.
struct HistorySlice {
    keys: BinaryBuilder,
    times: Int64Builder,
    f64s: Vec<Float64Builder>,
    i64s: Vec<Int64Builder>,
    rows: usize,
}

impl HistorySlice {
    /// For a group keeping argument columns of `kinds`.
    fn new(kinds: &[Kind]) -> Self {
        let f64_count = kinds.iter().filter(|k| **k == Kind::F64).count();
        Self {
            keys: BinaryBuilder::new(),
            times: Int64Builder::new(),
            f64s: (0..f64_count).map(|_| Float64Builder::new()).collect(),
            i64s: (f64_count..kinds.len())
                .map(|_| Int64Builder::new())
                .collect(),
            rows: 0,
        }
    }

    /// Adds entry `j` of `key`'s history `h`.
    fn push(&mut self, key: &[u8], h: Entries<'_>, j: usize, kinds: &[Kind]) {
        self.keys.append_value(key);
        self.times.append_value(h.h.time(h.stride, j));
        let (mut f, mut i) = (self.f64s.iter_mut(), self.i64s.iter_mut());
        for (c, kind) in kinds.iter().enumerate() {
            match kind {
                Kind::F64 => f.next().map(|b| b.append_option(h.f64(j, c))),
                _ => i.next().map(|b| b.append_option(h.i64(j, c))),
            };
        }
        self.rows += 1;
    }

    /// The entries pushed since the last call, as a batch of `schema` (the history schema).
    fn finish(&mut self, schema: &SchemaRef) -> Result<RecordBatch> {
        let mut columns: Vec<ArrayRef> =
            vec![Arc::new(self.keys.finish()), Arc::new(self.times.finish())];
        columns.extend(
            self.f64s
                .iter_mut()
                .map(|b| Arc::new(b.finish()) as ArrayRef),
        );
        columns.extend(
            self.i64s
                .iter_mut()
                .map(|b| Arc::new(b.finish()) as ArrayRef),
        );
        self.rows = 0;
        RecordBatch::try_new(Arc::clone(schema), columns)
            .map_err(JobError::arrow("writing the state snapshot"))
    }
}

/// Reads an argument or key from a batch's rows: its column, or its expression evaluated.
enum ArgReader {
    Column(usize),
    Expr(Arc<dyn PhysicalExpr>),
}

impl ArgReader {
    fn new(source: &ArgSource, view: &DFSchema) -> Result<Self> {
        Ok(match source {
            ArgSource::Column(index) => Self::Column(*index),
            ArgSource::Expr(expr) => Self::Expr(
                create_physical_expr(
                    expr,
                    view,
                    &ExecutionProps::new(),
                    &PhysicalPlanningContext::default(),
                )
                .map_err(|e| JobError::internal(format!("the window's `{expr}`: {e}")))?,
            ),
        })
    }

    fn read(&self, rows: &RecordBatch) -> Result<ArrayRef> {
        match self {
            Self::Column(index) => Ok(Arc::clone(rows.column(*index))),
            Self::Expr(expr) => expr
                .evaluate(rows)
                .and_then(|v| v.into_array(rows.num_rows()))
                .map_err(|e| {
                    JobError::internal(format!("evaluating a window's key or argument: {e}"))
                }),
        }
    }
}

enum Arg {
    F64(Float64Array),
    I64(Int64Array),
}

impl Arg {
    fn of(column: &ArrayRef, kind: Kind) -> Result<Self> {
        Ok(match kind {
            Kind::F64 => Arg::F64(column.as_primitive::<Float64Type>().clone()),
            Kind::I64 => {
                let as_i64 =
                    cast(column, &DataType::Int64).map_err(JobError::arrow("window argument"))?;
                Arg::I64(as_i64.as_primitive::<Int64Type>().clone())
            }
            Kind::Hash => Arg::I64(value_hashes(column)?),
        })
    }

    /// Row `row` as a history word: a double by its bits, an integer as it is.
    fn word(&self, row: usize) -> Option<u64> {
        match self {
            Arg::F64(v) => v.is_valid(row).then(|| v.value(row).to_bits()),
            Arg::I64(v) => v.is_valid(row).then(|| v.value(row) as u64),
        }
    }
}

#[derive(Debug, PartialEq)]
enum Value {
    F64(Option<f64>),
    I64(Option<i64>),
    Null,
}

/// Parts of a group's visits per core: more than one, so that a core that finishes its part
/// early (or another group) takes another rather than wait for the slowest.
const PARTS_PER_THREAD: usize = 4;

/// The fewest visited rows a part holds (few in tests, so that their small batches are split).
#[cfg(not(test))]
const MIN_PART_ROWS: usize = 8_192;
#[cfg(test)]
const MIN_PART_ROWS: usize = 3;

/// `runs` (sorted by key) cut into about `parts` stretches of whole keys, as `(from, to)`.
fn key_parts(runs: &[Run], parts: usize) -> Vec<(usize, usize)> {
    let size = runs.len().div_ceil(parts.max(1)).max(MIN_PART_ROWS);
    let mut cut = Vec::new();
    let mut from = 0;
    while from < runs.len() {
        let mut to = (from + size).min(runs.len());
        while to < runs.len() && runs[to].slot == runs[to - 1].slot {
            to += 1;
        }
        cut.push((from, to));
        from = to;
    }
    cut
}

/// The bytes of values a bucket of batch rows holds at most (few in tests, so that their small
/// batches fill many).
#[cfg(not(test))]
const BUCKET_BYTES: usize = 256 * 1024;
#[cfg(test)]
const BUCKET_BYTES: usize = 256;

/// A batch's rows in buckets of consecutive rows, each bucket's values few enough to stay in a
/// core's cache. Rows are visited key by key, in no order of their own: each visited row's
/// values go to its bucket (each part writing its own share of it, in visiting order), and the
/// columns are made bucket after bucket, each read within its bucket. Writing values to their
/// batch rows directly, or reading them back from visiting order, cost a cache miss and a TLB
/// miss per row.
struct Buckets {
    /// Batch rows per bucket.
    rows: usize,
    /// Visited rows per part and bucket (`[part][bucket]`).
    counts: Vec<Vec<usize>>,
    /// Where each bucket's values start, in visited rows; then where the last one ends.
    starts: Vec<usize>,
}

impl Buckets {
    /// The buckets of a batch of `n` rows whose visited rows are `runs`, cut into parts `cut`,
    /// at `stride` words of values per row.
    fn of(runs: &[Run], cut: &[(usize, usize)], n: usize, stride: usize) -> Self {
        let rows = (BUCKET_BYTES / (stride * 8)).max(1);
        let count = n.div_ceil(rows);
        let mut counts = vec![vec![0; count]; cut.len()];
        for (part, &(from, to)) in counts.iter_mut().zip(cut) {
            for run in &runs[from..to] {
                part[run.row as usize / rows] += 1;
            }
        }
        let mut starts = Vec::with_capacity(count + 1);
        let mut at = 0;
        for bucket in 0..count {
            starts.push(at);
            at += counts.iter().map(|part| part[bucket]).sum::<usize>();
        }
        starts.push(at);
        Self {
            rows,
            counts,
            starts,
        }
    }

    fn len(&self) -> usize {
        self.starts.len() - 1
    }

    /// `words` (the visited rows' values, `stride` words each) cut into each part's share of
    /// each bucket, `[part][bucket]`: a bucket holds its parts' shares one after another.
    fn shares<'a>(&self, words: &'a mut [u64], stride: usize) -> Vec<Vec<&'a mut [u64]>> {
        let mut shares: Vec<Vec<&mut [u64]>> = self
            .counts
            .iter()
            .map(|_| Vec::with_capacity(self.len()))
            .collect();
        let mut rest = words;
        for bucket in 0..self.len() {
            for (part, counts) in shares.iter_mut().zip(&self.counts) {
                let (share, tail) = std::mem::take(&mut rest).split_at_mut(counts[bucket] * stride);
                part.push(share);
                rest = tail;
            }
        }
        shares
    }
}

/// What visiting a group's rows reads: the rows' history entries, the frames and what each
/// keeps, and the functions.
struct Visits<'a> {
    stride: usize,
    /// Every batch row's history entry (see [`entries_of`]).
    entries: &'a [u64],
    /// The group's frames and what each keeps.
    plan: &'a FrameNeeds,
    kinds: &'a [Kind],
    specs: &'a [Spec],
    layout: &'a RowLayout,
}

/// A group's frames, and what each keeps for its functions.
struct FrameNeeds {
    /// Each frame's (lookback, end) before the row's time; per function, its frame. Functions
    /// with the same frame share its bounds: each row's history is visited once for all.
    frames: Vec<(i64, i64)>,
    frame_of: Vec<usize>,
    /// Per frame and argument column: running totals (or, of hashed columns, how many entries
    /// hold each value), minimum, maximum.
    needs: Vec<Vec<Needs>>,
    /// Per frame, the pairs of columns it keeps co-totals of, for COVAR and CORR; and per
    /// function, where its pair is in its frame's list.
    pairs: Vec<Vec<(usize, usize)>>,
    pair_of: Vec<usize>,
    /// Per function, for a finer row count whose frame ends before another's of the same
    /// start that counts the same column's values anyway (a COUNT DISTINCT over it): that
    /// frame. Its count less its few entries past this frame's end is this one's, and the
    /// values are counted once instead of twice. The shipped transaction features count a
    /// user's devices, merchants and countries over the day up to the event, and the uses of
    /// the event's own over the day before it.
    wider: Vec<Option<usize>>,
    /// The argument columns finer row counts match on, whose own value visits read of each
    /// row.
    counted: Vec<usize>,
    /// Per frame, the argument columns it keeps anything of: it slides over these only, not
    /// over every column of its group; and per frame and argument column, where the column is
    /// in that list (`usize::MAX`: not in it).
    slides_over: Vec<Vec<usize>>,
    position: Vec<Vec<usize>>,
}

impl FrameNeeds {
    /// What frame `k` keeps of each column, the columns it slides over, and its pairs.
    fn wants(&self, k: usize) -> (&[Needs], &[usize], &[(usize, usize)]) {
        (&self.needs[k], &self.slides_over[k], &self.pairs[k])
    }

    /// A frame of each of the group's, empty.
    fn fresh(&self, kinds: &[Kind]) -> Vec<Frame> {
        (0..self.frames.len())
            .map(|k| Frame::new(kinds, &self.slides_over[k], self.pairs[k].len()))
            .collect()
    }

    fn of(specs: &[Spec], kinds: &[Kind]) -> Self {
        let mut frames: Vec<(i64, i64)> = Vec::new();
        let frame_of: Vec<usize> = specs
            .iter()
            .map(|s| {
                let f = (s.lookback_us, s.end_us);
                frames.iter().position(|x| *x == f).unwrap_or_else(|| {
                    frames.push(f);
                    frames.len() - 1
                })
            })
            .collect();
        let mut needs = vec![vec![Needs::default(); kinds.len()]; frames.len()];
        let mut pairs: Vec<Vec<(usize, usize)>> = vec![Vec::new(); frames.len()];
        let mut pair_of = vec![0; specs.len()];
        for (i, spec) in specs.iter().enumerate() {
            if let (true, Some(a), Some(b)) = (spec.agg.pairs(), spec.arg, spec.arg2) {
                let list = &mut pairs[frame_of[i]];
                pair_of[i] = list.iter().position(|p| *p == (a, b)).unwrap_or_else(|| {
                    list.push((a, b));
                    list.len() - 1
                });
                continue;
            }
            // Finer row counts below, once the other functions' needs are known.
            if let (Some(arg), false) = (spec.arg, spec.agg == Agg::KeyRows) {
                let need = &mut needs[frame_of[i]][arg];
                match spec.agg {
                    Agg::Min => need.min = true,
                    Agg::Max => need.max = true,
                    agg => need.totals |= by_totals(agg),
                }
            }
        }
        let mut wider = vec![None; specs.len()];
        for (i, spec) in specs.iter().enumerate() {
            let (Agg::KeyRows, Some(arg)) = (spec.agg, spec.arg) else {
                continue;
            };
            let (lookback, end) = frames[frame_of[i]];
            // The same start and a later end: a frame holding this one and a few entries more.
            wider[i] = (0..frames.len())
                .find(|&g| frames[g].0 == lookback && frames[g].1 < end && needs[g][arg].totals);
            if wider[i].is_none() {
                needs[frame_of[i]][arg].totals = true;
            }
        }
        let counted = (0..kinds.len())
            .filter(|&p| {
                specs
                    .iter()
                    .any(|s| s.agg == Agg::KeyRows && s.arg == Some(p))
            })
            .collect();
        let slides_over = needs
            .iter()
            .map(|columns| {
                (0..kinds.len())
                    .filter(|&p| columns[p].totals || columns[p].min || columns[p].max)
                    .collect()
            })
            .collect::<Vec<Vec<usize>>>();
        let position = slides_over
            .iter()
            .map(|columns| {
                let mut at = vec![usize::MAX; kinds.len()];
                for (j, &p) in columns.iter().enumerate() {
                    at[p] = j;
                }
                at
            })
            .collect();
        Self {
            frames,
            frame_of,
            needs,
            pairs,
            pair_of,
            wider,
            counted,
            slides_over,
            position,
        }
    }
}

impl Visits<'_> {
    /// Adds `runs` (whole keys, each key's rows in time order) to their keys' histories,
    /// `histories` holding those from slot `base` on, and then computes their values, one row
    /// of the layout per run, into `out`: this part's share of each bucket of `bucket_rows`
    /// batch rows. Gives how many bytes the histories grew by.
    fn visit(
        &self,
        histories: &mut [History],
        base: usize,
        runs: &[Run],
        bucket_rows: usize,
        mut out: Vec<&mut [u64]>,
    ) -> isize {
        let Self {
            stride,
            entries,
            plan,
            kinds,
            specs,
            layout,
        } = *self;
        let counted = &plan.counted;
        // Each row's own value of the counted columns, read from its entry as it joins, in
        // visiting order: the visits below then read them in order.
        let mut own: Vec<Vec<Option<u64>>> = vec![Vec::new(); kinds.len()];
        for &p in counted {
            own[p].reserve(runs.len());
        }
        // Each key's history's bytes before its rows join, in visiting order.
        let mut before = Vec::new();
        for (j, run) in runs.iter().enumerate() {
            let h = &mut histories[run.slot as usize - base];
            if j == 0 || runs[j - 1].slot != run.slot {
                before.push(h.bytes());
            }
            let at = add_entry(h, stride, run, entries);
            let entry = &entries[at..at + stride];
            for &p in counted {
                own[p].push((entry[1] >> p & 1 == 1).then_some(entry[2 + p]));
            }
        }
        let fresh = || plan.fresh(kinds);
        let mut frame_state = fresh();
        let (mut grew, mut key) = (0isize, 0);
        let mut previous_slot = None;
        let mut filled = vec![0; out.len()];
        for (j, run) in runs.iter().enumerate() {
            let bucket = run.row as usize / bucket_rows;
            let at = filled[bucket] * layout.stride;
            filled[bucket] += 1;
            let row = &mut out[bucket][at..at + layout.stride];
            let (slot, t) = (run.slot as usize, run.time);
            row.copy_from_slice(&layout.empty);
            row[layout.stride - 1] = u64::from(run.row);
            // A key's first row walks its frames from their starts, unless the key carried
            // them from its last batch.
            let restart = previous_slot != Some(slot)
                && !histories[slot - base].take_carried(&mut frame_state);
            previous_slot = Some(slot);
            let h = &histories[slot - base];
            for (k, (lookback, end)) in plan.frames.iter().enumerate() {
                let (from, to) = (t.saturating_sub(*lookback), t.saturating_sub(*end));
                // A key's rows come in time order, so its frame's bounds only move forward:
                // after the key's first row they are found by stepping on from the last ones.
                let (lo, hi) = if restart {
                    (
                        h.partition_point(stride, |x| x < from),
                        h.partition_point(stride, |x| x <= to),
                    )
                } else {
                    let f = &frame_state[k];
                    (
                        h.step_while(stride, f.lo, |x| x < from),
                        h.step_while(stride, f.hi, |x| x <= to),
                    )
                };
                let entries = Entries { h, stride };
                frame_state[k].slide(entries, (lo, hi.max(lo)), restart, plan.wants(k));
            }
            for (i, spec) in specs.iter().enumerate() {
                let k = plan.frame_of[i];
                let frame = &frame_state[k];
                let kept = if spec.agg.pairs() {
                    Some(frame.pair_value(spec.agg, plan.pair_of[i]))
                } else if let (Agg::KeyRows, Some(arg)) = (spec.agg, spec.arg) {
                    let value = own[arg][j];
                    Some(Value::I64(Some(match plan.wider[i] {
                        None => frame.entries_with(plan.position[k][arg], value),
                        Some(g) => {
                            let (e, wide) = (Entries { h, stride }, &frame_state[g]);
                            let past = (frame.hi..wide.hi)
                                .filter(|&x| e.i64(x, arg) == value.map(|v| v as i64))
                                .count();
                            wide.entries_with(plan.position[g][arg], value) - past as i64
                        }
                    })))
                } else {
                    spec.arg
                        .map(|arg| plan.position[k][arg])
                        .filter(|&at| at != usize::MAX)
                        .and_then(|at| frame.value(spec.agg, at))
                };
                let value = match kept {
                    Some(value) => value,
                    None => aggregate(spec, Entries { h, stride }, frame.lo, frame.hi, kinds),
                };
                layout.set(row, i, value);
            }
            // After a key's last row, its frames stay with its history or go back for the next.
            if runs.get(j + 1).is_none_or(|next| next.slot != run.slot) {
                let h = &mut histories[slot - base];
                h.carry(stride, &mut frame_state, fresh);
                grew += h.bytes() as isize - before[key] as isize;
                key += 1;
            }
        }
        grew
    }
}

/// How a group's computed values for a batch's rows are laid out, row by row: each row's
/// values, then its validity bits, then its place in the batch, in one stretch of words
/// (doubles by their bits). Rows are visited key by key, in no order of their own: a row's
/// values side by side are written at once (to the row's bucket, see [`Buckets`]), where a
/// column per function cost a cache miss per function and row (the columns of a large batch
/// are far larger than the caches).
struct RowLayout {
    /// Values per row (the group's functions), and words per row (values, validity, then the
    /// row's place in the batch).
    width: usize,
    stride: usize,
    /// A row's words before any value is set: 0 everywhere, counts valid (what an empty
    /// frame gives: 0 for counts, null otherwise).
    empty: Vec<u64>,
    /// Whether each function's values are doubles (else integers): a value of the other kind
    /// would be read as bits of this one.
    doubles: Vec<bool>,
}

impl RowLayout {
    fn new(specs: &[Spec]) -> Self {
        let width = specs.len();
        let stride = width + width.div_ceil(64) + 1;
        let mut empty = vec![0u64; stride];
        for (i, spec) in specs.iter().enumerate() {
            if matches!(spec.agg, Agg::Count | Agg::CountRows | Agg::KeyRows) {
                empty[width + i / 64] |= 1 << (i % 64);
            }
        }
        Self {
            width,
            stride,
            empty,
            doubles: specs
                .iter()
                .map(|s| s.output == DataType::Float64)
                .collect(),
        }
    }

    /// Sets value `i` in `row` (words of one row, which start as [`empty`](Self::empty));
    /// `Value::Null` leaves what an empty frame gives.
    fn set(&self, row: &mut [u64], i: usize, value: Value) {
        debug_assert!(
            !matches!(
                (&value, self.doubles[i]),
                (Value::F64(_), false) | (Value::I64(_), true)
            ),
            "a window value of the other kind than its column"
        );
        let word = match value {
            Value::F64(v) => v.map(f64::to_bits),
            Value::I64(v) => v.map(|v| v as u64),
            Value::Null => return,
        };
        let (mask, bit) = (&mut row[self.width + i / 64], 1u64 << (i % 64));
        match word {
            Some(word) => {
                *mask |= bit;
                row[i] = word;
            }
            None => {
                *mask &= !bit;
                row[i] = 0;
            }
        }
    }

    /// One column per function, of the functions' output types, for a batch of `n` rows whose
    /// visited rows' values are `words`, in `buckets`; rows not visited (no event time) get what
    /// an empty frame gives. The columns are made on every core, each core making some of them
    /// over all rows.
    fn finish(
        &self,
        words: &[u64],
        buckets: &Buckets,
        n: usize,
        specs: &[Spec],
    ) -> Result<Vec<ArrayRef>> {
        let per_core = self.width.div_ceil(rayon::current_num_threads()).max(1);
        let made: Vec<Result<Vec<ArrayRef>>> = (0..self.width)
            .step_by(per_core)
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|from| {
                let to = (from + per_core).min(self.width);
                self.columns(words, buckets, n, from..to, &specs[from..to])
            })
            .collect();
        let mut columns = Vec::with_capacity(self.width);
        for made in made {
            columns.extend(made?);
        }
        Ok(columns)
    }

    /// The columns of functions `functions` (whose specs are `specs`) over the batch's `n`
    /// rows, read bucket by bucket.
    fn columns(
        &self,
        words: &[u64],
        buckets: &Buckets,
        n: usize,
        functions: std::ops::Range<usize>,
        specs: &[Spec],
    ) -> Result<Vec<ArrayRef>> {
        let mut values: Vec<Vec<u64>> = functions.clone().map(|_| Vec::with_capacity(n)).collect();
        let mut valid: Vec<BooleanBufferBuilder> = functions
            .clone()
            .map(|_| BooleanBufferBuilder::new(n))
            .collect();
        // Where each of a bucket's rows is among the bucket's values (none: `u32::MAX`).
        let mut at = vec![u32::MAX; buckets.rows];
        for bucket in 0..buckets.len() {
            let first = bucket * buckets.rows;
            let rows = buckets.rows.min(n - first);
            let held = &words
                [buckets.starts[bucket] * self.stride..buckets.starts[bucket + 1] * self.stride];
            at.fill(u32::MAX);
            for (k, row) in held.chunks_exact(self.stride).enumerate() {
                at[row[self.stride - 1] as usize - first] = k as u32;
            }
            for &k in &at[..rows] {
                let row = match k {
                    u32::MAX => &self.empty[..],
                    k => &held[k as usize * self.stride..(k as usize + 1) * self.stride],
                };
                for (i, (column, bits)) in functions.clone().zip(values.iter_mut().zip(&mut valid))
                {
                    column.push(row[i]);
                    bits.append(row[self.width + i / 64] >> (i % 64) & 1 == 1);
                }
            }
        }
        specs
            .iter()
            .zip(values.into_iter().zip(valid))
            .map(|(spec, (words, mut bits))| {
                let nulls = Some(NullBuffer::new(bits.finish())).filter(|n| n.null_count() > 0);
                let words = Buffer::from_vec(words);
                Ok(match &spec.output {
                    DataType::Float64 => {
                        Arc::new(Float64Array::new(ScalarBuffer::from(words), nulls)) as ArrayRef
                    }
                    DataType::Int64 => Arc::new(Int64Array::new(ScalarBuffer::from(words), nulls)),
                    t @ DataType::Timestamp(..) => Arc::new(
                        TimestampMicrosecondArray::new(ScalarBuffer::from(words), nulls)
                            .with_data_type(t.clone()),
                    ),
                    other => {
                        return Err(JobError::internal(format!(
                            "unexpected window output type {other}"
                        )));
                    }
                })
            })
            .collect()
    }
}

/// The aggregate of `spec` over entries `lo..hi` of a history, for the functions a sliding frame
/// does not keep (row counts, first and last values), with the semantics of SQL (and
/// DataFusion): an empty frame gives 0 rows and NULL otherwise.
fn aggregate(spec: &Spec, h: Entries<'_>, lo: usize, hi: usize, kinds: &[Kind]) -> Value {
    if spec.agg == Agg::CountRows {
        return Value::I64(Some((hi - lo) as i64));
    }
    let Some(arg) = spec.arg else {
        return Value::Null;
    };
    if !matches!(spec.agg, Agg::First | Agg::Last) {
        return Value::Null;
    }
    // The frame's first or last event, nulls included (`RESPECT NULLS`); an empty frame's
    // NULL is what the output starts as.
    let Some(i) = (hi > lo).then(|| if spec.agg == Agg::Last { hi - 1 } else { lo }) else {
        return Value::Null;
    };
    match kinds[arg] {
        Kind::F64 => Value::F64(h.f64(i, arg)),
        Kind::I64 => Value::I64(h.i64(i, arg)),
        // Hashes only serve distinct counts, read from the frame's value counts.
        Kind::Hash => Value::Null,
    }
}

/// True for the functions read from a frame's running totals (or, for distinct counts, its
/// value counts).
fn by_totals(agg: Agg) -> bool {
    matches!(
        agg,
        Agg::Count
            | Agg::CountDistinct
            | Agg::KeyRows
            | Agg::Sum
            | Agg::Avg
            | Agg::StddevSamp
            | Agg::StddevPop
            | Agg::VarSamp
            | Agg::VarPop
    )
}

/// One frame of one key as it slides over the key's history: its entries `lo..hi`, and what it
/// keeps of each argument column it slides over ([`FrameNeeds::slides_over`], in that order).
/// Kept from one batch to the next for keys with long histories (see [`History::carried`]),
/// so it holds only what its functions read.
#[derive(Debug, Clone)]
struct Frame {
    lo: usize,
    hi: usize,
    columns: Vec<Kept>,
    /// Per pair of columns the frame's COVAR and CORR read, the totals of its pairs.
    co_totals: Vec<CoTotals>,
}

/// What a frame keeps of one argument column, by the column's kind: running totals and the
/// candidates for its minimum and maximum (`[min, max]`); or, for hashed columns, how many
/// entries of the frame hold each value, and how many none.
#[derive(Debug, Clone)]
enum Kept {
    Doubles {
        totals: Totals,
        extremes: [Extremes<f64>; 2],
    },
    Integers {
        totals: Totals,
        extremes: [Extremes<i64>; 2],
    },
    Hashes {
        counts: HashMap<i64, u32, foldhash::fast::RandomState>,
        nulls: u32,
    },
}

impl Kept {
    fn new(kind: Kind) -> Self {
        match kind {
            Kind::F64 => Self::Doubles {
                totals: Totals::default(),
                extremes: Default::default(),
            },
            Kind::I64 => Self::Integers {
                totals: Totals::default(),
                extremes: Default::default(),
            },
            Kind::Hash => Self::Hashes {
                counts: HashMap::default(),
                nulls: 0,
            },
        }
    }

    /// Empty, keeping what it has allocated.
    fn clear(&mut self) {
        match self {
            Self::Doubles { totals, extremes } => {
                *totals = Totals::default();
                extremes.iter_mut().for_each(|e| e.queue.clear());
            }
            Self::Integers { totals, extremes } => {
                *totals = Totals::default();
                extremes.iter_mut().for_each(|e| e.queue.clear());
            }
            Self::Hashes { counts, nulls } => {
                counts.clear();
                *nulls = 0;
            }
        }
    }

    /// Entry positions held, less `cut` (entries before it have left the history).
    fn shift(&mut self, cut: usize) {
        match self {
            Self::Doubles { extremes, .. } => extremes.iter_mut().for_each(|e| e.shift(cut)),
            Self::Integers { extremes, .. } => extremes.iter_mut().for_each(|e| e.shift(cut)),
            Self::Hashes { .. } => {}
        }
    }

    /// Approximate bytes held beyond the value itself.
    fn heap_bytes(&self) -> usize {
        match self {
            Self::Doubles { extremes, .. } => {
                extremes.iter().map(|e| e.queue.capacity() * 16).sum()
            }
            Self::Integers { extremes, .. } => {
                extremes.iter().map(|e| e.queue.capacity() * 16).sum()
            }
            Self::Hashes { counts, .. } => counts.capacity() * 16,
        }
    }
}

/// What a frame keeps of one argument column.
#[derive(Debug, Clone, Copy, Default)]
struct Needs {
    totals: bool,
    min: bool,
    max: bool,
}

/// The sliding-window extremum: the entries that can still be the frame's minimum (or
/// maximum), in entry order, their values strictly rising away from the front (falling for a
/// maximum). Each entry is queued and dropped once, so a frame's extremum costs O(1) per entry
/// however long the frame.
#[derive(Debug, Clone, Default)]
struct Extremes<T> {
    queue: VecDeque<(usize, T)>,
}

/// How an extremum orders values: integers as numbers; doubles in IEEE total order, which puts
/// NaN above every number, as Spark and Arrow order it (a frame holding a NaN has it as its
/// MAX; MIN passes over it).
trait Ordered: Copy {
    fn at_most(self, other: Self) -> bool;
}

impl Ordered for i64 {
    fn at_most(self, other: Self) -> bool {
        self <= other
    }
}

impl Ordered for f64 {
    fn at_most(self, other: Self) -> bool {
        self.total_cmp(&other).is_le()
    }
}

impl<T: Ordered> Extremes<T> {
    fn enter(&mut self, index: usize, value: Option<T>, max: bool) {
        let Some(v) = value else { return };
        while let Some(&(_, back)) = self.queue.back() {
            let beaten = if max {
                back.at_most(v)
            } else {
                v.at_most(back)
            };
            if !beaten {
                break;
            }
            self.queue.pop_back();
        }
        self.queue.push_back((index, v));
    }

    fn leave_before(&mut self, lo: usize) {
        while self.queue.front().is_some_and(|&(i, _)| i < lo) {
            self.queue.pop_front();
        }
    }

    fn value(&self) -> Option<T> {
        self.queue.front().map(|&(_, v)| v)
    }

    /// Entry positions less `cut` (none below it is queued).
    fn shift(&mut self, cut: usize) {
        self.queue.iter_mut().for_each(|e| e.0 -= cut);
    }
}

impl Frame {
    /// An empty frame keeping, of each of `columns` (of `kinds`), what its kind keeps; and the
    /// co-totals of `pairs` pairs.
    fn new(kinds: &[Kind], columns: &[usize], pairs: usize) -> Self {
        Self {
            lo: 0,
            hi: 0,
            columns: columns.iter().map(|&p| Kept::new(kinds[p])).collect(),
            co_totals: vec![CoTotals::default(); pairs],
        }
    }

    /// The value of `agg` over the `j`th column the frame slides over, from what the frame
    /// keeps; `None` for the functions it does not keep (row counts, first and last values).
    fn value(&self, agg: Agg, j: usize) -> Option<Value> {
        let side = usize::from(agg == Agg::Max);
        Some(match (agg, &self.columns[j]) {
            (Agg::CountDistinct, Kept::Hashes { counts, .. }) => {
                Value::I64(Some(counts.len() as i64))
            }
            (Agg::Min | Agg::Max, Kept::Doubles { extremes, .. }) => {
                Value::F64(extremes[side].value())
            }
            (Agg::Min | Agg::Max, Kept::Integers { extremes, .. }) => {
                Value::I64(extremes[side].value())
            }
            (Agg::Sum, Kept::Doubles { totals, .. }) => Value::F64(totals.sum()),
            (Agg::Sum, Kept::Integers { totals, .. }) => Value::I64(totals.int_sum()),
            (agg, Kept::Doubles { totals, .. } | Kept::Integers { totals, .. }) => match agg {
                Agg::Count => Value::I64(Some(totals.count() as i64)),
                Agg::Avg => Value::F64(totals.mean()),
                Agg::VarSamp => Value::F64(totals.variance(false)),
                Agg::VarPop => Value::F64(totals.variance(true)),
                Agg::StddevSamp => Value::F64(totals.variance(false).map(f64::sqrt)),
                Agg::StddevPop => Value::F64(totals.variance(true).map(f64::sqrt)),
                _ => return None,
            },
            (_, Kept::Hashes { .. }) => return None,
        })
    }

    /// How many entries of the frame hold `value` (a hash, or none) in its `j`th column, a
    /// hashed one.
    fn entries_with(&self, j: usize, value: Option<u64>) -> i64 {
        let Kept::Hashes { counts, nulls } = &self.columns[j] else {
            return 0;
        };
        let n = match value {
            Some(hash) => counts.get(&(hash as i64)).copied().unwrap_or(0),
            None => *nulls,
        };
        i64::from(n)
    }

    /// The value of the two-column `agg` over the frame's pair `q` (see `slide`).
    fn pair_value(&self, agg: Agg, q: usize) -> Value {
        let totals = &self.co_totals[q];
        Value::F64(match agg {
            Agg::CovarSamp => totals.covariance(false),
            Agg::CovarPop => totals.covariance(true),
            _ => totals.correlation(),
        })
    }

    /// Moves the frame to entries `lo..hi` of `h` (for the same key, never backwards; from
    /// scratch when `restart`, or when the frame jumped past the last one), keeping what
    /// `needs` asks of each of `columns` and the co-totals of `pairs` of (double) columns.
    fn slide(
        &mut self,
        h: Entries<'_>,
        (lo, hi): (usize, usize),
        restart: bool,
        (needs, columns, pairs): (&[Needs], &[usize], &[(usize, usize)]),
    ) {
        if restart || lo >= self.hi {
            self.columns.iter_mut().for_each(Kept::clear);
            self.co_totals.fill(CoTotals::default());
            self.lo = lo;
            self.hi = lo;
        }
        let (entering, leaving) = (self.hi..hi, self.lo..lo);
        for (kept, &p) in self.columns.iter_mut().zip(columns) {
            let need = needs[p];
            match kept {
                Kept::Doubles { totals, extremes } => slide_numbers(
                    (totals, extremes),
                    need,
                    (entering.clone(), leaving.clone(), lo),
                    |i| h.f64(i, p),
                    Totals::add_f64,
                ),
                Kept::Integers { totals, extremes } => slide_numbers(
                    (totals, extremes),
                    need,
                    (entering.clone(), leaving.clone(), lo),
                    |i| h.i64(i, p),
                    Totals::add_i64,
                ),
                Kept::Hashes { counts, nulls } => {
                    for v in entering.clone().map(|i| h.i64(i, p)) {
                        match v {
                            Some(v) => *counts.entry(v).or_insert(0) += 1,
                            None => *nulls += 1,
                        }
                    }
                    for v in leaving.clone().map(|i| h.i64(i, p)) {
                        match v {
                            Some(v) => {
                                if let Some(n) = counts.get_mut(&v) {
                                    *n -= 1;
                                    if *n == 0 {
                                        counts.remove(&v);
                                    }
                                }
                            }
                            None => *nulls -= 1,
                        }
                    }
                }
            }
        }
        for (totals, &(a, b)) in self.co_totals.iter_mut().zip(pairs) {
            entering
                .clone()
                .for_each(|i| totals.add(h.f64(i, a), h.f64(i, b), true));
            leaving
                .clone()
                .for_each(|i| totals.add(h.f64(i, a), h.f64(i, b), false));
        }
        self.lo = lo;
        self.hi = hi;
    }

    /// Positions less `cut`, once the entries before `cut` (none of them in the frame any
    /// more) have left the history.
    fn shift(&mut self, cut: usize) {
        self.lo -= cut;
        self.hi -= cut;
        self.columns.iter_mut().for_each(|c| c.shift(cut));
    }

    /// Approximate bytes held.
    fn bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.columns.capacity() * std::mem::size_of::<Kept>()
            + self.columns.iter().map(Kept::heap_bytes).sum::<usize>()
            + self.co_totals.capacity() * std::mem::size_of::<CoTotals>()
    }
}

/// Slides a numeric column's extremes and totals (as `need` asks): entries `entering` enter,
/// `leaving` leave, and the extremes forget the entries before `lo`.
fn slide_numbers<T: Ordered>(
    (totals, extremes): (&mut Totals, &mut [Extremes<T>; 2]),
    need: Needs,
    (entering, leaving, lo): (Range<usize>, Range<usize>, usize),
    value: impl Fn(usize) -> Option<T>,
    add: fn(&mut Totals, Option<T>, bool),
) {
    for (side, wanted) in [(0, need.min), (1, need.max)] {
        if wanted {
            let e = &mut extremes[side];
            entering
                .clone()
                .for_each(|i| e.enter(i, value(i), side == 1));
            e.leave_before(lo);
        }
    }
    if need.totals {
        entering.for_each(|i| add(totals, value(i), true));
        leaving.for_each(|i| add(totals, value(i), false));
    }
}

/// A 64-bit hash of each value of `column` (null for null), stable across runs, machines and
/// versions as snapshots need: FNV-1a over the value's text, then a finalising mix. Two
/// different values share a hash with odds of about n^2 / 2^65 for n values in a frame:
/// distinct counts are exact in practice.
fn value_hashes(column: &ArrayRef) -> Result<Int64Array> {
    let text = cast(column, &DataType::Utf8).map_err(JobError::arrow("hashing window values"))?;
    Ok(text
        .as_string::<i32>()
        .iter()
        .map(|v| {
            v.map(|v| {
                let mut h: u64 = 0xcbf2_9ce4_8422_2325;
                for b in v.as_bytes() {
                    h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
                }
                h ^= h >> 33;
                h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
                h ^= h >> 33;
                h as i64
            })
        })
        .collect())
}

fn times_of(batch: &RecordBatch, index: usize) -> Result<TimestampMicrosecondArray> {
    batch
        .column(index)
        .as_primitive_opt::<TimestampMicrosecondType>()
        .cloned()
        .ok_or_else(|| JobError::internal("the watermark column is not a timestamp".into()))
}

/// Appends a part to a snapshot: its length, then an Arrow IPC file of `schema` that `write`
/// fills, written in place (no second copy of the part).
fn write_part(
    out: &mut Vec<u8>,
    schema: &SchemaRef,
    write: impl FnOnce(&mut FileWriter<&mut Vec<u8>>) -> Result<()>,
) -> Result<()> {
    let arrow = || JobError::arrow("writing the state snapshot");
    let start = out.len();
    out.extend_from_slice(&0u64.to_le_bytes());
    let mut writer = FileWriter::try_new(&mut *out, schema).map_err(arrow())?;
    write(&mut writer)?;
    writer.finish().map_err(arrow())?;
    drop(writer);
    let length = (out.len() - start - 8) as u64;
    out[start..start + 8].copy_from_slice(&length.to_le_bytes());
    Ok(())
}

/// Appends a part holding `batches` (read back as one batch).
fn write_batches(out: &mut Vec<u8>, schema: &SchemaRef, batches: &[RecordBatch]) -> Result<()> {
    write_part(out, schema, |writer| {
        for batch in batches {
            writer
                .write(batch)
                .map_err(JobError::arrow("writing the state snapshot"))?;
        }
        Ok(())
    })
}

/// The rows of `batches` after the first `skip`.
fn rows_after(batches: &[RecordBatch], mut skip: usize) -> Vec<RecordBatch> {
    let mut rows = Vec::new();
    for batch in batches {
        let n = batch.num_rows().min(skip);
        skip -= n;
        if n < batch.num_rows() {
            rows.push(batch.slice(n, batch.num_rows() - n));
        }
    }
    rows
}

/// Where each part from the cursor's place to the end starts, the cursor left at the end: the
/// parts are then read one at a time, in any order.
fn part_starts(cursor: &mut Cursor<&[u8]>) -> Option<Vec<u64>> {
    let mut starts = Vec::new();
    while cursor.position() < cursor.get_ref().len() as u64 {
        starts.push(cursor.position());
        let mut len = [0u8; 8];
        cursor.read_exact(&mut len).ok()?;
        cursor.set_position(cursor.position().checked_add(u64::from_le_bytes(len))?);
    }
    Some(starts)
}

/// The next part's rows as one batch.
fn read_part(cursor: &mut Cursor<&[u8]>) -> Option<RecordBatch> {
    let (schema, batches) = read_part_file(cursor)?;
    datafusion::arrow::compute::concat_batches(&schema, &batches).ok()
}

/// The next part's schema and record batches, as written.
fn read_part_file(cursor: &mut Cursor<&[u8]>) -> Option<(SchemaRef, Vec<RecordBatch>)> {
    let mut len = [0u8; 8];
    cursor.read_exact(&mut len).ok()?;
    let len = usize::try_from(u64::from_le_bytes(len)).ok()?;
    let start = usize::try_from(cursor.position()).ok()?;
    let bytes = cursor.get_ref().get(start..start.checked_add(len)?)?;
    cursor.set_position((start + len) as u64);
    crate::stream::checkpoint::read_ipc_file(bytes).ok()
}

#[cfg(test)]
#[expect(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_sliding_extremum_equals_the_scan_of_its_frame() {
        let values: Vec<Option<i64>> = (0..400)
            .map(|i: i64| (i % 7 != 3).then_some((i * 7919) % 101))
            .collect();
        let (mut min, mut max) = (Extremes::default(), Extremes::default());
        let mut hi = 0;
        for step in 0..400usize {
            // A frame whose both ends move forward by uneven steps.
            let new_hi = (step + 1).min(values.len());
            let lo = new_hi.saturating_sub(1 + step % 37);
            for (i, v) in values.iter().enumerate().take(new_hi).skip(hi) {
                min.enter(i, *v, false);
                max.enter(i, *v, true);
            }
            min.leave_before(lo);
            max.leave_before(lo);
            hi = new_hi;
            let frame = values[lo..hi].iter().flatten();
            assert_eq!(min.value(), frame.clone().min().copied(), "{lo}..{hi}");
            assert_eq!(max.value(), frame.max().copied(), "{lo}..{hi}");
        }
    }

    /// A key's frames, carried from one batch to the next, let the entries a cut drops leave
    /// them and move their positions down; an event before the key's latest drops them.
    #[test]
    fn carried_frames_follow_cuts_and_are_dropped_by_an_earlier_event() {
        let kinds = [Kind::F64];
        let spec = |name: &str, agg| Spec {
            name: name.into(),
            output: DataType::Float64,
            agg,
            arg: Some(0),
            arg2: None,
            lookback_us: 10,
            end_us: 0,
        };
        let plan = FrameNeeds::of(&[spec("sum", Agg::Sum), spec("max", Agg::Max)], &kinds);
        let stride = stride_of(1);
        let entry = |t: u64| [t, 1, (t as f64).to_bits()];
        let mut h = History::default();
        for t in 0..20 {
            h.insert(stride, &entry(t));
        }
        // The frame of the event at 19: entries 9..20.
        let mut frames = plan.fresh(&kinds);
        frames[0].slide(Entries { h: &h, stride }, (9, 20), true, plan.wants(0));
        h.carry(stride, &mut frames, || plan.fresh(&kinds));
        assert!(h.carried.is_some());
        h.cut_before(stride, 12, &plan);
        assert_eq!(h.len(stride), 8);
        let frame = &h.carried.as_ref().unwrap()[0];
        assert_eq!((frame.lo, frame.hi), (0, 8));
        let sum = (12..20).sum::<u64>() as f64;
        assert_eq!(frame.value(Agg::Sum, 0), Some(Value::F64(Some(sum))));
        assert_eq!(frame.value(Agg::Max, 0), Some(Value::F64(Some(19.0))));
        // Swapped out for the key's next rows, and back.
        let mut working = plan.fresh(&kinds);
        assert!(h.take_carried(&mut working));
        assert_eq!((working[0].lo, working[0].hi), (0, 8));
        h.carry(stride, &mut working, || plan.fresh(&kinds));
        assert_eq!(h.carried.as_ref().unwrap()[0].hi, 8);
        h.insert(stride, &entry(25));
        assert!(h.carried.is_some(), "an event after the latest keeps them");
        // A cut past the frame's end empties it.
        h.cut_before(stride, 21, &plan);
        assert_eq!(h.len(stride), 1);
        let frame = &h.carried.as_ref().unwrap()[0];
        assert_eq!((frame.lo, frame.hi), (0, 0));
        assert_eq!(frame.value(Agg::Sum, 0), Some(Value::F64(None)));
        assert_eq!(frame.value(Agg::Max, 0), Some(Value::F64(None)));
        h.insert(stride, &entry(24));
        assert!(h.carried.is_none(), "an event before the latest drops them");
    }

    /// Parts take whole keys (each part then owns a stretch of the history arena), cover every
    /// visited row once, in order, and come near the size asked; buckets give each part a share
    /// of each bucket that holds exactly that part's rows of the bucket.
    #[test]
    fn parts_hold_whole_keys_and_buckets_hold_each_rows_values_once() {
        // Keys with 1 to 40 rows each, rows spread over the batch.
        let mut runs = Vec::new();
        for slot in 0..200u32 {
            for k in 0..(slot * 7919 % 40 + 1) {
                let row = (slot * 31 + k * 977) % 5_000;
                runs.push(Run {
                    slot,
                    row,
                    time: i64::from(k),
                });
            }
        }
        // One row per batch row at most, as in a batch.
        let mut seen = std::collections::HashSet::new();
        runs.retain(|r| seen.insert(r.row));
        let n = 5_000;
        for wanted in [1, 2, 7, 64, 10_000] {
            let cut = key_parts(&runs, wanted);
            let mut next = 0;
            for &(from, to) in &cut {
                assert_eq!(from, next, "parts in order and without gaps");
                assert!(to > from, "an empty part");
                if to < runs.len() {
                    assert_ne!(
                        runs[to - 1].slot,
                        runs[to].slot,
                        "a key split between parts"
                    );
                }
                next = to;
            }
            assert_eq!(next, runs.len(), "every visited row in a part");
            let size = runs.len().div_ceil(wanted).max(MIN_PART_ROWS);
            assert!(
                cut.len() <= runs.len().div_ceil(size),
                "{wanted}: {}",
                cut.len()
            );
            for stride in [3, 25] {
                let buckets = Buckets::of(&runs, &cut, n, stride);
                let mut words = vec![0u64; runs.len() * stride];
                let shares = buckets.shares(&mut words, stride);
                assert_eq!(shares.len(), cut.len());
                for (share, &(from, to)) in shares.iter().zip(&cut) {
                    assert_eq!(share.len(), buckets.len());
                    for (bucket, words) in share.iter().enumerate() {
                        let rows = runs[from..to]
                            .iter()
                            .filter(|r| r.row as usize / buckets.rows == bucket)
                            .count();
                        assert_eq!(
                            words.len(),
                            rows * stride,
                            "part {from}..{to} bucket {bucket}"
                        );
                    }
                }
                assert_eq!(*buckets.starts.last().unwrap_or(&0), runs.len());
            }
        }
    }

    /// Window functions over argument columns with nulls, of both kinds, over expressions of
    /// them, with distinct counts, first and last values, a frame ending before the event, and a
    /// second partitioning (by a nullable column) that looks back less far than the first.
    const MIXED_SQL: &str = "SELECT id, \
        COUNT(x) OVER w AS cx, SUM(x) OVER w AS sx, AVG(x) OVER w AS ax, MIN(x) OVER w AS mnx, \
        MAX(k) OVER w AS mxk, first_value(x) OVER w AS fx, last_value(k) OVER w AS lk, \
        COUNT(DISTINCT s) OVER w AS ds, COUNT(*) OVER w AS n, \
        SUM(x * 2 + k) OVER w AS se, COUNT(CASE WHEN x > 500 THEN 1 END) OVER w AS ce, \
        SUM(COALESCE(x, 0)) OVER w AS zx, \
        stddev(x) OVER (PARTITION BY u ORDER BY t RANGE BETWEEN INTERVAL '30' SECOND PRECEDING \
            AND CURRENT ROW) AS sdx, \
        SUM(k) OVER (PARTITION BY u ORDER BY t RANGE BETWEEN INTERVAL '20' SECOND PRECEDING \
            AND INTERVAL '2' SECOND PRECEDING) AS sk, \
        MAX(x) OVER (PARTITION BY s ORDER BY t RANGE BETWEEN INTERVAL '3' SECOND PRECEDING \
            AND CURRENT ROW) AS smx \
        FROM v WINDOW w AS (PARTITION BY u ORDER BY t \
            RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW)";

    /// Event time is at most this far out of order, under the watermark's delay.
    const DISORDER_US: i64 = 4_000_000;
    const DELAY_US: i64 = 5_000_000;

    fn mixed_input() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("u", DataType::Utf8, false),
            Field::new("t", DataType::Timestamp(TimeUnit::Microsecond, None), false),
            Field::new("x", DataType::Float64, true),
            Field::new("k", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
        ]))
    }

    /// 3,000 events of 7 keys, a fifth of each argument null, out of order by up to
    /// [`DISORDER_US`], cut into batches of uneven sizes: up to 400 events in the first three
    /// (the batches `fixtures/incremental-chain-v1.bin` was written after), then up to 60
    /// (18 s of events), so that frames of 10 to 30 s hold about as many rows as a batch
    /// joins, and snapshots go on in deltas between full ones.
    fn mixed_batches() -> Vec<RecordBatch> {
        use datafusion::arrow::array::StringArray;
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let count = 3_000;
        let mut rows = Vec::new();
        for id in 0..count {
            let t = 1_767_225_600_000_000 + id * 300_000 - next(DISORDER_US as u64) as i64;
            let null = |r: u64| r < 20;
            rows.push((
                id,
                format!("user{}", next(7)),
                t,
                (!null(next(100))).then(|| next(10_000) as f64 / 7.0),
                (!null(next(100))).then(|| next(1_000) as i64 - 500),
                (!null(next(100))).then(|| format!("m{}", next(5))),
            ));
        }
        let mut batches = Vec::new();
        let mut at = 0;
        while at < rows.len() {
            let most = if batches.len() < 3 { 400 } else { 60 };
            let take = (1 + next(most) as usize).min(rows.len() - at);
            let part = &rows[at..at + take];
            at += take;
            batches.push(
                RecordBatch::try_new(
                    mixed_input(),
                    vec![
                        Arc::new(Int64Array::from_iter_values(part.iter().map(|r| r.0))),
                        Arc::new(StringArray::from_iter_values(part.iter().map(|r| &r.1))),
                        Arc::new(TimestampMicrosecondArray::from_iter_values(
                            part.iter().map(|r| r.2),
                        )),
                        Arc::new(Float64Array::from_iter(part.iter().map(|r| r.3))),
                        Arc::new(Int64Array::from_iter(part.iter().map(|r| r.4))),
                        Arc::new(StringArray::from_iter(part.iter().map(|r| r.5.clone()))),
                    ],
                )
                .unwrap(),
            );
        }
        batches
    }

    type Rows = HashMap<i64, Vec<datafusion::common::ScalarValue>>;

    /// `MIXED_SQL`'s output over `rows`, run as a batch, by id.
    async fn mixed_batch(rows: &[RecordBatch]) -> Rows {
        sql_batch(MIXED_SQL, rows).await
    }

    /// `sql`'s output over `rows` (as `v`), run as a batch, by id.
    async fn sql_batch(sql: &str, rows: &[RecordBatch]) -> Rows {
        let ctx = crate::scoring::session().unwrap();
        let table = MemTable::try_new(mixed_input(), vec![rows.to_vec()]).unwrap();
        ctx.register_table("v", Arc::new(table)).unwrap();
        by_id(&ctx.sql(sql).await.unwrap().collect().await.unwrap())
    }

    fn by_id(batches: &[RecordBatch]) -> Rows {
        use datafusion::common::ScalarValue;
        let mut out = HashMap::new();
        for b in batches {
            for row in 0..b.num_rows() {
                let values: Vec<ScalarValue> = b
                    .columns()
                    .iter()
                    .map(|c| ScalarValue::try_from_array(c, row).unwrap())
                    .collect();
                let ScalarValue::Int64(Some(id)) = values[0] else {
                    unreachable!()
                };
                out.insert(id, values);
            }
        }
        out
    }

    fn assert_rows_equal(streamed: &Rows, batch: &Rows, ids: impl Iterator<Item = i64>) {
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0);
        let mut compared = 0;
        for id in ids {
            crate::stream::engine_tests::assert_same_values(id, &streamed[&id], &batch[&id], close);
            compared += 1;
        }
        assert!(compared > 0);
    }

    /// Runs `MIXED_SQL` over the batches on the incremental path, restoring the state from its
    /// snapshots every fourth batch; each batch's output by id, with the ids of its input.
    async fn mixed_stream(on_arrival: bool) -> Vec<(Vec<i64>, Rows)> {
        mixed_stream_with(MIXED_SQL, mixed_batches(), on_arrival, every_fourth).await
    }

    /// Restores from the state's own chain after every fourth batch.
    fn every_fourth(b: usize, chain: &[Vec<u8>]) -> Option<Vec<Vec<u8>>> {
        (b % 4 == 3).then(|| chain.to_vec())
    }

    /// `sql` over `batches` on the incremental path, with `swap` shown the snapshot chain after
    /// each batch: when it gives a chain back, the state is restored from that one.
    async fn mixed_stream_with(
        sql: &str,
        batches: Vec<RecordBatch>,
        on_arrival: bool,
        swap: impl FnMut(usize, &[Vec<u8>]) -> Option<Vec<Vec<u8>>>,
    ) -> Vec<(Vec<i64>, Rows)> {
        stream_planned(sql, batches, on_arrival, true, swap).await
    }

    /// `sql` over a view `v` of `input` (its event time the third column), analyzed as the job
    /// plans it (argument expressions are evaluated with their types coerced), and its
    /// incremental plan, finer row counts read from coarser groups or not.
    async fn planned_over_v(
        sql: &str,
        input: &SchemaRef,
        fold_counts: bool,
    ) -> (
        datafusion::prelude::SessionContext,
        LogicalPlan,
        IncrementalPlan,
    ) {
        let ctx = crate::scoring::session().unwrap();
        let table = MemTable::try_new(Arc::clone(input), vec![vec![]]).unwrap();
        ctx.register_table("v", Arc::new(table)).unwrap();
        let (state, logical) = ctx.sql(sql).await.unwrap().into_parts();
        let logical = state
            .analyzer()
            .execute_and_check(logical, state.config_options(), |_, _| {})
            .unwrap();
        let plan = IncrementalPlan::planned(&logical, "v", input, 2, fold_counts).unwrap();
        (ctx, logical, plan)
    }

    /// [`mixed_stream_with`], planned with finer row counts read from coarser groups or not.
    async fn stream_planned(
        sql: &str,
        batches: Vec<RecordBatch>,
        on_arrival: bool,
        fold_counts: bool,
        mut swap: impl FnMut(usize, &[Vec<u8>]) -> Option<Vec<Vec<u8>>>,
    ) -> Vec<(Vec<i64>, Rows)> {
        // The batches' columns: the mixed input's, or fewer.
        let input = batches
            .first()
            .map_or_else(mixed_input, RecordBatch::schema);
        let (ctx, logical, plan) = planned_over_v(sql, &input, fold_counts).await;
        assert!(plan.rest().is_empty(), "all incremental: {:?}", plan.rest());
        let mut state =
            IncrementalState::new(plan.clone(), Arc::clone(&input), on_arrival).unwrap();
        let mut chain: Vec<Vec<u8>> = Vec::new();
        let mut max_time = i64::MIN;
        let mut out = Vec::new();
        // A last, empty batch with a watermark past every event flushes what waits.
        let last = batches.len();
        for (b, batch) in batches.into_iter().map(Some).chain([None]).enumerate() {
            let ids: Vec<i64> = batch
                .iter()
                .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
                .collect();
            if let Some(batch) = &batch {
                let times = batch.column(2).as_primitive::<TimestampMicrosecondType>();
                max_time = max_time.max(times.values().iter().copied().max().unwrap());
            }
            let watermark_ms = if b == last {
                i64::MAX / 1000
            } else {
                (max_time - DELAY_US) / 1000
            };
            let rows = state
                .stage(batch.into_iter().collect(), watermark_ms)
                .unwrap();
            let replaced = plan.replace_windows(logical.clone(), rows).unwrap();
            let written = ctx
                .execute_logical_plan(replaced)
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
            out.push((ids, by_id(&written)));
            let snapshot = state.snapshot(b as i64).unwrap();
            if IncrementalState::builds_on(&snapshot.bytes).is_none() {
                chain.clear();
            }
            chain.push(snapshot.bytes);
            if let Some(other) = swap(b, &chain) {
                chain = other;
                state =
                    IncrementalState::new(plan.clone(), Arc::clone(&input), on_arrival).unwrap();
                state.restore(b as i64, &chain).unwrap();
            }
        }
        out
    }

    /// A chain written before deltas held the joined rows once, for every group (a full
    /// snapshot, then deltas of each group's new entries: this stream's after batch 2, written
    /// by that version), restores; the stream goes on from it as from its own, and later
    /// restores read it followed by deltas of the new kind.
    #[tokio::test]
    async fn a_chain_of_per_group_deltas_written_before_restores() {
        let older = fixture_chain(include_bytes!("fixtures/incremental-chain-v1.bin"));
        assert_eq!(older.len(), 3);
        assert!(older[1..].iter().all(|d| d.starts_with(b"RSDLT1")));
        assert_equals_the_batch(
            MIXED_SQL,
            mixed_stream_with(MIXED_SQL, mixed_batches(), false, |b, chain| {
                if b == 2 {
                    Some(older.clone())
                } else {
                    every_fourth(b, chain)
                }
            })
            .await,
        )
        .await;
    }

    /// A chain whose deltas hold every waiting row (written before deltas held only the rows
    /// that started waiting: this stream's after batch 4, a full snapshot and two deltas)
    /// restores; later deltas hold only the rows that started waiting, and restores read both
    /// kinds in one chain.
    #[tokio::test]
    async fn a_chain_of_deltas_holding_every_waiting_row_restores() {
        let older = fixture_chain(include_bytes!("fixtures/incremental-chain-v2.bin"));
        assert_eq!(older.len(), 3);
        assert!(older[1..].iter().all(|d| d.starts_with(b"RSDLT2")));
        let mut mixed = 0;
        let stream = mixed_stream_with(MIXED_SQL, mixed_batches(), false, |b, chain| {
            if b == 4 {
                return Some(older.clone());
            }
            // Two batches on, the chain holds deltas of both kinds.
            let restore = if b == 6 {
                Some(chain.to_vec())
            } else {
                every_fourth(b, chain)
            };
            let kinds = chain.iter().filter_map(|s| s.get(..6)).collect::<Vec<_>>();
            mixed += usize::from(
                restore.is_some()
                    && kinds.contains(&&b"RSDLT2"[..])
                    && kinds.contains(&&b"RSDLT3"[..]),
            );
            restore
        })
        .await;
        assert!(mixed > 0, "no restore read both kinds of delta");
        assert_equals_the_batch(MIXED_SQL, stream).await;
    }

    /// A delta holds the rows that started waiting since the snapshot before, not every
    /// waiting row; a restore from the chain waits for the same rows, and goes on as the
    /// state it was written from.
    #[tokio::test]
    async fn a_delta_holds_only_the_rows_that_started_waiting() {
        let input = mixed_input();
        let (_, _, plan) = planned_over_v(MIXED_SQL, &input, true).await;
        let batches = mixed_batches();
        let mut state = IncrementalState::new(plan.clone(), Arc::clone(&input), false).unwrap();
        // The first batch's first minute of events is due; its other rows and all of the
        // second batch's (two minutes on) wait.
        let watermark_ms = 1_767_225_600_000 + 60_000;
        state.stage(vec![batches[0].clone()], watermark_ms).unwrap();
        let waiting = state.rows() - state.groups[0].entries();
        assert!(waiting > 0 && state.groups[0].entries() > 0);
        let full = state.snapshot(0).unwrap().bytes;
        assert!(full.starts_with(b"RSINC1"));
        state.stage(vec![batches[1].clone()], watermark_ms).unwrap();
        let delta = state.snapshot(1).unwrap().bytes;
        assert!(delta.starts_with(b"RSDLT3"));
        let held = read_part(&mut Cursor::new(&delta[30..]))
            .unwrap()
            .num_rows();
        assert_eq!(held, batches[1].num_rows(), "only the second batch's rows");
        let mut restored = IncrementalState::new(plan.clone(), Arc::clone(&input), false).unwrap();
        restored.restore(1, &[full, delta]).unwrap();
        assert_eq!(restored.rows(), state.rows());
        assert_eq!(restored.rows(), waiting + held + state.groups[0].entries());
        // Both release the same rows, with the same windows, at the next watermark.
        let later = watermark_ms + 100_000;
        let ours = state.stage(vec![batches[2].clone()], later).unwrap();
        let theirs = restored.stage(vec![batches[2].clone()], later).unwrap();
        assert_eq!(ours, theirs);
        assert!(ours.iter().map(RecordBatch::num_rows).sum::<usize>() > batches[2].num_rows());
    }

    /// Histories are cut once the watermark has moved on by a 64th of their lookback, not in
    /// every batch; what they hold is counted as it changes.
    #[tokio::test]
    async fn histories_are_cut_once_the_watermark_has_moved_on_enough() {
        let input = mixed_input();
        let (_, _, plan) = planned_over_v(MIXED_SQL, &input, true).await;
        let batches = mixed_batches();
        let mut state = IncrementalState::new(plan, Arc::clone(&input), false).unwrap();
        // The first batch's events span two minutes; the longest lookback is 30 s.
        let start_ms = 1_767_225_600_000;
        state
            .stage(vec![batches[0].clone()], start_ms + 130_000)
            .unwrap();
        let (held, bytes) = (state.rows(), state.bytes());
        assert!(held > 0 && state.pending.is_empty());
        // 400 ms on, less than 30 s / 64: nothing is cut.
        state.stage(Vec::new(), start_ms + 130_400).unwrap();
        assert_eq!((state.rows(), state.bytes()), (held, bytes));
        // A second on: what is older than 30 s before the watermark goes.
        state.stage(Vec::new(), start_ms + 131_100).unwrap();
        assert!(state.rows() < held);
        // A minute on, every event is out of reach of the frames still to come.
        state.stage(Vec::new(), start_ms + 200_000).unwrap();
        assert_eq!(state.rows(), 0);
        assert!(state.bytes() < bytes);
    }

    /// Snapshots as a fixture holds them: each one's length, then its bytes.
    fn fixture_chain(fixture: &[u8]) -> Vec<Vec<u8>> {
        let mut chain = Vec::new();
        let mut at = 0;
        while at < fixture.len() {
            let len = u64::from_le_bytes(fixture[at..at + 8].try_into().unwrap()) as usize;
            chain.push(fixture[at + 8..at + 8 + len].to_vec());
            at += 8 + len;
        }
        chain
    }

    /// Asserts that a stream of the mixed batches wrote the rows of the SQL over the whole
    /// input, each once.
    async fn assert_equals_the_batch(sql: &str, stream: Vec<(Vec<i64>, Rows)>) {
        assert_equals_the_batch_of(sql, &mixed_batches(), stream).await;
    }

    /// Asserts that a stream of `input` wrote the rows of the SQL over all of it, each once.
    async fn assert_equals_the_batch_of(
        sql: &str,
        input: &[RecordBatch],
        stream: Vec<(Vec<i64>, Rows)>,
    ) {
        let batch = sql_batch(sql, input).await;
        let streamed: Rows = stream.into_iter().flat_map(|(_, rows)| rows).collect();
        assert_eq!(streamed.len(), batch.len(), "every event once");
        assert_rows_equal(&streamed, &batch, batch.keys().copied());
    }

    /// Snapshots written while the state held every input column (before the job read only
    /// the columns its query needs) restore into a state over fewer columns, and the stream
    /// goes on as if it had never stopped.
    #[tokio::test]
    async fn snapshots_of_every_column_restore_into_a_state_of_the_columns_read() {
        let sql = "SELECT id, SUM(x) OVER (PARTITION BY u ORDER BY t \
            RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW) AS sx FROM v";
        let mut written = Vec::new();
        mixed_stream_with(sql, mixed_batches(), false, |b, chain| {
            if b == 6 {
                written = chain.to_vec();
            }
            None
        })
        .await;
        assert!(written.len() > 1, "a full snapshot and deltas");
        let read: Vec<RecordBatch> = mixed_batches()
            .iter()
            .map(|b| b.project(&[0, 1, 2, 3]).unwrap())
            .collect();
        let stream = mixed_stream_with(sql, read, false, |b, _| (b == 6).then(|| written.clone()));
        assert_equals_the_batch(sql, stream.await).await;
    }

    /// The mixed events cut into batches of `rows` events each.
    fn batches_of(rows: usize) -> Vec<RecordBatch> {
        let all =
            datafusion::arrow::compute::concat_batches(&mixed_input(), &mixed_batches()).unwrap();
        (0..all.num_rows())
            .step_by(rows)
            .map(|at| all.slice(at, rows.min(all.num_rows() - at)))
            .collect()
    }

    /// The batches whose snapshot was full, when `sql` streams over `batches`; the state is
    /// restored from its chain after each batch in `restore_after`.
    async fn full_snapshots(
        sql: &str,
        batches: Vec<RecordBatch>,
        restore_after: &[usize],
    ) -> (Vec<usize>, Vec<(Vec<i64>, Rows)>) {
        let mut full = Vec::new();
        let stream = mixed_stream_with(sql, batches, false, |b, chain| {
            // A full snapshot starts a new chain.
            if chain.len() == 1 {
                full.push(b);
            }
            restore_after.contains(&b).then(|| chain.to_vec())
        })
        .await;
        (full, stream)
    }

    /// A state that only grows (every event within the lookback) is written in full once,
    /// then in deltas up to the most a chain may hold: a full snapshot every tenth batch wrote
    /// it whole again each time. Restores from long chains equal the SQL over the whole input.
    #[tokio::test]
    async fn a_growing_state_is_written_in_full_only_when_its_chain_is_longest() {
        let sql = "SELECT id, SUM(x) OVER (PARTITION BY u ORDER BY t \
            RANGE BETWEEN INTERVAL '1' HOUR PRECEDING AND CURRENT ROW) AS sx FROM v";
        let batches = batches_of(50);
        let last = batches.len();
        assert!(last > MAX_DELTAS + 5);
        let (full, stream) = full_snapshots(sql, batches, &[30, MAX_DELTAS + 3]).await;
        // The last batch's watermark, past every event, empties the histories.
        assert_eq!(full, vec![0, MAX_DELTAS + 1, last]);
        assert_equals_the_batch(sql, stream).await;
    }

    /// Once the deltas since the full snapshot hold as many rows as the histories, the next
    /// snapshot is full: a ten-second lookback over events 0.3 s apart keeps about 33 of them,
    /// and batches of 10 join about 10 each, so every fourth snapshot or so is full.
    #[tokio::test]
    async fn a_full_snapshot_follows_once_the_deltas_outweigh_the_histories() {
        let sql = "SELECT id, SUM(x) OVER (PARTITION BY u ORDER BY t \
            RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW) AS sx FROM v";
        let (full, stream) = full_snapshots(sql, batches_of(10), &[7, 150]).await;
        // Not counting the first (batch 0 kept a few rows) and the last (the last batch, its
        // watermark past every event, empties the histories).
        let gaps: Vec<usize> = full.windows(2).map(|w| w[1] - w[0]).collect();
        let inner = &gaps[1..gaps.len() - 1];
        assert!(inner.len() > 50, "{full:?}");
        assert!(inner.iter().all(|g| (3..=4).contains(g)), "{full:?}");
        assert_equals_the_batch(sql, stream).await;
    }

    #[tokio::test]
    async fn frames_over_nulls_and_disorder_restored_from_snapshots_equal_the_sql_over_the_whole_input()
     {
        // Restored from chains of deltas, not only from full snapshots.
        let mut deltas = Vec::new();
        let stream = mixed_stream_with(MIXED_SQL, mixed_batches(), false, |b, chain| {
            let restored = every_fourth(b, chain);
            if restored.is_some() {
                deltas.push(chain.len() - 1);
            }
            restored
        })
        .await;
        assert!(deltas.iter().filter(|&&n| n > 0).count() > 5, "{deltas:?}");
        assert_equals_the_batch(MIXED_SQL, stream).await;
    }

    /// A column that only an argument expression reads is kept with the histories, and read
    /// back from snapshot deltas.
    #[tokio::test]
    async fn columns_only_expressions_read_are_kept_and_restored() {
        let sql = "SELECT id, SUM(id * 2 + k) OVER (PARTITION BY u ORDER BY t \
            RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW) AS si FROM v";
        let stream = mixed_stream_with(sql, mixed_batches(), false, every_fourth).await;
        assert_equals_the_batch(sql, stream).await;
    }

    /// Covariances and correlations of two arguments (an integer one cast to a double, an
    /// expression) skip the pairs with a null, over disorder and restores.
    #[tokio::test]
    async fn covariances_and_correlations_of_two_arguments_equal_the_batch() {
        let sql = "SELECT id, covar_samp(x, k) OVER w AS cs, covar_pop(x, k) OVER w AS cp, \
            corr(x, k) OVER w AS c, corr(k, x) OVER w AS ck, corr(x, x * 2 + 1) OVER w AS cl, \
            corr(x, k) OVER (PARTITION BY s ORDER BY t RANGE BETWEEN INTERVAL '20' SECOND \
                PRECEDING AND INTERVAL '1' SECOND PRECEDING) AS cb \
            FROM v WINDOW w AS (PARTITION BY u ORDER BY t \
                RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW)";
        let stream = mixed_stream_with(sql, mixed_batches(), false, every_fourth).await;
        let values: usize = stream
            .iter()
            .flat_map(|(_, rows)| rows.values())
            .map(|row| row.iter().filter(|v| !v.is_null()).count())
            .sum();
        assert!(values > 10_000, "{values} values");
        // DataFusion's sliding covariance retracts rows as its frame moves and leaves rounding
        // noise of about 1e-15 of the products (here up to about 1e6) where a frame's is 0.
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e3);
        let batch = sql_batch(sql, &mixed_batches()).await;
        let streamed: Rows = stream.into_iter().flat_map(|(_, rows)| rows).collect();
        assert_eq!(streamed.len(), batch.len(), "every event once");
        for (id, values) in &batch {
            crate::stream::engine_tests::assert_same_values(id, &streamed[id], values, close);
        }
    }

    /// A NaN is the largest value: the MAX of every frame that holds it, passed over by MIN.
    #[test]
    fn nan_is_the_largest_value_of_a_sliding_frame() {
        let values = [1.0, f64::NAN, 2.0, 3.0, 0.5];
        let width = 2;
        let (mut min, mut max) = (Extremes::default(), Extremes::default());
        let mut seen = Vec::new();
        for (i, &v) in values.iter().enumerate() {
            min.enter(i, Some(v), false);
            max.enter(i, Some(v), true);
            let lo = (i + 1).saturating_sub(width);
            min.leave_before(lo);
            max.leave_before(lo);
            seen.push((min.value().unwrap(), max.value().unwrap()));
        }
        let same = |a: f64, b: f64| a == b || (a.is_nan() && b.is_nan());
        let expected = [
            (1.0, 1.0),
            (1.0, f64::NAN),
            (2.0, f64::NAN),
            (2.0, 3.0),
            (0.5, 3.0),
        ];
        for (got, want) in seen.iter().zip(expected) {
            assert!(same(got.0, want.0) && same(got.1, want.1), "{seen:?}");
        }
    }

    /// The mixed batches with event times cut to whole seconds: many events at the same time,
    /// and many at a frame's very edge.
    fn whole_second_batches() -> Vec<RecordBatch> {
        mixed_batches()
            .into_iter()
            .map(|b| {
                let times = b.column(2).as_primitive::<TimestampMicrosecondType>();
                let whole: TimestampMicrosecondArray = times.unary(|t| t - t.rem_euclid(1_000_000));
                let mut columns = b.columns().to_vec();
                columns[2] = Arc::new(whole);
                RecordBatch::try_new(b.schema(), columns).unwrap()
            })
            .collect()
    }

    /// With whole-second times, events fall on their frames' edges (ten seconds before, two
    /// seconds before) and share times with their key's other events: the frames include their
    /// edges and peers as the SQL over the whole input does. (First and last values are left
    /// out: which of several peers the batch's sort puts first is its own choice.)
    #[tokio::test]
    async fn frames_with_events_on_their_edges_equal_the_batch() {
        let sql = MIXED_SQL.replace(
            "first_value(x) OVER w AS fx, last_value(k) OVER w AS lk, ",
            "",
        );
        assert_ne!(sql, MIXED_SQL);
        let sql = sql.as_str();
        let tied = whole_second_batches();
        for on_arrival in [false, true] {
            let stream = mixed_stream_with(sql, tied.clone(), on_arrival, every_fourth).await;
            if on_arrival {
                // Each batch's rows see the events received so far: compared batch by batch.
                let mut received = Vec::new();
                for ((ids, streamed), batch) in stream.into_iter().zip(&tied) {
                    received.push(batch.clone());
                    let expected = sql_batch(sql, &received).await;
                    assert_rows_equal(&streamed, &expected, ids.into_iter());
                }
            } else {
                assert_equals_the_batch_of(sql, &tied, stream).await;
            }
        }
    }

    /// Finer row counts over the 20 s before an event (to 1 s before it) beside a COUNT
    /// DISTINCT of the same column over the 20 s up to and with it: the counts of `s` are read
    /// from the wider frame, less its entries past the narrower one's end; those of `k`, which
    /// nothing else counts, from the narrower frame's own. Both equal the batch with nulls,
    /// disorder and restores, and over whole seconds, where the entries past the end are the
    /// event and its peers.
    #[tokio::test]
    async fn row_counts_read_from_a_wider_frame_of_the_same_start_equal_the_batch() {
        let sql = "SELECT id, \
            COUNT(DISTINCT s) OVER (PARTITION BY u ORDER BY t RANGE BETWEEN INTERVAL '20' \
                SECOND PRECEDING AND CURRENT ROW) AS ds, \
            COUNT(*) OVER (PARTITION BY u, s ORDER BY t RANGE BETWEEN INTERVAL '20' SECOND \
                PRECEDING AND INTERVAL '1' SECOND PRECEDING) AS us, \
            COUNT(*) OVER (PARTITION BY u, k ORDER BY t RANGE BETWEEN INTERVAL '20' SECOND \
                PRECEDING AND INTERVAL '1' SECOND PRECEDING) AS uk \
            FROM v";
        let (_, _, plan) = planned_over_v(sql, &mixed_input(), true).await;
        assert_eq!(plan.groups.len(), 1, "{:?}", plan.groups);
        let group = &plan.groups[0];
        let kinds: Vec<Kind> = group.args.iter().map(|a| a.1).collect();
        let needs = FrameNeeds::of(&group.specs, &kinds);
        // The finer count by the input's column `column`.
        let wider = |column: usize| {
            let i = group.specs.iter().position(|s| {
                s.agg == Agg::KeyRows
                    && s.arg
                        .is_some_and(|a| group.args[a].0 == ArgSource::Column(column))
            });
            needs.wider[i.unwrap()]
        };
        let (k, s) = (4, 5);
        assert!(wider(s).is_some());
        assert!(wider(k).is_none());
        let stream = mixed_stream_with(sql, mixed_batches(), false, every_fourth).await;
        assert_equals_the_batch(sql, stream).await;
        let tied = whole_second_batches();
        let stream = mixed_stream_with(sql, tied.clone(), false, every_fourth).await;
        assert_equals_the_batch_of(sql, &tied, stream).await;
    }

    /// Events at the same time join their keys' histories in one order, and a restored state
    /// keeps it: with whole-second times (many peers, whose order first and last values see),
    /// a stream restored after every batch writes what a stream never restored writes.
    #[tokio::test]
    async fn restores_keep_the_order_of_events_at_the_same_time() {
        let tied = whole_second_batches();
        for on_arrival in [false, true] {
            let never = mixed_stream_with(MIXED_SQL, tied.clone(), on_arrival, |_, _| None).await;
            let always = mixed_stream_with(MIXED_SQL, tied.clone(), on_arrival, |_, chain| {
                Some(chain.to_vec())
            })
            .await;
            assert_eq!(never.len(), always.len());
            for ((ids, a), (_, b)) in never.iter().zip(&always) {
                assert_eq!(a, b, "rows of the batch with ids {ids:?}");
            }
        }
    }

    #[tokio::test]
    async fn frames_on_arrival_over_nulls_and_disorder_equal_the_sql_over_the_events_received() {
        let all = mixed_batches();
        let mut received = Vec::new();
        for ((ids, streamed), batch) in mixed_stream(true).await.into_iter().zip(all) {
            received.push(batch);
            let expected = mixed_batch(&received).await;
            assert_eq!(streamed.len(), ids.len(), "each event in its own batch");
            assert_rows_equal(&streamed, &expected, ids.into_iter());
        }
    }

    /// Row counts partitioned by the user and one more column, a string or an integer, each
    /// with nulls (a partition of their own), named in either order.
    const FINER_COUNTS_SQL: &str = "SELECT id, COUNT(*) OVER w AS n, \
        COUNT(*) OVER (PARTITION BY u, s ORDER BY t RANGE BETWEEN INTERVAL '20' SECOND \
            PRECEDING AND INTERVAL '1' SECOND PRECEDING) AS us, \
        COUNT(*) OVER (PARTITION BY k, u ORDER BY t RANGE BETWEEN INTERVAL '10' SECOND \
            PRECEDING AND CURRENT ROW) AS uk, \
        COUNT(*) OVER (PARTITION BY s, k ORDER BY t RANGE BETWEEN INTERVAL '5' SECOND \
            PRECEDING AND CURRENT ROW) AS sk \
        FROM v WINDOW w AS (PARTITION BY u ORDER BY t \
            RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW)";

    #[tokio::test]
    async fn row_counts_by_one_more_key_column_read_from_the_coarser_history_equal_the_batch() {
        let stream = mixed_stream_with(FINER_COUNTS_SQL, mixed_batches(), false, every_fourth);
        assert_equals_the_batch(FINER_COUNTS_SQL, stream.await).await;
        // On arrival, each batch's rows see the events received by its end.
        let stream = mixed_stream_with(FINER_COUNTS_SQL, mixed_batches(), true, every_fourth);
        let mut received = Vec::new();
        for ((ids, streamed), batch) in stream.await.into_iter().zip(mixed_batches()) {
            received.push(batch);
            let expected = sql_batch(FINER_COUNTS_SQL, &received).await;
            assert_rows_equal(&streamed, &expected, ids.into_iter());
        }
    }

    /// Windows partitioned by expressions of the row, written in the window (`upper(u)`) or
    /// computed by a CTE (`kk`), are evaluated incrementally, across restores, as the same SQL
    /// over the whole input gives them; a row count by such a key and one more is read from the
    /// coarser key's history, as by columns. `substr(u, 1, 4)` is one key for every user.
    #[tokio::test]
    async fn windows_partitioned_by_expressions_of_the_row_equal_the_batch() {
        let frame = "ORDER BY t RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW";
        let sql = format!(
            "WITH y AS (SELECT *, k % 3 AS kk FROM v) SELECT id, \
             SUM(x) OVER (PARTITION BY upper(u) {frame}) AS su, \
             COUNT(*) OVER (PARTITION BY upper(u), coalesce(s, 'none') ORDER BY t RANGE \
                 BETWEEN INTERVAL '20' SECOND PRECEDING AND INTERVAL '1' SECOND PRECEDING) AS us, \
             AVG(x) OVER (PARTITION BY kk {frame}) AS ak, \
             MAX(k) OVER (PARTITION BY substr(u, 1, 4) {frame}) AS mk \
             FROM y"
        );
        let input = mixed_input();
        let (_, _, plan) = planned_over_v(&sql, &input, true).await;
        assert!(plan.rest().is_empty(), "{:?}", plan.rest());
        let keys: Vec<usize> = plan.groups.iter().map(|g| g.keys.len()).collect();
        assert_eq!(
            keys,
            [1, 1, 1],
            "the pair's count is read from upper(u)'s history"
        );
        assert!(
            plan.groups
                .iter()
                .all(|g| matches!(g.keys[..], [ArgSource::Expr(_)])),
            "{:?}",
            plan.groups
        );
        let stream = mixed_stream_with(&sql, mixed_batches(), false, every_fourth);
        assert_equals_the_batch(&sql, stream.await).await;
        // On arrival, each batch's rows see the events received by its end.
        let stream = mixed_stream_with(&sql, mixed_batches(), true, every_fourth);
        let mut received = Vec::new();
        for ((ids, streamed), batch) in stream.await.into_iter().zip(mixed_batches()) {
            received.push(batch);
            let expected = sql_batch(&sql, &received).await;
            assert_rows_equal(&streamed, &expected, ids.into_iter());
        }
    }

    /// Spark's `approx_count_distinct` over a stream's windows is counted as COUNT(DISTINCT)
    /// is, exactly, by the values' hashes; with a frame's few values the batch's sketch counts
    /// them exactly too, so the two agree.
    #[tokio::test]
    async fn approximate_distinct_counts_are_counted_as_distinct_counts_and_equal_the_batch() {
        let sql = "SELECT id, approx_count_distinct(s) OVER w AS a, \
            approx_count_distinct(k, 0.05) OVER w AS ak, COUNT(DISTINCT s) OVER w AS ds \
            FROM v WINDOW w AS (PARTITION BY u ORDER BY t \
                RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW)";
        let (_, _, plan) = planned_over_v(sql, &mixed_input(), true).await;
        assert!(plan.rest().is_empty(), "{:?}", plan.rest());
        let aggs: Vec<Agg> = plan.groups[0].specs.iter().map(|s| s.agg).collect();
        assert_eq!(aggs, [Agg::CountDistinct; 3]);
        let stream = mixed_stream_with(sql, mixed_batches(), false, every_fourth);
        assert_equals_the_batch(sql, stream.await).await;
    }

    /// Snapshots written while each finer partitioning had histories of its own restore into
    /// a state that reads its counts from the coarser group's, where that group already kept
    /// the finer key's values (as the shipped transaction features' per-user group does), and
    /// the stream goes on as if it had never stopped.
    #[tokio::test]
    async fn snapshots_of_finer_partitionings_restore_into_counts_read_from_the_coarser() {
        let sql = "SELECT id, COUNT(*) OVER w AS n, COUNT(DISTINCT s) OVER w AS ds, \
            COUNT(DISTINCT k) OVER w AS dk, \
            COUNT(*) OVER (PARTITION BY u, s ORDER BY t RANGE BETWEEN INTERVAL '20' SECOND \
                PRECEDING AND INTERVAL '1' SECOND PRECEDING) AS us, \
            COUNT(*) OVER (PARTITION BY k, u ORDER BY t RANGE BETWEEN INTERVAL '10' SECOND \
                PRECEDING AND CURRENT ROW) AS uk \
            FROM v WINDOW w AS (PARTITION BY u ORDER BY t \
                RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW)";
        let mut written = Vec::new();
        stream_planned(sql, mixed_batches(), false, false, |b, chain| {
            if b == 6 {
                written = chain.to_vec();
            }
            None
        })
        .await;
        assert!(written.len() > 1, "a full snapshot and deltas");
        let stream = mixed_stream_with(sql, mixed_batches(), false, |b, chain| {
            if b == 6 {
                Some(written.clone())
            } else {
                every_fourth(b, chain)
            }
        });
        assert_equals_the_batch(sql, stream.await).await;
    }

    /// A full snapshot names each group's key and argument columns: a query partitioned by
    /// another column of the same type, or reading another argument column of the same kind,
    /// is refused as a changed job rather than restoring the other's histories as its own; the
    /// query that wrote it restores it.
    #[tokio::test]
    async fn a_full_snapshot_of_other_window_columns_is_refused() {
        let frame = "ORDER BY t RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW";
        let written_by = format!("SELECT id, SUM(x) OVER (PARTITION BY u {frame}) AS n FROM v");
        let mut full = Vec::new();
        stream_planned(&written_by, mixed_batches(), false, false, |b, chain| {
            if b == 0 {
                full = chain.to_vec();
            }
            None
        })
        .await;
        assert_eq!(full.len(), 1, "the first snapshot is full");
        let state_of = |sql: String| async move {
            let input = mixed_input();
            let (_, _, plan) = planned_over_v(&sql, &input, true).await;
            IncrementalState::new(plan, input, false).unwrap()
        };
        let mut same = state_of(written_by.clone()).await;
        same.restore(0, &full).unwrap();
        for changed in [
            format!("SELECT id, SUM(x) OVER (PARTITION BY s {frame}) AS n FROM v"),
            format!("SELECT id, SUM(x * 2) OVER (PARTITION BY u {frame}) AS n FROM v"),
        ] {
            let mut state = state_of(changed.clone()).await;
            let refused = state.restore(0, &full).unwrap_err().to_string();
            assert!(refused.contains("the job changed"), "{changed}: {refused}");
        }
    }

    /// The shipped transaction features' "used this device, merchant, country or kind of shop
    /// in the last day" counts are read from the user's history: two groups, one per user and
    /// one per card, where each of the four would otherwise keep a history per pair.
    #[tokio::test]
    async fn the_shipped_uses_of_the_last_day_are_read_from_the_users_history() {
        let sql = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../sql/features/transactions.sql"),
        )
        .unwrap();
        // The job's view: the events, and where each was read (the spec's `query.metadata`).
        let events = crate::schemas::source_schema(crate::generator::Source::Transactions);
        let mut fields = events.fields().to_vec();
        fields.extend([
            Arc::new(Field::new("source_topic", DataType::Utf8, false)),
            Arc::new(Field::new("source_partition", DataType::Int32, false)),
            Arc::new(Field::new("source_offset", DataType::Int64, false)),
        ]);
        let plan = plan_over(&sql, Arc::new(Schema::new(fields)))
            .await
            .unwrap();
        assert!(plan.rest().is_empty(), "{:?}", plan.rest());
        assert_eq!(plan.groups.len(), 2, "{:#?}", plan.explain());
        let explain = plan.explain();
        // (The window operator names each function by its expression: the aliases are above.)
        for (name, column) in [
            ("device_uses_24h", "device_id"),
            ("merchant_uses_24h", "merchant_id"),
            ("country_uses_24h", "country"),
            ("category_uses_24h", "merchant_category"),
        ] {
            let read = format!("by 1 key(s) and `{column}`, read from the history");
            assert!(
                explain.iter().any(|l| l.contains(&read)),
                "{name}: {explain:#?}"
            );
        }
    }

    async fn plan_of(sql: &str) -> Option<IncrementalPlan> {
        let input = crate::schemas::source_schema(crate::generator::Source::Transactions);
        plan_over(sql, input).await
    }

    /// The incremental plan of `sql` over the view `transactions` of rows of `input`.
    async fn plan_over(sql: &str, input: SchemaRef) -> Option<IncrementalPlan> {
        planned_over(sql, input).await.ok()
    }

    /// The same, or why there is none.
    async fn planned_over(
        sql: &str,
        input: SchemaRef,
    ) -> std::result::Result<IncrementalPlan, String> {
        let ctx = crate::scoring::session().unwrap();
        let table = MemTable::try_new(Arc::clone(&input), vec![vec![]]).unwrap();
        ctx.register_table("transactions", Arc::new(table)).unwrap();
        let plan = ctx.sql(sql).await.unwrap().into_unoptimized_plan();
        let time = input.index_of("event_time").unwrap();
        IncrementalPlan::try_new(&plan, "transactions", &input, time)
    }

    const COUNT_5M: &str = "COUNT(*) OVER (PARTITION BY user_id ORDER BY event_time \
        RANGE BETWEEN INTERVAL '5' MINUTE PRECEDING AND CURRENT ROW)";

    #[tokio::test]
    async fn only_queries_whose_windows_alone_read_the_view_are_incremental() {
        assert!(
            plan_of(&format!("SELECT event_id, {COUNT_5M} n FROM transactions"))
                .await
                .is_some()
        );
        // The view is empty when the rewritten query runs: a second reader would see nothing.
        // The plan output says why a query's windows all go to the generic path.
        let why = |sql: String| async move {
            let input = crate::schemas::source_schema(crate::generator::Source::Transactions);
            planned_over(&sql, input).await.err().unwrap_or_default()
        };
        let union = format!(
            "SELECT event_id, {COUNT_5M} n FROM transactions \
             UNION ALL SELECT event_id, CAST(NULL AS BIGINT) FROM transactions"
        );
        assert!(why(union).await.contains("reads the stream more than once"));
        let filtered = format!(
            "SELECT * FROM (SELECT event_id, amount, {COUNT_5M} n FROM transactions) WHERE amount > 1"
        );
        assert!(
            plan_of(&filtered).await.is_some(),
            "a filter above the windows is fine"
        );
        // A function whose argument is not fixed by its row (now() is planned once) is left to
        // the generic path; the count beside it is not.
        let planned_now = format!(
            "SELECT event_id, {COUNT_5M} n, SUM(CASE WHEN event_time < now() THEN amount END) \
             OVER (PARTITION BY user_id ORDER BY event_time \
             RANGE BETWEEN INTERVAL '5' MINUTE PRECEDING AND CURRENT ROW) s FROM transactions"
        );
        let plan = plan_of(&planned_now).await.unwrap();
        assert_eq!(plan.rest().len(), 1, "{:?}", plan.rest());
        // A WHERE below them picks their rows: the state applies it first.
        let below = format!(
            "SELECT event_id, {COUNT_5M} n FROM transactions WHERE amount > 1 AND channel <> 'atm'"
        );
        // The plan output's last line says what runs before the state.
        let ends_with = |plan: IncrementalPlan, says: &str| {
            let explain = plan.explain();
            assert!(
                explain.last().is_some_and(|l| l.contains(says)),
                "{explain:?}"
            );
        };
        ends_with(plan_of(&below).await.unwrap(), "amount > ");
        // The view under an alias, or through a CTE (whole, or computing and keeping some
        // columns), is read through them.
        for sql in [
            format!(
                "SELECT t.event_id, {} n FROM transactions t WHERE t.amount > 1",
                COUNT_5M.replace("user_id", "t.user_id")
            ),
            format!("WITH x AS (SELECT * FROM transactions) SELECT event_id, {COUNT_5M} n FROM x"),
            format!(
                "WITH x AS (SELECT event_id, user_id, event_time, amount * 2 AS a FROM \
                 transactions) SELECT event_id, {COUNT_5M} n, SUM(a) OVER (PARTITION BY user_id \
                 ORDER BY event_time RANGE BETWEEN INTERVAL '1' MINUTE PRECEDING AND CURRENT ROW) \
                 s FROM x WHERE a > 2"
            ),
        ] {
            assert!(plan_of(&sql).await.is_some(), "{sql}");
        }
        // A join with a table beside the stream runs as the events arrive; one that makes rows
        // of the table no event matched does not.
        let joined = |join: &str| {
            format!(
                "SELECT event_id, {COUNT_5M} n FROM transactions \
                 {join} (SELECT column1 AS k FROM (VALUES ('u_1'))) v ON user_id = v.k"
            )
        };
        // A comma join's WHERE runs with it, as its condition.
        let comma = format!(
            "SELECT event_id, {COUNT_5M} n FROM transactions, \
             (SELECT column1 AS k FROM (VALUES ('u_1'))) v WHERE user_id = v.k AND amount > 1"
        );
        ends_with(
            plan_of(&comma).await.unwrap(),
            "through WHERE transactions.user_id = v.k AND transactions.amount > Int64(1)",
        );
        for (join, says) in [
            (
                "JOIN",
                "through an inner join with values given in the query",
            ),
            ("LEFT JOIN", "through an outer join keeping every event"),
            ("LEFT SEMI JOIN", "through a semi join"),
            ("LEFT ANTI JOIN", "through an anti join"),
        ] {
            ends_with(plan_of(&joined(join)).await.unwrap(), says);
        }
        for join in ["RIGHT JOIN", "FULL JOIN"] {
            let reason = why(joined(join)).await;
            assert!(reason.contains("makes rows no event matched"), "{reason}");
        }
        // A WHERE reading a subquery runs as the events arrive; unless it is not fixed by the
        // row (`now()` is planned once).
        let subquery = "user_id IN (SELECT column1 FROM (VALUES ('u_1')))";
        let sql = format!("SELECT event_id, {COUNT_5M} n FROM transactions WHERE {subquery}");
        ends_with(
            plan_of(&sql).await.unwrap(),
            "through WHERE transactions.user_id IN (<subquery>)",
        );
        for filter in [
            "event_time < now()".to_string(),
            format!("{subquery} AND event_time < now()"),
        ] {
            let sql = format!("SELECT event_id, {COUNT_5M} n FROM transactions WHERE {filter}");
            let reason = why(sql).await;
            assert!(
                reason.contains("the WHERE below the windows reads a value fixed"),
                "{filter}: {reason}"
            );
        }
    }
}
