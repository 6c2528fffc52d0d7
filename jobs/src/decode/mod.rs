//! Decoding Kafka record values (JSON) into typed Arrow columns of a declared schema, and setting
//! aside every message that does not decode.
//!
//! The decoder is written for this job rather than borrowed: a message is scanned once, each
//! field it names is converted straight to its column's type as it is read, and only when the
//! whole message has been read and found good is its row appended, so a bad message costs
//! nothing but its own scan and never disturbs its neighbours. (arrow-json's tape decoder, used
//! before, fails a whole flush for one bad value and looks every field up by a hashed name; at
//! about 630 bytes per transaction it capped two cores near 650,000 events/s: BENCHMARKS.md.)
//!
//! What a field accepts follows Spark's `from_json`: a string column takes any value (a number or
//! object as its JSON text); numbers take JSON numbers (and, for doubles, the strings `NaN` and
//! `Infinity`); integer columns refuse fractions; booleans take `true` and `false`; dates and
//! timestamps take strings (a timestamp also a whole number of seconds since the epoch). Unknown
//! fields are skipped, a field named twice keeps its last value, and a required field that is
//! missing or null rejects the message.

mod columns;
mod json;
mod temporal;

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, Int64Array, RecordBatch, RecordBatchOptions,
    StringArray, UInt32Array,
};
use datafusion::arrow::compute::{take, take_record_batch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};

use crate::error::{JobError, Result};
use crate::schemas::dead_letters_schema;
use crate::stream::watermark::{late_rows, split_rows};

use columns::{Column, Kind, Slot};
use json::{Reason, Scanner, TRUNCATED, Text, kind_of};

/// Text a batch may hold before the decoder starts another: string columns have 32-bit offsets,
/// and a row's text is never longer than its message.
const MAX_BATCH_TEXT: usize = 1 << 30;

/// A message that did not decode: its index in the input and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// Row of the input records batch.
    pub index: u32,
    /// What was wrong, in words.
    pub error: String,
}

/// The outcome of decoding one records batch.
#[derive(Debug)]
pub struct Decoded {
    /// Decoded rows, in batches of the declared schema.
    pub batches: Vec<RecordBatch>,
    /// For each decoded row, in order across `batches`, the input row it came from.
    pub origins: Vec<u32>,
    /// The messages that did not decode.
    pub rejected: Vec<Rejected>,
}

impl Decoded {
    /// Rows decoded.
    pub fn num_rows(&self) -> usize {
        self.origins.len()
    }
}

/// A field of the declared schema, as the reader looks for it.
#[derive(Debug)]
struct FieldPlan {
    name: Box<[u8]>,
    /// What compact JSON has between the previous field's value and this field's: `,"name":`;
    /// `None` for a name JSON must write with escapes (its text would not appear as it is).
    follows: Option<Box<[u8]>>,
    kind: Kind,
    nullable: bool,
}

impl FieldPlan {
    fn name(&self) -> &str {
        std::str::from_utf8(&self.name).unwrap_or("?")
    }
}

/// Decodes JSON values into a declared schema.
#[derive(Debug, Clone)]
pub struct JsonDecoder {
    declared: SchemaRef,
    fields: Arc<[FieldPlan]>,
    by_name: Arc<HashMap<Box<[u8]>, usize>>,
    /// The declared columns it builds, ascending; every field is read and checked all the same.
    built: Arc<[usize]>,
    /// The fields that may not be missing or null.
    required: Arc<[usize]>,
    /// The schema of the rows it gives: the built columns.
    output: SchemaRef,
}

/// The row being read: each column's value, and the buffers escaped strings are resolved into.
struct Row {
    slots: Vec<Slot>,
    scratch: Vec<u8>,
    key: Vec<u8>,
}

