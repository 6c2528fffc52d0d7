//! Tests of the evaluators against each other and against hand-checked models; the parity with
//! XGBoost itself is tested end to end (`tests/python/test_models.py`).

#![expect(clippy::unwrap_used)]

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array};
use datafusion::arrow::datatypes::Float64Type;
use datafusion::prelude::SessionContext;

use super::tree::{Condition, Forest, Node, Tree, category_set};
use super::*;

/// Small deterministic generator for test data.
fn lcg(state: &mut u64) -> f32 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*state >> 40) as f32) / (1u64 << 24) as f32
}

/// A random numeric tree of at most `depth` levels over `width` features.
fn random_tree(state: &mut u64, depth: usize, width: usize) -> Tree {
    fn grow(state: &mut u64, depth: usize, width: usize, nodes: &mut Vec<Node>) -> u32 {
        let index = nodes.len() as u32;
        if depth == 0 || lcg(state) < 0.2 {
            nodes.push(Node::Leaf(lcg(state) - 0.5));
            return index;
        }
        nodes.push(Node::Leaf(0.0));
        let feature = (lcg(state) * width as f32) as u32 % width as u32;
        let threshold = lcg(state);
        let default_left = lcg(state) < 0.5;
        let left = grow(state, depth - 1, width, nodes);
        let right = grow(state, depth - 1, width, nodes);
        nodes[index as usize] = Node::Split {
            feature,
            condition: Condition::Below(threshold),
            default_left,
            left,
            right,
        };
        index
    }
    let mut nodes = Vec::new();
    grow(state, depth, width, &mut nodes);
    Tree { nodes }
}

fn random_rows(state: &mut u64, rows: usize, width: usize) -> FeatureMatrix {
    let values = (0..rows * width)
        .map(|_| {
            let v = lcg(state);
            if v < 0.1 { f32::NAN } else { lcg(state) }
        })
        .collect();
    FeatureMatrix::from_rows(values, width).unwrap()
}

#[test]
fn flat_walk_equals_node_walk_with_missing_values() {
    let mut state = 7;
    // Depths around the flat layout's limit, and row counts that leave remainders.
    for depth in [1, 3, 6, 10, 12] {
        let trees: Vec<Tree> = (0..20).map(|_| random_tree(&mut state, depth, 5)).collect();
        let means: Vec<Vec<f32>> = trees
            .iter()
            .map(|t| {
                // A leaf's mean is its value, as in every model.
                t.nodes
                    .iter()
                    .map(|n| match n {
                        Node::Leaf(v) => *v,
                        Node::Split { .. } => lcg(&mut state),
                    })
                    .collect()
            })
            .collect();
        let forest = Forest::with_means(trees.clone(), means.clone()).unwrap();
        let rows = random_rows(&mut state, 1003, 5);
        let mut fast = vec![0.0f32; rows.rows()];
        forest.add_sums(rows.values(), 5, &mut fast);
        for (r, fast) in fast.iter().enumerate() {
            let mut slow = 0.0f32;
            for tree in &trees {
                slow += tree.leaf(rows.row(r)).1;
            }
            assert_eq!(slow.to_bits(), fast.to_bits(), "depth {depth} row {r}");
            // Contributions along the flat walk equal those along the node walk.
            let mut flat = vec![0.0f32; 6];
            forest.add_contributions(rows.row(r), &mut flat);
            let mut walked = vec![0.0f32; 6];
            for (tree, means) in trees.iter().zip(&means) {
                walked[5] += means[0];
                let mut node = 0;
                while let Node::Split { feature, .. } = tree.nodes[node] {
                    let next = tree.next(node, rows.row(r));
                    walked[feature as usize] += means[next] - means[node];
                    node = next;
                }
            }
            for (a, b) in flat.iter().zip(&walked) {
                assert!(
                    (a - b).abs() < 1e-5,
                    "depth {depth} row {r}: {flat:?} vs {walked:?}"
                );
            }
        }
    }
}

#[test]
fn categories_in_the_set_go_right_and_unknown_codes_left() {
    let tree = Tree {
        nodes: vec![
            Node::Split {
                feature: 0,
                condition: Condition::InCategories(category_set([1, 3, 70])),
                default_left: false,
                left: 1,
                right: 2,
            },
            Node::Leaf(-1.0),
            Node::Leaf(1.0),
        ],
    };
    let side = |v: f32| tree.leaf(&[v]).1;
    assert_eq!(side(1.0), 1.0);
    assert_eq!(side(70.0), 1.0);
    assert_eq!(side(2.0), -1.0);
    assert_eq!(side(-3.0), -1.0);
    assert_eq!(side(1e9), -1.0);
    assert_eq!(side(f32::NAN), 1.0, "missing follows the default (right)");
}

