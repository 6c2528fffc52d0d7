//! LightGBM's text model format (`Booster.save_model("m.txt")`, version v3 and v4): one output
//! (binary classification or regression), numeric and categorical splits.
//!
//! LightGBM's conventions differ from XGBoost's, which the trees here follow: a row goes left
//! when `value <= threshold` (in f64), a missing value goes its node's default way only when the
//! node says missing values are NaN (otherwise it is taken for 0), and a categorical split sends
//! the listed categories left. Each is turned into the XGBoost form. Features are read as f32,
//! as for every model here: a f64 value within f32 rounding of a threshold may take the other
//! branch than in LightGBM (values that are f32 to begin with never do).

use std::collections::HashMap;

use super::ModelError;
use super::gbdt::{Gbdt, Objective};
use super::tree::{Condition, Node, Tree};

const KIND: &str = "LightGBM";

/// `decision_type` bits.
const CATEGORICAL: u8 = 1;
const DEFAULT_LEFT: u8 = 2;
const MISSING_SHIFT: u8 = 2;
const MISSING_ZERO: u8 = 1;
const MISSING_NAN: u8 = 2;

fn invalid(message: impl Into<String>) -> ModelError {
    ModelError::Invalid {
        kind: KIND,
        message: message.into(),
    }
}

/// Whether `bytes` look like a LightGBM text model (its first line is `tree`).
pub fn is_lightgbm(bytes: &[u8]) -> bool {
    bytes.split(|b| *b == b'\n').next().map(|l| l.trim_ascii()) == Some(b"tree")
}

/// The `key=value` lines of one block of the file.
type Block<'a> = HashMap<&'a str, &'a str>;

fn numbers<T: std::str::FromStr>(block: &Block, key: &str) -> Result<Vec<T>, String> {
    let Some(text) = block.get(key) else {
        return Err(format!("no `{key}`"));
    };
    text.split_whitespace()
        .map(|v| {
            v.parse()
                .map_err(|_| format!("`{key}` has `{v}`, not a number"))
        })
        .collect()
}

