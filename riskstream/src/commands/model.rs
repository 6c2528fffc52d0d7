//! `riskstream model`: a model's scores over a Parquet file, through the same SQL function the
//! jobs call; and the lake's model registry (publish, promote, list).

use std::collections::BTreeMap;
use std::path::Path;

use riskstream_lake::{LakeLocation, MODELS_FOLDER, ModelRegistry, ModelRole};
use riskstream_query::LakeSession;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::Float64Type;
use datafusion::common::Column;
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::functions::core::expr_fn::get_field;
use datafusion::logical_expr::{Expr, ScalarUDF};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use riskstream_udfs::model::{
    Gbdt, IsolationForest, MANIFEST_FILE, ModelManifest, ModelSlot, ModelUdf, ScoringModel,
    evaluate_functions_once, load_folder, quality,
};

use super::CommandError;
use crate::cli::{
    EvaluateArgs, ModelArgs, ModelCommand, PredictArgs, PromoteArgs, PublishArgs, RegistryArgs,
};

pub async fn run(args: ModelArgs) -> Result<(), CommandError> {
    match args.command {
        ModelCommand::Predict(args) => predict(args).await,
        ModelCommand::Publish(args) => publish(args).await,
        ModelCommand::Promote(args) => promote(args).await,
        ModelCommand::List(args) => list(args).await,
        ModelCommand::Evaluate(args) => evaluate(args).await,
    }
}

/// The registry of the lake `args` names; publishing may create a local lake, reading may not.
fn registry(args: &RegistryArgs, for_writing: bool) -> Result<ModelRegistry, CommandError> {
    let lake = if for_writing {
        LakeLocation::parse(&args.lake)?
    } else {
        LakeLocation::open_existing(&args.lake)?
    };
    Ok(ModelRegistry::new(&lake)?)
}

async fn publish(args: PublishArgs) -> Result<(), CommandError> {
    let dir = &args.model;
    // Only a model that loads is published.
    load_model(dir, 0)?;
    let manifest = ModelManifest::from_json(&std::fs::read(dir.join(MANIFEST_FILE))?)?;
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            files.insert(
                entry.file_name().to_string_lossy().into_owned(),
                std::fs::read(entry.path())?,
            );
        }
    }
    registry(&args.registry, true)?
        .publish(&manifest.name, &manifest.version, &files)
        .await?;
    println!(
        "published {}/{} to {}/{MODELS_FOLDER}/",
        manifest.name, manifest.version, args.registry.lake
    );
    Ok(())
}

async fn promote(args: PromoteArgs) -> Result<(), CommandError> {
    let role = if args.challenger {
        ModelRole::Challenger
    } else {
        ModelRole::Champion
    };
    registry(&args.registry, false)?
        .promote(&args.name, &args.version, role)
        .await?;
    println!("{}/{} is now the {}", args.name, args.version, role.name());
    Ok(())
}

async fn list(args: RegistryArgs) -> Result<(), CommandError> {
    let registry = registry(&args, false)?;
    for name in registry.names().await? {
        let champion = registry.promoted(&name, ModelRole::Champion).await?;
        let challenger = registry.promoted(&name, ModelRole::Challenger).await?;
        for version in registry.versions(&name).await? {
            let manifest = registry.read_file(&name, &version, MANIFEST_FILE).await?;
            let auc = ModelManifest::from_json(&manifest).ok().and_then(|m| {
                m.metrics
                    .pointer("/validation/blended/roc_auc")
                    .and_then(|v| v.as_f64())
            });
            let role = if champion.as_deref() == Some(version.as_str()) {
                "champion"
            } else if challenger.as_deref() == Some(version.as_str()) {
                "challenger"
            } else {
                ""
            };
            println!(
                "{name}\t{version}\t{role}\t{}",
                auc.map_or("-".to_string(), |a| format!("roc_auc={a:.4}"))
            );
        }
    }
    Ok(())
}