#[test]
fn malformed_trees_are_refused() {
    let cyclic = Tree {
        nodes: vec![Node::Split {
            feature: 0,
            condition: Condition::Below(0.0),
            default_left: true,
            left: 0,
            right: 0,
        }],
    };
    assert!(Forest::new(vec![cyclic]).is_err());
    let outside = Tree {
        nodes: vec![Node::Split {
            feature: 0,
            condition: Condition::Below(0.0),
            default_left: true,
            left: 1,
            right: 9,
        }],
    };
    assert!(Forest::new(vec![outside]).unwrap_err().contains("outside"));
}

/// A two-tree model as XGBoost 3.2 writes it (trimmed of fields we do not read), with a
/// categorical split on `c` and a default-left split on `b`.
const XGB_MODEL: &str = r#"{
  "learner": {
    "feature_names": ["a", "b", "c"],
    "feature_types": ["q", "q", "c"],
    "learner_model_param": {"base_score": "[5E-1]", "num_class": "0", "num_feature": "3", "num_target": "1"},
    "objective": {"name": "binary:logistic"},
    "gradient_booster": {"name": "gbtree", "model": {"trees": [
      {"left_children": [1, 3, -1, -1, -1], "right_children": [2, 4, -1, -1, -1],
       "split_indices": [0, 2, 0, 0, 0], "split_conditions": [0.5, 0.0, 0.6, 0.4, -0.6],
       "default_left": [0, 1, 0, 0, 0], "sum_hessian": [100.0, 60.0, 40.0, 20.0, 40.0],
       "split_type": [0, 1, 0, 0, 0], "categories": [0, 1, 3], "categories_nodes": [1],
       "categories_segments": [0], "categories_sizes": [3]},
      {"left_children": [1, -1, -1], "right_children": [2, -1, -1],
       "split_indices": [1, 0, 0], "split_conditions": [2.0, -0.25, 0.5],
       "default_left": [1, 0, 0], "sum_hessian": [100.0, 75.0, 25.0]}
    ]}}
  },
  "version": [3, 2, 0]
}"#;

#[test]
fn xgboost_json_margins_probabilities_and_contributions() {
    let model = Gbdt::from_xgboost_json(XGB_MODEL.as_bytes()).unwrap();
    assert_eq!(model.features(), ["a", "b", "c"]);
    assert_eq!(model.categorical(), [false, false, true]);
    // base margin logit(0.5) = 0. Row 1: a < 0.5, c = 2 not in {0,1,3} -> left 0.4; b missing ->
    // left -0.25. Row 2: a >= 0.5 -> 0.6; b = 3 -> 0.5. Row 3: c = 1 -> right -0.6; b < 2 -> -0.25.
    let rows = FeatureMatrix::from_rows(vec![0.1, f32::NAN, 2.0, 0.9, 3.0, 0.0, 0.1, 1.0, 1.0], 3)
        .unwrap();
    let margins = model.margins(&rows);
    let want = [0.4 - 0.25, 0.6 + 0.5, -0.6 - 0.25];
    for (m, w) in margins.iter().zip(want) {
        assert!((m - w).abs() < 1e-6, "{margins:?}");
    }
    let p = model.predict(&rows);
    assert!((p[1] - 1.0 / (1.0 + (-1.1f64).exp())).abs() < 1e-6);
    for (r, margin) in margins.iter().enumerate() {
        let c = model.contributions(rows.row(r));
        let sum: f32 = c.iter().sum();
        assert!(
            (sum - margin).abs() < 1e-6,
            "contributions add up to the margin"
        );
    }
    // Tree means: tree 1 left node = (0.4*20 - 0.6*40)/60, root = (left*60 + 0.6*40)/100;
    // tree 2 root = (-0.25*75 + 0.5*25)/100.
    let left = (0.4f32 * 20.0 + -0.6 * 40.0) / 60.0;
    let root1 = (left * 60.0 + 0.6 * 40.0) / 100.0;
    let root2 = (-0.25f32 * 75.0 + 0.5 * 25.0) / 100.0;
    let c = model.contributions(rows.row(0));
    assert!((c[3] - (root1 + root2)).abs() < 1e-6, "bias {c:?}");
    assert!((c[0] - (left - root1)).abs() < 1e-6);
    assert!((c[2] - (0.4 - left)).abs() < 1e-6);
    assert!((c[1] - (-0.25 - root2)).abs() < 1e-6);
    let top = model.top_contributions(rows.row(0), 2);
    assert_eq!(top.len(), 2);
    assert!(top[0].1.abs() >= top[1].1.abs());
}

