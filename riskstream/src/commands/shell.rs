//! The interactive SQL shell of `riskstream sql`: line editing and history (rustyline),
//! statements over several lines until `;`, and backslash commands for the lake.

use std::path::PathBuf;
use std::time::Instant;

use riskstream_lake::arrow::array::{RecordBatch, StringArray};
use riskstream_lake::arrow::datatypes::{DataType, Field, Schema};
use riskstream_query::LakeSession;
use riskstream_query::dialect::split_statements;
use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;

use super::CommandError;
use super::sql::execute;
use crate::cli::Format;
use crate::output;

const HELP: &str = "\
Statements end with ; and may span lines. Spark SQL, time travel (FROM t VERSION AS OF 3,
TIMESTAMP AS OF '2026-11-29 10:00:00') and DESCRIBE HISTORY t work; the lake is read-only.
  \\dt          list the tables
  \\d TABLE     describe a table's columns
  \\timing      show or hide how long each statement takes
  \\q           quit (or Ctrl-D); Ctrl-C drops the statement being typed";

pub async fn run(session: &LakeSession, format: Format) -> Result<(), CommandError> {
    let mut editor = DefaultEditor::new()?;
    let history = history_file();
    if let Some(path) = &history {
        // A first session has no history yet.
        let _ = editor.load_history(path);
    }
    println!(
        "riskstream sql over {} ({} tables). \\? for help, \\q to quit.",
        session.lake(),
        session.tables().await?.len()
    );
    let mut pending = String::new();
    let mut timing = false;
    loop {
        let prompt = if pending.is_empty() {
            "riskstream> "
        } else {
            "         -> "
        };
        let line = match editor.readline(prompt) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => {
                pending.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        };
        if pending.is_empty() && line.trim_start().starts_with('\\') {
            let _ = editor.add_history_entry(line.as_str());
            match backslash(session, line.trim(), &mut timing).await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => eprintln!("error: {e}"),
            }
            continue;
        }
        pending.push_str(&line);
        pending.push('\n');
        let (statements, rest) = split_statements(&pending);
        for statement in statements {
            let _ = editor.add_history_entry(format!("{statement};"));
            if let Err(e) = execute(session, &statement, format, None, timing).await {
                eprintln!("error: {e}");
            }
        }
        pending = rest.trim_start().to_string();
    }
    if let Some(path) = &history {
        let _ = editor.save_history(path);
    }
    Ok(())
}

/// Runs a backslash command; true to quit.
async fn backslash(
    session: &LakeSession,
    command: &str,
    timing: &mut bool,
) -> Result<bool, CommandError> {
    let mut words = command.split_whitespace();
    match (words.next(), words.next()) {
        (Some("\\q" | "\\quit"), _) => return Ok(true),
        (Some("\\?" | "\\h" | "\\help"), _) => println!("{HELP}"),
        (Some("\\timing"), _) => {
            *timing = !*timing;
            println!("Timing is {}.", if *timing { "on" } else { "off" });
        }
        (Some("\\dt"), _) => {
            let started = Instant::now();
            let tables = session.tables().await?;
            let batch = RecordBatch::try_new(
                std::sync::Arc::new(Schema::new(vec![
                    Field::new("table", DataType::Utf8, false),
                    Field::new("location", DataType::Utf8, false),
                ])),
                vec![
                    std::sync::Arc::new(StringArray::from_iter_values(
                        tables.iter().map(|t| t.name.as_str()),
                    )),
                    std::sync::Arc::new(StringArray::from_iter_values(
                        tables.iter().map(|t| t.url.to_string()),
                    )),
                ],
            )?;
            output::write(&mut std::io::stdout().lock(), &[batch], Format::Table)?;
            if *timing {
                println!("Time: {:.3} s", started.elapsed().as_secs_f64());
            }
        }
        (Some("\\d"), Some(table)) => {
            let schema = session.table_schema(table).await?;
            let batch = RecordBatch::try_new(
                std::sync::Arc::new(Schema::new(vec![
                    Field::new("column", DataType::Utf8, false),
                    Field::new("type", DataType::Utf8, false),
                    Field::new("nullable", DataType::Utf8, false),
                ])),
                vec![
                    std::sync::Arc::new(StringArray::from_iter_values(
                        schema.fields().iter().map(|f| f.name().clone()),
                    )),
                    std::sync::Arc::new(StringArray::from_iter_values(
                        schema.fields().iter().map(|f| f.data_type().to_string()),
                    )),
                    std::sync::Arc::new(StringArray::from_iter_values(
                        schema
                            .fields()
                            .iter()
                            .map(|f| if f.is_nullable() { "yes" } else { "no" }),
                    )),
                ],
            )?;
            output::write(&mut std::io::stdout().lock(), &[batch], Format::Table)?;
        }
        (Some("\\d"), None) => return Err("\\d TABLE: name the table (\\dt lists them)".into()),
        (Some(other), _) => return Err(format!("unknown command {other}; \\? lists them").into()),
        (None, _) => {}
    }
    Ok(false)
}

/// Where the shell keeps its history: `$HOME/.riskstream_history`.
fn history_file() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".riskstream_history"))
}
