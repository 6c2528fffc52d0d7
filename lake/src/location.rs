//! Where the lake lives: a local folder or an `s3://bucket/prefix` URL, and the storage options
//! that reach it.
//!
//! S3 credentials and endpoints come from the standard `AWS_*` environment variables
//! (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_ALLOW_HTTP`), which deltalake's S3 support reads for any option not given here; commits are
//! made safe by S3 conditional puts (`If-None-Match`), which MinIO and moto enforce.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use deltalake::ObjectStore;
use deltalake::logstore::store_for;

use url::Url;

use crate::error::{LakeError, Result};

/// The root of a lake and how to reach it.
#[derive(Debug, Clone, PartialEq)]
pub struct LakeLocation {
    root: Url,
    storage_options: HashMap<String, String>,
}

impl LakeLocation {
    /// Parses a lake to write to: a local path (created if missing, and checked to be writable)
    /// or an `s3://` / `s3a://` URL.
    pub fn parse(location: &str) -> Result<Self> {
        Self::parse_with(location, true)
    }

    /// Parses a lake to read from: a local folder must already exist (a mistyped path is an error,
    /// not a new empty lake) and is not written to.
    pub fn open_existing(location: &str) -> Result<Self> {
        Self::parse_with(location, false)
    }

    fn parse_with(location: &str, for_writing: bool) -> Result<Self> {
        let bad = |reason: String| LakeError::Location {
            location: location.to_string(),
            reason,
        };
        if location.trim().is_empty() {
            return Err(bad("the location is empty".into()));
        }
        let root = if location.contains("://") {
            let mut url = Url::parse(location).map_err(|e| bad(e.to_string()))?;
            match url.scheme() {
                "s3" | "s3a" | "file" => {}
                other => {
                    return Err(bad(format!(
                        "unsupported scheme `{other}` (use a local path or s3://bucket/prefix)"
                    )));
                }
            }
            if url.scheme() != "file" && url.host_str().is_none_or(str::is_empty) {
                return Err(bad(
                    "an S3 location needs a bucket: s3://bucket/prefix".into()
                ));
            }
            if !url.path().ends_with('/') {
                let path = format!("{}/", url.path());
                url.set_path(&path);
            }
            url
        } else {
            let path = Path::new(location);
            if for_writing {
                std::fs::create_dir_all(path)
                    .map_err(|e| bad(format!("cannot create the folder: {e}")))?;
                let probe = path.join(".riskstream-write-probe");
                std::fs::write(&probe, b"")
                    .map_err(|e| bad(format!("the folder is not writable: {e}")))?;
                let _ = std::fs::remove_file(&probe);
            } else if !path.is_dir() {
                return Err(bad("no such folder".into()));
            }
            let abs = std::fs::canonicalize(path).map_err(|e| bad(e.to_string()))?;
            Url::from_directory_path(&abs)
                .map_err(|()| bad("not an absolute directory path".into()))?
        };
        Ok(Self {
            root,
            storage_options: HashMap::new(),
        })
    }

    /// Adds storage options (deltalake/object_store keys such as `AWS_ENDPOINT_URL`), which take
    /// precedence over the environment.
    pub fn with_storage_options(mut self, options: HashMap<String, String>) -> Self {
        self.storage_options.extend(options);
        self
    }

    /// The root URL, ending with `/`.
    pub fn root(&self) -> &Url {
        &self.root
    }

    /// Whether the lake is on the local file system.
    pub fn is_local(&self) -> bool {
        self.root.scheme() == "file"
    }

    /// The storage options passed to every table.
    pub fn storage_options(&self) -> &HashMap<String, String> {
        &self.storage_options
    }

    /// An object store rooted at the lake root: paths given to it are relative to the root.
    pub fn object_store(&self) -> Result<Arc<dyn ObjectStore>> {
        store_for(&self.root, self.storage_options.clone()).map_err(|source| LakeError::Delta {
            table: self.root.to_string(),
            source: Box::new(source),
        })
    }

    /// The URL of the table named `name` (its folder under the root).
    pub fn table_url(&self, name: &str) -> Result<Url> {
        self.root
            .join(&format!("{name}/"))
            .map_err(|e| LakeError::Location {
                location: format!("{}{name}", self.root),
                reason: e.to_string(),
            })
    }
}

impl std::fmt::Display for LakeLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_local() {
            match self.root.to_file_path() {
                Ok(p) => write!(f, "{}", p.display()),
                Err(()) => write!(f, "{}", self.root),
            }
        } else {
            write!(f, "{}", self.root)
        }
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn local_and_s3_locations() {
        let dir = tempfile::tempdir().unwrap();
        let lake = LakeLocation::parse(dir.path().join("lake").to_str().unwrap()).unwrap();
        assert!(lake.is_local());
        assert!(
            lake.table_url("risk_scores")
                .unwrap()
                .path()
                .ends_with("/lake/risk_scores/")
        );

        let s3 = LakeLocation::parse("s3://bucket/some/prefix").unwrap();
        assert_eq!(
            s3.table_url("risk_scores").unwrap().as_str(),
            "s3://bucket/some/prefix/risk_scores/"
        );
        let err = LakeLocation::parse("ftp://x/y").unwrap_err().to_string();
        assert!(
            err.contains("ftp://x/y") && err.contains("unsupported scheme"),
            "{err}"
        );
        let err = LakeLocation::parse("s3:///nobucket")
            .unwrap_err()
            .to_string();
        assert!(err.contains("bucket"), "{err}");
    }

    #[test]
    fn reading_a_missing_local_lake_is_an_error_not_a_new_lake() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("typo");
        let err = LakeLocation::open_existing(missing.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("typo") && err.contains("no such folder"),
            "{err}"
        );
        assert!(!missing.exists());
    }

    #[test]
    fn unwritable_local_path_is_named() {
        let err = LakeLocation::parse("/proc/riskstream-lake")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/proc/riskstream-lake"), "{err}");
    }
}