#[test]
fn unsupported_xgboost_models_say_why() {
    let multi = XGB_MODEL.replace(r#""num_class": "0""#, r#""num_class": "3""#);
    let err = Gbdt::from_xgboost_json(multi.as_bytes())
        .unwrap_err()
        .to_string();
    assert!(err.contains("multi-class"), "{err}");
    let rank = XGB_MODEL.replace("binary:logistic", "rank:pairwise");
    let err = Gbdt::from_xgboost_json(rank.as_bytes())
        .unwrap_err()
        .to_string();
    assert!(err.contains("rank:pairwise"), "{err}");
    let bad_feature = XGB_MODEL.replace(
        r#""split_indices": [1, 0, 0]"#,
        r#""split_indices": [7, 0, 0]"#,
    );
    let err = Gbdt::from_xgboost_json(bad_feature.as_bytes())
        .unwrap_err()
        .to_string();
    assert!(err.contains("feature 7"), "{err}");
    let err = Gbdt::from_xgboost_json(b"{}").unwrap_err().to_string();
    assert!(err.contains("XGBoost"), "{err}");
}

/// Rows around the origin with a few far away.
fn clustered(rows: usize, outliers: usize) -> FeatureMatrix {
    let mut state = 3;
    let mut values = Vec::new();
    for r in 0..rows {
        let far = r < outliers;
        for _ in 0..3 {
            let v = lcg(&mut state) - 0.5;
            values.push(if far { 8.0 + v } else { v });
        }
    }
    FeatureMatrix::from_rows(values, 3).unwrap()
}

fn names() -> Vec<String> {
    vec!["x".into(), "y".into(), "z".into()]
}

#[test]
fn isolation_forest_scores_outliers_higher_and_round_trips() {
    let rows = clustered(5000, 20);
    let params = IsolationForestParams {
        seed: 11,
        ..IsolationForestParams::default()
    };
    let forest = IsolationForest::train(names(), &rows, params).unwrap();
    let scores = forest.score(&rows);
    let outliers: f64 = scores[..20].iter().sum::<f64>() / 20.0;
    let inliers: f64 = scores[20..].iter().sum::<f64>() / 4980.0;
    assert!(outliers > 0.7 && inliers < 0.5, "{outliers} vs {inliers}");
    assert!(scores.iter().all(|s| *s > 0.0 && *s <= 1.0));

    let again = IsolationForest::train(names(), &rows, params).unwrap();
    assert_eq!(
        again.score(&rows),
        scores,
        "the same seed grows the same forest"
    );
    let read = IsolationForest::from_json(forest.to_json().as_bytes()).unwrap();
    assert_eq!(read.score(&rows), scores);
    assert_eq!(read.features(), names());

    let mut missing = rows.values().to_vec();
    missing[0] = f32::NAN;
    let missing = FeatureMatrix::from_rows(missing, 3).unwrap();
    assert!(forest.score(&missing)[0].is_finite());
    assert!(IsolationForest::from_json(b"{\"format\": \"other\"}").is_err());
}

fn blended_model() -> ScoringModel {
    let gbdt = Gbdt::from_xgboost_json(XGB_MODEL.as_bytes()).unwrap();
    let forest = IsolationForest::train(
        vec!["b".into(), "d".into()],
        &FeatureMatrix::from_rows((0..200).map(|i| (i % 17) as f32).collect(), 2).unwrap(),
        IsolationForestParams::default(),
    )
    .unwrap();
    ScoringModel::new("v7", Some((gbdt, 0.7)), Some((forest, 0.3)), 2).unwrap()
}

#[test]
fn blend_weights_parts_and_feature_union() {
    let model = blended_model();
    assert_eq!(model.features(), ["a", "b", "c", "d"]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Float64Array::from(vec![0.1, 0.9])),
        Arc::new(Float64Array::from(vec![None, Some(3.0)])),
        Arc::new(Int64Array::from(vec![2, 0])),
        Arc::new(Float64Array::from(vec![4.0, 40.0])),
    ];
    let scores = model.score(&columns, 0.0).unwrap();
    let (g, a) = (scores.gbdt.unwrap(), scores.anomaly.unwrap());
    for r in 0..2 {
        let odds = (g[r] / (1.0 - g[r])).powf(0.7) * (a[r] / (1.0 - a[r])).powf(0.3);
        assert!((scores.score[r] - odds / (1.0 + odds)).abs() < 1e-12);
        assert!(!scores.top_features[r].is_empty());
    }
    let none = model.score(&columns, 2.0).unwrap();
    assert!(
        none.top_features.iter().all(Vec::is_empty),
        "nothing scores above 1"
    );
    let gbdt = Gbdt::from_xgboost_json(XGB_MODEL.as_bytes()).unwrap();
    assert!(ScoringModel::new("v", Some((gbdt, -1.0)), None, 0).is_err());
}

