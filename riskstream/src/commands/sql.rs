//! `riskstream sql`: statements over every Delta table under the lake root, through the same
//! session the Flight SQL server answers from. A query, a file of statements, statements piped
//! on standard input, or (on a terminal, with none of these) an interactive shell.

use std::io::{IsTerminal, Read};
use std::path::Path;
use std::time::Instant;

use riskstream_lake::LakeLocation;
use riskstream_lake::datafusion::dataframe::DataFrameWriteOptions;
use riskstream_query::LakeSession;
use riskstream_query::dialect::split_statements;

use super::CommandError;
use super::shell;
use crate::cli::{Format, SqlArgs};
use crate::output;

pub async fn run(args: SqlArgs) -> Result<(), CommandError> {
    let format = args
        .format
        .or_else(|| args.out.as_deref().and_then(format_of))
        .unwrap_or(Format::Table);
    let text = match (&args.query, &args.file) {
        (Some(q), _) => Some(q.clone()),
        (None, Some(path)) => {
            Some(std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?)
        }
        (None, None) if std::io::stdin().is_terminal() => None,
        (None, None) => {
            let mut piped = String::new();
            std::io::stdin().read_to_string(&mut piped)?;
            Some(piped)
        }
    };
    let lake = LakeLocation::open_existing(&args.lake)?;
    let session = LakeSession::open(lake).await?;
    let Some(text) = text else {
        if args.out.is_some() {
            return Err("--out needs a query (or -f FILE.sql)".into());
        }
        return shell::run(&session, format).await;
    };
    let (mut statements, rest) = split_statements(&text);
    if !rest.trim().is_empty() {
        statements.push(rest.trim().to_string());
    }
    if statements.is_empty() {
        return Err("no SQL statement given".into());
    }
    if statements.len() > 1 && args.out.is_some() {
        return Err(format!(
            "--out takes the result of one statement; {} were given",
            statements.len()
        )
        .into());
    }
    for statement in &statements {
        execute(&session, statement, format, args.out.as_deref(), false).await?;
    }
    Ok(())
}

/// Runs one statement and writes its result to `out` (a file) or standard output.
pub async fn execute(
    session: &LakeSession,
    statement: &str,
    format: Format,
    out: Option<&Path>,
    timing: bool,
) -> Result<(), CommandError> {
    let started = Instant::now();
    let frame = session.sql(statement).await?;
    match (out, format) {
        (Some(path), Format::Parquet) => {
            let target = utf8(path)?;
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
    if timing {
        println!("Time: {:.3} s", started.elapsed().as_secs_f64());
    }
    Ok(())
}

fn utf8(path: &Path) -> Result<&str, CommandError> {
    path.to_str()
        .ok_or_else(|| format!("--out {}: not a UTF-8 path", path.display()).into())
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
