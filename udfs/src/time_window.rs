//! Spark's event-time windows in SQL: `window(time, duration[, slide[, start]])` (tumbling and
//! sliding) and `session_window(time, gap)`, each giving a struct of `start` and `end`, used in
//! GROUP BY as Spark uses them:
//!
//! ```sql
//! SELECT user_id, window.start, window.end, count(*) AS n
//! FROM transactions GROUP BY user_id, window(event_time, '10 minutes', '5 minutes')
//! ```
//!
//! A sliding window puts a row in several windows, and a session depends on the rows around it,
//! so neither is a plain scalar function: the analyzer rule [`TimeWindowRule`] rewrites a query
//! node that calls them. `window()` becomes an unnest of each row's windows, `session_window()`
//! a window function over the other grouping keys ordered by time; the node then reads the
//! column that holds them ([`WINDOW_COLUMN`], [`SESSION_COLUMN`]). Rows without a time belong
//! to no window, as in Spark.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, ListArray, StructArray, TimestampMicrosecondArray,
};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, DurationMicrosecondType, Field, FieldRef, Fields, IntervalDayTimeType,
    IntervalMonthDayNanoType, IntervalUnit, IntervalYearMonthType, TimeUnit,
    TimestampMicrosecondType,
};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result, ScalarValue, exec_datafusion_err, exec_err, plan_err};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::function::{PartitionEvaluatorArgs, WindowUDFFieldArgs};
use datafusion::logical_expr::{Aggregate, Window};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ExprFunctionExt, ExprSchemable, LogicalPlan, LogicalPlanBuilder,
    PartitionEvaluator, Projection, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, Volatility, WindowUDF, WindowUDFImpl, col,
};
use datafusion::optimizer::AnalyzerRule;

use crate::interval::{DAY_US, interval_us};

/// Spark's tumbling and sliding window function.
pub const WINDOW: &str = "window";
/// Spark's session window function.
pub const SESSION_WINDOW: &str = "session_window";
/// The column a rewritten query node reads a row's `window()` from.
pub const WINDOW_COLUMN: &str = "__riskstream_window";
/// The column a rewritten query node reads a row's `session_window()` from.
pub const SESSION_COLUMN: &str = "__riskstream_session";
/// Every window a row falls in, as a list (unnested by the rewrite).
const WINDOWS_OF: &str = "__riskstream_windows_of";
/// The session of each row of a key, as a window function.
const SESSIONS: &str = "__riskstream_sessions";

/// The windows of `window(time, duration, slide, start)`, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimeWindow {
    /// How long each window lasts.
    pub duration_us: i64,
    /// How far apart windows start (the duration for tumbling windows).
    pub slide_us: i64,
    /// Where windows start, relative to the epoch, within one slide.
    pub start_us: i64,
}

impl TimeWindow {
    /// The windows of a call's arguments after the time column, checked as Spark checks them.
    pub fn from_args(args: &[Option<&ScalarValue>]) -> Result<Self> {
        let what = ["duration", "slide duration", "start time"];
        if args.is_empty() || args.len() > 3 {
            return plan_err!(
                "window() takes a time column, a duration, and optionally a slide duration and a \
                 start time, such as window(event_time, '10 minutes', '5 minutes')"
            );
        }
        let mut values = [0i64; 3];
        for (i, arg) in args.iter().enumerate() {
            let Some(us) = arg.and_then(interval_us) else {
                return plan_err!(
                    "window(): the {} must be a constant interval without months, such as \
                     '10 minutes', not {}",
                    what[i],
                    arg.map_or("an expression".to_string(), |v| format!("`{v}`"))
                );
            };
            values[i] = us;
        }
        let [duration_us, slide, start_us] = values;
        let slide_us = if args.len() > 1 { slide } else { duration_us };
        if duration_us <= 0 {
            return plan_err!("window(): the duration must be greater than 0");
        }
        if slide_us <= 0 {
            return plan_err!("window(): the slide duration must be greater than 0");
        }
        if slide_us > duration_us {
            return plan_err!(
                "window(): the slide duration must be less than or equal to the duration"
            );
        }
        if start_us.abs() >= slide_us {
            return plan_err!(
                "window(): the start time must be less than the slide duration in absolute value"
            );
        }
        Ok(Self {
            duration_us,
            slide_us,
            start_us,
        })
    }

    /// The windows of a planned call's arguments (the time column first, then constants).
    pub fn from_call(args: &[Expr]) -> Result<Self> {
        let constants: Vec<Option<&ScalarValue>> = args
            .get(1..)
            .unwrap_or_default()
            .iter()
            .map(|a| match a {
                Expr::Literal(v, _) => Some(v),
                _ => None,
            })
            .collect();
        Self::from_args(&constants)
    }