#[tokio::test]
async fn the_sql_function_checks_arguments_and_hot_swaps() {
    let ctx = SessionContext::new();
    let slot = ModelSlot::new(blended_model());
    ctx.register_udf(datafusion::logical_expr::ScalarUDF::new_from_impl(
        ModelUdf::new("fraud_model", slot.clone(), 0.0),
    ));
    ctx.sql("CREATE TABLE t AS VALUES (0.1, 1.0, 2, 4.0), (0.9, 3.0, 0, 40.0)")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let q = "SELECT m['score'] AS s, m['model_version'] AS v, m['top_features'] AS top \
             FROM (SELECT fraud_model(a, b, c, d) AS m \
                   FROM (SELECT column1 AS a, column2 AS b, column3 AS c, column4 AS d FROM t))";
    let out = ctx.sql(q).await.unwrap().collect().await.unwrap();
    assert_eq!(out[0].num_rows(), 2);
    assert_eq!(out[0].column(1).as_string::<i32>().value(0), "v7");
    let s = out[0].column(0).as_primitive::<Float64Type>();
    assert!(s.value(0) > 0.0 && s.value(0) < 1.0);
    assert!(!out[0].column(2).is_null(0));

    let wrong_count = ctx.sql("SELECT fraud_model(column1, column2) FROM t").await;
    let err = wrong_count.unwrap_err().to_string();
    assert!(err.contains("a, b, c, d"), "{err}");
    let swapped = ctx
        .sql("SELECT fraud_model(b, a, c, d) FROM (SELECT column1 AS a, column2 AS b, column3 AS c, column4 AS d FROM t)")
        .await;
    let err = swapped.unwrap_err().to_string();
    assert!(err.contains("argument 1 is `b`"), "{err}");
    let text = ctx
        .sql("SELECT fraud_model(column1, 'x', column3, column4) FROM t")
        .await;
    assert!(text.unwrap_err().to_string().contains("feature `b`"));

    // A new version is picked up by the next plan.
    let gbdt = Gbdt::from_xgboost_json(XGB_MODEL.as_bytes()).unwrap();
    slot.replace(ScoringModel::new("v8", Some((gbdt, 1.0)), None, 0).unwrap());
    let q = "SELECT fraud_model(column1, column2, column3)['model_version'] FROM t";
    let out = ctx.sql(q).await.unwrap().collect().await.unwrap();
    assert_eq!(out[0].column(0).as_string::<i32>().value(0), "v8");
}

/// Rows whose label depends on two features, an interaction, and missingness of a third.
fn labelled(rows: usize, seed: u64) -> (FeatureMatrix, Vec<f32>) {
    let mut state = seed;
    let mut values = Vec::new();
    let mut labels = Vec::new();
    for _ in 0..rows {
        let (a, b, noise) = (lcg(&mut state), lcg(&mut state), lcg(&mut state));
        let c = if lcg(&mut state) < 0.1 {
            f32::NAN
        } else {
            lcg(&mut state)
        };
        let positive = (a > 0.7 && b > 0.5) || c.is_nan() || (noise < 0.03);
        values.extend([a, b, c]);
        labels.push(if positive { 1.0 } else { 0.0 });
    }
    (FeatureMatrix::from_rows(values, 3).unwrap(), labels)
}

