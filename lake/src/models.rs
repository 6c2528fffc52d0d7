//! The model registry: model versions kept in the lake beside the tables, under
//! `models/<name>/<version>/` (a model folder: `model.json` and its parts' files), and which
//! version serves: `models/<name>/champion.json` and, for shadow scoring,
//! `models/<name>/challenger.json`, each `{"version": ..., "promoted_at": ...}`.
//!
//! A version is written once: its files first, `model.json` last and only if absent, so a reader
//! that finds `model.json` finds the whole version and two publishers cannot both win. Promoting
//! rewrites one small pointer object, which jobs poll to pick up a new version without a restart.

use std::collections::BTreeMap;
use std::sync::Arc;

use deltalake::ObjectStore;
use deltalake::logstore::object_store::path::Path;
use deltalake::logstore::object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use futures::TryStreamExt;

use crate::error::{LakeError, Result};
use crate::location::LakeLocation;

/// The registry's folder under the lake root.
pub const MODELS_FOLDER: &str = "models";

/// The file that completes a version.
const MANIFEST: &str = "model.json";

/// Which promoted version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelRole {
    /// The version whose scores count.
    Champion,
    /// A version scored beside the champion, in shadow, for comparison.
    Challenger,
}

impl ModelRole {
    fn file(self) -> &'static str {
        match self {
            ModelRole::Champion => "champion.json",
            ModelRole::Challenger => "challenger.json",
        }
    }

    /// The role's name.
    pub fn name(self) -> &'static str {
        match self {
            ModelRole::Champion => "champion",
            ModelRole::Challenger => "challenger",
        }
    }
}

/// The model versions of a lake.
#[derive(Debug, Clone)]
pub struct ModelRegistry {
    lake: LakeLocation,
    store: Arc<dyn ObjectStore>,
}

/// A name or version must be one plain path segment.
fn check_segment(what: &str, value: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value != "."
        && value != ".."
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(LakeError::Model {
            model: value.to_string(),
            reason: format!("a model {what} takes letters, digits, `_`, `-` and `.` only"),
        })
    }
}

impl ModelRegistry {
    /// The registry of `lake`.
    pub fn new(lake: &LakeLocation) -> Result<Self> {
        Ok(Self {
            lake: lake.clone(),
            store: lake.object_store()?,
        })
    }

    fn store_err(&self, at: &Path) -> impl Fn(deltalake::ObjectStoreError) -> LakeError + use<> {
        let location = format!("{}{at}", self.lake.root());
        move |source| LakeError::Store {
            location: location.clone(),
            source: Box::new(source),
        }
    }

    fn path(parts: &[&str]) -> Path {
        Path::from_iter(std::iter::once(MODELS_FOLDER).chain(parts.iter().copied()))
    }

    /// Writes version `version` of model `name` from `files` (name to contents, `model.json`
    /// among them). Fails, writing no `model.json`, if that version exists.
    pub async fn publish(
        &self,
        name: &str,
        version: &str,
        files: &BTreeMap<String, Vec<u8>>,
    ) -> Result<()> {
        check_segment("name", name)?;
        check_segment("version", version)?;
        let model = format!("{name}/{version}");
        let manifest = files.get(MANIFEST).ok_or_else(|| LakeError::Model {
            model: model.clone(),
            reason: format!("a model version needs a {MANIFEST}"),
        })?;
        if self.has_version(name, version).await? {
            return Err(LakeError::Model {
                model,
                reason: "this version is already published; versions are written once".into(),
            });
        }
        for (file, bytes) in files.iter().filter(|(f, _)| f.as_str() != MANIFEST) {
            check_segment("file", file)?;
            let path = Self::path(&[name, version, file]);
            self.store
                .put(&path, PutPayload::from(bytes.clone()))
                .await
                .map_err(self.store_err(&path))?;
        }
        let path = Self::path(&[name, version, MANIFEST]);
        let create = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(&path, PutPayload::from(manifest.clone()), create)
            .await
        {
            Ok(_) => Ok(()),
            Err(deltalake::ObjectStoreError::AlreadyExists { .. }) => Err(LakeError::Model {
                model,
                reason: "another writer published this version first".into(),
            }),
            Err(e) => Err(self.store_err(&path)(e)),
        }
    }

