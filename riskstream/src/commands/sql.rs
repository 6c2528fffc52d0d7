//! `riskstream sql`: one query over every Delta table under the lake root, through the same
//! session the Flight SQL server answers from.

use std::path::Path;

use riskstream_lake::LakeLocation;
use riskstream_lake::datafusion::dataframe::DataFrameWriteOptions;
use riskstream_query::LakeSession;

use super::CommandError;
use crate::cli::{Format, SqlArgs};
use crate::output;

pub async fn run(args: SqlArgs) -> Result<(), CommandError> {
    let query = match (&args.query, &args.file) {
        (Some(q), _) => q.clone(),
        (None, Some(path)) => {
            std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?
        }
        (None, None) => return Err("give a query, or -f FILE.sql".into()),
    };
    let format = args
        .format
        .or_else(|| args.out.as_deref().and_then(format_of))
        .unwrap_or(Format::Table);
    let lake = LakeLocation::open_existing(&args.lake)?;
    let session = LakeSession::open(lake).await?;
    let frame = session.sql(&query).await?;
    match (&args.out, format) {
        (Some(path), Format::Parquet) => {
            let target = path
                .to_str()
                .ok_or_else(|| format!("--out {}: not a UTF-8 path", path.display()))?;
            // Streams the result into one file, without holding it all in memory.
            frame
                .write_parquet(
                    target,
                    DataFrameWriteOptions::new().with_single_file_output(true),
                    None,
                )
                .await?;
        }
        (None, Format::Parquet) => {
            return Err("--format parquet writes a file: add --out FILE.parquet".into());
        }
        (Some(path), format) => {
            let batches = frame.collect().await?;
            let mut file = std::io::BufWriter::new(
                std::fs::File::create(path)
                    .map_err(|e| format!("--out {}: {e}", path.display()))?,
            );
            output::write(&mut file, &batches, format)?;
        }
        (None, format) => {
            let batches = frame.collect().await?;
            let mut stdout = std::io::stdout().lock();
            output::write(&mut stdout, &batches, format)?;
        }
    }
    Ok(())
}

/// The format an output file's extension names.
fn format_of(path: &Path) -> Option<Format> {
    match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
        "parquet" => Some(Format::Parquet),
        "csv" => Some(Format::Csv),
        "json" | "jsonl" | "ndjson" => Some(Format::Json),
        "txt" => Some(Format::Table),
        _ => None,
    }
}
