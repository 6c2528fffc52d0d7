//! How a job's tables are laid out in the lake.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, SchemaRef};
use riskstream_lake::TableSpec;

/// The spec of a table named `name` holding rows of `schema`: statistics on every column but raw
/// binary payloads (Delta keeps none for them), and Delta's defaults otherwise.
pub fn table_spec(name: &str, schema: SchemaRef, partition_by: Vec<String>) -> TableSpec {
    let binary = |f: &Arc<Field>| f.data_type() == &DataType::Binary;
    let has_binary = schema.fields().iter().any(binary);
    TableSpec {
        name: name.to_string(),
        partition_by,
        stats_columns: has_binary.then(|| {
            schema
                .fields()
                .iter()
                .filter(|f| !binary(f))
                .map(|f| f.name().clone())
                .collect()
        }),
        schema,
        merge_schema: false,
        checkpoint_interval: None,
    }
}
