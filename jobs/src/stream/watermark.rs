//! Event-time watermarks, as Spark's `withWatermark(column, delay)` defines them: the watermark a
//! batch runs with is the latest event time seen before it, minus the delay, and never goes
//! back. Rows whose event time is at or before it are late. Spark drops them without a trace;
//! here they go to the `late_events` table with the watermark they missed, and progress counts
//! them.
//!
//! Batch N's watermark is decided before N runs and logged in `offsets/N`, so a replay splits
//! the same rows the same way; the watermark after N is logged in `commits/N`
//! (`nextBatchWatermarkMs`), so a restart carries on where the last commit left off.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, Scalar, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::kernels::cmp::lt_eq;
use datafusion::arrow::compute::{filter_record_batch, not};
use datafusion::arrow::datatypes::{
    DataType, Field, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType,
};

use crate::error::{JobError, Result};
use crate::schemas::timestamp_type;
use crate::stream::rolling::no_nulls;
use crate::stream::spec::WatermarkSpec;

/// The columns `late_events` adds to the input row.
pub const LATE_COLUMNS: [&str; 2] = ["watermark", "batch_id"];

/// A job's watermark, resolved against its input schema.
#[derive(Debug, Clone)]
pub struct EventTime {
    name: String,
    /// Where the column is in the query's input.
    column: usize,
    /// Where it is in the whole row `late_events` keeps.
    whole_column: usize,
    delay_ms: i64,
    late_schema: SchemaRef,
}

/// A batch's rows split by the watermark.
#[derive(Debug, Default)]
pub struct Split {
    /// Rows after the watermark: the query's input.
    pub on_time: Vec<RecordBatch>,
    /// Rows at or before it, as `late_events` rows.
    pub late: Vec<RecordBatch>,
    /// How many rows are late.
    pub late_rows: u64,
    /// Event times of all the batch's rows, late ones included.
    pub stats: EventTimeStats,
}

/// Minimum, maximum and mean event time of a batch, in microseconds.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct EventTimeStats {
    min: Option<i64>,
    max: Option<i64>,
    sum: i128,
    count: u64,
}

impl EventTimeStats {
    fn add(&mut self, values: &TimestampMicrosecondArray) {
        for v in values.iter().flatten() {
            self.min = Some(self.min.map_or(v, |m| m.min(v)));
            self.max = Some(self.max.map_or(v, |m| m.max(v)));
            self.sum += i128::from(v);
            self.count += 1;
        }
    }

    /// Progress's `eventTime`: `min`, `max` and `avg` when there were rows, and the watermark
    /// the batch ran with, as Spark formats them.
    pub fn progress(&self, watermark_ms: i64) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let micros = |us: i64| {
            chrono::DateTime::from_timestamp_micros(us)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .unwrap_or_default()
        };
        if let (Some(min), Some(max)) = (self.min, self.max) {
            out.insert("min".into(), micros(min));
            out.insert("max".into(), micros(max));
            let avg = (self.sum / i128::from(self.count.max(1))) as i64;
            out.insert("avg".into(), micros(avg));
        }
        out.insert(
            "watermark".into(),
            micros(watermark_ms.saturating_mul(1000)),
        );
        out
    }
}

