//! The catalog: every Delta table under the lake root, named after its folder, registered with a
//! DataFusion session.

use deltalake::datafusion::prelude::SessionContext;
use deltalake::{DeltaTable, Path};

use crate::error::{LakeError, Result};
use crate::location::LakeLocation;

/// A table found under the root.
#[derive(Debug, Clone, PartialEq)]
pub struct TableEntry {
    /// The SQL name: the table's folder path under the root, with `/` turned into `_`.
    pub name: String,
    /// Where the table is.
    pub url: url::Url,
}

/// The tables under a lake root.
#[derive(Debug, Clone)]
pub struct Catalog {
    lake: LakeLocation,
}

impl Catalog {
    /// A catalog over `lake`.
    pub fn new(lake: LakeLocation) -> Self {
        Self { lake }
    }

    /// The lake this catalog lists.
    pub fn lake(&self) -> &LakeLocation {
        &self.lake
    }

    /// Lists the Delta tables (folders holding a `_delta_log`) under the root, sorted by name.
    pub async fn tables(&self) -> Result<Vec<TableEntry>> {
        let root = self.lake.root();
        let store_err = |source| LakeError::Store {
            location: root.to_string(),
            source: Box::new(source),
        };
        let store = self.lake.object_store()?;
        let mut found = Vec::new();
        let mut stack: Vec<Option<Path>> = vec![None];
        while let Some(prefix) = stack.pop() {
            let listing = store
                .list_with_delimiter(prefix.as_ref())
                .await
                .map_err(store_err)?;
            let is_table = listing
                .common_prefixes
                .iter()
                .any(|p| p.filename() == Some("_delta_log"));
            match (is_table, prefix) {
                (true, Some(dir)) => {
                    let rel = dir.to_string();
                    found.push(TableEntry {
                        name: rel.replace('/', "_"),
                        url: self.lake.table_url(&rel)?,
                    });
                }
                // The root itself is a table: it has no name to query it by, so skip it.
                (true, None) => {}
                (false, _) => stack.extend(listing.common_prefixes.into_iter().map(Some)),
            }
        }
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    /// Opens one table at its latest version.
    pub async fn open(&self, entry: &TableEntry) -> Result<DeltaTable> {
        deltalake::open_table_with_storage_options(
            entry.url.clone(),
            self.lake.storage_options().clone(),
        )
        .await
        .map_err(LakeError::delta(&entry.name))
    }

    /// A handle on one table with no commit read yet, for reading an older version.
    pub fn open_unloaded(&self, entry: &TableEntry) -> Result<DeltaTable> {
        deltalake::DeltaTableBuilder::from_url(entry.url.clone())
            .and_then(|b| {
                b.with_storage_options(self.lake.storage_options().clone())
                    .build()
            })
            .map_err(LakeError::delta(&entry.name))
    }

    /// Serves every table under the root in `ctx`'s default schema, by name; returns the tables
    /// found now (later ones are found when a query names them).
    pub async fn register_all(&self, ctx: &SessionContext) -> Result<Vec<TableEntry>> {
        let (_, tables) = crate::schema::LakeSchema::attach(self.clone(), ctx).await?;
        Ok(tables)
    }
}
