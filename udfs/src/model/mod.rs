//! Model evaluators: gradient-boosted trees read from XGBoost's JSON format, an isolation forest
//! we train ourselves, and the scoring model that blends them with configurable weights (0.7 GBDT
//! and 0.3 isolation forest by default, as the reference system does) and names the features
//! that drove each GBDT score. All evaluate whole Arrow batches at once.

mod boost;
mod features;
mod flat;
mod gbdt;
mod iforest;
mod lightgbm;
mod manifest;
mod metrics;
mod tree;
mod udf;
mod xgboost;

use datafusion::arrow::array::ArrayRef;
use datafusion::prelude::SessionContext;

pub use boost::{BoostParams, train_binary};
pub use features::{FeatureMatrix, is_feature_type};
pub use gbdt::{Gbdt, Objective};
pub use iforest::{IsolationForest, IsolationForestParams};
pub use manifest::{MANIFEST_FILE, ModelManifest, ModelPart, load_folder};
pub use metrics::{Quality, quality};
pub use udf::{ModelSlot, ModelUdf};

/// Makes `ctx` evaluate a function whose struct result is read field by field once, not once per
/// field. DataFusion 55's `extract_leaf_expressions` and `push_down_leaf_projections` move a field
/// access (`m['score']`) below the projection that computes `m`, copying the whole call into each
/// access: a model (or a rule set) read for its score, reasons and version would run three
/// times. The rules pay off when reading struct fields from Parquet, which scoring sessions do
/// not do; sessions that score drop them.
pub fn evaluate_functions_once(ctx: &SessionContext) {
    ctx.remove_optimizer_rule("extract_leaf_expressions");
    ctx.remove_optimizer_rule("push_down_leaf_projections");
}