impl EventTime {
    /// Checks the spec against the query's input schema; `key` names the spec's watermark in
    /// errors.
    pub fn resolve(spec: &WatermarkSpec, input: &SchemaRef, key: &str) -> Result<Self> {
        let (column, field) = input.column_with_name(&spec.column).ok_or_else(|| {
            JobError::config(
                format!("{key}.column"),
                format!(
                    "the input has no column `{}` (it has {})",
                    spec.column,
                    input
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
        if !matches!(
            field.data_type(),
            DataType::Timestamp(TimeUnit::Microsecond, _)
        ) {
            return Err(JobError::config(
                format!("{key}.column"),
                format!(
                    "`{}` is a {}, not a timestamp",
                    spec.column,
                    field.data_type()
                ),
            ));
        }
        let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
        for name in LATE_COLUMNS {
            if input.field_with_name(name).is_ok() {
                return Err(JobError::config(
                    format!("{key}.column"),
                    format!("the input has a column `{name}`, which late_events adds to every row"),
                ));
            }
        }
        fields.push(Field::new(LATE_COLUMNS[0], timestamp_type(), false));
        fields.push(Field::new(LATE_COLUMNS[1], DataType::Int64, false));
        Ok(Self {
            name: spec.column.clone(),
            column,
            whole_column: column,
            delay_ms: i64::try_from(spec.delay.as_millis()).unwrap_or(i64::MAX),
            late_schema: Arc::new(Schema::new(fields)),
        })
    }

    /// The same watermark over a query input of fewer columns, `input` (the columns its query
    /// reads, the watermark's among them); late rows stay whole.
    pub fn narrowed(&self, input: &SchemaRef) -> Result<Self> {
        let column = input.index_of(&self.name).map_err(|_| {
            JobError::internal(format!("the narrowed input lost column `{}`", self.name))
        })?;
        Ok(Self {
            column,
            ..self.clone()
        })
    }

    /// The index of the watermark column in the input.
    pub fn column_index(&self) -> usize {
        self.column
    }

    /// The `late_events` table's schema: the input row, the watermark it missed and its batch.
    pub fn late_schema(&self) -> &SchemaRef {
        &self.late_schema
    }

    /// Splits a batch's rows by the watermark it runs with (ms since the epoch). `decoded_late`
    /// are the rows the decoder already set apart, whole (see [`late_rows`]), the others being
    /// on time; without it (Kafka's columns undecoded) the rows are split here.
    pub fn split(
        &self,
        rows: Vec<RecordBatch>,
        decoded_late: Option<Vec<RecordBatch>>,
        watermark_ms: i64,
        batch_id: i64,
    ) -> Result<Split> {
        let limit = watermark_ms.saturating_mul(1000);
        let mut out = Split::default();
        for batch in rows {
            out.stats.add(timestamps(batch.column(self.column))?);
            let late = match decoded_late {
                Some(_) => None,
                None => late_rows(batch.column(self.column), limit)?,
            };
            let Some(late) = late else {
                out.on_time.push(batch);
                continue;
            };
            let (on_time, late) = split_rows(&batch, &late)?;
            if on_time.num_rows() > 0 {
                out.on_time.push(on_time);
            }
            out.late_rows += late.num_rows() as u64;
            out.late.push(self.late_row(late, limit, batch_id)?);
        }
        for batch in decoded_late.into_iter().flatten() {
            out.stats.add(timestamps(batch.column(self.whole_column))?);
            out.late_rows += batch.num_rows() as u64;
            out.late.push(self.late_row(batch, limit, batch_id)?);
        }
        Ok(out)
    }

    fn late_row(&self, late: RecordBatch, limit_us: i64, batch_id: i64) -> Result<RecordBatch> {
        let n = late.num_rows();
        let mut columns: Vec<ArrayRef> = late.columns().to_vec();
        columns.push(Arc::new(
            TimestampMicrosecondArray::from(vec![limit_us; n]).with_timezone("UTC"),
        ));
        columns.push(Arc::new(Int64Array::from(vec![batch_id; n])));
        RecordBatch::try_new(Arc::clone(&self.late_schema), columns)
            .map_err(JobError::arrow("building late_events rows"))
    }

    /// The watermark after a batch with `stats` that ran with `current_ms`: the latest event time
    /// seen minus the delay, never behind `current_ms`.
    pub fn next_watermark(&self, current_ms: i64, stats: &EventTimeStats) -> i64 {
        match stats.max {
            Some(max_us) => current_ms.max(max_us.div_euclid(1000).saturating_sub(self.delay_ms)),
            None => current_ms,
        }
    }
}

/// The watermark column's event times.
fn timestamps(column: &ArrayRef) -> Result<&TimestampMicrosecondArray> {
    column
        .as_primitive_opt::<TimestampMicrosecondType>()
        .ok_or_else(|| JobError::internal("the watermark column is not a timestamp".into()))
}

/// Which of `times` are late at `limit_us` (the watermark in µs), or `None` when none is. As in
/// Spark, a row at or before the watermark is late; a row without an event time is not.
pub fn late_rows(times: &ArrayRef, limit_us: i64) -> Result<Option<BooleanArray>> {
    let times = timestamps(times)?;
    let bound = Scalar::new(
        TimestampMicrosecondArray::from_value(limit_us, 1).with_timezone_opt(times.timezone()),
    );
    let late = lt_eq(times, &bound)
        .map_err(JobError::arrow("comparing event times with the watermark"))?;
    let late = no_nulls(late);
    Ok((late.true_count() > 0).then_some(late))
}

/// `batch`'s rows on time and its `late` rows.
pub fn split_rows(batch: &RecordBatch, late: &BooleanArray) -> Result<(RecordBatch, RecordBatch)> {
    let on_time: BooleanArray = not(late).map_err(JobError::arrow("splitting late rows"))?;
    let split = |mask: &BooleanArray| {
        filter_record_batch(batch, mask).map_err(JobError::arrow("splitting late rows"))
    };
    Ok((split(&on_time)?, split(late)?))
}

#[cfg(test)]
#[expect(clippy::unwrap_used)]
mod tests {
    use super::*;
    use datafusion::arrow::array::StringArray;
    use std::time::Duration;

    fn input() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("at", timestamp_type(), true),
        ]))
    }

