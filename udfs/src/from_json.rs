//! Spark's `from_json(jsonStr, schema)`: parses a JSON object per row into a struct of the DDL
//! schema (`'a STRING, b DOUBLE'`), so Structured Streaming queries over Kafka's raw `value`
//! column (`from_json(CAST(value AS STRING), ...)`) run as they are.
//!
//! As in Spark's default PERMISSIVE mode, a row that is not one JSON object gives NULL and a field
//! whose value has the wrong type is NULL; nothing fails the query. Rows are decoded in segments
//! by arrow-json; a segment holding a bad row is decoded again row by row.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StructArray, UInt32Array};
use datafusion::arrow::compute::{cast, concat, take};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields, Schema, SchemaRef};
use datafusion::arrow::json::ReaderBuilder;
use datafusion::common::{Result, ScalarValue, exec_err, internal_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use crate::ddl::parse_ddl_schema;

/// Rows decoded together before a bad row sends them down the row-by-row path.
const SEGMENT_ROWS: usize = 1024;

/// The `from_json` function.
#[derive(Debug)]
pub struct FromJsonUdf {
    signature: Signature,
}

impl Default for FromJsonUdf {
    fn default() -> Self {
        Self {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl PartialEq for FromJsonUdf {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for FromJsonUdf {}

impl Hash for FromJsonUdf {
    fn hash<H: Hasher>(&self, state: &mut H) {
        "from_json".hash(state);
    }
}

fn literal_schema(value: Option<&ScalarValue>) -> Result<Fields> {
    let text = match value {
        Some(ScalarValue::Utf8(Some(s)))
        | Some(ScalarValue::LargeUtf8(Some(s)))
        | Some(ScalarValue::Utf8View(Some(s))) => s,
        _ => {
            return plan_err!(
                "from_json takes the schema as a string literal, such as 'a STRING, b DOUBLE'"
            );
        }
    };
    parse_ddl_schema(text).or_else(|e| plan_err!("from_json: {e}"))
}

impl ScalarUDFImpl for FromJsonUdf {
    fn name(&self) -> &str {
        "from_json"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        internal_err!("from_json's type comes from its schema argument (return_field_from_args)")
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let Some(input) = args.arg_fields.first() else {
            return plan_err!("from_json takes a JSON string and a schema");
        };
        if !matches!(
            input.data_type(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null
        ) {
            return plan_err!(
                "from_json takes a string, not {} (write from_json(CAST(value AS STRING), ...))",
                input.data_type()
            );
        }
        let fields = literal_schema(args.scalar_arguments.get(1).copied().flatten())?;
        Ok(Arc::new(Field::new(
            self.name(),
            DataType::Struct(fields),
            true,
        )))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let DataType::Struct(fields) = args.return_field.data_type() else {
            return internal_err!("from_json returns a struct");
        };
        let Some(input) = args.args.first() else {
            return exec_err!("from_json takes a JSON string and a schema");
        };
        let strings = cast(&input.to_array(args.number_rows)?, &DataType::Utf8)?;
        let schema = Arc::new(Schema::new(fields.clone()));
        let mut parts: Vec<ArrayRef> = Vec::new();
        let mut start = 0;
        while start < strings.len() {
            let len = SEGMENT_ROWS.min(strings.len() - start);
            parts.push(decode_segment(&schema, &strings.slice(start, len))?);
            start += len;
        }
        let out = if parts.is_empty() {
            Arc::new(StructArray::new_null(fields.clone(), 0))
        } else {
            let refs: Vec<&dyn Array> = parts.iter().map(|a| a.as_ref()).collect();
            concat(&refs)?
        };
        Ok(ColumnarValue::Array(out))
    }
}

/// Decodes one JSON object, or `None` when the text is not exactly one object.
fn decode_one(schema: &SchemaRef, text: &str) -> Option<ArrayRef> {
    let mut decoder = ReaderBuilder::new(Arc::clone(schema))
        .with_ignore_type_conflicts(true)
        .build_decoder()
        .ok()?;
    decoder.decode(text.as_bytes()).ok()?;
    if decoder.has_partial_record() || decoder.len() != 1 {
        return None;
    }
    let batch = decoder.flush().ok()??;
    Some(Arc::new(StructArray::from(batch)))
}

/// Decodes a segment of rows: all together when every row is one object, else row by row.
fn decode_segment(schema: &SchemaRef, strings: &ArrayRef) -> Result<ArrayRef> {
    let strings = strings.as_string::<i32>();
    let fields = schema.fields().clone();
    // Row i of the output takes row indices[i] of the decoded rows, or NULL.
    let mut indices: Vec<Option<u32>> = Vec::with_capacity(strings.len());
    let mut fed = 0u32;
    let mut decoder = ReaderBuilder::new(Arc::clone(schema))
        .with_batch_size(strings.len().max(1))
        .with_ignore_type_conflicts(true)
        .build_decoder()?;
    let mut clean = true;
    for i in 0..strings.len() {
        if strings.is_null(i) || strings.value(i).trim().is_empty() {
            indices.push(None);
            continue;
        }
        let before = decoder.len();
        let ok = decoder.decode(strings.value(i).as_bytes()).is_ok()
            && !decoder.has_partial_record()
            && decoder.len() == before + 1;
        if !ok {
            clean = false;
            break;
        }
        indices.push(Some(fed));
        fed += 1;
    }
    if clean && let Ok(batch) = decoder.flush() {
        let decoded: ArrayRef = match batch {
            Some(b) => Arc::new(StructArray::from(b)),
            None => Arc::new(StructArray::new_null(fields, 0)),
        };
        return Ok(take(&decoded, &UInt32Array::from(indices), None)?);
    }
    // Row by row: each bad row becomes NULL.
    let mut rows: Vec<ArrayRef> = Vec::new();
    let mut indices: Vec<Option<u32>> = Vec::with_capacity(strings.len());
    for i in 0..strings.len() {
        let one = if strings.is_null(i) {
            None
        } else {
            decode_one(schema, strings.value(i))
        };
        match one {
            Some(row) => {
                indices.push(Some(rows.len() as u32));
                rows.push(row);
            }
            None => indices.push(None),
        }
    }
    let decoded: ArrayRef = if rows.is_empty() {
        Arc::new(StructArray::new_null(fields, 0))
    } else {
        let refs: Vec<&dyn Array> = rows.iter().map(|a| a.as_ref()).collect();
        concat(&refs)?
    };
    Ok(take(&decoded, &UInt32Array::from(indices), None)?)
}

#[cfg(test)]
#[expect(clippy::unwrap_used)]
mod tests {
    use datafusion::arrow::array::{Float64Array, StringArray};
    use datafusion::arrow::datatypes::Float64Type;
    use datafusion::logical_expr::ScalarUDF;
    use datafusion::prelude::SessionContext;

    use super::*;

    #[tokio::test]
    async fn parses_rows_like_sparks_permissive_mode() {
        let ctx = SessionContext::new();
        ctx.register_udf(ScalarUDF::new_from_impl(FromJsonUdf::default()));
        let values = StringArray::from(vec![
            Some(r#"{"id":"a","amount":1.5}"#),
            Some(r#"{"id":"b","amount":"lots"}"#),
            Some(r#"{"id":"c""#),
            None,
            Some(""),
            Some(r#"{"id":"d","amount":4} {"id":"e"}"#),
            Some(r#"{"id":"f","amount":6,"extra":[1]}"#),
        ]);
        let batch = datafusion::arrow::array::RecordBatch::try_from_iter(vec![(
            "value",
            Arc::new(values) as ArrayRef,
        )])
        .unwrap();
        ctx.register_batch("kafka", batch).unwrap();
        let out = ctx
            .sql("SELECT from_json(value, 'id STRING, amount DOUBLE') AS e FROM kafka")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let e = out[0].column(0).as_struct();
        assert_eq!(e.len(), 7);
        let valid: Vec<bool> = (0..7).map(|i| e.is_valid(i)).collect();
        assert_eq!(valid, [true, true, false, false, false, false, true]);
        let ids = e.column(0).as_string::<i32>();
        assert_eq!((ids.value(0), ids.value(1), ids.value(6)), ("a", "b", "f"));
        let amounts: &Float64Array = e.column(1).as_primitive::<Float64Type>();
        assert_eq!(amounts.value(0), 1.5);
        assert!(amounts.is_null(1), "a wrong type is NULL");
        assert_eq!(amounts.value(6), 6.0);

        let err = ctx
            .sql("SELECT from_json(value, 'id STRNG') FROM kafka")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("STRNG"), "{err}");
    }
}
