//! Streaming aggregation over partial aggregates: when every aggregate of the query's GROUP BY
//! is COUNT, SUM, MIN, MAX or AVG (no DISTINCT, FILTER or ORDER BY) of a type [`fold`] folds,
//! and its groups are fixed (not sessions, which merge), the state is the open groups' partial
//! values (counts, sums, minima, maxima), as Spark keeps it, instead of their input rows. The
//! groups live in a keyed table updated in place: each batch folds its rows into their groups,
//! and the query's Aggregate is replaced with the final values of the groups the output mode
//! writes, so the SQL above it runs unchanged.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StructArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimestampMicrosecondType};
use datafusion::arrow::row::{Row, RowConverter, SortField};
use datafusion::common::Column;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::{MemTable, provider_as_source};
use datafusion::execution::SessionState;
use datafusion::functions::core::expr_fn::get_field;
use datafusion::logical_expr::expr::{AggregateFunction, AggregateFunctionParams};
use datafusion::logical_expr::{
    Aggregate, Expr, ExprSchemable, LogicalPlan, LogicalPlanBuilder, cast,
};

use crate::error::{JobError, Result};
use crate::stream::aggregate::window_key;
use crate::stream::fold::{self, FoldColumn, Op};
use crate::stream::spec::OutputMode;

const TABLE: &str = "__riskstream_partials";

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
    names.len() == agg.schema.fields().len()
        && agg
            .aggr_expr
            .iter()
            .all(|e| part_of(e).is_some_and(|(part, f)| folds(part, f, agg)))
}

/// Whether [`fold`] keeps `f`'s partials for its argument's type (an extreme of text, say, or a
/// decimal sum, is left to the rows' path).
fn folds(part: Part, f: &AggregateFunction, agg: &Aggregate) -> bool {
    let Ok(arg) = f.params.args[0].get_type(agg.input.schema()) else {
        return false;
    };
    match part {
        Part::Count => true,
        Part::Sum => f
            .func
            .return_type(std::slice::from_ref(&arg))
            .is_ok_and(|t| fold::column(Op::Sum, &t).is_some()),
        Part::Min => fold::column(Op::Min, &arg).is_some(),
        Part::Max => fold::column(Op::Max, &arg).is_some(),
        Part::Avg => arg.is_numeric(),
    }
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
    table: Option<Table>,
    /// A snapshot restored before the first batch (rows of the state's schema), folded into the
    /// table once the first batch's query shows the table's types.
    restored: Option<(SchemaRef, Vec<RecordBatch>)>,
}

impl PartialState {
    /// Groups held.
    pub fn rows(&self) -> usize {
        match (&self.table, &self.restored) {
            (Some(t), _) => t.index.len(),
            (None, Some((_, rows))) => rows.iter().map(RecordBatch::num_rows).sum(),
            (None, None) => 0,
        }
    }

    /// Bytes held in memory.
    pub fn bytes(&self) -> usize {
        match (&self.table, &self.restored) {
            (Some(t), _) => t.bytes(),
            (None, Some((_, rows))) => rows.iter().map(RecordBatch::get_array_memory_size).sum(),
            (None, None) => 0,
        }
    }

    /// The state as one Arrow IPC file (empty before the first batch): a row per open group,
    /// its keys (`__g<i>`, the window a struct) then its partial columns (`__p<i>_<part>`).
    pub fn snapshot(&self) -> Result<Vec<u8>> {
        match (&self.table, &self.restored) {
            (Some(t), _) => crate::stream::checkpoint::ipc_file(&t.schema, &[t.all()?]),
            (None, Some((schema, rows))) => crate::stream::checkpoint::ipc_file(schema, rows),
            (None, None) => Ok(Vec::new()),
        }
    }

