//! Isolation forest (Liu, Ting and Zhou, 2008): random trees grown on small samples isolate an
//! unusual row in few splits, so a short average path means an anomaly. We train it ourselves
//! and keep it in a JSON format of our own.
//!
//! Score: `2^(-E[h(x)] / c(ψ))`, where `h` is the path length (plus `c(n)` for the `n` sample
//! rows left in the leaf) and `c(ψ)` the average path of an unsuccessful search in a binary
//! search tree of the sample size `ψ`: near 1 for anomalies, near 0.5 or below for the rest.

use serde::{Deserialize, Serialize};

use super::ModelError;
use super::features::FeatureMatrix;
use super::tree::{Condition, Forest, Node, Tree};

const KIND: &str = "isolation forest";
const FORMAT: &str = "riskstream-isolation-forest";

/// How to grow the forest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IsolationForestParams {
    /// Number of trees.
    pub trees: usize,
    /// Rows each tree is grown on (ψ); trees stop at depth `ceil(log2 ψ)`.
    pub sample_size: usize,
    /// Seed of the sampling and the random splits: the same seed and rows give the same forest.
    pub seed: u64,
}

impl Default for IsolationForestParams {
    fn default() -> Self {
        // The paper's defaults.
        Self {
            trees: 100,
            sample_size: 256,
            seed: 0,
        }
    }
}

/// A trained isolation forest.
#[derive(Debug, Clone)]
pub struct IsolationForest {
    features: Vec<String>,
    sample_size: usize,
    forest: Forest,
}

/// `c(n)`: the average path length of an unsuccessful search among `n` rows.
fn average_path(n: usize) -> f64 {
    match n {
        0 | 1 => 0.0,
        2 => 1.0,
        _ => {
            let n = n as f64;
            2.0 * ((n - 1.0).ln() + 0.577_215_664_901_532_9) - 2.0 * (n - 1.0) / n
        }
    }
}

/// SplitMix64: small, fast, and enough for sampling and split points.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl IsolationForest {
    /// Grows a forest on `rows`, whose columns are `features`.
    pub fn train(
        features: Vec<String>,
        rows: &FeatureMatrix,
        params: IsolationForestParams,
    ) -> Result<Self, ModelError> {
        let invalid = |message: String| ModelError::Invalid {
            kind: KIND,
            message,
        };
        if features.len() != rows.width() {
            return Err(invalid(format!(
                "{} feature names for rows of {} features",
                features.len(),
                rows.width()
            )));
        }
        if rows.rows() < 2 || params.trees == 0 || params.sample_size < 2 {
            return Err(invalid(format!(
                "needs at least 2 rows, 1 tree and a sample of 2 (got {} rows, {} trees, sample {})",
                rows.rows(),
                params.trees,
                params.sample_size
            )));
        }
        let sample_size = params.sample_size.min(rows.rows());
        let max_depth = (sample_size as f64).log2().ceil() as usize;
        let mut rng = SplitMix(params.seed);
        let mut trees = Vec::with_capacity(params.trees);
        let mut all: Vec<usize> = (0..rows.rows()).collect();
        for _ in 0..params.trees {
            // A partial Fisher-Yates shuffle draws the sample without replacement.
            for i in 0..sample_size {
                let j = i + rng.below(all.len() - i);
                all.swap(i, j);
            }
            let mut sample = all[..sample_size].to_vec();
            let mut nodes = Vec::new();
            grow(rows, &mut sample, 0, max_depth, &mut rng, &mut nodes);
            trees.push(Tree { nodes });
        }
        let forest = Forest::new(trees).map_err(invalid)?;
        Ok(Self {
            features,
            sample_size,
            forest,
        })
    }

    /// Feature names, in the order the forest reads them.
    pub fn features(&self) -> &[String] {
        &self.features
    }

    /// Anomaly scores in (0, 1], one per row.
    pub fn score(&self, rows: &FeatureMatrix) -> Vec<f64> {
        let mut paths = vec![0.0f32; rows.rows()];
        self.forest
            .add_sums(rows.values(), rows.width(), &mut paths);
        let trees = self.forest.trees().len() as f64;
        let norm = average_path(self.sample_size);
        paths
            .into_iter()
            .map(|sum| 2f64.powf(-(f64::from(sum) / trees) / norm))
            .collect()
    }

    /// The forest in our JSON format.
    pub fn to_json(&self) -> String {
        let file = ForestFile {
            format: FORMAT.into(),
            version: 1,
            features: self.features.clone(),
            sample_size: self.sample_size,
            trees: self
                .forest
                .trees()
                .iter()
                .map(TreeFile::from_tree)
                .collect(),
        };
        // Serialising plain numbers and strings cannot fail.
        serde_json::to_string(&file).unwrap_or_default()
    }

    /// Reads a forest written by [`IsolationForest::to_json`].
    pub fn from_json(bytes: &[u8]) -> Result<Self, ModelError> {
        let file: ForestFile = serde_json::from_slice(bytes)
            .map_err(|source| ModelError::Json { kind: KIND, source })?;
        let invalid = |message: String| ModelError::Invalid {
            kind: KIND,
            message,
        };
        if file.format != FORMAT || file.version != 1 {
            return Err(invalid(format!(
                "format `{}` version {} is not {FORMAT} version 1",
                file.format, file.version
            )));
        }
        let trees = file
            .trees
            .into_iter()
            .enumerate()
            .map(|(i, t)| t.into_tree().map_err(|e| format!("tree {i}: {e}")))
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?;
        let forest = Forest::new(trees).map_err(invalid)?;
        if forest
            .max_feature()
            .is_some_and(|f| f as usize >= file.features.len())
            || file.features.is_empty()
            || file.sample_size < 2
        {
            return Err(invalid("features and splits do not agree".into()));
        }
        Ok(Self {
            features: file.features,
            sample_size: file.sample_size,
            forest,
        })
    }
}

