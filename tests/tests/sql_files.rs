//! SQL-file tests: every `tests/sql/*.slt` (sqllogictest format) runs against a session with the
//! functions the jobs and `riskstream sql` use, its SQL read as they read it (Spark's
//! `window.start` rewritten first). Values are printed as arrow prints them; NULL as `NULL`.

#![expect(clippy::unwrap_used)]

use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use sqllogictest::{DBOutput, DefaultColumnType};

struct Session(SessionContext);

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for Session {
    type Error = DataFusionError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, DataFusionError> {
        let sql = riskstream_udfs::spark_sql(sql);
        let df = self.0.sql(&sql).await?;
        let types = df
            .schema()
            .fields()
            .iter()
            .map(|f| {
                if f.data_type().is_integer() {
                    DefaultColumnType::Integer
                } else if f.data_type().is_floating() {
                    DefaultColumnType::FloatingPoint
                } else {
                    DefaultColumnType::Text
                }
            })
            .collect();
        let batches = df.collect().await?;
        let options = FormatOptions::default().with_null("NULL");
        let mut rows = Vec::new();
        for batch in &batches {
            let formatters: Vec<ArrayFormatter> = batch
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
                .collect::<Result<_, _>>()?;
            for row in 0..batch.num_rows() {
                rows.push(
                    formatters
                        .iter()
                        .map(|f| f.value(row).to_string())
                        .collect(),
                );
            }
        }
        if batches.is_empty()
            && rows.is_empty()
            && sql.trim_start().to_ascii_lowercase().starts_with("create")
        {
            return Ok(DBOutput::StatementComplete(0));
        }
        Ok(DBOutput::Rows { types, rows })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "riskstream"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_files() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/sql");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    for file in files {
        let mut runner = sqllogictest::Runner::new(|| async {
            Ok(Session(riskstream_jobs::scoring::session().unwrap()))
        });
        let result = runner.run_file_async(&file).await;
        assert!(
            result.is_ok(),
            "{}: {}",
            file.display(),
            result.unwrap_err()
        );
    }
}
