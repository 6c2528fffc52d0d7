//! The columns a decoder fills: one growable buffer per column of the declared schema, appended
//! a whole row at a time, and turned into Arrow arrays of the declared types at the end.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, BooleanBufferBuilder, Date32Array, Float64Array, Int32Array,
    Int64Array, NullBufferBuilder, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::buffer::{Buffer, OffsetBuffer};
use datafusion::arrow::datatypes::{DataType, FieldRef, TimeUnit};

use crate::error::{JobError, Result};

use super::json::Text;

/// The column types a declared schema may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Utf8,
    Float64,
    Int64,
    Int32,
    Boolean,
    Date32,
    /// Microseconds in UTC (Delta's and Spark's `timestamp`).
    Timestamp,
}

impl Kind {
    /// The kind of a field's type, or `None` for a type the decoder does not fill.
    pub fn of(data_type: &DataType) -> Option<Self> {
        Some(match data_type {
            DataType::Utf8 => Self::Utf8,
            DataType::Float64 => Self::Float64,
            DataType::Int64 => Self::Int64,
            DataType::Int32 => Self::Int32,
            DataType::Boolean => Self::Boolean,
            DataType::Date32 => Self::Date32,
            DataType::Timestamp(TimeUnit::Microsecond, Some(tz))
                if tz.as_ref() == "UTC" || tz.as_ref() == "+00:00" =>
            {
                Self::Timestamp
            }
            _ => return None,
        })
    }
}

/// One field's value in the row being read, already converted to its column's type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Slot {
    Missing,
    Null,
    Text(Text),
    F64(f64),
    I64(i64),
    I32(i32),
    Bool(bool),
}

enum Values {
    Utf8 { offsets: Vec<i32>, bytes: Vec<u8> },
    F64(Vec<f64>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    Bool(BooleanBufferBuilder),
}

/// A column being filled.
pub struct Column {
    field: FieldRef,
    nulls: NullBufferBuilder,
    values: Values,
}

impl Column {
    pub fn new(field: FieldRef, kind: Kind, capacity: usize) -> Self {
        let values = match kind {
            Kind::Utf8 => Values::Utf8 {
                offsets: {
                    let mut o = Vec::with_capacity(capacity + 1);
                    o.push(0);
                    o
                },
                bytes: Vec::with_capacity(capacity * 16),
            },
            Kind::Float64 => Values::F64(Vec::with_capacity(capacity)),
            Kind::Int64 | Kind::Timestamp => Values::I64(Vec::with_capacity(capacity)),
            Kind::Int32 | Kind::Date32 => Values::I32(Vec::with_capacity(capacity)),
            Kind::Boolean => Values::Bool(BooleanBufferBuilder::new(capacity)),
        };
        Self {
            field,
            nulls: NullBufferBuilder::new(capacity),
            values,
        }
    }

    /// Appends a value read for this column. The reader only produces slots of the column's kind
    /// (or missing and null, which append a null).
    pub fn append(&mut self, slot: Slot, message: &[u8], scratch: &[u8]) {
        let present = !matches!(slot, Slot::Missing | Slot::Null);
        if present {
            self.nulls.append_non_null();
        } else {
            self.nulls.append_null();
        }
        match &mut self.values {
            Values::Utf8 { offsets, bytes } => {
                let text = match slot {
                    Slot::Text(text) => text.bytes(message, scratch),
                    _ => &[],
                };
                bytes.extend_from_slice(text);
                // The decoder starts a new batch long before 2 GiB of text (see `mod.rs`).
                offsets.push(bytes.len() as i32);
            }
            Values::F64(v) => v.push(if let Slot::F64(x) = slot { x } else { 0.0 }),
            Values::I64(v) => v.push(if let Slot::I64(x) = slot { x } else { 0 }),
            Values::I32(v) => v.push(if let Slot::I32(x) = slot { x } else { 0 }),
            Values::Bool(v) => v.append(matches!(slot, Slot::Bool(true))),
        }
    }

    /// The column so far as an array of the field's type; the column starts again empty.
    pub fn finish(&mut self) -> Result<ArrayRef> {
        let nulls = self.nulls.finish();
        let array: ArrayRef = match &mut self.values {
            Values::Utf8 { offsets, bytes } => {
                let offsets = std::mem::replace(offsets, vec![0]);
                let bytes = std::mem::take(bytes);
                // Validates the UTF-8 once more, over the whole column at once.
                Arc::new(
                    StringArray::try_new(
                        OffsetBuffer::new(offsets.into()),
                        Buffer::from_vec(bytes),
                        nulls,
                    )
                    .map_err(JobError::arrow("building a decoded text column"))?,
                )
            }
            Values::F64(v) => Arc::new(Float64Array::new(std::mem::take(v).into(), nulls)),
            Values::I64(v) => {
                let v = std::mem::take(v).into();
                match self.field.data_type() {
                    DataType::Timestamp(..) => Arc::new(
                        TimestampMicrosecondArray::new(v, nulls)
                            .with_data_type(self.field.data_type().clone()),
                    ),
                    _ => Arc::new(Int64Array::new(v, nulls)),
                }
            }
            Values::I32(v) => {
                let v = std::mem::take(v).into();
                match self.field.data_type() {
                    DataType::Date32 => Arc::new(Date32Array::new(v, nulls)),
                    _ => Arc::new(Int32Array::new(v, nulls)),
                }
            }
            Values::Bool(v) => Arc::new(BooleanArray::new(v.finish(), nulls)),
        };
        Ok(array)
    }
}