/// Grows the subtree over `sample` at `depth`, appending its nodes; returns the root's index.
fn grow(
    rows: &FeatureMatrix,
    sample: &mut [usize],
    depth: usize,
    max_depth: usize,
    rng: &mut SplitMix,
    nodes: &mut Vec<Node>,
) -> u32 {
    let index = nodes.len() as u32;
    let leaf = |n: usize| Node::Leaf((depth as f64 + average_path(n)) as f32);
    if depth >= max_depth || sample.len() <= 1 {
        nodes.push(leaf(sample.len()));
        return index;
    }
    // Features that still vary here (missing values aside), with their ranges.
    let mut spread = Vec::new();
    for feature in 0..rows.width() {
        let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
        for &r in sample.iter() {
            let v = rows.row(r)[feature];
            if !v.is_nan() {
                lo = lo.min(v);
                hi = hi.max(v);
            }
        }
        if lo < hi {
            spread.push((feature, lo, hi));
        }
    }
    if spread.is_empty() {
        nodes.push(leaf(sample.len()));
        return index;
    }
    let (feature, lo, hi) = spread[rng.below(spread.len())];
    let mut threshold = (f64::from(lo) + rng.unit() * (f64::from(hi) - f64::from(lo))) as f32;
    if threshold <= lo {
        // Rounding to f32 must leave at least one row on each side.
        threshold = lo.next_up();
    }
    let goes_left = |r: &usize| rows.row(*r)[feature] < threshold;
    let below = sample.iter().filter(|r| goes_left(r)).count();
    let missing = sample
        .iter()
        .filter(|r| rows.row(**r)[feature].is_nan())
        .count();
    let above = sample.len() - below - missing;
    // A missing value follows the larger side: it is taken as an ordinary value.
    let default_left = below >= above;
    sample.sort_by_key(|r| {
        let v = rows.row(*r)[feature];
        !(if v.is_nan() {
            default_left
        } else {
            v < threshold
        })
    });
    let split_at = if default_left { below + missing } else { below };
    nodes.push(Node::Leaf(0.0));
    let (left_rows, right_rows) = sample.split_at_mut(split_at);
    let left = grow(rows, left_rows, depth + 1, max_depth, rng, nodes);
    let right = grow(rows, right_rows, depth + 1, max_depth, rng, nodes);
    nodes[index as usize] = Node::Split {
        feature: feature as u32,
        condition: Condition::Below(threshold),
        default_left,
        left,
        right,
    };
    index
}

#[derive(Serialize, Deserialize)]
struct ForestFile {
    format: String,
    version: u32,
    features: Vec<String>,
    sample_size: usize,
    trees: Vec<TreeFile>,
}

/// A tree as parallel arrays, one entry per node; a leaf has `left` -1 and its path length in
/// `value`.
#[derive(Serialize, Deserialize)]
struct TreeFile {
    left: Vec<i32>,
    right: Vec<i32>,
    feature: Vec<u32>,
    value: Vec<f32>,
    default_left: Vec<bool>,
}

impl TreeFile {
    fn from_tree(tree: &Tree) -> Self {
        let mut file = TreeFile {
            left: Vec::new(),
            right: Vec::new(),
            feature: Vec::new(),
            value: Vec::new(),
            default_left: Vec::new(),
        };
        for node in &tree.nodes {
            let (left, right, feature, value, default_left) = match node {
                Node::Leaf(v) => (-1, -1, 0, *v, false),
                Node::Split {
                    feature,
                    condition,
                    default_left,
                    left,
                    right,
                } => {
                    let threshold = condition.threshold();
                    (
                        *left as i32,
                        *right as i32,
                        *feature,
                        threshold,
                        *default_left,
                    )
                }
            };
            file.left.push(left);
            file.right.push(right);
            file.feature.push(feature);
            file.value.push(value);
            file.default_left.push(default_left);
        }
        file
    }

    fn into_tree(self) -> Result<Tree, String> {
        let n = self.left.len();
        if [
            self.right.len(),
            self.feature.len(),
            self.value.len(),
            self.default_left.len(),
        ]
        .iter()
        .any(|&l| l != n)
        {
            return Err("node arrays of different lengths".into());
        }
        let nodes = (0..n)
            .map(|i| {
                if self.left[i] < 0 {
                    Ok(Node::Leaf(self.value[i]))
                } else {
                    Ok(Node::Split {
                        feature: self.feature[i],
                        condition: Condition::Below(self.value[i]),
                        default_left: self.default_left[i],
                        left: self.left[i] as u32,
                        right: u32::try_from(self.right[i])
                            .map_err(|_| format!("node {i} has one child"))?,
                    })
                }
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Tree { nodes })
    }
}
