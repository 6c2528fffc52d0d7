//! `riskstream export`: a point-in-time training set. Each exported row is one event's row of a
//! feature table (computed from that event and the ones before it), joined to the label that had
//! arrived by the cut-off (`label_time <= cutoff`; none arrived: label 0, as an unreported
//! transaction is taken as genuine). Negatives are down-sampled by a hash of the event id, so the
//! same export keeps the same rows; both tables are read at one version each, recorded in the
//! manifest with everything needed to make the set again.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{
    ArrayRef, AsArray, BooleanArray, Float64Array, RecordBatch, StringArray,
};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{
    DataType, Field, Int64Type, Schema, TimeUnit, TimestampMicrosecondType,
};
use datafusion::parquet::arrow::ArrowWriter;
use riskstream_lake::{Folder, LakeLocation};
use riskstream_query::LakeSession;
use serde_json::json;

use super::CommandError;
use crate::cli::{ExportArgs, Format};

/// The file that describes an export, written last: a folder with one is a finished export.
pub const EXPORT_MANIFEST: &str = "manifest.json";

/// Numeric columns of the shipped feature tables that are bookkeeping, not features: the
/// micro-batch, and where the event was read (a model must not learn from Kafka offsets, which
/// grow with time).
pub const NOT_FEATURES: &[&str] = &["batch_id", "source_partition", "source_offset"];

pub async fn run(args: ExportArgs) -> Result<(), CommandError> {
    if args.from >= args.to {
        return Err("--from must be before --to".into());
    }
    let cutoff = args.cutoff.unwrap_or_else(Utc::now);
    let validation_from = args
        .validation_from
        .unwrap_or(args.from + (args.to - args.from) * 4 / 5);
    // Checked first: an export is written once, into a new or empty folder.
    let folder = Folder::create(&args.out)
        .await
        .map_err(|e| format!("--out: {e}"))?;
    let session = LakeSession::open(LakeLocation::open_existing(&args.lake)?).await?;
    require_columns(
        &session,
        &args.features,
        "--features",
        &["event_id", "event_time"],
    )
    .await?;
    require_columns(
        &session,
        &args.labels,
        "--labels",
        &["event_id", "label", "label_time"],
    )
    .await?;
    let features_version = latest_version(&session, &args.features).await?;
    let labels_version = latest_version(&session, &args.labels).await?;
    let ts = |t: DateTime<Utc>| format!("TIMESTAMP '{}'", t.format("%Y-%m-%dT%H:%M:%S%.6fZ"));
    // A positive label wins over a negative one for the same event.
    let sql = format!(
        "WITH labels AS ( \
             SELECT event_id AS labelled_id, max(label) AS label, max(label_time) AS label_time \
             FROM {labels} VERSION AS OF {labels_version} \
             WHERE label_time <= {cutoff} GROUP BY event_id) \
         SELECT f.*, CAST(COALESCE(l.label, 0) AS INT) AS label, l.label_time \
         FROM {features} VERSION AS OF {features_version} AS f \
         LEFT JOIN labels l ON f.event_id = l.labelled_id \
         WHERE f.event_time >= {from} AND f.event_time < {to} \
         ORDER BY f.event_time, f.event_id",
        labels = args.labels,
        features = args.features,
        cutoff = ts(cutoff),
        from = ts(args.from),
        to = ts(args.to),
    );
    let batches = session.sql(&sql).await?.collect().await?;
    let split_from = validation_from.timestamp_micros();
    let mut counts = Counts::default();
    let mut out = Vec::with_capacity(batches.len());
    for batch in &batches {
        out.push(sample(
            batch,
            args.negative_rate,
            args.seed,
            split_from,
            &mut counts,
        )?);
    }
    let Some(first) = out.first() else {
        return Err(format!(
            "no rows of {} between {} and {}",
            args.features, args.from, args.to
        )
        .into());
    };
    let schema = first.schema();
    let data = if args.csv { "data.csv" } else { "data.parquet" };
    let mut bytes = Vec::new();
    if args.csv {
        crate::output::write(&mut bytes, &out, Format::Csv)?;
    } else {
        let mut writer = ArrowWriter::try_new(&mut bytes, Arc::clone(&schema), None)?;
        for batch in &out {
            writer.write(batch)?;
        }
        writer.close()?;
    }
    folder.put(data, bytes).await?;
    let kept = counts.positives + counts.negatives_kept;
    let manifest = json!({
        "data": data,
        "lake": args.lake,
        "features_table": {"name": args.features, "version": features_version},
        "labels_table": {"name": args.labels, "version": labels_version},
        "from": args.from.to_rfc3339(),
        "to": args.to.to_rfc3339(),
        "cutoff": cutoff.to_rfc3339(),
        "validation_from": validation_from.to_rfc3339(),
        "negative_rate": args.negative_rate,
        "seed": args.seed,
        "rows": kept,
        "positives": counts.positives,
        "negatives_kept": counts.negatives_kept,
        "negatives_dropped": counts.negatives_dropped,
        "label_rate": counts.positives as f64 / kept.max(1) as f64,
        "train_rows": counts.train,
        "validation_rows": counts.validation,
        "schema": schema.fields().iter().map(|f| json!({"name": f.name(), "type": f.data_type().to_string()})).collect::<Vec<_>>(),
        "features": schema.fields().iter()
            .filter(|f| riskstream_udfs::model::is_feature_type(f.data_type())
                && !["label", "weight"].contains(&f.name().as_str())
                && !NOT_FEATURES.contains(&f.name().as_str()))
            .map(|f| f.name().clone()).collect::<Vec<_>>(),
    });
    // Last: a folder with a manifest is a finished export.
    folder
        .put(
            EXPORT_MANIFEST,
            serde_json::to_string_pretty(&manifest)?.into_bytes(),
        )
        .await?;
    println!("{}", serde_json::to_string_pretty(&manifest)?);
    Ok(())
}

