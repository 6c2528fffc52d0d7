//! `riskstream sql`: one query over every Delta table under the lake root.

use riskstream_jobs::scoring::session;
use riskstream_lake::{Catalog, LakeLocation};

use super::CommandError;
use crate::cli::SqlArgs;
use crate::output;

pub async fn run(args: SqlArgs) -> Result<(), CommandError> {
    let query = match (&args.query, &args.file) {
        (Some(q), _) => q.clone(),
        (None, Some(path)) => {
            std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?
        }
        (None, None) => return Err("give a query, or -f FILE.sql".into()),
    };
    let lake = LakeLocation::open_existing(&args.lake)?;
    let ctx = session()?;
    let tables = Catalog::new(lake.clone()).register_all(&ctx).await?;
    let frame = ctx
        .sql(&riskstream_udfs::spark_sql(&query))
        .await
        .map_err(|e| {
            let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
            format!(
                "{e}\n(tables under {lake}: {})",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            )
        })?;
    let batches = frame.collect().await?;
    let mut stdout = std::io::stdout().lock();
    output::write(&mut stdout, &batches, args.format)?;
    Ok(())
}