impl JsonDecoder {
    /// A decoder for `schema`, whose fields must be flat columns of text, numbers, booleans,
    /// dates or UTC timestamps.
    pub fn new(schema: SchemaRef) -> Result<Self> {
        if schema.fields().is_empty() {
            return Err(JobError::internal("a declared schema has no fields".into()));
        }
        let fields = schema
            .fields()
            .iter()
            .map(|f| {
                let kind = Kind::of(f.data_type()).ok_or_else(|| {
                    JobError::internal(format!(
                        "declared schema field `{}` is a {}, which the JSON decoder does not read",
                        f.name(),
                        f.data_type()
                    ))
                })?;
                let name = f.name().as_bytes();
                let plain = !name.iter().any(|&b| b == b'"' || b == b'\\' || b < 0x20);
                Ok(FieldPlan {
                    name: name.into(),
                    follows: plain.then(|| [b",\"", name, b"\":"].concat().into()),
                    kind,
                    nullable: f.is_nullable(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let by_name = fields
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.clone(), i))
            .collect();
        Ok(Self {
            built: (0..fields.len()).collect(),
            required: (0..fields.len()).filter(|&c| !fields[c].nullable).collect(),
            output: Arc::clone(&schema),
            declared: schema,
            fields: fields.into(),
            by_name: Arc::new(by_name),
        })
    }

    /// The same decoder building only the declared columns `columns` (ascending indexes). A
    /// message is still read whole and checked against every declared field, so what goes to
    /// the dead letters does not depend on the columns a query happens to read.
    pub fn building(&self, columns: &[usize]) -> Result<Self> {
        if columns.windows(2).any(|w| w[0] >= w[1])
            || columns.last().is_some_and(|&c| c >= self.fields.len())
        {
            return Err(JobError::internal(format!(
                "columns {columns:?} of a declared schema of {} fields",
                self.fields.len()
            )));
        }
        let output = self
            .declared
            .project(columns)
            .map_err(JobError::arrow("projecting the declared schema"))?;
        Ok(Self {
            built: columns.into(),
            output: Arc::new(output),
            ..self.clone()
        })
    }

    /// The schema of the rows it gives: the declared schema, or the columns it builds.
    pub fn schema(&self) -> &SchemaRef {
        &self.output
    }

    /// Decodes every value of `values`; a null value is rejected like an empty one.
    pub fn decode(&self, values: &BinaryArray) -> Result<Decoded> {
        let n = values.len();
        let mut out = Decoded {
            batches: Vec::new(),
            origins: Vec::with_capacity(n),
            rejected: Vec::new(),
        };
        let mut columns: Vec<Column> = self
            .built
            .iter()
            .map(|&c| {
                Column::new(
                    Arc::clone(&self.declared.fields()[c]),
                    self.fields[c].kind,
                    n,
                )
            })
            .collect();
        // Rows in the batch being built (there may be no columns to count them).
        let mut rows = 0;
        let mut row = Row {
            slots: vec![Slot::Missing; self.fields.len()],
            scratch: Vec::new(),
            key: Vec::new(),
        };
        let mut text = 0;
        for i in 0..n {
            let message = if values.is_null(i) {
                &[][..]
            } else {
                values.value(i)
            };
            if let Err(error) = self.read(message, &mut row) {
                out.rejected.push(Rejected {
                    index: i as u32,
                    error,
                });
                continue;
            }
            if text + message.len() > MAX_BATCH_TEXT {
                out.batches.push(self.finish(&mut columns, rows)?);
                text = 0;
                rows = 0;
            }
            text += message.len();
            for (column, &c) in columns.iter_mut().zip(self.built.iter()) {
                column.append(row.slots[c], message, &row.scratch);
            }
            rows += 1;
            out.origins.push(i as u32);
        }
        if rows > 0 {
            out.batches.push(self.finish(&mut columns, rows)?);
        }
        Ok(out)
    }

    fn finish(&self, columns: &mut [Column], rows: usize) -> Result<RecordBatch> {
        let arrays = columns
            .iter_mut()
            .map(Column::finish)
            .collect::<Result<Vec<ArrayRef>>>()?;
        RecordBatch::try_new_with_options(
            Arc::clone(&self.output),
            arrays,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )
        .map_err(JobError::arrow("building decoded rows"))
    }

    /// Reads one message into `row.slots`, or says why it cannot be a row.
    fn read(&self, message: &[u8], row: &mut Row) -> std::result::Result<(), Reason> {
        // Most broken messages are empty, cut off or not JSON at all: say so plainly.
        match message.trim_ascii_start().first() {
            None => return Err("empty message".into()),
            Some(b'{') => {}
            Some(_) => return Err("not a JSON object".into()),
        }
        // Whether the message is UTF-8 is checked string by string as the scanner reads it.
        let Row {
            slots,
            scratch,
            key,
        } = row;
        slots.fill(Slot::Missing);
        scratch.clear();
        let mut s = Scanner::new(message);
        s.expect(b'{', "")?;
        s.skip_ws();
        // Producers write fields in the same order every time: try the one after the last
        // match before reading the name and looking it up.
        let mut hint = 0;
        // The field whose name and colon were taken after the last value (see below).
        let mut named = None;
        if s.peek() == Some(b'}') {
            s.expect(b'}', "")?;
        } else {
            loop {
                let column = match named.take() {
                    Some(c) => Some(c),
                    None => {
                        s.skip_ws();
                        match s.peek() {
                            Some(b'"') => {}
                            None => return Err(TRUNCATED.into()),
                            Some(b) => {
                                return Err(format!("expected a field name, found {}", kind_of(b)));
                            }
                        }
                        // The expected name, quoted, next in the message is taken as it stands
                        // (a name written with escapes is not, and is read the long way below).
                        let column = match self.fields.get(hint) {
                            Some(f) if f.follows.is_some() && s.take_quoted(&f.name) => Some(hint),
                            _ => {
                                key.clear();
                                let name = s.string(key)?.bytes(message, key);
                                self.by_name.get(name).copied()
                            }
                        };
                        s.expect(b':', "after a field name")?;
                        column
                    }
                };
                s.skip_ws();
                match column {
                    Some(c) => {
                        self.value(&mut s, c, message, scratch, &mut slots[c])?;
                        hint = c + 1;
                    }
                    None => s.skip_value(scratch)?,
                }
                // Compact JSON in the producer's order has the comma, the next field's name
                // and the colon next, as one run of bytes: one comparison instead of four steps.
                if let Some(follows) = self.fields.get(hint).and_then(|f| f.follows.as_deref())
                    && s.take(follows)
                {
                    named = Some(hint);
                    continue;
                }
                s.skip_ws();
                match s.peek() {
                    Some(b',') => s.expect(b',', "")?,
                    Some(b'}') => {
                        s.expect(b'}', "")?;
                        break;
                    }
                    None => return Err(TRUNCATED.into()),
                    Some(b) => {
                        return Err(format!(
                            "expected ',' or '}}' after a field, found {}",
                            kind_of(b)
                        ));
                    }
                }
            }
        }
        s.skip_ws();
        match s.peek() {
            None => {}
            Some(b'{' | b'[') => return Err("more than one JSON value".into()),
            Some(_) => return Err("unexpected text after the JSON object".into()),
        }
        for &c in self.required.iter() {
            let plan = &self.fields[c];
            match slots[c] {
                Slot::Missing => {
                    return Err(format!("missing required field `{}`", plan.name()));
                }
                Slot::Null => return Err(format!("required field `{}` is null", plan.name())),
                _ => {}
            }
        }
        Ok(())
    }

    /// Reads the value of column `c` into `slot`, converted to the column's type.
    ///
    /// Each kind of value is stored into the slot where it is read: returning the slot instead
    /// (as a `Result<Slot, _>`) had every field's value put together in a temporary from parts
    /// and read back at once, a load the processor cannot forward from those stores; it cost
    /// about a tenth of the decoding time.
    #[inline(always)]
    fn value(
        &self,
        s: &mut Scanner<'_>,
        c: usize,
        message: &[u8],
        scratch: &mut Vec<u8>,
        slot: &mut Slot,
    ) -> std::result::Result<(), Reason> {
        let plan = &self.fields[c];
        let Some(b) = s.peek() else {
            return Err(TRUNCATED.into());
        };
        if b == b'n' {
            s.literal(b"null")?;
            *slot = Slot::Null;
            return Ok(());
        }
        let field = || plan.name();
        let mismatch = |wanted: &str| {
            format!(
                "field `{}`: expected {wanted}, found {}",
                field(),
                kind_of(b)
            )
        };
        match (plan.kind, b) {
            (Kind::Utf8, b'"') => *slot = Slot::Text(s.string(scratch)?),
            // Spark's from_json reads any other value into a string column as its JSON text.
            (Kind::Utf8, _) => {
                let start = s.pos();
                s.skip_value(scratch)?;
                *slot = Slot::Text(Text::message(start, s.pos()));
            }
            (Kind::Float64, b'-' | b'0'..=b'9') => {
                *slot = Slot::F64(
                    s.number()?
                        .to_f64(message)
                        .map_err(|e| format!("field `{}`: {e}", field()))?,
                )
            }
            (Kind::Float64, b'"') => {
                let text = s.string(scratch)?;
                *slot = Slot::F64(match text_of(text, message, scratch) {
                    "NaN" => f64::NAN,
                    "Infinity" | "+Infinity" | "INF" | "+INF" => f64::INFINITY,
                    "-Infinity" | "-INF" => f64::NEG_INFINITY,
                    other => {
                        return Err(format!(
                            "field `{}`: expected a number, found the string {}",
                            field(),
                            quoted(other)
                        ));
                    }
                });
            }
            (Kind::Float64, _) => return Err(mismatch("a number")),
            (Kind::Int64 | Kind::Int32, b'-' | b'0'..=b'9') => {
                let n = s.number()?;
                let wrong = |what: &str| {
                    let text = text_of(Text::message(n.start, n.end), message, scratch);
                    format!("field `{}`: {text} is {what}", field())
                };
                let v = match n.to_i64() {
                    Some(v) => v,
                    None if n.integer => return Err(wrong("out of range")),
                    None => return Err(wrong("not an integer")),
                };
                *slot = if plan.kind == Kind::Int32 {
                    Slot::I32(i32::try_from(v).map_err(|_| wrong("out of range for an int"))?)
                } else {
                    Slot::I64(v)
                };
            }
            (Kind::Int64 | Kind::Int32, _) => return Err(mismatch("an integer")),
            (Kind::Boolean, b't') => {
                s.literal(b"true")?;
                *slot = Slot::Bool(true);
            }
            (Kind::Boolean, b'f') => {
                s.literal(b"false")?;
                *slot = Slot::Bool(false);
            }
            (Kind::Boolean, _) => return Err(mismatch("true or false")),
            (Kind::Date32, b'"') => {
                let text = s.string(scratch)?;
                *slot = Slot::I32(
                    temporal::date_days(text.bytes(message, scratch)).ok_or_else(|| {
                        let text = text_of(text, message, scratch);
                        format!("field `{}`: {} is not a date", field(), quoted(text))
                    })?,
                );
            }
            (Kind::Date32, _) => return Err(mismatch("a date string")),
            (Kind::Timestamp, b'"') => {
                let text = s.string(scratch)?;
                *slot = Slot::I64(
                    temporal::timestamp_micros(text.bytes(message, scratch)).ok_or_else(|| {
                        let text = text_of(text, message, scratch);
                        format!("field `{}`: {} is not a timestamp", field(), quoted(text))
                    })?,
                );
            }
            // As in Spark, a number is whole seconds since the epoch.
            (Kind::Timestamp, b'-' | b'0'..=b'9') => {
                let n = s.number()?;
                let micros = n.to_i64().and_then(|v| v.checked_mul(1_000_000));
                *slot = Slot::I64(micros.ok_or_else(|| {
                    let text = text_of(Text::message(n.start, n.end), message, scratch);
                    format!(
                        "field `{}`: {text} is not a whole number of seconds in range",
                        field()
                    )
                })?);
            }
            (Kind::Timestamp, _) => return Err(mismatch("a timestamp string")),
        }
        Ok(())
    }
}

/// A string's text. The message is UTF-8 and spans end at ASCII delimiters, so this never fails.
fn text_of<'a>(text: Text, message: &'a [u8], scratch: &'a [u8]) -> &'a str {
    let bytes = text.bytes(message, scratch);
    std::str::from_utf8(bytes).unwrap_or_default()
}

/// A value quoted for an error message, cut short if long.
fn quoted(text: &str) -> String {
    match text.char_indices().nth(40) {
        Some((cut, _)) => format!("\"{}...\"", &text[..cut]),
        None => format!("\"{text}\""),
    }
}

/// Builds `dead_letters` rows for the rejected messages of a Kafka records batch (Spark's Kafka
/// columns), stamped with the micro-batch id and the time they were recorded.
fn dead_letter_rows(
    records: &RecordBatch,
    rejected: &[Rejected],
    batch_id: i64,
    recorded_at_micros: i64,
) -> Result<RecordBatch> {
    let schema = dead_letters_schema();
    let indices = UInt32Array::from_iter_values(rejected.iter().map(|r| r.index));
    let pick = |name: &str| -> Result<ArrayRef> {
        let column = records
            .column_by_name(name)
            .ok_or_else(|| JobError::internal(format!("records batch has no `{name}` column")))?;
        take(column.as_ref(), &indices, None).map_err(JobError::arrow("dead letters"))
    };
    let n = rejected.len();
    let errors = StringArray::from_iter_values(rejected.iter().map(|r| r.error.as_str()));
    let timestamp = pick("timestamp")?;
    let recorded_at = Arc::new(
        datafusion::arrow::array::TimestampMicrosecondArray::from(vec![recorded_at_micros; n])
            .with_timezone("UTC"),
    );
    let columns: Vec<ArrayRef> = vec![
        pick("topic")?,
        pick("partition")?,
        pick("offset")?,
        timestamp,
        pick("key")?,
        pick("value")?,
        Arc::new(errors),
        Arc::new(Int64Array::from(vec![batch_id; n])),
        recorded_at,
    ];
    RecordBatch::try_new(schema, columns).map_err(JobError::arrow("dead letters"))
}

/// A records batch decoded: the rows, the late ones apart, and `dead_letters` rows for the
/// messages that did not decode.
#[derive(Debug)]
pub struct DecodedRecords {
    /// Rows of the view: the declared schema and the metadata columns asked for (those the
    /// query reads, when narrowed), after the watermark.
    pub rows: Vec<RecordBatch>,
    /// Rows at or before the watermark, whole (every declared and metadata column).
    pub late: Vec<RecordBatch>,
    /// `dead_letters` rows.
    pub dead_letters: RecordBatch,
}

/// Whether the JSON decoder fills a column of type `data_type`.
pub fn decodes(data_type: &DataType) -> bool {
    Kind::of(data_type).is_some()
}

/// Decodes the values of Kafka records batches into a declared schema, and carries the Kafka
/// columns asked for (such as `offset`) alongside each decoded row, renamed.
///
/// A decoder [`narrowed`](Self::narrowed) to the columns a query reads builds only those
/// (most of a message's text is in columns no feature reads); given the watermark's column
/// ([`with_event_time`](Self::with_event_time)) it sets late rows apart and decodes them again
/// whole, for `late_events`.
#[derive(Debug, Clone)]
pub struct RecordDecoder {
    json: JsonDecoder,
    /// For each metadata column of the view, in order, its Kafka column's name.
    metadata: Vec<String>,
    /// The rows it gives: declared columns, then metadata columns.
    view: SchemaRef,
    /// Where the view has the watermark's column.
    event_time: Option<usize>,
    /// The decoder of whole rows, when this one builds fewer columns.
    whole: Option<Arc<RecordDecoder>>,
}

impl RecordDecoder {
    /// A decoder of `declared` values giving rows of `view`: the declared fields, then one
    /// column for each of `metadata`'s Kafka columns, in order.
    pub fn new(declared: SchemaRef, metadata: Vec<String>, view: SchemaRef) -> Result<Self> {
        if view.fields().len() != declared.fields().len() + metadata.len() {
            return Err(JobError::internal(format!(
                "a view of {} columns for {} declared and {} metadata columns",
                view.fields().len(),
                declared.fields().len(),
                metadata.len()
            )));
        }
        Ok(Self {
            json: JsonDecoder::new(declared)?,
            metadata,
            view,
            event_time: None,
            whole: None,
        })
    }

    /// The same decoder giving only the view's columns `columns` (ascending indexes), late rows
    /// still whole.
    pub fn narrowed(&self, columns: &[usize]) -> Result<Self> {
        if self.whole.is_some() {
            return Err(JobError::internal("a decoder is narrowed once".into()));
        }
        let declared = self.view.fields().len() - self.metadata.len();
        let (built, metadata): (Vec<usize>, Vec<usize>) =
            columns.iter().partition(|&&c| c < declared);
        let view = self
            .view
            .project(columns)
            .map_err(JobError::arrow("projecting the view"))?;
        Ok(Self {
            json: self.json.building(&built)?,
            metadata: metadata
                .iter()
                .map(|&c| self.metadata[c - declared].clone())
                .collect(),
            view: Arc::new(view),
            event_time: None,
            whole: Some(Arc::new(Self {
                event_time: None,
                ..self.clone()
            })),
        })
    }

    /// The same decoder setting apart rows at or before the watermark by the view's column
    /// `column`.
    pub fn with_event_time(self, column: usize) -> Self {
        Self {
            event_time: Some(column),
            ..self
        }
    }

    /// The schema of the rows it gives.
    pub fn schema(&self) -> &SchemaRef {
        &self.view
    }

    /// Decodes a records batch, turning rejected messages into `dead_letters` rows stamped with
    /// `batch_id` and `recorded_at_micros`, and setting apart the rows late at `watermark_ms`.
    pub fn decode(
        &self,
        records: &RecordBatch,
        batch_id: i64,
        recorded_at_micros: i64,
        watermark_ms: i64,
    ) -> Result<DecodedRecords> {
        let decoded = self.json.decode(values_of(records)?)?;
        let dead_letters =
            dead_letter_rows(records, &decoded.rejected, batch_id, recorded_at_micros)?;
        let limit_us = watermark_ms.saturating_mul(1000);
        let mut out = DecodedRecords {
            rows: Vec::with_capacity(decoded.batches.len()),
            late: Vec::new(),
            dead_letters,
        };
        // The records the late rows came from, to decode again whole.
        let mut late_origins: Vec<u32> = Vec::new();
        let mut start = 0;
        for batch in decoded.batches {
            let origins = &decoded.origins[start..start + batch.num_rows()];
            start += batch.num_rows();
            let batch = self.with_metadata(records, batch, origins)?;
            let late = match self.event_time {
                Some(column) => late_rows(batch.column(column), limit_us)?,
                None => None,
            };
            let Some(late) = late else {
                out.rows.push(batch);
                continue;
            };
            let (on_time, late_part) = split_rows(&batch, &late)?;
            if on_time.num_rows() > 0 {
                out.rows.push(on_time);
            }
            match self.whole {
                None => out.late.push(late_part),
                Some(_) => late_origins.extend(
                    origins
                        .iter()
                        .zip(late.values().iter())
                        .filter_map(|(&o, is_late)| is_late.then_some(o)),
                ),
            }
        }
        if let Some(whole) = &self.whole
            && !late_origins.is_empty()
        {
            let late_records = take_record_batch(records, &UInt32Array::from(late_origins))
                .map_err(JobError::arrow("late records"))?;
            let again = whole.decode(&late_records, batch_id, recorded_at_micros, watermark_ms)?;
            if again.dead_letters.num_rows() > 0 {
                return Err(JobError::internal(
                    "a late record decoded once and not the second time".into(),
                ));
            }
            out.late.extend(again.rows);
        }
        Ok(out)
    }

    /// A decoded batch with the Kafka columns of the records (`origins`) its rows came from.
    fn with_metadata(
        &self,
        records: &RecordBatch,
        batch: RecordBatch,
        origins: &[u32],
    ) -> Result<RecordBatch> {
        if self.metadata.is_empty() {
            return Ok(batch);
        }
        let origins = UInt32Array::from(origins.to_vec());
        let mut columns = batch.columns().to_vec();
        for name in &self.metadata {
            let column = records.column_by_name(name).ok_or_else(|| {
                JobError::internal(format!("records batch has no `{name}` column"))
            })?;
            columns.push(
                take(column.as_ref(), &origins, None)
                    .map_err(JobError::arrow("metadata columns"))?,
            );
        }
        RecordBatch::try_new_with_options(
            Arc::clone(&self.view),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
        )
        .map_err(JobError::arrow("metadata columns"))
    }
}

/// Waits for decoding threads, in order; a thread that panicked is an internal error.
pub fn join_decoders<T>(
    handles: Vec<std::thread::ScopedJoinHandle<'_, Result<T>>>,
) -> Vec<Result<T>> {
    handles
        .into_iter()
        .map(|h| {
            h.join()
                .unwrap_or_else(|_| Err(JobError::internal("a decoding thread panicked".into())))
        })
        .collect()
}

/// The `value` column of a Kafka records batch.
fn values_of(records: &RecordBatch) -> Result<&BinaryArray> {
    records
        .column_by_name("value")
        .and_then(|c| c.as_binary_opt::<i32>())
        .ok_or_else(|| JobError::internal("records batch has no binary `value` column".into()))
}

#[cfg(test)]
#[expect(clippy::unwrap_used)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::collections::HashMap;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("amount", DataType::Float64, false),
            Field::new("note", DataType::Utf8, true),
        ]))
    }

    fn decode(messages: &[&[u8]]) -> Decoded {
        let values = BinaryArray::from_iter_values(messages.iter().copied());
        JsonDecoder::new(schema()).unwrap().decode(&values).unwrap()
    }

    #[test]
    fn every_message_is_one_row_or_one_rejection() {
        let messages: Vec<&[u8]> = vec![
            br#"{"id":"a","amount":1.5}"#,
            br#"{"id":"b","amount":"#,                        // truncated
            b"",                                              // empty
            br#"{"id":"c","amount":"lots"}"#,                 // wrong type: found at flush
            br#"{"id":"d","amount":2,"extra":true}"#,         // unknown field: fine
            br#"{"amount":3}"#,                               // missing required field
            br#"{"id":"e","amount":4}{"id":"f","amount":5}"#, // two values
            b"\xff\x00garbage",                               // not JSON
            br#"{"id":"g","amount":6,"note":"ok"}"#,
            br#" {"id":"h}\"{[","amount":7} "#, // braces and quotes inside a string
        ];
        let out = decode(&messages);
        assert_eq!(out.num_rows() + out.rejected.len(), messages.len());
        let mut good = out.origins.clone();
        good.sort();
        assert_eq!(good, vec![0, 4, 8, 9]);
        let mut bad: Vec<u32> = out.rejected.iter().map(|r| r.index).collect();
        bad.sort();
        assert_eq!(bad, vec![1, 2, 3, 5, 6, 7]);
        let rows: usize = out.batches.iter().map(|b| b.num_rows()).sum();
        assert_eq!(rows, 4);
        let wrong_type = out.rejected.iter().find(|r| r.index == 3).unwrap();
        assert!(wrong_type.error.contains("amount"), "{}", wrong_type.error);
    }

    /// The decoder against arrow-json's (the reference it replaced) on every source's generated
    /// events: the same rows, value for value.
    #[test]
    fn generated_events_decode_exactly_as_arrow_json_decodes_them() {
        use crate::generator::{Generator, GeneratorConfig, Message, Source, Stream};
        use crate::schemas::{labels_schema, source_schema};
        use datafusion::arrow::json::ReaderBuilder;

        let mut config = GeneratorConfig::new(5, 1_793_491_200_000);
        config.malformed_rate = 0.0;
        let mut generator = Generator::new(config).unwrap();
        let mut by_stream: HashMap<Stream, Vec<Vec<u8>>> = HashMap::new();
        let mut msg = Message::default();
        for i in 0..40_000 {
            if i < 30_000 {
                generator.next_message(&mut msg);
            } else if !generator.drain_labels(&mut msg) {
                break;
            }
            by_stream
                .entry(msg.stream.unwrap())
                .or_default()
                .push(msg.value.clone());
        }
        let mut streams: Vec<(Stream, SchemaRef)> = Source::ALL
            .iter()
            .map(|s| (Stream::Events(*s), source_schema(*s)))
            .collect();
        streams.push((Stream::Labels, labels_schema()));
        for (stream, schema) in streams {
            let messages = &by_stream[&stream];
            assert!(messages.len() > 100, "{stream:?}");
            let values = BinaryArray::from_iter_values(messages.iter().map(Vec::as_slice));
            let ours = JsonDecoder::new(Arc::clone(&schema))
                .unwrap()
                .decode(&values)
                .unwrap();
            assert!(ours.rejected.is_empty(), "{:?}", ours.rejected.first());
            let mut reference = ReaderBuilder::new(Arc::clone(&schema))
                .with_batch_size(messages.len())
                .build_decoder()
                .unwrap();
            for m in messages {
                reference.decode(m).unwrap();
            }
            let expected = reference.flush().unwrap().unwrap();
            assert_eq!(ours.batches, vec![expected], "{stream:?}");
        }
    }

    /// Whatever the layout (the producer's order and compact, spaces, another order, unknown
    /// fields between, names that start like the expected one), a message gives the same row:
    /// the path that takes `,"next":` at once and the path that reads each name agree.
    #[test]
    fn a_message_decodes_the_same_in_any_layout() {
        let layouts = [
            r#"{"id":"a","amount":1.5,"note":"n"}"#,
            r#"{ "id" : "a" , "amount" : 1.5 , "note" : "n" }"#,
            r#"{"note":"n","amount":1.5,"id":"a"}"#,
            r#"{"id":"a","x":[1,{"amount":9}],"amount":1.5,"notes":"m","note":"n"}"#,
            r#"{"id":"a","amoun":2,"amount":1.5,"note":"n"}"#,
            r#"{"id":"z","id":"a","amount":1.5,"note":"n"}"#,
        ];
        let rows: Vec<RecordBatch> = layouts.iter().map(|m| one(m).unwrap()).collect();
        for (row, layout) in rows.iter().zip(layouts) {
            assert_eq!(row, &rows[0], "{layout}");
        }
        for cut in [
            r#"{"id":"a","amount":"#,
            r#"{"id":"a","#,
            r#"{"id":"a","amo"#,
        ] {
            assert_eq!(one(cut).unwrap_err(), TRUNCATED, "{cut}");
        }
    }

    /// A field whose name JSON writes with an escape is found by its escaped name only; its
    /// raw text in a message is not JSON.
    #[test]
    fn a_name_with_a_quote_is_read_only_escaped() {
        let quoted = Field::new("a\"b", DataType::Int64, false);
        let other = Field::new("c", DataType::Int64, true);
        // The name first (the expected first field) and second (expected after another).
        for fields in [
            vec![quoted.clone(), other.clone()],
            vec![other.clone(), quoted.clone()],
        ] {
            let decoder = JsonDecoder::new(Arc::new(Schema::new(fields))).unwrap();
            let values = BinaryArray::from_iter_values([
                br#"{"a\"b":1,"c":2}"#.as_slice(),
                br#"{"c":2,"a\"b":1}"#.as_slice(),
                br#"{"a"b":1,"c":2}"#.as_slice(),
                br#"{"c":2,"a"b":1}"#.as_slice(),
            ]);
            let out = decoder.decode(&values).unwrap();
            assert_eq!(out.origins, [0, 1]);
            assert_eq!(out.rejected.len(), 2, "{:?}", out.rejected);
        }
    }

    fn one(message: &str) -> std::result::Result<RecordBatch, String> {
        let out = decode(&[message.as_bytes()]);
        match out.rejected.first() {
            Some(r) => Err(r.error.clone()),
            None => Ok(out.batches[0].clone()),
        }
    }

    #[test]
    fn fields_read_as_sparks_from_json_reads_them() {
        let row = one(
            r#" { "note" : {"a": [1, "}"]} , "zzz": [[{}]], "amount": -1.5e2, "id": "x\u00e9\n" } "#,
        )
        .unwrap();
        assert_eq!(row.column(0).as_string::<i32>().value(0), "xé\n");
        assert_eq!(
            row.column(1)
                .as_primitive::<datafusion::arrow::datatypes::Float64Type>()
                .value(0),
            -150.0
        );
        // A string column takes any value as its JSON text.
        assert_eq!(
            row.column(2).as_string::<i32>().value(0),
            r#"{"a": [1, "}"]}"#
        );
        let row = one(r#"{"id":"a","amount":1,"note":12.50,"id":"b"}"#).unwrap();
        assert_eq!(
            row.column(0).as_string::<i32>().value(0),
            "b",
            "last one wins"
        );
        assert_eq!(row.column(2).as_string::<i32>().value(0), "12.50");
        // A name written with escapes is the same name; one that only starts like the field
        // expected next is another (unknown) one.
        let row = one(r#"{"\u0069d":"a","amountx":"no","amount":2,"note":"n"}"#).unwrap();
        assert_eq!(row.column(0).as_string::<i32>().value(0), "a");
        assert_eq!(
            row.column(1)
                .as_primitive::<datafusion::arrow::datatypes::Float64Type>()
                .value(0),
            2.0
        );
        assert!(one(r#"{"id"#).unwrap_err().contains("truncated"));
        let row = one(r#"{"id":"a","amount":"NaN","note":null}"#).unwrap();
        assert!(row.column(2).is_null(0));
        assert!(
            row.column(1)
                .as_primitive::<datafusion::arrow::datatypes::Float64Type>()
                .value(0)
                .is_nan()
        );
        for (message, reason) in [
            (
                r#"{"id":"a","amount":"1.5"}"#,
                "field `amount`: expected a number",
            ),
            (
                r#"{"id":"a","amount":true}"#,
                "field `amount`: expected a number",
            ),
            (r#"{"id":"a","amount":1e999}"#, "out of range"),
            (r#"{"id":null,"amount":1}"#, "required field `id` is null"),
            (r#"{"amount":1}"#, "missing required field `id`"),
            (r#"{"id":"a","amount":1} x"#, "unexpected text"),
            (r#"{"id":"a","amount":1}[]"#, "more than one JSON value"),
            (r#"{"id":"a" "amount":1}"#, "expected ',' or '}'"),
            (r#"{"id":"a","amount":01}"#, "expected ',' or '}'"),
            (r#"{"id":"a","amount":1,}"#, "expected a field name"),
            (r#"{"id":"a","amount":1"#, "truncated"),
            (r#"{"id":"a","amount":1,"note":"\q"}"#, "invalid escape"),
            (r#"{"id":"a","amount":1,"x":[1,}"#, "expected a value"),
            ("[1]", "not a JSON object"),
            ("  \n", "empty message"),
        ] {
            let error = one(message).unwrap_err();
            assert!(error.contains(reason), "{message}: {error}");
        }
        // Not UTF-8 in a field's value, in a field nobody reads, in a name, in an escaped
        // string, in a nested value; and outside strings, where only ASCII is JSON.
        let invalid_utf8 = decode(&[
            b"{\"id\":\"\xc3\x28\",\"amount\":1}",
            b"{\"id\":\"a\",\"amount\":1,\"note\":\"caf\xe9\"}",
            b"{\"id\":\"a\",\"amount\":1,\"n\xe9\":2}",
            b"{\"id\":\"a\\n\xff\",\"amount\":1}",
            b"{\"id\":\"a\",\"amount\":1,\"x\":[{\"y\":\"\xc3\"}]}",
            b"{\"id\":\"a\",\"amount\":1}\xff",
            b"{\"id\":\"a\",\xc3\xa9\"amount\":1}",
        ]);
        assert_eq!(invalid_utf8.rejected.len(), 7);
        for (rejected, at) in invalid_utf8.rejected[..5].iter().zip([7, 32, 23, 10, 32]) {
            assert_eq!(
                rejected.error,
                format!("not UTF-8 text: invalid byte at {at}")
            );
        }
        assert!(invalid_utf8.rejected[5].error.contains("unexpected text"));
        assert!(
            invalid_utf8.rejected[6]
                .error
                .contains("expected a field name")
        );
        // Text beyond ASCII is read as it stands.
        let utf8 =
            one("{\"id\":\"caf\u{e9} \u{1f600}\",\"amount\":1,\"n\u{e9}\":\"\u{4e2d}\"}").unwrap();
        assert_eq!(
            utf8.column(0).as_string::<i32>().value(0),
            "caf\u{e9} \u{1f600}"
        );
    }

    #[test]
    fn integers_dates_and_timestamps_follow_spark() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, true),
            Field::new("small", DataType::Int32, true),
            Field::new("flag", DataType::Boolean, true),
            Field::new("day", DataType::Date32, true),
            Field::new("at", crate::schemas::timestamp_type(), true),
        ]));
        let decoder = JsonDecoder::new(schema).unwrap();
        let run = |m: &str| {
            let out = decoder
                .decode(&BinaryArray::from_iter_values([m.as_bytes()]))
                .unwrap();
            match out.rejected.first() {
                Some(r) => Err(r.error.clone()),
                None => Ok(out.batches[0].clone()),
            }
        };
        use datafusion::arrow::datatypes::{
            Date32Type, Int32Type, Int64Type, TimestampMicrosecondType,
        };
        let row = run(
            r#"{"n":-9223372036854775808,"small":7,"flag":false,"day":"1970-01-11","at":"1970-01-01T00:00:01.5+01:00"}"#,
        )
        .unwrap();
        assert_eq!(row.column(0).as_primitive::<Int64Type>().value(0), i64::MIN);
        assert_eq!(row.column(1).as_primitive::<Int32Type>().value(0), 7);
        assert!(!row.column(2).as_boolean().value(0));
        assert!(!row.column(2).is_null(0));
        assert_eq!(row.column(3).as_primitive::<Date32Type>().value(0), 10);
        assert_eq!(
            row.column(4)
                .as_primitive::<TimestampMicrosecondType>()
                .value(0),
            1_500_000 - 3_600_000_000
        );
        assert_eq!(row.column(4).data_type(), &crate::schemas::timestamp_type());
        // A number is whole seconds since the epoch, as in Spark.
        let row = run(r#"{"at":60}"#).unwrap();
        assert_eq!(
            row.column(4)
                .as_primitive::<TimestampMicrosecondType>()
                .value(0),
            60_000_000
        );
        assert!(row.column(0).is_null(0) && row.column(2).is_null(0));
        for (message, reason) in [
            (r#"{"n":1.5}"#, "field `n`: 1.5 is not an integer"),
            (r#"{"n":1e2}"#, "not an integer"),
            (r#"{"n":9223372036854775808}"#, "out of range"),
            (r#"{"small":2147483648}"#, "out of range for an int"),
            (r#"{"n":"5"}"#, "expected an integer, found a string"),
            (r#"{"flag":"true"}"#, "expected true or false"),
            (r#"{"flag":tru}"#, "invalid literal"),
            (
                r#"{"day":"2026-02-30"}"#,
                "field `day`: \"2026-02-30\" is not a date",
            ),
            (
                r#"{"at":"last tuesday"}"#,
                "field `at`: \"last tuesday\" is not a timestamp",
            ),
            (r#"{"at":1.5}"#, "not a whole number of seconds"),
            (r#"{"at":true}"#, "expected a timestamp string"),
        ] {
            let error = run(message).unwrap_err();
            assert!(error.contains(reason), "{message}: {error}");
        }
    }

    #[test]
    fn a_schema_with_a_type_the_decoder_cannot_fill_is_refused_up_front() {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "tags",
            DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
            true,
        )]));
        let error = JsonDecoder::new(schema).unwrap_err().to_string();
        assert!(error.contains("`tags`"), "{error}");
    }

    #[test]
    fn rows_keep_their_origins_among_rejected_messages() {
        let mut owned: Vec<Vec<u8>> = Vec::new();
        for i in 0..10_000 {
            if i % 997 == 0 {
                owned.push(format!(r#"{{"id":"x{i}","amount":"bad"}}"#).into_bytes());
            } else if i % 1999 == 0 {
                owned.push(format!(r#"{{"id":"x{i}","#).into_bytes());
            } else {
                owned.push(format!(r#"{{"id":"x{i}","amount":{i}}}"#).into_bytes());
            }
        }
        let refs: Vec<&[u8]> = owned.iter().map(|v| v.as_slice()).collect();
        let out = decode(&refs);
        assert_eq!(out.num_rows() + out.rejected.len(), refs.len());
        // Every decoded row's id names the message it came from.
        let mut row = 0;
        for batch in &out.batches {
            let ids = batch.column(0).as_string::<i32>();
            for k in 0..batch.num_rows() {
                assert_eq!(ids.value(k), format!("x{}", out.origins[row]));
                row += 1;
            }
        }
        let expected_bad = (0..10_000)
            .filter(|i| i % 997 == 0 || i % 1999 == 0)
            .count();
        assert_eq!(out.rejected.len(), expected_bad);
    }

    /// Metadata columns come from the record each row was decoded from, rejected neighbours
    /// and all, and the rejected ones still become dead letters with their offsets.
    #[test]
    fn metadata_columns_follow_their_rows() {
        use crate::records::InProcessTopic;
        use datafusion::arrow::datatypes::{Int32Type, Int64Type};
        let mut topic = InProcessTopic::new("payments", 1);
        for i in 0..5_000 {
            let value = if i % 7 == 3 {
                format!(r#"{{"id":"x{i}","amount":"#)
            } else {
                format!(r#"{{"id":"x{i}","amount":{i}}}"#)
            };
            topic.append(b"k", value.as_bytes(), 1_000 + i);
        }
        let records = topic.take_batch().unwrap();
        let view = Arc::new(Schema::new(
            schema()
                .fields()
                .iter()
                .map(|f| f.as_ref().clone())
                .chain([
                    Field::new("at_partition", DataType::Int32, false),
                    Field::new("at_offset", DataType::Int64, false),
                ])
                .collect::<Vec<_>>(),
        ));
        let decoder = RecordDecoder::new(
            schema(),
            vec!["partition".into(), "offset".into()],
            view.clone(),
        )
        .unwrap();
        let out = decoder.decode(&records, 4, 0, 0).unwrap();
        let mut rows = 0;
        for b in &out.rows {
            assert_eq!(b.schema(), view);
            let ids = b.column(0).as_string::<i32>();
            let offsets = b.column(4).as_primitive::<Int64Type>();
            for k in 0..b.num_rows() {
                assert_eq!(ids.value(k), format!("x{}", offsets.value(k)));
                assert_eq!(b.column(3).as_primitive::<Int32Type>().value(k), 0);
            }
            rows += b.num_rows();
        }
        let bad = (0..5_000).filter(|i| i % 7 == 3).count();
        assert_eq!(rows, 5_000 - bad);
        let offsets = out.dead_letters.column_by_name("offset").unwrap();
        assert!(
            offsets
                .as_primitive::<Int64Type>()
                .values()
                .iter()
                .all(|o| o % 7 == 3)
        );
        assert_eq!(out.dead_letters.num_rows(), bad);
    }

    /// Narrowed to some columns, the decoder builds only those; it still refuses the same
    /// messages (a bad value in a column it does not build makes a dead letter all the same),
    /// and gives the late rows whole, metadata and all, as the whole decoder does.
    #[test]
    fn a_narrowed_decoder_builds_its_columns_and_gives_late_rows_whole() {
        use crate::records::InProcessTopic;
        use crate::schemas::timestamp_type;
        use datafusion::arrow::compute::concat_batches;
        let declared = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("at", timestamp_type(), false),
            Field::new("amount", DataType::Float64, false),
            Field::new("note", DataType::Utf8, true),
        ]));
        let mut fields: Vec<Field> = declared
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new("at_offset", DataType::Int64, false));
        let view = Arc::new(Schema::new(fields));
        let mut topic = InProcessTopic::new("payments", 1);
        for i in 0..3_000 {
            let at = (i * 7_919) % 3_000;
            let amount = if i % 11 == 5 {
                r#""lots""#.to_string()
            } else {
                i.to_string()
            };
            let note = if i % 13 == 7 {
                String::new()
            } else {
                format!(r#","note":"n{i}""#)
            };
            let value = format!(r#"{{"id":"x{i}","at":{at},"amount":{amount}{note}}}"#);
            topic.append(b"k", value.as_bytes(), 1_000 + i);
        }
        let records = topic.take_batch().unwrap();
        let whole = RecordDecoder::new(declared, vec!["offset".into()], Arc::clone(&view)).unwrap();
        let narrow = whole.narrowed(&[0, 1, 4]).unwrap().with_event_time(1);
        let whole = whole.with_event_time(1);
        // Late: at or before 1,000 s.
        let (w, n) = (
            whole.decode(&records, 3, 9, 1_000_000).unwrap(),
            narrow.decode(&records, 3, 9, 1_000_000).unwrap(),
        );
        let all =
            |schema: &SchemaRef, batches: &[RecordBatch]| concat_batches(schema, batches).unwrap();
        let narrow_view = Arc::new(view.project(&[0, 1, 4]).unwrap());
        assert_eq!(narrow.schema(), &narrow_view);
        assert_eq!(
            all(&narrow_view, &n.rows),
            all(&view, &w.rows).project(&[0, 1, 4]).unwrap()
        );
        let late = all(&view, &n.late);
        assert_eq!(late, all(&view, &w.late));
        let expected_late = (0..3_000)
            .filter(|i| i % 11 != 5 && (i * 7_919) % 3_000 <= 1_000)
            .count();
        assert_eq!(late.num_rows(), expected_late);
        assert_eq!(late.column(3).null_count(), {
            (0..3_000)
                .filter(|i| i % 11 != 5 && i % 13 == 7 && (i * 7_919) % 3_000 <= 1_000)
                .count()
        });
        assert_eq!(n.dead_letters, w.dead_letters);
        assert_eq!(
            n.dead_letters.num_rows(),
            (0..3_000).filter(|i| i % 11 == 5).count()
        );
        let rows: usize = n.rows.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(rows + late.num_rows() + n.dead_letters.num_rows(), 3_000);
        // Without the watermark's column nothing is set apart.
        let unsplit = whole.narrowed(&[0, 1, 4]).unwrap();
        let out = unsplit.decode(&records, 3, 9, 1_000_000).unwrap();
        assert!(out.late.is_empty());
        assert_eq!(
            out.rows.iter().map(RecordBatch::num_rows).sum::<usize>(),
            3_000 - n.dead_letters.num_rows()
        );
    }
}
