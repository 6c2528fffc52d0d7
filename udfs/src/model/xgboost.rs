//! XGBoost's JSON model format (`Booster.save_model("m.json")`, format 1.0 to 3.x): the `gbtree`
//! booster with one output (binary classification or regression), numeric and categorical splits.

use serde::Deserialize;

use super::ModelError;
use super::gbdt::{Gbdt, Objective};
use super::tree::{Condition, Node, Tree, category_set};

const KIND: &str = "XGBoost";

#[derive(Deserialize)]
struct ModelFile {
    learner: Learner,
}

#[derive(Deserialize)]
struct Learner {
    #[serde(default)]
    feature_names: Vec<String>,
    #[serde(default)]
    feature_types: Vec<String>,
    gradient_booster: Booster,
    learner_model_param: LearnerParam,
    objective: ObjectiveParam,
}

#[derive(Deserialize)]
struct LearnerParam {
    base_score: String,
    #[serde(default)]
    num_class: Option<String>,
    num_feature: String,
    #[serde(default)]
    num_target: Option<String>,
}

#[derive(Deserialize)]
struct ObjectiveParam {
    name: String,
}

#[derive(Deserialize)]
struct Booster {
    name: String,
    #[serde(default)]
    model: Option<GbtreeModel>,
}

#[derive(Deserialize)]
struct GbtreeModel {
    trees: Vec<JsonTree>,
}

/// XGBoost writes flags as 0/1 numbers; older writers used booleans.
#[derive(Deserialize, Clone, Copy)]
#[serde(untagged)]
enum Flag {
    Number(u8),
    Bool(bool),
}

impl Flag {
    fn is_set(self) -> bool {
        match self {
            Flag::Number(n) => n != 0,
            Flag::Bool(b) => b,
        }
    }
}

#[derive(Deserialize)]
struct JsonTree {
    left_children: Vec<i32>,
    right_children: Vec<i32>,
    split_indices: Vec<u32>,
    split_conditions: Vec<f32>,
    default_left: Vec<Flag>,
    sum_hessian: Vec<f32>,
    #[serde(default)]
    split_type: Vec<u8>,
    #[serde(default)]
    categories: Vec<u32>,
    #[serde(default)]
    categories_nodes: Vec<u32>,
    #[serde(default)]
    categories_segments: Vec<usize>,
    #[serde(default)]
    categories_sizes: Vec<usize>,
}

fn invalid(message: impl Into<String>) -> ModelError {
    ModelError::Invalid {
        kind: KIND,
        message: message.into(),
    }
}

/// Reads a model saved by XGBoost as JSON.
pub fn read(bytes: &[u8]) -> Result<Gbdt, ModelError> {
    let file: ModelFile =
        serde_json::from_slice(bytes).map_err(|source| ModelError::Json { kind: KIND, source })?;
    let learner = file.learner;
    let outputs = |v: &Option<String>| v.as_deref().unwrap_or("0").parse::<u32>().unwrap_or(0);
    if outputs(&learner.learner_model_param.num_class) > 1
        || outputs(&learner.learner_model_param.num_target) > 1
    {
        return Err(invalid(
            "models with several outputs (multi-class, multi-target) are not supported; train one binary model per class",
        ));
    }
    let width: usize = learner
        .learner_model_param
        .num_feature
        .parse()
        .map_err(|_| invalid("num_feature is not a number"))?;
    let features = if learner.feature_names.is_empty() {
        // XGBoost's own names for unnamed features.
        (0..width).map(|i| format!("f{i}")).collect()
    } else {
        learner.feature_names
    };
    if features.len() != width {
        return Err(invalid(format!(
            "{} feature names for {width} features",
            features.len()
        )));
    }
    let categorical = (0..width)
        .map(|i| learner.feature_types.get(i).is_some_and(|t| t == "c"))
        .collect();
    let objective = match learner.objective.name.as_str() {
        "binary:logistic" | "reg:logistic" => Objective::Logistic,
        "binary:logitraw" | "reg:squarederror" | "reg:linear" => Objective::Identity,
        other => {
            return Err(invalid(format!(
                "objective `{other}` is not supported (binary:logistic, reg:logistic, binary:logitraw, reg:squarederror)"
            )));
        }
    };
    let base_score = parse_base_score(&learner.learner_model_param.base_score)?;
    let base_margin = match objective {
        // As XGBoost turns a probability into a margin, in f32.
        Objective::Logistic => -(1.0f32 / base_score - 1.0).ln(),
        Objective::Identity => base_score,
    };
    if learner.gradient_booster.name != "gbtree" {
        return Err(invalid(format!(
            "booster `{}` is not supported (gbtree)",
            learner.gradient_booster.name
        )));
    }
    let model = learner
        .gradient_booster
        .model
        .ok_or_else(|| invalid("the gbtree booster has no model"))?;
    let mut trees = Vec::with_capacity(model.trees.len());
    let mut covers = Vec::with_capacity(model.trees.len());
    for (i, tree) in model.trees.into_iter().enumerate() {
        let (tree, cover) = read_tree(tree).map_err(|e| invalid(format!("tree {i}: {e}")))?;
        trees.push(tree);
        covers.push(cover);
    }
    Gbdt::new(features, categorical, objective, base_margin, trees, covers).map_err(invalid)
}

