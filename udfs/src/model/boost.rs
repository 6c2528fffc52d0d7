//! Training gradient-boosted trees for binary labels, XGBoost's way: logistic loss, second-order
//! gains with L2 regularisation, histograms over quantile bins, a learned default direction for
//! missing values, depth-wise growth. The result is written in XGBoost's JSON format, so one
//! evaluator scores models trained here and models trained by XGBoost, and XGBoost itself can
//! load ours.

use serde_json::json;

use super::features::FeatureMatrix;

/// How to train.
#[derive(Debug, Clone, PartialEq)]
pub struct BoostParams {
    /// Boosting rounds (trees).
    pub rounds: usize,
    /// Learning rate: each tree's leaves are scaled by it.
    pub eta: f64,
    /// Maximum tree depth.
    pub max_depth: usize,
    /// Smallest hessian sum a child may have.
    pub min_child_weight: f64,
    /// L2 regularisation of leaf weights.
    pub lambda: f64,
    /// Smallest loss reduction a split must bring.
    pub gamma: f64,
    /// Bins per feature (at most 255).
    pub max_bins: usize,
    /// Fraction of rows each tree is grown on.
    pub subsample: f64,
    /// Seed of the row sampling.
    pub seed: u64,
}

impl Default for BoostParams {
    fn default() -> Self {
        // XGBoost's defaults, but a smaller step and more rounds, which generalise better.
        Self {
            rounds: 100,
            eta: 0.1,
            max_depth: 6,
            min_child_weight: 1.0,
            lambda: 1.0,
            gamma: 0.0,
            max_bins: 255,
            subsample: 1.0,
            seed: 0,
        }
    }
}

impl BoostParams {
    /// Checks the parameters, naming the first bad one.
    pub fn validate(&self) -> Result<(), String> {
        let checks = [
            (self.rounds >= 1, "rounds must be at least 1"),
            (self.eta > 0.0 && self.eta <= 1.0, "eta must be in (0, 1]"),
            (
                (1..=16).contains(&self.max_depth),
                "max_depth must be 1 to 16",
            ),
            (
                self.min_child_weight >= 0.0,
                "min_child_weight must not be negative",
            ),
            (self.lambda >= 0.0, "lambda must not be negative"),
            (self.gamma >= 0.0, "gamma must not be negative"),
            (
                (2..=255).contains(&self.max_bins),
                "max_bins must be 2 to 255",
            ),
            (
                self.subsample > 0.0 && self.subsample <= 1.0,
                "subsample must be in (0, 1]",
            ),
        ];
        match checks.iter().find(|(ok, _)| !ok) {
            Some((_, message)) => Err((*message).to_string()),
            None => Ok(()),
        }
    }
}

/// The bin of a missing value.
const MISSING: u8 = u8::MAX;

/// Feature values cut into at most 255 bins; bin `b` of a feature holds the values `x` with
/// `cuts[b - 1] <= x < cuts[b]`, so "bin <= b" is XGBoost's `x < cuts[b]`.
struct Binned {
    /// Column-major bins, one column per feature.
    bins: Vec<Vec<u8>>,
    cuts: Vec<Vec<f32>>,
}

impl Binned {
    fn new(rows: &FeatureMatrix, max_bins: usize) -> Self {
        let n = rows.rows();
        let mut bins = Vec::with_capacity(rows.width());
        let mut cuts = Vec::with_capacity(rows.width());
        for feature in 0..rows.width() {
            let column: Vec<f32> = (0..n).map(|r| rows.row(r)[feature]).collect();
            let mut present: Vec<f32> = column.iter().copied().filter(|v| !v.is_nan()).collect();
            present.sort_by(f32::total_cmp);
            present.dedup();
            let feature_cuts: Vec<f32> = if present.len() < max_bins {
                present.iter().skip(1).copied().collect()
            } else {
                let mut c: Vec<f32> = (1..max_bins)
                    .map(|i| present[i * present.len() / max_bins])
                    .collect();
                c.dedup();
                c
            };
            bins.push(
                column
                    .iter()
                    .map(|v| {
                        if v.is_nan() {
                            MISSING
                        } else {
                            feature_cuts.partition_point(|c| c <= v) as u8
                        }
                    })
                    .collect(),
            );
            cuts.push(feature_cuts);
        }
        Self { bins, cuts }
    }
}

