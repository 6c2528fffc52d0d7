//! Large appends: written by a writer per core, one file each, committed as one version that a
//! replay of the same batch skips.

#![expect(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use riskstream_lake::arrow::array::{AsArray, Float64Array, Int64Array, RecordBatch, StringArray};
use riskstream_lake::arrow::datatypes::{
    DataType, Field, Float64Type, Int64Type, Schema, SchemaRef,
};
use riskstream_lake::datafusion::parquet::basic::{Compression, Encoding};
use riskstream_lake::datafusion::parquet::file::metadata::ColumnChunkMetaData;
use riskstream_lake::datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
use riskstream_lake::datafusion::prelude::SessionContext;
use riskstream_lake::{AppendOutcome, Catalog, Codec, DeltaAppender, LakeLocation, TableSpec};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("score", DataType::Float64, true),
    ]))
}

/// Rows `from..to`: three kinds, a score per row (null every tenth).
fn rows(from: i64, to: i64) -> RecordBatch {
    let ids = from..to;
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(ids.clone())),
            Arc::new(StringArray::from_iter_values(
                ids.clone().map(|i| ["a", "b", "c"][(i % 3) as usize]),
            )),
            Arc::new(Float64Array::from_iter(
                ids.map(|i| (i % 10 != 0).then_some(i as f64 * 0.37)),
            )),
        ],
    )
    .unwrap()
}

async fn lake(partition_by: &[&str]) -> (tempfile::TempDir, LakeLocation, DeltaAppender) {
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeLocation::parse(dir.path().join("lake").to_str().unwrap()).unwrap();
    let appender = open(&lake, partition_by).await;
    (dir, lake, appender)
}

/// An appender of the `scores` table under `lake`, made when missing.
async fn open(lake: &LakeLocation, partition_by: &[&str]) -> DeltaAppender {
    open_with(lake, partition_by, Codec::default()).await
}

/// An appender of the `scores` table under `lake` writing files compressed with `codec`.
async fn open_with(lake: &LakeLocation, partition_by: &[&str], codec: Codec) -> DeltaAppender {
    let spec = TableSpec {
        name: "scores".into(),
        schema: schema(),
        partition_by: partition_by.iter().map(|c| c.to_string()).collect(),
        stats_columns: None,
        merge_schema: false,
        checkpoint_interval: None,
        compression: codec,
    };
    DeltaAppender::open_or_create(lake, spec).await.unwrap()
}

/// (rows, distinct ids, sum of ids, sum of scores) of the table.
async fn census(lake: &LakeLocation) -> (i64, i64, i64, f64) {
    let ctx = SessionContext::new();
    Catalog::new(lake.clone()).register_all(&ctx).await.unwrap();
    let batches = ctx
        .sql("SELECT count(*), count(DISTINCT id), sum(id), sum(score) FROM scores")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let int = |c: usize| batches[0].column(c).as_primitive::<Int64Type>().value(0);
    let float = batches[0].column(3).as_primitive::<Float64Type>().value(0);
    (int(0), int(1), int(2), float)
}

/// The actions of commit `version` of the table, by kind.
fn log_entry(dir: &tempfile::TempDir, version: u64) -> BTreeMap<String, Vec<serde_json::Value>> {
    let path = dir
        .path()
        .join(format!("lake/scores/_delta_log/{version:020}.json"));
    let mut actions: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        let (kind, body) = value.as_object().unwrap().iter().next().unwrap();
        actions.entry(kind.clone()).or_default().push(body.clone());
    }
    actions
}

/// The codecs of the column chunks of the files commit `version` of the table added.
fn codecs(dir: &tempfile::TempDir, version: u64) -> Vec<Compression> {
    let mut codecs = Vec::new();
    for add in &log_entry(dir, version)["add"] {
        let path = dir
            .path()
            .join("lake/scores")
            .join(add["path"].as_str().unwrap());
        let reader = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
        for group in reader.metadata().row_groups() {
            codecs.extend(group.columns().iter().map(|c| c.compression()));
        }
    }
    codecs
}