    /// Restores the state a snapshot holds.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        *self = Self::default();
        if !bytes.is_empty() {
            self.restored = Some(crate::stream::checkpoint::read_ipc_file(bytes)?);
        }
        Ok(())
    }

    /// `plan` (analyzed, its view holding only this batch's rows) with its Aggregate replaced by
    /// what `mode` writes of the groups once this batch's rows are folded in: append, the
    /// windows whose end lies in `(watermarks.0, watermarks.1]` (ms); update, the groups this
    /// batch changed; complete, all. The state moves on to the groups the next watermark leaves
    /// open (all of them in complete mode or without windows).
    pub async fn run(
        &mut self,
        session: &SessionState,
        plan: LogicalPlan,
        mode: OutputMode,
        watermarks: (i64, i64),
    ) -> Result<LogicalPlan> {
        let mut found = None;
        plan.apply(|node| {
            if let LogicalPlan::Aggregate(a) = node {
                found = Some(a.clone());
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        })
        .map_err(internal)?;
        let Some(agg) = found else {
            return Err(JobError::internal(
                "the aggregation has no Aggregate".into(),
            ));
        };
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

        // Each row's keys (the window's as its start and end: primitive columns hash and
        // compare faster than a struct), then one input per partial column.
        let mut exprs = Vec::new();
        for (i, (key, name)) in agg.group_expr.iter().zip(&group_names).enumerate() {
            let key = key.clone().unalias();
            match &split {
                Some(w) if w.index == i => {
                    exprs.push(get_field(key.clone(), "start").alias(format!("{name}_start")));
                    exprs.push(get_field(key, "end").alias(format!("{name}_end")));
                }
                _ => exprs.push(key.alias(name)),
            }
        }
        let keys = exprs.len();
        let mut partial_fields = Vec::new();
        let mut ops = Vec::new();
        for (i, (part, f)) in parts.iter().enumerate() {
            let arg = f.params.args[0].clone();
            let arg_type = arg.get_type(agg.input.schema()).map_err(internal)?;
            let mut partial = |name: &str, input: Expr, op: Op, data_type: DataType| {
                let name = format!("__p{i}_{name}");
                exprs.push(input.alias(&name));
                partial_fields.push(Field::new(name, data_type.clone(), true));
                ops.push((op, data_type));
            };
            match part {
                Part::Count => partial("n", arg, Op::Count, DataType::Int64),
                Part::Sum => {
                    let sum_type = f.func.return_type(&[arg_type]).map_err(internal)?;
                    partial("s", arg, Op::Sum, sum_type);
                }
                Part::Min => partial("m", arg, Op::Min, arg_type),
                Part::Max => partial("m", arg, Op::Max, arg_type),
                Part::Avg => {
                    partial(
                        "s",
                        cast(arg.clone(), DataType::Float64),
                        Op::Sum,
                        DataType::Float64,
                    );
                    partial("n", arg, Op::Count, DataType::Int64);
                }
            }
        }
        let rows_plan = LogicalPlanBuilder::from(Arc::clone(&agg.input))
            .project(exprs)
            .and_then(|b| b.build())
            .map_err(internal)?;
        let key_fields: Vec<Field> = rows_plan.schema().as_arrow().fields()[..keys]
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let rows = collect(session, rows_plan).await?;

        if self.table.is_none() {
            let mut table = Table::new(key_fields, partial_fields, &ops, split)?;
            if let Some((schema, restored)) = self.restored.take() {
                table.restore(&schema, &restored)?;
            }
            self.table = Some(table);
        }
        let Some(table) = self.table.as_mut() else {
            return Err(JobError::internal("no table of partial aggregates".into()));
        };
        for batch in rows.iter().filter(|b| b.num_rows() > 0) {
            table.fold(batch, false)?;
        }
        let emitted = table.emit(
            mode,
            (
                watermarks.0.saturating_mul(1000),
                watermarks.1.saturating_mul(1000),
            ),
        )?;

        // The Aggregate's output: the groups' keys and the aggregates' final values, named and
        // typed as the Aggregate names and types them.
        let table =
            MemTable::try_new(Arc::clone(&table.schema), vec![vec![emitted]]).map_err(internal)?;
        let scan = LogicalPlanBuilder::scan(TABLE, provider_as_source(Arc::new(table)), None)
            .and_then(|b| b.build())
            .map_err(internal)?;
        let column = |name: &str| Expr::Column(Column::from_name(name));
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
        plan.transform_up(|node| {
            Ok(match node {
                LogicalPlan::Aggregate(_) => Transformed::yes(replacement.clone()),
                other => Transformed::no(other),
            })
        })
        .map(|t| t.data)
        .map_err(internal)
    }
}

