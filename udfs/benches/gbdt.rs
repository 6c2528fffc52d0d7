//! GBDT scoring speed on one core (`cargo bench -p riskstream-udfs --bench gbdt`), at three
//! depths of the stack: the tree walk over a ready feature block, the same from Arrow columns
//! (what a batch costs), and the SQL function with the top contributing features of every row.
//! The model is synthetic: complete trees, so every row walks the full depth.
//!
//! Options (after `--`): `--rows N --trees N --depth N --features N`.

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{ArrayRef, Float64Array};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl};
use riskstream_udfs::model::{FeatureMatrix, Gbdt, ModelSlot, ModelUdf, ScoringModel};
use serde_json::json;

type CommandError = Box<dyn std::error::Error>;

struct GbdtBenchArgs {
    rows: u64,
    trees: u64,
    depth: u64,
    features: u64,
}

impl GbdtBenchArgs {
    /// Defaults, overridden by `--name value` pairs.
    fn parse() -> Result<Self, CommandError> {
        let mut args = GbdtBenchArgs {
            rows: 2_000_000,
            trees: 100,
            depth: 6,
            features: 20,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let target = match flag.as_str() {
                "--rows" => &mut args.rows,
                "--trees" => &mut args.trees,
                "--depth" => &mut args.depth,
                "--features" => &mut args.features,
                // cargo bench passes --bench; anything else is a mistake worth naming.
                "--bench" => continue,
                other => return Err(format!("unknown option {other}").into()),
            };
            let value = it.next().ok_or(format!("{flag} needs a value"))?;
            *target = value
                .parse()
                .map_err(|_| format!("{flag} {value}: not a number"))?;
        }
        if args.rows == 0
            || args.trees == 0
            || args.features == 0
            || !(1..=16).contains(&args.depth)
        {
            return Err("rows, trees and features must be positive, depth 1 to 16".into());
        }
        Ok(args)
    }
}

/// Rows per batch, as the jobs' batches come.
const BATCH_ROWS: usize = 8192;

/// A deterministic stream of numbers in [0, 1).
struct Uniform(u64);

impl Uniform {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// An XGBoost JSON model of `trees` complete trees of `depth` over `features` features in [0, 1).
fn synthetic_model(trees: usize, depth: usize, features: usize, rng: &mut Uniform) -> String {
    let internal = (1usize << depth) - 1;
    let nodes = 2 * internal + 1;
    let tree = |rng: &mut Uniform| {
        let (mut left, mut right, mut split, mut cond, mut default_left, mut hess) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        for i in 0..nodes {
            let leaf = i >= internal;
            left.push(if leaf { -1 } else { 2 * i as i64 + 1 });
            right.push(if leaf { -1 } else { 2 * i as i64 + 2 });
            split.push(if leaf {
                0
            } else {
                (rng.next() * features as f64) as usize
            });
            cond.push(if leaf {
                (rng.next() - 0.5) * 0.2
            } else {
                rng.next()
            });
            default_left.push(u8::from(rng.next() < 0.5));
            let level = (i + 1).ilog2() as usize;
            hess.push((1u64 << (depth - level)) as f64);
        }
        json!({
            "left_children": left, "right_children": right, "split_indices": split,
            "split_conditions": cond, "default_left": default_left, "sum_hessian": hess,
        })
    };
    let trees: Vec<_> = (0..trees).map(|_| tree(rng)).collect();
    json!({
        "learner": {
            "feature_names": (0..features).map(|f| format!("f{f}")).collect::<Vec<_>>(),
            "learner_model_param": {"base_score": "[5E-1]", "num_feature": features.to_string()},
            "objective": {"name": "binary:logistic"},
            "gradient_booster": {"name": "gbtree", "model": {"trees": trees}},
        }
    })
    .to_string()
}

fn main() -> Result<(), CommandError> {
    let args = GbdtBenchArgs::parse()?;
    let (rows, width) = (args.rows as usize, args.features as usize);
    let mut rng = Uniform(42);
    let text = synthetic_model(args.trees as usize, args.depth as usize, width, &mut rng);
    let gbdt = Gbdt::from_xgboost_json(text.as_bytes())?;
    // Batches of Arrow columns with 2% missing values.
    let batches: Vec<Vec<ArrayRef>> = (0..rows.div_ceil(BATCH_ROWS))
        .map(|b| {
            let n = BATCH_ROWS.min(rows - b * BATCH_ROWS);
            (0..width)
                .map(|_| {
                    let values: Float64Array = (0..n)
                        .map(|_| (rng.next() >= 0.02).then(|| rng.next()))
                        .collect();
                    Arc::new(values) as ArrayRef
                })
                .collect()
        })
        .collect();
    let names = gbdt.features().to_vec();
    let matrices = batches
        .iter()
        .map(|columns| FeatureMatrix::from_columns(columns, &names))
        .collect::<Result<Vec<_>, _>>()?;
    println!(
        "GBDT: {} trees of depth {}, {width} features, {rows} rows in batches of {BATCH_ROWS}, one thread",
        args.trees, args.depth
    );

    let timed = |label: &str, f: &mut dyn FnMut() -> Result<f64, CommandError>| {
        let start = Instant::now();
        let checksum = f()?;
        let secs = start.elapsed().as_secs_f64();
        println!(
            "  {label:<44} {:>12.0} rows/s  ({secs:.3} s, checksum {checksum:.4})",
            rows as f64 / secs
        );
        Ok::<f64, CommandError>(rows as f64 / secs)
    };
    let walk = timed("tree walk over a ready feature block", &mut || {
        Ok(matrices
            .iter()
            .map(|m| gbdt.predict(m).iter().sum::<f64>())
            .sum())
    })?;
    let columns = timed("from Arrow columns (batch to block, walk)", &mut || {
        let mut sum = 0.0;
        for columns in &batches {
            sum += gbdt
                .predict(&FeatureMatrix::from_columns(columns, &names)?)
                .iter()
                .sum::<f64>();
        }
        Ok(sum)
    })?;
    let model = ScoringModel::new("bench", Some((gbdt, 1.0)), None, 3)?;
    let udf = ModelUdf::new("model", ModelSlot::new(model), 0.0);
    let return_field = Arc::new(Field::new(
        "m",
        DataType::Struct(ModelUdf::output_fields()),
        false,
    ));
    let sql = timed("SQL function, top 3 features of every row", &mut || {
        let mut rows_out = 0usize;
        for columns in &batches {
            let args = ScalarFunctionArgs {
                args: columns.iter().cloned().map(ColumnarValue::Array).collect(),
                arg_fields: names
                    .iter()
                    .map(|n| Arc::new(Field::new(n, DataType::Float64, true)))
                    .collect(),
                number_rows: columns[0].len(),
                return_field: return_field.clone(),
                config_options: Arc::new(ConfigOptions::default()),
            };
            if let ColumnarValue::Array(a) = udf.invoke_with_args(args)? {
                rows_out += a.len();
            }
        }
        Ok(rows_out as f64)
    })?;
    println!(
        "  summary: {walk:.0} / {columns:.0} / {sql:.0} rows/s (walk / from columns / SQL function with contributions)"
    );
    Ok(())
}
