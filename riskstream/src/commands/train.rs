//! `riskstream train`: a GBDT and an isolation forest from a labelled training set, validated on
//! its latest rows, written as a model folder (`model.json` and the parts' files).

use std::path::Path;

use datafusion::arrow::array::BooleanArray;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::kernels::boolean::not;
use datafusion::arrow::compute::{cast, concat_batches, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Float32Type, Float64Type};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::prelude::{ParquetReadOptions, SessionContext, col};
use riskstream_lake::Folder;
use riskstream_udfs::model::{
    BoostParams, FeatureMatrix, Gbdt, IsolationForest, IsolationForestParams, MANIFEST_FILE,
    ModelManifest, ModelPart, Quality, blend, is_feature_type, quality, train_binary,
};
use serde_json::json;

use super::CommandError;
use super::export::EXPORT_MANIFEST;
use crate::cli::TrainArgs;

/// The false-positive rate recall is reported at: 1%, an alert budget fraud teams use.
const REPORT_FPR: f64 = 0.01;

pub async fn run(args: TrainArgs) -> Result<(), CommandError> {
    if args.out.exists() && std::fs::read_dir(&args.out)?.next().is_some() {
        return Err(format!(
            "--out {}: not empty (a model folder is written once)",
            args.out.display()
        )
        .into());
    }
    // An export folder (local or S3) brings its data file, feature list, split and weights.
    let input = args.input.as_str();
    let ctx = SessionContext::new();
    let (export, mut frame) = match read_export(input).await? {
        Some((manifest, batches)) => (Some(manifest), ctx.read_batches(batches)?),
        None if input.contains("://") => {
            return Err(format!(
                "--input {input}: no manifest.json (a remote input must be a folder `riskstream \
                 export` wrote)"
            )
            .into());
        }
        None => (
            None,
            ctx.read_parquet(input, ParquetReadOptions::default())
                .await
                .map_err(|e| format!("--input {input}: {e}"))?,
        ),
    };
    let exported = |column: &str| export.as_ref().map(|_| column.to_string());
    let split_column = args.split_column.clone().or_else(|| exported("split"));
    let weight_column = args.weight_column.clone().or_else(|| exported("weight"));
    let time_column = args.time_column.clone().or_else(|| exported("event_time"));
    let manifest_features: Option<Vec<String>> = export.as_ref().and_then(|m| {
        m.get("features")
            .and_then(|f| serde_json::from_value(f.clone()).ok())
    });
    let schema = frame.schema().as_arrow().clone();
    let column_type = |name: &str, flag: &str| {
        schema
            .field_with_name(name)
            .map(|f| f.data_type().clone())
            .map_err(|_| format!("{flag}: --input {input} has no column `{name}`"))
    };
    let label_type = column_type(&args.label, "--label")?;
    if !is_feature_type(&label_type) {
        return Err(format!(
            "--label: `{}` is {label_type}, not a number or boolean",
            args.label
        )
        .into());
    }
    for (column, flag) in [
        (&split_column, "--split-column"),
        (&weight_column, "--weight-column"),
    ] {
        if let Some(c) = column {
            column_type(c, flag)?;
        }
    }
    if let Some(time) = &time_column {
        column_type(time, "--time-column")?;
        frame = frame.sort(vec![col(format!("\"{time}\"")).sort(true, true)])?;
    }
    let features: Vec<String> = if let (true, Some(listed)) =
        (args.features.is_empty(), &manifest_features)
    {
        listed.clone()
    } else if args.features.is_empty() {
        let not_features = [
            Some(&args.label),
            time_column.as_ref(),
            split_column.as_ref(),
            weight_column.as_ref(),
        ];
        schema
            .fields()
            .iter()
            .filter(|f| {
                !not_features.contains(&Some(f.name()))
                    && !super::export::NOT_FEATURES.contains(&f.name().as_str())
                    && is_feature_type(f.data_type())
                    && !matches!(f.data_type(), DataType::Null)
            })
            .map(|f| f.name().clone())
            .collect()
    } else {
        for f in &args.features {
            let t = column_type(f, "--features")?;
            if !is_feature_type(&t) {
                return Err(
                    format!("--features: `{f}` is {t}; models read numbers and booleans").into(),
                );
            }
        }
        args.features.clone()
    };
    if features.is_empty() {
        return Err(format!("--input {input} has no numeric columns to train on").into());
    }
    let batches = frame.collect().await?;
    let all = concat_batches(&schema.clone().into(), &batches)?;
    let rows = all.num_rows();
    let (train, validation) = match &split_column {
        Some(column) => {
            let split = cast(
                all.column_by_name(column).ok_or("no split column")?,
                &DataType::Utf8,
            )?;
            let validates: BooleanArray = split
                .as_string::<i32>()
                .iter()
                .map(|s| Some(s == Some("validation")))
                .collect();
            (
                filter_record_batch(&all, &not(&validates)?)?,
                filter_record_batch(&all, &validates)?,
            )
        }
        None => {
            let train_rows = ((rows as f64) * (1.0 - args.validation_fraction)).round() as usize;
            (
                all.slice(0, train_rows),
                all.slice(train_rows, rows - train_rows),
            )
        }
    };
    let train_rows = train.num_rows();
    if train_rows < 2 || validation.num_rows() < 2 {
        return Err(format!(
            "--input {input}: {train_rows} training and {} validation rows are too few",
            validation.num_rows()
        )
        .into());
    }
    let weights = match &weight_column {
        Some(column) => Some(weights_of(&train, column)?),
        None => None,
    };
    let (x_train, y_train) = (matrix(&train, &features)?, labels(&train, &args.label)?);
    let (x_valid, y_valid) = (
        matrix(&validation, &features)?,
        labels(&validation, &args.label)?,
    );
    eprintln!(
        "training on {train_rows} rows ({} positive), validating on {} rows, {} features",
        y_train.iter().filter(|y| **y == 1.0).count(),
        rows - train_rows,
        features.len()
    );

    let params = BoostParams {
        rounds: args.rounds,
        eta: args.eta,
        max_depth: args.max_depth,
        min_child_weight: args.min_child_weight,
        subsample: args.subsample,
        seed: args.seed,
        ..BoostParams::default()
    };
    let gbdt_json = train_binary(&features, &x_train, &y_train, weights.as_deref(), &params)
        .map_err(|e| format!("training the GBDT: {e}"))?;
    let gbdt = Gbdt::from_xgboost_json(gbdt_json.as_bytes())?;
    let forest_params = IsolationForestParams {
        trees: args.forest_trees,
        seed: args.seed,
        ..IsolationForestParams::default()
    };
    let forest = if args.forest_trees > 0 {
        // The forest learns what genuine traffic looks like, so it is fitted on the genuine
        // rows only: known fraud must not count as normal. (Unlabelled fraud still slips in,
        // as it would in production.)
        let genuine: Vec<f32> = (0..x_train.rows())
            .filter(|&i| y_train[i] == 0.0)
            .flat_map(|i| x_train.row(i).iter().copied())
            .collect();
        let genuine = FeatureMatrix::from_rows(genuine, x_train.width())?;
        Some(IsolationForest::train(
            features.clone(),
            &genuine,
            forest_params,
        )?)
    } else {
        None
    };

    let truth: Vec<bool> = y_valid.iter().map(|y| *y == 1.0).collect();
    let gbdt_scores = gbdt.predict(&x_valid);
    let forest_scores = forest.as_ref().map(|f| f.score(&x_valid));
    let (wg, wa) = match forest {
        Some(_) => (args.gbdt_weight, args.anomaly_weight),
        None => (1.0, 0.0),
    };
    let blended: Vec<f64> = match &forest_scores {
        Some(a) => gbdt_scores
            .iter()
            .zip(a)
            .map(|(g, a)| blend(&[(wg, *g), (wa, *a)]))
            .collect(),
        None => gbdt_scores.clone(),
    };
    let report = |q: Option<Quality>| json!(q);
    let metrics = json!({
        "validation": {
            "gbdt": report(quality(&gbdt_scores, &truth, REPORT_FPR)),
            "isolation_forest": report(forest_scores.as_ref().and_then(|a| quality(a, &truth, REPORT_FPR))),
            "blended": report(quality(&blended, &truth, REPORT_FPR)),
        }
    });

    std::fs::create_dir_all(&args.out)?;
    let write = |name: &str, text: &str| -> Result<(), CommandError> {
        std::fs::write(args.out.join(name), text)
            .map_err(|e| format!("--out {}: {e}", args.out.display()).into())
    };
    write("gbdt.json", &gbdt_json)?;
    if let Some(forest) = &forest {
        write("isolation_forest.json", &forest.to_json())?;
    }
    let manifest = ModelManifest {
        name: args.name.clone(),
        version: args.version.clone(),
        created_at: chrono::Utc::now().to_rfc3339(),
        features: features.clone(),
        gbdt: Some(ModelPart {
            file: "gbdt.json".into(),
            weight: wg,
        }),
        isolation_forest: forest.as_ref().map(|_| ModelPart {
            file: "isolation_forest.json".into(),
            weight: wa,
        }),
        top_features: 3,
        training: json!({
            "input": input,
            "label": args.label,
            "time_column": time_column,
            "split_column": split_column,
            "weight_column": weight_column,
            "export": export,
            "rows": rows,
            "train_rows": train_rows,
            "validation_rows": rows - train_rows,
            "train_positives": y_train.iter().filter(|y| **y == 1.0).count(),
            "validation_positives": truth.iter().filter(|t| **t).count(),
            "gbdt": {"trainer": "riskstream", "rounds": params.rounds, "eta": params.eta, "max_depth": params.max_depth,
                     "min_child_weight": params.min_child_weight, "lambda": params.lambda, "max_bins": params.max_bins,
                     "subsample": params.subsample, "seed": params.seed},
            "isolation_forest": forest.as_ref().map(|_| json!({"trees": forest_params.trees, "sample_size": forest_params.sample_size, "seed": forest_params.seed})),
        }),
        metrics: metrics.clone(),
    };
    write(MANIFEST_FILE, &manifest.to_json())?;
    check_written(&args.out)?;
    println!(
        "{}",
        serde_json::to_string_pretty(
            &json!({"model": args.out.display().to_string(), "metrics": metrics})
        )?
    );
    Ok(())
}