    /// One window per row: the slide is the duration.
    pub fn is_tumbling(&self) -> bool {
        self.slide_us == self.duration_us
    }

    /// The slice of time all of whose instants fall in the same windows: the greatest common
    /// divisor of the duration and the slide (see [`panes_of`]).
    pub fn pane_us(&self) -> i64 {
        let (mut a, mut b) = (self.duration_us, self.slide_us);
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    }

    /// The panes as tumbling windows of their own, on the windows' grid.
    pub fn panes(&self) -> Self {
        let pane = self.pane_us();
        Self {
            duration_us: pane,
            slide_us: pane,
            start_us: self.start_us.rem_euclid(pane),
        }
    }

    /// The start of the latest window holding `ts`.
    fn last_start(&self, ts: i64) -> i64 {
        ts - (ts - self.start_us).rem_euclid(self.slide_us)
    }

    /// The end of the latest window holding `ts`: once the watermark reaches it, no window of
    /// the row takes more rows.
    pub fn last_end(&self, ts: i64) -> i64 {
        self.last_start(ts) + self.duration_us
    }

    /// The windows `[start, end)` holding `ts`, latest first.
    pub fn windows_of(&self, ts: i64) -> impl Iterator<Item = (i64, i64)> + use<> {
        let last = self.last_start(ts);
        let Self {
            duration_us,
            slide_us,
            ..
        } = *self;
        let n = (duration_us + slide_us - 1) / slide_us;
        (0..n)
            .map(move |i| last - i * slide_us)
            .filter(move |start| ts < start + duration_us)
            .map(move |start| (start, start + duration_us))
    }
}

/// The session windows of one key's rows, as Spark merges them: each row opens
/// `[time, time + gap)`, and a row starting at or before the end of the session so far joins it
/// and may extend it. `events` are the rows' `(start, end)` in order of start; the result gives
/// each row its session.
pub fn merge_sessions(events: &[(i64, i64)]) -> Vec<(i64, i64)> {
    let mut out = vec![(0, 0); events.len()];
    let mut first = 0;
    let mut current: Option<(i64, i64)> = None;
    for (i, &(start, end)) in events.iter().enumerate() {
        match current {
            Some((s, e)) if start <= e => current = Some((s, e.max(end))),
            _ => {
                if let Some(session) = current {
                    out[first..i].fill(session);
                }
                first = i;
                current = Some((start, end));
            }
        }
    }
    if let Some(session) = current {
        out[first..].fill(session);
    }
    out
}

/// The type of a window's bounds for a time column of type `time`.
fn bound_type(function: &str, time: &DataType) -> Result<DataType> {
    match time {
        DataType::Timestamp(_, tz) => Ok(DataType::Timestamp(TimeUnit::Microsecond, tz.clone())),
        other => plan_err!("{function}(): the time column must be a timestamp, not {other}"),
    }
}

/// `struct<start, end>` for a time column of type `time`.
fn window_fields(function: &str, time: &DataType) -> Result<Fields> {
    let bound = bound_type(function, time)?;
    Ok(Fields::from(vec![
        Field::new("start", bound.clone(), false),
        Field::new("end", bound, false),
    ]))
}

/// The time column as microseconds.
fn micros(function: &str, time: &ArrayRef) -> Result<TimestampMicrosecondArray> {
    let bound = bound_type(function, time.data_type())?;
    Ok(cast(time, &bound)?
        .as_primitive::<TimestampMicrosecondType>()
        .clone())
}

/// Windows as a struct array of `fields`, null where `nulls` says so.
fn struct_of(
    fields: Fields,
    bound: &DataType,
    starts: Vec<i64>,
    ends: Vec<i64>,
    nulls: Option<NullBuffer>,
) -> Result<StructArray> {
    let tz = match bound {
        DataType::Timestamp(_, tz) => tz.clone(),
        _ => None,
    };
    let start: ArrayRef =
        Arc::new(TimestampMicrosecondArray::from(starts).with_timezone_opt(tz.clone()));
    let end: ArrayRef = Arc::new(TimestampMicrosecondArray::from(ends).with_timezone_opt(tz));
    Ok(StructArray::try_new(fields, vec![start, end], nulls)?)
}

fn constants(args: &[ColumnarValue]) -> Vec<Option<ScalarValue>> {
    args.iter()
        .map(|a| match a {
            ColumnarValue::Scalar(v) => Some(v.clone()),
            ColumnarValue::Array(_) => None,
        })
        .collect()
}

