//! A model version on disk: a folder with `model.json` (this manifest) beside the files of its
//! parts, a GBDT (XGBoost's JSON or LightGBM's text) and our isolation forest. The manifest records what scoring
//! needs (features, weights) and what an auditor asks (how it was trained, on what, how well).

use serde::{Deserialize, Serialize};

use super::{Gbdt, IsolationForest, ModelError, ScoringModel};

/// The manifest's file name in a model folder.
pub const MANIFEST_FILE: &str = "model.json";

/// `model.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelManifest {
    /// The model's name, such as `transactions`.
    pub name: String,
    /// Its version, reported with every score it gives.
    pub version: String,
    /// When it was written (RFC 3339).
    pub created_at: String,
    /// The features, in the order the scoring function takes them.
    pub features: Vec<String>,
    /// The GBDT part, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gbdt: Option<ModelPart>,
    /// The isolation forest part, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation_forest: Option<ModelPart>,
    /// How many contributing features each explained score lists.
    #[serde(default = "default_top_features")]
    pub top_features: usize,
    /// How the model was trained: input, label, rows, split, parameters.
    #[serde(default)]
    pub training: serde_json::Value,
    /// Validation figures, per part and blended.
    #[serde(default)]
    pub metrics: serde_json::Value,
}

fn default_top_features() -> usize {
    3
}

/// One part of a model: its file (relative to the folder) and its weight in the blend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPart {
    /// The file, relative to the model folder.
    pub file: String,
    /// Weight in the blended score.
    pub weight: f64,
}

/// Reads the model folder `dir` (its `model.json` and the parts' files) and builds it.
pub fn load_folder(dir: &std::path::Path) -> Result<ScoringModel, ModelError> {
    let manifest = std::fs::read(dir.join(MANIFEST_FILE)).map_err(|e| ModelError::Invalid {
        kind: "manifest (model.json)",
        message: format!("cannot read {}: {e}", dir.join(MANIFEST_FILE).display()),
    })?;
    ModelManifest::from_json(&manifest)?
        .load(|file| std::fs::read(dir.join(file)).map_err(|e| format!("{file}: {e}")))
}

impl ModelManifest {
    /// Reads a manifest.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ModelError> {
        serde_json::from_slice(bytes).map_err(|source| ModelError::Json {
            kind: "manifest (model.json)",
            source,
        })
    }

    /// The manifest as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Builds the scoring model, reading each part's file through `read` (a path relative to
    /// the model folder). The parts' features must be the manifest's.
    pub fn load(
        &self,
        mut read: impl FnMut(&str) -> Result<Vec<u8>, String>,
    ) -> Result<ScoringModel, ModelError> {
        let invalid = |message: String| ModelError::Invalid {
            kind: "manifest (model.json)",
            message,
        };
        let gbdt = match &self.gbdt {
            Some(part) => Some((
                Gbdt::from_model_file(&read(&part.file).map_err(invalid)?)?,
                part.weight,
            )),
            None => None,
        };
        let forest = match &self.isolation_forest {
            Some(part) => Some((
                IsolationForest::from_json(&read(&part.file).map_err(invalid)?)?,
                part.weight,
            )),
            None => None,
        };
        let model = ScoringModel::new(
            format!("{}/{}", self.name, self.version),
            gbdt,
            forest,
            self.top_features,
        )?;
        if model.features() != self.features.as_slice() {
            return Err(invalid(format!(
                "the manifest lists features {:?} but the parts read {:?}",
                self.features,
                model.features()
            )));
        }
        Ok(model)
    }
}