/// The manifest of an export folder, if `input` is one.
/// The manifest and rows of the export folder at `input`, local or remote; `None` when it is
/// not one (no such folder, or no manifest in it).
async fn read_export(
    input: &str,
) -> Result<Option<(serde_json::Value, Vec<RecordBatch>)>, CommandError> {
    let Ok(folder) = Folder::open(input) else {
        return Ok(None);
    };
    let at = |file: &str| format!("--input {input}: {file}");
    let Some(text) = folder
        .get(EXPORT_MANIFEST)
        .await
        .map_err(|e| at(&e.to_string()))?
    else {
        return Ok(None);
    };
    let manifest: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| at(&format!("{EXPORT_MANIFEST}: {e}")))?;
    let data = manifest
        .get("data")
        .and_then(|d| d.as_str())
        .unwrap_or("data.parquet")
        .to_string();
    if !data.ends_with(".parquet") {
        return Err(at("train reads Parquet exports (export without --csv)").into());
    }
    let bytes = folder
        .get(&data)
        .await
        .map_err(|e| at(&e.to_string()))?
        .ok_or_else(|| at(&format!("{data} is missing")))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
        .and_then(|b| b.build())
        .map_err(|e| at(&format!("{data}: {e}")))?;
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| at(&format!("{data}: {e}")))?;
    Ok(Some((manifest, batches)))
}