    fn rows(times: &[Option<i64>]) -> RecordBatch {
        let ids: Vec<String> = (0..times.len()).map(|i| format!("r{i}")).collect();
        RecordBatch::try_new(
            input(),
            vec![
                Arc::new(StringArray::from(ids)),
                Arc::new(TimestampMicrosecondArray::from(times.to_vec()).with_timezone("UTC")),
            ],
        )
        .unwrap()
    }

    fn event_time(delay: u64) -> EventTime {
        let spec = WatermarkSpec {
            column: "at".into(),
            delay: Duration::from_millis(delay),
        };
        EventTime::resolve(&spec, &input(), "x.toml: query.watermark").unwrap()
    }

    #[test]
    fn rows_at_or_before_the_watermark_are_late_and_keep_the_watermark_they_missed() {
        let et = event_time(500);
        let split = et
            .split(
                vec![rows(&[
                    Some(2_000_000),
                    Some(1_000_000),
                    None,
                    Some(999_999),
                    Some(1_000_001),
                ])],
                None,
                1_000,
                7,
            )
            .unwrap();
        assert_eq!(split.late_rows, 2);
        let kept = &split.on_time[0];
        let ids = kept.column(0).as_string::<i32>();
        assert_eq!(
            ids.iter().flatten().collect::<Vec<_>>(),
            vec!["r0", "r2", "r4"],
            "after the watermark, or without an event time"
        );
        let late = &split.late[0];
        assert_eq!(late.schema(), *et.late_schema());
        let ids = late.column(0).as_string::<i32>();
        assert_eq!(ids.iter().flatten().collect::<Vec<_>>(), vec!["r1", "r3"]);
        let missed = late.column(2).as_primitive::<TimestampMicrosecondType>();
        assert!(missed.iter().all(|w| w == Some(1_000_000)));
        assert!(
            late.column(3)
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                .iter()
                .all(|b| b == Some(7))
        );
        // The next watermark: the latest event time (2 s) minus the delay; never backwards.
        assert_eq!(et.next_watermark(1_000, &split.stats), 1_500);
        assert_eq!(et.next_watermark(1_800, &split.stats), 1_800);
        assert_eq!(et.next_watermark(1_000, &EventTimeStats::default()), 1_000);
        let progress = split.stats.progress(1_000);
        assert_eq!(progress["watermark"], "1970-01-01T00:00:01.000Z");
        assert_eq!(progress["max"], "1970-01-01T00:00:02.000Z");
        assert_eq!(progress["min"], "1970-01-01T00:00:00.999Z");

        // Rows the decoder split: its late rows come whole beside the others, which are on
        // time; both count in the event times.
        let decoded = et
            .split(
                vec![rows(&[Some(2_000_000), Some(1_500_000)])],
                Some(vec![rows(&[Some(500_000)])]),
                1_000,
                7,
            )
            .unwrap();
        assert_eq!(decoded.late_rows, 1);
        assert_eq!(decoded.on_time[0].num_rows(), 2);
        assert_eq!(decoded.late[0].schema(), *et.late_schema());
        assert_eq!(decoded.late[0].column(0).as_string::<i32>().value(0), "r0");
        assert_eq!(
            decoded.stats.progress(1_000)["min"],
            "1970-01-01T00:00:00.500Z"
        );
    }

    #[test]
    fn a_watermark_column_must_be_an_input_timestamp() {
        let spec = |column: &str| WatermarkSpec {
            column: column.into(),
            delay: Duration::from_secs(1),
        };
        let err = EventTime::resolve(&spec("when"), &input(), "x.toml: query.watermark")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("query.watermark.column") && err.contains("`when`"),
            "{err}"
        );
        let err = EventTime::resolve(&spec("id"), &input(), "x.toml: query.watermark")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a timestamp"), "{err}");
    }
}
