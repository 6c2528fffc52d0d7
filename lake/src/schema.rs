//! The lake as a DataFusion schema: every Delta table under the root, found when a query names it,
//! read at its latest commit (or at an older one, for time travel).
//!
//! Jobs keep appending while analysts query, so nothing here is registered once and kept: the
//! listing is refreshed on demand, and each query's scan reads the table's log up to its newest
//! commit (incrementally, from the last state this schema saw).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use deltalake::DeltaTable;
use deltalake::datafusion::catalog::{SchemaProvider, TableProvider};
use deltalake::datafusion::error::DataFusionError;
use deltalake::datafusion::prelude::SessionContext;
use deltalake::kernel::CommitInfo;

use crate::catalog::{Catalog, TableEntry};
use crate::error::{LakeError, Result};

/// Which commit of a table to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableVersion {
    /// The newest commit.
    Latest,
    /// `VERSION AS OF n`.
    Version(i64),
    /// `TIMESTAMP AS OF t`: the newest commit made at or before `t`, in milliseconds since the
    /// epoch.
    TimestampMillis(i64),
}

/// Separates a table's name from the version in names such as `risk_scores@v12`, which the time
/// travel rewrite of the SQL dialect produces (`FROM risk_scores VERSION AS OF 12`).
const VERSION_MARK: char = '@';

impl TableVersion {
    /// The name the schema resolves to `table` at this version.
    pub fn table_name(self, table: &str) -> String {
        match self {
            TableVersion::Latest => table.to_string(),
            TableVersion::Version(v) => format!("{table}{VERSION_MARK}v{v}"),
            TableVersion::TimestampMillis(ms) => format!("{table}{VERSION_MARK}t{ms}"),
        }
    }

    /// Splits a name made by [`TableVersion::table_name`]; any other name is the latest version.
    pub fn parse_name(name: &str) -> (&str, TableVersion) {
        let Some((table, suffix)) = name.rsplit_once(VERSION_MARK) else {
            return (name, TableVersion::Latest);
        };
        let parsed = match suffix.split_at_checked(1) {
            Some(("v", n)) => n.parse().ok().map(TableVersion::Version),
            Some(("t", n)) => n.parse().ok().map(TableVersion::TimestampMillis),
            _ => None,
        };
        match parsed {
            Some(version) => (table, version),
            None => (name, TableVersion::Latest),
        }
    }
}

/// Every Delta table under a lake root, as a DataFusion schema.
#[derive(Debug)]
pub struct LakeSchema {
    catalog: Catalog,
    /// The last listing: SQL name -> table, and when it was made.
    listing: Mutex<BTreeMap<String, TableEntry>>,
    listed_at: Mutex<Option<Instant>>,
    /// The newest state read of each table, brought up to date before each scan.
    latest: Mutex<HashMap<String, DeltaTable>>,
}

impl LakeSchema {
    /// A schema over `catalog`'s lake; call [`LakeSchema::refresh`] to list it.
    pub fn new(catalog: Catalog) -> Self {
        Self {
            catalog,
            listing: Mutex::new(BTreeMap::new()),
            listed_at: Mutex::new(None),
            latest: Mutex::new(HashMap::new()),
        }
    }

    /// Serves `catalog`'s lake as `ctx`'s default schema (replacing what was there), its tables
    /// listed; returns the schema and the tables. Every session that reads the lake goes through
    /// this, so tables are resolved one way: found when a query names them, at their newest
    /// commit or the version it asks for.
    pub async fn attach(
        catalog: Catalog,
        ctx: &SessionContext,
    ) -> Result<(Arc<LakeSchema>, Vec<TableEntry>)> {
        let schema = Arc::new(Self::new(catalog));
        let tables = schema.refresh().await?;
        let options = ctx.state().config_options().catalog.clone();
        let register_err = |source| LakeError::DataFusion {
            table: format!("{}.{}", options.default_catalog, options.default_schema),
            source: Box::new(source),
        };
        let default = ctx.catalog(&options.default_catalog).ok_or_else(|| {
            register_err(DataFusionError::Plan(format!(
                "the session has no catalog `{}` to serve the lake in",
                options.default_catalog
            )))
        })?;
        default
            .register_schema(&options.default_schema, Arc::clone(&schema) as _)
            .map_err(register_err)?;
        Ok((schema, tables))
    }

