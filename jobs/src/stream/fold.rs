//! Per-group running values of a streaming aggregation's partial aggregates (counts, sums,
//! minima, maxima), each group in a numbered slot, updated in place as rows arrive: the columns
//! of [`partial`](crate::stream::partial)'s keyed table.

use std::sync::Arc;

use datafusion::arrow::array::downcast_primitive;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, PrimitiveArray};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{ArrowNativeTypeOp, ArrowPrimitiveType, DataType};

use crate::error::{JobError, Result};

/// How a column folds a value into its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Rows counted (their non-null values); partial counts added.
    Count,
    /// Values added, wrapping on overflow as DataFusion's `sum` does.
    Sum,
    /// The least value, floats in IEEE total order as DataFusion's `min` compares them.
    Min,
    /// The greatest value.
    Max,
}

/// One partial column: a value per slot.
pub trait FoldColumn: Send + Sync + std::fmt::Debug {
    /// Folds `values[i]` into slot `slots[i]`. `partial` values are partial aggregates (a
    /// snapshot's), which a count adds rather than counts.
    fn fold(&mut self, values: &ArrayRef, slots: &[u32], partial: bool) -> Result<()>;
    /// Makes room for `slots` slots; new slots hold nothing yet.
    fn grow(&mut self, slots: usize);
    /// Empties `slot` for another group.
    fn clear(&mut self, slot: u32);
    /// The values of `slots`, in order.
    fn take(&self, slots: &[u32]) -> ArrayRef;
    /// Bytes held.
    fn bytes(&self) -> usize;
}

/// A column for `op` over values of `data_type` (the partial's type: a sum's result type, an
/// extreme's argument type); `None` for types it does not fold.
pub fn column(op: Op, data_type: &DataType) -> Option<Box<dyn FoldColumn>> {
    if op == Op::Count {
        return Some(Box::new(Counts::default()));
    }
    if op == Op::Sum
        && !matches!(
            data_type,
            DataType::Int64 | DataType::UInt64 | DataType::Float64
        )
    {
        // Decimal sums widen and check their precision: left to the rows' path.
        return None;
    }
    macro_rules! typed {
        ($t:ty, op, data_type) => {
            Some(Box::new(Values::<$t>::new(op, data_type.clone())) as Box<dyn FoldColumn>)
        };
    }
    downcast_primitive! {
        data_type => (typed, op, data_type),
        _ => None
    }
}

/// Counts per slot.
#[derive(Debug, Default)]
struct Counts {
    counts: Vec<i64>,
}

impl FoldColumn for Counts {
    fn fold(&mut self, values: &ArrayRef, slots: &[u32], partial: bool) -> Result<()> {
        if partial {
            let values = values
                .as_primitive_opt::<datafusion::arrow::datatypes::Int64Type>()
                .ok_or_else(|| JobError::internal("a partial count is not an Int64".into()))?;
            for (i, &slot) in slots.iter().enumerate() {
                if values.is_valid(i) {
                    self.counts[slot as usize] += values.value(i);
                }
            }
        } else if values.null_count() == 0 {
            for &slot in slots {
                self.counts[slot as usize] += 1;
            }
        } else {
            for (i, &slot) in slots.iter().enumerate() {
                self.counts[slot as usize] += i64::from(values.is_valid(i));
            }
        }
        Ok(())
    }

    fn grow(&mut self, slots: usize) {
        self.counts.resize(slots, 0);
    }

    fn clear(&mut self, slot: u32) {
        self.counts[slot as usize] = 0;
    }

    fn take(&self, slots: &[u32]) -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(
            slots.iter().map(|&s| self.counts[s as usize]),
        ))
    }

    fn bytes(&self) -> usize {
        self.counts.capacity() * size_of::<i64>()
    }
}

/// Sums or extremes per slot, null until a value arrives.
struct Values<T: ArrowPrimitiveType> {
    op: Op,
    data_type: DataType,
    values: Vec<T::Native>,
    set: Vec<bool>,
}

impl<T: ArrowPrimitiveType> std::fmt::Debug for Values<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Values")
            .field("op", &self.op)
            .field("data_type", &self.data_type)
            .field("slots", &self.values.len())
            .finish()
    }
}

impl<T: ArrowPrimitiveType> Values<T> {
    fn new(op: Op, data_type: DataType) -> Self {
        Self {
            op,
            data_type,
            values: Vec::new(),
            set: Vec::new(),
        }
    }

    fn fold_one(&mut self, slot: u32, value: T::Native) {
        let s = slot as usize;
        if !self.set[s] {
            self.set[s] = true;
            self.values[s] = value;
            return;
        }
        let held = &mut self.values[s];
        match self.op {
            Op::Sum => *held = held.add_wrapping(value),
            Op::Min => {
                if value.is_lt(*held) {
                    *held = value;
                }
            }
            Op::Max => {
                if value.is_gt(*held) {
                    *held = value;
                }
            }
            Op::Count => {}
        }
    }
}