/// Gradient and hessian sums of one bin.
#[derive(Debug, Clone, Copy, Default)]
struct GradSum {
    g: f64,
    h: f64,
}

impl std::ops::AddAssign for GradSum {
    fn add_assign(&mut self, o: Self) {
        self.g += o.g;
        self.h += o.h;
    }
}

impl std::ops::Sub for GradSum {
    type Output = Self;
    fn sub(self, o: Self) -> Self {
        Self {
            g: self.g - o.g,
            h: self.h - o.h,
        }
    }
}

/// Per feature, 256 bins (the last for missing values).
type Histogram = Vec<[GradSum; 256]>;

fn histogram(binned: &Binned, rows: &[u32], grads: &[GradSum]) -> Histogram {
    let mut hist = vec![[GradSum::default(); 256]; binned.bins.len()];
    for (feature, bins) in binned.bins.iter().enumerate() {
        let h = &mut hist[feature];
        for &r in rows {
            h[usize::from(bins[r as usize])] += grads[r as usize];
        }
    }
    hist
}

/// The best split of a node.
struct Split {
    feature: usize,
    /// Left takes bins `0..=bin`.
    bin: usize,
    default_left: bool,
    gain: f64,
}

/// One tree as it grows, in XGBoost's node arrays.
#[derive(Default)]
struct GrownTree {
    left: Vec<i64>,
    right: Vec<i64>,
    parent: Vec<i64>,
    feature: Vec<usize>,
    condition: Vec<f32>,
    default_left: Vec<u8>,
    base_weight: Vec<f32>,
    loss_change: Vec<f32>,
    hessian: Vec<f32>,
}

impl GrownTree {
    fn push(&mut self, parent: i64, weight: f32, hessian: f64) -> usize {
        self.left.push(-1);
        self.right.push(-1);
        self.parent.push(parent);
        self.feature.push(0);
        self.condition.push(weight);
        self.default_left.push(0);
        self.base_weight.push(weight);
        self.loss_change.push(0.0);
        self.hessian.push(hessian as f32);
        self.left.len() - 1
    }

    fn to_json(&self, id: usize, features: usize) -> serde_json::Value {
        let n = self.left.len();
        json!({
            "base_weights": self.base_weight,
            "categories": [], "categories_nodes": [], "categories_segments": [], "categories_sizes": [],
            "default_left": self.default_left,
            "id": id,
            "left_children": self.left,
            "loss_changes": self.loss_change,
            // XGBoost marks the root's missing parent with i32::MAX.
            "parents": self.parent.iter().map(|p| if *p < 0 { i64::from(i32::MAX) } else { *p }).collect::<Vec<_>>(),
            "right_children": self.right,
            "split_conditions": self.condition,
            "split_indices": self.feature,
            "split_type": vec![0; n],
            "sum_hessian": self.hessian,
            "tree_param": {"num_deleted": "0", "num_feature": features.to_string(), "num_nodes": n.to_string(), "size_leaf_vector": "1"},
        })
    }
}

/// A node waiting to be split.
struct Open {
    node: usize,
    rows: Vec<u32>,
    sum: GradSum,
    hist: Histogram,
    depth: usize,
}

