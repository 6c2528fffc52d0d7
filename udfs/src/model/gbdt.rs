//! Gradient-boosted trees: a margin summed over the trees from a base margin, turned into a
//! probability by the objective, and per-feature path contributions that say why.

use super::features::FeatureMatrix;
use super::tree::{Forest, Node, Tree};

/// How a margin becomes a prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Objective {
    /// `1 / (1 + e^-margin)`: a probability.
    Logistic,
    /// The margin itself.
    Identity,
}

/// A gradient-boosted tree model with one output.
#[derive(Debug, Clone)]
pub struct Gbdt {
    features: Vec<String>,
    categorical: Vec<bool>,
    objective: Objective,
    base_margin: f32,
    /// The trees, with each node's mean leaf value over the training rows that reached it
    /// (weighted by hessian cover): the expected values path contributions are measured against.
    forest: Forest,
}

impl Gbdt {
    /// A model over `features`; `covers` gives each tree's per-node hessian sums.
    pub(crate) fn new(
        features: Vec<String>,
        categorical: Vec<bool>,
        objective: Objective,
        base_margin: f32,
        trees: Vec<Tree>,
        covers: Vec<Vec<f32>>,
    ) -> Result<Self, String> {
        if features.is_empty() {
            return Err("the model has no features".into());
        }
        for (i, tree) in trees.iter().enumerate() {
            tree.validate().map_err(|e| format!("tree {i}: {e}"))?;
        }
        let means = trees
            .iter()
            .zip(&covers)
            .map(|(tree, cover)| node_means(tree, cover))
            .collect();
        let forest = Forest::with_means(trees, means)?;
        if let Some(max) = forest.max_feature()
            && max as usize >= features.len()
        {
            return Err(format!(
                "a split reads feature {max}, but the model has {} features",
                features.len()
            ));
        }
        Ok(Self {
            features,
            categorical,
            objective,
            base_margin,
            forest,
        })
    }

    /// Reads a model saved by XGBoost as JSON.
    pub fn from_xgboost_json(bytes: &[u8]) -> Result<Self, super::ModelError> {
        super::xgboost::read(bytes)
    }

    /// Reads a model saved by LightGBM as text.
    pub fn from_lightgbm_text(bytes: &[u8]) -> Result<Self, super::ModelError> {
        super::lightgbm::read(bytes)
    }

    /// Reads a model file of either format: LightGBM's text (its first line is `tree`) or
    /// XGBoost's JSON.
    pub fn from_model_file(bytes: &[u8]) -> Result<Self, super::ModelError> {
        if super::lightgbm::is_lightgbm(bytes) {
            Self::from_lightgbm_text(bytes)
        } else {
            Self::from_xgboost_json(bytes)
        }
    }

    /// Feature names, in the order the model reads them.
    pub fn features(&self) -> &[String] {
        &self.features
    }

    /// Whether each feature is categorical (its value is a category code).
    pub fn categorical(&self) -> &[bool] {
        &self.categorical
    }

    /// The number of trees.
    pub fn trees(&self) -> usize {
        self.forest.trees().len()
    }

    /// The objective.
    pub fn objective(&self) -> Objective {
        self.objective
    }

    /// Raw margins, one per row: the base margin plus every tree's leaf, added in `f32` in tree
    /// order as XGBoost does.
    pub fn margins(&self, rows: &FeatureMatrix) -> Vec<f32> {
        debug_assert_eq!(rows.width(), self.features.len());
        let mut out = vec![self.base_margin; rows.rows()];
        self.forest.add_sums(rows.values(), rows.width(), &mut out);
        out
    }

    /// Predictions, one per row: probabilities for logistic objectives.
    pub fn predict(&self, rows: &FeatureMatrix) -> Vec<f64> {
        let mut margins = self.margins(rows);
        if self.objective == Objective::Logistic {
            for m in &mut margins {
                *m = 1.0 / (1.0 + (-*m).exp());
            }
        }
        margins.into_iter().map(f64::from).collect()
    }

    /// Path contributions of one row (XGBoost's `pred_contribs` with `approx_contribs`): for
    /// each feature, how much the splits on it moved the margin along the row's paths, plus a
    /// last entry, the bias (base margin and the trees' expected values). They add up to the
    /// margin.
    pub fn contributions(&self, row: &[f32]) -> Vec<f32> {
        let mut out = vec![0.0f32; self.features.len() + 1];
        self.forest.add_contributions(row, &mut out);
        out[self.features.len()] += self.base_margin;
        out
    }

    /// The `k` features that moved this row's margin most (either way), largest first, as
    /// (feature index, contribution); features that did not move it are left out.
    pub fn top_contributions(&self, row: &[f32], k: usize) -> Vec<(usize, f32)> {
        let contributions = self.contributions(row);
        let mut top: Vec<(usize, f32)> = contributions[..self.features.len()]
            .iter()
            .copied()
            .enumerate()
            .filter(|(_, c)| *c != 0.0)
            .collect();
        let order = |a: &(usize, f32), b: &(usize, f32)| {
            b.1.abs().total_cmp(&a.1.abs()).then(a.0.cmp(&b.0))
        };
        // Only the first k need sorting.
        if k == 0 {
            return Vec::new();
        }
        if top.len() > k {
            top.select_nth_unstable_by(k - 1, order);
            top.truncate(k);
        }
        top.sort_by(order);
        top
    }
}

/// Each node's mean leaf value weighted by cover, computed bottom-up in `f32` as XGBoost does.
fn node_means(tree: &Tree, cover: &[f32]) -> Vec<f32> {
    fn fill(tree: &Tree, cover: &[f32], node: usize, means: &mut [f32]) -> f32 {
        let mean = match tree.nodes[node] {
            Node::Leaf(value) => value,
            Node::Split { left, right, .. } => {
                let (left, right) = (left as usize, right as usize);
                let mut sum = fill(tree, cover, left, means) * cover[left];
                sum += fill(tree, cover, right, means) * cover[right];
                sum / cover[node]
            }
        };
        means[node] = mean;
        mean
    }
    let mut means = vec![0.0; tree.nodes.len()];
    if cover.len() == tree.nodes.len() {
        fill(tree, cover, 0, &mut means);
    }
    means
}