/// Reads a model saved by LightGBM as text.
pub fn read(bytes: &[u8]) -> Result<Gbdt, ModelError> {
    let text = std::str::from_utf8(bytes).map_err(|_| invalid("the file is not UTF-8 text"))?;
    let body = text
        .split("end of trees")
        .next()
        .ok_or_else(|| invalid("no trees"))?;
    let mut blocks = body.split("\nTree=");
    let header_text = blocks.next().unwrap_or_default();
    let header: Block = key_values(header_text);
    let get = |key: &str| {
        header
            .get(key)
            .copied()
            .ok_or_else(|| invalid(format!("the header has no `{key}`")))
    };
    // v3 and v4 send a missing categorical value right; v2 read it as category 0.
    let version = get("version")?;
    if !matches!(version, "v3" | "v4") {
        return Err(invalid(format!(
            "model format {version} is not supported (v3, v4: LightGBM 3 and later)"
        )));
    }
    // A random forest (`boosting=rf`) averages its trees where boosting sums them.
    if header_text.lines().any(|l| l.trim() == "average_output") {
        return Err(invalid(
            "random-forest models (average_output) are not supported",
        ));
    }
    if get("num_class")? != "1" || get("num_tree_per_iteration")? != "1" {
        return Err(invalid(
            "models with several outputs (multi-class) are not supported; train one binary model per class",
        ));
    }
    let width: usize = get("max_feature_idx")?
        .parse::<usize>()
        .map_err(|_| invalid("max_feature_idx is not a number"))?
        + 1;
    let features: Vec<String> = get("feature_names")?
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if features.len() != width {
        return Err(invalid(format!(
            "{} feature names for {width} features",
            features.len()
        )));
    }
    // A categorical feature's info lists its categories (`0:3:7`); a numeric one's is its range
    // (`[0:10]`) or `none`.
    let infos: Vec<&str> = header
        .get("feature_infos")
        .map(|t| t.split_whitespace().collect())
        .unwrap_or_default();
    let categorical = (0..width)
        .map(|i| {
            infos
                .get(i)
                .is_some_and(|info| !info.starts_with('[') && *info != "none")
        })
        .collect();
    let mut objective_words = get("objective")?.split_whitespace();
    let (objective, scale) = match objective_words.next().unwrap_or_default() {
        "binary" => {
            // The probability is 1 / (1 + e^(-sigmoid × score)): the scale goes into the leaves.
            let sigmoid = objective_words
                .find_map(|w| w.strip_prefix("sigmoid:"))
                .map_or(Ok(1.0), str::parse::<f64>)
                .map_err(|_| invalid("the binary objective's sigmoid is not a number"))?;
            (Objective::Logistic, sigmoid)
        }
        "regression" | "regression_l1" | "huber" | "fair" | "quantile" | "mape" => {
            // `sqrt` (reg_sqrt) squares the output back: not a margin this evaluator gives.
            if let Some(word) = objective_words.find(|w| !w.contains(':')) {
                return Err(invalid(format!(
                    "objective option `{word}` is not supported"
                )));
            }
            (Objective::Identity, 1.0)
        }
        other => {
            return Err(invalid(format!(
                "objective `{other}` is not supported (binary, regression, regression_l1, huber, fair, quantile, mape)"
            )));
        }
    };
    let mut trees = Vec::new();
    let mut covers = Vec::new();
    for (i, block) in blocks.enumerate() {
        let (tree, cover) =
            read_tree(&key_values(block), scale).map_err(|e| invalid(format!("tree {i}: {e}")))?;
        trees.push(tree);
        covers.push(cover);
    }
    if trees.is_empty() {
        return Err(invalid("no trees"));
    }
    // LightGBM folds its starting score into the first tree's leaves.
    Gbdt::new(features, categorical, objective, 0.0, trees, covers).map_err(invalid)
}

fn key_values(block: &str) -> Block<'_> {
    block
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect()
}