    /// The catalog this schema reads.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Lists the lake again, so that tables created (or removed) since show up in
    /// `table_names` and `information_schema`. Returns the tables, sorted by name.
    pub async fn refresh(&self) -> Result<Vec<TableEntry>> {
        let tables = self.catalog.tables().await?;
        let mut listing = self.listing.lock().unwrap_or_else(PoisonError::into_inner);
        *listing = tables.iter().map(|t| (t.name.clone(), t.clone())).collect();
        let mut latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
        latest.retain(|name, _| listing.contains_key(name));
        *self
            .listed_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        Ok(tables)
    }

    /// Lists the lake again when the last listing is older than `max_age` (a name a query uses
    /// that is not listed yet is looked for at once anyway, in [`LakeSchema::entry`]).
    pub async fn refresh_if_older(&self, max_age: Duration) -> Result<()> {
        let fresh = self
            .listed_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|at| at.elapsed() < max_age);
        if !fresh {
            self.refresh().await?;
        }
        Ok(())
    }

    /// The table named `name`, listing the lake again when it is not in the last listing.
    pub async fn entry(&self, name: &str) -> Result<Option<TableEntry>> {
        if let Some(entry) = self.cached_entry(name) {
            return Ok(Some(entry));
        }
        self.refresh().await?;
        Ok(self.cached_entry(name))
    }

    fn cached_entry(&self, name: &str) -> Option<TableEntry> {
        let listing = self.listing.lock().unwrap_or_else(PoisonError::into_inner);
        listing.get(name).cloned()
    }

    /// `entry` read at `version`.
    pub async fn load(&self, entry: &TableEntry, version: TableVersion) -> Result<DeltaTable> {
        let delta_err = LakeError::delta(&entry.name);
        match version {
            TableVersion::Latest => {
                let cached = {
                    let latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
                    latest.get(&entry.name).cloned()
                };
                let table = match cached {
                    Some(mut table) => {
                        table.update_incremental(None).await.map_err(delta_err)?;
                        table
                    }
                    None => self.catalog.open(entry).await?,
                };
                let mut latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
                let newer = latest
                    .get(&entry.name)
                    .is_none_or(|known| known.version() <= table.version());
                if newer {
                    latest.insert(entry.name.clone(), table.clone());
                }
                Ok(table)
            }
            TableVersion::Version(v) => {
                let v = u64::try_from(v).map_err(|_| LakeError::Table {
                    table: entry.name.clone(),
                    reason: format!("version {v} is negative"),
                })?;
                let mut table = self.catalog.open_unloaded(entry)?;
                table.load_version(v).await.map_err(delta_err)?;
                Ok(table)
            }
            TableVersion::TimestampMillis(ms) => {
                let at =
                    DateTime::<Utc>::from_timestamp_millis(ms).ok_or_else(|| LakeError::Table {
                        table: entry.name.clone(),
                        reason: format!("timestamp {ms} ms is out of range"),
                    })?;
                let mut table = self.catalog.open_unloaded(entry)?;
                table.load_with_datetime(at).await.map_err(delta_err)?;
                Ok(table)
            }
        }
    }

    /// The table's commits, newest first (at most `limit` of them): what `DESCRIBE HISTORY`
    /// shows. Read from the commit files themselves, so each carries the version its file name
    /// gives.
    pub async fn history(&self, name: &str, limit: Option<usize>) -> Result<Vec<Commit>> {
        use deltalake::logstore::object_store::ObjectStoreExt as _;
        use futures::TryStreamExt;
        let entry = self.entry(name).await?.ok_or_else(|| self.missing(name))?;
        // The commit files are listed and read here: the table's state is not needed.
        let table = self.catalog.open_unloaded(&entry)?;
        let store_err = |source| LakeError::Store {
            location: entry.url.to_string(),
            source: Box::new(source),
        };
        let log_store = table.log_store();
        let store = log_store.object_store(None);
        let log_path = log_store.log_path();
        let mut files: Vec<(i64, deltalake::Path, i64)> = store
            .list(Some(log_path))
            .try_filter_map(|meta| async move {
                let version = meta
                    .location
                    .filename()
                    .and_then(|f| f.strip_suffix(".json"))
                    .filter(|stem| stem.len() == 20)
                    .and_then(|stem| stem.parse::<i64>().ok());
                let written = meta.last_modified.timestamp_millis();
                Ok(version.map(|v| (v, meta.location, written)))
            })
            .try_collect()
            .await
            .map_err(store_err)?;
        files.sort_by_key(|(v, _, _)| std::cmp::Reverse(*v));
        files.truncate(limit.unwrap_or(usize::MAX));
        let mut commits = Vec::with_capacity(files.len());
        for (version, location, timestamp_ms) in files {
            let bytes = store
                .get(&location)
                .await
                .map_err(store_err)?
                .bytes()
                .await
                .map_err(store_err)?;
            let info = bytes
                .split(|b| *b == b'\n')
                .filter_map(|line| serde_json::from_slice::<serde_json::Value>(line).ok())
                .find_map(|action| action.get("commitInfo").cloned())
                .and_then(|info| serde_json::from_value::<CommitInfo>(info).ok())
                .unwrap_or_default();
            commits.push(Commit {
                version,
                timestamp_ms,
                info,
            });
        }
        Ok(commits)
    }

    /// The error for a table that is not under the root, listing the ones that are.
    pub fn missing(&self, name: &str) -> LakeError {
        let listing = self.listing.lock().unwrap_or_else(PoisonError::into_inner);
        let known: Vec<&str> = listing.keys().map(String::as_str).collect();
        LakeError::NoSuchTable {
            table: name.to_string(),
            root: self.catalog.lake().root().to_string(),
            known: if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            },
        }
    }
}