#[test]
fn trained_gbdt_reads_back_and_ranks_held_out_rows() {
    let (train, labels) = labelled(20_000, 1);
    let params = BoostParams {
        rounds: 40,
        max_depth: 4,
        eta: 0.3,
        ..BoostParams::default()
    };
    let names = vec!["a".to_string(), "b".into(), "c".into()];
    let json = train_binary(&names, &train, &labels, None, &params).unwrap();
    let model = Gbdt::from_xgboost_json(json.as_bytes()).unwrap();
    assert_eq!(model.trees(), 40);
    let (test, test_labels) = labelled(5_000, 2);
    let scores = model.predict(&test);
    let truth: Vec<bool> = test_labels.iter().map(|y| *y == 1.0).collect();
    let q = quality(&scores, &truth, 0.01).unwrap();
    // Noise aside (3% of labels are random), the rule is learnable exactly.
    assert!(q.roc_auc > 0.95, "{q:?}");
    // A missing `c` was learned to mean positive, whatever `a` and `b` say.
    let missing = FeatureMatrix::from_rows(vec![0.1, 0.1, f32::NAN, 0.1, 0.1, 0.5], 3).unwrap();
    let p = model.predict(&missing);
    assert!(p[0] > 0.9 && p[1] < 0.2, "{p:?}");
    // The same data and seed give the same model.
    assert_eq!(
        train_binary(&names, &train, &labels, None, &params).unwrap(),
        json
    );
}

#[test]
fn training_refuses_bad_input_by_name() {
    let (rows, labels) = labelled(100, 3);
    let names = vec!["a".to_string(), "b".into(), "c".into()];
    let bad = BoostParams {
        eta: 0.0,
        ..BoostParams::default()
    };
    assert!(
        train_binary(&names, &rows, &labels, None, &bad)
            .unwrap_err()
            .contains("eta")
    );
    let ones = vec![1.0; labels.len()];
    let err = train_binary(&names, &rows, &ones, None, &BoostParams::default()).unwrap_err();
    assert!(err.contains("both"), "{err}");
}

#[tokio::test]
async fn a_model_read_field_by_field_runs_once() {
    let plan = |once: bool| async move {
        let ctx = SessionContext::new();
        if once {
            evaluate_functions_once(&ctx);
        }
        ctx.register_udf(datafusion::logical_expr::ScalarUDF::new_from_impl(
            ModelUdf::new("fraud_model", ModelSlot::new(blended_model()), 0.0),
        ));
        ctx.sql("CREATE TABLE t AS VALUES (0.1, 1.0, 2, 4.0)")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let q = "EXPLAIN SELECT m['score'], m['model_version'], m['top_features'] \
                 FROM (SELECT fraud_model(column1, column2, column3, column4) AS m FROM t)";
        let out = ctx.sql(q).await.unwrap().collect().await.unwrap();
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&out)
            .unwrap()
            .to_string();
        let physical = text.split("physical_plan").nth(1).unwrap().to_string();
        physical.matches("fraud_model(").count()
    };
    // DataFusion's own rules would copy the call into each field access.
    assert_eq!(plan(false).await, 3);
    assert_eq!(plan(true).await, 1);
}

#[test]
fn blending_in_log_odds_moves_the_odds_by_a_factor() {
    // Equal weights: the geometric mean of the odds.
    let b = blend(&[(1.0, 0.8), (1.0, 0.5)]);
    assert!((b / (1.0 - b) - 2.0).abs() < 1e-12, "{b}");
    // An ordinary anomaly score leaves an event the GBDT is sure of near where it was; a linear
    // blend lifts it to 0.187, above an event the GBDT finds ten times as likely (0.175).
    let genuine = blend(&[(0.7, 0.01), (0.3, 0.6)]);
    let suspicious = blend(&[(0.7, 0.1), (0.3, 0.35)]);
    assert!(
        genuine < 0.05 && genuine < suspicious,
        "{genuine} vs {suspicious}"
    );
    let linear = |g: f64, a: f64| 0.7 * g + 0.3 * a;
    assert!(linear(0.01, 0.6) > linear(0.1, 0.35));
    // Certain parts stay finite and ordered.
    assert!((blend(&[(1.0, 0.0), (1.0, 1.0)]) - 0.5).abs() < 1e-6);
    assert!(blend(&[(1.0, 1.0)]) > 0.999_999);
    assert!((blend(&[(0.7, 0.3)]) - 0.3).abs() < 1e-12);
}
