//! A folder of plain files beside the lake, local or on S3: where `riskstream export` writes a
//! training set and `riskstream train` reads one. The same location syntax and credentials as a
//! lake, without Delta.

use std::sync::Arc;

use deltalake::ObjectStore;
use deltalake::logstore::object_store::path::Path;
use deltalake::logstore::object_store::{ObjectStoreExt, PutPayload};
use futures::TryStreamExt;

use crate::error::{LakeError, Result};
use crate::location::LakeLocation;

/// A folder and the object store that reaches it (paths are relative to the folder).
#[derive(Debug, Clone)]
pub struct Folder {
    location: LakeLocation,
    store: Arc<dyn ObjectStore>,
}

impl Folder {
    /// A new folder to write, which must be missing or empty: an export is written once, and
    /// files of an older one must not mix with it.
    pub async fn create(location: &str) -> Result<Self> {
        let folder = Self::at(LakeLocation::parse(location)?)?;
        let first = folder
            .store
            .list(None)
            .try_next()
            .await
            .map_err(folder.store_err())?;
        if first.is_some() {
            return Err(LakeError::Location {
                location: location.to_string(),
                reason: "not empty".into(),
            });
        }
        Ok(folder)
    }

    /// An existing folder to read.
    pub fn open(location: &str) -> Result<Self> {
        Self::at(LakeLocation::open_existing(location)?)
    }

    fn at(location: LakeLocation) -> Result<Self> {
        let store = location.object_store()?;
        Ok(Self { location, store })
    }

    /// Where the folder is.
    pub fn location(&self) -> &LakeLocation {
        &self.location
    }

    /// Writes the file `name`, replacing it if present.
    pub async fn put(&self, name: &str, bytes: Vec<u8>) -> Result<()> {
        self.store
            .put(&Path::from(name), PutPayload::from(bytes))
            .await
            .map_err(self.store_err())?;
        Ok(())
    }

    /// The file `name`, or `None` when it does not exist.
    pub async fn get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        match self.store.get(&Path::from(name)).await {
            Ok(got) => Ok(Some(got.bytes().await.map_err(self.store_err())?.to_vec())),
            Err(deltalake::ObjectStoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.store_err()(e)),
        }
    }

    fn store_err(&self) -> impl Fn(deltalake::ObjectStoreError) -> LakeError + use<> {
        let location = self.location.to_string();
        move |source| LakeError::Store {
            location: location.clone(),
            source: Box::new(source),
        }
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_folder_is_written_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let at = dir.path().join("set").display().to_string();
        let folder = Folder::create(&at).await.unwrap();
        folder.put("manifest.json", b"{}".to_vec()).await.unwrap();
        let read = Folder::open(&at).unwrap();
        assert_eq!(read.get("manifest.json").await.unwrap().unwrap(), b"{}");
        assert_eq!(read.get("data.parquet").await.unwrap(), None);
        let err = Folder::create(&at).await.unwrap_err().to_string();
        assert!(err.contains("not empty") && err.contains("set"), "{err}");
        assert!(Folder::open(&dir.path().join("none").display().to_string()).is_err());
    }
}