/// Trains a binary classifier on `rows` with labels 0/1 and returns it as XGBoost JSON. Each row
/// counts `weights[r]` times (all 1 without weights), as XGBoost's instance weights do: a training
/// set whose negatives were kept at rate `r` weighs them `1/r`, so the model's probabilities are
/// those of the full stream.
pub fn train_binary(
    features: &[String],
    rows: &FeatureMatrix,
    labels: &[f32],
    weights: Option<&[f32]>,
    params: &BoostParams,
) -> Result<String, String> {
    params.validate()?;
    if let Some(w) = weights
        && (w.len() != labels.len() || w.iter().any(|w| !(w.is_finite() && *w > 0.0)))
    {
        return Err(format!(
            "{} weights for {} rows; weights must be positive",
            w.len(),
            labels.len()
        ));
    }
    let weight = |r: usize| weights.map_or(1.0, |w| f64::from(w[r]));
    if features.len() != rows.width() || labels.len() != rows.rows() {
        return Err(format!(
            "{} feature names and {} labels for {} rows of {} features",
            features.len(),
            labels.len(),
            rows.rows(),
            rows.width()
        ));
    }
    if labels.iter().any(|y| *y != 0.0 && *y != 1.0) {
        return Err("labels must be 0 or 1".into());
    }
    let positives = labels.iter().filter(|y| **y == 1.0).count();
    if positives == 0 || positives == labels.len() {
        return Err("training needs both positive and negative labels".into());
    }
    let binned = Binned::new(rows, params.max_bins);
    // XGBoost's boost_from_average: start from the label rate, as a margin computed in f32
    // the way the evaluator computes it.
    let (mut weighted_positives, mut total) = (0.0, 0.0);
    for (r, y) in labels.iter().enumerate() {
        total += weight(r);
        weighted_positives += weight(r) * f64::from(*y);
    }
    let base_score = (weighted_positives / total) as f32;
    let base_margin = -(1.0f32 / base_score - 1.0).ln();
    let mut margins = vec![f64::from(base_margin); labels.len()];
    let mut grads = vec![GradSum::default(); labels.len()];
    let mut rng = params.seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut trees = Vec::with_capacity(params.rounds);
    for round in 0..params.rounds {
        for (r, ((g, m), y)) in grads.iter_mut().zip(&margins).zip(labels).enumerate() {
            let p = 1.0 / (1.0 + (-m).exp());
            *g = GradSum {
                g: (p - f64::from(*y)) * weight(r),
                h: (p * (1.0 - p)).max(1e-16) * weight(r),
            };
        }
        let sample: Vec<u32> = (0..labels.len() as u32)
            .filter(|_| params.subsample >= 1.0 || next_unit(&mut rng) < params.subsample)
            .collect();
        let (tree, leaves) = grow(&binned, &grads, sample, params);
        // Every row, sampled or not, moves by its leaf's value.
        for (r, m) in margins.iter_mut().enumerate() {
            *m += f64::from(leaf_value(&tree, &binned, r, &leaves));
        }
        trees.push(tree.to_json(round, features.len()));
    }
    let model = json!({
        "learner": {
            "attributes": {},
            "feature_names": features,
            "feature_types": [],
            "gradient_booster": {
                "model": {
                    "cats": {"enc": [], "feature_segments": [], "sorted_idx": []},
                    "gbtree_model_param": {"num_parallel_tree": "1", "num_trees": params.rounds.to_string()},
                    "iteration_indptr": (0..=params.rounds).collect::<Vec<_>>(),
                    "tree_info": vec![0; params.rounds],
                    "trees": trees,
                },
                "name": "gbtree",
            },
            "learner_model_param": {
                "base_score": format!("[{base_score:E}]"),
                "boost_from_average": "1",
                "num_class": "0",
                "num_feature": features.len().to_string(),
                "num_target": "1",
            },
            "objective": {"name": "binary:logistic", "reg_loss_param": {"scale_pos_weight": "1"}},
        },
        "version": [3, 2, 0],
    });
    Ok(model.to_string())
}

fn next_unit(state: &mut u64) -> f64 {
    *state = state
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    (*state >> 11) as f64 / (1u64 << 53) as f64
}

/// The value of the leaf row `r` ends in: walked on the bins, as training split them.
fn leaf_value(tree: &GrownTree, binned: &Binned, r: usize, splits: &[Option<usize>]) -> f32 {
    let mut node = 0;
    while tree.left[node] >= 0 {
        let bin = binned.bins[tree.feature[node]][r];
        let go_left = if bin == MISSING {
            tree.default_left[node] == 1
        } else {
            splits[node].is_some_and(|b| usize::from(bin) <= b)
        };
        node = if go_left {
            tree.left[node]
        } else {
            tree.right[node]
        } as usize;
    }
    tree.base_weight[node]
}

fn weight(sum: GradSum, params: &BoostParams) -> f32 {
    (-sum.g / (sum.h + params.lambda) * params.eta) as f32
}