impl<T: ArrowPrimitiveType> FoldColumn for Values<T> {
    fn fold(&mut self, values: &ArrayRef, slots: &[u32], _partial: bool) -> Result<()> {
        // Row values arrive in the argument's type (an Int32 summed as an Int64).
        let values = if values.data_type() == &self.data_type {
            Arc::clone(values)
        } else {
            cast(values, &self.data_type).map_err(JobError::arrow("folding aggregates"))?
        };
        let values = values
            .as_primitive_opt::<T>()
            .ok_or_else(|| JobError::internal(format!("a {} partial", self.data_type)))?;
        if values.null_count() == 0 {
            for (&slot, &value) in slots.iter().zip(values.values().iter()) {
                self.fold_one(slot, value);
            }
        } else {
            for (i, &slot) in slots.iter().enumerate() {
                if values.is_valid(i) {
                    self.fold_one(slot, values.value(i));
                }
            }
        }
        Ok(())
    }

    fn grow(&mut self, slots: usize) {
        self.values.resize(slots, T::Native::default());
        self.set.resize(slots, false);
    }

    fn clear(&mut self, slot: u32) {
        self.set[slot as usize] = false;
        self.values[slot as usize] = T::Native::default();
    }

    fn take(&self, slots: &[u32]) -> ArrayRef {
        let values: Vec<T::Native> = slots.iter().map(|&s| self.values[s as usize]).collect();
        let nulls = NullBuffer::from_iter(slots.iter().map(|&s| self.set[s as usize]));
        let nulls = (nulls.null_count() > 0).then_some(nulls);
        Arc::new(
            PrimitiveArray::<T>::new(values.into(), nulls).with_data_type(self.data_type.clone()),
        )
    }

    fn bytes(&self) -> usize {
        self.values.capacity() * size_of::<T::Native>() + self.set.capacity()
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Float64Array, Int32Array, TimestampMicrosecondArray};

    fn run(op: Op, data_type: DataType, values: ArrayRef, slots: &[u32], n: usize) -> ArrayRef {
        let mut column = column(op, &data_type).unwrap();
        column.grow(n);
        column.fold(&values, slots, false).unwrap();
        column.take(&(0..n as u32).collect::<Vec<_>>())
    }

    #[test]
    fn sums_widen_and_skip_nulls_and_an_empty_slot_is_null() {
        let values: ArrayRef = Arc::new(Int32Array::from(vec![Some(1), None, Some(5), Some(7)]));
        let out = run(Op::Sum, DataType::Int64, values, &[0, 0, 1, 0], 3);
        assert_eq!(
            out.as_primitive::<datafusion::arrow::datatypes::Int64Type>(),
            &Int64Array::from(vec![Some(8), Some(5), None])
        );
    }

    #[test]
    fn extremes_order_floats_as_datafusion_does_and_keep_the_type() {
        let values: ArrayRef = Arc::new(Float64Array::from(vec![2.0, f64::NAN, -1.0, 3.0]));
        let max = run(
            Op::Max,
            DataType::Float64,
            Arc::clone(&values),
            &[0, 0, 1, 1],
            2,
        );
        let max = max.as_primitive::<datafusion::arrow::datatypes::Float64Type>();
        assert!(
            max.value(0).is_nan(),
            "NaN is the greatest, as in DataFusion"
        );
        assert_eq!(max.value(1), 3.0);
        let min = run(Op::Min, DataType::Float64, values, &[0, 0, 1, 1], 2);
        let min = min.as_primitive::<datafusion::arrow::datatypes::Float64Type>();
        assert_eq!((min.value(0), min.value(1)), (2.0, -1.0));

        let utc = DataType::Timestamp(
            datafusion::arrow::datatypes::TimeUnit::Microsecond,
            Some("UTC".into()),
        );
        let times: ArrayRef =
            Arc::new(TimestampMicrosecondArray::from(vec![5, 3, 9]).with_timezone("UTC"));
        let first = run(Op::Min, utc.clone(), times, &[0, 0, 0], 1);
        assert_eq!(first.data_type(), &utc);
    }

    #[test]
    fn counts_count_rows_and_add_partials_and_cleared_slots_start_over() {
        let mut counts = column(Op::Count, &DataType::Int64).unwrap();
        counts.grow(2);
        let rows: ArrayRef = Arc::new(Int32Array::from(vec![Some(1), None, Some(1)]));
        counts.fold(&rows, &[0, 0, 1], false).unwrap();
        let partials: ArrayRef = Arc::new(Int64Array::from(vec![10, 20]));
        counts.fold(&partials, &[1, 1], true).unwrap();
        counts.clear(0);
        let out = counts.take(&[0, 1]);
        assert_eq!(
            out.as_primitive::<datafusion::arrow::datatypes::Int64Type>(),
            &Int64Array::from(vec![0, 31])
        );
    }

    #[test]
    fn types_it_does_not_fold_are_refused() {
        assert!(column(Op::Max, &DataType::Utf8).is_none());
        assert!(column(Op::Sum, &DataType::Decimal128(38, 2)).is_none());
        assert!(column(Op::Sum, &DataType::Float64).is_some());
    }
}