/// Writers an append of `rows` rows takes on this machine (see `DeltaAppender`).
fn writers(rows: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    (rows / 100_000).clamp(1, cores)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_append_is_one_version_of_a_file_per_writer_and_a_replay_skips_it() {
    let (dir, lake, mut appender) = lake(&[]).await;
    let batches = vec![
        rows(0, 70_000),
        rows(70_000, 180_000),
        rows(180_000, 250_000),
    ];
    let outcome = appender.append(batches.clone(), "job", 0).await.unwrap();
    assert_eq!(outcome, AppendOutcome::Committed { table_version: 1 });

    let entry = log_entry(&dir, 1);
    let adds = &entry["add"];
    assert_eq!(adds.len(), writers(250_000), "one file per writer");
    assert_eq!(entry["txn"][0]["appId"], "job");
    assert_eq!(entry["txn"][0]["version"], 0);
    assert_eq!(entry["commitInfo"][0]["operation"], "WRITE");
    // Each file has its statistics, and together they hold every row once.
    let mut counted = 0;
    for add in adds {
        let stats: serde_json::Value =
            serde_json::from_str(add["stats"].as_str().unwrap()).unwrap();
        counted += stats["numRecords"].as_i64().unwrap();
        assert!(stats["minValues"]["id"].is_i64() && stats["maxValues"]["id"].is_i64());
        assert!(stats["nullCount"]["score"].as_i64().unwrap() > 0);
        // Doubles are written plain, as the table's writer properties ask.
        let file = std::fs::File::open(
            dir.path()
                .join("lake/scores")
                .join(add["path"].as_str().unwrap()),
        )
        .unwrap();
        let reader = SerializedFileReader::new(file).unwrap();
        // Data pages written plain: a dictionary given up (or never kept).
        let plain_pages = |column: &ColumnChunkMetaData| {
            column
                .page_encoding_stats_mask()
                .unwrap()
                .is_set(Encoding::PLAIN)
        };
        for group in reader.metadata().row_groups() {
            // Three kinds keep their dictionary; the file's ids (125,000, a dictionary of
            // about 1 MB) give theirs up at the table's 64 KiB where Parquet's 1 MiB held them.
            assert!(!plain_pages(group.column(1)));
            assert!(plain_pages(group.column(0)));
            let score = group.column(2);
            assert!(
                !score
                    .encodings()
                    .any(|e| e == Encoding::RLE_DICTIONARY || e == Encoding::PLAIN_DICTIONARY),
                "{:?}",
                score.encodings().collect::<Vec<_>>()
            );
        }
    }
    assert_eq!(counted, 250_000);

    let expected_scores: f64 = (0..250_000)
        .filter(|i| i % 10 != 0)
        .map(|i| i as f64 * 0.37)
        .sum();
    let (n, distinct, ids, scores) = census(&lake).await;
    assert_eq!((n, distinct, ids), (250_000, 250_000, (0..250_000).sum()));
    assert!((scores - expected_scores).abs() < 1e-6 * expected_scores);

    // The same batch again (a replay after a crash) writes nothing.
    let again = appender.append(batches, "job", 0).await.unwrap();
    assert_eq!(again, AppendOutcome::AlreadyCommitted);
    assert_eq!(census(&lake).await.0, 250_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_partitioned_append_writes_each_writers_partitions_apart() {
    let (dir, lake, mut appender) = lake(&["kind"]).await;
    let outcome = appender
        .append(vec![rows(0, 240_000)], "job", 7)
        .await
        .unwrap();
    assert_eq!(outcome, AppendOutcome::Committed { table_version: 1 });
    let entry = log_entry(&dir, 1);
    assert_eq!(entry["add"].len(), 3 * writers(240_000));
    for add in &entry["add"] {
        let kind = add["partitionValues"]["kind"].as_str().unwrap();
        assert!(
            add["path"]
                .as_str()
                .unwrap()
                .starts_with(&format!("kind={kind}/"))
        );
    }
    let ctx = SessionContext::new();
    Catalog::new(lake.clone()).register_all(&ctx).await.unwrap();
    let count = |sql: &'static str| {
        let ctx = ctx.clone();
        async move {
            let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
            batches[0].column(0).as_primitive::<Int64Type>().value(0)
        }
    };
    // Every row kept its partition.
    assert_eq!(
        count("SELECT count(*) FROM scores WHERE id % 3 = 1 AND kind = 'b'").await,
        80_000
    );
    assert_eq!(
        count("SELECT count(*) FROM scores WHERE id % 3 = 1 AND kind <> 'b'").await,
        0
    );
    assert_eq!(census(&lake).await.0, 240_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_compressed_with_the_tables_codec_zstd_unless_told() {
    let (dir, _lake, mut zstd) = lake(&[]).await;
    zstd.append(vec![rows(0, 1_000)], "job", 0).await.unwrap();
    let written = codecs(&dir, 1);
    assert_eq!(written.len(), 3);
    assert!(
        written.iter().all(|c| matches!(c, Compression::ZSTD(_))),
        "{written:?}"
    );

    let other = tempfile::tempdir().unwrap();
    let lake = LakeLocation::parse(other.path().join("lake").to_str().unwrap()).unwrap();
    let mut snappy = open_with(&lake, &[], Codec::Snappy).await;
    snappy.append(vec![rows(0, 1_000)], "job", 0).await.unwrap();
    let written = codecs(&other, 1);
    assert_eq!(written.len(), 3);
    assert!(
        written.iter().all(|c| *c == Compression::SNAPPY),
        "{written:?}"
    );
    assert_eq!(census(&lake).await.0, 1_000);
}

/// An appender knows what it committed last without reading the log; a second writer of the same
/// app id (another instance of the job) committing the next version first makes its commit of
/// that version fail, and the next try finds the version committed: the rows are in once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_committed_by_another_writer_of_the_same_app_is_not_committed_twice() {
    let (_dir, lake, mut first) = lake(&[]).await;
    let mut second = open(&lake, &[]).await;
    let committed = first.append(vec![rows(0, 100)], "job", 0).await.unwrap();
    assert_eq!(committed, AppendOutcome::Committed { table_version: 1 });
    assert_eq!(
        first.append(vec![rows(0, 100)], "job", 0).await.unwrap(),
        AppendOutcome::AlreadyCommitted
    );
    // The second writer reads the log: version 0 is there, version 1 is not.
    assert_eq!(
        second.append(vec![rows(0, 100)], "job", 0).await.unwrap(),
        AppendOutcome::AlreadyCommitted
    );
    let won = second.append(vec![rows(100, 200)], "job", 1).await.unwrap();
    assert_eq!(won, AppendOutcome::Committed { table_version: 2 });
    // The first writer's commit of the same version meets the winner's.
    let lost = first.append(vec![rows(100, 200)], "job", 1).await;
    assert!(lost.is_err(), "{lost:?}");
    assert_eq!(
        first.append(vec![rows(100, 200)], "job", 1).await.unwrap(),
        AppendOutcome::AlreadyCommitted
    );
    let committed = first.append(vec![rows(200, 300)], "job", 2).await.unwrap();
    assert_eq!(committed, AppendOutcome::Committed { table_version: 3 });
    let (n, distinct, ..) = census(&lake).await;
    assert_eq!((n, distinct), (300, 300));
}