/// Grows one tree on `rows`; returns it and, per node, the bin its split cuts after.
fn grow(
    binned: &Binned,
    grads: &[GradSum],
    rows: Vec<u32>,
    params: &BoostParams,
) -> (GrownTree, Vec<Option<usize>>) {
    let mut tree = GrownTree::default();
    let mut split_bins: Vec<Option<usize>> = Vec::new();
    let mut sum = GradSum::default();
    for &r in &rows {
        sum += grads[r as usize];
    }
    let root = tree.push(-1, weight(sum, params), sum.h);
    split_bins.push(None);
    let hist = histogram(binned, &rows, grads);
    let mut open = vec![Open {
        node: root,
        rows,
        sum,
        hist,
        depth: 0,
    }];
    while let Some(node) = open.pop() {
        if node.depth >= params.max_depth {
            continue;
        }
        let Some(split) = best_split(&node.hist, node.sum, binned, params) else {
            continue;
        };
        let bins = &binned.bins[split.feature];
        let (left_rows, right_rows): (Vec<u32>, Vec<u32>) = node.rows.iter().partition(|&&r| {
            let bin = bins[r as usize];
            if bin == MISSING {
                split.default_left
            } else {
                usize::from(bin) <= split.bin
            }
        });
        // Build the smaller child's histogram; the other is the parent's minus it.
        let left_is_small = left_rows.len() <= right_rows.len();
        let small = if left_is_small {
            &left_rows
        } else {
            &right_rows
        };
        let small_hist = histogram(binned, small, grads);
        let mut large_hist = node.hist;
        for (l, s) in large_hist.iter_mut().zip(&small_hist) {
            for (lb, sb) in l.iter_mut().zip(s) {
                *lb = *lb - *sb;
            }
        }
        let sum_of = |rs: &[u32]| {
            let mut s = GradSum::default();
            for &r in rs {
                s += grads[r as usize];
            }
            s
        };
        let (left_sum, right_sum) = (sum_of(&left_rows), sum_of(&right_rows));
        let left = tree.push(node.node as i64, weight(left_sum, params), left_sum.h);
        let right = tree.push(node.node as i64, weight(right_sum, params), right_sum.h);
        split_bins.extend([None, None]);
        let n = node.node;
        tree.left[n] = left as i64;
        tree.right[n] = right as i64;
        tree.feature[n] = split.feature;
        tree.condition[n] = binned.cuts[split.feature][split.bin];
        tree.default_left[n] = u8::from(split.default_left);
        tree.loss_change[n] = split.gain as f32;
        split_bins[n] = Some(split.bin);
        let (left_hist, right_hist) = if left_is_small {
            (small_hist, large_hist)
        } else {
            (large_hist, small_hist)
        };
        open.push(Open {
            node: right,
            rows: right_rows,
            sum: right_sum,
            hist: right_hist,
            depth: node.depth + 1,
        });
        open.push(Open {
            node: left,
            rows: left_rows,
            sum: left_sum,
            hist: left_hist,
            depth: node.depth + 1,
        });
    }
    (tree, split_bins)
}

/// The split with the largest gain, trying missing values on either side.
fn best_split(
    hist: &Histogram,
    total: GradSum,
    binned: &Binned,
    params: &BoostParams,
) -> Option<Split> {
    let score = |s: GradSum| s.g * s.g / (s.h + params.lambda);
    let parent = score(total);
    let mut best: Option<Split> = None;
    for (feature, bins) in hist.iter().enumerate() {
        let cuts = binned.cuts[feature].len();
        let missing = bins[usize::from(MISSING)];
        let mut left = GradSum::default();
        // Left takes bins 0..=b; there is a threshold only while b < cuts.
        for (b, bin) in bins.iter().enumerate().take(cuts) {
            left += *bin;
            for default_left in [false, true] {
                let l = if default_left {
                    let mut l = left;
                    l += missing;
                    l
                } else {
                    left
                };
                let r = total - l;
                if l.h < params.min_child_weight || r.h < params.min_child_weight {
                    continue;
                }
                let gain = 0.5 * (score(l) + score(r) - parent) - params.gamma;
                if gain > 1e-9 && best.as_ref().is_none_or(|s| gain > s.gain) {
                    best = Some(Split {
                        feature,
                        bin: b,
                        default_left,
                        gain,
                    });
                }
            }
        }
    }
    best
}