/// `base_score` is a number, or since XGBoost 3.0 a one-element list such as `[5E-1]`.
fn parse_base_score(text: &str) -> Result<f32, ModelError> {
    let inner = text.trim().trim_start_matches('[').trim_end_matches(']');
    if inner.contains(',') {
        return Err(invalid(
            "several base scores (multi-output) are not supported",
        ));
    }
    inner
        .trim()
        .parse()
        .map_err(|_| invalid(format!("base_score `{text}` is not a number")))
}

fn read_tree(tree: JsonTree) -> Result<(Tree, Vec<f32>), String> {
    let n = tree.left_children.len();
    let lengths = [
        tree.right_children.len(),
        tree.split_indices.len(),
        tree.split_conditions.len(),
        tree.default_left.len(),
        tree.sum_hessian.len(),
    ];
    if lengths.iter().any(|&l| l != n)
        || !(tree.split_type.is_empty() || tree.split_type.len() == n)
    {
        return Err("node arrays of different lengths".into());
    }
    let mut categories = vec![None; n];
    for (k, &node) in tree.categories_nodes.iter().enumerate() {
        let (Some(&start), Some(&size)) = (
            tree.categories_segments.get(k),
            tree.categories_sizes.get(k),
        ) else {
            return Err("categories without segments".into());
        };
        let codes = tree
            .categories
            .get(start..start + size)
            .ok_or("category segment out of range")?;
        *categories
            .get_mut(node as usize)
            .ok_or("categorical node out of range")? = Some(category_set(codes.iter().copied()));
    }
    let mut nodes = Vec::with_capacity(n);
    for (i, categories) in categories.iter_mut().enumerate() {
        let (left, right) = (tree.left_children[i], tree.right_children[i]);
        if left < 0 {
            nodes.push(Node::Leaf(tree.split_conditions[i]));
            continue;
        }
        let categorical = tree.split_type.get(i).is_some_and(|&t| t == 1);
        let condition = if categorical {
            Condition::InCategories(
                categories
                    .take()
                    .ok_or_else(|| format!("categorical node {i} lists no categories"))?,
            )
        } else {
            Condition::Below(tree.split_conditions[i])
        };
        let child = |c: i32| u32::try_from(c).map_err(|_| format!("node {i} has a bad child"));
        nodes.push(Node::Split {
            feature: tree.split_indices[i],
            condition,
            default_left: tree.default_left[i].is_set(),
            left: child(left)?,
            right: child(right)?,
        });
    }
    Ok((Tree { nodes }, tree.sum_hessian))
}