/// `window(time, duration[, slide[, start]])`: the window holding each row. A sliding window
/// only makes sense where the rewrite gives each row its several windows (GROUP BY, SELECT).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct WindowUdf {
    signature: Signature,
}

impl Default for WindowUdf {
    fn default() -> Self {
        Self {
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for WindowUdf {
    fn name(&self) -> &str {
        WINDOW
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types.first() {
            Some(time) => Ok(DataType::Struct(window_fields(WINDOW, time)?)),
            None => plan_err!("window() needs a time column"),
        }
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        TimeWindow::from_args(args.scalar_arguments.get(1..).unwrap_or_default())?;
        let types: Vec<DataType> = args
            .arg_fields
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        Ok(Arc::new(Field::new(
            WINDOW,
            self.return_type(&types)?,
            true,
        )))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let constants = constants(&args.args);
        let spec = TimeWindow::from_args(
            &constants[1..]
                .iter()
                .map(Option::as_ref)
                .collect::<Vec<_>>(),
        )?;
        if !spec.is_tumbling() {
            return exec_err!(
                "window() with a slide shorter than its duration puts a row in several windows: \
                 use it in GROUP BY or a SELECT list"
            );
        }
        let time = args.args[0].to_array(args.number_rows)?;
        let times = micros(WINDOW, &time)?;
        let starts: Vec<i64> = times.values().iter().map(|&t| spec.last_start(t)).collect();
        let ends = starts.iter().map(|s| s + spec.duration_us).collect();
        let bound = bound_type(WINDOW, time.data_type())?;
        let fields = window_fields(WINDOW, time.data_type())?;
        let out = struct_of(fields, &bound, starts, ends, times.nulls().cloned())?;
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// Every window holding each row, as a list; empty for a row without a time.
#[derive(Debug, PartialEq, Eq, Hash)]
struct WindowsOfUdf {
    signature: Signature,
}

impl WindowsOfUdf {
    fn new() -> Self {
        Self {
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for WindowsOfUdf {
    fn name(&self) -> &str {
        WINDOWS_OF
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        let Some(time) = arg_types.first() else {
            return plan_err!("window() needs a time column");
        };
        let item = Field::new(
            "item",
            DataType::Struct(window_fields(WINDOW, time)?),
            false,
        );
        Ok(DataType::List(Arc::new(item)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let constants = constants(&args.args);
        let spec = TimeWindow::from_args(
            &constants[1..]
                .iter()
                .map(Option::as_ref)
                .collect::<Vec<_>>(),
        )?;
        let time = args.args[0].to_array(args.number_rows)?;
        let times = micros(WINDOW, &time)?;
        let mut offsets = Vec::with_capacity(times.len() + 1);
        offsets.push(0i32);
        let mut starts = Vec::new();
        let mut ends = Vec::new();
        for t in times.iter() {
            for (start, end) in t.into_iter().flat_map(|t| spec.windows_of(t)) {
                starts.push(start);
                ends.push(end);
            }
            let Ok(n) = i32::try_from(starts.len()) else {
                return exec_err!("window(): too many windows in one batch");
            };
            offsets.push(n);
        }
        let fields = window_fields(WINDOW, time.data_type())?;
        let bound = bound_type(WINDOW, time.data_type())?;
        let items = struct_of(fields.clone(), &bound, starts, ends, None)?;
        let item = Arc::new(Field::new("item", DataType::Struct(fields), false));
        let list = ListArray::try_new(
            item,
            OffsetBuffer::new(offsets.into()),
            Arc::new(items),
            None,
        )?;
        Ok(ColumnarValue::Array(Arc::new(list)))
    }
}

/// The gap of `session_window(time, gap)` when it is a constant, checked.
fn session_gap(gap: Option<&ScalarValue>) -> Result<i64> {
    match gap.and_then(interval_us) {
        Some(us) if us > 0 => Ok(us),
        _ => plan_err!(
            "session_window(): the gap must be a constant interval greater than 0 without \
             months, such as '5 minutes', or an expression giving one per row, not {}",
            gap.map_or("an expression".to_string(), |v| format!("`{v}`"))
        ),
    }
}

/// Checks the type of a `session_window()` gap that is not a constant: an interval, a duration,
/// or text such as '5 minutes' (as Spark casts text to an interval).
fn check_gap_type(gap: &DataType) -> Result<()> {
    match gap {
        DataType::Interval(_)
        | DataType::Duration(_)
        | DataType::Utf8
        | DataType::LargeUtf8
        | DataType::Utf8View
        | DataType::Null => Ok(()),
        other => plan_err!(
            "session_window(): the gap must be an interval, such as '5 minutes', or an \
             expression giving one per row, not a {other}"
        ),
    }
}

/// Each row's `session_window()` gap in microseconds, for a gap given per row as Spark takes
/// one: `None` where it is null or not greater than 0, and such a row belongs to no session
/// (Spark drops it before grouping). A gap with months (no fixed length) or text that is not an
/// interval is an error, as Spark's ANSI cast makes the text.
pub fn session_gaps_us(gaps: &ArrayRef) -> Result<Vec<Option<i64>>> {
    let positive = |us: i64| (us > 0).then_some(us);
    let months = |v: &dyn std::fmt::Debug| {
        exec_datafusion_err!(
            "session_window(): a gap of {v:?} has months, which have no fixed length; give it \
             in days, hours, minutes or seconds"
        )
    };
    match gaps.data_type() {
        DataType::Null => Ok(vec![None; gaps.len()]),
        DataType::Interval(IntervalUnit::MonthDayNano) => gaps
            .as_primitive::<IntervalMonthDayNanoType>()
            .iter()
            .map(|v| match v {
                Some(v) if v.months != 0 => Err(months(&v)),
                Some(v) => Ok(positive(i64::from(v.days) * DAY_US + v.nanoseconds / 1000)),
                None => Ok(None),
            })
            .collect(),
        DataType::Interval(IntervalUnit::DayTime) => Ok(gaps
            .as_primitive::<IntervalDayTimeType>()
            .iter()
            .map(|v| {
                v.and_then(|v| {
                    positive(i64::from(v.days) * DAY_US + i64::from(v.milliseconds) * 1000)
                })
            })
            .collect()),
        DataType::Interval(IntervalUnit::YearMonth) => {
            match gaps
                .as_primitive::<IntervalYearMonthType>()
                .iter()
                .flatten()
                .next()
            {
                Some(v) => Err(months(&v)),
                None => Ok(vec![None; gaps.len()]),
            }
        }
        DataType::Duration(_) => {
            let us = cast(gaps, &DataType::Duration(TimeUnit::Microsecond))?;
            Ok(us
                .as_primitive::<DurationMicrosecondType>()
                .iter()
                .map(|v| v.and_then(positive))
                .collect())
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let text = cast(gaps, &DataType::Utf8)?;
            // Gaps given as text are mostly a few values over and over: each parsed once in a row.
            let mut last: Option<(&str, i64)> = None;
            text.as_string::<i32>()
                .iter()
                .map(|t| {
                    let Some(t) = t else { return Ok(None) };
                    let us = match last {
                        Some((seen, us)) if seen == t => us,
                        _ => match crate::interval::interval_text_us(t) {
                            Some(us) => us,
                            None => {
                                return exec_err!(
                                    "session_window(): the gap `{t}` is not an interval of fixed \
                                     length, such as '5 minutes'"
                                );
                            }
                        },
                    };
                    last = Some((t, us));
                    Ok(positive(us))
                })
                .collect()
        }
        other => exec_err!("session_window(): the gap must be an interval, not a {other}"),
    }
}

/// `session_window(time, gap)`: only meaningful in GROUP BY, where the rewrite replaces it.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SessionWindowUdf {
    signature: Signature,
}

impl Default for SessionWindowUdf {
    fn default() -> Self {
        Self {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for SessionWindowUdf {
    fn name(&self) -> &str {
        SESSION_WINDOW
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Struct(window_fields(
            SESSION_WINDOW,
            &arg_types[0],
        )?))
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        match (
            args.scalar_arguments.get(1).copied().flatten(),
            args.arg_fields.get(1),
        ) {
            (Some(gap), _) => {
                session_gap(Some(gap))?;
            }
            (None, Some(gap)) => check_gap_type(gap.data_type())?,
            (None, None) => return plan_err!("session_window() takes a time column and a gap"),
        }
        let types: Vec<DataType> = args
            .arg_fields
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        Ok(Arc::new(Field::new(
            SESSION_WINDOW,
            self.return_type(&types)?,
            true,
        )))
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        exec_err!("session_window() groups rows into sessions: use it in GROUP BY")
    }
}

/// The session of each row of one key (a window partition ordered by time).
#[derive(Debug, PartialEq, Eq, Hash)]
struct SessionsUdwf {
    signature: Signature,
}

impl SessionsUdwf {
    fn new() -> Self {
        Self {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl WindowUDFImpl for SessionsUdwf {
    fn name(&self) -> &str {
        SESSIONS
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn partition_evaluator(
        &self,
        _args: PartitionEvaluatorArgs,
    ) -> Result<Box<dyn PartitionEvaluator>> {
        Ok(Box::new(SessionsEvaluator))
    }

    fn field(&self, field_args: WindowUDFFieldArgs) -> Result<FieldRef> {
        let Some(time) = field_args.get_input_field(0) else {
            return plan_err!("session_window() needs a time column");
        };
        let fields = window_fields(SESSION_WINDOW, time.data_type())?;
        Ok(Arc::new(Field::new(
            field_args.name(),
            DataType::Struct(fields),
            true,
        )))
    }
}

#[derive(Debug)]
struct SessionsEvaluator;

impl PartitionEvaluator for SessionsEvaluator {
    /// The whole partition at once, in order of time (nulls last). Rows without a time or a
    /// gap greater than 0 have no session.
    fn evaluate_all(&mut self, values: &[ArrayRef], num_rows: usize) -> Result<ArrayRef> {
        let times = micros(SESSION_WINDOW, &values[0])?;
        let gaps = session_gaps_us(&values[1])?;
        let opens: Vec<Option<(i64, i64)>> = times
            .iter()
            .zip(gaps)
            .map(|(t, gap)| Some((t?, t?.saturating_add(gap?))))
            .collect();
        let events: Vec<(i64, i64)> = opens.iter().flatten().copied().collect();
        if events.windows(2).any(|w| w[1].0 < w[0].0) {
            return exec_err!("session_window(): rows reached it out of time order");
        }
        let sessions = merge_sessions(&events);
        let (mut starts, mut ends) = (Vec::with_capacity(num_rows), Vec::with_capacity(num_rows));
        let mut next = sessions.iter();
        for open in &opens {
            let (start, end) = match open {
                Some(_) => next.next().copied().unwrap_or_default(),
                None => (0, 0),
            };
            starts.push(start);
            ends.push(end);
        }
        let valid = NullBuffer::from_iter(opens.iter().map(Option::is_some));
        let fields = window_fields(SESSION_WINDOW, values[0].data_type())?;
        let bound = bound_type(SESSION_WINDOW, values[0].data_type())?;
        Ok(Arc::new(struct_of(
            fields,
            &bound,
            starts,
            ends,
            Some(valid),
        )?))
    }
}

/// The window functions' rewrite (see the module's documentation). Runs after type coercion,
/// on every plan a session analyzes, so batch SQL and streaming jobs group alike.
#[derive(Debug, Default)]
pub struct TimeWindowRule;

impl AnalyzerRule for TimeWindowRule {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        plan.transform_up_with_subqueries(rewrite).map(|t| t.data)
    }

    fn name(&self) -> &str {
        "riskstream_time_windows"
    }
}

/// The distinct calls of `window()` and `session_window()` in `exprs`.
fn window_calls<'a>(exprs: impl IntoIterator<Item = &'a Expr>) -> Result<Vec<Expr>> {
    let mut calls: Vec<Expr> = Vec::new();
    for expr in exprs {
        expr.apply(|e| {
            if let Expr::ScalarFunction(f) = e
                && matches!(f.func.name(), WINDOW | SESSION_WINDOW)
                && !calls.contains(e)
            {
                calls.push(e.clone());
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        })?;
    }
    Ok(calls)
}

fn rewrite(node: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
    let exprs: Vec<&Expr> = match &node {
        LogicalPlan::Aggregate(a) => a.group_expr.iter().chain(&a.aggr_expr).collect(),
        LogicalPlan::Projection(p) => p.expr.iter().collect(),
        // Elsewhere (a filter, a sort) a window is evaluated row by row, if it can be.
        _ => return Ok(Transformed::no(node)),
    };
    let calls = window_calls(exprs)?;
    let call = match calls.as_slice() {
        [] => return Ok(Transformed::no(node)),
        [call] => call.clone(),
        _ => {
            return plan_err!(
                "a query step may use one window() or session_window(), not {}: each would \
                 give a row other windows",
                calls.len()
            );
        }
    };
    let Expr::ScalarFunction(function) = &call else {
        return Ok(Transformed::no(node));
    };
    let session = function.func.name() == SESSION_WINDOW;
    match node {
        LogicalPlan::Aggregate(agg) => {
            let input = Arc::unwrap_or_clone(Arc::clone(&agg.input));
            let (input, column) = if session {
                let keys: Vec<Expr> = agg
                    .group_expr
                    .iter()
                    .filter(|e| !window_calls([*e]).is_ok_and(|c| c.contains(&call)))
                    .cloned()
                    .collect();
                (sessions_of(input, function, keys)?, SESSION_COLUMN)
            } else {
                (windows_of(input, function)?, WINDOW_COLUMN)
            };
            let group = replace_all(agg.group_expr.clone(), &call, column)?;
            let aggr = replace_all(agg.aggr_expr.clone(), &call, column)?;
            Ok(Transformed::yes(LogicalPlan::Aggregate(
                Aggregate::try_new(Arc::new(input), group, aggr)?,
            )))
        }
        LogicalPlan::Projection(p) => {
            if session {
                return plan_err!("session_window() groups rows into sessions: use it in GROUP BY");
            }
            let input = windows_of(Arc::unwrap_or_clone(Arc::clone(&p.input)), function)?;
            let exprs = replace_all(p.expr.clone(), &call, WINDOW_COLUMN)?;
            Ok(Transformed::yes(LogicalPlan::Projection(
                Projection::try_new(exprs, Arc::new(input))?,
            )))
        }
        other => Ok(Transformed::no(other)),
    }
}

/// `exprs` reading `column` where they called `call`, keeping their output names.
fn replace_all(exprs: Vec<Expr>, call: &Expr, column: &str) -> Result<Vec<Expr>> {
    exprs
        .into_iter()
        .map(|expr| {
            let name = expr.schema_name().to_string();
            let out = expr.transform(|e| {
                Ok(if &e == call {
                    Transformed::yes(col(column))
                } else {
                    Transformed::no(e)
                })
            })?;
            if out.transformed {
                out.data.alias_if_changed(name)
            } else {
                Ok(out.data)
            }
        })
        .collect()
}

/// `input` with a row per window of each row, the window in [`WINDOW_COLUMN`].
fn windows_of(input: LogicalPlan, call: &ScalarFunction) -> Result<LogicalPlan> {
    let list = ScalarUDF::new_from_impl(WindowsOfUdf::new()).call(call.args.clone());
    let mut exprs: Vec<Expr> = input
        .schema()
        .columns()
        .into_iter()
        .map(Expr::Column)
        .collect();
    exprs.push(list.alias(WINDOW_COLUMN));
    LogicalPlanBuilder::from(input)
        .project(exprs)?
        .unnest_column(WINDOW_COLUMN)?
        .build()
}

/// The rows of an Aggregate's input as [`windows_of`] left them (one per window of each row),
/// rewritten to one per row, in [`WINDOW_COLUMN`] the row's pane: the slice of time
/// `[p, p + g)`, `g` the greatest common divisor of the window's duration and slide, on the
/// windows' grid. Every window's bounds lie on that grid, so all the times of a pane fall in
/// the same windows, those holding `p` ([`TimeWindow::windows_of`]): what an aggregation
/// computes per pane can be added up per window afterwards, hashing each row once rather
/// than once per window. `None` when `input` is not that rewrite or the window tumbles (a
/// pane would be the window). Rows without a time are dropped, as the windows' unnest drops
/// them.
pub fn panes_of(input: &LogicalPlan) -> Result<Option<(LogicalPlan, TimeWindow)>> {
    let LogicalPlan::Unnest(unnest) = input else {
        return Ok(None);
    };
    let LogicalPlan::Projection(projection) = unnest.input.as_ref() else {
        return Ok(None);
    };
    let Some((Expr::Alias(alias), columns)) = projection.expr.split_last() else {
        return Ok(None);
    };
    let Expr::ScalarFunction(call) = alias.expr.as_ref() else {
        return Ok(None);
    };
    if alias.name != WINDOW_COLUMN || call.func.name() != WINDOWS_OF {
        return Ok(None);
    }
    let spec = TimeWindow::from_call(&call.args)?;
    if spec.is_tumbling() {
        return Ok(None);
    }
    let panes = spec.panes();
    let bound = |us: i64| Expr::Literal(ScalarValue::DurationMicrosecond(Some(us)), None);
    let Some(time) = call.args.first().cloned() else {
        return Ok(None);
    };
    let pane_call = ScalarUDF::new_from_impl(WindowUdf::default()).call(vec![
        time.clone(),
        bound(panes.duration_us),
        bound(panes.slide_us),
        bound(panes.start_us),
    ]);
    let mut exprs = columns.to_vec();
    exprs.push(pane_call.alias(WINDOW_COLUMN));
    let plan = LogicalPlanBuilder::from(Arc::unwrap_or_clone(Arc::clone(&projection.input)))
        .filter(time.is_not_null())?
        .project(exprs)?
        .build()?;
    Ok(Some((plan, spec)))
}

/// `input` with each row's session among the rows of the same `keys`, in [`SESSION_COLUMN`];
/// rows without a time dropped.
fn sessions_of(input: LogicalPlan, call: &ScalarFunction, keys: Vec<Expr>) -> Result<LogicalPlan> {
    let [time, gap] = call.args.as_slice() else {
        return plan_err!("session_window() takes a time column and a gap, such as '5 minutes'");
    };
    // A constant gap is checked here, once; one given per row, row by row as the sessions are
    // made (`session_gaps_us`).
    let gap = match gap {
        Expr::Literal(v, _) => Expr::Literal(
            ScalarValue::DurationMicrosecond(Some(session_gap(Some(v))?)),
            None,
        ),
        other => {
            check_gap_type(&other.get_type(input.schema())?)?;
            other.clone()
        }
    };
    let sessions = WindowUDF::new_from_impl(SessionsUdwf::new())
        .call(vec![time.clone(), gap])
        .partition_by(keys)
        .order_by(vec![time.clone().sort(true, false)])
        .build()?
        .alias(SESSION_COLUMN);
    let plan = LogicalPlan::Window(Window::try_new(vec![sessions], Arc::new(input))?);
    LogicalPlanBuilder::from(plan)
        .filter(col(SESSION_COLUMN).is_not_null())?
        .build()
}

#[cfg(test)]
#[expect(clippy::unwrap_used)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    /// `sql` over a table `t(user_id, ts)` of events at the given minutes past 10:00 (`None`
    /// for a missing time), printed sorted.
    async fn query(sql: &str, events: &[(&str, Option<i64>)]) -> Vec<String> {
        let mut ctx = SessionContext::new();
        crate::register_all(&mut ctx).unwrap();
        let values: Vec<String> = events
            .iter()
            .map(|(user, minute)| match minute {
                Some(m) => {
                    format!("('{user}', TIMESTAMP '2026-01-01 10:00:00' + INTERVAL '{m}' MINUTE)")
                }
                None => format!("('{user}', CAST(NULL AS TIMESTAMP))"),
            })
            .collect();
        let sql = format!(
            "WITH t(user_id, ts) AS (VALUES {}) {sql}",
            values.join(", ")
        );
        let batches = ctx
            .sql(&crate::spark_sql(&sql))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with("| "))
            .skip(1)
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        lines.sort();
        lines
    }

    #[tokio::test]
    async fn tumbling_windows_group_rows_and_rows_without_a_time_are_left_out() {
        let got = query(
            "SELECT user_id, window.start, window.end, count(*) AS n FROM t \
             GROUP BY user_id, window(ts, '10 minutes')",
            &[
                ("a", Some(1)),
                ("a", Some(9)),
                ("a", Some(10)),
                ("b", Some(3)),
                ("a", None),
            ],
        )
        .await;
        assert_eq!(
            got,
            [
                "| a | 2026-01-01T10:00:00 | 2026-01-01T10:10:00 | 2 |",
                "| a | 2026-01-01T10:10:00 | 2026-01-01T10:20:00 | 1 |",
                "| b | 2026-01-01T10:00:00 | 2026-01-01T10:10:00 | 1 |",
            ]
        );
    }

    #[tokio::test]
    async fn a_sliding_window_counts_a_row_in_each_window_that_holds_it() {
        let got = query(
            "SELECT window.start, window.end, count(*) AS n FROM t \
             GROUP BY window(ts, '10 minutes', '5 minutes')",
            &[("a", Some(1)), ("a", Some(6)), ("b", Some(12))],
        )
        .await;
        assert_eq!(
            got,
            [
                "| 2026-01-01T09:55:00 | 2026-01-01T10:05:00 | 1 |",
                "| 2026-01-01T10:00:00 | 2026-01-01T10:10:00 | 2 |",
                "| 2026-01-01T10:05:00 | 2026-01-01T10:15:00 | 2 |",
                "| 2026-01-01T10:10:00 | 2026-01-01T10:20:00 | 1 |",
            ]
        );
        // In a SELECT list too: one row per window.
        let got = query(
            "SELECT user_id, window(ts, '10 minutes', '5 minutes') AS w FROM t WHERE user_id = 'b'",
            &[("a", Some(1)), ("b", Some(12))],
        )
        .await;
        assert_eq!(got.len(), 2, "{got:?}");
    }

    #[tokio::test]
    async fn sessions_are_per_key_and_close_after_the_gap() {
        let got = query(
            "SELECT user_id, session_window.start, session_window.end, count(*) AS n FROM t \
             GROUP BY user_id, session_window(ts, '5 minutes')",
            &[
                ("a", Some(0)),
                ("a", Some(4)),
                ("a", Some(9)),
                ("a", Some(15)),
                ("b", Some(2)),
                ("b", None),
            ],
        )
        .await;
        assert_eq!(
            got,
            [
                "| a | 2026-01-01T10:00:00 | 2026-01-01T10:14:00 | 3 |",
                "| a | 2026-01-01T10:15:00 | 2026-01-01T10:20:00 | 1 |",
                "| b | 2026-01-01T10:02:00 | 2026-01-01T10:07:00 | 1 |",
            ]
        );
    }

    #[tokio::test]
    async fn misuse_fails_at_planning_with_the_reason() {
        let mut ctx = SessionContext::new();
        crate::register_all(&mut ctx).unwrap();
        for (sql, reason) in [
            (
                "SELECT window(now(), '10 minutes', '20 minutes')",
                "slide duration must be less than or equal",
            ),
            ("SELECT window(now(), '1 month')", "without months"),
            ("SELECT window(1, '1 minute')", "must be a timestamp"),
            (
                "SELECT session_window(now(), '5 minutes')",
                "use it in GROUP BY",
            ),
        ] {
            let err = match ctx.sql(sql).await {
                Ok(df) => df.collect().await.unwrap_err(),
                Err(e) => e,
            };
            assert!(err.to_string().contains(reason), "{sql}: {err}");
        }
    }

    const MIN: i64 = 60_000_000;

    #[test]
    fn a_row_falls_in_every_sliding_window_that_holds_it() {
        let w = TimeWindow {
            duration_us: 10 * MIN,
            slide_us: 5 * MIN,
            start_us: 0,
        };
        let got: Vec<_> = w.windows_of(12 * MIN).collect();
        assert_eq!(got, vec![(10 * MIN, 20 * MIN), (5 * MIN, 15 * MIN)]);
        assert_eq!(w.last_end(12 * MIN), 20 * MIN);
        // Before the epoch too: windows are aligned on the start time, not rounded toward 0.
        let got: Vec<_> = w.windows_of(-MIN).collect();
        assert_eq!(got, vec![(-5 * MIN, 5 * MIN), (-10 * MIN, 0)]);
        let shifted = TimeWindow {
            duration_us: 10 * MIN,
            slide_us: 10 * MIN,
            start_us: 2 * MIN,
        };
        assert_eq!(
            shifted.windows_of(MIN).collect::<Vec<_>>(),
            vec![(-8 * MIN, 2 * MIN)]
        );
    }

    #[test]
    fn every_instant_of_a_pane_falls_in_the_windows_of_its_start() {
        let specs = [(10, 3, 1, 1), (10, 5, -2, 5), (7, 2, 0, 1), (60, 25, 10, 5)];
        for (duration, slide, start, pane) in specs {
            let w = TimeWindow {
                duration_us: duration * MIN,
                slide_us: slide * MIN,
                start_us: start * MIN,
            };
            assert_eq!(w.pane_us(), pane * MIN);
            let panes = w.panes();
            for t in (-90 * MIN..90 * MIN).step_by(7_000_001) {
                let of_pane: Vec<_> = w.windows_of(panes.last_start(t)).collect();
                assert_eq!(w.windows_of(t).collect::<Vec<_>>(), of_pane, "{t} in {w:?}");
            }
        }
    }

    #[test]
    fn window_arguments_are_checked_as_spark_checks_them() {
        let s = |t: &str| ScalarValue::Utf8(Some(t.into()));
        let (ten, five, eleven) = (s("10 minutes"), s("5 minutes"), s("11 minutes"));
        assert!(TimeWindow::from_args(&[Some(&ten), Some(&five)]).is_ok());
        let err = TimeWindow::from_args(&[Some(&ten), Some(&eleven)]).unwrap_err();
        assert!(err.to_string().contains("less than or equal"), "{err}");
        let err = TimeWindow::from_args(&[Some(&ten), Some(&five), Some(&ten)]).unwrap_err();
        assert!(err.to_string().contains("start time"), "{err}");
        let err = TimeWindow::from_args(&[Some(&s("1 month"))]).unwrap_err();
        assert!(err.to_string().contains("1 month"), "{err}");
        let err = TimeWindow::from_args(&[None]).unwrap_err();
        assert!(err.to_string().contains("an expression"), "{err}");
    }

    #[test]
    fn sessions_merge_while_rows_start_before_the_session_ends() {
        let gap = 5;
        let events: Vec<(i64, i64)> = [0, 3, 8, 13, 20, 25]
            .iter()
            .map(|&t| (t, t + gap))
            .collect();
        // 0..5, 3 extends to 8, 8 touches the end and extends to 13, 13 touches again: one
        // session to 18; 20 opens another, 25 touches it.
        assert_eq!(
            merge_sessions(&events),
            vec![(0, 18), (0, 18), (0, 18), (0, 18), (20, 30), (20, 30)]
        );
        assert!(merge_sessions(&[]).is_empty());
    }
}