fn read_tree(block: &Block, scale: f64) -> Result<(Tree, Vec<f32>), String> {
    if block.get("is_linear").is_some_and(|v| *v != "0") {
        return Err("linear trees are not supported".into());
    }
    let leaves: usize = block
        .get("num_leaves")
        .and_then(|v| v.parse().ok())
        .ok_or("no num_leaves")?;
    let leaf_values: Vec<f64> = numbers(block, "leaf_value")?;
    if leaf_values.len() != leaves {
        return Err(format!(
            "{} leaf values for {leaves} leaves",
            leaf_values.len()
        ));
    }
    // Covers (hessian sums) for path contributions; counts where an old file has no weights.
    let weights = |weight: &str, count: &str| -> Result<Vec<f64>, String> {
        numbers(block, weight).or_else(|_| numbers(block, count))
    };
    let leaf = |j: usize| Node::Leaf((leaf_values[j] * scale) as f32);
    if leaves == 1 {
        return Ok((
            Tree {
                nodes: vec![leaf(0)],
            },
            vec![1.0],
        ));
    }
    let internal = leaves - 1;
    let features: Vec<u32> = numbers(block, "split_feature")?;
    let thresholds: Vec<f64> = numbers(block, "threshold")?;
    let decisions: Vec<u8> = numbers(block, "decision_type")?;
    let lefts: Vec<i64> = numbers(block, "left_child")?;
    let rights: Vec<i64> = numbers(block, "right_child")?;
    let internal_covers = weights("internal_weight", "internal_count")?;
    let leaf_covers = weights("leaf_weight", "leaf_count")?;
    let lengths = [
        features.len(),
        thresholds.len(),
        decisions.len(),
        lefts.len(),
        rights.len(),
        internal_covers.len(),
    ];
    if lengths.iter().any(|&l| l != internal) || leaf_covers.len() != leaves {
        return Err("node arrays of different lengths".into());
    }
    let boundaries: Vec<usize> = numbers(block, "cat_boundaries").unwrap_or_default();
    let words: Vec<u32> = numbers(block, "cat_threshold").unwrap_or_default();
    // Internal node i is node i here, leaf j is node `internal + j`; LightGBM writes a leaf
    // child as `-(j + 1)`.
    let child = |c: i64| -> Result<u32, String> {
        let node = if c >= 0 {
            c as usize
        } else {
            internal + (-c - 1) as usize
        };
        if node >= internal + leaves {
            return Err(format!("child {c} is outside the tree"));
        }
        u32::try_from(node).map_err(|_| format!("child {c} is outside the tree"))
    };
    let mut nodes = Vec::with_capacity(internal + leaves);
    for i in 0..internal {
        let decision = decisions[i];
        let (left, right) = (child(lefts[i])?, child(rights[i])?);
        let node = if decision & CATEGORICAL != 0 {
            let set = thresholds[i] as usize;
            let (Some(&from), Some(&to)) = (boundaries.get(set), boundaries.get(set + 1)) else {
                return Err(format!(
                    "node {i} names category set {set}, which is not there"
                ));
            };
            let listed = words
                .get(from..to)
                .ok_or("a category set is out of range")?;
            let mut bits = vec![0u64; listed.len().div_ceil(2)];
            for (w, word) in listed.iter().enumerate() {
                bits[w / 2] |= u64::from(*word) << (32 * (w % 2));
            }
            // Listed categories go left in LightGBM and right here: the children swap. A
            // missing or negative value goes right in LightGBM, so left here, as an unlisted
            // category does.
            Node::Split {
                feature: features[i],
                condition: Condition::InCategories(bits),
                default_left: true,
                left: right,
                right: left,
            }
        } else {
            let missing = (decision >> MISSING_SHIFT) & 3;
            let threshold = thresholds[i];
            let default_left = match missing {
                MISSING_NAN => decision & DEFAULT_LEFT != 0,
                MISSING_ZERO => {
                    return Err(format!(
                        "node {i} takes zero for missing (zero_as_missing), which is not supported"
                    ));
                }
                // No missing values in training: LightGBM reads NaN as 0.
                _ => 0.0 <= threshold,
            };
            Node::Split {
                feature: features[i],
                condition: Condition::Below(below_for_at_most(threshold)),
                default_left,
                left,
                right,
            }
        };
        nodes.push(node);
    }
    nodes.extend((0..leaves).map(leaf));
    let covers = internal_covers
        .iter()
        .chain(&leaf_covers)
        .map(|c| *c as f32)
        .collect();
    Ok((Tree { nodes }, covers))
}

/// The f32 `b` such that, for every f32 `v`, `v < b` exactly when `v <= t`: the first f32 above
/// the largest f32 not above `t`.
fn below_for_at_most(t: f64) -> f32 {
    let mut at_most = t as f32;
    if f64::from(at_most) > t {
        at_most = at_most.next_down();
    }
    at_most.next_up()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_becomes_below_without_moving_any_f32() {
        for t in [
            0.5,
            0.1,
            -0.1,
            1e-40,
            3.0e38,
            1e300,
            -1e300,
            0.0,
            123_456.789,
        ] {
            let b = below_for_at_most(t);
            for v in [
                t as f32,
                (t as f32).next_up(),
                (t as f32).next_down(),
                0.0,
                -0.0,
            ] {
                assert_eq!(v < b, f64::from(v) <= t, "t {t}, v {v}, b {b}");
            }
        }
    }

    #[test]
    fn text_models_are_recognised_by_their_first_line() {
        assert!(is_lightgbm(b"tree\nversion=v4\n"));
        assert!(!is_lightgbm(b"{\"learner\": {}}"));
        assert!(!is_lightgbm(b"trees\n"));
    }
}
