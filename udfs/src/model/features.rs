//! Feature values as the tree models read them: one row-major block of `f32`, a row's features
//! side by side, with a missing value (SQL NULL, or NaN) as NaN. XGBoost reads its input as
//! `f32` too, so thresholds compare exactly as they did in training.

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float32Type, Float64Type};
use datafusion::common::{Result, plan_err};

/// Rows of feature values, row-major.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FeatureMatrix {
    values: Vec<f32>,
    width: usize,
}

impl FeatureMatrix {
    /// A matrix over `values`, `width` values a row.
    pub fn from_rows(values: Vec<f32>, width: usize) -> Result<Self> {
        if width == 0 || !values.len().is_multiple_of(width) {
            return plan_err!(
                "{} feature values do not make rows of {width} features",
                values.len()
            );
        }
        Ok(Self { values, width })
    }

    /// A matrix with one column per array, in order. Numbers and booleans (as 1 and 0) are read
    /// as `f32`; NULL is missing.
    pub fn from_columns(columns: &[ArrayRef], names: &[String]) -> Result<Self> {
        let width = columns.len();
        let rows = columns.first().map_or(0, |c| c.len());
        if width == 0 {
            return plan_err!("a model needs at least one feature");
        }
        let mut values = vec![0.0; rows * width];
        for (col, array) in columns.iter().enumerate() {
            let name = names.get(col).map_or("?", String::as_str);
            if !is_feature_type(array.data_type()) {
                return plan_err!(
                    "feature `{name}` is {}; models read numbers and booleans (encode categories as integer codes)",
                    array.data_type()
                );
            }
            // Doubles, the usual case, are converted in place rather than cast to a new array.
            match array.data_type() {
                DataType::Float64 => {
                    let doubles = array.as_primitive::<Float64Type>();
                    scatter(
                        doubles.values().iter().map(|v| *v as f32),
                        &mut values,
                        width,
                        col,
                    );
                    mark_nulls(array.as_ref(), &mut values, width, col);
                }
                _ => {
                    let floats = cast(array, &DataType::Float32)?;
                    let floats = floats.as_primitive::<Float32Type>();
                    scatter(floats.values().iter().copied(), &mut values, width, col);
                    mark_nulls(floats, &mut values, width, col);
                }
            }
        }
        Ok(Self { values, width })
    }

    /// Features in a row.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.values.len() / self.width.max(1)
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.width..(i + 1) * self.width]
    }

    /// Every value, row by row.
    pub fn values(&self) -> &[f32] {
        &self.values
    }
}

/// Writes a column's values into column `col` of row-major `values`.
fn scatter(column: impl Iterator<Item = f32>, values: &mut [f32], width: usize, col: usize) {
    for (slot, value) in values.iter_mut().skip(col).step_by(width).zip(column) {
        *slot = value;
    }
}

/// Sets the column's NULL rows to NaN, the missing value.
fn mark_nulls(array: &dyn Array, values: &mut [f32], width: usize, col: usize) {
    if let Some(nulls) = array.logical_nulls() {
        for row in nulls
            .iter()
            .enumerate()
            .filter(|(_, valid)| !valid)
            .map(|(r, _)| r)
        {
            values[row * width + col] = f32::NAN;
        }
    }
}

/// Types a feature column may have.
pub fn is_feature_type(data_type: &DataType) -> bool {
    data_type.is_numeric() || matches!(data_type, DataType::Boolean | DataType::Null)
}

#[cfg(test)]
#[expect(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{BooleanArray, Float64Array, Int64Array, StringArray};

    use super::*;

    #[test]
    fn columns_become_rows_with_nulls_as_nan() {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Float64Array::from(vec![Some(1.5), None])),
            Arc::new(Int64Array::from(vec![Some(7), Some(-2)])),
            Arc::new(BooleanArray::from(vec![Some(true), None])),
        ];
        let names = vec!["a".into(), "b".into(), "c".into()];
        let m = FeatureMatrix::from_columns(&columns, &names).unwrap();
        assert_eq!((m.rows(), m.width()), (2, 3));
        assert_eq!(m.row(0), &[1.5, 7.0, 1.0]);
        assert!(m.row(1)[0].is_nan() && m.row(1)[2].is_nan());
        assert_eq!(m.row(1)[1], -2.0);
    }

    #[test]
    fn text_features_are_refused_by_name() {
        let columns: Vec<ArrayRef> = vec![Arc::new(StringArray::from(vec!["x"]))];
        let err = FeatureMatrix::from_columns(&columns, &["merchant".into()]).unwrap_err();
        assert!(err.to_string().contains("`merchant`"), "{err}");
    }
}
