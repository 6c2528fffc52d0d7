//! Delta tables a job's SQL reads beside its stream (`[query] tables`): each is registered under
//! its name and brought up to its latest version before every batch, so a batch sees what was
//! committed before it started (a blocklist the job itself appends to included). The versions a
//! batch read are recorded in the checkpoint before its query runs, and a replay of the batch
//! reads those versions: it computes, writes and publishes what the first run did, even when the
//! first run's own blocks were committed before the crash.

use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::prelude::SessionContext;
use riskstream_lake::LatestTable;

use crate::error::{JobError, Result};
use crate::lake_sink::table_location;
use crate::stream::block;
use crate::stream::checkpoint::Checkpoint;
use crate::stream::spec::JobSpec;

/// The tables, by SQL name.
pub struct QueryTables {
    tables: Vec<(String, LatestTable)>,
    /// Whether one of them is a table the job writes (its block list, say).
    reads_own: bool,
}

impl QueryTables {
    /// Opens the spec's tables and registers them in `ctx`. A table that does not exist is an
    /// error naming its key, except the job's own `[block]` table, which is created.
    pub async fn open(spec: &JobSpec, ctx: &SessionContext) -> Result<Self> {
        let same = |a: &str, b: &str| a.trim_end_matches('/') == b.trim_end_matches('/');
        let mut tables = Vec::with_capacity(spec.query.tables.len());
        let sink = &spec.sink;
        let written: Vec<&str> = [&sink.path, &sink.dead_letter_path, &sink.late_events_path]
            .into_iter()
            .map(String::as_str)
            .chain(spec.alerts.iter().filter_map(|a| a.table_path.as_deref()))
            .chain(spec.block.iter().map(|b| b.path.as_str()))
            .collect();
        let mut reads_own = false;
        for (i, t) in spec.query.tables.iter().enumerate() {
            reads_own |= written.iter().any(|w| same(w, &t.path));
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
        // Registered now so that the query plans; each batch registers the versions it reads.
        let mut out = Self { tables, reads_own };
        out.refresh(ctx).await?;
        Ok(out)
    }

    /// Whether the query reads a table the job writes: then each batch must see what the batch
    /// before it committed there.
    pub fn reads_own_tables(&self) -> bool {
        self.reads_own
    }

    /// Brings every table to its latest version in `ctx`.
    async fn refresh(&mut self, ctx: &SessionContext) -> Result<()> {
        for (name, table) in &mut self.tables {
            let provider = table.refresh().await?;
            register(ctx, name, provider)?;
        }
        Ok(())
    }

    /// Registers in `ctx` the versions batch `batch_id` reads: those it recorded, when it is a
    /// replay (`replayed`) that got that far; else the latest, recorded before the batch's query
    /// runs. Only a replay looks for a record: a new batch has none.
    pub async fn for_batch(
        &mut self,
        ctx: &SessionContext,
        checkpoint: &Checkpoint,
        batch_id: i64,
        replayed: bool,
    ) -> Result<()> {
        if self.tables.is_empty() {
            return Ok(());
        }
        let recorded = if replayed {
            checkpoint.table_versions(batch_id).await?
        } else {
            None
        };
        if let Some(versions) = recorded {
            for (name, table) in &mut self.tables {
                let provider = match versions.get(name.as_str()) {
                    Some(v) => table.at_version(*v).await?,
                    None => table.refresh().await?,
                };
                register(ctx, name, provider)?;
            }
            return Ok(());
        }
        self.refresh(ctx).await?;
        let versions = self
            .tables
            .iter()
            .filter_map(|(name, t)| t.version().map(|v| (name.clone(), v)))
            .collect();
        checkpoint.write_table_versions(batch_id, &versions).await
    }
}

fn register(ctx: &SessionContext, name: &str, provider: Arc<dyn TableProvider>) -> Result<()> {
    let sql_err = |e| JobError::sql(name, e);
    ctx.deregister_table(name).map_err(sql_err)?;
    ctx.register_table(name, provider).map_err(sql_err)?;
    Ok(())
}