/// Why a model could not be read or built.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The file is not the JSON the format expects.
    #[error("{kind} model is not valid JSON of its format: {source}")]
    Json {
        /// Which format.
        kind: &'static str,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// The file parses but describes a model we cannot evaluate.
    #[error("{kind} model: {message}")]
    Invalid {
        /// Which format or model.
        kind: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// The default weights, as the reference system has them: 0.7 GBDT, 0.3 isolation forest (its
/// blend is linear; ours is in log-odds, [`blend`]).
pub const DEFAULT_GBDT_WEIGHT: f64 = 0.7;
/// See [`DEFAULT_GBDT_WEIGHT`].
pub const DEFAULT_ANOMALY_WEIGHT: f64 = 0.3;

/// Blends scores in [0, 1] by a weighted average of their log-odds: `σ(Σ wᵢ·logit(pᵢ) / Σ wᵢ)`.
///
/// A linear average adds a share of the anomaly score to every event, so genuine traffic with an
/// ordinary anomaly score of 0.4 to 0.6 rises past the model's confident genuine scores, which
/// costs recall at a low false-positive rate (BENCHMARKS.md, "Model quality"). In log-odds a
/// part moves the odds by a factor, which leaves what the GBDT is sure of nearly in place. A
/// part at exactly 0 or 1 counts as 1e-9 from it.
pub fn blend(parts: &[(f64, f64)]) -> f64 {
    const EDGE: f64 = 1e-9;
    let (mut sum, mut total) = (0.0, 0.0);
    for &(weight, p) in parts {
        let p = p.clamp(EDGE, 1.0 - EDGE);
        sum += weight * (p / (1.0 - p)).ln();
        total += weight;
    }
    1.0 / (1.0 + (-sum / total).exp())
}

/// One scoring model: a GBDT, an isolation forest, or both blended, over one feature list.
#[derive(Debug, Clone)]
pub struct ScoringModel {
    version: String,
    features: Vec<String>,
    gbdt: Option<Component<Gbdt>>,
    anomaly: Option<Component<IsolationForest>>,
    top_features: usize,
}

#[derive(Debug, Clone)]
struct Component<M> {
    model: M,
    weight: f64,
    /// For each of the model's features, its position in the scoring model's feature list.
    columns: Vec<usize>,
}

/// A batch's scores.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    /// The blended score in [0, 1].
    pub score: Vec<f64>,
    /// The GBDT's probability, if the model has a GBDT.
    pub gbdt: Option<Vec<f64>>,
    /// The isolation forest's anomaly score, if the model has one.
    pub anomaly: Option<Vec<f64>>,
    /// Per row, the features that moved the GBDT's margin most, as (feature index in
    /// [`ScoringModel::features`], contribution to the margin); empty when not asked for.
    pub top_features: Vec<Vec<(usize, f32)>>,
}

impl ScoringModel {
    /// A model named by `version` from its parts and their weights. Its features are the GBDT's,
    /// then the isolation forest's that the GBDT does not read. `top_features` is how many
    /// contributing features to report per row (0 for none).
    pub fn new(
        version: impl Into<String>,
        gbdt: Option<(Gbdt, f64)>,
        anomaly: Option<(IsolationForest, f64)>,
        top_features: usize,
    ) -> Result<Self, ModelError> {
        let invalid = |message: String| ModelError::Invalid {
            kind: "scoring",
            message,
        };
        let weights = [gbdt.as_ref().map(|g| g.1), anomaly.as_ref().map(|a| a.1)];
        if weights
            .iter()
            .flatten()
            .any(|w| !(w.is_finite() && *w >= 0.0))
            || weights.iter().flatten().sum::<f64>() <= 0.0
        {
            return Err(invalid(format!(
                "weights must be finite, not negative, and not all zero (got {weights:?})"
            )));
        }
        let mut features: Vec<String> = Vec::new();
        let mut columns_of = |names: &[String]| -> Vec<usize> {
            names
                .iter()
                .map(|name| match features.iter().position(|f| f == name) {
                    Some(i) => i,
                    None => {
                        features.push(name.clone());
                        features.len() - 1
                    }
                })
                .collect()
        };
        let gbdt = gbdt.map(|(model, weight)| Component {
            columns: columns_of(model.features()),
            model,
            weight,
        });
        let anomaly = anomaly.map(|(model, weight)| Component {
            columns: columns_of(model.features()),
            model,
            weight,
        });
        if features.is_empty() {
            return Err(invalid(
                "a scoring model needs a GBDT or an isolation forest".into(),
            ));
        }
        Ok(Self {
            version: version.into(),
            features,
            gbdt,
            anomaly,
            top_features,
        })
    }

    /// The model's version, reported with every score.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The features the model reads, in the order its SQL function takes them.
    pub fn features(&self) -> &[String] {
        &self.features
    }

    /// Whether the model has a GBDT, and an isolation forest.
    pub fn parts(&self) -> (bool, bool) {
        (self.gbdt.is_some(), self.anomaly.is_some())
    }

    /// Scores rows given as one column per feature (in [`ScoringModel::features`] order).
    /// Contributions are computed for rows whose blended score is at least `explain_from`.
    pub fn score(
        &self,
        columns: &[ArrayRef],
        explain_from: f64,
    ) -> datafusion::common::Result<Scores> {
        let rows = columns.first().map_or(0, |c| c.len());
        let gbdt = match &self.gbdt {
            Some(c) => Some((c, self.matrix(columns, &c.columns)?)),
            None => None,
        };
        let anomaly = match &self.anomaly {
            Some(c) => Some(c.model.score(&self.matrix(columns, &c.columns)?)),
            None => None,
        };
        let probabilities = gbdt.as_ref().map(|(c, m)| c.model.predict(m));
        let score = (0..rows)
            .map(|row| match (&probabilities, &anomaly) {
                (Some(p), Some(a)) => {
                    let weights = (
                        self.gbdt.as_ref().map_or(0.0, |c| c.weight),
                        self.anomaly.as_ref().map_or(0.0, |c| c.weight),
                    );
                    blend(&[(weights.0, p[row]), (weights.1, a[row])])
                }
                // One part alone is the score, as it is.
                (Some(p), None) => p[row],
                (None, Some(a)) => a[row],
                (None, None) => f64::NAN,
            })
            .collect::<Vec<f64>>();
        let mut top_features = vec![Vec::new(); rows];
        if let Some((c, matrix)) = &gbdt
            && self.top_features > 0
        {
            for (row, top) in top_features.iter_mut().enumerate() {
                if score[row] >= explain_from {
                    *top = c
                        .model
                        .top_contributions(matrix.row(row), self.top_features)
                        .into_iter()
                        .map(|(f, v)| (c.columns[f], v))
                        .collect();
                }
            }
        }
        Ok(Scores {
            score,
            gbdt: probabilities,
            anomaly,
            top_features,
        })
    }

    fn matrix(
        &self,
        columns: &[ArrayRef],
        which: &[usize],
    ) -> datafusion::common::Result<FeatureMatrix> {
        let picked: Vec<ArrayRef> = which.iter().map(|&i| columns[i].clone()).collect();
        let names: Vec<String> = which.iter().map(|&i| self.features[i].clone()).collect();
        FeatureMatrix::from_columns(&picked, &names)
    }
}

#[cfg(test)]
mod tests;
