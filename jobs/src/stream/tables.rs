//! Delta tables a job's SQL reads beside its stream (`[query] tables`): each is registered under
//! its name and brought up to its latest version before every batch, so a batch sees what was
//! committed before it started (a blocklist the job itself appends to included).

use datafusion::prelude::SessionContext;
use riskstream_lake::LatestTable;

use crate::error::{JobError, Result};
use crate::lake_sink::table_location;
use crate::stream::block;
use crate::stream::spec::JobSpec;

/// The tables, by SQL name.
pub struct QueryTables {
    tables: Vec<(String, LatestTable)>,
}

impl QueryTables {
    /// Opens the spec's tables and registers them in `ctx`. A table that does not exist is an
    /// error naming its key, except the job's own `[block]` table, which is created.
    pub async fn open(spec: &JobSpec, ctx: &SessionContext) -> Result<Self> {
        let same = |a: &str, b: &str| a.trim_end_matches('/') == b.trim_end_matches('/');
        let mut tables = Vec::with_capacity(spec.query.tables.len());
        for (i, t) in spec.query.tables.iter().enumerate() {
            let key = spec.key(&format!("query.tables[{i}].path"));
            if let Some(own) = spec.block.as_ref().filter(|b| same(&b.path, &t.path)) {
                block::open_table(&own.path, spec.sink.checkpoint_interval, &key).await?;
            }
            let (lake, name) = table_location(&t.path, &key)?;
            let table = LatestTable::open(&lake, &name)
                .await
                .map_err(|e| JobError::config(key, e.to_string()))?;
            tables.push((t.name.clone(), table));
        }
        let mut out = Self { tables };
        out.refresh(ctx).await?;
        Ok(out)
    }

    /// Brings every table to its latest version in `ctx`.
    pub async fn refresh(&mut self, ctx: &SessionContext) -> Result<()> {
        for (name, table) in &mut self.tables {
            let provider = table.refresh().await?;
            let sql_err = |e| JobError::sql(name.as_str(), e);
            ctx.deregister_table(name.as_str()).map_err(sql_err)?;
            ctx.register_table(name.as_str(), provider)
                .map_err(sql_err)?;
        }
        Ok(())
    }
}