/// The open groups, each in a slot: a hash index from the group's key (in Arrow's row format)
/// to its slot, and per slot the partial columns, updated in place. A batch touches only its
/// own rows' groups; a table rebuilt each batch (by aggregating its rows and the state's
/// together, as before) hashed every open group again, every batch.
#[derive(Debug)]
struct Table {
    /// The state's schema: the keys (`__g<i>`, the window a struct), then the partial columns.
    schema: SchemaRef,
    window: Option<WindowKey>,
    /// Over the keys as rows give them: the window as two columns, its start and end.
    converter: RowConverter,
    /// How many key columns the converter takes.
    keys: usize,
    index: HashMap<Box<[u8]>, u32, foldhash::fast::RandomState>,
    columns: Vec<Box<dyn FoldColumn>>,
    /// Per slot: its window's end (µs), and whether this batch changed the group.
    ends: Vec<Option<i64>>,
    changed: Vec<bool>,
    /// Slots whose group closed, for the next new groups.
    free: Vec<u32>,
    key_bytes: usize,
}

impl Table {
    fn new(
        key_fields: Vec<Field>,
        partial_fields: Vec<Field>,
        ops: &[(Op, DataType)],
        window: Option<WindowKey>,
    ) -> Result<Self> {
        let converter = RowConverter::new(
            key_fields
                .iter()
                .map(|f| SortField::new(f.data_type().clone()))
                .collect(),
        )
        .map_err(JobError::arrow("indexing groups"))?;
        let columns = ops
            .iter()
            .map(|(op, data_type)| {
                fold::column(*op, data_type).ok_or_else(|| {
                    JobError::internal(format!("no partial {op:?} of a {data_type}"))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let keys = key_fields.len();
        let mut fields = key_fields;
        fields.extend(partial_fields);
        let schema = nullable(&joined_schema(&Schema::new(fields), window.as_ref()));
        Ok(Self {
            schema,
            window,
            converter,
            keys,
            index: HashMap::default(),
            columns,
            ends: Vec::new(),
            changed: Vec::new(),
            free: Vec::new(),
            key_bytes: 0,
        })
    }

    fn bytes(&self) -> usize {
        self.key_bytes
            + self.index.capacity() * (size_of::<Box<[u8]>>() + size_of::<u32>())
            + self.columns.iter().map(|c| c.bytes()).sum::<usize>()
            + self.ends.capacity() * size_of::<Option<i64>>()
            + self.changed.capacity()
    }

    /// Folds a snapshot's groups (rows of `schema`) in, as unchanged.
    fn restore(&mut self, schema: &SchemaRef, rows: &[RecordBatch]) -> Result<()> {
        let same = schema.fields().len() == self.schema.fields().len()
            && schema
                .fields()
                .iter()
                .zip(self.schema.fields())
                .all(|(a, b)| a.name() == b.name() && a.data_type() == b.data_type());
        if !same {
            return Err(JobError::internal(format!(
                "the state snapshot's partial aggregates ({schema}) are not the query's ({})",
                self.schema
            )));
        }
        for batch in rows.iter().filter(|b| b.num_rows() > 0) {
            let columns = split(batch, self.window.as_ref())?;
            self.fold_columns(&columns, true)?;
        }
        self.changed.fill(false);
        Ok(())
    }

    /// Folds a batch of the rows' keys (the window split) and partial inputs.
    fn fold(&mut self, batch: &RecordBatch, partial: bool) -> Result<()> {
        self.fold_columns(batch.columns(), partial)
    }

    fn fold_columns(&mut self, columns: &[ArrayRef], partial: bool) -> Result<()> {
        let keys = self.keys;
        let rows = self
            .converter
            .convert_columns(&columns[..keys])
            .map_err(JobError::arrow("indexing groups"))?;
        let ends = match &self.window {
            Some(w) => Some(
                columns[w.index + 1]
                    .as_primitive_opt::<TimestampMicrosecondType>()
                    .ok_or_else(|| {
                        JobError::internal("a window's end is not a timestamp".into())
                    })?,
            ),
            None => None,
        };
        let mut slots = Vec::with_capacity(rows.num_rows());
        for (i, key) in rows.iter().enumerate() {
            let key = key.as_ref();
            let slot = match self.index.get(key) {
                Some(&slot) => slot,
                None => {
                    let slot = match self.free.pop() {
                        Some(slot) => slot,
                        None => {
                            let slot = self.ends.len();
                            self.ends.push(None);
                            self.changed.push(false);
                            for column in &mut self.columns {
                                column.grow(slot + 1);
                            }
                            u32::try_from(slot).map_err(|_| {
                                JobError::internal("more than 2^32 open groups".into())
                            })?
                        }
                    };
                    self.ends[slot as usize] =
                        ends.and_then(|e| e.is_valid(i).then_some(e.value(i)));
                    self.index.insert(key.into(), slot);
                    self.key_bytes += key.len();
                    slot
                }
            };
            self.changed[slot as usize] = true;
            slots.push(slot);
        }
        for (column, values) in self.columns.iter_mut().zip(&columns[keys..]) {
            column.fold(values, &slots, partial)?;
        }
        Ok(())
    }

    /// The groups `mode` writes this batch (window ends in µs), as rows of the state's schema;
    /// the groups the watermark closed leave the table.
    fn emit(&mut self, mode: OutputMode, (after, until): (i64, i64)) -> Result<RecordBatch> {
        let windowed = self.window.is_some();
        let mut keep = vec![true; self.ends.len()];
        let mut emitted = Vec::new();
        let parser = self.converter.parser();
        for (key, &slot) in &self.index {
            let s = slot as usize;
            let end = self.ends[s];
            let emit = match mode {
                OutputMode::Complete => true,
                OutputMode::Update => self.changed[s],
                OutputMode::Append if windowed => end.is_some_and(|e| e > after && e <= until),
                OutputMode::Append => true,
            };
            if emit {
                emitted.push((parser.parse(key), slot));
            }
            keep[s] = mode == OutputMode::Complete || !windowed || end.is_some_and(|e| e > until);
        }
        let batch = self.rows_of(emitted)?;
        if keep.iter().any(|k| !k) {
            let mut closed = Vec::new();
            let mut key_bytes = 0;
            self.index.retain(|key, slot| {
                let kept = keep[*slot as usize];
                if !kept {
                    closed.push(*slot);
                    key_bytes += key.len();
                }
                kept
            });
            self.key_bytes -= key_bytes;
            for slot in closed {
                for column in &mut self.columns {
                    column.clear(slot);
                }
                self.ends[slot as usize] = None;
                self.free.push(slot);
            }
        }
        self.changed.fill(false);
        Ok(batch)
    }

    /// Every open group, as rows of the state's schema.
    fn all(&self) -> Result<RecordBatch> {
        let parser = self.converter.parser();
        self.rows_of(
            self.index
                .iter()
                .map(|(key, &slot)| (parser.parse(key), slot))
                .collect(),
        )
    }

    fn rows_of(&self, groups: Vec<(Row<'_>, u32)>) -> Result<RecordBatch> {
        let slots: Vec<u32> = groups.iter().map(|(_, s)| *s).collect();
        let mut columns = self
            .converter
            .convert_rows(groups.into_iter().map(|(row, _)| row))
            .map_err(JobError::arrow("writing groups"))?;
        columns.extend(self.columns.iter().map(|c| c.take(&slots)));
        join_window(columns, self.window.as_ref(), &self.schema)
    }
}

/// The window among an aggregation's group keys: its place, the state's name for it, and its
/// struct type.
#[derive(Debug)]
struct WindowKey {
    index: usize,
    name: String,
    data_type: DataType,
}

/// The schema of the keys and partial columns with the window's start and end (at its key's
/// place) one struct column again, under the key's name.
fn joined_schema(schema: &Schema, split: Option<&WindowKey>) -> SchemaRef {
    let Some(w) = split else {
        return Arc::new(schema.clone());
    };
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.drain(w.index..w.index + 2);
    fields.insert(w.index, Field::new(&w.name, w.data_type.clone(), true));
    Arc::new(Schema::new(fields))
}

/// `columns` (the window's start and end at its key's place) as a batch of `schema`, the window
/// one struct column of the key's type (built here rather than cast: a cast may not make a
/// column's fields non-null, and the window's fields are).
fn join_window(
    mut columns: Vec<ArrayRef>,
    split: Option<&WindowKey>,
    schema: &SchemaRef,
) -> Result<RecordBatch> {
    if let Some(w) = split {
        let DataType::Struct(fields) = &w.data_type else {
            return Err(JobError::internal(format!(
                "the window key is a {}, not a struct",
                w.data_type
            )));
        };
        let start = columns.remove(w.index);
        let end = columns.remove(w.index);
        let window = StructArray::try_new(fields.clone(), vec![start, end], None)
            .map_err(JobError::arrow("putting windows back together"))?;
        columns.insert(w.index, Arc::new(window));
    }
    RecordBatch::try_new(Arc::clone(schema), columns)
        .map_err(JobError::arrow("putting windows back together"))
}

/// The inverse of [`join_window`]: a batch's columns with its window as its start and end.
fn split(batch: &RecordBatch, split: Option<&WindowKey>) -> Result<Vec<ArrayRef>> {
    let mut columns = batch.columns().to_vec();
    if let Some(w) = split {
        let window = columns.remove(w.index);
        let window = window
            .as_struct_opt()
            .ok_or_else(|| JobError::internal("the window column is not a struct".into()))?;
        let [start, end] = ["start", "end"].map(|name| window.column_by_name(name).cloned());
        let (Some(start), Some(end)) = (start, end) else {
            return Err(JobError::internal("the window has no start or end".into()));
        };
        columns.insert(w.index, end);
        columns.insert(w.index, start);
    }
    Ok(columns)
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

#[cfg(test)]
#[expect(clippy::unwrap_used)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Float64Array, StringArray, TimestampMicrosecondArray};
    use datafusion::arrow::datatypes::{Fields, TimeUnit};

    fn micros() -> DataType {
        DataType::Timestamp(TimeUnit::Microsecond, None)
    }

    /// A table of count and maximum per user and window.
    fn table() -> Table {
        let window = DataType::Struct(Fields::from(vec![
            Field::new("start", micros(), false),
            Field::new("end", micros(), false),
        ]));
        Table::new(
            vec![
                Field::new("__g0", DataType::Utf8, true),
                Field::new("__g1_start", micros(), true),
                Field::new("__g1_end", micros(), true),
            ],
            vec![
                Field::new("__p0_n", DataType::Int64, true),
                Field::new("__p1_m", DataType::Float64, true),
            ],
            &[(Op::Count, DataType::Int64), (Op::Max, DataType::Float64)],
            Some(WindowKey {
                index: 1,
                name: "__g1".into(),
                data_type: window,
            }),
        )
        .unwrap()
    }

    /// Rows of (user, window start, amount), windows ten long.
    fn rows(rows: &[(&str, i64, f64)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("__g0", DataType::Utf8, true),
            Field::new("__g1_start", micros(), true),
            Field::new("__g1_end", micros(), true),
            Field::new("__p0_n", DataType::Float64, true),
            Field::new("__p1_m", DataType::Float64, true),
        ]));
        let amounts = Float64Array::from_iter_values(rows.iter().map(|r| r.2));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(TimestampMicrosecondArray::from_iter_values(
                    rows.iter().map(|r| r.1),
                )),
                Arc::new(TimestampMicrosecondArray::from_iter_values(
                    rows.iter().map(|r| r.1 + 10),
                )),
                Arc::new(amounts.clone()),
                Arc::new(amounts),
            ],
        )
        .unwrap()
    }

    /// (user, window start, count, maximum), sorted.
    fn groups(batch: &RecordBatch) -> Vec<(String, i64, i64, f64)> {
        let windows = batch.column(1).as_struct();
        let mut out: Vec<_> = (0..batch.num_rows())
            .map(|i| {
                (
                    batch.column(0).as_string::<i32>().value(i).to_string(),
                    windows
                        .column(0)
                        .as_primitive::<TimestampMicrosecondType>()
                        .value(i),
                    batch
                        .column(2)
                        .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                        .value(i),
                    batch
                        .column(3)
                        .as_primitive::<datafusion::arrow::datatypes::Float64Type>()
                        .value(i),
                )
            })
            .collect();
        out.sort_by(|a, b| a.partial_cmp(b).unwrap());
        out
    }

    #[test]
    fn closed_windows_are_written_once_and_their_slots_start_over_for_new_groups() {
        let mut t = table();
        t.fold(
            &rows(&[("a", 0, 5.0), ("a", 0, 7.0), ("b", 0, 1.0), ("a", 10, 2.0)]),
            false,
        )
        .unwrap();
        // The watermark reaches 10: the windows ending there close.
        let out = t.emit(OutputMode::Append, (i64::MIN, 10)).unwrap();
        assert_eq!(
            groups(&out),
            [("a".into(), 0, 2, 7.0), ("b".into(), 0, 1, 1.0)]
        );
        assert_eq!((t.index.len(), t.free.len()), (1, 2));
        // A new group takes a freed slot and holds only its own rows.
        t.fold(&rows(&[("c", 10, 3.0), ("a", 10, 4.0)]), false)
            .unwrap();
        assert_eq!(t.ends.len(), 3, "no slot added");
        let out = t.emit(OutputMode::Append, (10, 20)).unwrap();
        assert_eq!(
            groups(&out),
            [("a".into(), 10, 2, 4.0), ("c".into(), 10, 1, 3.0)]
        );
        assert_eq!(t.index.len(), 0);
    }

    #[test]
    fn a_restored_table_holds_the_same_groups_unchanged() {
        let mut t = table();
        t.fold(
            &rows(&[("a", 0, 5.0), ("b", 10, 1.0), ("b", 10, 9.0)]),
            false,
        )
        .unwrap();
        t.emit(OutputMode::Update, (i64::MIN, 0)).unwrap();
        let snapshot = t.all().unwrap();
        let mut restored = table();
        restored
            .restore(&Arc::clone(&t.schema), std::slice::from_ref(&snapshot))
            .unwrap();
        assert_eq!(groups(&restored.all().unwrap()), groups(&snapshot));
        // Nothing changed since the snapshot: update mode writes nothing.
        let out = restored.emit(OutputMode::Update, (0, 0)).unwrap();
        assert_eq!(out.num_rows(), 0);
        // Another query's state is refused.
        let other = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
        assert!(restored.restore(&other, &[]).is_err());
    }
}
