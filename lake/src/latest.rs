//! A table read at its latest version, brought up to date on demand: how a streaming job reads a
//! Delta table beside its stream (a stream-static join) and sees each batch what was committed
//! before it.

use std::sync::Arc;

use deltalake::DeltaTable;
use deltalake::datafusion::catalog::TableProvider;

use crate::catalog::{Catalog, TableEntry};
use crate::error::{LakeError, Result};
use crate::location::LakeLocation;

/// A Delta table and the version last read.
#[derive(Debug)]
pub struct LatestTable {
    name: String,
    table: DeltaTable,
}

impl LatestTable {
    /// The table `name` under `lake`, which must exist.
    pub async fn open(lake: &LakeLocation, name: &str) -> Result<Self> {
        let entry = TableEntry {
            name: name.to_string(),
            url: lake.table_url(name)?,
        };
        let table = Catalog::new(lake.clone()).open(&entry).await?;
        Ok(Self {
            name: name.to_string(),
            table,
        })
    }

    /// Reads the commits made since the last read, and a provider of the table as it now is.
    pub async fn refresh(&mut self) -> Result<Arc<dyn TableProvider>> {
        self.table
            .update_incremental(None)
            .await
            .map_err(LakeError::delta(&self.name))?;
        self.provider().await
    }

    /// A provider of the table at `version` (a replay reading what its first run read).
    pub async fn at_version(&mut self, version: u64) -> Result<Arc<dyn TableProvider>> {
        self.table
            .load_version(version)
            .await
            .map_err(LakeError::delta(&self.name))?;
        self.provider().await
    }

    async fn provider(&self) -> Result<Arc<dyn TableProvider>> {
        self.table
            .table_provider()
            .await
            .map_err(|e| LakeError::Table {
                table: self.name.clone(),
                reason: e.to_string(),
            })
    }

    /// The version last read.
    pub fn version(&self) -> Option<u64> {
        self.table.version()
    }
}
