//! Query results on standard output: an aligned table, CSV or JSON lines.

use std::io::Write;

use riskstream_lake::arrow::array::RecordBatch;
use riskstream_lake::arrow::error::ArrowError;
use riskstream_lake::arrow::util::display::{ArrayFormatter, FormatOptions};
use riskstream_lake::arrow::util::pretty::pretty_format_batches;

use crate::cli::Format;

/// Writes `batches` in `format`.
pub fn write(
    out: &mut impl Write,
    batches: &[RecordBatch],
    format: Format,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    match format {
        Format::Table => {
            writeln!(out, "{}", pretty_format_batches(batches)?)?;
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            writeln!(out, "{rows} row{}", if rows == 1 { "" } else { "s" })?;
        }
        Format::Csv => write_csv(out, batches)?,
        Format::Parquet => {
            return Err("Parquet is written to a file (--out), not a stream".into());
        }
        Format::Json => {
            let mut writer = riskstream_lake::arrow::json::LineDelimitedWriter::new(out);
            let refs: Vec<&RecordBatch> = batches.iter().collect();
            writer.write_batches(&refs)?;
            writer.finish()?;
        }
    }
    Ok(())
}

/// CSV through arrow's display formatting, so nested columns (lists of reasons) print as `[a, b]`
/// instead of failing as arrow's CSV writer would.
fn write_csv(
    out: &mut impl Write,
    batches: &[RecordBatch],
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let Some(first) = batches.first() else {
        return Ok(());
    };
    let header: Vec<String> = first
        .schema()
        .fields()
        .iter()
        .map(|f| quote(f.name()))
        .collect();
    writeln!(out, "{}", header.join(","))?;
    let options = FormatOptions::default();
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, ArrowError>>()?;
        for row in 0..batch.num_rows() {
            let cells: Vec<String> = formatters
                .iter()
                .map(|f| quote(&f.value(row).to_string()))
                .collect();
            writeln!(out, "{}", cells.join(","))?;
        }
    }
    Ok(())
}

fn quote(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