/// A weight column as `f32`; weights must be positive.
fn weights_of(batch: &RecordBatch, column: &str) -> Result<Vec<f32>, CommandError> {
    let values = cast(
        batch
            .column_by_name(column)
            .ok_or_else(|| format!("no column `{column}`"))?,
        &DataType::Float32,
    )?;
    let values = values.as_primitive::<Float32Type>();
    if values.null_count() > 0 || values.values().iter().any(|w| !(w.is_finite() && *w > 0.0)) {
        return Err(format!("--weight-column: `{column}` must hold positive numbers").into());
    }
    Ok(values.values().to_vec())
}

/// Reads the folder back as scoring would, so a model that cannot be served is never left as
/// if it could.
fn check_written(dir: &Path) -> Result<(), CommandError> {
    super::model::load_model(dir, 3).map(|_| ())
}

fn matrix(batch: &RecordBatch, features: &[String]) -> Result<FeatureMatrix, CommandError> {
    let columns: Vec<ArrayRef> = features
        .iter()
        .map(|f| {
            batch
                .column_by_name(f)
                .cloned()
                .ok_or_else(|| format!("no column `{f}`"))
        })
        .collect::<Result<_, _>>()?;
    Ok(FeatureMatrix::from_columns(&columns, features)?)
}

/// The label column as 0/1; a missing label is an error, not a negative.
fn labels(batch: &RecordBatch, label: &str) -> Result<Vec<f32>, CommandError> {
    let column = batch
        .column_by_name(label)
        .ok_or_else(|| format!("no column `{label}`"))?;
    if column.null_count() > 0 {
        return Err(format!(
            "--label: `{label}` has {} NULL values; drop unlabelled rows first",
            column.null_count()
        )
        .into());
    }
    let values = cast(column, &DataType::Float64)?;
    let values = values.as_primitive::<Float64Type>();
    values
        .values()
        .iter()
        .map(|v| match *v {
            0.0 => Ok(0.0),
            1.0 => Ok(1.0),
            other => Err(format!("--label: `{label}` holds {other}; labels are 0 or 1").into()),
        })
        .collect()
}