/// One commit of a table's log.
#[derive(Debug, Clone)]
pub struct Commit {
    /// The version the commit made.
    pub version: i64,
    /// When its commit file was written, in ms since the epoch: the commit's timestamp, as
    /// Delta defines it without in-commit timestamps, and what `TIMESTAMP AS OF` compares
    /// (the writer's own `commitInfo.timestamp` is taken before the write and can be earlier).
    pub timestamp_ms: i64,
    /// What the writer recorded about it (empty when it recorded nothing).
    pub info: CommitInfo,
}

#[async_trait::async_trait]
impl SchemaProvider for LakeSchema {
    fn table_names(&self) -> Vec<String> {
        let listing = self.listing.lock().unwrap_or_else(PoisonError::into_inner);
        listing.keys().cloned().collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        let (table_name, version) = TableVersion::parse_name(name);
        let external = |e: LakeError| DataFusionError::External(Box::new(e));
        let Some(entry) = self.entry(table_name).await.map_err(external)? else {
            return Ok(None);
        };
        let table = self.load(&entry, version).await.map_err(external)?;
        let provider = table.table_provider().await?;
        Ok(Some(provider))
    }

    fn table_exist(&self, name: &str) -> bool {
        let (table_name, _) = TableVersion::parse_name(name);
        self.cached_entry(table_name).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versioned_names_round_trip() {
        for v in [
            TableVersion::Latest,
            TableVersion::Version(0),
            TableVersion::Version(12),
            TableVersion::TimestampMillis(1_795_946_400_000),
        ] {
            let name = v.table_name("risk_scores");
            assert_eq!(TableVersion::parse_name(&name), ("risk_scores", v));
        }
        // A name that merely contains the mark is a plain name.
        assert_eq!(
            TableVersion::parse_name("odd@name"),
            ("odd@name", TableVersion::Latest)
        );
    }
}
