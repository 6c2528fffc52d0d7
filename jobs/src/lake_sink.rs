//! How a job's tables are laid out in the lake.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, SchemaRef};
use riskstream_lake::{LakeLocation, TableSpec};

use crate::error::{JobError, Result};

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
        compression: Default::default(),
    }
}

/// Splits a table path into the lake it lives in and its folder name.
pub fn table_location(path: &str, key: &str) -> Result<(LakeLocation, String)> {
    let trimmed = path.trim_end_matches('/');
    let (parent, name) = match trimmed.rsplit_once('/') {
        Some((parent, name)) if !parent.ends_with(":/") => (parent.to_string(), name.to_string()),
        Some(_) => {
            return Err(JobError::config(
                key,
                format!("`{path}` names a bucket, not a table inside it"),
            ));
        }
        None => (".".to_string(), trimmed.to_string()),
    };
    let lake = LakeLocation::parse(if parent.is_empty() { "/" } else { &parent })
        .map_err(|e| JobError::config(key, e.to_string()))?;
    Ok((lake, name))
}