async fn require_columns(
    session: &LakeSession,
    table: &str,
    flag: &str,
    columns: &[&str],
) -> Result<(), CommandError> {
    let schema = session
        .table_schema(table)
        .await
        .map_err(|e| format!("{flag}: {e}"))?;
    for c in columns {
        if schema.field_with_name(c).is_err() {
            return Err(format!("{flag}: table `{table}` has no column `{c}`").into());
        }
    }
    Ok(())
}

/// The table's newest version, read once so that the export reads that version throughout.
async fn latest_version(session: &LakeSession, table: &str) -> Result<i64, CommandError> {
    let history = session
        .sql(&format!("DESCRIBE HISTORY {table} LIMIT 1"))
        .await?
        .collect()
        .await?;
    history
        .iter()
        .find(|b| b.num_rows() > 0)
        .and_then(|b| {
            b.column_by_name("version")
                .map(|c| c.as_primitive::<Int64Type>().value(0))
        })
        .ok_or_else(|| format!("table `{table}` has no history").into())
}

#[derive(Default)]
struct Counts {
    positives: u64,
    negatives_kept: u64,
    negatives_dropped: u64,
    train: u64,
    validation: u64,
}

/// A number in [0, 1) from the seed and the event id alone (FNV-1a, then a SplitMix finaliser),
/// so a row's fate does not depend on the batch it came in or the machine.
fn unit(seed: u64, id: &str) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^= h >> 31;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// Keeps every positive and a `rate` share of negatives, adding `weight` (1, or 1/rate for a
/// kept negative) and `split`.
fn sample(
    batch: &RecordBatch,
    rate: f64,
    seed: u64,
    validation_from_us: i64,
    counts: &mut Counts,
) -> Result<RecordBatch, CommandError> {
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .cloned()
            .ok_or_else(|| format!("the export lost column `{name}`"))
    };
    let ids = cast(&column("event_id")?, &DataType::Utf8)?;
    let ids = ids.as_string::<i32>();
    let labels = cast(&column("label")?, &DataType::Int64)?;
    let labels = labels.as_primitive::<Int64Type>();
    let times = cast(
        &column("event_time")?,
        &DataType::Timestamp(TimeUnit::Microsecond, None),
    )?;
    let times = times.as_primitive::<TimestampMicrosecondType>();
    let mut keep = Vec::with_capacity(batch.num_rows());
    let mut weight = Vec::with_capacity(batch.num_rows());
    let mut split = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let positive = labels.value(row) == 1;
        let kept = positive || unit(seed, ids.value(row)) < rate;
        match (positive, kept) {
            (true, _) => counts.positives += 1,
            (false, true) => counts.negatives_kept += 1,
            (false, false) => counts.negatives_dropped += 1,
        }
        keep.push(kept);
        weight.push(if positive { 1.0 } else { 1.0 / rate });
        let validation = times.value(row) >= validation_from_us;
        if kept {
            if validation {
                counts.validation += 1;
            } else {
                counts.train += 1;
            }
        }
        split.push(if validation { "validation" } else { "train" });
    }
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("weight", DataType::Float64, false));
    fields.push(Field::new("split", DataType::Utf8, false));
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    columns.push(Arc::new(Float64Array::from(weight)));
    columns.push(Arc::new(StringArray::from(split)));
    let widened = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
    Ok(filter_record_batch(&widened, &BooleanArray::from(keep))?)
}