async fn evaluate(args: EvaluateArgs) -> Result<(), CommandError> {
    if !(0.0..1.0).contains(&args.fpr) || args.fpr == 0.0 {
        return Err(format!("--fpr {}: not in (0, 1)", args.fpr).into());
    }
    let session = LakeSession::open(LakeLocation::open_existing(&args.lake)?).await?;
    let columns: Vec<String> = args
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| format!("CAST(({c}) AS DOUBLE) AS score_{i}"))
        .collect();
    // An event is fraud if any positive label arrived for it; labels may repeat.
    let sql = format!(
        "SELECT {}, coalesce(l.positive, false) AS positive FROM {} s \
         LEFT JOIN (SELECT event_id, max(label) = 1 AS positive FROM {} GROUP BY event_id) l \
         ON s.event_id = l.event_id{}",
        columns.join(", "),
        args.scores,
        args.labels,
        args.filter
            .as_ref()
            .map_or(String::new(), |f| format!(" WHERE {f}"))
    );
    let batches = session.sql(&sql).await?.collect().await?;
    let mut values: Vec<Vec<f64>> = vec![Vec::new(); args.columns.len()];
    let mut positive = Vec::new();
    for b in &batches {
        for (i, v) in values.iter_mut().enumerate() {
            let column = b.column(i).as_primitive::<Float64Type>();
            // A row without a score ranks last, as no evidence.
            v.extend(column.iter().map(|x| x.unwrap_or(f64::NAN)));
        }
        positive.extend(
            b.column(args.columns.len())
                .as_boolean()
                .iter()
                .map(|p| p == Some(true)),
        );
    }
    let mut report = serde_json::Map::new();
    for (name, v) in args.columns.iter().zip(&values) {
        let q = quality(v, &positive, args.fpr).ok_or_else(|| {
            format!(
                "{name}: needs both fraud and genuine rows ({} rows)",
                v.len()
            )
        })?;
        report.insert(
            name.clone(),
            serde_json::json!({
                "roc_auc": q.roc_auc,
                "pr_auc": q.pr_auc,
                "recall_at_fpr": q.recall_at_fpr,
                "fpr": q.fpr,
                "rows": q.rows,
                "positives": q.positives,
            }),
        );
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// Reads a model folder (its `model.json`), or one model file: a GBDT (XGBoost's JSON, a
/// `learner` object, or LightGBM's text) or our isolation forest, either alone being the whole
/// score, versioned by the file's name.
pub fn load_model(path: &Path, top_features: usize) -> Result<ScoringModel, CommandError> {
    let at = |e: &dyn std::fmt::Display| format!("--model {}: {e}", path.display());
    if path.is_dir() {
        return load_folder(path).map_err(|e| at(&e).into());
    }
    let bytes = std::fs::read(path).map_err(|e| at(&e))?;
    let version = path
        .file_stem()
        .map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned());
    // Our isolation forest is a JSON object without XGBoost's `learner`; anything else is a
    // GBDT file, LightGBM's text or XGBoost's JSON.
    let forest = serde_json::from_slice::<serde_json::Value>(&bytes)
        .is_ok_and(|v| v.is_object() && v.get("learner").is_none());
    let model = if forest {
        let forest = IsolationForest::from_json(&bytes).map_err(|e| at(&e))?;
        ScoringModel::new(version, None, Some((forest, 1.0)), top_features)
    } else {
        let gbdt = Gbdt::from_model_file(&bytes).map_err(|e| at(&e))?;
        ScoringModel::new(version, Some((gbdt, 1.0)), None, top_features)
    };
    model.map_err(|e| at(&e).into())
}

async fn predict(args: PredictArgs) -> Result<(), CommandError> {
    let model = load_model(&args.model, args.top_features)?;
    let ctx = SessionContext::new();
    evaluate_functions_once(&ctx);
    let input = args.input.to_string_lossy();
    let frame = ctx
        .read_parquet(input.as_ref(), ParquetReadOptions::default())
        .await
        .map_err(|e| format!("--input {input}: {e}"))?;
    let schema = frame.schema().clone();
    let missing: Vec<&str> = model
        .features()
        .iter()
        .filter(|f| schema.field_with_unqualified_name(f).is_err())
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "--input {input} has no column for the model's features {}",
            missing.join(", ")
        )
        .into());
    }
    let features: Vec<Expr> = model
        .features()
        .iter()
        .map(|f| Expr::Column(Column::from_name(f)))
        .collect();
    let udf = ScalarUDF::new_from_impl(ModelUdf::new(
        "model",
        ModelSlot::new(model),
        f64::NEG_INFINITY,
    ));
    // The model runs once, in its own projection; the next reads its fields.
    const SCORED: &str = "__riskstream_model";
    let input_columns = || schema.columns().into_iter().map(Expr::Column);
    let mut with_model: Vec<Expr> = input_columns().collect();
    with_model.push(udf.call(features).alias(SCORED));
    let mut columns: Vec<Expr> = input_columns().collect();
    for field in ["score", "gbdt", "anomaly", "top_features", "model_version"] {
        columns.push(get_field(Expr::Column(Column::from_name(SCORED)), field).alias(field));
    }
    frame
        .select(with_model)?
        .select(columns)?
        .write_parquet(
            &args.out.to_string_lossy(),
            DataFrameWriteOptions::new().with_single_file_output(true),
            None,
        )
        .await
        .map_err(|e| format!("--out {}: {e}", args.out.display()))?;
    Ok(())
}