    async fn has_version(&self, name: &str, version: &str) -> Result<bool> {
        let path = Self::path(&[name, version, MANIFEST]);
        match self.store.head(&path).await {
            Ok(_) => Ok(true),
            Err(deltalake::ObjectStoreError::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.store_err(&path)(e)),
        }
    }

    /// The names of the registered models, sorted.
    pub async fn names(&self) -> Result<Vec<String>> {
        self.folders(&Self::path(&[])).await
    }

    /// The published versions of `name` (those with a `model.json`), oldest first by number
    /// where they are numbers.
    pub async fn versions(&self, name: &str) -> Result<Vec<String>> {
        check_segment("name", name)?;
        let mut versions = Vec::new();
        for version in self.folders(&Self::path(&[name])).await? {
            if self.has_version(name, &version).await? {
                versions.push(version);
            }
        }
        versions.sort_by(|a, b| match (a.parse::<u64>(), b.parse::<u64>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            _ => a.cmp(b),
        });
        Ok(versions)
    }

    async fn folders(&self, prefix: &Path) -> Result<Vec<String>> {
        let listing = self
            .store
            .list_with_delimiter(Some(prefix))
            .await
            .map_err(self.store_err(prefix))?;
        let mut names: Vec<String> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Every file of a published version, by name.
    pub async fn read_version(
        &self,
        name: &str,
        version: &str,
    ) -> Result<BTreeMap<String, Vec<u8>>> {
        self.require_published(name, version, "no such version")
            .await?;
        let prefix = Self::path(&[name, version]);
        let objects: Vec<_> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(self.store_err(&prefix))?;
        let mut files = BTreeMap::new();
        for object in objects {
            let Some(file) = object.location.filename().map(str::to_string) else {
                continue;
            };
            let bytes = self.read_file(name, version, &file).await?;
            files.insert(file, bytes);
        }
        Ok(files)
    }

    /// Fails with `reason` and the published versions unless `version` of `name` is published.
    async fn require_published(&self, name: &str, version: &str, reason: &str) -> Result<()> {
        check_segment("name", name)?;
        check_segment("version", version)?;
        if self.has_version(name, version).await? {
            return Ok(());
        }
        Err(LakeError::Model {
            model: format!("{name}/{version}"),
            reason: format!(
                "{reason} (published: {})",
                self.versions(name).await?.join(", ")
            ),
        })
    }

    /// One file of a published version.
    pub async fn read_file(&self, name: &str, version: &str, file: &str) -> Result<Vec<u8>> {
        check_segment("name", name)?;
        check_segment("version", version)?;
        check_segment("file", file)?;
        let path = Self::path(&[name, version, file]);
        let got = self.store.get(&path).await.map_err(self.store_err(&path))?;
        Ok(got.bytes().await.map_err(self.store_err(&path))?.to_vec())
    }

    /// Makes `version` of `name` its `role`; the version must be published.
    pub async fn promote(&self, name: &str, version: &str, role: ModelRole) -> Result<()> {
        check_segment("name", name)?;
        check_segment("version", version)?;
        self.require_published(name, version, "cannot promote an unpublished version")
            .await?;
        let pointer = serde_json::json!({
            "version": version,
            "promoted_at": chrono::Utc::now().to_rfc3339(),
        });
        let path = Self::path(&[name, role.file()]);
        self.store
            .put(&path, PutPayload::from(pointer.to_string().into_bytes()))
            .await
            .map_err(self.store_err(&path))?;
        Ok(())
    }

    /// The version of `name` holding `role`, if one was promoted.
    pub async fn promoted(&self, name: &str, role: ModelRole) -> Result<Option<String>> {
        check_segment("name", name)?;
        let path = Self::path(&[name, role.file()]);
        let bytes = match self.store.get(&path).await {
            Ok(got) => got.bytes().await.map_err(self.store_err(&path))?,
            Err(deltalake::ObjectStoreError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.store_err(&path)(e)),
        };
        let pointer: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| LakeError::Model {
                model: name.to_string(),
                reason: format!("{} is not valid JSON: {e}", role.file()),
            })?;
        match pointer.get("version").and_then(|v| v.as_str()) {
            Some(version) => Ok(Some(version.to_string())),
            None => Err(LakeError::Model {
                model: name.to_string(),
                reason: format!("{} names no version", role.file()),
            }),
        }
    }
}
